"""Table-driven tests of the local agent's NLU, as speech recognisers hand text over."""

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from esl_app.config.tenants import Doctor, VisitType
from esl_app.providers.agent.local import nlu

TODAY = date(2026, 11, 24)  # a Tuesday
TZ = ZoneInfo("America/New_York")
DOCTORS = (
    Doctor("smith", "Dr. Sarah Smith", "family medicine"),
    Doctor("patel", "Dr. Raj Patel", "pediatrics"),
    Doctor("obrien", "Dr. Mary O'Brien", "dermatology"),
)
OPTIONS = (
    nlu.Option(datetime(2026, 11, 24, 9, 0, tzinfo=TZ), "smith", "Dr. Sarah Smith"),
    nlu.Option(datetime(2026, 11, 24, 10, 0, tzinfo=TZ), "patel", "Dr. Raj Patel"),
    nlu.Option(datetime(2026, 11, 25, 14, 30, tzinfo=TZ), "smith", "Dr. Sarah Smith"),
)


def d(month: int, day: int, year: int = 2026) -> date:
    return date(year, month, day)


DATES = [
    ("today", d(11, 24), d(11, 24)),
    ("tomorrow", d(11, 25), d(11, 25)),
    ("tomorrow morning please", d(11, 25), d(11, 25)),
    ("the day after tomorrow", d(11, 26), d(11, 26)),
    ("next tuesday", d(12, 1), d(12, 1)),
    ("next thursday", d(11, 26), d(11, 26)),
    ("this friday", d(11, 27), d(11, 27)),
    ("friday", d(11, 27), d(11, 27)),
    ("can i come in on monday", d(11, 30), d(11, 30)),
    ("on the 5th", d(12, 5), d(12, 5)),
    ("on the fifth", d(12, 5), d(12, 5)),
    ("the 30th", d(11, 30), d(11, 30)),
    ("december 3rd", d(12, 3), d(12, 3)),
    ("december third", d(12, 3), d(12, 3)),
    ("dec 3", d(12, 3), d(12, 3)),
    ("the third of december", d(12, 3), d(12, 3)),
    ("january twenty first", d(1, 21, 2027), d(1, 21, 2027)),
    ("11/30", d(11, 30), d(11, 30)),
    ("12/2", d(12, 2), d(12, 2)),
    ("in two days", d(11, 26), d(11, 26)),
    ("in 3 days", d(11, 27), d(11, 27)),
    ("in a week", d(12, 1), d(12, 1)),
    ("next week", d(11, 30), d(12, 6)),
    ("sometime this week", d(11, 24), d(11, 29)),
    ("november 20", d(11, 20, 2027), d(11, 20, 2027)),  # past this year: next year
]


@pytest.mark.parametrize("text,first,last", DATES)
def test_dates(text, first, last):
    got = nlu.parse_date(text, TODAY)
    assert got == nlu.DateRange(first, last)


@pytest.mark.parametrize("text", ["the first one", "the first available", "first thing",
                                  "the second time", "morning", "i want to book", "yes", "9",
                                  "the second"])
def test_not_dates(text):
    assert nlu.parse_date(text, TODAY) is None


TIMES = [
    ("9", dict(at=time(9, 0), part="morning")),
    ("nine thirty", dict(at=time(9, 30), part="morning")),
    ("9:30", dict(at=time(9, 30), part="morning")),
    ("3 pm", dict(at=time(15, 0), part="afternoon")),
    ("three p m", dict(at=time(15, 0), part="afternoon")),
    ("3pm", dict(at=time(15, 0), part="afternoon")),
    ("at 10", dict(at=time(10, 0), part="morning")),
    ("around two", dict(at=time(14, 0), part="afternoon")),
    ("ten thirty in the morning", dict(at=time(10, 30), part="morning")),
    ("half past two", dict(at=time(14, 30), part="afternoon")),
    ("quarter to eleven", dict(at=time(10, 45), part="morning")),
    ("11 o'clock", dict(at=time(11, 0), part="morning")),
    ("noon", dict(at=time(12, 0), part="afternoon")),
    ("morning", dict(part="morning")),
    ("in the morning please", dict(part="morning")),
    ("after lunch", dict(part="afternoon")),
    ("afternoon", dict(part="afternoon")),
    ("late afternoon", dict(part="afternoon", after=time(15, 0))),
    ("early morning", dict(part="morning", before=time(10, 0))),
    ("evening", dict(part="evening")),
    ("after 3", dict(after=time(15, 0))),
    ("before 11 am", dict(part="morning", before=time(11, 0))),
    ("the earliest", dict(earliest=True)),
    ("as soon as possible", dict(earliest=True)),
]


@pytest.mark.parametrize("text,expected", TIMES)
def test_times(text, expected):
    got = nlu.parse_time(text)
    assert got == nlu.TimePref(**expected)


def test_time_skips_date_numbers():
    toks = nlu.tokens("december 3 at 4")
    rng, used = nlu.find_date(toks, TODAY)
    assert rng.first == d(12, 3)
    assert nlu.find_time(toks, used).at == time(16, 0)


@pytest.mark.parametrize("text", ["yes", "i want to book an appointment", "in two days",
                                  "the 5th", "the first one", "that one", "the last one",
                                  "the second one please"])
def test_not_times(text):
    assert nlu.parse_time(text) is None


DOCTOR_CASES = [
    ("doctor smith", "smith"),
    ("dr smith", "smith"),
    ("dr. smith please", "smith"),
    ("sarah smith", "smith"),
    ("smith", "smith"),
    ("with doctor patel", "patel"),
    ("raj", "patel"),
    ("the pediatrician", "patel"),
    ("someone for my kids", "patel"),
    ("the skin doctor", "obrien"),
    ("doctor o'brien", "obrien"),
    ("any doctor", nlu.ANY_DOCTOR),
    ("i don't care", nlu.ANY_DOCTOR),
    ("whoever is available", nlu.ANY_DOCTOR),
    ("no preference", nlu.ANY_DOCTOR),
    ("doctor jones", None),
    ("tomorrow morning", None),
]


@pytest.mark.parametrize("text,expected", DOCTOR_CASES)
def test_doctors(text, expected):
    got = nlu.match_doctor(text, DOCTORS)
    assert (got.id if isinstance(got, Doctor) else got) == expected


CHOICES = [
    ("the first one", 0),
    ("first", 0),
    ("the second", 1),
    ("second one please", 1),
    ("the last one", 2),
    ("option two", 1),
    ("number three", 2),
    ("the 10 o'clock", 1),
    ("the ten", 1),
    ("nine am", 0),
    ("the two thirty", 2),
    ("the one with dr patel", 1),
    ("patel", 1),
    ("wednesday's", 2),
    ("the wednesday one", 2),
    ("tuesday with doctor smith", 0),
    ("the afternoon one", 2),
    ("hmm let me think", None),
    ("the one with dr smith", None),  # two with Dr. Smith: ambiguous
    ("the fourth", None),
]


@pytest.mark.parametrize("text,expected", CHOICES)
def test_choices(text, expected):
    assert nlu.choose(text, OPTIONS, DOCTORS) == expected


def test_single_option_yes_chooses_it():
    assert nlu.choose("yes that works", OPTIONS[:1], DOCTORS) == 0


@pytest.mark.parametrize("text", ["noon works for me", "noon please", "the one at midday",
                                  "the afternoon one at noon"])
def test_noon_picks_the_offered_noon(text):
    # a day alone is offered times across it (9 AM, noon, 3 PM): "noon" is one of them
    day = [nlu.Option(datetime(2026, 11, 30, h, 0, tzinfo=TZ), "smith", "Dr. Sarah Smith")
           for h in (9, 12, 15)]
    assert nlu.choose(text, day, DOCTORS) == 1
    assert nlu.choose("the afternoon", day, DOCTORS) is None  # noon and 3 PM: unclear


NAMES = [
    ("my name is john smith", "John Smith"),
    ("it's mary o'brien", "Mary O'Brien"),
    ("this is anne-marie mcdonald", "Anne-Marie McDonald"),
    ("john", "John"),
    ("j o h n smith", "John Smith"),
    ("yes it's john smith thanks", "John Smith"),
    ("i am maria garcia lopez", "Maria Garcia Lopez"),
    ("jon spelled j o n", "Jon"),
    ("yes", None),
    ("tomorrow", None),
    ("i want to book an appointment", None),
    ("five five five", None),
]


@pytest.mark.parametrize("text,expected", NAMES)
def test_names(text, expected):
    assert nlu.parse_name(text) == expected


PHONES = [
    ("five five five one two three four", "5551234"),
    ("555 123 4567", "5551234567"),
    ("555-123-4567", "5551234567"),
    ("my number is five five five oh one oh one double oh one", "5550101001"),
    ("plus one five five five zero one zero one zero zero one", "+15550101001"),
    ("eight hundred five five five one two one two", "8005551212"),
    ("triple five one two one two", "5551212"),
    ("triple five one two one two one two", "555121212"),
    ("five five five", None),
    ("yes", None),
]


@pytest.mark.parametrize("text,expected", PHONES)
def test_phones(text, expected):
    assert nlu.parse_phone(text) == expected


EMAILS = [
    ("john dot smith at gmail dot com", "john.smith@gmail.com"),
    ("my email is mary underscore lee at yahoo dot co dot uk", "mary_lee@yahoo.co.uk"),
    ("it's j smith seven at example dot org", "jsmith7@example.org"),
    ("john.smith@gmail.com", "john.smith@gmail.com"),
    ("a dash b at mail dot net", "a-b@mail.net"),
    ("john at gmail", None),
    ("i'm at home", None),
]


@pytest.mark.parametrize("text,expected", EMAILS)
def test_emails(text, expected):
    assert nlu.parse_email(text) == expected


CODES = [
    ("k seven m four q two", "K7M-4Q2"),
    ("my code is k7m4q2", "K7M-4Q2"),
    ("k7m-4q2", "K7M-4Q2"),
    ("XFM-FMF", "XFM-FMF"),
    ("cancel", None),
    ("kay seven em four queue two", "K7M-4Q2"),
    ("k as in kilo 7 m 4 q 2", "K7M-4Q2"),
    ("it is k 7 m dash 4 q 2", "K7M-4Q2"),
    ("double b seven x y z", "BB7-XYZ"),
    ("k seven m", None),
    ("i don't have it", None),
]


@pytest.mark.parametrize("text,expected", CODES)
def test_codes(text, expected):
    assert nlu.parse_code(text) == expected


INTENTS = [
    ("i'd like to book an appointment", "book"),
    ("i need to see a doctor", "book"),
    ("can i make an appointment for my son", "book"),
    ("i need to cancel my appointment", "cancel"),
    ("i can't make it on friday", "cancel"),
    ("i want to reschedule", "reschedule"),
    ("can i move my appointment to thursday", "reschedule"),
    ("cancel and book another time", "reschedule"),
    ("operator", "operator"),
    ("can i talk to a real person", "operator"),
    ("front desk please", "operator"),
    ("press zero", "operator"),
    ("i want to speak to someone", "operator"),
    ("zero", "operator"),
    ("what are your hours", "hours"),
    ("are you open on saturday", "hours"),
    ("what time do you close", "hours"),
    ("where are you located", "address"),
    ("what's the address", "address"),
    ("bye", "goodbye"),
    ("no that's all thank you", "goodbye"),
    ("anything later", "later"),
    ("do you have something later", "later"),
    ("anything earlier", "earlier"),
    ("the earliest", "earliest"),
    ("i'm having chest pain", "emergency"),
    ("yeah", "yes"),
    ("nope", "no"),
    ("hmm", None),
]


@pytest.mark.parametrize("text,expected", INTENTS)
def test_intents(text, expected):
    assert nlu.intent(text) == expected


YES_NO = [
    ("yes", True), ("yeah", True), ("yep", True), ("sure", True), ("that works", True),
    ("sounds good", True), ("yes please", True), ("okay", True), ("correct", True),
    ("uh huh", True), ("go ahead", True), ("that's right", True),
    ("no", False), ("nope", False), ("not really", False), ("nah", False),
    ("no thank you", False), ("that doesn't work", False), ("that's wrong", False),
    ("none of those", False),
    ("i'm not sure", None), ("maybe", None), ("tuesday", None), ("", None),
]


@pytest.mark.parametrize("text,expected", YES_NO)
def test_yes_no(text, expected):
    assert nlu.yes_no(text) is expected


CORRECTIONS = [
    ("no i said thursday", True),
    ("actually make it friday", True),
    ("i meant the afternoon", True),
    ("sorry i mean doctor patel", True),
    ("thursday", False),
    ("yes", False),
    ("no thanks", False),
]


@pytest.mark.parametrize("text,expected", CORRECTIONS)
def test_corrections(text, expected):
    assert nlu.is_correction(text) is expected


def test_correction_carries_new_value():
    assert nlu.parse_date("no i said thursday", TODAY).single == d(11, 26)
    assert nlu.parse_date("actually make it friday", TODAY).single == d(11, 27)


def test_normalize_handles_punctuation_and_case():
    assert nlu.normalize("Yes, at 3:30 P.M., please!") == "yes at 3 30 pm please"


# ---------------------------------------------------------------- visit types and policy words

VISITS = (VisitType("new", "new patient visit", 40), VisitType("followup", "follow-up", 20))

VISIT_PHRASES = [
    # (what the caller says, answering "new patient or follow-up?", expected id)
    ("new patient", "new"),
    ("a new patient visit please", "new"),
    ("it's my first time", "new"),
    ("I've never been there", "new"),
    ("i haven't been there before", "new"),
    ("i'm new", "new"),
    ("we just moved here", "new"),
    ("first visit", "new"),
    ("follow up", "followup"),
    ("a follow-up", "followup"),
    ("followup", "followup"),
    ("a check-up after my surgery", "followup"),
    ("I'm not a new patient", "followup"),
    ("i have been there before", "followup"),
    ("no it's a follow up", "followup"),
    ("i'm a returning patient", "followup"),
    ("to go over my test results", "followup"),
    ("the doctor told me to come back", "followup"),
    ("1", "new"),
    ("2", "followup"),
    ("option two", "followup"),
    ("the first one", "new"),
    ("the second one", "followup"),
    ("the last one", "followup"),
    ("new", "new"),
    ("not sure", None),
    ("yes", None),
    ("what's the difference", None),
]


@pytest.mark.parametrize("text,expected", VISIT_PHRASES)
def test_visit_type_answers(text, expected):
    got = nlu.match_visit_type(text, VISITS, answer=True)
    assert (got.id if got else None) == expected


@pytest.mark.parametrize("text,expected", [
    ("i'd like to book a new patient visit with dr smith tomorrow", "new"),
    ("can i get a follow-up appointment", "followup"),
    ("book a check-up after my surgery", "followup"),
    ("i've never been there and want an appointment", "new"),
    # free text outside the question: positions, bare ids and stray words mean nothing
    ("book a new appointment", None),
    ("the first one", None),
    ("1", None),
    ("i'd like the first available", None),
    ("i'm returning your call", None),
    ("let me see how my week looks", None),
])
def test_visit_type_in_free_text(text, expected):
    got = nlu.match_visit_type(text, VISITS)
    assert (got.id if got else None) == expected


def test_visit_type_with_other_names_and_kinds():
    types = (VisitType("physical", "annual physical", 60), VisitType("vax", "vaccination", 20),
             VisitType("intake", "first consultation", 40))
    assert nlu.match_visit_type("the physical", types, answer=True).id == "physical"
    assert nlu.match_visit_type("just a vaccination", types).id == "vax"
    assert nlu.match_visit_type("i've never been seen there", types).id == "intake"
    assert nlu.match_visit_type("number three", types, answer=True).id == "intake"
    assert nlu.visit_kind(types[2]) == "new" and nlu.visit_kind(types[0]) is None
    assert nlu.match_visit_type("follow up", ()) is None


RELATIVE = [
    ("in an hour", timedelta(hours=1)),
    ("can i come in an hour", timedelta(hours=1)),
    ("in one hour", timedelta(hours=1)),
    ("in 2 hours", timedelta(hours=2)),
    ("in thirty minutes", timedelta(minutes=30)),
    ("in half an hour", timedelta(minutes=30)),
    ("in an hour and a half", timedelta(minutes=90)),
    ("in a couple of hours", timedelta(hours=2)),
    ("right now", timedelta(0)),
    ("can i come in now", timedelta(0)),
    ("in two days", None),
    ("in the morning", None),
    ("tomorrow at 3", None),
]


@pytest.mark.parametrize("text,expected", RELATIVE)
def test_relative_times(text, expected):
    assert nlu.parse_relative(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("on christmas", d(12, 25)),
    ("christmas day", d(12, 25)),
    ("christmas eve", d(12, 24)),
    ("new year's day", d(1, 1, 2027)),
    ("new year's eve", d(12, 31)),
    ("thanksgiving", d(11, 26)),
    ("the day after thanksgiving", d(11, 27)),
    ("the day before christmas", d(12, 24)),
    ("boxing day", d(12, 26)),
])
def test_holidays(text, expected):
    got = nlu.parse_date(text, TODAY)
    assert got is not None and got.single == expected


@pytest.mark.parametrize("code", ["RPM-2BR", "4G4-AMJ", "AMH-WHS", "6G4-5PM"])
def test_codes_with_am_pm_letters(code):
    """Letters "a m"/"p m" in a code survive the clock normalisation of the transcript."""
    spelled = nlu.normalize(" ".join(code.replace("-", "")).lower())
    assert nlu.parse_code(spelled) == code


@pytest.mark.parametrize("text,n,expected", [
    ("the first one", 2, 0), ("the second one", 2, 1), ("the last one", 2, 1),
    ("the latter", 2, 1), ("the former", 3, 0), ("option two", 2, 1), ("the third one", 2, None),
    ("the middle one", 3, 1), ("afternoon", 2, None), ("", 2, None)])
def test_position_among_choices_read_out(text, n, expected):
    assert nlu.position(text, n) == expected
