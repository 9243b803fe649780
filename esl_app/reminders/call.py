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

import gevent

from esl_app.telephony import lines
from esl_app.telephony.events import Kind, Msg

__all__ = ["FORK_START_S", "HELLO_WAIT_S", "ReminderCall", "finish_reminder", "looks_like_machine",
           "reminder_call_for", "reminder_id_of", "reminder_outcome", "start_reminder"]

log = logging.getLogger(__name__)

#: how long the bot listens for the callee's "Hello?" before it speaks first (text mode,
#: when no audio fork can be had)
HELLO_WAIT_S = 4.0
#: an accepted audio fork whose first audio has not come by then has failed (it did not
#: connect to the media server): no verdict, no voicemail
FORK_START_S = 2.0

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

    Only when no audio fork can be had (text mode: the words are all there is), and
    then only to end the call without a word: a message needs a beep, heard on a fork.
    With the fork the answering-machine detector decides from the speech's shape.
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


def finish_reminder(reminder_id: int, outcome: str | None, call_id: str, *,
                    retry: Any = None) -> None:
    """Record the call's ending on the reminder row; never raises.

    ``retry``: the tenant's reminder policy when the patient was told nothing (see
    :func:`esl_app.reminders.store.finish`).
    """
    from esl_app.reminders.store import finish

    try:
        finish(reminder_id, reminder_outcome(outcome), call_id, retry=retry)
    except Exception as exc:  # noqa: BLE001 - the call is over; the sweep catches a miss
        log.warning("reminder %d: outcome not stored (%s)", reminder_id, type(exc).__name__)


def reminder_call_for(channel: Mapping[str, str]) -> ReminderCall | None:
    """The reminder call this channel is (``ivr_reminder`` set by the originate), or None."""
    reminder_id = reminder_id_of(channel)
    return ReminderCall(reminder_id) if reminder_id is not None else None


class ReminderCall:
    """One reminder call: its agent, its opening, and the reminder row's ending."""

    #: a fork that cannot reach the media server is known at once from FreeSWITCH
    #: (``{"reason":"Unable to connect"}``), not after :data:`FORK_START_S` of silence.
    #: Not ``::connect``/``::disconnect``: the media server sees those first-hand (and
    #: our own ``stop`` raises a ``::disconnect`` too)
    events = "CUSTOM mod_audio_fork::connect_failed"

    def __init__(self, reminder_id: int) -> None:
        self.reminder_id = reminder_id
        self.tenant: Any = None

    def agent_for(self, tenant: Any) -> Any:
        """The reminder's agent; None when the reminder or its appointment is gone."""
        self.tenant = tenant
        return start_reminder(self.reminder_id, tenant)

    def finish(self, transcript: Any) -> None:
        """Record how the call ended on the reminder row.

        A failure before the bot said a word (the fork failed: the patient was told
        nothing) is retried like an unanswered call, within ``max_attempts``; once the
        bot has spoken (the conversation, a voicemail) the call is final.
        """
        said = any(t.speaker == "bot" for t in transcript.turns)
        policy = getattr(self.tenant, "reminders", None)
        finish_reminder(self.reminder_id, transcript.outcome, transcript.call_id,
                        retry=policy if not said else None)

    def opening(self, call: Any, agent: Any) -> bool:
        """Hear who answered before speaking; False when the call is over.

        A person says "Hello?" and waits (or says nothing): the conversation starts. A
        machine gets the voicemail once its beep has ended, and only then; it names the
        clinic and a call-back number and nothing personal. Who answered is decided from
        the audio fork whatever the tenant's recogniser (:class:`_Amd`); without a fork
        no message is ever left. A reminder whose appointment is gone ends at once.
        """
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
        listener = call.listener
        if hasattr(listener, "frame_tap"):  # audio mode: the call's own fork
            return _Amd(call, tenant, callback, listener).run()
        # text mode (FreeSWITCH's recogniser): a fork of its own, for the detector only
        make = getattr(call.services.audio_source_for, "tap_fork", None)
        if make is None:  # no media server in this process: no fork can be had
            return _no_fork(call, "no media server", audio=False)
        return _Amd(call, tenant, callback, make(call, tenant, call.session)).run()


def _no_fork(call: Any, why: str, *, audio: bool) -> bool:
    """No audio to decide from (the fork failed, or none can be had): never a message.

    Nobody can tell a person from a machine, or hear a beep, so no voicemail is left.
    In text mode FreeSWITCH's recogniser still hears the callee: words of a person (a
    "Hello?") start the conversation; a recorded greeting's words end the call without a
    word (``reminder_no_answer``: a machine answered and got no message, as one with no
    beep; final); nothing heard ends it too (``reminder_failed``). In audio mode the fork
    is the only ear: the call ends without a word (``reminder_failed``). A
    ``reminder_failed`` is retried after ``retry_minutes`` within ``max_attempts``
    (:meth:`ReminderCall.finish`: nothing was said).
    """
    log.warning("call %s: reminder without an audio fork (%s): no voicemail possible",
                call.label(), why)
    amd: dict[str, Any] = {"decision": "fork_failed", "reason": why[:80]}
    call.transcript.usage["amd"] = amd
    outcome = "reminder_failed"
    if not audio:
        utterance = call.listen_once(HELLO_WAIT_S)
        if utterance is not None and utterance.text:
            call.transcript.add("caller", utterance.text)
            if not looks_like_machine(utterance.text):
                amd["words"] = "person"
                return True
            amd["words"] = "machine"
            outcome = "reminder_no_answer"
        elif utterance is not None and utterance.dtmf:
            amd["words"] = "person"  # a key pressed: someone is there
            return True
    call.transcript.note_outcome(outcome)
    call.publish()
    call.hang_up()
    return False


class _Amd:
    """Person or machine from the speech's shape, and the beep, from the audio fork.

    :mod:`esl_app.media.amd` watches the fork's frames from the answer (a person says a
    short "Hello?" and stops; a machine talks on, then beeps). A machine gets the
    voicemail only once its beep has ended; one that never beeps gets nothing. The
    decision and its timing go in the call record (no words).

    ``ear`` is the call's own listener in audio mode (its fork stays on for the
    conversation), or a :class:`~esl_app.telephony.audio.TapFork` in text mode, closed
    as soon as the detector is done (before the conversation or the voicemail). A fork
    that FreeSWITCH refuses, that sends no audio within :data:`FORK_START_S`, or that
    drops before the verdict means no verdict (:func:`_no_fork`); one lost while the
    bot waits for the beep means no beep, hence no message (``reminder_no_answer``).
    """

    def __init__(self, call: Any, tenant: Any, callback: str, ear: Any) -> None:
        self.call, self.tenant, self.callback, self.ear = call, tenant, callback, ear
        self.own = ear is call.listener  # audio mode: the call's listener is the fork

    def run(self) -> bool:
        from esl_app.media.amd import AnsweringMachineDetector
        from esl_app.reminders.agent import voicemail_text

        call, tenant, ear = self.call, self.tenant, self.ear
        try:
            amd = AnsweringMachineDetector.for_tenant(tenant)  # reminders.amd tuning
        except ValueError as exc:
            log.warning("call %s: bad amd settings (%s): defaults used", call.label(), exc)
            amd = AnsweringMachineDetector(sample_rate=tenant.sample_rate)
        settings = amd.settings
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

        def no_audio() -> None:  # the fork was accepted but nothing came
            if state["t"] < 0 and state["phase"] != "done":
                call.post(Msg(Kind.AMD, key="fork_lost", value="no audio"))

        ear.frame_tap = tap
        if self.own:
            ear.arm()
            refused = getattr(ear, "fork_error", "")
        else:
            refused = "" if ear.start() else (ear.error or "refused")
        watchdog = gevent.spawn_later(FORK_START_S, no_audio)
        try:
            if refused:
                return self._without_fork(state, f"refused: {refused}")
            limit = settings.total_analysis_ms / 1000.0 + 2.0
            decision = self._await(limit, "human", "machine", "silence", "unknown")
            if decision is not None and decision.key == "fork_lost":
                return self._without_fork(state, str(decision.value))
            result = decision.value if decision is not None else None
            call.transcript.usage["amd"] = (result.as_dict() if result is not None
                                            else {"decision": "timeout"})
            if decision is None or decision.key != "machine":
                # a person (or someone silent): the conversation starts, once the
                # recogniser's final for their "Hello?" is in (it must not answer the
                # question the bot is about to ask)
                self._done(state)
                if decision is not None and decision.key == "human" and self.own:
                    self._await(0.8)  # no verdict comes now: only keeps the words heard
                return True
            beep = self._await(settings.beep_wait_ms / 1000.0, "beep")
            self._done(state)
            if beep is not None and beep.key == "fork_lost":
                call.transcript.usage["amd"]["fork_lost"] = str(beep.value)
                beep = None
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
            watchdog.kill(block=False)
            self._done(state)

    def _done(self, state: dict[str, Any]) -> None:
        """The detector is finished: untap the frames; a fork of its own is stopped."""
        state["phase"] = "done"
        self.ear.frame_tap = None
        if not self.own:
            self.ear.close()

    def _without_fork(self, state: dict[str, Any], why: str) -> bool:
        self._done(state)
        return _no_fork(self.call, why, audio=self.own)

    def _await(self, timeout: float, *keys: str) -> Msg | None:
        """The detector's next message among ``keys`` (none: wait out ``timeout``).

        A lost fork ends the wait as ``Kind.AMD`` ``fork_lost`` (``value``: why) whatever
        the keys. The caller's words meanwhile are kept in the record only (a "Hello?"
        is not an answer to anything).
        """
        call = self.call
        deadline = time.monotonic() + timeout
        while True:
            msg = call.next(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None:
                return None
            if msg.kind is Kind.AMD and (msg.key in keys or msg.key == "fork_lost"):
                return msg
            if msg.kind is Kind.FORK:
                if msg.key == "connect_failed":  # FreeSWITCH says so at once
                    return Msg(Kind.AMD, key="fork_lost",
                               value=f"connect failed: {msg.text or 'no reason'}")
                continue
            if msg.kind is Kind.MEDIA_LOST:
                if msg.key == "stt_failed":  # the recogniser, not the fork: the listen's
                    call.stash(msg)
                    continue
                return Msg(Kind.AMD, key="fork_lost", value=msg.key or "lost")
            if msg.kind is Kind.TRANSCRIPT and msg.text:
                call.transcript.add("caller", msg.text)
                call.listener.heard()
