"""Slot search, atomic booking, cancel and reschedule — every query scoped by tenant.

The database guarantees the invariants: a booking claims its slot with a
conditional ``UPDATE … WHERE state = 'open'`` inside a write transaction, so
when many callers race for one slot exactly one row is changed and exactly one
caller wins, on SQLite and on Postgres alike. Reschedule claims the new slot
and releases the old one in the same transaction, so a patient never ends up
with zero or two appointments.
"""

from __future__ import annotations

import json
import re
import time as _time
import weakref
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import peewee as pw

from esl_app.config.tenants import WEEKDAYS, ConfigError, Tenant, tenants_from_data
from esl_app.db import database, write_txn
from esl_app.db.calls import insert_start
from esl_app.db.models import Appointment, Doctor, Slot, TenantRow, naive_utc, utcnow
from esl_app.notify import outbox
from esl_app.scheduling import audit
from esl_app.scheduling.codes import new_code, normalize_code
from esl_app.scheduling.errors import (
    InvalidRequest,
    NotAllowed,
    NotFound,
    SchedulingError,
    SlotTaken,
    TooLate,
)
from esl_app.scheduling.text import clean_text, is_email

__all__ = [
    "AppointmentView",
    "InvalidRequest",
    "NotAllowed",
    "NotFound",
    "PARTS_OF_DAY",
    "SchedulingError",
    "SlotTaken",
    "SlotView",
    "TooLate",
    "book",
    "hold_slot",
    "release_holds",
    "slots_needed",
    "cancel",
    "find_appointments",
    "forget_tenants",
    "get_appointment",
    "get_tenant",
    "list_appointments",
    "reschedule",
    "search_slots",
]

PARTS_OF_DAY = {
    "morning": (dtime(0, 0), dtime(12, 0)),
    "afternoon": (dtime(12, 0), dtime(17, 0)),
    "evening": (dtime(17, 0), dtime(23, 59, 59)),
}
MAX_SEARCH_DAYS = 366
_TENANT_CACHE: dict[tuple[int, str], tuple[float, datetime, Tenant]] = {}
_TENANT_TTL = 2.0


@dataclass(frozen=True)
class SlotView:
    """An open slot as callers and APIs see it (times in the clinic's zone)."""

    slot_id: str
    doctor: str
    doctor_name: str
    start: datetime
    end: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"slot_id": self.slot_id, "doctor": self.doctor,
                "start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass(frozen=True)
class AppointmentView:
    """A booking as callers and APIs see it (times in the clinic's zone)."""

    confirmation: str
    doctor: str
    doctor_name: str
    start: datetime
    end: datetime
    status: str
    patient_name: str
    phone: str | None
    email: str | None
    call_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"confirmation": self.confirmation, "doctor": self.doctor,
                "start": self.start.isoformat(), "end": self.end.isoformat(),
                "status": self.status, "patient_name": self.patient_name,
                "phone": self.phone, "email": self.email}


def _local(dt_utc: datetime, tz: ZoneInfo) -> datetime:
    return dt_utc.replace(tzinfo=UTC).astimezone(tz)


def get_tenant(tenant_id: str) -> Tenant:
    """The tenant's stored configuration (cached for a moment: searches are hot)."""
    db = database()
    key = (id(db), tenant_id)
    hit = _TENANT_CACHE.get(key)
    mono = _time.monotonic()
    if hit and mono - hit[0] < _TENANT_TTL:
        return hit[2]
    if hit:  # usually unchanged: compare the stamp before reading and parsing the config
        sql, params = _sql(db, ("tenant_stamp",),
                           lambda: TenantRow.select(TenantRow.updated_at)
                           .where(TenantRow.id == tenant_id), [tenant_id])
        with db.connection_context():
            stamps = db.execute_sql(sql, params).fetchall()
        if stamps and TenantRow.updated_at.python_value(stamps[0][0]) == hit[1]:
            _TENANT_CACHE[key] = (mono, hit[1], hit[2])
            return hit[2]
    with db.connection_context():
        row = TenantRow.get_or_none(TenantRow.id == tenant_id)
    if row is None:
        _TENANT_CACHE.pop(key, None)
        raise NotFound(f"unknown tenant '{tenant_id}'")
    if hit and hit[1] == row.updated_at:
        _TENANT_CACHE[key] = (mono, row.updated_at, hit[2])
        return hit[2]
    try:
        tenant = tenants_from_data({"tenants": [json.loads(row.config)]},
                                   source="database").tenants[0]
    except (ConfigError, ValueError) as exc:
        raise NotFound(f"tenant '{tenant_id}' has an unreadable configuration: {exc}") from None
    _TENANT_CACHE[key] = (mono, row.updated_at, tenant)
    return tenant


def forget_tenants() -> None:
    """Drop cached tenant configurations.

    After an import in this process, and when a serving worker's tenant reload sees a
    change that another process imported (else a booking could use the old settings for
    up to the cache's 2 s).
    """
    _TENANT_CACHE.clear()


def _inside_hours(tenant: Tenant, start: datetime, end: datetime) -> bool:
    ranges = tenant.hours.get(WEEKDAYS[start.weekday()], ())
    s, e = start.time(), end.time()
    if end.date() != start.date():
        return False
    return any(a <= s and e <= b for a, b in ranges)


def _slot_id(slot_id: str | int) -> int:
    try:
        value = int(str(slot_id).strip())
    except (TypeError, ValueError):
        raise NotFound("unknown slot") from None
    if value <= 0 or value > 2**62:
        raise NotFound("unknown slot")
    return value


def slots_needed(tenant: Tenant, visit_type: str | None) -> int:
    """How many consecutive slots a visit (plus the clinic's buffer) occupies."""
    minutes = tenant.slot_minutes
    if visit_type:
        vt = tenant.visit_type(visit_type)
        if vt is None:
            raise InvalidRequest(f"unknown visit type '{visit_type}'")
        minutes = vt.minutes
    minutes += tenant.policy.buffer_minutes
    return max(1, -(-minutes // tenant.slot_minutes))


def _claimable(now_utc: datetime, owner: str | None = None) -> pw.Expression:
    """Open, or held by a hold that has expired (or that ``owner`` holds)."""
    cond = (Slot.state == "open") | ((Slot.state == "held") & (Slot.hold_until < now_utc))
    if owner:
        cond = cond | ((Slot.state == "held") & (Slot.hold_owner == owner))
    return cond


def _window(tenant: Tenant, now_utc: datetime) -> tuple[datetime, datetime]:
    p = tenant.policy
    return (now_utc + timedelta(minutes=p.min_notice_minutes),
            now_utc + timedelta(days=min(p.booking_window_days, MAX_SEARCH_DAYS)))


# per database object, held weakly: a database opened later at the same address (tests
# switch between SQLite and Postgres) must never see another dialect's SQL
_COMPILED: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], str | None]] = (
    weakref.WeakKeyDictionary())


def _sql(db: pw.Database, key: tuple[Any, ...], build: Any, params: list[Any]
         ) -> tuple[str, list[Any]]:
    """SQL and parameters of a hot query, its SQL compiled once per shape.

    peewee spends ~0.6 ms turning a query into SQL, several times the time SQLite
    needs to run it, and the call engine runs these on every turn. ``build()`` gives
    the peewee query and ``params`` its parameters in placeholder order; the first
    time a shape is seen both are checked against peewee's own compilation, and a
    shape that does not match always goes through peewee.
    """
    shapes = _COMPILED.get(db)
    if shapes is None:
        shapes = _COMPILED[db] = {}
    full = (type(db).__name__, getattr(db, "param", "?"), *key)
    sql = shapes.get(full, "")
    if sql == "":
        compiled, expected = build().sql()
        sql = compiled if list(expected) == list(params) else None
        if len(shapes) > 512:  # shapes are few; a runaway key must not grow forever
            shapes.clear()
        shapes[full] = sql
        return compiled, list(expected)
    if sql is None:
        compiled, expected = build().sql()
        return compiled, list(expected)
    return sql, params


def _doctor(db: pw.Database, pk: int) -> Doctor:
    """``Doctor.get_by_id`` with its SQL compiled once."""
    sql, params = _sql(db, ("doctor",), lambda: Doctor.select().where(Doctor.id == pk), [pk])
    found = list(Doctor.raw(sql, *params))
    if not found:
        raise Doctor.DoesNotExist(f"doctor {pk}")
    return found[0]


def _followers(start: datetime, count: int, step: timedelta) -> list[datetime]:
    """Starts of the slots after ``start`` that a visit of ``count`` slots also needs."""
    return [start + step * i for i in range(1, count)]


def search_slots(
    tenant_id: str,
    *,
    doctor: str | None = None,
    date: date | None = None,  # noqa: A002 - the contract's parameter name
    date_to: date | None = None,
    part_of_day: str | None = None,
    after: datetime | None = None,
    limit: int = 3,
    visit_type: str | None = None,
    now: datetime | None = None,
) -> list[SlotView]:
    """Future bookable slots inside the clinic's hours and policy, earliest first."""
    tenant = get_tenant(tenant_id)
    tz = tenant.tz
    if not 1 <= limit <= 50:
        raise InvalidRequest("limit must be between 1 and 50")
    if part_of_day is not None and part_of_day not in PARTS_OF_DAY:
        raise InvalidRequest("part of day must be morning, afternoon or evening")
    need = slots_needed(tenant, visit_type)
    step = timedelta(minutes=tenant.slot_minutes)
    now_utc = naive_utc(now)
    lower, upper = _window(tenant, now_utc)
    if after is not None:
        lower = max(lower, naive_utc(after))
    if date is not None:
        last = date_to or date
        if last < date:
            raise InvalidRequest("the end date is before the start date")
        day_start = datetime.combine(date, dtime(0), tz).astimezone(UTC).replace(tzinfo=None)
        day_end = datetime.combine(last + timedelta(days=1), dtime(0), tz)
        lower = max(lower, day_start)
        upper = min(upper, day_end.astimezone(UTC).replace(tzinfo=None))
    elif date_to is not None:
        day_end = datetime.combine(date_to + timedelta(days=1), dtime(0), tz)
        upper = min(upper, day_end.astimezone(UTC).replace(tzinfo=None))
    if upper <= lower:
        return []
    base = (
        Slot.select(Slot.id, Slot.start, Slot.end, Slot.doctor, Doctor.slug, Doctor.name)
        .join(Doctor)
        .where(
            (Slot.tenant == tenant_id)
            & Slot.state.in_(("open", "held"))
            & _claimable(now_utc)
            & (Doctor.active == True)  # noqa: E712 - peewee expression
        )
        .order_by(Slot.start, Doctor.slug)
    )
    if doctor:
        base = base.where(Doctor.slug == doctor)
    band = PARTS_OF_DAY.get(part_of_day) if part_of_day else None
    if band:  # filtered in SQL: the local wall-clock minute is stored with each slot
        lo_min = band[0].hour * 60 + band[0].minute
        hi_min = band[1].hour * 60 + band[1].minute + (1 if band[1].second else 0)
        base = base.where((Slot.local_minute >= lo_min) & (Slot.local_minute < hi_min))
    out: list[SlotView] = []
    closed = set(tenant.policy.closed_dates)
    db = database()
    # Walk forward in growing time windows: each query sorts only a few days of
    # slots, so "the earliest" stays fast with a year of slots in the table.
    span = timedelta(days=1)
    w0 = lower
    fixed: list[Any] = [tenant_id, "open", "held", "open", "held", now_utc, True]
    if doctor:
        fixed.append(doctor)
    if band:
        fixed += [lo_min, hi_min]
    key = ("search", bool(doctor), bool(band))
    as_time = Slot.start.python_value
    with db.connection_context():
        while len(out) < limit and w0 < upper:
            w1 = min(upper, w0 + span)
            query = base.where((Slot.start >= w0) & (Slot.start < w1))
            batch, offset = max(limit * 8, 32), 0
            while len(out) < limit:
                cursor = db.execute_sql(*_sql(
                    db, key, lambda q=query, b=batch, o=offset: q.limit(b).offset(o),
                    [*fixed, w0, w1, batch, offset]))
                rows = [(sid, as_time(st), as_time(en), dpk, dslug, dname)
                        for sid, st, en, dpk, dslug, dname in cursor.fetchall()]
                offset += len(rows)
                for sid, start, end, doctor_pk, dslug, dname in rows:
                    ls = _local(start, tz)
                    if band and not (band[0] <= ls.time() < band[1]):
                        continue
                    if ls.date() in closed:
                        continue
                    le = _local(end + step * (need - 1), tz)
                    if not _inside_hours(tenant, ls, le):
                        continue
                    if need > 1:
                        starts = _followers(start, need, step)
                        free = (Slot.select(Slot.id)
                                .where((Slot.doctor == doctor_pk) & Slot.start.in_(starts)
                                       & _claimable(now_utc)).count())
                        if free != need - 1:
                            continue
                    out.append(SlotView(str(sid), dslug, dname, ls, le))
                    if len(out) >= limit:
                        break
                if len(rows) < batch:
                    break
                batch = min(batch * 4, 2000)
            w0 = w1
            span = min(span * 2, timedelta(days=32))
    return out


def _clean_patient(patient_name: str, phone: str | None, email: str | None
                   ) -> tuple[str, str | None, str | None]:
    name = clean_text(patient_name, "the patient's name", max_len=200)
    if not name:
        raise InvalidRequest("the patient's name is required (at most 200 characters)")
    if phone is not None and str(phone).strip():
        digits = re.sub(r"[^0-9+]", "", str(phone))
        if not re.fullmatch(r"\+?[0-9]{3,15}", digits):
            raise InvalidRequest("the phone number is not valid")
        phone = digits
    else:
        phone = None
    if email is not None and str(email).strip():
        email = clean_text(email, "the e-mail address", max_len=254)
        if not is_email(email):
            raise InvalidRequest("the e-mail address is not valid")
    else:
        email = None
    return name, phone, email


def _view(appt: Appointment, slot: Slot, doctor: Doctor, tz: ZoneInfo,
          end: datetime | None = None) -> AppointmentView:
    if end is None:
        ids = [int(x) for x in (appt.slot_ids or "").split(",") if x]
        end = slot.end
        if len(ids) > 1:
            last = Slot.select(pw.fn.MAX(Slot.end)).where(Slot.id.in_(ids)).scalar()
            end = last or slot.end
    return AppointmentView(
        confirmation=appt.code, doctor=doctor.slug, doctor_name=doctor.name,
        start=_local(slot.start, tz), end=_local(end, tz), status=appt.status,
        patient_name=appt.patient_name, phone=appt.phone, email=appt.email,
        call_id=appt.call_id,
    )


def _check_policy(tenant: Tenant, start_utc: datetime, now_utc: datetime) -> None:
    lower, upper = _window(tenant, now_utc)
    if start_utc <= now_utc:
        raise NotAllowed("that time has already passed")
    if start_utc < lower:
        hours = tenant.policy.min_notice_minutes / 60
        raise NotAllowed(f"appointments need at least {hours:g} hours' notice")
    if start_utc >= upper:
        raise NotAllowed(f"appointments can be booked at most "
                         f"{tenant.policy.booking_window_days} days ahead")
    if _local(start_utc, tenant.tz).date() in tenant.policy.closed_dates:
        raise NotAllowed("the clinic is closed that day")


def _claim_slots(tenant: Tenant, slot_pk: int, now_utc: datetime, *, need: int,
                 owner: str | None, state: str = "booked",
                 hold_until: datetime | None = None) -> list[Slot]:
    """Inside a write transaction: take ``need`` consecutive slots, or explain why not."""
    db = database()
    sql, params = _sql(
        db, ("claim_first",),
        lambda: Slot.select().where((Slot.id == slot_pk) & (Slot.tenant == tenant.id)).limit(1),
        [slot_pk, tenant.id, 1])
    found = list(Slot.raw(sql, *params))
    if not found:
        raise NotFound("unknown slot")
    first = found[0]
    _check_policy(tenant, first.start, now_utc)
    step = timedelta(minutes=tenant.slot_minutes)
    starts = [first.start, *_followers(first.start, need, step)]
    sql, params = _sql(
        db, ("claim_run", need),
        lambda: Slot.select().where((Slot.doctor == first.doctor_id) & Slot.start.in_(starts)
                                    ).order_by(Slot.start),
        [first.doctor_id, *starts])
    slots = list(Slot.raw(sql, *params))
    if len(slots) != need:
        raise SlotTaken("that time is not long enough for this visit")
    ids = [x.id for x in slots]
    held_by = owner if state == "held" else None
    claim_params: list[Any] = [state, hold_until, held_by, *ids, "open", "held", now_utc]
    if owner:
        claim_params += ["held", owner]
    changed = db.rows_affected(db.execute_sql(*_sql(
        db, ("claim", need, bool(owner)),
        lambda: Slot.update(state=state, hold_until=hold_until, hold_owner=held_by)
        .where(Slot.id.in_(ids) & _claimable(now_utc, owner)),
        claim_params)))
    if changed != need:
        raise SlotTaken("that time is no longer available")
    return slots


def book(
    tenant_id: str,
    slot_id: str | int,
    *,
    patient_name: str,
    phone: str | None = None,
    email: str | None = None,
    call_id: str | None = None,
    visit_type: str | None = None,
    actor: str = "system",
    now: datetime | None = None,
    notify: str | None = None,
    call_record: dict[str, Any] | None = None,
) -> AppointmentView:
    """Book one slot (or the consecutive slots a visit needs) atomically.

    Exactly one of many concurrent callers wins; a hold taken by the same call
    (``call_id``) is consumed, anyone else's live hold makes the slot taken.
    ``notify`` (none | sms | email | both) is the patient's consent to confirmations of
    this appointment's changes; they go to the phone / e-mail given, when there is one.
    ``call_record`` (:func:`esl_app.db.calls.start_row` of ``call_id``: a call this
    process runs) is inserted, unless the call has a record already, in the booking's
    transaction: the booking never points at a call with no record (issue #31).
    """
    if call_record is not None and call_record.get("call_id") != call_id:
        raise ValueError("call_record is not the record of call_id")
    tenant = get_tenant(tenant_id)
    name, phone, email = _clean_patient(patient_name, phone, email)
    consent = outbox.normalize_consent(notify)
    slot_pk = _slot_id(slot_id)
    now_utc = naive_utc(now)
    need = slots_needed(tenant, visit_type)
    with write_txn() as db:
        slots = _claim_slots(tenant, slot_pk, now_utc, need=need, owner=call_id or None)
        slot = slots[0]
        doctor = _doctor(db, slot.doctor_id)
        if call_record is not None:
            insert_start(call_record)
        for _ in range(20):
            try:
                with db.atomic():  # savepoint: a code collision must not abort the booking
                    appt = Appointment.create(
                        tenant=tenant_id, slot=slot_pk, code=new_code(), patient_name=name,
                        phone=phone, email=email, call_id=(call_id or None),
                        visit_type=visit_type, slot_ids=",".join(str(x.id) for x in slots),
                    )
                break
            except pw.IntegrityError:
                continue
        else:  # 20 collisions in a 30-bit space: only a broken generator gets here
            raise SchedulingError("could not allocate a confirmation code")
        audit.record(tenant_id, actor, "create", "appointment", appt.code,
                     slot=slot_pk, doctor=doctor.slug)
        view = _view(appt, slot, doctor, tenant.tz, slots[-1].end)
        if consent != "none":  # queued with the booking: both commit or neither
            outbox.after_change(tenant, appt.id, "booked", view, consent=consent,
                                now=now_utc)
    return view


def hold_slot(tenant_id: str, slot_id: str | int, *, owner: str, visit_type: str | None = None,
              now: datetime | None = None) -> SlotView:
    """Hold a slot for ``owner`` (a call) for the tenant's hold time while details are taken."""
    if not owner:
        raise InvalidRequest("a hold needs an owner")
    tenant = get_tenant(tenant_id)
    now_utc = naive_utc(now)
    until = now_utc + timedelta(minutes=tenant.policy.hold_minutes)
    with write_txn():
        slots = _claim_slots(tenant, _slot_id(slot_id), now_utc,
                             need=slots_needed(tenant, visit_type), owner=owner,
                             state="held", hold_until=until)
        doctor = _doctor(database(), slots[0].doctor_id)
    return SlotView(str(slots[0].id), doctor.slug, doctor.name,
                    _local(slots[0].start, tenant.tz), _local(slots[-1].end, tenant.tz))


def release_holds(owner: str) -> int:
    """Give back every slot ``owner`` still holds (the call hung up or moved on)."""
    if not owner:
        return 0
    with write_txn() as db:  # every call ends here: the SQL is compiled once
        return db.rows_affected(db.execute_sql(*_sql(
            db, ("release",),
            lambda: Slot.update(state="open", hold_until=None, hold_owner=None)
            .where((Slot.state == "held") & (Slot.hold_owner == owner)),
            ["open", None, None, "held", owner])))


def _get_appt(tenant_id: str, code: str, *, status: str | None = "booked"
              ) -> tuple[Appointment, Slot, Doctor]:
    norm = normalize_code(code)
    if norm is None:
        raise NotFound("no appointment with that confirmation code")
    query = (Appointment.select(Appointment, Slot, Doctor).join(Slot).join(Doctor)
             .where((Appointment.tenant == tenant_id) & (Appointment.code == norm)))
    if status:
        query = query.where(Appointment.status == status)
    appt = query.first()
    if appt is None:
        raise NotFound("no appointment with that confirmation code")
    return appt, appt.slot, appt.slot.doctor


def _changeable_appt(tenant_id: str, code: str, verify: str | None
                     ) -> tuple[Appointment, Slot, Doctor]:
    """The booked appointment to cancel or move.

    A cancelled one is refused as not allowed, not as unknown: the clinic can still read it,
    so "no appointment" would contradict what the operator sees. Verification comes first so
    the status is only revealed to someone who matches the booking.
    """
    appt, slot, doctor = _get_appt(tenant_id, code, status=None)
    _verify(appt, verify)
    if appt.status != "booked":
        raise NotAllowed(f"appointment {appt.code} is already {appt.status}")
    return appt, slot, doctor


def get_appointment(tenant_id: str, code: str, *, actor: str = "system") -> AppointmentView:
    """An appointment (booked or cancelled) by its confirmation code."""
    tenant = get_tenant(tenant_id)
    with database().connection_context():
        appt, slot, doctor = _get_appt(tenant_id, code, status=None)
        view = _view(appt, slot, doctor, tenant.tz)
    with write_txn():
        audit.record(tenant_id, actor, "read", "appointment", appt.code)
    return view


def _name_matches(a: str, b: str) -> bool:
    """Tolerant of spelling and transcription slips: "jon smyth" matches "John Smith"."""
    from difflib import SequenceMatcher

    def norm(s: str) -> list[str]:
        return re.sub(r"[^a-z ]", "", s.lower()).split()

    wa, wb = norm(a), norm(b)
    if not wa or not wb:
        return False
    if wa == wb or wa[-1] == wb[-1]:
        return True
    last = SequenceMatcher(None, wa[-1], wb[-1]).ratio()
    whole = SequenceMatcher(None, " ".join(wa), " ".join(wb)).ratio()
    return last >= 0.8 or whole >= 0.85


def _verify(appt: Appointment, verify: str | None) -> None:
    if verify is None or not str(verify).strip():
        return
    v = str(verify).strip()
    digits = re.sub(r"[^0-9]", "", v)
    if appt.phone and len(digits) >= 7 and re.sub(r"[^0-9]", "", appt.phone).endswith(digits[-7:]):
        return
    if _name_matches(v, appt.patient_name):
        return
    raise NotAllowed("the name or phone number does not match this appointment")


def _slot_pks(appt: Appointment) -> list[int]:
    ids = [int(x) for x in (appt.slot_ids or "").split(",") if x]
    return ids or [appt.slot_id]


def _check_change_window(tenant: Tenant, slot: Slot, now_utc: datetime) -> None:
    hours = tenant.policy.cancel_window_hours
    if hours and slot.start - now_utc < timedelta(hours=hours):
        raise TooLate(f"changes within {hours} hours of the appointment must be made with "
                      "the front desk")


def cancel(tenant_id: str, code: str, *, verify: str | None = None, actor: str = "system",
           enforce_window: bool = True, now: datetime | None = None) -> AppointmentView:
    """Cancel a booked appointment and reopen its slots, in one transaction."""
    tenant = get_tenant(tenant_id)
    now_utc = naive_utc(now)
    with write_txn():
        appt, slot, doctor = _changeable_appt(tenant_id, code, verify)
        if enforce_window:
            _check_change_window(tenant, slot, now_utc)
        view_end = _view(appt, slot, doctor, tenant.tz).end
        changed = (Appointment.update(status="cancelled", updated_at=utcnow())
                   .where((Appointment.id == appt.id) & (Appointment.status == "booked"))
                   .execute())
        if changed != 1:  # cancelled by someone else since it was read
            raise NotAllowed(f"appointment {appt.code} is already cancelled")
        if slot.start > now_utc:
            Slot.update(state="open").where(Slot.id.in_(_slot_pks(appt))
                                            & (Slot.state == "booked")).execute()
        audit.record(tenant_id, actor, "cancel", "appointment", appt.code)
        appt.status = "cancelled"
        view = _view(appt, slot, doctor, tenant.tz,
                     view_end.astimezone(UTC).replace(tzinfo=None))
        outbox.after_change(tenant, appt.id, "cancelled", view, now=now_utc)
    return view


def reschedule(tenant_id: str, code: str, new_slot_id: str | int, *,
               verify: str | None = None, actor: str = "system",
               enforce_window: bool = True, now: datetime | None = None) -> AppointmentView:
    """Move an appointment to another slot atomically; the code stays the same."""
    tenant = get_tenant(tenant_id)
    new_pk = _slot_id(new_slot_id)
    now_utc = naive_utc(now)
    with write_txn():
        appt, old_slot, _ = _changeable_appt(tenant_id, code, verify)
        if enforce_window:
            _check_change_window(tenant, old_slot, now_utc)
        if old_slot.id == new_pk:
            raise InvalidRequest("that is already the appointment's time")
        old_ids = _slot_pks(appt)
        new_slots = _claim_slots(tenant, new_pk, now_utc,
                                 need=slots_needed(tenant, appt.visit_type), owner=appt.call_id)
        changed = (Appointment.update(slot=new_pk, updated_at=utcnow(),
                                      slot_ids=",".join(str(x.id) for x in new_slots))
                   .where((Appointment.id == appt.id) & (Appointment.status == "booked")
                          & (Appointment.slot == old_slot.id))
                   .execute())
        if changed != 1:
            raise SlotTaken("the appointment changed meanwhile; please try again")
        if old_slot.start > now_utc:
            Slot.update(state="open").where(Slot.id.in_(old_ids) & (Slot.state == "booked")
                                            ).execute()
        audit.record(tenant_id, actor, "reschedule", "appointment", appt.code,
                     from_slot=old_slot.id, to_slot=new_pk)
        appt.slot = new_slots[0]
        doctor = Doctor.get_by_id(new_slots[0].doctor_id)
        view = _view(appt, new_slots[0], doctor, tenant.tz, new_slots[-1].end)
        outbox.after_change(tenant, appt.id, "rescheduled", view, now=now_utc)
    return view


def find_appointments(tenant_id: str, *, phone: str | None = None, name: str | None = None,
                      actor: str = "system", now: datetime | None = None
                      ) -> list[AppointmentView]:
    """Upcoming booked appointments of a caller, identified by phone and/or name."""
    tenant = get_tenant(tenant_id)
    if not phone and not name:
        raise InvalidRequest("a phone number or a name is needed")
    now_utc = naive_utc(now)
    query = (Appointment.select(Appointment, Slot, Doctor).join(Slot).join(Doctor)
             .where((Appointment.tenant == tenant_id) & (Appointment.status == "booked")
                    & (Slot.start > now_utc))
             .order_by(Slot.start))
    out: list[AppointmentView] = []
    digits = re.sub(r"[^0-9]", "", phone or "")
    with database().connection_context():
        for appt in query:
            if digits and len(digits) >= 7:
                if not appt.phone or not re.sub(r"[^0-9]", "", appt.phone).endswith(digits[-7:]):
                    continue
            if name and not _name_matches(name, appt.patient_name):
                continue
            out.append(_view(appt, appt.slot, appt.slot.doctor, tenant.tz))
    if out:
        with write_txn():
            for view in out:
                audit.record(tenant_id, actor, "read", "appointment", view.confirmation)
    return out


def list_appointments(tenant_id: str, *, day: date | None = None,
                      include_cancelled: bool = False, actor: str = "system"
                      ) -> list[AppointmentView]:
    """Appointments of a tenant (optionally one local day), earliest first."""
    tenant = get_tenant(tenant_id)
    query = (Appointment.select(Appointment, Slot, Doctor).join(Slot).join(Doctor)
             .where(Appointment.tenant == tenant_id).order_by(Slot.start))
    if not include_cancelled:
        query = query.where(Appointment.status == "booked")
    if day is not None:
        lo = datetime.combine(day, dtime(0), tenant.tz).astimezone(UTC).replace(tzinfo=None)
        hi = datetime.combine(day + timedelta(days=1), dtime(0), tenant.tz)
        query = query.where((Slot.start >= lo)
                            & (Slot.start < hi.astimezone(UTC).replace(tzinfo=None)))
    with database().connection_context():
        views = [_view(a, a.slot, a.slot.doctor, tenant.tz) for a in query]
    with write_txn():
        audit.record(tenant_id, actor, "list", "appointment", "",
                     day=day.isoformat() if day else None, count=len(views))
    return views
