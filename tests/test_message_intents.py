"""Message-taking language: "leave a message", "call me back at …", "it's urgent", numbers."""

from __future__ import annotations

import pytest

from esl_app.providers.agent.message import (
    failure_kind,
    is_urgent,
    parse_phone,
    spell_phone,
    wants_message,
)

MESSAGE_REQUESTS = [
    "can i leave a message",
    "i'd like to leave a message for doctor smith",
    "could you take a message",
    "please take a message for the nurse",
    "can someone call me back",
    "could you have the doctor call me",
    "have somebody call me please",
    "call me back at five five five zero one zero one two three four",
    "just call me back on 555 010 1234",
    "can i get a call back",
    "i'd like a callback please",
    "i want to request a call back",
    "can you ask the nurse to call me",
    "can you pass on a message to the front desk",
    "i'll leave a voicemail",
    "please get back to me",
    "can they return my call",
    "ring me back at five five five one two one two",
]
NOT_MESSAGE_REQUESTS = [
    "i want to book an appointment",
    "i don't want to leave a message",
    "no message thanks",
    "i'll call back later",
    "i can call you back tomorrow",
    "what are your hours",
    "cancel my appointment please",
    "my name is john smith",
    "",
]
URGENT = [
    "it's urgent",
    "this is urgent",
    "it's really urgent please",
    "i need to speak to someone urgently",
    "it can't wait",
    "this is time sensitive",
    "it's a matter of some urgency",
]
NOT_URGENT = [
    "it's not urgent",
    "nothing urgent, just a question",
    "is the urgent care open on sunday",
    "i want to book a check up",
    "",
]
PHONES = [
    ("five five five zero one zero one two three four", "5550101234"),
    ("555-010-1234", "5550101234"),
    ("(555) 010 1234", "5550101234"),
    ("call me back at 555 010 1234 after 3 pm", "5550101234"),
    ("my number is five five five, oh one oh, one two three four", "5550101234"),
    ("double five five zero one zero twelve thirty four", "5550101234"),
    ("it's five five five zero one zero one to three four", "5550101234"),
    ("plus one five five five zero one zero one two three four", "+15550101234"),
    ("+15550101234", "+15550101234"),
    ("eight hundred five five five one two one two", "8005551212"),
    ("five five five fifty two forty one", "5555241"),
    ("uh five five five um zero one zero dash nine nine nine nine", "5550109999"),
    ("five five five", None),
    ("nine one one", None),
    ("call me back please", None),
    ("at four o'clock", None),
    ("", None),
]


@pytest.mark.parametrize("text", MESSAGE_REQUESTS)
def test_message_requests_are_understood(text: str) -> None:
    assert wants_message(text), text


@pytest.mark.parametrize("text", NOT_MESSAGE_REQUESTS)
def test_other_turns_are_not_message_requests(text: str) -> None:
    assert not wants_message(text), text


@pytest.mark.parametrize("text", URGENT)
def test_urgent(text: str) -> None:
    assert is_urgent(text), text


@pytest.mark.parametrize("text", NOT_URGENT)
def test_not_urgent(text: str) -> None:
    assert not is_urgent(text), text


@pytest.mark.parametrize(("text", "digits"), PHONES)
def test_parse_phone(text: str, digits: str | None) -> None:
    assert parse_phone(text) == digits


def test_tables_are_large_enough() -> None:
    assert len(MESSAGE_REQUESTS) + len(NOT_MESSAGE_REQUESTS) + len(URGENT) + len(NOT_URGENT) >= 15
    assert len(PHONES) >= 15


def test_spell_phone_reads_digit_groups() -> None:
    assert spell_phone("+15550101234") == "five five five, zero one zero, one two three four"
    assert spell_phone("5550109999") == "five five five, zero one zero, nine nine nine nine"
    assert spell_phone("5550100") == "five five five, zero one zero zero"
    assert spell_phone("+442079460000") == ("four four two, zero seven nine, four six zero, "
                                            "zero zero zero")


@pytest.mark.parametrize(("cause", "kind"), [
    ("USER_BUSY", "busy"), ("NO_ANSWER", "no_answer"), ("NO_USER_RESPONSE", "no_answer"),
    ("ALLOTTED_TIMEOUT", "no_answer"), ("CALL_REJECTED", "failed"), ("", "failed"),
    ("requested", "requested"),
])
def test_failure_kind(cause: str, kind: str) -> None:
    assert failure_kind(cause) == kind
