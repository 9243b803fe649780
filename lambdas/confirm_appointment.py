"""confirmAppointment: book the chosen slot for the session's clinic."""

from __future__ import annotations

import re
from typing import Any

try:  # deployed: the modules sit side by side at the root of the package
    from .common import (
        ActionCall,
        ActionError,
        api_error_text,
        api_request,
        speak_code,
        speak_time,
    )
    from .common import run_action as _run
except ImportError:  # pragma: no cover - the Lambda runtime imports us as a top-level module
    from common import (  # type: ignore[no-redef]
        ActionCall,
        ActionError,
        api_error_text,
        api_request,
        speak_code,
        speak_time,
    )
    from common import run_action as _run  # type: ignore[no-redef]

__all__ = ["confirm", "handler"]

# esl_app.scheduling.text's e-mail check (the bundle cannot import esl_app; a test holds
# the two equal): the API would refuse anything else
_EMAIL = re.compile(r'[^@\s<>,;"]{1,64}@[^@\s<>,;"]{1,185}\.[A-Za-z]{2,}')
_PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{2,31}$")


def confirm(call: ActionCall) -> tuple[dict[str, Any], int]:
    """Check the model's parameters, book through the API, phrase the outcome."""
    p = call.params
    slot_id = p.get("slotId", "")
    name = " ".join(p.get("patientName", "").split())
    if not slot_id:
        raise ActionError("missing_slot", "Which of the times would you like?")
    if not name:
        raise ActionError("missing_name", "May I have the patient's full name, please?")
    if len(name) > 100 or len(slot_id) > 64:
        raise ActionError("invalid", "I'm sorry, I didn't get that. Could you repeat it?")
    body: dict[str, Any] = {"slot_id": slot_id, "patient_name": name}
    email = p.get("email", "").strip().lower()
    phone = p.get("phone", "").strip()
    if email:
        if not _EMAIL.fullmatch(email) or len(email) > 254:
            raise ActionError("invalid_email",
                              "That e-mail address doesn't look right. Could you spell it?")
        body["email"] = email
    if phone:
        if not _PHONE.match(phone):
            raise ActionError("invalid_phone",
                              "I didn't get the phone number. Could you say it again?")
        body["phone"] = phone
    if call.session_id:
        body["call_id"] = call.session_id[:64]
    result = api_request(call.tenant_id, "POST", "/appointments", body=body)
    if result.status == 201 and isinstance(result.data, dict):
        a = result.data
        code = str(a.get("confirmation", ""))
        when = speak_time(a["start"])
        doctor = a.get("doctor_name") or a.get("doctor") or ""
        with_doctor = f" with {doctor}" if doctor else ""
        message = (f"You're booked{with_doctor} on {when}. "
                   f"Your confirmation code is {speak_code(code)}.")
        return {"ok": True, "confirmation": code, "doctor": a.get("doctor"),
                "doctorName": doctor, "start": a["start"], "spoken": f"{when}{with_doctor}",
                "message": message}, 201
    if result.status == 409:
        raise ActionError(
            "slot_taken",
            "I'm sorry, that time was just taken. Shall I look for another time?", status=409)
    if result.status == 404:
        raise ActionError(
            "not_found",
            "I'm sorry, I can't book that time at this clinic. Let me find the open times again.",
            status=404)
    if result.status in (400, 422):
        detail = api_error_text(result)
        message = "I'm sorry, something in the booking details wasn't right."
        if detail.startswith("email"):
            message = "That e-mail address doesn't look right. Could you spell it?"
        elif detail.startswith("phone"):
            message = "I didn't get the phone number. Could you say it again?"
        elif detail.startswith("patient_name"):
            message = "May I have the patient's full name, please?"
        raise ActionError("invalid", message, status=422, extra={"detail": detail})
    raise ActionError("unavailable", "I'm sorry, I couldn't complete the booking right now.",
                      status=502, state=None)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry point for the confirmAppointment action."""
    return _run(event, context, "confirmAppointment", confirm)
