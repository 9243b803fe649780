"""Audio-mode listening: mod_audio_fork → our media server → VAD + STT → the call's queue.

The caller's audio arrives on the media server's connection greenlet. Voice
activity detection runs inline there (barge-in latency is one queue hop to the
controller, which sends ``uuid_break``); the recogniser gets every frame and is
finalised when the VAD sees the end of the turn. Only :class:`Msg` objects
cross into the call: the controller stays the single owner of call state.

A recogniser other than the local one runs inside a
:class:`~esl_app.providers.stt.resilience.ResilientSttStream`: when it fails
mid-call the local recogniser takes over for the rest of the call, the turn
being heard is replayed to it, the switch is counted
(``ivr_stt_fallbacks_total{tenant,from}``) and kept for the call record
(:attr:`AudioListenSource.stt_fallback`, stored as ``usage["stt_fallback"]``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from esl_app.config.tenants import Tenant
from esl_app.http import metrics
from esl_app.providers.stt.base import SttProvider, TranscriptEvent
from esl_app.providers.stt.resilience import ResilientSttStream
from esl_app.telephony.esl import EslError, EslSession
from esl_app.telephony.events import Kind, Msg

__all__ = ["AudioListenSource", "AudioSources", "TapFork"]

log = logging.getLogger(__name__)


class AudioListenSource:
    """One call's audio fork, VAD and recogniser; a :class:`ListenSource` and a media sink."""

    def __init__(self, call: Any, tenant: Tenant, session: EslSession, *, registry: Any,
                 media_url: str, stt: SttProvider,
                 fallback_stt: Callable[[], SttProvider | None] | None = None) -> None:
        """``fallback_stt()``: the recogniser that replaces a failing ``stt`` (the local one)."""
        from esl_app.media.endpoint import TurnDetector

        self.call = call
        self.tenant = tenant
        self.session = session
        self.registry = registry
        self.media_url = media_url.rstrip("/")
        self.stt_provider = stt
        self.fallback_stt = fallback_stt
        self.detector = TurnDetector.for_tenant(tenant)
        self.stream: Any = None
        self.stt_bytes = 0  # audio handed to the tenant's recogniser, for usage and cost
        self._fallback: dict[str, Any] | None = None  # the switch, for the call record
        self._fallback_bytes = 0  # audio handed to the fallback after it (free: local)
        self._fallback_at = 0.0  # time.monotonic() of the switch
        # time.monotonic() the caller's current turn began (in speech) or their last one
        # ended (0.0: none yet); kept by the media greenlet, read by the listen
        self._speech_since = 0.0
        self.hints: tuple[str, ...] = ()
        # sees every frame before the VAD (answering-machine detection), on the media
        # greenlet: it must be cheap and never block
        self.frame_tap: Callable[[bytes], None] | None = None
        self.started = False
        self.closed = False
        self.fork_error = ""  # FreeSWITCH refused ``uuid_audio_fork … start`` (its reply)
        self.uuid = session.uuid
        self.token = registry.register(self.uuid, self)

    # -- ListenSource ------------------------------------------------------------------

    def arm(self) -> None:
        """Start the fork once (after answer, as mod_audio_fork requires); it then stays on."""
        if self.started or self.closed:
            return
        self.started = True
        reply = _start_fork(self.session, self.uuid, self.media_url, self.token, self.tenant)
        if not reply.startswith("+OK"):
            self.fork_error = reply.strip() or "refused"
            log.warning("call %s: audio fork failed: %s", self.uuid[:8], reply.strip())

    def heard(self) -> None:
        """Nothing to resume: the stream keeps flowing."""

    def speaking(self, on: bool) -> None:
        """The bot's prompt plays: stricter VAD against its echo."""
        self.detector.set_bot_speaking(on)

    def speech_state(self) -> tuple[bool, float]:
        """Whether the caller is speaking now, and since when (``time.monotonic()``).

        Speaking: since their turn's onset (a voiced run not yet long enough for a
        ``speech_start`` counts too, from now); quiet: since the VAD ended their last
        turn (``0.0``: no turn yet). The listen's no-input timer counts silence from it.
        """
        det = self.detector
        if det.in_speech:
            return True, self._speech_since
        if det.onset_pending:
            return True, time.monotonic()
        return False, self._speech_since

    def end_turn(self) -> None:
        """The caller's turn ran past the listen's limit: end it and finalise what was heard.

        Runs on the controller's greenlet, between two ``on_audio`` calls (gevent does not
        preempt them), so the recogniser has every frame fed so far and its final comes
        as after any turn. Speech that goes on starts a new turn.
        """
        if self.closed:
            return
        if self.detector.end_turn() is not None:
            self._speech_since = time.monotonic()
            if self.stream is not None:
                self.stream.finalize()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # a refused start left no fork of ours: a stop would end whoever's holds the name
        _stop_fork(self.session, self.uuid, self.registry,
                   ours=self.started and not self.fork_error)
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.close()
            self.stream = None
        # the call <-> source cycle: let reference counting free both when the call ends
        # (the callbacks below check ``closed`` before they touch the call)
        self.call = None

    # -- StreamSink (media server greenlet) ----------------------------------------------

    def on_stream_start(self, metadata: Mapping[str, Any]) -> None:
        if self.closed or self.stream is not None:
            return
        provider = self.stt_provider
        args = (self.uuid, self.tenant.sample_rate, self.tenant.language, self._on_transcript,
                getattr(self, "hints", ()))
        if self._fallback is not None and self._fallback["to"] is not None \
                and self.fallback_stt is not None:
            fallback = self.fallback_stt()  # a new fork after a switch: it stays switched
            if fallback is not None:
                provider = fallback
        elif self.fallback_stt is not None and getattr(provider, "name", "") != "local":
            self.stream = ResilientSttStream(provider, self.fallback_stt, *args,
                                             on_fallback=self._on_fallback, gated=True)
            return
        self.stream = provider.open_stream(*args)

    def on_audio(self, pcm: bytes) -> bool:
        """VAD, then the recogniser; True while a turn boundary is near (read us soon).

        A barge-in under way, or the caller quiet for nearly ``end_silence_ms``: the
        next frames decide when the bot stops talking or starts its reply.
        """
        if self.closed:
            return False
        tap = self.frame_tap
        if tap is not None:  # a reminder call's answering-machine detector
            tap(pcm)
        det = self.detector
        for ev in det.feed(pcm):
            now = time.monotonic()
            if ev.kind == "speech_start":
                self._speech_since = now - (ev.detected_ms - ev.at_ms) / 1000.0  # the onset
                self.call.post(Msg(Kind.SPEECH_START, at=now))
                note = getattr(self.stream, "note_speech", None)
                if note is not None:  # a resilient stream keeps this turn for a replay
                    note()
            elif ev.kind == "speech_end":
                # the turn is over when the VAD says so: the listen's silence counts from
                # here (the recogniser's final follows), not from the last voiced frame
                self._speech_since = now
                if self.stream is not None:
                    self.stream.finalize()
        if self.stream is not None:
            if self._fallback is None:
                self.stt_bytes += len(pcm)
            else:
                self._fallback_bytes += len(pcm)
            self.stream.feed(pcm)
        return det.deciding

    def set_hints(self, hints: tuple[str, ...] | list[str]) -> None:
        """What the agent expects next (doctor names, yes/no, digits): biases the recogniser."""
        self.hints = tuple(hints)
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.set_hints(self.hints)

    @property
    def stt_seconds(self) -> float:
        """Audio sent to the tenant's recogniser (after a switch, the fallback's is not)."""
        return self.stt_bytes / (2.0 * self.tenant.sample_rate)

    @property
    def stt_fallback(self) -> dict[str, Any] | None:
        """The recogniser switch, for the call record's ``usage["stt_fallback"]`` (or None).

        ``from``/``to``: provider names (``to`` None: none could start, the caller was
        handed over); ``reason``; ``replayed``: ended turns given to the fallback again;
        ``result_ms``: the switch to the fallback's first result; ``local_s``: audio the
        fallback heard.
        """
        if self._fallback is None:
            return None
        return {**self._fallback,
                "local_s": round(self._fallback_bytes / (2.0 * self.tenant.sample_rate), 2)}

    def _on_fallback(self, source: str, reason: str, to: str | None) -> None:
        """The recogniser was replaced (on the media or a provider's greenlet)."""
        self._fallback = {"from": source, "to": to, "reason": reason,
                          "replayed": getattr(self.stream, "replayed", 0), "result_ms": None}
        self._fallback_at = time.monotonic()
        metrics.STT_FALLBACKS.labels(self.tenant.id, source).inc()
        metrics.PROVIDER_ERRORS.labels("stt", source).inc()
        if to is None and not self.closed:
            # nothing can hear the caller: the controller apologises once and hands over
            self.call.post(Msg(Kind.MEDIA_LOST, key="stt_failed"))

    def on_stream_end(self, reason: str) -> None:
        if self.stream is not None and not self.closed:
            with contextlib.suppress(Exception):
                self.stream.close()
            self.stream = None
        if not self.closed and reason not in ("shutdown", "replaced"):
            # Stalled or dropped mid-call: the controller tells the caller and hands over.
            self.call.post(Msg(Kind.MEDIA_LOST, key=reason))

    def _on_transcript(self, ev: TranscriptEvent) -> None:
        if self.closed:
            return
        if ev.kind == "final":
            now = time.monotonic()
            fb = self._fallback
            if fb is not None and fb["result_ms"] is None:
                fb["result_ms"] = round((now - self._fallback_at) * 1000)
            self.call.post(Msg(Kind.TRANSCRIPT, text=ev.text, confidence=ev.confidence, at=now))
        elif ev.kind == "error":
            log.warning("call %s: recogniser error: %s", self.uuid[:8], ev.text)


def _start_fork(session: EslSession, uuid: str, media_url: str, token: str,
                tenant: Tenant) -> str:
    """``uuid_audio_fork … start`` to our media server; FreeSWITCH's reply (``+OK`` or why not)."""
    from esl_app.media.server import fork_metadata

    rate = "16k" if tenant.sample_rate == 16000 else "8k"
    meta = fork_metadata(token, tenant=tenant.id)
    return session.api(f"uuid_audio_fork {uuid} start {media_url}/fork/{uuid} mono {rate} {meta}")


def _stop_fork(session: EslSession, uuid: str, registry: Any, *, ours: bool) -> None:
    """Stop the call's fork if it is ours and the call is up; forget its stream. Never raises.

    ``ours`` False (never started, or FreeSWITCH refused the start): no ``stop`` goes out,
    since one would end whichever fork holds that name on the channel.
    """
    if ours and session.channel_up:
        with contextlib.suppress(EslError):
            session.api(f"uuid_audio_fork {uuid} stop", timeout=1.0)
    with contextlib.suppress(Exception):
        registry.unregister(uuid)


class TapFork:
    """An audio fork that only feeds a frame tap: no VAD, no recogniser.

    A reminder call whose words FreeSWITCH recognises (the tenant's ``stt`` is
    ``freeswitch``) has no audio fork of its own, yet its answering-machine detection
    and beep detection need the sound (issue #28). The call opens this one for as long
    as the detector needs it and closes it before the conversation (or the voicemail)
    starts. What happens to the stream reaches the call as ``Kind.AMD`` messages, never
    ``MEDIA_LOST`` (that one means "the caller cannot be heard" to a listen):
    ``fork_lost`` (``value``: why) when the stream ends before :meth:`close`.
    """

    def __init__(self, call: Any, tenant: Tenant, session: EslSession, *, registry: Any,
                 media_url: str) -> None:
        self.call = call
        self.tenant = tenant
        self.session = session
        self.registry = registry
        self.media_url = media_url.rstrip("/")
        # sees every frame, on the media greenlet: it must be cheap and never block
        self.frame_tap: Callable[[bytes], None] | None = None
        self.started = False
        self.connected = False  # the fork reached the media server
        self.closed = False
        self.error = ""  # why the fork could not start (FreeSWITCH's reply)
        self.uuid = session.uuid
        self.token = registry.register(self.uuid, self)

    def start(self) -> bool:
        """Ask FreeSWITCH for the fork; False (and :attr:`error`) when it refuses.

        ``+OK`` only means the fork was set up: whether it connects shows in the audio
        that arrives (or not).
        """
        if self.started or self.closed:
            return not self.error
        self.started = True
        try:
            reply = _start_fork(self.session, self.uuid, self.media_url, self.token,
                                self.tenant)
        except EslError as exc:
            reply = f"-ERR {exc}"
        if not reply.startswith("+OK"):
            self.error = reply.strip() or "refused"
            log.warning("call %s: audio fork for AMD failed: %s", self.uuid[:8], self.error)
            return False
        return True

    def close(self) -> None:
        """Stop the fork and forget the call; idempotent, never raises."""
        if self.closed:
            return
        self.closed = True
        self.frame_tap = None
        _stop_fork(self.session, self.uuid, self.registry, ours=self.started and not self.error)
        self.call = None

    # -- StreamSink (media server greenlet) ----------------------------------------------

    def on_stream_start(self, metadata: Mapping[str, Any]) -> None:
        self.connected = True

    def on_audio(self, pcm: bytes) -> bool:
        tap = self.frame_tap
        if tap is not None and not self.closed:
            tap(pcm)
        return False

    def on_stream_end(self, reason: str) -> None:
        if not self.closed and reason not in ("shutdown", "replaced"):
            self.call.post(Msg(Kind.AMD, key="fork_lost", value=reason))


class AudioSources:
    """The ``audio_source_for`` factory: one :class:`AudioListenSource` per call."""

    def __init__(self, registry: Any, media_url: str,
                 stt_for: Callable[[Tenant], SttProvider],
                 fallback_stt: Callable[[], SttProvider | None] | None = None) -> None:
        """``fallback_stt()``: the shared recogniser that replaces a failing one (None: none)."""
        self.registry = registry
        self.media_url = media_url
        self.stt_for = stt_for
        self.fallback_stt = fallback_stt

    def __call__(self, call: Any, tenant: Tenant, session: EslSession) -> AudioListenSource:
        return AudioListenSource(call, tenant, session, registry=self.registry,
                                 media_url=self.media_url, stt=self.stt_for(tenant),
                                 fallback_stt=self.fallback_stt)

    def tap_fork(self, call: Any, tenant: Tenant, session: EslSession) -> TapFork:
        """A fork to this worker's media server that only feeds a frame tap (see TapFork)."""
        return TapFork(call, tenant, session, registry=self.registry, media_url=self.media_url)

    def warm(self, tenant: Tenant) -> None:
        """Make ``tenant``'s recogniser (and the fallback it may need) now, before calls come.

        Its first call would import it on the hub (the local one: ~160 ms, during
        which the worker's other calls stand still); a switch mid-call would too.
        """
        provider = self.stt_for(tenant)
        if self.fallback_stt is not None and getattr(provider, "name", "") != "local":
            self.fallback_stt()


