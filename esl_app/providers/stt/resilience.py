"""A recogniser that never leaves the caller unheard: a failing one is replaced mid-call.

A cloud recogniser (Amazon Transcribe streaming) can fail in the middle of a
call: its stream breaks (one ``error`` event), a call into it raises, or it
simply stops answering. Before this module the failure was only logged, and
the caller then heard "I didn't hear anything" twice and went down the
no-input path. :class:`ResilientSttStream` wraps one call's stream, like
:class:`~esl_app.providers.resilience.ResilientAgent` wraps the agent:

* the primary stream gets every frame; a failure — ``open_stream``, ``feed``
  or ``finalize`` raising, an ``error`` event, or **silence**: no result
  ``silent_after_s`` (2 s) after the end of a turn *while audio kept
  flowing* — replaces it by the fallback (the local pocketsphinx recogniser)
  **for the rest of the call**; the primary is closed and anything it still
  delivers is dropped, so no turn is answered twice;
* the caller's words are not lost: the stream keeps the current turn's audio
  (bounded: ``max_turn_s``, and only a ``preroll_s`` before the caller's speech
  when told of it, see :meth:`ResilientSttStream.note_speech`) and the audio of
  every ended turn still waiting for its result; at the switch these are fed
  to the fallback again, ended turns finalised, so the turn being heard is
  answered by the fallback (~0.1-0.3 s after the switch) and the caller hears
  no apology;
* ``on_fallback(from, reason, to)`` tells the owner (the call's audio source
  records it and counts it in ``ivr_stt_fallbacks_total``); ``to`` is None when
  no fallback could be opened (e.g. a language the local model does not know):
  the owner then hands the caller over, as for lost audio.

Why silence counts only while audio flows: with no frames arriving the media
path, not the recogniser, is at fault (the call engine handles a lost fork),
and a recogniser may legitimately wait for more audio. The check runs in
:meth:`ResilientSttStream.feed` — no timer per call or per turn — and needs
both the wall-clock deadline and ``FLOWING`` of that time in audio fed since
the end of the turn. Answers are matched to turns as Transcribe gives them:
one result per ``finalize()``, except that a final already received in a turn
(Transcribe's own end-pointing) with no partial since means ``finalize()``
brings no further result.

All methods run on gevent greenlets (the hub thread), as the providers'
events do; nothing here blocks: decoding stays in the fallback's own pool.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from esl_app.providers.stt.base import SttProvider, SttStream, TranscriptEvent

__all__ = ["ResilientSttStream"]

log = logging.getLogger(__name__)


class _Ended:
    """An ended turn waiting for the primary's result: its audio and when it is overdue."""

    __slots__ = ("due", "fed", "frames")

    def __init__(self, frames: collections.deque[bytes], due: float, fed: int) -> None:
        self.frames = frames
        self.due = due
        self.fed = fed  # bytes fed to the primary when the turn ended


class ResilientSttStream:
    """One call's ``SttStream``: the primary's, replaced by the fallback's when it fails.

    ``fallback()`` makes (or returns the shared) fallback provider; it is called
    only at the switch. ``gated``: the owner calls :meth:`note_speech` when the
    caller starts talking, so between turns only ``preroll_s`` of audio is kept
    (a call's buffer is then ~16 KB, not ``max_turn_s`` of the bot's prompt).
    ``clock`` is for tests.
    """

    SILENT_AFTER_S = 2.0  # Transcribe answers a finalize within ~0.8 s (its grace)
    FLOWING = 0.75  # share of the deadline that must have been fed as audio
    MAX_TURN_S = 15.0  # audio kept of one turn (the oldest goes first)
    PREROLL_S = 1.0  # kept before the caller's speech is noted (VAD onset lag, soft onsets)

    def __init__(
        self,
        primary: SttProvider,
        fallback: Callable[[], SttProvider | None] | None,
        call_id: str,
        sample_rate: int,
        language: str,
        on_event: Callable[[TranscriptEvent], None],
        hints: Sequence[str] = (),
        *,
        on_fallback: Callable[[str, str, str | None], None] | None = None,
        gated: bool = False,
        silent_after_s: float | None = None,
        max_turn_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.language = language
        self.hints: tuple[str, ...] = tuple(hints)
        self.primary_name = str(getattr(primary, "name", "stt"))
        self.fallback_name: str | None = None
        self.fell_back: str | None = None  # why the primary was replaced (None: still used)
        self.switched_at = 0.0  # clock() of the switch
        self.replayed = 0  # ended turns fed again to the fallback at the switch
        self._fallback = fallback
        self._on_event = on_event
        self._on_fallback = on_fallback
        self._clock = clock
        self._gated = gated
        self.silent_after_s = self.SILENT_AFTER_S if silent_after_s is None else silent_after_s
        bytes_per_s = 2 * sample_rate
        self._flow_bytes = int(self.FLOWING * self.silent_after_s * bytes_per_s)
        self._max_bytes = int((self.MAX_TURN_S if max_turn_s is None else max_turn_s)
                              * bytes_per_s)
        self._preroll_bytes = int(self.PREROLL_S * bytes_per_s)
        self._turn: collections.deque[bytes] = collections.deque()  # the current turn
        self._turn_bytes = 0
        self._speaking = False
        self._ended: collections.deque[_Ended] = collections.deque()
        self._fed = 0  # bytes fed to the primary
        self._finals_in_turn = 0  # primary finals since the last finalize()
        self._partial_open = False  # a partial came after the last final
        self._closed = False
        self._stream: SttStream | None = None
        try:
            self._stream = primary.open_stream(call_id, sample_rate, language,
                                               self._from_primary, self.hints)
        except Exception as exc:  # noqa: BLE001 - any failure is a reason to switch
            self._switch(f"open: {type(exc).__name__}")

    # -- SttStream ---------------------------------------------------------------------

    def feed(self, pcm: bytes) -> None:
        """Audio to the recogniser; kept for a replay while the primary is in use."""
        if self._closed or not pcm:
            return
        stream = self._stream
        if self.fell_back is not None:
            if stream is not None:
                stream.feed(pcm)
            return
        self._keep(pcm)
        self._fed += len(pcm)
        try:
            stream.feed(pcm)  # type: ignore[union-attr]  # set while not fallen back
        except Exception as exc:  # noqa: BLE001
            self._switch(f"feed: {type(exc).__name__}")
            return
        if self._ended:
            oldest = self._ended[0]
            if self._clock() >= oldest.due and self._fed - oldest.fed >= self._flow_bytes:
                self._switch(f"silent: no result {self.silent_after_s:g} s after the turn")

    def finalize(self) -> None:
        """The caller's turn ended: its result is now due (within ``silent_after_s``)."""
        if self._closed:
            return
        if self.fell_back is not None:
            if self._stream is not None:
                self._stream.finalize()
            return
        frames, self._turn, self._turn_bytes = self._turn, collections.deque(), 0
        self._speaking = False
        if self._partial_open or self._finals_in_turn == 0:
            self._ended.append(_Ended(frames, self._clock() + self.silent_after_s, self._fed))
        self._finals_in_turn = 0
        try:
            self._stream.finalize()  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001
            self._switch(f"finalize: {type(exc).__name__}")

    def set_hints(self, hints: Sequence[str]) -> None:
        """Bias the recogniser in use; kept for the fallback (the local one uses them)."""
        self.hints = tuple(hints)
        if self._stream is not None and not self._closed:
            try:
                self._stream.set_hints(self.hints)
            except Exception as exc:  # noqa: BLE001 - hints are advice, not a failure
                log.debug("call %s: set_hints failed: %s", self.call_id[:8],
                          type(exc).__name__)

    def close(self) -> None:
        """Release the stream in use and the kept audio; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        stream, self._stream = self._stream, None
        self._turn.clear()
        self._ended.clear()
        if stream is not None:
            try:
                stream.close()
            except Exception as exc:  # noqa: BLE001 - close never raises
                log.debug("call %s: closing the recogniser: %s", self.call_id[:8],
                          type(exc).__name__)

    def note_speech(self) -> None:
        """The caller started talking (the owner's VAD): keep this turn whole from here."""
        self._gated = True
        self._speaking = True

    # -- internals ---------------------------------------------------------------------

    def _keep(self, pcm: bytes) -> None:
        """Bounded: a turn's last ``max_turn_s``; between turns only the preroll (gated)."""
        turn = self._turn
        turn.append(pcm)
        self._turn_bytes += len(pcm)
        limit = self._max_bytes if self._speaking or not self._gated else self._preroll_bytes
        while self._turn_bytes > limit and len(turn) > 1:
            self._turn_bytes -= len(turn.popleft())

    def _from_primary(self, ev: TranscriptEvent) -> None:
        if self._closed or self.fell_back is not None:
            return  # a switched-away primary's late words would answer a turn twice
        if ev.kind == "error":
            self._switch(f"error: {ev.text[:80]}" if ev.text else "error")
            return
        if ev.kind == "partial":
            self._partial_open = True
        elif ev.kind == "final":
            self._partial_open = False
            if self._ended:
                self._ended.popleft()
            else:  # the primary's own end-pointing: what was said so far is answered
                self._finals_in_turn += 1
                self._turn.clear()
                self._turn_bytes = 0
        self._on_event(ev)

    def _from_fallback(self, ev: TranscriptEvent) -> None:
        if not self._closed:
            self._on_event(ev)

    def _switch(self, reason: str) -> None:
        """Replace the primary for the rest of the call; replay what it left unanswered."""
        if self.fell_back is not None or self._closed:
            return
        self.fell_back = reason
        self.switched_at = self._clock()
        old, self._stream = self._stream, None
        if old is not None:
            try:
                old.close()
            except Exception as exc:  # noqa: BLE001 - it failed already
                log.debug("call %s: closing the failed recogniser: %s", self.call_id[:8],
                          type(exc).__name__)
        stream: SttStream | None = None
        try:
            provider = self._fallback() if self._fallback is not None else None
            if provider is not None:
                stream = provider.open_stream(self.call_id, self.sample_rate, self.language,
                                              self._from_fallback, self.hints)
                self.fallback_name = str(getattr(provider, "name", "fallback"))
        except Exception as exc:  # noqa: BLE001 - no fallback: the owner hands over
            log.warning("call %s: the fallback recogniser could not start: %s",
                        self.call_id[:8], type(exc).__name__)
            stream = None
        self._stream = stream
        ended, turn = self._ended, self._turn
        self._ended, self._turn, self._turn_bytes = collections.deque(), collections.deque(), 0
        log.warning("call %s: recogniser %s failed (%s); %s", self.call_id[:8],
                    self.primary_name, reason,
                    f"{self.fallback_name} takes over, {len(ended)} turn(s) replayed"
                    if stream is not None else "no fallback")
        self.replayed = len(ended) if stream is not None else 0
        if self._on_fallback is not None:  # first: the replay's results may come at once
            try:
                self._on_fallback(self.primary_name, reason, self.fallback_name)
            except Exception:  # noqa: BLE001 - recording must not break the call's audio
                log.exception("call %s: on_fallback failed", self.call_id[:8])
        if stream is not None and not self._closed:
            for t in ended:  # in order: the fallback's finals come in finalize order
                for pcm in t.frames:
                    stream.feed(pcm)
                stream.finalize()
            for pcm in turn:
                stream.feed(pcm)

    @property
    def stream(self) -> Any:
        """The stream in use (the primary's or the fallback's); None once closed."""
        return self._stream
