"""Sound-alike doctor names and spelled caller names (the local agent's phonetic.py, names.py)."""

from __future__ import annotations

import pytest

from esl_app.config.tenants import Doctor
from esl_app.providers.agent.local import nlu
from esl_app.providers.agent.local.names import corrected_name, mark_spelling_breaks
from esl_app.providers.agent.local.phonetic import best_match, phonetic_key, similarity

DOCTORS = (Doctor("smith", "Dr. Sarah Smith", "family medicine"),
           Doctor("okafor", "Dr. Chidi Okafor", "dermatology"),
           Doctor("nguyen", "Dr. Linh Nguyen", "cardiology"),
           Doctor("patel", "Dr. Raj Patel", "pediatrics"))
PAIRS = [("smith", "smith"), ("okafor", "okafor"), ("nguyen", "nguyen"), ("patel", "patel")]


def test_the_key_folds_sounds_recognisers_confuse():
    assert phonetic_key("okafor") == phonetic_key("okafur") == "KPR"
    assert phonetic_key("patel") == phonetic_key("petal") == phonetic_key("patil")
    assert phonetic_key("smith") == phonetic_key("smyth")
    assert phonetic_key("nguyen") == phonetic_key("new win") == "N"
    assert similarity("october", "okafor") > 0.8 > similarity("jones", "okafor")


@pytest.mark.parametrize("heard,expected", [
    ("october", "okafor"), ("okafur", "okafor"), ("petal", "patel"), ("smyth", "smith"),
    ("newwin", "nguyen"), ("jones", None), ("blah", None), ("about", None), ("soon", None),
])
def test_best_match_needs_a_clear_winner(heard, expected):
    assert best_match(heard, PAIRS) == expected


@pytest.mark.parametrize("text,expected", [
    ("book with doctor october", "okafor"),
    ("doctor okay four please", "okafor"),
    ("i need to see a doctor about my knee", None),  # "a doctor": no name in its place
    ("my doctor said to come back", None),
    ("doctor jones", None),
])
def test_a_guess_only_where_a_name_stands(text, expected):
    got = nlu.guess_doctor(text, DOCTORS)
    assert (got.id if got else None) == expected


@pytest.mark.parametrize("text,name,spelled,doubtful", [
    ("J O H N", "John", "JOHN", False),
    ("j-o-h-n smith", "John Smith", "JOHN", False),
    ("M as in Mary, A, R, Y", "Mary", "MARY", False),
    ("smith, s m i t h", "Smith", "SMITH", False),
    ("susan s u s a n clark", "Susan Clark", "SUSAN", False),
    ("dee ay en", "Dan", "DAN", False),
    ("monday good", "Monday Good", None, True),
    ("april johnson", "April Johnson", None, True),
    ("it's for my mother, helen park", "Helen Park", None, False),
    # the words leading into a spelling are not part of the name
    ("it is joan nguyen that is n g u y e n", "Joan Nguyen", "NGUYEN", False),
    ("my name is joan nguyen that is spelled n g u y e n", "Joan Nguyen", "NGUYEN", False),
    ("maria nott and that is spelled n o t t", "Maria Nott", "NOTT", False),
    ("ann which is a n n", "Ann", "ANN", False),
    # a part named ("the last name is …") is that part, wherever the caller puts it
    ("the surname is spelled n o t t", "Nott", "NOTT", False),
    ("my family name is n o t t", "Nott", "NOTT", False),
    ("the first name is J O A N and the last name is N O T T", "Joan Nott", "JOAN NOTT", False),
    ("the last name is n o t t and the first name is j o a n", "Joan Nott", "JOAN NOTT", False),
])
def test_names_said_spelled_or_both(text, name, spelled, doubtful):
    got = nlu.parse_name_answer(text)
    assert got is not None
    assert (got.name, got.spelled, got.doubtful) == (name, spelled, doubtful)


@pytest.mark.parametrize("text", ["monday good", "tomorrow at 3", "the first one", "yes",
                                  "why do you need my name"])
def test_strict_names_refuse_what_is_likely_something_else(text):
    assert nlu.parse_name(text) is None


@pytest.mark.parametrize("text,parts", [
    ("the last name is spelled N O T T", ("last",)),
    ("my first name is joan", ("first",)),
    ("N O T T", ("",)),
    ("joan, and the last name is n o t t", ("", "last")),
    ("nott n o t t, first name joan", ("first", "")),
])
def test_the_part_a_caller_names_is_kept_with_the_word(text, parts):
    assert nlu.parse_name_answer(text).parts == parts


@pytest.mark.parametrize("old,said,new", [
    # the surname spelled, with or without saying so: the first name stays
    ("Joan Knight", "N O T T", "Joan Nott"),
    ("Joan Knight", "it's N-O-T-T", "Joan Nott"),
    ("Joan Knight", "the last name is spelled N O T T", "Joan Nott"),
    ("Joan Knight", "my surname is n o t t", "Joan Nott"),
    ("Mary Ann Knight", "N O T T", "Mary Ann Nott"),
    # the first name spelled: named, or clearly resembling the old one
    ("Joan Knight", "the first name is J O N", "Jon Knight"),
    ("John Smith", "it's spelled j o n", "Jon Smith"),
    # resembling neither part: the surname (callers spell the hard part)
    ("Joan Knot", "K A T Z", "Joan Katz"),
    ("Joan Knot", "M A R Y", "Joan Mary"),
    # both parts: spelled, said again, or spelled in one breath
    ("Joan Knight", "J O N, N O T T", "Jon Nott"),
    ("Joan Knight", "the first name is J O N and the last name is N O T T", "Jon Nott"),
    ("Joan Knight", "Jon Nott", "Jon Nott"),
    ("Joan Knot", "j o n n o t t", "Jon Nott"),
    # a one-word name gains the part the caller adds, or is replaced
    ("Joan", "the last name is N O T T", "Joan Nott"),
    ("Nott", "my first name is J O A N", "Joan Nott"),
    ("Jon", "J O H N", "John"),
])
def test_a_correction_changes_only_the_part_corrected(old, said, new):
    assert corrected_name(old, nlu.parse_name_answer(said)) == new


# ---------------------------------------------------------------- letters that look like a clock
# At the confirmation (and the phone question) the turn is read with clock forms joined
# ("10 a m" -> "10 am"), and "no, it's A M Y" came out as "am y": no name at all.


@pytest.mark.parametrize("said,name,spelled", [
    ("A M Y", "Amy", "AMY"),
    ("it's A M Y", "Amy", "AMY"),
    ("no, it's A M Y", None, None),  # the "no" is the dialogue's to take off
    ("P A M", "Pam", "PAM"),
    ("the last name is P A M", "Pam", "PAM"),
    ("it's A M Y P A M", "Amypam", "AMYPAM"),  # one breath: one word (corrected_name splits)
    ("A M Y, P A M", "Amy Pam", "AMY PAM"),
    ("A, M, Y", "Amy", "AMY"),
    ("A-M-Y", "Amy", "AMY"),
    ("A.M.Y.", "Amy", "AMY"),
    ("a. m. y.", "Amy", "AMY"),
    ("K I A M", "Kiam", "KIAM"),
])
def test_spelled_a_m_and_p_m_are_letters_even_where_clock_forms_are_read(said, name, spelled):
    marked = nlu.normalize(mark_spelling_breaks(said))  # as the dialogue reads the confirmation
    for text in (said, marked):
        got = nlu.parse_name_answer(text)
        assert ((got.name, got.spelled) if got else (None, None)) == (name, spelled), text


@pytest.mark.parametrize("said,clock", [
    ("at 10 a m", "at 10 am"), ("10 AM", "10 am"), ("ten a.m.", "ten am"),
    ("nine thirty p m", "nine thirty pm"), ("3pm", "3 pm"),
    ("eleven o'clock a m", "eleven o'clock am"), ("10 a m i think", "10 am i think"),
    ("a m i guess", "am i guess"), ("i a m free", "i am free"),
    ("the a m", "the am"), ("p m please", "pm please"),
])
def test_a_m_and_p_m_beside_a_number_or_a_word_are_the_clock(said, clock):
    assert nlu.normalize(said) == clock


@pytest.mark.parametrize("said,letters", [
    ("no, it's A M Y", "no it is a m y"), ("it's P A M", "it is p a m"),
    ("A.M.Y.", "a m y"), ("K I A M", "k i a m"),
])
def test_a_m_and_p_m_beside_another_letter_are_a_spelling(said, letters):
    assert nlu.normalize(said) == letters


@pytest.mark.parametrize("old,said,new", [
    ("Aimee Knott", "A M Y", "Amy Knott"),  # misheard, spelled: the part it resembles
    ("Emma Knott", "the first name is A M Y", "Amy Knott"),
    ("Emma Knott", "the last name is P A M", "Emma Pam"),
    ("Emma Knott", "A M Y, P A M", "Amy Pam"),
    ("Amy Pam", "A M Y P A M", "Amy Pam"),
    # a spelling denied, then the right one: the last one wins
    ("Emma Knott", "it's not N O T, it's N O T T", "Emma Nott"),
    ("Emma Knott", "not K N O T T but N O T T", "Emma Nott"),
    ("Emma Knott", "not N O T, N O T T", "Emma Nott"),
    ("Emma Knott", "the first name is not E M M A, it's A M Y", "Amy Knott"),
])
def test_corrections_spelled_with_clock_letters_or_a_denied_spelling(old, said, new):
    assert corrected_name(old, nlu.parse_name_answer(said)) == new
