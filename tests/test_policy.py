"""Clinic policy in the scheduling core: holds, rules, visit types, audit, callbacks, retention."""

import textwrap
from datetime import UTC, date, datetime, timedelta

import peewee as pw
import pytest
from click.testing import CliRunner
from fakes.scheduling import on_both_databases

from esl_app.db import close_db, database
from esl_app.db.models import AuditLog, CallbackTicket, CallRecord, Slot
from esl_app.scheduling import audit, callbacks, retention, service
from esl_app.sim.testing import make_db

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tue 10:00 New York

POLICY_TENANTS = textwrap.dedent("""
    tenants:
      - id: strict
        name: Strict Clinic
        dids: ["5001"]
        timezone: America/New_York
        hours: {mon-fri: "09:00-17:00"}
        slot_minutes: 20
        handoff: user/1000
        policy:
          min_notice_minutes: 120
          booking_window_days: 10
          closed_dates: ["2026-11-26"]
          cancel_window_hours: 24
          hold_minutes: 3
        visit_types:
          - {id: new, name: new patient visit, minutes: 40}
          - {id: followup, name: follow-up, minutes: 20}
        data: {retention_days: 30, store_transcripts: false}
        doctors: [{id: kim, name: Dr. Kim}]
      - id: loose
        name: Loose Clinic
        dids: ["5002"]
        timezone: America/New_York
        hours: {mon-fri: "09:00-17:00"}
        slot_minutes: 30
        policy: {buffer_minutes: 10}
        data: {retention_days: 365}
        doctors: [{id: lee, name: Dr. Lee}]
""")


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    yield from on_both_databases(request.param, tmp_path, POLICY_TENANTS, 20, NOW)


def test_min_notice_window_and_closed_dates(db):
    slots = service.search_slots("strict", limit=50, now=NOW)
    assert slots[0].start.isoformat() == "2026-11-24T12:00:00-05:00"  # 2 h notice
    assert all(s.start.date() != date(2026, 11, 26) for s in slots)
    assert service.search_slots("strict", date=date(2026, 11, 26), now=NOW) == []
    late = service.search_slots("strict", date=date(2026, 12, 10), now=NOW)
    assert late == []  # beyond the 10-day window
    early = Slot.select().where((Slot.tenant == "strict")
                                & (Slot.start < datetime(2026, 11, 24, 17, 0))).first()
    with pytest.raises(service.NotAllowed, match="notice"):
        service.book("strict", early.id, patient_name="A", now=NOW)
    closed = Slot.select().where((Slot.tenant == "strict")
                                 & (Slot.start >= datetime(2026, 11, 26, 15))
                                 & (Slot.start < datetime(2026, 11, 26, 20))).first()
    with pytest.raises(service.NotAllowed, match="closed"):
        service.book("strict", closed.id, patient_name="A", now=NOW)
    far = Slot.select().where((Slot.tenant == "strict")
                              & (Slot.start > datetime(2026, 12, 7))).first()
    with pytest.raises(service.NotAllowed, match="days ahead"):
        service.book("strict", far.id, patient_name="A", now=NOW)


def test_visit_types_take_consecutive_slots(db):
    new = service.search_slots("strict", visit_type="new", date=date(2026, 11, 25), limit=50,
                               now=NOW)
    assert new[0].end - new[0].start == timedelta(minutes=40)
    assert new[-1].end.hour == 17 and new[-1].end.minute == 0  # last 40-min visit ends at close
    appt = service.book("strict", new[0].slot_id, patient_name="Nina New", visit_type="new",
                        now=NOW)
    assert appt.end - appt.start == timedelta(minutes=40)
    follow = service.search_slots("strict", visit_type="followup", date=date(2026, 11, 25),
                                  now=NOW)
    assert follow[0].start == new[0].start + timedelta(minutes=40)
    # a 40-minute visit cannot start 20 minutes before a booked slot
    with pytest.raises(service.SlotTaken):
        service.book("strict", _slot_overlapping(new[0]), patient_name="X", visit_type="new",
                     now=NOW)
    service.cancel("strict", appt.confirmation, now=NOW, enforce_window=False)
    again = service.search_slots("strict", visit_type="new", date=date(2026, 11, 25), now=NOW)
    assert again[0].start == new[0].start
    with pytest.raises(service.InvalidRequest):
        service.search_slots("strict", visit_type="surgery", now=NOW)


def _slot_overlapping(view):
    start = view.start.astimezone(UTC).replace(tzinfo=None) + timedelta(minutes=20)
    row = Slot.get((Slot.tenant == "strict") & (Slot.start == start))
    return row.id


def test_buffer_keeps_time_free(db):
    slots = service.search_slots("loose", date=date(2026, 11, 25), limit=50, now=NOW)
    # 30-minute slots + 10-minute buffer: each visit occupies two slots
    appt = service.book("loose", slots[0].slot_id, patient_name="Bea", now=NOW)
    assert appt.end - appt.start == timedelta(minutes=60)
    after = service.search_slots("loose", date=date(2026, 11, 25), now=NOW)
    assert after[0].start == slots[0].start + timedelta(minutes=60)


def test_cancel_window(db):
    soon = service.search_slots("strict", date=date(2026, 11, 24), now=NOW)[0]
    appt = service.book("strict", soon.slot_id, patient_name="Tom", now=NOW)
    with pytest.raises(service.TooLate) as err:
        service.cancel("strict", appt.confirmation, now=NOW)
    assert err.value.code == "too_late" and "24 hours" in str(err.value)
    other = service.search_slots("strict", date=date(2026, 11, 27), now=NOW)[0]
    with pytest.raises(service.TooLate):
        service.reschedule("strict", appt.confirmation, other.slot_id, now=NOW)
    assert service.get_appointment("strict", appt.confirmation).status == "booked"
    later = service.book("strict", other.slot_id, patient_name="Tim", now=NOW)
    assert service.cancel("strict", later.confirmation, now=NOW).status == "cancelled"


def test_holds(db):
    slot = service.search_slots("strict", date=date(2026, 11, 25), now=NOW)[0]
    held = service.hold_slot("strict", slot.slot_id, owner="call-A", now=NOW)
    assert held.slot_id == slot.slot_id
    assert slot.slot_id not in {s.slot_id for s in
                                service.search_slots("strict", date=date(2026, 11, 25), now=NOW)}
    with pytest.raises(service.SlotTaken):
        service.hold_slot("strict", slot.slot_id, owner="call-B", now=NOW)
    with pytest.raises(service.SlotTaken):
        service.book("strict", slot.slot_id, patient_name="Bob", call_id="call-B", now=NOW)
    # the holder books it, consuming the hold
    appt = service.book("strict", slot.slot_id, patient_name="Ann", call_id="call-A", now=NOW)
    assert Slot.get_by_id(int(slot.slot_id)).state == "booked"
    assert appt.confirmation
    # an expired hold is free for anyone
    nxt = service.search_slots("strict", date=date(2026, 11, 25), now=NOW)[0]
    service.hold_slot("strict", nxt.slot_id, owner="call-C", now=NOW)
    later = NOW + timedelta(minutes=4)
    assert nxt.slot_id in {s.slot_id for s in
                           service.search_slots("strict", date=date(2026, 11, 25), now=later)}
    service.book("strict", nxt.slot_id, patient_name="Dan", call_id="call-D", now=later)
    # release on hang-up
    third = service.search_slots("strict", date=date(2026, 11, 25), now=NOW)[0]
    service.hold_slot("strict", third.slot_id, owner="call-E", now=NOW)
    assert service.release_holds("call-E") == 1
    assert service.release_holds("call-E") == 0
    assert Slot.get_by_id(int(third.slot_id)).state == "open"


def test_audit_every_read_and_change(db):
    slot = service.search_slots("strict", date=date(2026, 11, 27), limit=2, now=NOW)
    appt = service.book("strict", slot[0].slot_id, patient_name="Ann Lee", phone="5550001111",
                        actor="call:abc", now=NOW)
    service.get_appointment("strict", appt.confirmation, actor="api:token")
    service.find_appointments("strict", phone="5550001111", actor="lambda", now=NOW)
    service.reschedule("strict", appt.confirmation, slot[1].slot_id, actor="call:def", now=NOW)
    service.cancel("strict", appt.confirmation, actor="cli", now=NOW)
    entries = audit.list_audit("strict", entity_id=appt.confirmation)
    assert [(e["actor"], e["action"]) for e in reversed(entries)] == [
        ("call:abc", "create"), ("api:token", "read"), ("lambda", "read"),
        ("call:def", "reschedule"), ("cli", "cancel")]
    assert all("Ann" not in str(e) and "5550001111" not in str(e) for e in entries)
    assert audit.list_audit("loose") == []
    with pytest.raises(pw.DatabaseError):
        with database().atomic():
            AuditLog.update(actor="tampered").execute()
    with pytest.raises(pw.DatabaseError):
        with database().atomic():
            AuditLog.delete().execute()
    assert len(audit.list_audit("strict", entity_id=appt.confirmation)) == 5


def test_callbacks(db):
    t = callbacks.create_ticket("strict", name="Ann Lee", phone="+1 555 000 1111",
                                reason="question about a bill", call_id="c1")
    assert t.phone == "+15550001111" and t.status == "open"
    assert [x.id for x in callbacks.list_tickets("strict")] == [t.id]
    assert callbacks.list_tickets("loose") == []
    with pytest.raises(service.NotFound):
        callbacks.mark_done("loose", t.id)
    assert callbacks.mark_done("strict", t.id).status == "done"
    assert callbacks.list_tickets("strict") == []
    assert len(callbacks.list_tickets("strict", status=None)) == 1
    with pytest.raises(service.InvalidRequest):
        callbacks.create_ticket("strict", name="X", phone="")


def test_retention_purge_removes_exactly_past_due(db):
    old = NOW.replace(tzinfo=None) - timedelta(days=31)
    recent = NOW.replace(tzinfo=None) - timedelta(days=29)
    for tenant, at, cid in [("strict", old, "s-old"), ("strict", recent, "s-new"),
                            ("loose", old, "l-old")]:
        CallRecord.create(call_id=cid, tenant_id=tenant, started_at=at)
    done = callbacks.create_ticket("strict", name="A", phone="5551234567")
    callbacks.mark_done("strict", done.id)
    open_ticket = callbacks.create_ticket("strict", name="B", phone="5551234568")
    CallbackTicket.update(created_at=old).execute()
    dry = retention.purge(now=NOW.replace(tzinfo=None), dry_run=True)
    assert dry.calls == {"strict": 1, "loose": 0} and dry.callbacks == {"strict": 1, "loose": 0}
    assert CallRecord.select().count() == 3
    report = retention.purge(now=NOW.replace(tzinfo=None))
    assert report.total == 2
    assert sorted(c.call_id for c in CallRecord.select()) == ["l-old", "s-new"]
    assert [t.id for t in CallbackTicket.select()] == [open_ticket.id]
    assert any(e["action"] == "purge" for e in audit.list_audit("strict"))


def test_cli_callbacks_audit_purge(tmp_path):
    make_db(tmp_path, POLICY_TENANTS, days=3, now=NOW)
    t = callbacks.create_ticket("strict", name="Ann", phone="5550001111", reason="call me")
    from esl_app.cli import cli

    db = f"sqlite:///{tmp_path / 'ivr-test.db'}"
    runner = CliRunner()

    def run(*args, ok=True):
        res = runner.invoke(cli, ["--db", db, *args], catch_exceptions=False)
        assert (res.exit_code == 0) == ok, res.output
        return res.output

    assert "call me" in run("callbacks", "list", "--tenant", "strict")
    assert "is done" in run("callbacks", "done", str(t.id), "--tenant", "strict")
    assert "no callback ticket" in run("callbacks", "done", "999", "--tenant", "strict", ok=False)
    assert "(none)" in run("callbacks", "list", "--tenant", "strict")
    assert '"status": "done"' in run("callbacks", "list", "--tenant", "strict", "--all", "--json")
    out = run("audit", "list", "--tenant", "strict")
    assert "callback" in out and "cli" in out
    assert "removed 0 row(s) in all" in run("maintenance", "purge")
    assert "would remove" in run("maintenance", "purge", "--dry-run")
    close_db()


def test_serve_purges_daily(tmp_path, monkeypatch):
    import gevent

    from esl_app.runtime import workers

    make_db(tmp_path, POLICY_TENANTS, days=1, now=NOW)
    CallRecord.create(call_id="ancient", tenant_id="strict",
                      started_at=datetime(2020, 1, 1))
    CallRecord.create(call_id="fresh", tenant_id="strict")
    monkeypatch.setattr(workers, "PURGE_FIRST_DELAY", 0.0)
    monkeypatch.setattr(workers, "PURGE_EVERY", 3600.0)
    g = gevent.spawn(workers._purge_daily)
    try:
        for _ in range(100):
            if not CallRecord.select().where(CallRecord.call_id == "ancient").exists():
                break
            gevent.sleep(0.05)
        assert [c.call_id for c in CallRecord.select()] == ["fresh"]
    finally:
        g.kill()
        close_db()


def test_retention_purge_serves_other_calls_between_two_clinics(db):
    """A worker purges while it takes calls: a socket that became ready during the purge
    of the first clinic is served before the second clinic's is done."""
    import gevent
    from gevent import socket

    a, b = socket.socketpair()
    order = []
    reader = gevent.spawn(lambda: (a.recv(1), order.append("other call")))
    gevent.sleep(0.01)
    real = CallRecord.select
    seen = []

    def select(*fields):  # the moment each clinic's purge starts, as the purge sees it
        seen.append(len(order))
        return real(*fields)

    b.send(b"x")
    try:
        CallRecord.select = select
        retention.purge(now=NOW.replace(tzinfo=None))
    finally:
        CallRecord.select = real
    reader.join(2)
    assert order == ["other call"]
    assert seen[-1] == 1  # the last clinic was purged after the other call ran
    a.close()
    b.close()
