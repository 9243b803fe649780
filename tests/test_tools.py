from datetime import UTC, datetime

import pytest

from esl_app.db import close_db
from esl_app.providers.agent import tools
from esl_app.sim.testing import make_db

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


@pytest.fixture
def tenants(tmp_path):
    ts = make_db(tmp_path, days=7, now=NOW)
    yield ts
    close_db()


def test_spoken_time():
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("America/New_York")
    assert tools.spoken_time(datetime(2026, 11, 24, 9, 0, tzinfo=tz)) == \
        "Tuesday, November 24 at 9 AM"
    assert tools.spoken_time(datetime(2026, 11, 24, 14, 30, tzinfo=tz), with_day=False) == \
        "2:30 PM"
    assert tools.spoken_time(datetime(2026, 11, 24, 12, 0, tzinfo=tz), with_day=False) == "noon"


def test_spoken_digits():
    # the reminder agent's call-back number; the main agent's read-back is in dialogue.py
    assert tools.spoken_digits("+1 (555) 010-2001") == "5 5 5, 0 1 0, 2 0 0 1"
    assert tools.spoken_digits("5550102001") == "5 5 5, 0 1 0, 2 0 0 1"
    assert tools.spoken_digits("1001") == "1 0 0 1"


def test_tools_round_trip(tenants):
    sunrise = tenants.get("sunrise")
    found = tools.search_slots(sunrise, doctor="smith", now=NOW)
    assert found["ok"] and len(found["slots"]) == 3
    first = found["slots"][0]
    assert first["spoken"] == "Tuesday, November 24 at 10:30 AM with Dr. Sarah Smith"
    held = tools.hold_slot(sunrise, slot_id=first["slot_id"], call_id="c1", now=NOW)
    assert held["ok"] and held["hold_minutes"] == 3
    taken = tools.confirm_appointment(sunrise, slot_id=first["slot_id"], patient_name="Eve",
                                      call_id="c2", now=NOW)
    assert taken == {"ok": False, "error": "slot_taken",
                     "message": "Sorry, that time was just taken.",
                     "detail": "that time is no longer available"}
    booked = tools.confirm_appointment(sunrise, slot_id=first["slot_id"], patient_name="Ann",
                                       call_id="c1", now=NOW)
    assert booked["ok"] and booked["confirmation"]
    other = tools.cancel_appointment(tenants.get("lakeside"), code=booked["confirmation"], now=NOW)
    assert other["ok"] is False and other["error"] == "not_found"
    assert tools.cancel_appointment(sunrise, code=booked["confirmation"], now=NOW)["ok"]
    assert tools.handoff_to_human(sunrise, reason="billing") == {
        "ok": True, "action": "transfer", "to": "user/1000", "reason": "billing"}
    bad = tools.search_slots(sunrise, part_of_day="midnight", now=NOW)
    assert bad["ok"] is False and bad["error"] == "invalid"
    assert tools.release_holds("nobody") == {"ok": True, "released": 0}
