"""Red-flag detection: a table of recogniser-style phrasings, and the emergency reply."""

from __future__ import annotations

import pytest

from esl_app.config.tenants import Tenant
from esl_app.providers.agent.safety import CATEGORIES, detect_emergency, emergency_reply

# (utterance as a recogniser would return it, expected category)
TRIGGERS: list[tuple[str, str]] = [
    ("i have chest pain", "chest_pain"),
    ("my chest hurts really bad", "chest_pain"),
    ("there is a lot of pressure in my chest", "chest_pain"),
    ("chest tightness since an hour ago", "chest_pain"),
    ("my chest has been hurting since this morning", "chest_pain"),
    ("my chest had been aching all day", "chest_pain"),
    ("i think i am having a heart attack", "chest_pain"),
    ("no i have chest pain", "chest_pain"),
    ("i had chest pain last year and now it is back", "chest_pain"),
    ("i can't breathe", "breathing"),
    ("i cant breathe", "breathing"),
    ("my husband is having trouble breathing", "breathing"),
    ("i am short of breath and dizzy", "breathing"),
    ("she is really struggling to breathe", "breathing"),
    ("no, i cannot breathe", "breathing"),
    ("my dad's face is drooping on one side", "stroke"),
    ("his speech is slurred", "stroke"),
    ("she has slurred speech all of a sudden", "stroke"),
    ("my left side is numb", "stroke"),
    ("my mom is suddenly confused", "stroke"),
    ("i think my wife is having a stroke", "stroke"),
    ("i had a stroke last year and now i have slurred speech again", "stroke"),
    ("i cut my hand and it won't stop bleeding", "bleeding"),
    ("he is bleeding heavily", "bleeding"),
    ("there is severe bleeding from his leg", "bleeding"),
    ("i want to kill myself", "self_harm"),
    ("i've been having suicidal thoughts", "self_harm"),
    ("i just want to end my life", "self_harm"),
    ("i keep thinking about hurting myself", "self_harm"),
    ("my baby is not breathing", "not_breathing"),
    ("my son is turning blue", "not_breathing"),
    ("the baby stopped breathing", "not_breathing"),
    ("i think she took too many pills", "overdose"),
    ("he took twenty of his sleeping pills", "overdose"),
    ("my daughter took 30 tylenol", "overdose"),
    ("i think he overdosed", "overdose"),
    ("my grandfather passed out and won't wake up", "unconscious"),
    ("she is unconscious", "unconscious"),
    ("i'm having a severe allergic reaction", "allergic"),
    ("my throat is closing up", "allergic"),
    ("he is having a seizure and it won't stop", "seizure"),
    ("she has been seizing for five minutes", "seizure"),
    ("this is an emergency", "declared"),
    ("please send an ambulance", "declared"),
    ("chest pain", "chest_pain"),
    ("I Have CHEST PAIN!", "chest_pain"),
    ("my chest pain started this morning and i need an appointment", "chest_pain"),
]

# ordinary booking talk, history, negations and names: none of these may trigger
QUIET: list[str] = [
    "i'd like to book my chest x-ray appointment",
    "i need a follow up for my breathing test",
    "i had a stroke last year and need my check-up",
    "no chest pain, just a cough",
    "i don't have any chest pain",
    "i do not have trouble breathing",
    "my name is chester payne",
    "i'd like to see doctor blue on tuesday",
    "can i book a follow-up for my chest pain from last month",
    "i have a history of chest pain and need a refill",
    "she is not having a seizure, she needs her seizure medication refill",
    "i'm not suicidal, i just need to see the doctor",
    "it's not an emergency, i just need an appointment",
    "i need an emergency appointment for my tooth",
    "my emergency contact is my wife",
    "i took two tablets of ibuprofen and it didn't help my headache",
    "i took all my pills this morning like the doctor said",
    "i had food poisoning last week and want a check up",
    "book me with dr stroke please",
    "he has a breathing treatment scheduled",
    "my son had a seizure three years ago and needs his check up",
    "i passed out two years ago and my doctor wants a follow up",
    "the bleeding stopped, i need my stitches out",
    "i'd like to schedule a cardiology consult for my heart",
    "my appointment is at two thirty",
    "i have an allergic reaction to penicillin, please note that",
    "can i come in tomorrow morning",
    "my chest pain is gone now, i want a check up",
    "",
]


@pytest.mark.parametrize(("text", "category"), TRIGGERS)
def test_red_flags_trigger(text: str, category: str) -> None:
    match = detect_emergency(text)
    assert match is not None, text
    assert match.category == category, (text, match)
    assert match.phrase


@pytest.mark.parametrize("text", QUIET)
def test_booking_talk_history_and_negations_do_not_trigger(text: str) -> None:
    assert detect_emergency(text) is None, (text, detect_emergency(text))


def test_table_is_large_and_covers_every_category() -> None:
    assert len(TRIGGERS) + len(QUIET) >= 40
    assert len(QUIET) >= 15
    assert {c for _, c in TRIGGERS} == set(CATEGORIES)


def _tenant(**kw: object) -> Tenant:
    return Tenant(id="t", name="Test Clinic", dids=("1001",), timezone="UTC", **kw)  # type: ignore[arg-type]


def test_reply_transfers_to_urgent_line_when_configured() -> None:
    reply = emergency_reply(_tenant(urgent_line="user/2000"))
    assert reply.action == "transfer"
    assert reply.transfer_to == "user/2000"
    assert reply.outcome == "emergency"
    assert reply.text == "I'm transferring you to our urgent line now."


def test_reply_sends_caller_to_emergency_number_otherwise() -> None:
    reply = emergency_reply(_tenant())
    assert reply.action == "hangup"
    assert reply.outcome == "emergency"
    assert "hang up and call 911 now" in reply.text
    eu = emergency_reply(_tenant(emergency_number="112"))
    assert "call 112 now" in eu.text
