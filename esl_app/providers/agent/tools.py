"""The agent tools as plain functions: one implementation for every agent.

The local agent calls them in process; the Bedrock agent reaches the same
behaviour through the Lambdas and the HTTP API (or RETURN_CONTROL). Each tool
is scoped to the call's tenant, returns a JSON-able dict with speakable text,
and never raises a scheduling error: refusals come back as
``{"ok": False, "error": code, "message": …}`` for the agent to explain.

Each tool that reads or writes the calendar starts by letting the event loop run
(:func:`~esl_app.support.bridge.cooperate`): the understanding before it and the
query in it are each a step of their own, so neither stacks onto the other while
the worker's other calls wait; a tool reached less than :data:`_FRESH` after its
greenlet last woke (a yield, or the call's message that began the turn) goes on
without another.
Nothing has happened yet at that point, so a call ended there books nothing.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from esl_app.config.tenants import Tenant
from esl_app.db.calls import start_row
from esl_app.scheduling import service
from esl_app.scheduling.errors import SchedulingError
from esl_app.support.bridge import SLICE_S, cooperate

#: a tool reached this soon after its greenlet last woke does not yield first
_FRESH = SLICE_S

__all__ = [
    "cancel_appointment",
    "confirm_appointment",
    "find_appointments",
    "handoff_to_human",
    "hold_slot",
    "release_holds",
    "reschedule_appointment",
    "search_slots",
    "spoken_digits",
    "spoken_time",
]

_MESSAGES = {
    "slot_taken": "Sorry, that time was just taken.",
    "not_found": "I could not find that.",
    "invalid": "Sorry, something in that request was not valid.",
}


def spoken_time(dt: datetime, *, with_day: bool = True) -> str:
    """``Tuesday, November 24 at 9 AM`` / ``at 9:30 AM`` — how times are read aloud.

    The one spoken form: ``lambdas/common.speak_time`` is its copy for the Lambda bundle
    (which cannot import ``esl_app``), held equal by tests/test_lambdas_handlers.py.
    """
    hour = dt.hour % 12 or 12
    clock = f"{hour}" if dt.minute == 0 else f"{hour}:{dt.minute:02d}"
    clock += " AM" if dt.hour < 12 else " PM"
    if dt.hour == 12 and dt.minute == 0:
        clock = "noon"
    if not with_day:
        return clock
    return f"{dt:%A}, {dt:%B} {dt.day} at {clock}"


def spoken_digits(number: str) -> str:
    """A phone number read digit by digit: ``5 5 5, 0 1 0, 2 0 0 1``.

    A North-American number (10 digits, or 11 with the leading 1 dropped) is grouped
    3-3-4 with pauses; anything else is its digits in a row.
    """
    digits = [c for c in number if c.isdigit()]
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    if len(digits) == 10:
        return f"{' '.join(digits[:3])}, {' '.join(digits[3:6])}, {' '.join(digits[6:])}"
    return " ".join(digits)


def _fail(exc: SchedulingError) -> dict[str, Any]:
    """Refusals as data; policy refusals keep their own words ("…24 hours' notice")."""
    message = _MESSAGES.get(exc.code) or f"Sorry, {str(exc).rstrip('.')}."
    return {"ok": False, "error": exc.code, "message": message, "detail": str(exc)}


def _appt(view: service.AppointmentView) -> dict[str, Any]:
    out = view.to_dict()
    out["doctor_name"] = view.doctor_name
    out["spoken"] = f"{spoken_time(view.start)} with {view.doctor_name}"
    out["ok"] = True
    return out


def search_slots(tenant: Tenant, *, doctor: str | None = None, date: date | None = None,  # noqa: A002
                 part_of_day: str | None = None, after: datetime | None = None, limit: int = 3,
                 visit_type: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Open times, at most ``limit``, each with a phrase to read aloud."""
    cooperate(_FRESH)
    try:
        views = service.search_slots(tenant.id, doctor=doctor, date=date,
                                     part_of_day=part_of_day, after=after, limit=limit,
                                     visit_type=visit_type, now=now)
    except SchedulingError as exc:
        return _fail(exc)
    slots = []
    for v in views:
        item = v.to_dict()
        item["doctor_name"] = v.doctor_name
        item["spoken"] = f"{spoken_time(v.start)} with {v.doctor_name}"
        slots.append(item)
    return {"ok": True, "slots": slots}


def confirm_appointment(tenant: Tenant, *, slot_id: str, patient_name: str,
                        email: str | None = None, phone: str | None = None,
                        call_id: str | None = None, visit_type: str | None = None,
                        actor: str | None = None, now: datetime | None = None,
                        notify: str | None = None, caller: str | None = None,
                        did: str | None = None) -> dict[str, Any]:
    """Book the slot; ``ok`` is True only once the booking has committed.

    A hold taken by the same ``call_id`` is consumed atomically; ``notify`` is the
    patient's consent to confirmations (sms | email | both). ``call_id`` is the call
    this process runs (the agent's): its record is made sure of with the booking, from
    the call's ``caller`` and ``did``, should its start write have failed.
    """
    cooperate(_FRESH)
    record = None
    if call_id:
        record = start_row(call_id, tenant_id=tenant.id, did=did, caller=caller,
                           started_at=now)
    try:
        view = service.book(tenant.id, slot_id, patient_name=patient_name, phone=phone,
                            email=email, call_id=call_id, visit_type=visit_type,
                            actor=actor or _actor(call_id), now=now, notify=notify,
                            call_record=record)
    except SchedulingError as exc:
        return _fail(exc)
    return _appt(view)


def hold_slot(tenant: Tenant, *, slot_id: str, call_id: str, visit_type: str | None = None,
              now: datetime | None = None) -> dict[str, Any]:
    """Hold the time the caller picked while their details are taken."""
    cooperate(_FRESH)
    try:
        view = service.hold_slot(tenant.id, slot_id, owner=call_id, visit_type=visit_type,
                                 now=now)
    except SchedulingError as exc:
        return _fail(exc)
    item = view.to_dict()
    item.update(ok=True, doctor_name=view.doctor_name,
                spoken=f"{spoken_time(view.start)} with {view.doctor_name}",
                hold_minutes=tenant.policy.hold_minutes)
    return item


def release_holds(call_id: str) -> dict[str, Any]:
    """Give back what a call still holds (hang-up, change of mind)."""
    return {"ok": True, "released": service.release_holds(call_id)}


def _actor(call_id: str | None) -> str:
    return f"call:{call_id}" if call_id else "agent"


def handoff_to_human(tenant: Tenant, *, reason: str | None = None) -> dict[str, Any]:
    """The signal the call engine turns into a transfer to the clinic's human line."""
    if not tenant.handoff:
        return {"ok": False, "error": "not_allowed",
                "message": "Sorry, nobody is available to take the call right now."}
    return {"ok": True, "action": "transfer", "to": tenant.handoff,
            "reason": (reason or "caller request")[:200]}


def cancel_appointment(tenant: Tenant, *, code: str, verify: str | None = None,
                       actor: str | None = None, now: datetime | None = None
                       ) -> dict[str, Any]:
    """Cancel by confirmation code (optionally checking the name or phone).

    Inside the clinic's cancellation window the answer is ``too_late``: offer a transfer.
    """
    cooperate(_FRESH)
    try:
        return _appt(service.cancel(tenant.id, code, verify=verify, actor=actor or "agent",
                                    now=now))
    except SchedulingError as exc:
        return _fail(exc)


def reschedule_appointment(tenant: Tenant, *, code: str, slot_id: str,
                           verify: str | None = None, actor: str | None = None,
                           now: datetime | None = None) -> dict[str, Any]:
    """Move an appointment to another open slot, atomically."""
    cooperate(_FRESH)
    try:
        return _appt(service.reschedule(tenant.id, code, slot_id, verify=verify,
                                        actor=actor or "agent", now=now))
    except SchedulingError as exc:
        return _fail(exc)


def find_appointments(tenant: Tenant, *, phone: str | None = None, name: str | None = None,
                      actor: str | None = None, now: datetime | None = None
                      ) -> dict[str, Any]:
    """A returning caller's upcoming appointments."""
    cooperate(_FRESH)
    try:
        views = service.find_appointments(tenant.id, phone=phone, name=name,
                                          actor=actor or "agent", now=now)
    except SchedulingError as exc:
        return _fail(exc)
    return {"ok": True, "appointments": [_appt(v) for v in views]}
