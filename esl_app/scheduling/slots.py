"""Slot generation from clinic hours: idempotent and correct across DST changes.

Slots are laid out in the clinic's local wall-clock time (08:00, 08:30, …)
and converted to UTC one by one, so a DST switch never shifts the clinic's
day. A local time that does not exist (spring forward) is skipped; an
ambiguous one (fall back) takes its first occurrence. Existing slots are left
alone (unique index on doctor + start), so running it twice creates nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from esl_app.config.tenants import WEEKDAYS
from esl_app.db import database, write_txn
from esl_app.db.models import Doctor, Slot, utcnow
from esl_app.scheduling.service import get_tenant

__all__ = ["generate_slots"]


def _exists(local: datetime) -> bool:
    """False for wall-clock times skipped by a spring-forward change."""
    round_trip = local.astimezone(UTC).astimezone(local.tzinfo)
    return round_trip.replace(tzinfo=None) == local.replace(tzinfo=None)


def generate_slots(tenant_id: str, days: int, *, now: datetime | None = None) -> int:
    """Create the missing future slots for ``days`` days from today; returns how many."""
    if days < 1 or days > 800:
        raise ValueError("days must be between 1 and 800")
    tenant = get_tenant(tenant_id)
    tz = tenant.tz
    now_local = (now or datetime.now(UTC)).astimezone(tz)
    now_utc = now_local.astimezone(UTC).replace(tzinfo=None)
    step = timedelta(minutes=tenant.slot_minutes)
    with database().connection_context():
        doctors = list(Doctor.select().where((Doctor.tenant == tenant_id)
                                             & (Doctor.active == True)))  # noqa: E712
    rows: list[dict] = []
    for offset in range(days):
        day = now_local.date() + timedelta(days=offset)
        for start_t, end_t in tenant.hours.get(WEEKDAYS[day.weekday()], ()):
            t = datetime.combine(day, start_t)
            end_wall = datetime.combine(day, end_t)
            while t + step <= end_wall:
                local = t.replace(tzinfo=tz, fold=0)
                t += step
                if not _exists(local):
                    continue
                start_utc = local.astimezone(UTC).replace(tzinfo=None)
                if start_utc <= now_utc:
                    continue
                end_utc = (local.replace(tzinfo=None) + step).replace(tzinfo=tz, fold=0)
                end_utc = end_utc.astimezone(UTC).replace(tzinfo=None)
                for doc in doctors:
                    rows.append({"tenant": tenant_id, "doctor": doc.id, "start": start_utc,
                                 "end": end_utc, "state": "open",
                                 "local_minute": local.hour * 60 + local.minute})
    created = 0
    for i in range(0, len(rows), 1000):
        chunk = rows[i:i + 1000]
        with write_txn():
            created += Slot.insert_many(chunk).on_conflict_ignore().as_rowcount().execute()
    return created


def purge_past_open_slots(tenant_id: str, *, before: datetime | None = None) -> int:
    """Delete open slots that have passed (booked ones stay for the record)."""
    cutoff = before or utcnow()
    with write_txn():
        return Slot.delete().where((Slot.tenant == tenant_id) & (Slot.state == "open")
                                   & (Slot.start < cutoff)).execute()
