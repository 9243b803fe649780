"""Dashboard pages and forms: what each shows, what each change does, and bad input."""

from __future__ import annotations

import re

import pytest
from test_web_helpers import PASSWORD, Client, add_call, cheap_hashes_fixture, web_fixture  # noqa: F401

from esl_app.db.models import Appointment, Attendance, AuditLog, CallbackTicket, Slot
from esl_app.scheduling import service

# ---------------------------------------------------------------- read-only pages

PAGES = ["/ui/t/sunrise/today", "/ui/t/sunrise/week", "/ui/t/sunrise/calls",
         "/ui/t/sunrise/callbacks", "/ui/t/sunrise/reminders"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_session(web, path):
    r = Client(web.app).get(path)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_complete_html_without_javascript(web, path):
    """Everything is in the HTML: no page needs a script to show its data."""
    r = web.client("alice").get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert html.startswith("<!doctype html>") and '<html lang="en">' in html
    assert '<main id="main"' in html and 'href="#main"' in html  # skip link
    assert 'aria-current="page"' in html
    assert "<script" in html and html.count("<script") == 1  # the one deferred enhancement
    assert re.search(r'<script src="/ui/static/dashboard\.js\?v=[0-9a-f]{10}" defer>', html)
    # every form control has a label
    for control in re.findall(r'<(?:input|select)\b[^>]*\bid="([^"]+)"', html):
        assert f'for="{control}"' in html, control
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"


def test_today_shows_booked_held_and_free_slots(web):
    c = web.client("alice")
    with_hold = Slot.get_by_id(web.slots["sunrise-free"])
    r = c.get("/ui/t/sunrise/today")
    assert "Today Patient sunrise" in r.text
    assert web.codes["sunrise-today"] in r.text
    assert "Dr. Sarah Smith" in r.text and "Dr. Raj Patel" in r.text
    assert re.search(r"\d+ booked", r.text) and re.search(r"\d+ free", r.text)
    assert "Arrived" in r.text and "No-show" in r.text
    # a held slot on the day of the hold
    day = with_hold.start.isoformat()[:10]
    service.hold_slot("sunrise", with_hold.id, owner="call-x")
    r = c.get(f"/ui/t/sunrise/today?date={day}")
    assert "Held until" in r.text
    r = c.get("/ui/t/sunrise/today?date=2026-02-30")
    assert r.status_code == 422 and "the date must look like" in r.text


def test_week_per_doctor(web):
    c = web.client("alice")
    r = c.get("/ui/t/sunrise/week")
    assert r.status_code == 200 and "Week of" in r.text
    smith = c.get("/ui/t/sunrise/week?doctor=smith")
    patel = c.get("/ui/t/sunrise/week?doctor=patel")
    assert smith.status_code == patel.status_code == 200
    assert ("Later Patient sunrise" in smith.text) != ("Later Patient sunrise" in patel.text)
    assert "/ui/t/sunrise/book?slot=" in smith.text
    assert c.get("/ui/t/sunrise/week?doctor=jones").status_code == 404
    assert c.get("/ui/t/sunrise/week?start=soon").status_code == 422
    listed = AuditLog.select().where((AuditLog.action == "list") & (AuditLog.actor == "web:alice"))
    assert listed.count() >= 3


def test_calls_list_masks_numbers_and_filters(web):
    c = web.client("alice")
    add_call("sunr0000-aaaa-bbbb-cccc-ddddeeeeffff", "sunrise", caller="+15550009999",
             outcome="handoff")
    r = c.get("/ui/t/sunrise/calls")
    assert web.calls["sunrise"] in r.text
    assert "+15551234567" not in r.text and "**********67" in r.text
    assert "handoff" in r.text
    r = c.get("/ui/t/sunrise/calls?outcome=handoff")
    assert "sunr0000-aaaa" in r.text and web.calls["sunrise"] not in r.text
    r = c.get("/ui/t/sunrise/calls?digits=4567")
    assert web.calls["sunrise"] in r.text and "sunr0000-aaaa" not in r.text
    r = c.get(f"/ui/t/sunrise/calls?date={web.now.date().isoformat()}")
    r2 = c.get("/ui/t/sunrise/calls?date=2001-01-01")
    assert "No calls match these filters." in r2.text
    assert r.status_code == 200
    for bad in ("digits=12345", "digits=ab", "date=yesterday", "outcome=DROP%20TABLE",
                "before=-1"):
        r = c.get(f"/ui/t/sunrise/calls?{bad}")
        assert r.status_code == 422, bad
        assert 'class="error"' in r.text


def test_calls_list_pages_with_a_cursor(web):
    for i in range(55):
        add_call(f"page{i:04d}-0000-0000-0000-000000000000", "sunrise", outcome="completed")
    c = web.client("alice")
    r = c.get("/ui/t/sunrise/calls?outcome=completed")
    first = re.findall(r"/ui/t/sunrise/calls/(page\d+)", r.text)
    assert len(first) == 50 and first[0] == "page0054"
    nxt = re.search(r'href="(/ui/t/sunrise/calls\?outcome=completed&amp;before=\d+)"', r.text)
    r = c.get(nxt.group(1).replace("&amp;", "&"))
    rest = re.findall(r"/ui/t/sunrise/calls/(page\d+)", r.text)
    assert rest == ["page0004", "page0003", "page0002", "page0001", "page0000"]
    assert "Older calls" not in r.text


def test_call_transcript_with_barge_ins_timings_and_cost(web):
    c = web.client("alice")
    r = c.get(f"/ui/t/sunrise/calls/{web.calls['sunrise']}")
    assert r.status_code == 200
    assert "Hello, how can I help?" in r.text
    assert "interrupted by the caller" in r.text
    assert "answered after 450 ms" in r.text
    assert "0.0036 USD" in r.text
    assert "555 123 4567" not in r.text and "+15551234567" not in r.text  # masked
    assert AuditLog.select().where((AuditLog.entity == "call") & (AuditLog.action == "read")
                                   & (AuditLog.actor == "web:alice")).exists()
    assert c.get("/ui/t/sunrise/calls/nope").status_code == 404
    assert c.get("/ui/t/sunrise/calls/" + web.calls["sunrise"][:8]).status_code == 404


def test_transcripts_hidden_where_the_clinic_keeps_none(web):
    add_call("lake1111-0000-0000-0000-000000000000", "lakeside",
             turns=[{"speaker": "caller", "text": "my secret words", "at_ms": 10,
                     "barged_in": False}])
    c = web.client("bob")
    r = c.get("/ui/t/lakeside/calls/lake1111-0000-0000-0000-000000000000")
    assert r.status_code == 200
    assert "does not keep transcripts" in r.text and "(not kept)" in r.text
    assert "my secret words" not in r.text
    assert "0.0 s" in r.text  # the timing stays


def test_callbacks_list_and_done(web):
    c = web.client("alice")
    r = c.get("/ui/t/sunrise/callbacks")
    assert "Caller of sunrise" in r.text and "please call back" in r.text
    ticket = web.tickets["sunrise"]
    r = c.post(f"/ui/t/sunrise/callbacks/{ticket}/done")
    assert r.status_code == 303 and r.headers["location"] == "/ui/t/sunrise/callbacks"
    assert CallbackTicket.get_by_id(ticket).status == "done"
    r = c.get("/ui/t/sunrise/callbacks")
    assert f"Callback {ticket} marked done." in r.text  # the flash, once
    assert "Nothing to call back." in r.text
    assert "marked done" not in c.get("/ui/t/sunrise/callbacks").text
    assert "Caller of sunrise" in c.get("/ui/t/sunrise/callbacks?show=all").text
    assert c.get("/ui/t/sunrise/callbacks?show=some").status_code == 422
    assert c.post(f"/ui/t/sunrise/callbacks/{ticket}/done").status_code == 303  # idempotent
    assert c.post("/ui/t/sunrise/callbacks/999999/done").status_code == 404
    assert c.post("/ui/t/sunrise/callbacks/x1/done").status_code == 404
    assert AuditLog.select().where((AuditLog.entity == "callback") & (AuditLog.action == "done")
                                   & (AuditLog.actor == "web:alice")).count() == 1


def test_reminders_page(web):
    r = web.client("alice").get("/ui/t/sunrise/reminders")
    assert r.status_code == 200 and "<h1>Reminders</h1>" in r.text
    store = pytest.importorskip("esl_app.reminders.store")
    from esl_app.db.models import ReminderCall

    assert "Reminder calls, latest first" in r.text and "No reminders planned." in r.text
    appt = Appointment.get(Appointment.code == web.codes["sunrise-later"])
    ReminderCall.create(tenant="sunrise", appointment=appt.id, hours_before=24,
                        due_at=appt.slot.start, next_at=appt.slot.start, state="done",
                        attempts=1, outcome="reminder_confirmed")
    store.add_do_not_call("sunrise", "+1 555 000 4321", source="call")
    store.add_do_not_call("lakeside", "+1 555 000 9876")
    r = web.client("alice").get("/ui/t/sunrise/reminders")
    assert web.codes["sunrise-later"] in r.text and "reminder confirmed" in r.text
    assert "********21" in r.text and "5550004321" not in r.text  # masked
    assert "********76" not in r.text  # lakeside's list stays with lakeside


def test_static_files(web):
    c = Client(web.app)
    r = c.get("/ui/static/dashboard.css")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
    assert "immutable" in r.headers["cache-control"]
    assert c.get("/ui/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    for bad in ("../auth.py", "..%2Fauth.py", "auth.py", "nope.css", ".hidden.css"):
        assert c.get(f"/ui/static/{bad}").status_code == 404, bad


def test_errors_are_html_pages(web):
    c = web.client("alice")
    r = c.get("/ui/nothing/here")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "<h1>" in r.text and "{" not in r.text.split("<body>")[1][:50]


# ---------------------------------------------------------------- forms


def test_book_from_a_free_slot(web):
    c = web.client("alice")
    slot = web.slots["sunrise-free"]
    r = c.get(f"/ui/t/sunrise/book?slot={slot}")
    assert r.status_code == 200 and 'name="patient_name"' in r.text
    r = c.post("/ui/t/sunrise/book", {"slot": str(slot), "patient_name": "Nina Web",
                                      "phone": "+1 555 010 2000", "email": ""})
    assert r.status_code == 303
    code = r.headers["location"].rsplit("/", 1)[1]
    appt = Appointment.get(Appointment.code == code)
    assert appt.patient_name == "Nina Web" and appt.tenant_id == "sunrise"
    assert Slot.get_by_id(slot).state == "booked"
    page = c.get(r.headers["location"])
    assert f"Booked {code}." in page.text and "Nina Web" in page.text
    entry = AuditLog.get((AuditLog.action == "create") & (AuditLog.entity_id == code))
    assert entry.actor == "web:alice"
    r = c.post("/ui/t/sunrise/book", {"slot": str(slot), "patient_name": "Late Comer"})
    assert r.status_code == 409 and "no longer available" in r.text


@pytest.mark.parametrize("fields, status, message", [
    ({"patient_name": ""}, 422, "required"),
    ({"patient_name": "x" * 201}, 422, "at most 200 characters"),
    ({"patient_name": "Ann\x07Bell"}, 422, "contains control characters"),
    ({"patient_name": "Ann", "phone": "call me"}, 422, "phone number is not valid"),
    ({"patient_name": "Ann", "email": "not-an-address"}, 422, "e-mail address is not valid"),
])
def test_book_refuses_bad_input(web, fields, status, message):
    c = web.client("alice")
    slot = web.slots["sunrise-free"]
    c.get(f"/ui/t/sunrise/book?slot={slot}")
    r = c.post("/ui/t/sunrise/book", {"slot": str(slot), **fields})
    assert r.status_code == status and message in r.text
    assert Slot.get_by_id(slot).state == "open"


def test_book_unknown_or_bad_slot(web):
    c = web.client("alice")
    assert c.get("/ui/t/sunrise/book?slot=abc").status_code == 404
    assert c.get("/ui/t/sunrise/book").status_code == 404
    assert c.get("/ui/t/sunrise/book?slot=99999999").status_code == 404
    c.get("/ui/t/sunrise/today")
    assert c.post("/ui/t/sunrise/book", {"slot": "1 OR 1=1", "patient_name": "A"}
                  ).status_code == 404


def test_cancel_with_the_apis_rules_and_audit(web):
    c = web.client("alice")
    code = web.codes["sunrise-later"]
    page = c.get(f"/ui/t/sunrise/appointments/{code}")
    assert page.status_code == 200 and "Later Patient sunrise" in page.text
    assert 'data-confirm="Cancel appointment' in page.text
    r = c.post(f"/ui/t/sunrise/appointments/{code}/cancel")
    assert r.status_code == 303
    assert Appointment.get(Appointment.code == code).status == "cancelled"
    assert AuditLog.get((AuditLog.action == "cancel") & (AuditLog.entity_id == code)
                        ).actor == "web:alice"
    assert f"Appointment {code} cancelled." in c.get(r.headers["location"]).text
    r = c.post(f"/ui/t/sunrise/appointments/{code}/cancel")
    assert r.status_code == 409 and "already cancelled" in r.text
    # inside the clinic's 24-hour window: the same refusal as the API gives
    r = c.post(f"/ui/t/sunrise/appointments/{web.codes['sunrise-today']}/cancel")
    assert r.status_code == 409 and "within 24 hours" in r.text
    assert c.post("/ui/t/sunrise/appointments/ZZZ-ZZZ/cancel").status_code == 404


def test_move_to_another_free_time(web):
    c = web.client("alice")
    code = web.codes["sunrise-later"]
    target = Slot.get_by_id(web.slots["sunrise-free"])
    day = target.start.isoformat()[:10]
    page = c.get(f"/ui/t/sunrise/appointments/{code}?move_date={day}&move_doctor=smith")
    assert page.status_code == 200
    offered = re.findall(r'name="slot" value="(\d+)"', page.text)
    assert offered
    r = c.post(f"/ui/t/sunrise/appointments/{code}/move", {"slot": offered[-1]})
    assert r.status_code == 303
    appt = Appointment.get(Appointment.code == code)
    assert str(appt.slot_id) == offered[-1]
    assert AuditLog.get((AuditLog.action == "reschedule") & (AuditLog.entity_id == code)
                        ).actor == "web:alice"
    r = c.post(f"/ui/t/sunrise/appointments/{code}/move", {"slot": offered[-1]})
    assert r.status_code == 422  # already that time
    taken = Appointment.get(Appointment.code == web.codes["sunrise-today"]).slot_id
    r = c.post(f"/ui/t/sunrise/appointments/{code}/move", {"slot": str(taken)})
    assert r.status_code == 409
    assert c.post(f"/ui/t/sunrise/appointments/{code}/move", {"slot": "x"}).status_code == 404
    assert c.get(f"/ui/t/sunrise/appointments/{code}?move_doctor=jones").status_code == 422
    assert c.get(f"/ui/t/sunrise/appointments/{code}?move_date=never").status_code == 422


def test_attendance_is_stored_and_audited(web):
    c = web.client("alice")
    code = web.codes["sunrise-today"]
    back = "/ui/t/sunrise/today"
    c.get(back)
    r = c.post(f"/ui/t/sunrise/appointments/{code}/attendance",
               {"state": "arrived", "back": back})
    assert r.status_code == 303 and r.headers["location"] == back
    appt = Appointment.get(Appointment.code == code)
    assert Attendance.get_by_id(appt.id).state == "arrived"
    assert f"{code}: marked arrived." in c.get(back).text
    assert "arrived" in c.get(back).text
    c.post(f"/ui/t/sunrise/appointments/{code}/attendance", {"state": "no_show"})
    assert Attendance.get_by_id(appt.id).state == "no_show"
    assert Attendance.get_by_id(appt.id).marked_by == "web:alice"
    c.post(f"/ui/t/sunrise/appointments/{code}/attendance", {"state": "clear"})
    assert Attendance.get_or_none(Attendance.appointment == appt.id) is None
    actions = [a.action for a in AuditLog.select().where(AuditLog.entity_id == code)
               .order_by(AuditLog.id)]
    assert actions[-3:] == ["arrived", "no_show", "attendance_clear"]
    r = c.post(f"/ui/t/sunrise/appointments/{code}/attendance", {"state": "maybe"})
    assert r.status_code == 422
    later = web.codes["sunrise-later"]
    r = c.post(f"/ui/t/sunrise/appointments/{later}/attendance", {"state": "arrived"})
    assert r.status_code == 409 and "from the day of the appointment" in r.text
    r = c.post(f"/ui/t/sunrise/appointments/{web.codes['sunrise-later']}x/attendance",
               {"state": "arrived", "back": "https://evil.example/"})
    assert r.status_code == 404 and "evil" not in r.text


POSTS = [
    ("/ui/t/sunrise/book", {"slot": "{free}", "patient_name": "Forged"}),
    ("/ui/t/sunrise/appointments/{later}/cancel", {}),
    ("/ui/t/sunrise/appointments/{later}/move", {"slot": "{free}"}),
    ("/ui/t/sunrise/appointments/{today}/attendance", {"state": "arrived"}),
    ("/ui/t/sunrise/callbacks/{ticket}/done", {}),
    ("/ui/logout", {}),
]


def _fill(web, text: str) -> str:
    return text.format(free=web.slots["sunrise-free"], later=web.codes["sunrise-later"],
                       today=web.codes["sunrise-today"], ticket=web.tickets["sunrise"])


def _snapshot():
    return (Appointment.select().count(),
            [a.status for a in Appointment.select().order_by(Appointment.id)],
            [a.slot_id for a in Appointment.select().order_by(Appointment.id)],
            Attendance.select().count(),
            [t.status for t in CallbackTicket.select().order_by(CallbackTicket.id)])


@pytest.mark.parametrize("path, fields", POSTS)
@pytest.mark.parametrize("csrf", [None, "", "forged-token", "other-session"])
def test_every_form_needs_the_sessions_csrf_token(web, path, fields, csrf):
    c = web.client("alice")
    c.get("/ui/t/sunrise/today")
    before = _snapshot()
    data = {k: _fill(web, v) for k, v in fields.items()}
    if csrf == "other-session":
        data["csrf"] = web.client("olga").csrf  # a valid token, of someone else's session
    elif csrf is not None:
        data["csrf"] = csrf
    r = c.post(_fill(web, path), data, csrf=False)
    assert r.status_code == 403 and "expired" in r.text
    assert _snapshot() == before
    assert c.get("/ui/t/sunrise/today").status_code == 200  # still signed in


@pytest.mark.parametrize("path, fields", POSTS)
def test_forms_from_another_origin_are_refused(web, path, fields):
    c = web.client("alice")
    c.get("/ui/t/sunrise/today")
    before = _snapshot()
    r = c.post(_fill(web, path), {k: _fill(web, v) for k, v in fields.items()},
               headers={"Origin": "https://evil.example", "Host": "clinic.example"})
    assert r.status_code == 403
    assert _snapshot() == before


def test_same_origin_form_is_accepted(web):
    c = web.client("alice")
    c.get("/ui/t/sunrise/today")
    r = c.post(f"/ui/t/sunrise/callbacks/{web.tickets['sunrise']}/done",
               headers={"Origin": "http://clinic.example", "Host": "clinic.example"})
    assert r.status_code == 303


def test_form_body_limits(web):
    c = web.client("alice")
    c.get("/ui/t/sunrise/today")
    path = f"/ui/t/sunrise/callbacks/{web.tickets['sunrise']}/done"
    r = c.post(path, body=f"csrf={c.csrf}&pad=" + "x" * 9000)
    assert r.status_code == 413
    r = c.post(path, body="{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 415
    r = c.post(path, body="csrf=%ff%fe")
    assert r.status_code in (400, 403)
    assert CallbackTicket.get_by_id(web.tickets["sunrise"]).status == "open"


def test_wrong_password_never_reaches_a_page(web):
    c = Client(web.app)
    r = c.login("alice", PASSWORD + "x")
    assert r.status_code == 401
    assert c.get("/ui/t/sunrise/today").status_code == 303
