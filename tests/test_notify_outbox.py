"""Confirmations enqueued by booking, cancelling and moving: through the service and the API.

A message is queued only with the patient's consent and an address for the channel, in
the booking's own transaction, with the clinic's template (or the default) filled in.
"""

from __future__ import annotations

import http.client
import json
import logging
from datetime import UTC, datetime

import pytest
from fakes.api import LiveApi, live_api
from fakes.scheduling import on_both_databases

from esl_app.db import database
from esl_app.db.models import Appointment, NotifyConsent, OutboxMessage, Slot
from esl_app.notify import outbox
from esl_app.notify.outbox import list_messages
from esl_app.notify.templates import format_time
from esl_app.scheduling import service

# Tuesday 2026-11-24 10:00 in New York.
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)

TENANTS = """
tenants:
  - id: alpha
    name: Alpha Clinic
    dids: ["3001"]
    timezone: America/New_York
    address: 1 Alpha Road, Springfield
    hours: {mon-fri: "08:00-17:00"}
    slot_minutes: 30
    doctors: [{id: smith, name: Dr. Sarah Smith}, {id: patel, name: Dr. Raj Patel}]
    notifications:
      sms: sns
      email: ses
      from_email: desk@alpha.example
      templates:
        rescheduled: "Moved: {code} is now {time} with {doctor} at {clinic}, {address}."
  - id: beta
    name: Beta Clinic
    dids: ["3002"]
    timezone: Europe/Berlin
    hours: {mon-fri: "09:00-12:00"}
    slot_minutes: 20
    doctors: [{id: jones, name: Dr. Ann Jones}]
"""
PHONE, EMAIL = "+15550104444", "pat@example.org"


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    yield from on_both_databases(request.param, tmp_path, TENANTS, 14, NOW)


def rows(tenant: str | None = None) -> list[OutboxMessage]:
    query = OutboxMessage.select().order_by(OutboxMessage.id)
    if tenant:
        query = query.where(OutboxMessage.tenant == tenant)
    with database().connection_context():
        return list(query)


def book(tenant: str = "alpha", index: int = 0, **kw):
    slot = service.search_slots(tenant, now=NOW, limit=index + 1)[index]
    kw.setdefault("patient_name", "Pat Doe")
    return service.book(tenant, slot.slot_id, now=NOW, **kw)


def test_no_consent_no_message(db):
    view = book(phone=PHONE, email=EMAIL)
    other = service.search_slots("alpha", now=NOW, limit=3)[2]
    service.reschedule("alpha", view.confirmation, other.slot_id, now=NOW)
    service.cancel("alpha", view.confirmation, now=NOW)
    book(index=1, phone=PHONE, email=EMAIL, notify="none")
    assert rows() == []
    with database().connection_context():
        assert NotifyConsent.select().count() == 0


def test_booking_with_consent_queues_the_right_message(db):
    view = book(phone="(555) 010-4444", email=EMAIL, notify="both")
    msgs = rows()
    assert [(m.channel, m.recipient, m.provider, m.status, m.event) for m in msgs] == [
        ("sms", "5550104444", "sns", "queued", "booked"),
        ("email", EMAIL, "ses", "queued", "booked"),
    ]
    expected = (f"Alpha Clinic: your appointment with {view.doctor_name} is booked for "
                f"Tuesday, November 24, 2026 at 10:30 AM EST. Confirmation code: "
                f"{view.confirmation}. Address: 1 Alpha Road, Springfield.")
    assert msgs[0].body == msgs[1].body == expected
    assert msgs[0].subject == "" and msgs[1].subject == "Alpha Clinic: appointment confirmed"
    assert all(m.code == view.confirmation and m.attempts == 0 for m in msgs)


def test_only_channels_with_an_address(db):
    book(phone=PHONE, notify="both")
    book(index=1, email=EMAIL, notify="sms")  # agreed to texts, gave no number
    assert [(m.channel, m.recipient) for m in rows()] == [("sms", PHONE)]


def test_cancel_and_move_follow_the_booking_consent(db):
    view = book(phone=PHONE, email=EMAIL, notify="email")
    later = service.search_slots("alpha", now=NOW, limit=3)[2]
    moved = service.reschedule("alpha", view.confirmation, later.slot_id, now=NOW)
    service.cancel("alpha", view.confirmation, now=NOW)
    msgs = rows()
    assert [(m.event, m.channel) for m in msgs] == [
        ("booked", "email"), ("rescheduled", "email"), ("cancelled", "email")]
    when = format_time(moved.start)
    assert when == "Tuesday, November 24, 2026 at 11 AM EST"
    assert msgs[1].body == (f"Moved: {view.confirmation} is now {when} with "
                            f"{moved.doctor_name} at Alpha Clinic, 1 Alpha Road, Springfield.")
    assert msgs[1].subject == "Alpha Clinic: appointment moved"
    assert msgs[2].body.startswith(f"Alpha Clinic: your appointment with {moved.doctor_name} "
                                   f"on {when}")
    assert msgs[2].body.endswith(f"is cancelled. Confirmation code: {view.confirmation}.")
    assert "Address" not in msgs[2].body


def test_local_outbox_keeps_messages_in_the_clinic_zone(db):
    view = book("beta", phone=PHONE, notify="sms")
    (msg,) = rows("beta")
    assert (msg.status, msg.provider) == ("kept", "outbox")
    assert view.start.tzname() == "CET"
    assert "CET. Confirmation code" in msg.body and "Beta Clinic" in msg.body
    assert "Address" not in msg.body  # beta has none


def test_bad_consent_is_refused_before_anything_is_booked(db):
    slot = service.search_slots("alpha", now=NOW, limit=1)[0]
    with pytest.raises(service.InvalidRequest, match="notify must be none, sms, email or both"):
        service.book("alpha", slot.slot_id, patient_name="Pat", phone=PHONE, notify="fax",
                     now=NOW)
    with database().connection_context():
        assert Slot.get_by_id(int(slot.slot_id)).state == "open"
        assert Appointment.select().count() == 0
    assert rows() == []


def test_a_failed_booking_queues_nothing(db):
    view = book(phone=PHONE, notify="sms")
    slot = service.search_slots("alpha", now=NOW, limit=1)[0]
    service.book("alpha", slot.slot_id, patient_name="A", now=NOW)
    with pytest.raises(service.SlotTaken):
        service.book("alpha", slot.slot_id, patient_name="B", phone=PHONE, notify="sms",
                     now=NOW)
    assert [m.code for m in rows()] == [view.confirmation]


def test_enqueue_failure_never_costs_the_booking(db, monkeypatch, caplog):
    def broken(*a, **kw):
        raise RuntimeError(f"template exploded for {PHONE}")

    monkeypatch.setattr(outbox, "enqueue", broken)
    with caplog.at_level(logging.WARNING, logger="esl_app.notify.outbox"):
        view = book(phone=PHONE, email=EMAIL, notify="both")
    assert service.get_appointment("alpha", view.confirmation).status == "booked"
    assert rows() == []
    assert f"confirmation for booked {view.confirmation} not queued: RuntimeError" in caplog.text
    assert PHONE not in caplog.text and "5550104444" not in caplog.text


def test_listing(db):
    book(phone=PHONE, email=EMAIL, notify="both")
    book("beta", email=EMAIL, notify="email")
    everything = list_messages()
    assert [m.tenant for m in everything] == ["beta", "alpha", "alpha"]  # newest first
    assert [m.channel for m in list_messages("alpha", status="queued")] == ["email", "sms"]
    assert list_messages("beta", status="queued") == []
    entry = list_messages("beta")[0].to_dict()
    assert entry["status"] == "kept" and entry["next_attempt_at"] is None
    assert entry["created_at"].endswith("Z")


# ------------------------------------------------------------------------- the API


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    with live_api(tmp_path_factory.mktemp("notify-api")) as live:
        yield live


def call(api: LiveApi, method: str, path: str, body: object = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    headers = dict(api.auth("sunrise"))
    raw = None
    if body is not None:
        raw = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, f"/v1/tenants/sunrise{path}", body=raw, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def api_slots(n: int) -> list[str]:
    return [s.slot_id for s in service.search_slots("sunrise", limit=n)]


def test_api_booking_field_and_later_changes(api: LiveApi):
    first, second = api_slots(2)
    before = len(rows("sunrise"))
    status, booked = call(api, "POST", "/appointments", {
        "slot_id": first, "patient_name": "Api Patient", "phone": "+1 555 010 7777",
        "email": "api@example.org", "notify": "both"})
    assert status == 201, booked
    code = booked["confirmation"]
    assert call(api, "POST", f"/appointments/{code}/reschedule", {"slot_id": second})[0] == 200
    assert call(api, "DELETE", f"/appointments/{code}")[0] == 200
    msgs = [m for m in rows("sunrise")[before:]]
    assert [(m.event, m.channel, m.status) for m in msgs] == [
        ("booked", "sms", "kept"), ("booked", "email", "kept"),
        ("rescheduled", "sms", "kept"), ("rescheduled", "email", "kept"),
        ("cancelled", "sms", "kept"), ("cancelled", "email", "kept")]
    assert msgs[0].recipient == "+15550107777" and msgs[1].recipient == "api@example.org"
    assert all(code in m.body and "Sunrise Family Clinic" in m.body for m in msgs)
    assert msgs[1].subject == "Sunrise Family Clinic: appointment confirmed"


def test_api_without_consent_queues_nothing(api: LiveApi):
    (slot,) = api_slots(1)
    before = len(rows("sunrise"))
    status, booked = call(api, "POST", "/appointments", {
        "slot_id": slot, "patient_name": "Quiet Patient", "phone": "+15550108888"})
    assert status == 201
    assert call(api, "DELETE", f"/appointments/{booked['confirmation']}")[0] == 200
    assert len(rows("sunrise")) == before


@pytest.mark.parametrize(("body", "error"), [
    ({"notify": "sms", "email": "a@example.org"}, "notify: a text confirmation needs phone"),
    ({"notify": "both", "phone": "+15550101234"}, "notify: an e-mail confirmation needs email"),
    ({"notify": "fax", "phone": "+15550101234"}, "notify: not valid"),
    ({"notify": True}, "notify: must be a string"),
])
def test_api_refuses_inconsistent_consent(api: LiveApi, body: dict, error: str):
    (slot,) = api_slots(1)
    status, answer = call(api, "POST", "/appointments",
                          {"slot_id": slot, "patient_name": "Pat", **body})
    assert status == 422 and answer == {"error": error}
    assert service.search_slots("sunrise", limit=1)[0].slot_id == slot  # not booked
