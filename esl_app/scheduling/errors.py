"""Scheduling errors, each with a stable ``code`` for APIs and agents."""

from __future__ import annotations

__all__ = ["InvalidRequest", "NotAllowed", "NotFound", "SchedulingError", "SlotTaken", "TooLate"]


class SchedulingError(Exception):
    """Base of every refusal the scheduling core gives."""

    code = "error"


class SlotTaken(SchedulingError):
    """The slot is no longer open (someone else booked it first)."""

    code = "slot_taken"


class NotFound(SchedulingError):
    """Unknown tenant, slot or code — or one that belongs to another tenant."""

    code = "not_found"


class NotAllowed(SchedulingError):
    """The request is understood but refused (verification failed, in the past)."""

    code = "not_allowed"


class InvalidRequest(SchedulingError):
    """The request is malformed (empty name, bad date, bad part of day)."""

    code = "invalid"


class TooLate(NotAllowed):
    """Inside the clinic's cancellation window: a human must handle it."""

    code = "too_late"
