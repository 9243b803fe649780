"""The local agent under a clinic's booking policy: visit types, refusals in plain words.

Real SQLite calendar, fixed reference time; every offered time is checked
against the scheduling core so the agent never invents a slot.
"""

import json
import textwrap
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from esl_app.db.models import Appointment
from esl_app.providers.agent import tools
from esl_app.providers.agent.base import AgentReply, CallContext, Utterance
from esl_app.providers.agent.local import LocalAgent
from esl_app.scheduling import service
from esl_app.sim.testing import make_db

TZ = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=TZ)  # Tuesday 10 AM
CALLER = "+15551234567"

POLICY_TENANTS = textwrap.dedent("""
    tenants:
      - id: harbor
        name: Harbor Health
        dids: ["6001"]
        timezone: America/New_York
        hours: {mon-fri: "09:00-17:00", sat: "09:00-12:00"}
        slot_minutes: 20
        handoff: user/1000
        policy:
          min_notice_minutes: 120
          booking_window_days: 60
          closed_dates: ["2026-11-26", "2026-12-25"]
          cancel_window_hours: 24
        visit_types:
          - {id: new, name: new patient visit, minutes: 40}
          - {id: followup, name: follow-up, minutes: 20}
        doctors:
          - {id: kim, name: Dr. Ana Kim, specialty: family medicine}
          - {id: ross, name: Dr. Ben Ross, specialty: pediatrics}
      - id: plain
        name: Plain Clinic
        dids: ["6002"]
        timezone: America/New_York
        hours: {mon-fri: "09:00-17:00"}
        slot_minutes: 30
        handoff: user/1001
        doctors: [{id: lee, name: Dr. Lee}]
""")


@pytest.fixture(scope="module")
def tenants(tmp_path_factory):
    # 70 days of slots: enough to see past the 60-day booking window
    return make_db(tmp_path_factory.mktemp("policy"), POLICY_TENANTS, days=70, now=NOW)


@pytest.fixture
def harbor(tenants):
    """The policy clinic; what a test booked or held is given back afterwards."""
    yield tenants.get("harbor")
    service.release_holds("call-p")
    for appt in service.list_appointments("harbor"):
        service.cancel("harbor", appt.confirmation, enforce_window=False, now=NOW)


class Conversation:
    """One call: greet, then caller turns, keeping every reply."""

    def __init__(self, tenant, caller=CALLER, call_id="call-p"):
        self.agent = LocalAgent()
        self.call = CallContext(call_id=call_id, tenant=tenant, caller=caller, did="6001",
                                now=NOW)
        self.replies: list[AgentReply] = [self.agent.greet(self.call)]

    def say(self, text: str | None = None, dtmf: str | None = None) -> AgentReply:
        reply = self.agent.respond(self.call, Utterance(text=text, dtmf=dtmf))
        self.replies.append(reply)
        json.dumps(self.call.state)  # resumable by another agent
        return reply

    @property
    def state(self):
        return self.call.state

    @property
    def offered(self):
        return self.call.state["offered"]


def local(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(TZ)


def assert_real(tenant, slots, visit_type):
    """Every offered start is one the scheduling core offers for this visit type."""
    assert slots
    for s in slots:
        day = local(s["start"]).date()
        real = {v.slot_id for v in service.search_slots(tenant.id, date=day, limit=50,
                                                        visit_type=visit_type, now=NOW)}
        assert s["slot_id"] in real


def finish_booking(c: Conversation) -> AgentReply:
    """Pick the first offer and give a name: the confirmation (with the caller ID) follows."""
    c.say("the first one")
    confirm = c.say("my name is john smith")
    assert "Shall I book" in confirm.text and "ending in 4 5 6 7" in confirm.text
    assert confirm.outcome is None
    return confirm


@pytest.mark.parametrize("answer,visit,minutes,name", [
    ("it's my first time", "new", 40, "new patient visit"),
    ("a follow-up", "followup", 20, "follow-up"),
])
def test_visit_type_sets_the_length_in_the_database(harbor, answer, visit, minutes, name):
    c = Conversation(harbor)
    r = c.say("i'd like to book an appointment")
    assert r.text == "Is this a new patient visit or a follow-up?"
    assert c.state["stage"] == "visit_type"
    r = c.say(answer)
    assert c.state["visit_type"] == visit and "Which doctor" in r.text
    c.say("doctor kim")
    c.say("wednesday")  # times across the day, each long enough for the visit
    assert c.state["stage"] == "offer" and len(c.offered) == 3
    assert_real(harbor, c.offered, visit)
    confirm = finish_booking(c)
    assert f"a {minutes}-minute {name} on Wednesday, November 25" in confirm.text
    r = c.say("yes")
    assert r.outcome == "booked"
    assert f"booked for a {minutes}-minute {name} on" in r.text
    appt = service.get_appointment(harbor.id, r.confirmation)
    assert appt.end - appt.start == timedelta(minutes=minutes)
    assert Appointment.get(Appointment.code == r.confirmation).visit_type == visit
    assert "visit_type" not in c.state  # the next task asks again


def test_visit_type_said_up_front_and_keyed_in(harbor):
    c = Conversation(harbor)
    r = c.say("i need a follow up with dr ross next monday afternoon")
    assert c.state["visit_type"] == "followup" and c.state["stage"] == "offer", r.text
    assert_real(harbor, c.offered, "followup")
    c = Conversation(harbor)
    c.say("book an appointment")
    r = c.say(dtmf="1")  # first in the list read out: new patient
    assert c.state["visit_type"] == "new" and "Which doctor" in r.text
    c = Conversation(harbor)
    c.say("book an appointment")
    r = c.say("i'm not sure")
    assert "If you haven't been seen here before, it's a new patient visit." in r.text
    # asked a second time: the question follows the explanation, shorter, with the answers
    assert r.text.endswith('Just say "new patient visit" or "follow-up".')


def test_tenant_without_visit_types_is_not_asked(tenants):
    c = Conversation(tenants.get("plain"), call_id="call-plain")
    r = c.say("book an appointment for wednesday morning")
    assert c.state["stage"] == "offer" and "visit_type" not in c.state, r.text
    c.say("the first one")
    r = c.say("john smith")
    assert "Shall I book Wednesday, November 25 at" in r.text and r.outcome is None
    r = c.say("yes")
    appt = service.get_appointment("plain", r.confirmation)
    assert appt.end - appt.start == timedelta(minutes=30)
    service.release_holds("call-plain")


@pytest.mark.parametrize("asked,closed_day", [
    ("on christmas", "Friday, December 25"),
    ("december 25th", "Friday, December 25"),
    ("thursday", "Thursday, November 26"),  # Thanksgiving in closed_dates
])
def test_closed_day_is_explained_and_next_days_offered(harbor, asked, closed_day):
    c = Conversation(harbor)
    c.say("book a follow-up with dr kim")
    r = c.say(asked)
    assert r.text.startswith(f"Sorry, the clinic is closed on {closed_day}.")
    assert c.state["stage"] == "offer"
    assert_real(harbor, c.offered, "followup")
    closed = date.fromisoformat("2026-12-25" if "December" in closed_day else "2026-11-26")
    assert all(local(s["start"]).date() > closed for s in c.offered)
    assert all(local(s["start"]).date() == closed + timedelta(days=1) for s in c.offered)


@pytest.mark.parametrize("asked", ["in an hour", "today at 11", "today in the morning",
                                   "right now"])
def test_too_soon_is_explained_and_earliest_offered(harbor, asked):
    c = Conversation(harbor)
    c.say("book a new patient visit with dr kim")
    r = c.say(asked)
    assert r.text.startswith("Sorry, appointments need at least 2 hours' notice."), r.text
    assert c.state["stage"] == "offer"
    assert_real(harbor, c.offered, "new")
    assert all(local(s["start"]) >= NOW + timedelta(hours=2) for s in c.offered)
    assert local(c.offered[0]["start"]) == datetime(2026, 11, 24, 12, 0, tzinfo=TZ)


def test_later_today_within_notice_is_fine(harbor):
    c = Conversation(harbor)
    c.say("book a follow-up with dr kim")
    r = c.say("today at 2 pm")
    assert "notice" not in r.text and c.state["stage"] == "offer"
    assert local(c.offered[0]["start"]) == datetime(2026, 11, 24, 14, 0, tzinfo=TZ)


def test_beyond_booking_window_is_explained(harbor):
    c = Conversation(harbor)
    c.say("book a follow-up with dr kim")
    r = c.say("january 30th")
    assert r.text.startswith("Sorry, appointments can be booked at most 60 days ahead.")
    assert c.state["stage"] == "offer"
    assert_real(harbor, c.offered, "followup")
    # the nearest bookable day: the window ends Saturday, January 23 at 10 AM
    assert "On Saturday, January 23 I have" in r.text
    assert all(local(s["start"]) < NOW + timedelta(days=60) for s in c.offered)


def book_direct(tenant, day: date, hour: int, visit: str = "followup", name="Jane Doe"):
    slots = tools.search_slots(tenant, doctor="kim", date=day, visit_type=visit, limit=50,
                               now=NOW)["slots"]
    slot = next(s for s in slots if local(s["start"]).hour == hour)
    res = tools.confirm_appointment(tenant, slot_id=slot["slot_id"], patient_name=name,
                                    phone=CALLER, visit_type=visit, now=NOW)
    assert res["ok"], res
    return res["confirmation"]


@pytest.mark.parametrize("intent", ["i need to cancel my appointment",
                                    "i want to reschedule my appointment"])
def test_change_inside_cancellation_window_offers_front_desk(harbor, intent):
    code = book_direct(harbor, date(2026, 11, 24), 15)  # today 3 PM: inside 24 hours
    c = Conversation(harbor)
    c.say(intent)
    c.say(code)
    r = c.say("jane doe")
    assert "Your appointment is on Tuesday, November 24 at 3 PM" in r.text
    assert ("Changes within 24 hours of the appointment need to be made with our front "
            "desk.") in r.text
    assert r.text.endswith("Would you like me to transfer you?")
    r = c.say("yes")
    assert r.action == "transfer" and r.transfer_to == "user/1000" and r.outcome == "handoff"
    assert service.get_appointment(harbor.id, code).status == "booked"
    # "no" keeps the appointment and goes on
    c = Conversation(harbor)
    c.say(intent)
    c.say(code)
    c.say("jane doe")
    r = c.say(dtmf="2")
    assert r.action != "transfer" and "leave your appointment" in r.text
    assert service.get_appointment(harbor.id, code).status == "booked"


def test_too_late_from_the_tool_is_explained_too(harbor):
    """The window can close during the call: the tool's refusal gets the same answer."""
    code = book_direct(harbor, date(2026, 11, 27), 9)
    c = Conversation(harbor)
    c.say("cancel my appointment")
    c.say(code)
    r = c.say("jane doe")
    assert r.text.startswith("Shall I cancel")
    c.call.now = datetime(2026, 11, 26, 12, 0, tzinfo=TZ)  # a day and a half later
    r = c.say("yes")
    assert "need to be made with our front desk" in r.text and r.outcome is None
    assert c.say("yes").action == "transfer"
    assert service.get_appointment(harbor.id, code).status == "booked"


def test_reschedule_keeps_the_visit_length(harbor):
    code = book_direct(harbor, date(2026, 11, 30), 9, visit="new")
    c = Conversation(harbor)
    c.say("i want to move my appointment")
    c.say(code)
    r = c.say("jane doe")
    assert "instead" in r.text and c.state["visit_type"] == "new"
    c.say("next tuesday morning")
    assert_real(harbor, c.offered, "new")
    c.say("the last one")
    r = c.say("yes")
    assert r.outcome == "rescheduled"
    appt = service.get_appointment(harbor.id, code)
    assert appt.start.date() == date(2026, 12, 1)
    assert appt.end - appt.start == timedelta(minutes=40)


def test_cancel_outside_the_window_still_works(harbor):
    code = book_direct(harbor, date(2026, 11, 27), 10)
    c = Conversation(harbor)
    c.say("cancel my appointment")
    c.say(code)
    c.say("jane doe")
    r = c.say("yes")
    assert r.outcome == "cancelled"
    assert service.get_appointment(harbor.id, code).status == "cancelled"
