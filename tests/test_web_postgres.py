"""The dashboard on Postgres: sign-in, lock-out, every page, every form, isolation.

The SQLite suite covers the rules; this runs the same flows once on Postgres, where the
upserts, LIKE filters and grouped counts are other SQL. Skips without
IVR_TEST_POSTGRES_URL (``./dev test`` sets it when PostgreSQL answers on 127.0.0.1).
"""

from __future__ import annotations

import pytest
from fakes.scheduling import fresh_postgres_db, postgres_url
from test_web_helpers import PASSWORD, Client, build_env, cheap_hashes_fixture  # noqa: F401

from esl_app.db.models import Appointment, Attendance, CallbackTicket, Slot
from esl_app.web import auth

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_web(tmp_path):
    base = postgres_url()
    if not base:
        pytest.skip("IVR_TEST_POSTGRES_URL not set")
    with fresh_postgres_db(base) as url:
        yield build_env(tmp_path, url=url)


def test_dashboard_on_postgres(pg_web):
    web = pg_web
    locked = Client(web.app, address="10.5.5.5")
    locked.get("/ui/login")
    for _ in range(auth.LOCK_FAILURES):
        assert locked.post("/ui/login", {"username": "alice", "password": "nope nope nope"}
                           ).status_code == 401
    assert locked.post("/ui/login", {"username": "alice", "password": PASSWORD}
                       ).status_code == 429
    auth.add_user("sunrise", "alice2", PASSWORD)  # alice is locked out: a colleague goes on
    c = web.client("alice2", address="10.6.6.6")
    for path in ("/ui/t/sunrise/today", "/ui/t/sunrise/week?doctor=patel",
                 "/ui/t/sunrise/calls", "/ui/t/sunrise/calls?digits=4567&outcome=booked",
                 f"/ui/t/sunrise/calls/{web.calls['sunrise']}", "/ui/t/sunrise/callbacks",
                 "/ui/t/sunrise/reminders", f"/ui/t/sunrise/appointments/"
                 f"{web.codes['sunrise-later']}?move_date=2030-01-01"):
        assert c.get(path).status_code == 200, path
    assert web.calls["sunrise"] in c.get("/ui/t/sunrise/calls?digits=4567").text
    slot = web.slots["sunrise-free"]
    r = c.post("/ui/t/sunrise/book", {"slot": str(slot), "patient_name": "Pat Gres"})
    assert r.status_code == 303 and Slot.get_by_id(slot).state == "booked"
    code = r.headers["location"].rsplit("/", 1)[1]
    assert c.post(f"/ui/t/sunrise/appointments/{code}/cancel").status_code == 303
    assert Appointment.get(Appointment.code == code).status == "cancelled"
    today = web.codes["sunrise-today"]
    for state in ("arrived", "no_show"):
        r = c.post(f"/ui/t/sunrise/appointments/{today}/attendance", {"state": state})
        assert r.status_code == 303
    assert Attendance.get().state == "no_show" and Attendance.select().count() == 1
    ticket = web.tickets["sunrise"]
    assert c.post(f"/ui/t/sunrise/callbacks/{ticket}/done").status_code == 303
    assert CallbackTicket.get_by_id(ticket).status == "done"
    assert c.get("/ui/t/lakeside/today").status_code == 404
    assert c.post(f"/ui/t/sunrise/callbacks/{web.tickets['lakeside']}/done").status_code == 404
    op = web.client("olga", address="10.7.7.7")
    assert "Lakeside Dental" in op.get("/ui/tenants").text
    r = op.get("/ui/live")
    assert r.status_code == 200 and 'data-provider="agent:local"' in r.text
