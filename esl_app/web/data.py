"""What the dashboard pages show, read straight from the tables, always scoped by tenant.

Reads go around :mod:`esl_app.scheduling.service` where it has no query of the shape a
page needs (a doctor's day with booked, held and free slots; a page of calls without their
transcripts); every change goes through the service (or :mod:`~esl_app.scheduling.callbacks`)
so the dashboard keeps the API's rules and audit log. Each query names the tenant and
uses an index that starts with it or with a doctor of it: a year of data for 100 clinics
costs a page a few milliseconds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import peewee as pw

from esl_app.config.tenants import Tenant
from esl_app.db import database, write_txn
from esl_app.db.models import (
    Appointment,
    Attendance,
    CallbackTicket,
    CallRecord,
    Doctor,
    Slot,
    TenantRow,
    utcnow,
)
from esl_app.scheduling import audit
from esl_app.scheduling.codes import normalize_code
from esl_app.scheduling.errors import InvalidRequest, NotAllowed, NotFound

__all__ = [
    "ATTENDANCE",
    "CALL_OUTCOMES",
    "CallRow",
    "Cell",
    "DoctorRef",
    "active_doctors",
    "call_detail",
    "calls_in_progress",
    "calls_page",
    "mark_attendance",
    "slot_grid",
    "tenant_summaries",
]

ATTENDANCE = ("arrived", "no_show")
# the outcomes a call record can have (README "Running the bot"), for the filter's choices
CALL_OUTCOMES = ("booked", "cancelled", "rescheduled", "handoff", "emergency", "message_taken",
                 "message_declined", "message_failed", "completed", "caller_hangup",
                 "rejected", "no_input", "error", "in_progress", "interrupted")
OUTCOME_RE = re.compile(r"^[a-z_]{2,32}$")
STALE_AFTER = timedelta(hours=12)  # as esl_app.telephony.records: older is not in progress


def to_utc(local: datetime) -> datetime:
    """Naive UTC, the stored form, of an aware local time."""
    return local.astimezone(UTC).replace(tzinfo=None)


def local(stored: datetime, tz: ZoneInfo) -> datetime:
    """The clinic's wall-clock time of a stored (naive UTC) time."""
    return stored.replace(tzinfo=UTC).astimezone(tz)


def local_today(tenant: Tenant, now: datetime | None = None) -> date:
    """Today in the clinic's time zone."""
    return local(now or utcnow(), tenant.tz).date()


def day_bounds(tenant: Tenant, first: date, days: int = 1) -> tuple[datetime, datetime]:
    """Stored-time bounds of ``days`` local days from ``first`` (DST-safe)."""
    lo = datetime.combine(first, time(0), tenant.tz)
    hi = datetime.combine(first + timedelta(days=days), time(0), tenant.tz)
    return to_utc(lo), to_utc(hi)


# ---------------------------------------------------------------- schedule


@dataclass(frozen=True)
class DoctorRef:
    """A doctor of the tenant: database key, slug and name."""

    pk: int
    slug: str
    name: str


def active_doctors(tenant_id: str) -> list[DoctorRef]:
    """The tenant's doctors who take appointments, by name."""
    with database().connection_context():
        return [DoctorRef(d.id, d.slug, d.name) for d in
                Doctor.select(Doctor.id, Doctor.slug, Doctor.name)
                .where((Doctor.tenant == tenant_id) & (Doctor.active == True))  # noqa: E712
                .order_by(Doctor.name)]


@dataclass
class Cell:
    """One slot of a doctor's day as the front desk sees it."""

    slot_id: int
    doctor: str
    start: datetime  # local
    end: datetime
    state: str  # free | held | booked | continued (a longer visit's later slot)
    hold_until: datetime | None = None
    code: str | None = None
    patient: str | None = None
    attendance: str | None = None
    bookable: bool = False
    can_mark: bool = False  # attendance may be marked (the visit's day has come)
    extra: dict[str, Any] = field(default_factory=dict)


def slot_grid(tenant: Tenant, doctors: list[DoctorRef], first: date, days: int, *,
              now: datetime | None = None) -> dict[str, list[Cell]]:
    """Each doctor's slots of ``days`` local days from ``first``, earliest first.

    Two indexed queries whatever the size of the tables: the slots by (doctor, start),
    then the booked appointments of those slots with their attendance.
    """
    out: dict[str, list[Cell]] = {d.slug: [] for d in doctors}
    if not doctors:
        return out
    now_utc = now or utcnow()
    lo, hi = day_bounds(tenant, first, days)
    by_pk = {d.pk: d for d in doctors}
    tz = tenant.tz
    today = local_today(tenant, now_utc)
    earliest = now_utc + timedelta(minutes=tenant.policy.min_notice_minutes)
    with database().connection_context():
        slots = list(Slot.select(Slot.id, Slot.doctor, Slot.start, Slot.end, Slot.state,
                                 Slot.hold_until)
                     .where(Slot.doctor.in_(list(by_pk)) & (Slot.start >= lo)
                            & (Slot.start < hi) & (Slot.state != "removed"))
                     .order_by(Slot.start).tuples())
        appts = list(Appointment.select(Appointment.slot, Appointment.code,
                                        Appointment.patient_name, Appointment.slot_ids,
                                        Attendance.state)
                     .join(Slot, on=(Appointment.slot == Slot.id))
                     .switch(Appointment)
                     .join(Attendance, pw.JOIN.LEFT_OUTER,
                           on=(Attendance.appointment == Appointment.id))
                     .where((Appointment.tenant == tenant.id)
                            & (Appointment.status == "booked")
                            & Slot.doctor.in_(list(by_pk)) & (Slot.start >= lo)
                            & (Slot.start < hi))
                     .tuples())
    first_of: dict[int, tuple[str, str, str | None]] = {}
    later: dict[int, str] = {}
    for slot_pk, code, patient, slot_ids, attended in appts:
        first_of[slot_pk] = (code, patient, attended)
        for extra in (slot_ids or "").split(","):
            if extra.isdigit() and int(extra) != slot_pk:
                later[int(extra)] = code
    for sid, doctor_pk, start, end, state, hold_until in slots:
        doc = by_pk[doctor_pk]
        ls = local(start, tz)
        cell = Cell(sid, doc.slug, ls, local(end, tz), "free")
        if sid in first_of:
            cell.state = "booked"
            cell.code, cell.patient, cell.attendance = first_of[sid]
            cell.can_mark = ls.date() <= today
        elif sid in later:
            cell.state, cell.code = "continued", later[sid]
        elif state == "booked":  # booked without a live appointment row: not free
            cell.state = "continued"
        elif state == "held" and hold_until is not None and hold_until > now_utc:
            cell.state, cell.hold_until = "held", local(hold_until, tz)
        if cell.state == "free":
            cell.bookable = start >= earliest
        out[doc.slug].append(cell)
    return out


def mark_attendance(tenant_id: str, code: str, state: str, *, actor: str,
                    tenant: Tenant, now: datetime | None = None) -> str:
    """Record that a booked appointment's patient arrived (or did not), audited.

    ``state`` is ``arrived``, ``no_show`` or ``clear`` (a mistake undone). Refused
    before the appointment's local day: nobody arrives next week. Returns the code.
    """
    if state not in (*ATTENDANCE, "clear"):
        raise InvalidRequest("attendance must be arrived, no_show or clear")
    norm = normalize_code(code)
    if norm is None:
        raise NotFound("no appointment with that confirmation code")
    now_utc = now or utcnow()
    with write_txn():
        found = list(Appointment.select(Appointment.id, Appointment.code, Slot.start)
                     .join(Slot)
                     .where((Appointment.tenant == tenant_id) & (Appointment.code == norm)
                            & (Appointment.status == "booked")).tuples())
        if not found:
            raise NotFound("no booked appointment with that confirmation code")
        appt_id, appt_code, start = found[0]
        if local(start, tenant.tz).date() > local_today(tenant, now_utc):
            raise NotAllowed("attendance can be marked from the day of the appointment")
        if state == "clear":
            Attendance.delete().where(Attendance.appointment == appt_id).execute()
            audit.record(tenant_id, actor, "attendance_clear", "appointment", appt_code)
        else:
            (Attendance.insert(appointment=appt_id, tenant=tenant_id, state=state,
                               marked_by=actor[:128], marked_at=now_utc)
             .on_conflict(conflict_target=[Attendance.appointment],
                          update={Attendance.state: state, Attendance.marked_by: actor[:128],
                                  Attendance.marked_at: now_utc})
             .execute())
            audit.record(tenant_id, actor, state, "appointment", appt_code)
    return appt_code


def appointment_extras(tenant_id: str, code: str) -> dict[str, Any]:
    """Attendance and the audit trail of one appointment (newest first, 50 at most)."""
    with database().connection_context():
        att = (Attendance.select(Attendance.state, Attendance.marked_by, Attendance.marked_at)
               .join(Appointment)
               .where((Appointment.tenant == tenant_id) & (Appointment.code == code))
               .first())
    trail = audit.list_audit(tenant_id, entity_id=code, limit=50)
    return {"attendance": att.state if att else None,
            "attendance_by": att.marked_by if att else None, "trail": trail}


# ---------------------------------------------------------------- calls


@dataclass(frozen=True)
class CallRow:
    """One line of the calls list (no transcript: the list never reads it)."""

    id: int
    call_id: str
    started: datetime | None  # local
    seconds: int | None
    caller: str  # masked
    outcome: str
    confirmation: str | None
    emergency: bool


def _digits(value: str | None) -> str:
    return re.sub(r"[^0-9]", "", value or "")


def calls_page(tenant: Tenant, *, outcome: str | None = None, day: date | None = None,
               digits: str | None = None, before: int | None = None, limit: int = 50
               ) -> tuple[list[CallRow], int | None]:
    """Calls of a tenant, newest first, filtered; and the cursor of the next page.

    Ordered by record id (records are created as calls start) so that SQLite walks the
    ``tenant_id`` index backwards and stops after one page instead of sorting a year.
    """
    from esl_app.telephony.transcript import mask_number

    q = (CallRecord.select(CallRecord.id, CallRecord.call_id, CallRecord.started_at,
                           CallRecord.ended_at, CallRecord.caller, CallRecord.outcome,
                           CallRecord.confirmation, CallRecord.emergency)
         .where(CallRecord.tenant_id == tenant.id))
    if outcome:
        q = q.where(CallRecord.outcome == outcome)
    if day is not None:
        lo, hi = day_bounds(tenant, day)
        q = q.where((CallRecord.started_at >= lo) & (CallRecord.started_at < hi))
    if digits:
        q = q.where(CallRecord.caller.endswith(digits))
    if before is not None:
        q = q.where(CallRecord.id < before)
    q = q.order_by(CallRecord.id.desc()).limit(limit + 1)
    with database().connection_context():
        rows = list(q.tuples())
    out = []
    for rid, call_id, started, ended, caller, outc, conf, emergency in rows[:limit]:
        seconds = int((ended - started).total_seconds()) if started and ended else None
        out.append(CallRow(rid, call_id, local(started, tenant.tz) if started else None,
                           seconds, mask_number(caller) if caller else "-",
                           outc or "-", conf, bool(emergency)))
    nxt = out[-1].id if len(rows) > limit and out else None
    return out, nxt


def call_detail(tenant: Tenant, call_id: str) -> dict[str, Any] | None:
    """One call of the tenant, masked as ``ivr calls show``; None when not the tenant's.

    Turns carry the gap to the previous turn (the bot's answer time after a caller's
    line); their words are dropped when the clinic does not keep transcripts, even from
    records stored before it said so.
    """
    from esl_app.telephony.records import get_call, masked_call

    if not call_id or len(call_id) > 64:
        return None
    rec = get_call(call_id)
    if rec is None or rec.get("call_id") != call_id or rec.get("tenant") != tenant.id:
        return None
    rec = masked_call(rec)
    keep = tenant.data.store_transcripts
    prev: dict[str, Any] | None = None
    turns = []
    for t in rec.get("turns") or []:
        at = int(t.get("at_ms") or 0)
        turn = {"speaker": t.get("speaker", "?"), "text": t.get("text", "") if keep else "",
                "at_ms": at, "barged_in": bool(t.get("barged_in")), "dtmf": t.get("dtmf"),
                "answer_ms": None}
        if prev is not None and prev["speaker"] == "caller" and turn["speaker"] == "bot":
            turn["answer_ms"] = at - prev["at_ms"]
        turns.append(turn)
        prev = turn
    rec["turns"] = turns
    rec["transcripts_kept"] = keep
    usage = rec.get("usage") or {}
    rec["cost"] = usage.get("cost") or {}
    rec["use"] = usage.get("usage") or {}
    rec["barge_ins"] = sum(1 for t in turns if t["barged_in"])
    for key in ("started_at", "ended_at"):
        if rec.get(key):
            rec[key + "_local"] = datetime.fromisoformat(rec[key]).astimezone(tenant.tz)
    return rec


def calls_in_progress(*, now: datetime | None = None, tenant_id: str | None = None
                      ) -> list[dict[str, Any]]:
    """Records with outcome ``in_progress`` started in the last 12 h (older ones died).

    The time bound lets the ``started_at`` index find them among a year of calls.
    """
    from esl_app.telephony.transcript import mask_number

    now_utc = now or utcnow()
    q = (CallRecord.select(CallRecord.call_id, CallRecord.tenant_id, CallRecord.did,
                           CallRecord.caller, CallRecord.started_at, CallRecord.usage)
         .where((CallRecord.started_at > now_utc - STALE_AFTER)
                & (CallRecord.outcome == "in_progress"))
         .order_by(CallRecord.started_at))
    if tenant_id:
        q = q.where(CallRecord.tenant_id == tenant_id)
    with database().connection_context():
        rows = list(q.tuples())
    out = []
    for call_id, tid, did, caller, started, usage in rows:
        try:
            worker = str(json.loads(usage or "{}").get("worker") or "")
        except ValueError:
            worker = ""
        out.append({"call_id": call_id, "tenant": tid or "-", "did": did or "-",
                    "caller": mask_number(caller) if caller else "-",
                    "started": started.replace(tzinfo=UTC),
                    "seconds": max(0, int((now_utc - started).total_seconds())),
                    "worker": worker})
    return out


# ---------------------------------------------------------------- operators' overview


def tenant_summaries() -> list[dict[str, Any]]:
    """Every tenant with its open callbacks (one grouped query, not one per tenant)."""
    with database().connection_context():
        tenants = list(TenantRow.select(TenantRow.id, TenantRow.name, TenantRow.timezone)
                       .order_by(TenantRow.id).tuples())
        open_cb = dict(CallbackTicket.select(CallbackTicket.tenant, pw.fn.COUNT(CallbackTicket.id))
                       .where(CallbackTicket.status == "open")
                       .group_by(CallbackTicket.tenant).tuples())
    return [{"id": tid, "name": name, "timezone": tz, "open_callbacks": open_cb.get(tid, 0)}
            for tid, name, tz in tenants]


def parse_day(raw: str | None) -> date | None:
    """A ``YYYY-MM-DD`` query value, or InvalidRequest; empty is None."""
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        raise InvalidRequest("the date must look like 2026-03-14")
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest("the date must look like 2026-03-14") from None
    if not 2000 <= day.year <= 2200:
        raise InvalidRequest("the date is out of range")
    return day


def last_digits(raw: str | None) -> str | None:
    """The caller's last 2-4 digits filter; anything else is InvalidRequest."""
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip()
    if not re.fullmatch(r"[0-9]{2,4}", value):
        raise InvalidRequest("the caller's last digits are 2 to 4 digits")
    return value
