"""Cancellable media verbs: speak, listen, bridge.

Each verb runs inside the call's controller greenlet (``run()``) and reads the
call's queue through :meth:`CallControl.next`; ``cancel()`` stops it at once
(barge-in, hang-up). Completions are matched by the ``Application-UUID`` we
sent as ``Event-UUID``, never by application name, so a late completion of an
earlier playback can never end the current one.
"""

from __future__ import annotations

import logging
import re
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import gevent
import gevent.event

from esl_app.http import metrics
from esl_app.providers.agent.base import Utterance
from esl_app.providers.markup import to_plain
from esl_app.providers.tts.base import PlayInstruction, TtsProvider
from esl_app.telephony.esl import EslError, EslSession
from esl_app.telephony.events import Kind, Msg

__all__ = [
    "Bridge",
    "BridgeResult",
    "CallControl",
    "Listen",
    "ListenSource",
    "Speak",
    "SpeakResult",
    "TextListenSource",
]

log = logging.getLogger(__name__)

BREAK_COMPLETE_S = 2.0  # how long a broken playback gets to report its end
BREAK_FLUSH_GRACE_S = 0.3  # ... and to show it had started at all (else it was dropped)
PLAY_STALL_SECONDS = 120.0  # a playback whose completion never comes is a dead channel
MAX_UTTERANCE_S = 30.0  # one caller turn longer than this is ended and finalised (Listen)
SPEECH_RECHECK_S = 0.5  # while the caller talks, how often a listen looks at the VAD again
_HANDED_OVER = ("agent", "agent_text", "signal", "timer")  # the owner's messages (on_other)


class CallControl(Protocol):
    """What verbs need from the controller that owns the call."""

    session: EslSession

    def next(self, timeout: float | None = None) -> Msg | None:
        """The next message, ``None`` on timeout; raises when the call is gone."""
        ...

    def stash(self, msg: Msg) -> None:
        """Keep a message for the verb that will want it (e.g. speech for the listener)."""
        ...

    def spawn(self, fn, *args) -> gevent.Greenlet:
        """A helper greenlet owned by the call (killed when the call ends)."""
        ...

    def post(self, msg: Msg) -> None:
        """Put a message on the call's queue (from helper greenlets)."""
        ...


@dataclass
class SpeakResult:
    """What the caller actually heard."""

    heard: list[str] = field(default_factory=list)
    barged_in: bool = False
    barge_msg: Msg | None = None

    @property
    def text(self) -> str:
        return " ".join(self.heard)


class Speak:
    """Say some sentences: synthesis runs ahead while the previous sentence plays.

    Open-ended (``open_ended=True``): more sentences may be :meth:`add`-ed while it
    runs (an agent reply still being generated) and it ends only after
    :meth:`finish`, once everything added has played. Messages it does not handle
    itself (agent pieces and replies, signals, timers) go to ``on_other``, which
    runs on the controller's greenlet and may call :meth:`add`/:meth:`finish`.

    With ``interruptible=False`` the caller's speech and keys do not cut it until
    :meth:`allow_barge_in` (the controller calls it once the answer itself starts
    playing, not an acknowledgement): a cough before the answer would otherwise
    leave the caller hearing nothing of it. Their words are kept for the next listen.
    """

    def __init__(self, call: CallControl, sentences: list[str], tts: TtsProvider, *,
                 voice: str, sample_rate: int, language: str, barge_in: bool = True,
                 before_play=None, on_first_audio=None, open_ended: bool = False,
                 on_other: Callable[[Msg], None] | None = None,
                 on_play: Callable[[int, PlayInstruction], None] | None = None,
                 interruptible: bool = True) -> None:
        self.call = call
        self.before_play = before_play
        self.on_first_audio = on_first_audio
        self.on_other = on_other
        self.on_play = on_play
        self.sentences = [s for s in sentences if s.strip()]
        self.tts = tts
        self.voice = voice
        self.sample_rate = sample_rate
        self.language = language
        self.barge_in = barge_in
        self.interruptible = interruptible
        self.id = uuidlib.uuid4().hex
        self._synth: gevent.Greenlet | None = None
        self._playing: str | None = None
        self._more = gevent.event.Event()
        self._ready: dict[int, PlayInstruction | Exception] = {}
        self._looked = 0  # sentences before this index were offered to ``tts.instant``
        self._taken: set[int] = set()  # indexes made here, not by the synthesis greenlet
        self._running = False
        self.closed = not open_ended
        self.started = False  # the first audio went out
        self._next = 0  # index of the next sentence to play
        self.cancelled = False
        self.result = SpeakResult()

    def add(self, sentences: list[str]) -> None:
        """Queue more sentences (open-ended only); synthesis starts at once."""
        if self.closed:
            raise RuntimeError("Speak.add after finish")
        self.sentences.extend(s for s in sentences if s.strip())
        if self._running:
            self._take_instant()

    def allow_barge_in(self) -> None:
        """From now on the caller's speech (with ``barge_in``) and keys cut the prompt."""
        self.interruptible = True

    def finish(self) -> None:
        """No more sentences will come: end once the queued ones have played."""
        self.closed = True
        self._more.set()

    @property
    def pending(self) -> int:
        """Sentences queued but not yet started."""
        return len(self.sentences) - self._next

    @property
    def busy(self) -> bool:
        """Something is playing or queued to play."""
        return self._playing is not None or self.pending > 0

    def _take_instant(self) -> None:
        """Make here what needs no wait (``tts.instant``); wake the synthesis for the rest.

        Why: a cached sentence handed to the synthesis greenlet and back costs two loop
        iterations, milliseconds each on a busy worker, before the caller hears it.
        """
        instant = getattr(self.tts, "instant", None)
        missed = False
        while self._looked < len(self.sentences):
            index = self._looked
            self._looked += 1
            item: PlayInstruction | None = None
            if instant is not None:
                try:
                    item = instant(self.sentences[index], voice=self.voice,
                                   sample_rate=self.sample_rate, language=self.language)
                except Exception as exc:  # synthesize decides: it retries or reports it
                    log.debug("tts.instant failed (%s): synthesising", type(exc).__name__)
            if item is None:
                missed = True
                continue
            self._taken.add(index)
            self._ready[index] = item
        if missed and self._synth is None:
            self._synth = self.call.spawn(self._synthesize_all)
        elif missed or self.closed:
            self._more.set()

    def _synthesize_all(self) -> None:
        index = 0
        while True:
            if index >= len(self.sentences):
                if self.closed:
                    return
                self._more.wait()
                self._more.clear()
                continue
            if index in self._taken:
                index += 1
                continue
            sentence = self.sentences[index]
            try:
                value: PlayInstruction | Exception = self.tts.synthesize(
                    sentence, voice=self.voice, sample_rate=self.sample_rate,
                    language=self.language)
            except Exception as exc:  # a provider failure skips one sentence, not the call
                value = exc
            self.call.post(Msg(Kind.TTS, key=f"{self.id}:{index}", value=value))
            index += 1

    def run(self) -> SpeakResult:
        """Play every sentence; ``self.result`` stays valid if the call ends meanwhile."""
        try:
            return self._play()
        finally:
            self._release()

    def _release(self) -> None:
        """Drop what ties the verb to itself once it has run.

        The hooks are the owner's closures over this verb and the synthesis greenlet
        runs a bound method of it: left in place, every turn's Speak is a reference
        cycle that only the cyclic GC frees, and its pauses stop the whole hub (the
        latency tails at 1000 calls). Released, reference counting frees it at once.
        """
        synth, self._synth = self._synth, None
        if synth is not None and not synth.dead:
            synth.kill(block=False)  # ended by a hang-up or an error: nothing will play it
        self.before_play = self.on_first_audio = self.on_other = self.on_play = None

    def _play(self) -> SpeakResult:
        result = self.result
        self._next = 0
        if not self.sentences and self.closed:
            return result
        self._running = True
        self._take_instant()
        ready = self._ready
        while True:
            if self._playing is None:
                while self._next in ready:
                    index = self._next
                    item = ready.pop(index)
                    self._next += 1
                    if isinstance(item, Exception):
                        log.warning("tts failed for a sentence: %s", item)
                        _count_tts_error(getattr(self.tts, "name", "?"))
                        continue
                    if self.before_play is not None:
                        hook, self.before_play = self.before_play, None
                        hook()  # arm the recogniser just before the first audio (barge-in)
                    if not self.started and (mark := getattr(self.call, "reply_playing",
                                                             None)) is not None:
                        mark()  # the turn's response time ends as its first command goes out
                    self._playing = self.call.session.execute(item.app, item.arg)
                    self.started = True
                    note = getattr(self.call, "note_tts", None)
                    if note is not None:
                        note(item)
                    if self.on_first_audio is not None:
                        first, self.on_first_audio = self.on_first_audio, None
                        first()
                    if self.on_play is not None:
                        self.on_play(index, item)
                    result.heard.append(to_plain(item.text or self.sentences[index]))
                    break
                if self._playing is None and self._next >= len(self.sentences) and self.closed:
                    return result
            msg = self.call.next(timeout=PLAY_STALL_SECONDS)
            if msg is None:
                raise EslError("playback never completed")
            if msg.kind is Kind.TTS and msg.key.startswith(self.id + ":"):
                ready[int(msg.key.rsplit(":", 1)[1])] = msg.value
            elif msg.kind is Kind.COMPLETE and msg.key == self._playing:
                self._playing = None
            elif msg.kind in _HANDED_OVER:
                self._hand_over(msg)
            elif msg.kind is Kind.MEDIA_LOST:
                self.call.stash(msg)  # the listen after this prompt hands the call over
            elif msg.kind is Kind.TRANSCRIPT and not (msg.text or "").strip():
                continue  # an empty result (a click, a cough) is not the caller talking
            elif msg.kind in (Kind.SPEECH_START, Kind.DTMF, Kind.TRANSCRIPT):
                if msg.kind is not Kind.SPEECH_START or self.barge_in:
                    # the listen after this prompt wants the words, and to know the caller
                    # began talking over it (text mode cannot ask the recogniser later)
                    self.call.stash(msg)
                if not self.interruptible:
                    continue  # the answer has not started: the words wait for the next listen
                if self.barge_in or msg.kind is Kind.DTMF:
                    result.barged_in = (self._playing is not None
                                        or self._next < len(self.sentences)
                                        or not self.closed)
                    result.barge_msg = msg
                    self.cancel(heard_at=msg.at if msg.kind is Kind.SPEECH_START else 0.0)
                    return result
            # anything else (completions of older verbs, unrelated events) is dropped

    def _hand_over(self, msg: Msg) -> None:
        """A message for the owner: the reply still being written, a filler, a timer."""
        if self.on_other is not None:
            self.on_other(msg)
        elif msg.kind in (Kind.AGENT, Kind.SIGNAL):
            self.call.stash(msg)  # an agent answer arriving while a filler plays

    def cancel(self, heard_at: float = 0.0) -> None:
        """Stop playing now (``uuid_break all``) and drop the pending synthesis.

        A cancelled Speak takes no more sentences (``closed``); what arrives while
        the broken playback reports its end still reaches its owner. ``heard_at``:
        when our VAD detected the caller's speech (the barge-in reaction metric).
        """
        if self.cancelled:
            return
        self.cancelled = True
        self.closed = True
        if self._synth is not None and not self._synth.dead:
            self._synth.kill(block=False)
        if self._playing is not None:
            playing, self._playing = self._playing, None
            if heard_at:
                _observe_barge_in(time.monotonic() - heard_at)
            try:
                self.call.session.uuid_break()
            except EslError:
                return
            self._await_completion(playing)

    def _await_completion(self, app_uuid: str) -> None:
        """Let the broken playback report its end so the channel is quiet (bounded).

        A playback still queued when ``uuid_break … all`` arrived is dropped by
        FreeSWITCH (``switch_core_session_flush_private_events``): it never starts and
        never completes. So unless its ``CHANNEL_EXECUTE`` has been seen, or arrives
        within ``BREAK_FLUSH_GRACE_S`` of the break's reply (which FreeSWITCH sends
        after acting on it), the wait ends then, not after two seconds of the
        caller waiting for an answer.

        Nothing that matters is dropped meanwhile: the caller's words and a lost
        audio stream are kept for the next listen; the agent's reply, its pieces,
        fillers and timers go to ``on_other`` (or are stashed) as during playback.
        """
        now = time.monotonic()
        limit = now + BREAK_COMPLETE_S
        tracked = hasattr(self.call, "app_started")  # a call that does not track: wait
        grace = now + BREAK_FLUSH_GRACE_S
        while True:
            started = not tracked or self.call.app_started == app_uuid
            left = (limit if started else min(limit, grace)) - time.monotonic()
            msg = self.call.next(timeout=max(0.0, left))
            if msg is None:
                if not started and self.call.app_started == app_uuid:
                    continue  # it had started after all: wait for its end
                if not started:
                    log.debug("broken playback %s had not started: dropped", app_uuid)
                return
            if msg.kind is Kind.COMPLETE and msg.key == app_uuid:
                return
            if msg.kind in (Kind.DTMF, Kind.TRANSCRIPT, Kind.MEDIA_LOST):
                self.call.stash(msg)
            elif msg.kind in _HANDED_OVER:
                self._hand_over(msg)


class ListenSource(Protocol):
    """Where the caller's words come from (text mode: FreeSWITCH ASR; audio mode: our media)."""

    def arm(self) -> None:
        """Hear the caller from now on, including over the next prompt (barge-in)."""
        ...

    def heard(self) -> None:
        """A final result was consumed (text mode: the ASR paused itself)."""
        ...

    def speaking(self, on: bool) -> None:
        """The bot starts or stops talking (audio mode tightens its VAD against echo)."""
        ...

    def speech_state(self) -> tuple[bool, float] | None:
        """Whether the caller is speaking now, and since when (``time.monotonic()``).

        Speaking: since their turn began; quiet: since their last turn ended (``0.0``:
        none yet). ``None``: the source cannot tell (text mode). Read-only: called by
        the listen's no-input timer on the controller's greenlet.
        """
        ...

    def end_turn(self) -> None:
        """The caller's turn is too long to wait for: finalise it now (its result follows)."""
        ...

    def close(self) -> None:
        """Stop recognising; idempotent, never raises."""
        ...


class TextListenSource:
    """FreeSWITCH-side recognition: ``detect_speech`` → ``DETECTED_SPEECH`` events.

    The recogniser is (re)armed right before a prompt starts playing, so the caller
    can talk over the prompt; after each result FreeSWITCH pauses it until ``resume``.
    """

    def __init__(self, session: EslSession, engine: str = "pocketsphinx ivr ivr") -> None:
        self.session = session
        self.engine = engine
        self.started = False
        self.armed = False
        self.closed = False

    def arm(self) -> None:
        """Pipelined: the prompt's ``playback``/``speak`` follows in the same flight.

        FreeSWITCH runs the resume before the prompt (socket order), and its reply is
        still checked: a refusal is raised by the next command that waits for its
        reply (the prompt's) or by :meth:`EslSession.flush`.
        """
        if self.closed or self.armed:
            return
        self.session.execute("detect_speech", "resume" if self.started else self.engine,
                             wait=False)
        self.started = self.armed = True

    def heard(self) -> None:
        self.armed = False

    def speaking(self, on: bool) -> None:
        """FreeSWITCH's recogniser handles its own echo: nothing to do."""

    def speech_state(self) -> None:
        """Unknown: ``detect_speech`` reports a start of speech, never its end."""
        return None

    def end_turn(self) -> None:
        """Never called (:meth:`speech_state` is ``None``): FreeSWITCH ends its own turns."""

    def close(self) -> None:
        if self.started and not self.closed and self.session.channel_up:
            try:
                self.session.execute("detect_speech", "stop")
            except EslError:
                pass
        self.closed = True


_WORD_ZERO = re.compile(r"^\s*(press(ing)?\s+)?(zero|0)\W*$", re.I)


class Listen:
    """Wait for one caller turn: speech, or DTMF digits, or nothing (returns ``None``).

    The no-input ``timeout`` counts the caller's silence, never their speech. Where
    the source can tell (:meth:`ListenSource.speech_state`, audio mode: our VAD) it
    runs from the listen's start or the end of the caller's last turn, whichever is
    later, and it never expires while they talk: a sentence begun over the prompt,
    or longer than the window, is waited for. ``max_utterance`` bounds that wait (a
    caller who does not stop, a television, line noise the VAD takes for speech):
    the turn is then ended and finalised, and the listen returns what the recogniser
    made of it, or ``None`` when nothing intelligible came within ``timeout`` (a
    no-input like any other: the caller is asked again, and the misses hand them
    over). Where the source cannot tell (text mode: FreeSWITCH's ASR) a start of
    speech restarts the window and gives the recogniser one more window, once.
    """

    def __init__(self, call: CallControl, source: ListenSource, *, timeout: float,
                 digit_timeout: float = 1.5, max_utterance: float = MAX_UTTERANCE_S) -> None:
        self.call = call
        self.source = source
        self.timeout = timeout
        self.digit_timeout = digit_timeout
        self.max_utterance = max_utterance
        self.speech_started = False
        self.cut = False  # the caller's turn ran past max_utterance and was ended

    def run(self, pending: list[Msg]) -> Utterance | None:
        """``pending`` holds messages stashed earlier (speech during the last prompt)."""
        self.media_lost = ""  # once the stream is lost, why ("stalled", "disconnected", ...)
        self.heard_at = 0.0  # when the final transcript returned arrived (Msg.at)
        digits = ""
        started = False
        # absolute: messages that mean nothing here (a late completion, a stale timer)
        # must not restart a silent caller's window
        deadline = time.monotonic() + self.timeout
        while True:
            if pending:
                msg: Msg | None = pending.pop(0)
            else:
                if not started:
                    self.source.arm()
                    started = True
                    flush = getattr(self.call.session, "flush", None)
                    if flush is not None:  # nothing else follows: check the arm's reply now
                        flush()
                wait = self.digit_timeout if digits else max(0.0, deadline - time.monotonic())
                msg = self.call.next(timeout=wait)
            if msg is None:
                if digits:
                    return Utterance(dtmf=digits)
                later = self._later()
                if later is None:
                    return None
                deadline = later
                continue
            if msg.kind is Kind.TRANSCRIPT:
                self.source.heard()
                if msg.text:
                    self.heard_at = msg.at
                    return Utterance(text=msg.text, confidence=msg.confidence)
                if self.cut:
                    return None  # the over-long turn held nothing intelligible
                # an empty result (a cough): the caller's silence counts from here
                deadline = time.monotonic() + self.timeout
                continue
            if msg.kind is Kind.MEDIA_LOST:  # the audio fork died: we cannot hear the caller
                self.media_lost = msg.key or "lost"
                return None
            if msg.kind is Kind.SPEECH_START:
                self.speech_started = True
                if not self.cut:
                    deadline = time.monotonic() + self.timeout
            elif msg.kind is Kind.DTMF and msg.text:
                if msg.text == "#" and digits:
                    return Utterance(dtmf=digits)
                if msg.text == "0" and not digits:
                    return Utterance(dtmf="0")
                digits += msg.text

    def _later(self) -> float | None:
        """The window is up: a new deadline if the caller is or was lately talking, else None."""
        if self.cut:
            return None  # the over-long turn's result did not come: nothing was heard
        now = time.monotonic()
        state = self.source.speech_state()
        if state is None:  # the source cannot tell (text mode)
            if self.speech_started:
                # they are talking: give the recogniser one more window, once
                self.speech_started = False
                return now + self.timeout
            return None
        speaking, since = state
        if not speaking:
            later = since + self.timeout  # silence counts from the end of their turn
            return later if later > now else None
        if now - since < self.max_utterance:
            return min(now + SPEECH_RECHECK_S, since + self.max_utterance)
        log.info("call %s: the caller has talked for %.0f s: their turn is ended",
                 (getattr(self.call.session, "uuid", "") or "?")[:8], now - since)
        self.cut = True
        self.source.end_turn()
        return now + self.timeout  # for the recogniser's final


def is_zero_request(utterance: Utterance) -> bool:
    """``0`` pressed or said on its own ("zero", "press zero")."""
    if utterance.dtmf == "0":
        return True
    return bool(utterance.text and _WORD_ZERO.match(utterance.text))


@dataclass
class BridgeResult:
    """How a transfer to a human went."""

    connected: bool
    disposition: str = ""


class Bridge:
    """Transfer the caller to a human line with ``bridge``; returns when it ends or fails."""

    def __init__(self, call: CallControl, target: str, *, ring_seconds: int | None = None
                 ) -> None:
        self.call = call
        self.target = target
        self.ring_seconds = ring_seconds
        self._app: str | None = None

    def run(self) -> BridgeResult:
        # Without continue_on_fail FreeSWITCH hangs the caller up when the human line is
        # busy or unanswered; with it the bridge completes and the bot takes over again.
        settings = "continue_on_fail=true hangup_after_bridge=true"
        if self.ring_seconds:
            settings += f" call_timeout={int(self.ring_seconds)}"
        self.call.session.execute("multiset", settings)
        self._app = self.call.session.execute("bridge", self.target)
        while True:
            msg = self.call.next(timeout=None)
            if msg is not None and msg.kind is Kind.COMPLETE and msg.key == self._app:
                ev = msg.event
                disp = ((ev.get("variable_originate_disposition") if ev else "") or
                        msg.text or "")
                ok = disp.upper() in ("SUCCESS", "ANSWER", "NORMAL_CLEARING")
                return BridgeResult(ok, disp)

    def cancel(self) -> None:
        """Nothing to undo: a hang-up ends the bridge on the FreeSWITCH side."""
        self._app = None


def _count_tts_error(provider: str) -> None:
    metrics.PROVIDER_ERRORS.labels("tts", provider).inc()


def _observe_barge_in(seconds: float) -> None:
    """Server side of a barge-in (VAD detection to ``uuid_break``), where metrics exist."""
    metrics.BARGE_IN_REACTION.observe(seconds)
