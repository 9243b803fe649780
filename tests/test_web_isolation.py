"""Tenant isolation: no URL, id or parameter lets a clinic's user reach another clinic.

alice works at sunrise; bob at lakeside; olga is an operator. Every page and form is
tried with the other clinic in the URL, and with the other clinic's codes, slots, call
ids and ticket ids inside alice's own URLs. Refusals are the 404 of something that does
not exist (no hint that it does), and nothing changes.
"""

from __future__ import annotations

import pytest
from test_web_helpers import Client, cheap_hashes_fixture, web_fixture  # noqa: F401

from esl_app.db.models import Appointment, Attendance, AuditLog, CallbackTicket, Slot

LAKESIDE_GETS = [
    "/ui/t/lakeside", "/ui/t/lakeside/today", "/ui/t/lakeside/today?date=2026-01-01",
    "/ui/t/lakeside/week", "/ui/t/lakeside/week?doctor=jones", "/ui/t/lakeside/calls",
    "/ui/t/lakeside/calls?outcome=booked", "/ui/t/lakeside/calls/{lake_call}",
    "/ui/t/lakeside/callbacks", "/ui/t/lakeside/callbacks?show=all",
    "/ui/t/lakeside/reminders", "/ui/t/lakeside/book?slot={lake_slot}",
    "/ui/t/lakeside/appointments/{lake_later}",
    "/ui/t/lakeside/appointments/{lake_later}?move_date=2030-01-01",
]
CROSS_GETS = [  # alice's own clinic in the URL, lakeside's ids inside it
    "/ui/t/sunrise/appointments/{lake_later}", "/ui/t/sunrise/appointments/{lake_today}",
    "/ui/t/sunrise/calls/{lake_call}", "/ui/t/sunrise/book?slot={lake_slot}",
]
POSTS = [
    ("/ui/t/lakeside/book", {"slot": "{lake_slot}", "patient_name": "Intruder"}),
    ("/ui/t/lakeside/appointments/{lake_later}/cancel", {}),
    ("/ui/t/lakeside/appointments/{lake_later}/move", {"slot": "{lake_slot}"}),
    ("/ui/t/lakeside/appointments/{lake_today}/attendance", {"state": "no_show"}),
    ("/ui/t/lakeside/callbacks/{lake_ticket}/done", {}),
    # alice's clinic in the URL, lakeside's ids in the path or the form
    ("/ui/t/sunrise/book", {"slot": "{lake_slot}", "patient_name": "Intruder"}),
    ("/ui/t/sunrise/appointments/{lake_later}/cancel", {}),
    ("/ui/t/sunrise/appointments/{lake_later}/move", {"slot": "{lake_slot}"}),
    ("/ui/t/sunrise/appointments/{sun_later}/move", {"slot": "{lake_slot}"}),
    ("/ui/t/sunrise/appointments/{lake_today}/attendance", {"state": "no_show"}),
    ("/ui/t/sunrise/callbacks/{lake_ticket}/done", {}),
]


def _fill(web, text: str) -> str:
    return text.format(lake_call=web.calls["lakeside"], lake_slot=web.slots["lakeside-free"],
                       lake_later=web.codes["lakeside-later"],
                       lake_today=web.codes["lakeside-today"],
                       lake_ticket=web.tickets["lakeside"], sun_later=web.codes["sunrise-later"])


def _state():
    return ([(a.code, a.status, a.slot_id) for a in Appointment.select().order_by(Appointment.id)],
            [(s.id, s.state) for s in Slot.select().where(Slot.tenant == "lakeside")
             .order_by(Slot.id)],
            Attendance.select().count(),
            [(t.id, t.status) for t in CallbackTicket.select().order_by(CallbackTicket.id)],
            AuditLog.select().where(AuditLog.tenant_id == "lakeside").count())


@pytest.mark.parametrize("path", LAKESIDE_GETS + CROSS_GETS)
def test_staff_never_read_another_clinic(web, path):
    c = web.client("alice")
    audit_before = AuditLog.select().where(AuditLog.tenant_id == "lakeside").count()
    r = c.get(_fill(web, path))
    assert r.status_code == 404, (path, r.status_code)
    for secret in ("Lakeside", "Later Patient lakeside", "Today Patient lakeside",
                   "Caller of lakeside", web.codes["lakeside-later"], "Dr. Amy Jones"):
        assert secret not in r.text, (path, secret)
    # nothing was read on lakeside's behalf either
    assert AuditLog.select().where(AuditLog.tenant_id == "lakeside").count() == audit_before


def test_another_clinic_looks_like_no_clinic(web):
    c = web.client("alice")
    real = c.get("/ui/t/lakeside/today")
    missing = c.get("/ui/t/atlantis/today")
    assert real.status_code == missing.status_code == 404
    assert real.text == missing.text


@pytest.mark.parametrize("path, fields", POSTS)
def test_staff_never_change_another_clinic(web, path, fields):
    c = web.client("alice")
    c.get("/ui/t/sunrise/today")
    before = _state()
    r = c.post(_fill(web, path), {k: _fill(web, v) for k, v in fields.items()})
    assert r.status_code == 404, (path, r.status_code, r.text[-400:])
    assert _state() == before


@pytest.mark.parametrize("path", ["/ui/live", "/ui/live/events", "/ui/tenants",
                                  "/ui/switch?tenant=lakeside", "/ui/switch?tenant=sunrise"])
def test_operator_pages_are_closed_to_staff(web, path):
    r = web.client("alice").get(path)
    assert r.status_code == 403 and "operators" in r.text


def test_lists_show_only_the_own_clinic(web):
    c = web.client("alice")
    for path in ("/ui/t/sunrise/today", "/ui/t/sunrise/week", "/ui/t/sunrise/calls",
                 "/ui/t/sunrise/callbacks?show=all", "/ui/t/sunrise/reminders",
                 f"/ui/t/sunrise/calls?before={10**9}", "/ui/t/sunrise/calls?outcome=booked"):
        r = c.get(path)
        assert r.status_code == 200, path
        for secret in (web.calls["lakeside"], "Caller of lakeside", "Patient lakeside",
                       "Lakeside", "jones"):
            assert secret not in r.text, (path, secret)
    # the appointment's move form offers only this clinic's doctors and slots
    r = c.get(f"/ui/t/sunrise/appointments/{web.codes['sunrise-later']}?move_date=2030-01-01"
              "&move_doctor=jones")
    assert r.status_code == 422


def test_bob_sees_his_clinic_and_not_alices(web):
    c = web.client("bob")
    assert c.get("/ui").headers["location"] == "/ui/t/lakeside/today"
    assert "Today Patient lakeside" in c.get("/ui/t/lakeside/today").text
    assert c.get("/ui/t/sunrise/today").status_code == 404
    assert c.get(f"/ui/t/lakeside/appointments/{web.codes['sunrise-later']}").status_code == 404


def test_operator_sees_every_clinic(web):
    c = web.client("olga")
    r = c.get("/ui/tenants")
    assert "Sunrise Family Clinic" in r.text and "Lakeside Dental" in r.text
    assert c.get("/ui/switch?tenant=lakeside").headers["location"] == "/ui/t/lakeside/today"
    assert c.get("/ui/switch?tenant=atlantis").status_code == 404
    assert c.get("/ui/switch?tenant=../x").status_code == 404
    assert "Today Patient lakeside" in c.get("/ui/t/lakeside/today").text
    assert c.get(f"/ui/t/lakeside/calls/{web.calls['lakeside']}").status_code == 200
    assert c.get("/ui/t/atlantis/today").status_code == 404
    c.get("/ui/t/lakeside/today")
    r = c.post(f"/ui/t/lakeside/callbacks/{web.tickets['lakeside']}/done")
    assert r.status_code == 303
    entry = AuditLog.get((AuditLog.entity == "callback") & (AuditLog.action == "done"))
    assert entry.tenant_id == "lakeside" and entry.actor == "web:olga"
    # even an operator cannot mix one clinic's ids into another's URL
    assert c.get(f"/ui/t/sunrise/calls/{web.calls['lakeside']}").status_code == 404


@pytest.mark.parametrize("tenant", ["LAKESIDE", "lakeside%00", "lake side", "-", "a" * 80])
def test_odd_tenant_segments(web, tenant):
    r = web.client("olga").get(f"/ui/t/{tenant}/today")
    assert r.status_code == 404


def test_a_session_cookie_of_another_user_is_theirs_only(web):
    """Cookies are per browser: bob's cookie in alice's browser is bob, still lakeside only."""
    bob = web.client("bob")
    c = Client(web.app)
    c.cookies["ivr_session"] = bob.cookies["ivr_session"]
    assert c.get("/ui/t/sunrise/today").status_code == 404
    assert c.get("/ui/t/lakeside/today").status_code == 200


def _template(path: str) -> str:
    """A tried path as its route template: the clinic and the ids become the route's fields."""
    import re

    path = re.sub(r"^/ui/t/[a-z]+", "/ui/t/{tenant}", path.split("?", 1)[0])
    path = re.sub(r"/appointments/[^/]+", "/appointments/{code}", path)
    path = re.sub(r"/calls/[^/]+", "/calls/{call_id}", path)
    return re.sub(r"/callbacks/[^/]+/done", "/callbacks/{ticket}/done", path)


def test_every_clinic_route_is_tried_here():
    """A new page or form under /ui/t/{tenant} must join the lists above, or this fails."""
    from esl_app.web.routes import web_routes

    clinic_routes = {path for path, resource in web_routes() if "{tenant}" in path}
    tried_gets = {_template(p) for p in LAKESIDE_GETS + CROSS_GETS}
    tried_posts = {_template(p) for p, _ in POSTS}
    for path, resource in web_routes():
        if path not in clinic_routes:
            continue
        if hasattr(resource, "on_get"):
            assert path in tried_gets, f"GET {path} is not tried with another clinic"
        if hasattr(resource, "on_post"):
            assert path in tried_posts, f"POST {path} is not tried with another clinic"
