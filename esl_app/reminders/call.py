"""A reminder call, as the call engine sees it: an :class:`~esl_app.telephony.call.OutboundCall`.

Which reminder the channel is for, its agent, its opening (person or machine: a
message after the beep), and the outcome the reminder row ends with.
:func:`reminder_call_for` is what ``runtime/wiring.py`` plugs into the call engine.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from esl_app.telephony import lines
from esl_app.telephony.events import Kind, Msg

__all__ = ["HELLO_WAIT_S", "ReminderCall", "finish_reminder", "looks_like_machine",
           "reminder_call_for", "reminder_id_of", "reminder_outcome", "start_reminder"]

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


def reminder_call_for(channel: Mapping[str, str]) -> ReminderCall | None:
    """The reminder call this channel is (``ivr_reminder`` set by the originate), or None."""
    reminder_id = reminder_id_of(channel)
    return ReminderCall(reminder_id) if reminder_id is not None else None


class ReminderCall:
    """One reminder call: its agent, its opening, and the reminder row's ending."""

    def __init__(self, reminder_id: int) -> None:
        self.reminder_id = reminder_id

    def agent_for(self, tenant: Any) -> Any:
        """The reminder's agent; None when the reminder or its appointment is gone."""
        return start_reminder(self.reminder_id, tenant)

    def finish(self, transcript: Any) -> None:
        """Record how the call ended on the reminder row."""
        finish_reminder(self.reminder_id, transcript.outcome, transcript.call_id)

    def opening(self, call: Any, agent: Any) -> bool:
        """Hear who answered before speaking; False when the call is over.

        A person says "Hello?" and waits (or says nothing): the conversation starts. A
        recorded greeting gets the voicemail, which names the clinic and a call-back
        number and nothing personal. A reminder whose appointment is gone ends at once.
        """
        from esl_app.reminders.agent import voicemail_text

        tenant = call.tenant
        policy = tenant.reminders
        callback = (policy.caller_id if policy and policy.caller_id else
                    (tenant.dids[0] if tenant.dids else ""))
        if agent is None:
            call.transcript.note_outcome("reminder_incomplete")
            call.say(lines.NOT_NEEDED.format(clinic=tenant.name), barge_in=False)
            call.publish()
            call.hang_up()
            return False
        if hasattr(call.listener, "frame_tap"):  # audio: decide from the sound itself
            return _Amd(call, tenant, callback).run()
        utterance = call.listen_once(HELLO_WAIT_S)
        if utterance is not None and utterance.text:
            call.transcript.add("caller", utterance.text)
            if looks_like_machine(utterance.text):
                call.transcript.note_outcome("reminder_voicemail")
                call.say(voicemail_text(tenant, callback), barge_in=False)
                call.publish()
                call.hang_up()
                return False
        return True


class _Amd:
    """Audio mode: person or machine from the speech's shape, and the beep.

    :mod:`esl_app.media.amd` watches the fork's frames from the answer (a person says a
    short "Hello?" and stops; a machine talks on, then beeps). A machine gets the
    voicemail only once its beep has ended; one that never beeps gets nothing. The
    decision and its timing go in the call record (no words).
    """

    def __init__(self, call: Any, tenant: Any, callback: str) -> None:
        self.call, self.tenant, self.callback = call, tenant, callback

    def run(self) -> bool:
        from esl_app.media.amd import AnsweringMachineDetector
        from esl_app.reminders.agent import voicemail_text

        call, tenant = self.call, self.tenant
        try:
            amd = AnsweringMachineDetector.for_tenant(tenant)  # reminders.amd tuning
        except ValueError as exc:
            log.warning("call %s: bad amd settings (%s): defaults used", call.label(), exc)
            amd = AnsweringMachineDetector(sample_rate=tenant.sample_rate)
        settings = amd.settings
        listener: Any = call.listener
        answered = time.monotonic()
        frame = tenant.sample_rate // 50 * 2
        state: dict[str, Any] = {"phase": "amd", "buf": bytearray(), "t": -1.0}

        def tap(pcm: bytes) -> None:
            buf = state["buf"]
            buf.extend(pcm)
            if state["t"] < 0:  # the fork starts a little after the answer
                state["t"] = max(0.0, time.monotonic() - answered - len(pcm) / (frame * 50))
            while len(buf) >= frame and state["phase"] != "done":
                chunk = bytes(buf[:frame])
                del buf[:frame]
                state["t"] += 0.02
                if state["phase"] == "amd":
                    res = amd.feed(chunk, state["t"])
                    if res is not None:
                        beeped = res.decision == "machine" and res.beep_end is not None
                        state["phase"] = ("beep" if res.decision == "machine" and not beeped
                                          else "done")
                        call.post(Msg(Kind.AMD, key=res.decision, value=res))
                        if beeped:
                            call.post(Msg(Kind.AMD, key="beep", value=res.beep_end))
                elif amd.beep.feed(chunk):
                    state["phase"] = "done"
                    ended = state["t"] - amd.beep.since_end_ms / 1000.0
                    call.post(Msg(Kind.AMD, key="beep", value=ended))

        listener.frame_tap = tap
        listener.arm()
        limit = settings.total_analysis_ms / 1000.0 + 2.0
        decision = None
        try:
            decision = self._await(limit, "human", "machine", "silence", "unknown")
            result = decision.value if decision is not None else None
            call.transcript.usage["amd"] = (result.as_dict() if result is not None
                                            else {"decision": "timeout"})
            if decision is None or decision.key != "machine":
                # a person (or someone silent): the conversation starts, once the
                # recogniser's final for their "Hello?" is in (it must not answer the
                # question the bot is about to ask)
                if decision is not None and decision.key == "human":
                    self._await(0.8)  # no verdict comes now: only keeps the words heard
                return True
            beep = self._await(settings.beep_wait_ms / 1000.0, "beep")
            if beep is not None and isinstance(beep.value, float):  # since the answer
                call.transcript.usage["amd"]["beep_at"] = round(beep.value, 2)
            if beep is None:
                call.transcript.note_outcome("reminder_no_answer")  # no beep: no message
                call.publish()
                call.hang_up()
                return False
            call.transcript.note_outcome("reminder_voicemail")
            call.say(voicemail_text(tenant, self.callback), barge_in=False)
            call.publish()
            call.hang_up()
            return False
        finally:
            if decision is None or decision.key != "machine":
                listener.frame_tap = None
                state["phase"] = "done"

    def _await(self, timeout: float, *keys: str) -> Msg | None:
        """The detector's next message among ``keys`` (none: wait out ``timeout``).

        The caller's words meanwhile are kept in the record only (a "Hello?" is not an
        answer to anything).
        """
        call = self.call
        deadline = time.monotonic() + timeout
        while True:
            msg = call.next(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None:
                return None
            if msg.kind is Kind.AMD and msg.key in keys:
                return msg
            if msg.kind is Kind.TRANSCRIPT and msg.text:
                call.transcript.add("caller", msg.text)
                call.listener.heard()
