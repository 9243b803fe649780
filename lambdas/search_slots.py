"""searchSlots: open appointment times of the session's clinic, phrased for speech."""

from __future__ import annotations

from datetime import date
from typing import Any

try:  # deployed: the modules sit side by side at the root of the package
    from .common import (
        ActionCall,
        ActionError,
        api_error_text,
        api_request,
        join_spoken,
        run_action,
        speak_date,
        speak_time,
    )
except ImportError:  # pragma: no cover - the Lambda runtime imports us as a top-level module
    from common import (  # type: ignore[no-redef]
        ActionCall,
        ActionError,
        api_error_text,
        api_request,
        join_spoken,
        run_action,
        speak_date,
        speak_time,
    )

__all__ = ["handler", "search"]

PARTS = ("morning", "afternoon", "evening")
LIMIT = 3


def _doctor_names(call: ActionCall) -> list[str]:
    try:
        info = api_request(call.tenant_id, "GET", "", retry=True)
    except ActionError:
        return []
    doctors = info.data.get("doctors") if isinstance(info.data, dict) else None
    return [d["name"] for d in doctors or [] if isinstance(d, dict) and d.get("name")]


def search(call: ActionCall) -> tuple[dict[str, Any], int]:
    """Validate the model's parameters, ask the API, phrase the slots."""
    p = call.params
    doctor = p.get("doctor") or None
    part = (p.get("partOfDay") or "").lower() or None
    day: date | None = None
    if p.get("date"):
        try:
            day = date.fromisoformat(p["date"][:10])
        except ValueError:
            raise ActionError(
                "invalid_date",
                "I didn't understand that date. Which day would you like?") from None
    if part is not None and part not in PARTS:
        raise ActionError(
            "invalid_part_of_day",
            "Would you prefer the morning, the afternoon or the evening?")
    result = api_request(
        call.tenant_id, "GET", "/slots", retry=True,
        query={"doctor": doctor, "date": day.isoformat() if day else None, "part": part,
               "limit": LIMIT})
    if result.status == 404 and doctor:
        names = _doctor_names(call)
        hint = f" Our doctors are {join_spoken(names)}." if names else ""
        raise ActionError("unknown_doctor",
                          f"I couldn't find that doctor at this clinic.{hint}", status=404)
    if result.status == 422:
        raise ActionError("invalid", "I didn't quite get that. Which day and time suit you?",
                          status=422, extra={"detail": api_error_text(result)})
    if result.status != 200 or not isinstance(result.data, list):
        raise ActionError("unavailable", "I'm sorry, I can't search the calendar right now.",
                          status=502, state=None)
    slots = []
    for s in result.data:
        if not isinstance(s, dict) or not isinstance(s.get("start"), str):
            continue
        name = s.get("doctor_name") or s.get("doctor") or ""
        when = speak_time(s["start"])
        slots.append({
            "slotId": s.get("slot_id"), "doctor": s.get("doctor"), "doctorName": name,
            "start": s["start"], "spoken": f"{when} with {name}" if name else when,
        })
    if not slots:
        where = f" on {speak_date(day)}" if day else ""
        when = f" in the {part}" if part else ""
        message = (f"I'm sorry, there are no open appointments{where}{when}. "
                   "Would another day or time work for you?")
        return {"ok": True, "slots": [], "message": message}, 200
    listing = join_spoken([s["spoken"] for s in slots])
    plural = "time" if len(slots) == 1 else "times"
    message = f"The next open {plural}: {listing}. Which would you like?"
    return {"ok": True, "slots": slots, "message": message}, 200


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry point for the searchSlots action."""
    return run_action(event, context, "searchSlots", search)
