"""Placing a reminder call: ``originate`` through FreeSWITCH's inbound Event Socket.

The patient's leg is sent straight to the bot's outbound socket
(``&socket(<bot> async full)``) with the reminder's id, the tenant and the attempt as
channel variables, so the bot knows it is a reminder call, for which clinic and which
appointment. ``api originate`` returns when the patient answers (``+OK <uuid>``) or
with the reason it failed (``-ERR USER_BUSY``, ``-ERR NO_ANSWER`` …), which the
scheduler turns into a retry or an outcome.

FreeSWITCH's address: ``FS_ESL_HOST`` / ``FS_ESL_PORT`` / ``FS_ESL_PASSWORD`` (as for
``ivrctl``), defaults 127.0.0.1:8021 / ClueCon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from esl_app.config.reminders import ReminderPolicy
from esl_app.config.settings import freeswitch_esl

__all__ = ["DialResult", "Dialer", "cause_outcome", "originate_command"]

log = logging.getLogger(__name__)

# FreeSWITCH hang-up causes of a dial that did not reach anyone → reminder outcome
_BUSY = {"USER_BUSY", "CALL_REJECTED"}
_NO_ANSWER = {"NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL", "ALLOTTED_TIMEOUT",
              "RECOVERY_ON_TIMER_EXPIRE", "PROGRESS_TIMEOUT", "MEDIA_TIMEOUT"}


def cause_outcome(cause: str) -> str:
    """The reminder outcome of a failed originate's cause."""
    cause = cause.strip().upper()
    if cause in _BUSY:
        return "reminder_busy"
    if cause in _NO_ANSWER:
        return "reminder_no_answer"
    return "reminder_failed"


@dataclass(frozen=True)
class DialResult:
    """``answered`` with the patient leg's uuid, or the outcome of a dial that failed."""

    answered: bool
    uuid: str = ""
    outcome: str = ""
    cause: str = ""


def originate_command(policy: ReminderPolicy, *, number: str, reminder_id: int,
                      tenant_id: str, attempt: int, bot: tuple[str, int]) -> str:
    """The ``originate`` arguments for one reminder.

    The patient's number is only in the endpoint; the variables carry ids, nothing
    personal.
    """
    variables = {
        "ivr_reminder": str(reminder_id),
        "ivr_tenant": tenant_id,
        "ivr_attempt": str(attempt),
        "originate_timeout": str(policy.ring_seconds),
        "ignore_early_media": "true",
        "hangup_after_bridge": "true",
    }
    if policy.caller_id:
        variables["origination_caller_id_number"] = policy.caller_id
    spec = ",".join(f"{k}={v}" for k, v in variables.items())
    # quoted: FreeSWITCH splits originate's arguments on spaces, and an unquoted
    # '&socket(h:p async full)' reaches the socket application as 'h:p' alone (not full)
    return (f"{{{spec}}}{policy.dial_string(number)} "
            f"'&socket({bot[0]}:{bot[1]} async full)'")


class Dialer:
    """One inbound ESL connection to FreeSWITCH per dial (dials are minutes apart)."""

    def __init__(self, bot: tuple[str, int], *, host: str | None = None,
                 port: int | None = None, password: str | None = None,
                 timeout: float = 5.0) -> None:
        self.bot = bot
        self.host, self.port, self.password = freeswitch_esl(host, port or None, password)
        self.timeout = timeout

    def dial(self, policy: ReminderPolicy, *, number: str, reminder_id: int,
             tenant_id: str, attempt: int) -> DialResult:
        """Place the call and wait until it is answered or has failed; never raises."""
        import gevent
        from greenswitch.esl import InboundESL

        command = originate_command(policy, number=number, reminder_id=reminder_id,
                                    tenant_id=tenant_id, attempt=attempt, bot=self.bot)
        esl: Any = InboundESL(self.host, self.port, self.password, timeout=self.timeout)
        try:
            with gevent.Timeout(self.timeout):
                esl.connect()
            with gevent.Timeout(policy.ring_seconds + 15):
                reply = esl.send(f"api originate {command}")
            text = str(getattr(reply, "data", "") or "").strip()
        except (gevent.Timeout, OSError, ValueError, RuntimeError) as exc:
            log.warning("reminder %d: FreeSWITCH at %s:%d did not take the originate (%s)",
                        reminder_id, self.host, self.port, type(exc).__name__)
            return DialResult(False, outcome="reminder_failed", cause="ESL_UNAVAILABLE")
        finally:
            try:
                esl.stop()
            except Exception:  # noqa: BLE001 - closing a broken connection
                log.debug("inbound ESL close failed", exc_info=True)
        if text.startswith("+OK"):
            return DialResult(True, uuid=text[3:].strip())
        cause = text.removeprefix("-ERR").strip().split()[0] if text else "UNKNOWN"
        return DialResult(False, outcome=cause_outcome(cause), cause=cause)
