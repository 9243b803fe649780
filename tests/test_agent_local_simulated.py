"""Issue #27 end to end: whole emulated calls into the local bot, callers that answer what
they are asked (esl_app.sim.simulate: the FreeSWITCH emulator dials the real ESL server)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from esl_app.scheduling import service
from esl_app.sim.simulate import SimCall, start_local_bot, transcript_for
from esl_app.sim.testing import make_db

SCALE = 0.02
YAML = textwrap.dedent("""
    tenants:
      - id: sunrise
        name: Sunrise Family Clinic
        dids: ["1001"]
        timezone: America/New_York
        greeting: Thank you for calling Sunrise Family Clinic.
        hours: {mon-sun: "00:00-23:30"}
        slot_minutes: 30
        handoff: user/1000
        stt: freeswitch
        tts: freeswitch
        doctors:
          - {id: smith, name: Dr. Sarah Smith, specialty: family medicine}
          - {id: okafor, name: Dr. Chidi Okafor, specialty: dermatology}
""")
FILLERS = ("Thank you.", "Thanks.", "Great.", "Okay.", "Sure.")


@pytest.fixture
def bot(tmp_path) -> Iterator:
    bot = start_local_bot(make_db(tmp_path, YAML, days=7))
    yield bot
    bot.stop()


def converse(bot, answer: Callable[[str], str | None], max_turns: int = 25
             ) -> tuple[dict, list[str]]:
    """One call: after each reply, the caller says ``answer(reply)`` (None: hang up)."""
    sim = SimCall(bot.address, "1001", "+15550100100", time_scale=SCALE).start()
    replies: list[str] = []
    for _ in range(max_turns):
        if not sim.call.wait_until_listening(30):
            break
        said = " ".join(ev.get("text", "") for ev in sim.events(0.05)
                        if ev.get("event") == "bot_said")
        replies.append(said)
        line = answer(said)
        if line is None or not sim.act(line):
            break
    sim.finish()
    return transcript_for(sim, bot), replies


_CLOCK = re.compile(r"\b(?:\d{1,2}(?::\d{2})? ?[ap]m|noon|midnight)\b")


def booking_caller(first: str, **wants: str | None) -> Callable[[str], str | None]:
    """A caller who opens with ``first``, then answers each question from ``wants``.

    It goes by what a question is about, not by its wording: a booking read back
    ("book" and a time), times offered, a doctor, a day, a number, a name. Offered
    times outside the part of the day it wants (``part``), it asks for that part.
    """
    said_first = False
    w = {"doctor": "any doctor", "day": "as soon as possible", "part": None,
         "pick": "the first one", "name": "Jane Doe", "check": "yes",
         "phone": "five five five, oh one oh one, double oh two"} | wants

    def answer(prompt: str) -> str | None:
        nonlocal said_first
        p = prompt.lower()
        if not said_first:
            said_first = True
            return first
        times = _CLOCK.findall(p)
        if "anything else" in p:
            return "no thanks"
        if "did you mean" in p or "is that your name" in p:
            return w["check"]
        if times and re.search(r"\bbook\b", p):
            return "yes"
        if times:
            afternoon = [t == "noon" or t.endswith("pm") for t in times]
            if w["part"] and not all(a == (w["part"] == "afternoon") for a in afternoon):
                return f"in the {w['part']} please"
            return "yes" if len(times) == 1 else w["pick"]
        if re.search(r"\bdoctors?\b", p):
            return w["doctor"]
        if "morning" in p and "afternoon" in p:
            return w["part"] or "any time"
        if re.search(r"\b(?:day|date|when)\b", p):
            return w["day"]
        if re.search(r"\b(?:number|phone)\b", p):
            return w["phone"]
        if "name" in p:
            return w["name"]
        if "what would you like to do" in p:
            return "book an appointment"
        return None

    return answer


def local_start(transcript: dict) -> datetime:
    return datetime.fromisoformat(transcript["appointment"]["start"]).astimezone(
        ZoneInfo("America/New_York"))


def test_the_afternoon_said_first_is_kept_for_the_earliest(bot):
    transcript, replies = converse(bot, booking_caller("appointment, afternoon"))
    assert transcript["outcome"] == "booked", replies
    assert local_start(transcript).hour >= 12


def test_hello_then_a_misheard_doctor_and_a_spelled_name(bot):
    caller = booking_caller("hi", doctor="doctor october", name="J O H N, John Smith")
    transcript, replies = converse(bot, caller)
    assert "book" in replies[1] and "Sorry" not in replies[1]  # a friendly menu for "hi"
    assert any("Did you mean Dr. Okafor?" in r for r in replies)
    assert any("J, O, H, N" in r for r in replies)
    assert transcript["outcome"] == "booked", replies
    appt = service.get_appointment("sunrise", transcript["confirmation"])
    assert appt.doctor == "okafor" and appt.patient_name == "John Smith"


def test_a_caller_who_keeps_asking_to_repeat_is_offered_the_front_desk(bot):
    lines = iter(["book an appointment"] + ["sorry, could you repeat that?"] * 14)

    def answer(prompt: str) -> str | None:
        if "front desk?" in prompt:
            return "yes"
        return next(lines, None)

    transcript, replies = converse(bot, answer)
    assert transcript["outcome"] == "handoff" and transcript["transfer_to"] == "user/1000"
    asked = replies[2:]  # the replies to "repeat that"
    assert len(asked) <= 3, replies  # content again, then the offer: no fourteen rounds
    assert not any(r.startswith(FILLERS) for r in asked)
    for a, b, c in zip(replies, replies[1:], replies[2:], strict=False):
        assert not (a == b == c), replies
