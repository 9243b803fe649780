"""Confirmation texts: a tenant's templates (or the defaults) filled for one appointment.

Placeholders: ``{code}`` the confirmation code (``K7M-4Q2``, made to be read out),
``{time}`` the appointment's time in the clinic's zone (``Tuesday, November 24, 2026 at
9:30 AM EST``), ``{doctor}``, ``{clinic}`` and ``{address}`` (the clinic's, may be empty).
The same text goes by SMS and as the e-mail's body; the e-mail's subject is fixed per event.
"""

from __future__ import annotations

from datetime import datetime

from esl_app.config.notifications import NotificationConfig
from esl_app.config.tenants import Tenant

__all__ = ["DEFAULT_TEMPLATES", "SUBJECTS", "format_time", "render"]

DEFAULT_TEMPLATES = {
    "booked": "{clinic}: your appointment with {doctor} is booked for {time}. "
              "Confirmation code: {code}.",
    "cancelled": "{clinic}: your appointment with {doctor} on {time} is cancelled. "
                 "Confirmation code: {code}.",
    "rescheduled": "{clinic}: your appointment with {doctor} has moved to {time}. "
                   "Confirmation code: {code}.",
}
# the defaults say where to come, when the clinic has an address (not for a cancellation)
_ADDRESS_LINE = " Address: {address}."
SUBJECTS = {
    "booked": "{clinic}: appointment confirmed",
    "cancelled": "{clinic}: appointment cancelled",
    "rescheduled": "{clinic}: appointment moved",
}


def format_time(start: datetime) -> str:
    """``Tuesday, November 24, 2026 at 9:30 AM EST`` (``start`` aware, in the clinic's zone)."""
    hour = start.hour % 12 or 12
    clock = f"{hour}" if start.minute == 0 else f"{hour}:{start.minute:02d}"
    clock += " AM" if start.hour < 12 else " PM"
    zone = start.tzname() or ""
    return f"{start:%A}, {start:%B} {start.day}, {start.year} at {clock}" + (
        f" {zone}" if zone else "")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def render(tenant: Tenant, event: str, *, code: str, doctor: str, start: datetime
           ) -> tuple[str, str]:
    """``(subject, body)`` of the ``event`` message for one appointment."""
    config: NotificationConfig = getattr(tenant, "notifications", None) or NotificationConfig()
    values = {"code": code, "time": format_time(start), "doctor": _one_line(doctor),
              "clinic": _one_line(tenant.name), "address": _one_line(tenant.address)}
    template = config.templates.get(event)
    if template is None:
        template = DEFAULT_TEMPLATES[event]
        if values["address"] and event != "cancelled":
            template += _ADDRESS_LINE
    # templates are validated at load (bare known names only); values are never re-parsed
    body = template.format(**values)
    return _one_line(SUBJECTS[event].format(**values)), body.strip()
