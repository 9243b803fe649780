"""What the call engine needs for a reminder call.

Which reminder, machine or person, and the outcome the reminder row ends with.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["HELLO_WAIT_S", "finish_reminder", "looks_like_machine", "reminder_id_of",
           "reminder_outcome", "start_reminder"]

log = logging.getLogger(__name__)

#: how long the bot listens for the callee's "Hello?" before it speaks first
HELLO_WAIT_S = 4.0

_MACHINE_WORDS = ("leave a message", "leave your message", "after the tone", "after the beep",
                  "not available", "can't come to the phone", "cannot come to the phone",
                  "voicemail", "voice mail", "you have reached", "you've reached",
                  "mailbox", "at the tone", "record your message", "please leave")


def reminder_id_of(channel: Mapping[str, str]) -> int | None:
    """The reminder this call places (``ivr_reminder`` set by the originate), or None."""
    raw = channel.get("variable_ivr_reminder", "")
    return int(raw) if raw.isdigit() else None


def looks_like_machine(text: str) -> bool:
    """A first utterance that is a recorded greeting, not a person saying hello.

    Text mode only (the words are all there is); with the audio fork the answering-
    machine detector decides from the speech's shape and the beep instead.
    """
    t = re.sub(r"\s+", " ", text.lower().replace("’", "'"))
    return any(w in t for w in _MACHINE_WORDS) or len(t.split()) >= 14


def start_reminder(reminder_id: int, tenant: Any) -> Any:
    """The :class:`~esl_app.reminders.agent.ReminderAgent` for this call, or None.

    None when the reminder or its appointment is gone (the call then only apologises).
    """
    from esl_app.reminders.agent import ReminderAgent, load_reminder

    info = load_reminder(reminder_id, tenant)
    return ReminderAgent(info) if info is not None else None


def reminder_outcome(outcome: str | None) -> str:
    """The reminder row's outcome for how the call ended."""
    from esl_app.reminders.store import OUTCOMES

    if outcome in OUTCOMES:
        return outcome  # type: ignore[return-value]
    if outcome in ("handoff", "emergency"):
        return "reminder_handoff"
    return "reminder_incomplete"


def finish_reminder(reminder_id: int, outcome: str | None, call_id: str) -> None:
    """Record the call's ending on the reminder row; never raises."""
    from esl_app.reminders.store import finish

    try:
        finish(reminder_id, reminder_outcome(outcome), call_id)
    except Exception as exc:  # noqa: BLE001 - the call is over; the sweep catches a miss
        log.warning("reminder %d: outcome not stored (%s)", reminder_id, type(exc).__name__)
