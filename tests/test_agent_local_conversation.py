"""Issue #27: the local agent keeps what callers say, gets out of loops, and hears names.

Conversations run against a real SQLite calendar through the agent's public
interface (the guarded agent, as production runs it). Callers are adaptive where
it matters: they answer whatever the bot asked, from what they want, so the
tests hold when prompts are reworded.
"""

from __future__ import annotations

import json
import re
import textwrap
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from esl_app.providers.agent import tools
from esl_app.providers.agent.base import AgentReply, CallContext, Utterance
from esl_app.providers.agent.guard import GuardedAgent
from esl_app.providers.agent.local import LocalAgent
from esl_app.providers.markup import to_plain
from esl_app.scheduling import service
from esl_app.sim.testing import make_db

TZ = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=TZ)  # a Tuesday
CALLER = "+15551234567"
YAML = textwrap.dedent("""
    tenants:
      - id: sunrise
        name: Sunrise Family Clinic
        dids: ["1001"]
        timezone: America/New_York
        hours: {mon-fri: "08:00-17:00", sat: "09:00-12:00"}
        slot_minutes: 30
        handoff: user/1000
        doctors:
          - {id: smith, name: Dr. Sarah Smith, specialty: family medicine}
          - {id: patel, name: Dr. Raj Patel, specialty: pediatrics}
          - {id: okafor, name: Dr. Chidi Okafor, specialty: dermatology}
      - id: quiet
        name: Quiet Clinic
        dids: ["1003"]
        timezone: America/New_York
        hours: {mon-fri: "08:00-17:00"}
        slot_minutes: 30
        doctors:
          - {id: lee, name: Dr. Ann Lee}
          - {id: kim, name: Dr. Bo Kim}
""")
FILLERS = ("Thank you.", "Thanks.", "Great.", "Okay.", "Sure.")


@pytest.fixture(scope="module")
def tenants(tmp_path_factory):
    return make_db(tmp_path_factory.mktemp("conv"), YAML, days=14, now=NOW)


@pytest.fixture
def sunrise(tenants):
    yield tenants.get("sunrise")
    service.release_holds("conv")
    for appt in service.list_appointments("sunrise"):
        service.cancel("sunrise", appt.confirmation, enforce_window=False, now=NOW)


@pytest.fixture
def quiet(tenants):
    return tenants.get("quiet")


class Call:
    """One call through the guarded local agent, keeping every reply."""

    def __init__(self, tenant, caller: str | None = CALLER):
        self.agent = GuardedAgent(LocalAgent())
        self.call = CallContext(call_id="conv", tenant=tenant, caller=caller, did="1001",
                                now=NOW)
        self.replies: list[AgentReply] = [self.agent.greet(self.call)]

    def say(self, text: str | None = None, dtmf: str | None = None) -> AgentReply:
        reply = self.agent.respond(self.call, Utterance(text=text, dtmf=dtmf))
        self.replies.append(reply)
        json.dumps(self.call.state)  # resumable by another agent
        return reply

    @property
    def last(self) -> str:
        return to_plain(self.replies[-1].text)

    @property
    def state(self) -> dict:
        return self.call.state

    @property
    def offered(self) -> list[dict]:
        return self.call.state.get("offered", [])


_CLOCK = re.compile(r"\b(?:\d{1,2}(?::\d{2})? ?[ap]m|noon)\b")


class Wishes:
    """An adaptive caller: answers whatever the bot asks from what they want.

    It goes by what a question is about, not by its wording: a question that reads
    a booking back ("book" and a time), one that offers times (clock times), one
    about doctors, days, a number or a name. A caller who wants a part of the day
    and is offered times outside it says so instead of picking one.
    """

    def __init__(self, **wants: str | None):
        self.wants: dict[str, str | None] = {
            "doctor": "any doctor", "day": "tomorrow", "part": None,
            "pick": "the first one", "name": "Jane Doe",
            "phone": "five five five, oh one two, three four five six",
            "confirm": "yes", "else": "no thanks", "check": "yes"} | wants

    def fits(self, prompt: str) -> bool:
        """The times in ``prompt`` are all in the part of the day wanted (if any)."""
        part = self.wants["part"]
        if not part:
            return True
        afternoon = [c == "noon" or c.endswith("pm") for c in _CLOCK.findall(prompt.lower())]
        return all(a == ("afternoon" in part) for a in afternoon)

    def answer(self, prompt: str) -> str:
        p = to_plain(prompt).lower()
        w = self.wants
        times = _CLOCK.search(p)
        if "anything else" in p:
            return w["else"]
        if "did you mean" in p or "is that your name" in p:
            return w["check"]
        if times and re.search(r"\bbook\b", p):
            return w["confirm"]
        if times:
            return w["pick"] if self.fits(p) else f"in the {w['part']} please"
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
        raise AssertionError(f"unexpected question: {prompt!r}")

    def until(self, c: Call, stage: str, limit: int = 12) -> None:
        """Answer the bot's questions until it reaches ``stage`` (with times that fit)."""
        for _ in range(limit):
            if c.state.get("stage") == stage and (stage != "offer" or self.fits(c.last)):
                return
            c.say(self.answer(c.last))
        assert c.state.get("stage") == stage, c.last


def local(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(TZ)


def earliest_open(tenant, **kw) -> dict:
    return tools.search_slots(tenant, limit=1, now=NOW, **kw)["slots"][0]


# ---------------------------------------------------------------- 1: constraints are kept


def test_afternoon_said_first_is_kept_when_the_caller_then_wants_the_earliest(sunrise):
    # reproduced: "appointment, afternoon", then "as soon as possible" offered 9 AM
    c = Call(sunrise)
    c.say("appointment, afternoon")
    c.say("as soon as possible")  # to whatever was asked next (the doctor)
    assert c.state["stage"] == "offer"
    assert c.offered and all(local(s["start"]).hour >= 12 for s in c.offered)
    first = earliest_open(sunrise, part_of_day="afternoon")
    assert c.offered[0]["start"] == first["start"]
    c.say("actually, make it Monday")  # an explicit change: only the day changes
    assert c.offered and all(local(s["start"]).date().isoformat() == "2026-11-30"
                             and local(s["start"]).hour >= 12 for s in c.offered)


@pytest.mark.parametrize("opening,wishes,day,morning,doctor", [
    ("i'd like an appointment in the morning", {"doctor": "doctor patel", "day": "thursday"},
     "2026-11-26", True, "patel"),
    ("book with doctor okafor", {"day": "tomorrow", "part": "afternoon"},
     "2026-11-25", False, "okafor"),
    ("can i come in thursday afternoon", {"doctor": "dr smith"}, "2026-11-26", False, "smith"),
    ("the pediatrician please, mornings are best", {"day": "friday"}, "2026-11-27", True,
     "patel"),
])
def test_every_constraint_survives_the_questions_that_follow(sunrise, opening, wishes, day,
                                                             morning, doctor):
    c = Call(sunrise)
    c.say(opening)
    Wishes(**wishes).until(c, "offer")
    assert c.offered
    for s in c.offered:
        assert local(s["start"]).date().isoformat() == day
        assert (local(s["start"]).hour < 12) == morning
        assert s["doctor"] == doctor


def test_a_change_must_be_explicit_and_changes_only_what_it_names(sunrise):
    c = Call(sunrise)
    c.say("book with doctor patel tomorrow afternoon")
    assert all(s["doctor"] == "patel" for s in c.offered)
    c.say("the first one")
    c.say("Jane Doe")
    assert c.state["stage"] == "confirm"
    c.say("actually, make it friday")
    assert c.offered and all(local(s["start"]).date().isoformat() == "2026-11-27"
                             and local(s["start"]).hour >= 12 and s["doctor"] == "patel"
                             for s in c.offered)
    assert c.state["name"] == "Jane Doe"  # the name was not touched either


def test_the_earliest_after_offers_keeps_the_part_of_day(sunrise):
    c = Call(sunrise)
    c.say("book with any doctor on friday afternoon")
    c.say("what's the earliest you have")
    assert c.offered and all(local(s["start"]).hour >= 12 for s in c.offered)
    assert c.offered[0]["start"] == earliest_open(sunrise, part_of_day="afternoon")["start"]


def test_a_day_alone_with_any_of_three_doctors_is_offered_the_whole_day(sunrise):
    # three doctors fill the first page of times before 3 PM: the offer still spans the day
    c = Call(sunrise)
    c.say("book with any doctor on friday")
    starts = [local(s["start"]) for s in c.offered]
    assert len(starts) == 3 and all(s.date().isoformat() == "2026-11-27" for s in starts)
    assert starts[0].hour < 12 and any(12 <= s.hour < 15 for s in starts)
    assert starts[-1].hour >= 15
    assert c.offered[0]["start"] == earliest_open(sunrise, date=starts[0].date())["start"]


# ---------------------------------------------------------------- 2: earliest means any doctor


@pytest.mark.parametrize("text", [
    "I need to see a doctor, whatever is the earliest you have",
    "what's the earliest appointment",
    "i need an appointment as soon as possible",
])
def test_the_earliest_is_across_doctors_unless_one_was_named(sunrise, text):
    c = Call(sunrise)
    r = c.say(text)
    assert c.state["stage"] == "offer", r.text
    assert "Which doctor" not in r.text
    assert c.offered[0]["start"] == earliest_open(sunrise)["start"]
    c = Call(sunrise)
    c.say(f"{text}, with doctor okafor")
    assert c.offered and all(s["doctor"] == "okafor" for s in c.offered)


# ---------------------------------------------------------------- 3: loops


def _never_thrice(replies: list[AgentReply]) -> None:
    texts = [to_plain(r.text) for r in replies]
    for a, b, c in zip(texts, texts[1:], texts[2:], strict=False):
        assert not (a == b == c), f"said three times running: {a!r}"


def test_asking_to_repeat_gets_the_content_then_a_way_out(sunrise):
    c = Call(sunrise)
    c.say("book with dr smith tomorrow morning")
    c.say("the first one")
    asked = c.last
    assert asked.startswith("Great.") and "name" in asked
    again = c.say("sorry, could you repeat that?")
    assert "name" in again.text and not again.text.startswith(FILLERS)
    for _ in range(12):
        if c.say("sorry, could you repeat that?").action != "continue":
            break  # put through: the call has left the bot
    assert c.replies[-1].action == "transfer"
    _never_thrice(c.replies)
    assert any("front desk" in r.text for r in c.replies[2:5])
    assert not any(r.text.startswith(FILLERS) for r in c.replies[3:])


def test_a_question_without_progress_is_rephrased_then_the_front_desk_is_offered(sunrise):
    # reproduced: one question ("Do you prefer the morning or the afternoon?") twelve
    # times; here the caller keeps saying the day they already gave to the times offered
    c = Call(sunrise)
    c.say("book with doctor smith")
    c.say("tomorrow")
    first = c.last
    assert c.state["stage"] == "offer" and "Which would you like" in first
    offered = list(c.offered)
    second = to_plain(c.say("tomorrow").text)
    assert second != first and len(second) < len(first)
    assert '"the first one"' in second  # an example of an answer
    assert c.offered == offered  # the same times, said shorter
    third = c.say("tomorrow")
    assert "front desk" in third.text and c.state["stage"] == "offer_handoff"
    assert c.say("yes").action == "transfer"


@pytest.mark.parametrize("stage_script", [
    ["book an appointment"],                                        # which doctor
    ["book with dr smith"],                                          # what day
    ["book with dr smith tomorrow morning"],                         # which time
    ["book with dr smith tomorrow morning", "the first one"],        # name
    ["book with dr smith tomorrow morning", "the first one", "Jane Doe"],  # phone ok
    ["i want to cancel my appointment"],                             # code
])
@pytest.mark.parametrize("noise", [["blah", "hmm", "purple", "blah", "hmm", "purple"],
                                   ["", "", "", "", "", ""],
                                   ["what"] * 6])
def test_no_question_is_asked_three_times_running(sunrise, stage_script, noise):
    c = Call(sunrise)
    for line in stage_script:
        c.say(line)
    start = len(c.replies) - 1
    for line in noise:
        r = c.say(line)
        if c.state.get("stage") == "offer_handoff" or r.action != "continue":
            break
    _never_thrice(c.replies)
    assert c.state.get("stage") == "offer_handoff" or c.replies[-1].action == "transfer"
    assert len(c.replies) - start <= 4  # the front desk is offered by the third asking


def test_without_a_front_desk_the_keypad_then_a_message_is_offered(quiet):
    c = Call(quiet)
    c.say("book an appointment")
    texts = [to_plain(c.say("blah").text) for _ in range(4)]
    _never_thrice(c.replies)
    assert '"Dr. Lee"' in texts[0]  # shorter, with an example
    assert "keypad" in texts[1] and "press 1" in texts[1]
    assert "leave a message" in texts[2]
    assert "message" in texts[3] and c.state.get("mode") == "message"
    r = c.say("yes")  # the message sub-dialogue owns the call now
    assert "name" in r.text


def test_the_keypad_answers_what_the_bot_said_it_would(quiet):
    c = Call(quiet)
    c.say("book an appointment")
    c.say("blah")
    c.say("blah")
    assert "press 1 or 2" in c.last
    c.say(dtmf="2")
    assert c.state["doctor"] == "kim" and "What day" in c.last


# ---------------------------------------------------------------- 4: openers and small talk


@pytest.mark.parametrize("opener", ["hi", "hello?", "Hello? Can you hear me?", "hey there",
                                    "good morning", "are you a robot?", "who is this",
                                    "am I talking to a real person?", "hi how are you",
                                    "what can you do"])
def test_openers_get_a_friendly_answer_and_the_menu(sunrise, opener):
    c = Call(sunrise)
    r = c.say(opener)
    assert r.action == "continue", r.text  # "a real person?" is a question, not a request
    assert "Sorry" not in r.text and "didn't" not in r.text
    assert "book" in r.text and "cancel" in r.text
    assert c.state["misses"] == 0
    r = c.say("i'd like to book an appointment")
    assert "Which doctor" in r.text


def test_a_greeting_before_the_request_is_not_part_of_it(sunrise):
    c = Call(sunrise)
    c.say("good morning, i need an appointment with doctor patel on thursday")
    assert c.state.get("part") is None and c.state["stage"] == "offer"
    # "good morning" is no time of day: the times offered span thursday
    hours = [local(s["start"]).hour for s in c.offered]
    assert min(hours) < 12 <= max(hours)
    assert all(s["doctor"] == "patel" for s in c.offered)


def test_hello_in_the_middle_of_a_question_asks_it_again(sunrise):
    c = Call(sunrise)
    c.say("book with doctor smith")
    r = c.say("hello?")
    assert "day" in r.text.lower() and "Sorry" not in r.text and r.text.startswith("Hi")


# ---------------------------------------------------------------- 5: slot questions first


def test_a_misheard_name_is_read_as_a_name_not_a_new_search(sunrise):
    # reproduced: "monday good" at the name question searched Monday again
    c = Call(sunrise)
    c.say("book with dr smith tomorrow morning")
    chosen = c.offered[0]
    c.say("the first one")
    r = c.say("monday good")
    assert c.state["stage"] == "name_check" and "Monday Good" in r.text
    assert c.state["chosen"] == chosen and "morning or" not in r.text
    r = c.say("no")
    assert "spell" in r.text
    r = c.say("M as in Mary, A, R, Y, Good")
    assert c.state["name"] == "Mary Good" and "M, A, R, Y" in r.text
    assert c.state["chosen"] == chosen


def test_only_an_explicit_change_at_the_name_question_searches_again(sunrise):
    c = Call(sunrise)
    c.say("book with dr smith tomorrow morning")
    c.say("the first one")
    r = c.say("actually, can we do monday instead?")
    assert c.state["stage"] == "offer"
    assert all(local(s["start"]).date().isoformat() == "2026-11-30" for s in c.offered)
    assert "Monday" in r.text


def test_the_phone_question_reads_digits_first(sunrise):
    c = Call(sunrise, caller=None)
    c.say("book with dr smith tomorrow morning")
    c.say("the first one")
    c.say("Jane Doe")
    r = c.say("five five five, oh one two, three four five six")
    assert c.state["phone"] == "5550123456" and "Shall I book" in r.text


# ---------------------------------------------------------------- 6: spelled names


@pytest.mark.parametrize("said,name,readback", [
    ("J O H N", "John", "J, O, H, N"),
    ("j-o-h-n smith", "John Smith", "J, O, H, N"),
    ("M as in Mary, A, R, Y", "Mary", "M, A, R, Y"),
    ("smith, s m i t h", "Smith", "S, M, I, T, H"),
    ("my name is Priya Raman", "Priya Raman", "Priya Raman"),
])
def test_spelled_names_are_accepted_and_read_back(sunrise, said, name, readback):
    c = Call(sunrise)
    c.say("book with dr smith tomorrow morning")
    c.say("the first one")
    r = c.say(said)
    assert c.state["name"] == name
    # read back in the confirmation, which also names the number called from
    assert readback in r.text and c.state["stage"] == "confirm"
    assert r.text.index(readback) < r.text.index("Shall I book")
    assert f"for {name}," in r.text and "ending in 4 5 6 7" in r.text


def test_the_caller_corrects_a_spelling_and_the_booking_has_it(sunrise):
    c = Call(sunrise)
    c.say("book with dr smith tomorrow morning")
    c.say("the first one")
    c.say("john smith")
    r = c.say("no, it's spelled j o n")  # to the confirmation that read the name back
    assert c.state["name"] == "Jon Smith" and "for Jon Smith" in r.text
    assert c.state["stage"] == "confirm"
    Wishes().until(c, "anything_else")
    booked = service.get_appointment(sunrise.id, c.state["confirmation"])
    assert booked.patient_name == "Jon Smith"


@pytest.mark.parametrize("fix,name", [
    # the surname spelled: the first name is kept (it used to be dropped: "Nott")
    ("no, N O T T", "Joan Nott"),
    ("it's N-O-T-T", "Joan Nott"),  # "it is …" once read as a yes, and booked
    ("the last name is spelled N O T T", "Joan Nott"),
    ("no, the surname is n o t t", "Joan Nott"),
    # the first name, both parts, or the whole name said again
    ("the first name is J O N", "Jon Knight"),
    ("no, J O N, N O T T", "Jon Nott"),
    ("no, it's Jon Nott", "Jon Nott"),
])
def test_a_correction_after_the_read_back_changes_only_that_part(sunrise, fix, name):
    c = Call(sunrise)
    c.say("book with dr smith tomorrow morning")
    c.say("the first one")
    r = c.say("joan knight")
    assert "for Joan Knight" in r.text and c.state["stage"] == "confirm"
    r = c.say(fix)
    assert r.outcome is None and c.state["stage"] == "confirm", r.text
    assert c.state["name"] == name and f"for {name}" in r.text
    r = c.say("yes")
    assert r.outcome == "booked"
    assert service.get_appointment(sunrise.id, r.confirmation).patient_name == name


@pytest.mark.parametrize("said,fix,name", [
    # "A M Y" once reached the confirmation as "am y" (the clock's a.m.): not a name,
    # and "it's am y" even read as a yes and booked the misheard name
    ("aimee knott", "no, it's A M Y", "Amy Knott"),
    ("aimee knott", "it's A M Y", "Amy Knott"),
    ("emma knott", "no, the first name is A M Y", "Amy Knott"),
    ("emma knott", "no, it's A M Y, P A M", "Amy Pam"),
    ("emma knott", "no, the first name is A.M.Y.", "Amy Knott"),
    ("emma knott", "the last name is P A M", "Emma Pam"),
    # a spelling denied, then the right one: the last one is the correction
    ("emma knott", "no, it's not N O T, it's N O T T", "Emma Nott"),
])
def test_letters_like_a_clock_time_correct_the_name_at_the_read_back(sunrise, said, fix, name):
    c = Call(sunrise)
    c.say("book with dr smith tomorrow morning")
    chosen = c.offered[0]
    c.say("the first one")
    c.say(said)
    assert c.state["stage"] == "confirm"
    r = c.say(fix)
    assert r.outcome is None and c.state["stage"] == "confirm", r.text
    assert c.state["name"] == name and f"for {name}" in r.text
    assert c.state["chosen"]["slot_id"] == chosen["slot_id"]  # no new search for "a.m."
    r = c.say("yes")
    assert r.outcome == "booked"
    assert service.get_appointment(sunrise.id, r.confirmation).patient_name == name


@pytest.mark.parametrize("fix", ["no, the last name is spelled G U D E", "no, G U D E"])
def test_a_spelling_at_the_name_check_keeps_the_part_not_spelled(sunrise, fix):
    c = Call(sunrise)
    c.say("book with dr smith tomorrow morning")
    c.say("the first one")
    r = c.say("monday good")
    assert "I heard Monday Good" in r.text
    r = c.say(fix)
    assert c.state["name"] == "Monday Gude" and "G, U, D, E" in r.text
    assert c.state["stage"] == "confirm"


# ---------------------------------------------------------------- 6b: the number, confirmed


def _at_the_confirmation(tenant, caller: str | None = CALLER) -> tuple[Call, dict, AgentReply]:
    c = Call(tenant, caller=caller)
    c.say("book with dr smith tomorrow morning")
    chosen = c.offered[0]
    c.say("the first one")
    return c, chosen, c.say("Ann Roe")


@pytest.mark.parametrize("yes", ["yes", "yes, that's my cell", "yes please, that number is fine"])
def test_the_number_called_from_is_named_in_the_confirmation(sunrise, yes):
    c, chosen, r = _at_the_confirmation(sunrise)
    assert c.state["stage"] == "confirm"
    assert "Shall I book" in r.text and "for Ann Roe" in r.text
    assert "the number you're calling from, ending in 4 5 6 7" in r.text
    assert not any("calling from" in x.text for x in c.replies[:-1])  # no turn of its own
    r = c.say(yes)
    assert r.outcome == "booked", r.text
    appt = service.get_appointment(sunrise.id, r.confirmation)
    assert appt.patient_name == "Ann Roe" and appt.start.isoformat() == chosen["start"]
    assert appt.phone and re.sub(r"\D", "", appt.phone).endswith("5551234567")


@pytest.mark.parametrize("caller", [None, "1000"])  # no caller ID, or an extension
def test_without_a_usable_caller_id_the_number_is_asked(sunrise, caller):
    c, _, r = _at_the_confirmation(sunrise, caller=caller)
    assert c.state["stage"] == "phone" and "calling from" not in r.text


@pytest.mark.parametrize("other", ["no, use another number", "yes but call me on my cell",
                                   "that's not my number"])
def test_another_number_at_the_confirmation_is_asked_for(sunrise, other):
    c, chosen, _ = _at_the_confirmation(sunrise)
    r = c.say(other)
    assert c.state.get("mode") != "message"  # "call me on …" here is no message request
    assert c.state["stage"] == "phone" and "phone number" in r.text, r.text
    assert r.outcome is None and "Shall I book" not in r.text
    r = c.say("five five five, oh one oh one, double oh two")
    assert "phone number 5 5 5 0 1 0 1 0 0 2" in r.text and "calling from" not in r.text
    assert c.state["chosen"] == chosen and c.state["name"] == "Ann Roe"
    r = c.say("yes")
    assert r.outcome == "booked"
    appt = service.get_appointment(sunrise.id, r.confirmation)
    assert appt.phone == "5550101002" and appt.start.isoformat() == chosen["start"]


@pytest.mark.parametrize("said,keys", [
    ("yes, but call me on five five five, oh one two, three four five six", None),
    ("you can reach me at 555-012-3456", None),
    (None, "5550123456"),  # keyed in
])
def test_a_number_said_at_the_confirmation_replaces_it_and_is_read_back(sunrise, said, keys):
    c, chosen, _ = _at_the_confirmation(sunrise)
    r = c.say(said, dtmf=keys)
    assert c.state.get("mode") != "message"  # not a request to leave a message
    assert r.outcome is None and c.state["stage"] == "confirm"  # read back, not booked yet
    assert "phone number 5 5 5 0 1 2 3 4 5 6" in r.text and "calling from" not in r.text
    assert "for Ann Roe" in r.text
    r = c.say("yes")
    assert r.outcome == "booked"
    appt = service.get_appointment(sunrise.id, r.confirmation)
    assert appt.phone == "5550123456" and appt.start.isoformat() == chosen["start"]


def test_a_callback_request_at_the_confirmation_is_still_a_message(sunrise):
    c, _, _ = _at_the_confirmation(sunrise)
    c.say("actually, can someone call me back")
    assert c.state.get("mode") == "message"


# ---------------------------------------------------------------- 7: misheard doctors


def test_a_misheard_doctor_is_confirmed_before_it_is_used(sunrise):
    c = Call(sunrise)
    r = c.say("i'd like to book with doctor october")
    assert "Did you mean Dr. Okafor?" in r.text and "doctor" not in c.state
    c.say("yes")
    assert c.state["doctor"] == "okafor"
    Wishes().until(c, "offer")
    assert all(s["doctor"] == "okafor" for s in c.offered)


def test_a_wrong_guess_asks_for_the_doctor_again(sunrise):
    c = Call(sunrise)
    c.say("book an appointment")
    r = c.say("doctor petal")
    assert "Did you mean Dr. Patel?" in r.text
    r = c.say("no")
    assert "Which doctor" in r.text and "doctor" not in c.state
    r = c.say("doctor okafor")
    assert c.state["doctor"] == "okafor" and "What day" in r.text


@pytest.mark.parametrize("day,spoken", [("monday", "Monday"), ("tomorrow afternoon",
                                                                 "tomorrow afternoon")])
def test_a_day_said_to_the_doctor_check_is_kept_without_an_apology(sunrise, day, spoken):
    c = Call(sunrise)
    c.say("i'd like to book with doctor october")
    r = c.say(day)  # to "Did you mean Dr. Okafor?": not wrong, just ahead
    assert "Did you mean Dr. Okafor?" in r.text and "Sorry" not in r.text, r.text
    assert f"Got it, {spoken}." in r.text
    assert c.state["date_first"] and c.state.get("misses", 0) == 0
    c.say("yes")
    assert c.state["doctor"] == "okafor"
    Wishes().until(c, "offer")
    days = {local(s["start"]).date() for s in c.offered}
    assert days == {date.fromisoformat(c.state["date_first"])}
    assert all(s["doctor"] == "okafor" for s in c.offered)


@pytest.mark.parametrize("text", ["i need to see a doctor about my knee",
                                  "book an appointment with the doctor tomorrow",
                                  "my doctor said i need a checkup"])
def test_ordinary_words_after_doctor_are_no_guess(sunrise, text):
    c = Call(sunrise)
    r = c.say(text)
    assert "Did you mean" not in r.text and not c.state.get("doctor_guess")


def test_a_booking_from_hello_to_goodbye_with_everything_at_once(sunrise):
    c = Call(sunrise)
    c.say("hello?")
    c.say("hi, i need to see doctor okafur, the afternoon, as soon as you can")
    assert "Did you mean Dr. Okafor?" in c.last
    Wishes(name="K A T E, Kate Moss").until(c, "anything_else")
    booked = service.get_appointment(sunrise.id, c.state["confirmation"])
    assert booked.doctor == "okafor" and booked.start.hour >= 12
    assert booked.patient_name == "Kate Moss"
    assert re.search(r"K, A, T, E", " ".join(r.text for r in c.replies))
