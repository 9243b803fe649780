"""Reminder rows, the do-not-call list and pauses.

The rules that keep a patient from being called twice, too late, outside the clinic's
window or against their wish.

A reminder is planned once per appointment and ``hours_before`` (a unique index), and
dialled only by the process whose conditional UPDATE moved it from ``due`` to
``calling`` — so two workers, or two ``ivr serve`` hosts on one Postgres, never call
the same reminder twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from esl_app.config.tenants import Tenant, TenantSet
from esl_app.db import database, write_txn
from esl_app.db.models import (
    Appointment,
    CallRecord,
    DoNotCall,
    ReminderCall,
    ReminderPause,
    Slot,
    TenantRow,
    naive_utc,
    utcnow,
)
from esl_app.scheduling.phones import phone_key

__all__ = [
    "CALLING",
    "DONE",
    "DUE",
    "MIN_LEAD",
    "OUTCOMES",
    "SKIPPED",
    "Due",
    "add_do_not_call",
    "claim",
    "due_reminders",
    "finish",
    "is_do_not_call",
    "list_do_not_call",
    "list_reminders",
    "pause",
    "paused",
    "phone_key",
    "plan",
    "preview",
    "record_attempt",
    "remove_do_not_call",
    "resume",
    "sweep_stale",
]

log = logging.getLogger(__name__)

DUE, CALLING, DONE, SKIPPED = "due", "calling", "done", "skipped"
#: no reminder is placed closer than this to the appointment
MIN_LEAD = timedelta(hours=1)
#: a claim with no outcome after this long belonged to a process that died mid-call
STALE_CLAIM = timedelta(hours=2)
OUTCOMES = ("reminder_confirmed", "reminder_cancelled", "reminder_rescheduled",
            "reminder_voicemail", "reminder_no_answer", "reminder_busy", "reminder_declined",
            "reminder_handoff", "reminder_incomplete", "reminder_failed",
            "reminder_interrupted")
# outcomes after which another attempt may be made (the patient was not reached)
_RETRY = {"reminder_busy", "reminder_no_answer", "reminder_failed"}
# outcomes of an answered call, with not a word said by the bot, that are retried
_RETRY_UNSAID = {"reminder_failed"}


# ------------------------------------------------------------------ do-not-call, pauses


def add_do_not_call(tenant_id: str, number: str, source: str = "cli") -> bool:
    """Never call ``number`` for this tenant again; False when it was already listed."""
    key = phone_key(number)
    if len(key) < 3:
        raise ValueError("not a phone number")
    with write_txn():
        created = (DoNotCall.insert(tenant=tenant_id, phone=key, source=source[:32])
                   .on_conflict_ignore().as_rowcount().execute())
        # a reminder already planned for that number is not called
        appts = Appointment.select(Appointment.id).where(Appointment.tenant == tenant_id)
        for row in (ReminderCall.select(ReminderCall.id, Appointment.phone)
                    .join(Appointment).where(ReminderCall.appointment.in_(appts),
                                             ReminderCall.state == DUE)).tuples():
            if phone_key(row[1]) == key:
                ReminderCall.update(state=SKIPPED, outcome="reminder_declined",
                                    updated_at=utcnow()).where(
                    ReminderCall.id == row[0], ReminderCall.state == DUE).execute()
    return bool(created)


def remove_do_not_call(tenant_id: str, number: str) -> bool:
    """Take ``number`` off the tenant's list; False when it was not on it."""
    with write_txn():
        return bool(DoNotCall.delete().where(DoNotCall.tenant == tenant_id,
                                             DoNotCall.phone == phone_key(number)).execute())


def is_do_not_call(tenant_id: str, number: str | None) -> bool:
    """Whether the tenant may not call ``number``."""
    key = phone_key(number)
    with database().connection_context():
        return bool(key) and DoNotCall.select().where(
            DoNotCall.tenant == tenant_id, DoNotCall.phone == key).exists()


def list_do_not_call(tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's do-not-call list, oldest first."""
    with database().connection_context():
        return [{"phone": r.phone, "source": r.source,
                 "added": r.created_at.replace(microsecond=0).isoformat() + "Z"}
                for r in DoNotCall.select().where(DoNotCall.tenant == tenant_id)
                .order_by(DoNotCall.created_at)]


def pause(tenant_id: str) -> bool:
    """Stop the tenant's reminder calls until :func:`resume`."""
    with write_txn():
        return bool(ReminderPause.insert(tenant=tenant_id).on_conflict_ignore()
                    .as_rowcount().execute())


def resume(tenant_id: str) -> bool:
    """Let the tenant's reminder calls go on."""
    with write_txn():
        return bool(ReminderPause.delete().where(ReminderPause.tenant == tenant_id).execute())


def paused() -> set[str]:
    """Tenants whose reminder calls are paused."""
    with database().connection_context():
        return {r[0] for r in ReminderPause.select(ReminderPause.tenant).tuples()}


# ------------------------------------------------------------------------- planning


def plan(tenants: TenantSet, now: datetime | None = None,
         lookahead: timedelta = timedelta(days=1)) -> int:
    """Create the reminder rows falling due within ``lookahead``; how many are new.

    Idempotent (one row per appointment and ``hours_before``). A reminder whose time has
    passed when the appointment is booked is still placed, as soon as the window
    allows, while the appointment is more than :data:`MIN_LEAD` away.
    """
    now_n = naive_utc(now)
    created = 0
    for tenant in tenants:
        policy = tenant.reminders
        if policy is None or not policy.enabled:
            continue
        horizon = now_n + lookahead + timedelta(hours=max(policy.hours_before))
        query = (Appointment.select(Appointment.id, Slot.start)
                 .join(Slot)
                 .where(Appointment.tenant == tenant.id, Appointment.status == "booked",
                        Slot.start > now_n + MIN_LEAD, Slot.start <= horizon))
        chosen: list[dict[str, Any]] = []
        with database().connection_context():
            for appt_id, start in query.tuples():
                # of reminders already overdue, only the latest (the others are moot)
                overdue = [h for h in policy.hours_before
                           if start - timedelta(hours=h) <= now_n]
                for hours in policy.hours_before:
                    due = start - timedelta(hours=hours)
                    if due > now_n + lookahead or (overdue and due <= now_n
                                                   and hours != min(overdue)):
                        continue
                    chosen.append({"tenant": tenant.id, "appointment": appt_id,
                                   "hours_before": hours, "due_at": due,
                                   "next_at": max(due, now_n)})
        if not chosen:
            continue
        with write_txn():
            for i in range(0, len(chosen), 200):
                created += (ReminderCall.insert_many(chosen[i:i + 200]).on_conflict_ignore()
                            .as_rowcount().execute())
    return created


@dataclass(frozen=True)
class Due:
    """A reminder ready to dial: everything the dialer and the call need."""

    id: int
    tenant_id: str
    appointment_id: int
    code: str
    phone: str
    start: datetime  # naive UTC
    attempts: int


def _in_window(tenant: Tenant, when: datetime) -> bool:
    from esl_app.config.tenants import WEEKDAYS

    policy = tenant.reminders
    assert policy is not None
    local = when.replace(tzinfo=UTC).astimezone(tenant.tz)
    return (WEEKDAYS[local.weekday()] in policy.days
            and policy.window[0] <= local.time() < policy.window[1])


def _next_window(tenant: Tenant, after: datetime) -> datetime:
    """The next moment (naive UTC) inside the tenant's calling window."""
    from esl_app.config.tenants import WEEKDAYS

    policy = tenant.reminders
    assert policy is not None
    local = after.replace(tzinfo=UTC).astimezone(tenant.tz)
    for days in range(0, 8):
        day = (local + timedelta(days=days)).date()
        if WEEKDAYS[day.weekday()] not in policy.days:
            continue
        start = datetime.combine(day, policy.window[0], tzinfo=tenant.tz)
        end = datetime.combine(day, policy.window[1], tzinfo=tenant.tz)
        if local < end:
            return max(start, local).astimezone(UTC).replace(tzinfo=None)
    return after + timedelta(days=7)


def due_reminders(tenants: TenantSet, now: datetime | None = None, limit: int = 100
                  ) -> list[Due]:
    """Reminders that may be dialled now; those that cannot be are moved or skipped.

    Outside the window a reminder waits for its next opening (when that still comes
    before :data:`MIN_LEAD` ahead of the appointment; else it is skipped); a cancelled
    appointment, a missing number or a do-not-call number skips it.
    """
    now_n = naive_utc(now)
    stopped = paused()
    out: list[Due] = []
    query = (ReminderCall.select(ReminderCall, Appointment, Slot)
             .join(Appointment).join(Slot)
             .where(ReminderCall.state == DUE, ReminderCall.next_at <= now_n)
             .order_by(ReminderCall.next_at).limit(limit))
    with database().connection_context():
        rows = list(query)
    for r in rows:
        tenant = tenants.get(r.tenant_id)
        appt = r.appointment
        start = appt.slot.start
        if tenant is None or tenant.reminders is None or not tenant.reminders.enabled:
            continue
        if r.tenant_id in stopped:
            continue
        due = start - timedelta(hours=r.hours_before)
        if due != r.due_at and due > now_n:  # the appointment moved: so does its reminder
            _set(r.id, DUE, due_at=due, next_at=due)
            continue
        why = None
        if appt.status != "booked":
            why = "reminder_incomplete"
        elif start <= now_n + MIN_LEAD:
            why = "reminder_incomplete"
        elif not phone_key(appt.phone) or is_do_not_call(r.tenant_id, appt.phone):
            why = "reminder_declined" if appt.phone else "reminder_incomplete"
        if why:
            _set(r.id, DUE, state=SKIPPED, outcome=why)
            continue
        if not _in_window(tenant, now_n):
            nxt = _next_window(tenant, now_n)
            if nxt >= start - MIN_LEAD:
                _set(r.id, DUE, state=SKIPPED, outcome="reminder_incomplete")
            else:
                _set(r.id, DUE, next_at=nxt)
            continue
        out.append(Due(r.id, r.tenant_id, appt.id, appt.code, appt.phone, start, r.attempts))
    return out


def _set(reminder_id: int, from_state: str, **values: Any) -> bool:
    with write_txn():
        return bool(ReminderCall.update(updated_at=utcnow(), **values).where(
            ReminderCall.id == reminder_id, ReminderCall.state == from_state).execute())


def claim(reminder_id: int, who: str, now: datetime | None = None) -> bool:
    """Take the reminder for dialling; True for exactly one claimant, ever per attempt."""
    now_n = naive_utc(now)
    with write_txn():
        return bool(ReminderCall.update(
            state=CALLING, claimed_by=who[:128], claimed_at=now_n, updated_at=now_n,
            attempts=ReminderCall.attempts + 1,
        ).where(ReminderCall.id == reminder_id, ReminderCall.state == DUE,
                ReminderCall.next_at <= now_n).execute())


def record_attempt(reminder_id: int, tenant: Tenant, outcome: str, *,
                   now: datetime | None = None, call_id: str | None = None,
                   cause: str = "") -> str:
    """A dial that did not reach the bot (busy, no answer, failure): retry or finish.

    With ``call_id`` the attempt also gets a call record (outcome, FreeSWITCH's cause,
    no number), so ``ivr calls list`` shows every reminder call placed, answered or
    not. Returns the new state. Only the claimant calls this (the row is ``calling``).
    """
    import json

    assert outcome in OUTCOMES, outcome
    now_n = naive_utc(now)
    policy = tenant.reminders
    with write_txn():
        row = ReminderCall.get_or_none(ReminderCall.id == reminder_id)
        if row is None or row.state != CALLING:
            return row.state if row else SKIPPED
        retry = (outcome in _RETRY and policy is not None
                 and row.attempts < policy.max_attempts)
        values: dict[str, Any] = {"outcome": outcome, "updated_at": now_n}
        if call_id:
            values["call_id"] = call_id[:64]
            usage = {"reminder": reminder_id, "attempt": row.attempts, "cause": cause[:40]}
            CallRecord.insert(
                call_id=call_id[:64], tenant_id=tenant.id, started_at=now_n, ended_at=now_n,
                caller=(policy.caller_id or None) if policy is not None else None,
                outcome=outcome, usage=json.dumps(usage)).on_conflict_ignore().execute()
        if retry:
            values.update(state=DUE, next_at=now_n + timedelta(minutes=policy.retry_minutes))
        else:
            values["state"] = DONE
        ReminderCall.update(**values).where(ReminderCall.id == reminder_id,
                                            ReminderCall.state == CALLING).execute()
        return values["state"]


def finish(reminder_id: int, outcome: str, call_id: str | None = None, *,
           retry: Any = None, now: datetime | None = None) -> bool:
    """The reminder call reached the bot and ended with ``outcome``.

    Final, as a rule: the patient may have heard the appointment. ``retry`` is the
    tenant's reminder policy when the bot said nothing at all (the caller knows: no bot
    turn); a ``reminder_failed`` (the audio fork failed, nobody can have been told
    anything) is then retried after ``retry_minutes`` like an unanswered call, while
    fewer than ``max_attempts`` calls were made. Other outcomes stay final even then:
    a machine that gave no beep would most likely give none again.
    """
    assert outcome in OUTCOMES, outcome
    now_n = naive_utc(now)
    values: dict[str, Any] = {"state": DONE, "outcome": outcome, "updated_at": now_n}
    if call_id:
        values["call_id"] = call_id[:64]
    with write_txn():
        if retry is not None and outcome in _RETRY_UNSAID:
            row = ReminderCall.get_or_none(ReminderCall.id == reminder_id)
            if row is not None and row.attempts < retry.max_attempts:
                values.update(state=DUE,
                              next_at=now_n + timedelta(minutes=retry.retry_minutes))
        return bool(ReminderCall.update(**values).where(
            ReminderCall.id == reminder_id, ReminderCall.state == CALLING).execute())


def sweep_stale(now: datetime | None = None) -> int:
    """Claims left by a process that died mid-call end as ``reminder_interrupted``.

    Never retried: the patient may have been reached.
    """
    cutoff = naive_utc(now) - STALE_CLAIM
    with write_txn():
        return ReminderCall.update(state=DONE, outcome="reminder_interrupted",
                                   updated_at=utcnow()).where(
            ReminderCall.state == CALLING, ReminderCall.claimed_at < cutoff).execute()


def list_reminders(tenant_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """Newest first: what is planned, being called and how each ended."""
    tz = None
    with database().connection_context():
        row = TenantRow.get_or_none(TenantRow.id == tenant_id)
        if row is not None:
            import json
            from zoneinfo import ZoneInfo

            tz = ZoneInfo(json.loads(row.config).get("timezone", "UTC"))
        query = (ReminderCall.select(ReminderCall, Appointment, Slot)
                 .join(Appointment).join(Slot)
                 .where(ReminderCall.tenant == tenant_id)
                 .order_by(ReminderCall.next_at.desc()).limit(limit))
        out = []
        for r in query:
            def local(dt: datetime | None) -> str:
                if dt is None:
                    return ""
                aware = dt.replace(tzinfo=UTC)
                return (aware.astimezone(tz) if tz else aware).strftime("%Y-%m-%d %H:%M")
            out.append({"id": r.id, "code": r.appointment.code,
                        "appointment": local(r.appointment.slot.start),
                        "hours_before": r.hours_before, "next": local(r.next_at),
                        "state": r.state, "attempts": r.attempts, "outcome": r.outcome or ""})
        return out


def preview(tenants: TenantSet, now: datetime | None = None) -> list[dict[str, Any]]:
    """What a round would dial now, without writing anything (``--dry-run``).

    The reminders already due and those planning would add, checked against the
    window, pauses and the do-not-call list; identified by code and time only.
    """
    now_n = naive_utc(now)
    stopped = paused()
    out: list[dict[str, Any]] = []
    for tenant in tenants:
        policy = tenant.reminders
        if policy is None or not policy.enabled:
            continue
        query = (Appointment.select(Appointment, Slot).join(Slot)
                 .where(Appointment.tenant == tenant.id, Appointment.status == "booked",
                        Slot.start > now_n + MIN_LEAD))
        with database().connection_context():
            appts = list(query)
            existing = {(r.appointment_id, r.hours_before): r for r in
                        ReminderCall.select().where(ReminderCall.tenant == tenant.id)}
        for appt in appts:
            start = appt.slot.start
            overdue = [h for h in policy.hours_before if start - timedelta(hours=h) <= now_n]
            for hours in policy.hours_before:
                row = existing.get((appt.id, hours))
                due = start - timedelta(hours=hours)
                if row is not None:
                    if row.state != DUE or row.next_at > now_n:
                        continue
                elif due > now_n or hours != min(overdue or [hours]):
                    continue
                why = ""
                if tenant.id in stopped:
                    why = "paused"
                elif not phone_key(appt.phone):
                    why = "no number"
                elif is_do_not_call(tenant.id, appt.phone):
                    why = "do not call"
                elif not _in_window(tenant, now_n):
                    why = "outside the calling window"
                local = start.replace(tzinfo=UTC).astimezone(tenant.tz)
                out.append({"tenant": tenant.id, "code": appt.code,
                            "appointment": local.strftime("%Y-%m-%d %H:%M"),
                            "hours_before": hours, "phone": "…" + phone_key(appt.phone)[-2:]
                            if appt.phone else "-",
                            "would_call": not why, "why_not": why})
    return out
