"""Amazon Transcribe streaming as a speech recogniser (``stt: transcribe``).

The ``amazon-transcribe`` SDK is asyncio-only. Every call's stream runs as a
task on **one** asyncio loop in **one** OS thread shared by the process
(:class:`esl_app.support.bridge.AsyncioLoopThread`); the gevent hub never runs asyncio
and never waits on it. Audio goes in with ``loop.call_soon_threadsafe`` (batched
to ~100 ms chunks, the size Transcribe recommends, so a thousand calls cost
ten wake-ups a second each, not fifty); results come back through a
:class:`esl_app.support.bridge.HubChannel` and ``on_event`` runs on a greenlet, in order.

Semantics the call engine relies on:

* partial results → ``TranscriptEvent("partial")`` whenever the text changes
  (barge-in uses them); final results → ``"final"``.
* :meth:`TranscribeStream.finalize` (our VAD heard the end of the turn) ends
  the utterance early. Transcribe has no flush, so the latest partial is
  emitted as the final and the rest of that result (same ``ResultId``) is
  dropped; the stream itself keeps running for the next turn. With nothing
  heard yet, the first result within ``finalize_grace_s`` becomes the final,
  else an empty final is emitted so the engine never waits forever.
* hints: Transcribe cannot bias a running stream; a custom vocabulary (built
  from tenant data, e.g. doctor names) is used when ``vocabulary_name`` is
  configured; ``set_hints`` is ignored.
* any service error, throttling (``LimitExceededException``) or broken stream
  → one ``TranscriptEvent("error")``; the stream is then dead and the call's
  :class:`~esl_app.providers.stt.resilience.ResilientSttStream` hands the rest
  of the call to the local recogniser (or, if none can start, the caller over).
* :meth:`TranscribeStream.close` (hang-up) returns at once; the stream ends in
  the background within ``close_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from amazon_transcribe.handlers import TranscriptResultStreamHandler

from esl_app.providers.registry import aws_region
from esl_app.providers.stt.base import SttCapabilities, TranscriptEvent
from esl_app.support.bridge import AsyncioLoopThread, HubChannel

__all__ = ["TranscribeStream", "TranscribeStt", "shared_loop"]

log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop: AsyncioLoopThread | None = None
_DONE = object()
_MAX_PENDING_S = 5.0  # audio buffered while the service lags; older audio is dropped


def shared_loop() -> AsyncioLoopThread:
    """The process-wide asyncio loop thread for Transcribe streams (started once)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = AsyncioLoopThread(name="transcribe-asyncio").start()
        return _loop


class TranscribeStt:
    """A factory of Transcribe streams; one instance serves many calls."""

    name = "transcribe"
    capabilities = SttCapabilities(streaming=True, partials=True, sample_rates=(8000, 16000),
                                   hints=False)

    def __init__(
        self,
        region: str | None = None,
        *,
        vocabulary_name: str | None = None,
        loop: AsyncioLoopThread | None = None,
        client_factory: Callable[[str], Any] | None = None,
        chunk_ms: int = 100,
        finalize_grace_s: float = 0.8,
        close_timeout_s: float = 3.0,
    ) -> None:
        """``client_factory(region)`` builds the SDK client (tests point it at a fake endpoint)."""
        self.region = aws_region(region)
        self.vocabulary_name = vocabulary_name
        self._loop = loop
        self._client_factory = client_factory or _sdk_client
        self._client: Any = None
        self.chunk_ms = chunk_ms
        self.finalize_grace_s = finalize_grace_s
        self.close_timeout_s = close_timeout_s

    def _get_client(self) -> Any:
        # built on the loop thread's first use; the SDK client is reused by all streams
        if self._client is None:
            self._client = self._client_factory(self.region)
        return self._client

    def open_stream(
        self,
        call_id: str,
        sample_rate: int,
        language: str,
        on_event: Callable[[TranscriptEvent], None],
        hints: Sequence[str] = (),
    ) -> TranscribeStream:
        """Start one call's stream; returns at once (the connection is made in the background)."""
        loop = self._loop or shared_loop()
        stream = TranscribeStream(self, loop, call_id, sample_rate, language, on_event)
        stream._start()
        return stream


def _sdk_client(region: str) -> Any:
    """The SDK client; credentials from the standard AWS chain (via awscrt)."""
    from amazon_transcribe.client import TranscribeStreamingClient

    return TranscribeStreamingClient(region=region)


class TranscribeStream:
    """One call's recognition stream (methods are called from the call's greenlet)."""

    def __init__(self, provider: TranscribeStt, loop: AsyncioLoopThread, call_id: str,
                 sample_rate: int, language: str,
                 on_event: Callable[[TranscriptEvent], None]) -> None:
        self.provider = provider
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.language = language
        self._bridge = loop
        self._on_event = on_event
        self._channel = HubChannel()
        self._buf = bytearray()
        self._chunk_bytes = max(320, sample_rate * 2 * provider.chunk_ms // 1000)
        self._closed = False
        self._failed = False
        self.bytes_fed = 0
        # loop-thread state (touched only on the asyncio thread)
        self._audio: asyncio.Queue[bytes | None] | None = None
        self._pending = 0
        self._task: asyncio.Task[None] | None = None
        self._partial_id: str | None = None
        self._partial_text = ""
        self._last_partial_sent = ""
        self._dropped_ids: set[str] = set()
        self._grace: asyncio.TimerHandle | None = None
        self._finals_since_finalize = 0

    # -- SttStream interface (greenlet side) ---------------------------------

    @property
    def audio_seconds(self) -> float:
        """Audio sent to the service so far (billing is per second of audio)."""
        return self.bytes_fed / (2 * self.sample_rate)

    def feed(self, pcm: bytes) -> None:
        """Queue L16 audio; never blocks the greenlet."""
        if self._closed or self._failed:
            return
        self._buf += pcm
        if len(self._buf) >= self._chunk_bytes:
            self._flush()

    def finalize(self) -> None:
        """End the caller's turn now (see the module notes)."""
        if self._closed or self._failed:
            return
        self._flush()
        self._bridge.call_soon(self._finalize_on_loop)

    def set_hints(self, hints: Sequence[str]) -> None:
        """Ignored: Transcribe takes a custom vocabulary at stream start only."""

    def close(self) -> None:
        """Stop delivering events and end the stream in the background; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._bridge.call_soon(self._close_on_loop)
        except RuntimeError:  # the loop is gone (process shutting down)
            self._channel.close()

    # -- greenlet-side internals ------------------------------------------------

    def _start(self) -> None:
        self._channel.deliver_to(self._deliver)
        self._bridge.call_soon(self._start_on_loop)

    def _flush(self) -> None:
        if not self._buf:
            return
        chunk = bytes(self._buf)
        self._buf.clear()
        self.bytes_fed += len(chunk)
        self._bridge.call_soon(self._enqueue_on_loop, chunk)

    def _deliver(self, item: Any) -> None:
        if item is _DONE:
            self._channel.close()
            return
        if self._closed:
            return
        if item.kind == "error":
            self._failed = True
        self._on_event(item)

    # -- loop-thread internals -------------------------------------------------

    def _emit(self, event: TranscriptEvent) -> None:
        self._channel.put(event)

    def _start_on_loop(self) -> None:
        self._audio = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _enqueue_on_loop(self, chunk: bytes) -> None:
        if self._audio is None:
            return
        max_bytes = int(_MAX_PENDING_S * self.sample_rate * 2)
        while self._pending + len(chunk) > max_bytes and not self._audio.empty():
            dropped = self._audio.get_nowait()
            self._pending -= len(dropped or b"")
        self._pending += len(chunk)
        self._audio.put_nowait(chunk)

    def _close_on_loop(self) -> None:
        if self._audio is not None:
            self._audio.put_nowait(None)
        if self._grace is not None:
            self._grace.cancel()
        if self._task is None:
            self._channel.put(_DONE)
            return
        loop = asyncio.get_running_loop()
        task = self._task
        loop.call_later(self.provider.close_timeout_s,
                        lambda: None if task.done() else task.cancel())

    def _finalize_on_loop(self) -> None:
        if self._partial_text:
            self._promote_partial()
        elif self._finals_since_finalize == 0:
            # nothing heard yet: the next result (or silence) closes the turn
            loop = asyncio.get_running_loop()
            self._grace = loop.call_later(self.provider.finalize_grace_s, self._grace_expired)
        self._finals_since_finalize = 0

    def _grace_expired(self) -> None:
        self._grace = None
        self._emit(TranscriptEvent("final", ""))

    def _promote_partial(self) -> None:
        if self._partial_id:
            self._dropped_ids.add(self._partial_id)
        self._emit(TranscriptEvent("final", self._partial_text))
        self._partial_id, self._partial_text, self._last_partial_sent = None, "", ""

    def _on_result(self, result_id: str, text: str, is_partial: bool) -> None:
        """One Transcribe result, in arrival order."""
        if result_id in self._dropped_ids:
            if not is_partial:
                self._dropped_ids.discard(result_id)
            return
        if self._grace is not None and text:
            self._grace.cancel()
            self._grace = None
            self._partial_id, self._partial_text = result_id, text
            self._promote_partial()
            if is_partial:
                return
            self._dropped_ids.discard(result_id)
            return
        if is_partial:
            self._partial_id, self._partial_text = result_id, text
            if text and text != self._last_partial_sent:
                self._last_partial_sent = text
                self._emit(TranscriptEvent("partial", text))
            return
        self._partial_id, self._partial_text, self._last_partial_sent = None, "", ""
        if text:
            self._finals_since_finalize += 1
            self._emit(TranscriptEvent("final", text))

    async def _run(self) -> None:
        try:
            client = self.provider._get_client()
            kwargs: dict[str, Any] = {
                "language_code": self.language, "media_sample_rate_hz": self.sample_rate,
                "media_encoding": "pcm", "enable_partial_results_stabilization": True,
                "partial_results_stability": "high"}
            if self.provider.vocabulary_name:
                kwargs["vocabulary_name"] = self.provider.vocabulary_name
            stream = await client.start_stream_transcription(**kwargs)
            sender = asyncio.get_running_loop().create_task(self._send(stream))
            try:
                await _Handler(self, stream.output_stream).handle_events()
            finally:
                if not sender.done():
                    sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            if self._closed:
                return
            raise ConnectionError("the stream ended before the call did")
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - every failure becomes one error event
            if not self._closed:
                name = type(exc).__name__
                log.warning("transcribe stream for call %s failed: %s", self.call_id, name)
                self._emit(TranscriptEvent("error", f"transcribe: {name}"))
        finally:
            if self._grace is not None:
                self._grace.cancel()
            self._channel.put(_DONE)

    async def _send(self, stream: Any) -> None:
        assert self._audio is not None
        while True:
            chunk = await self._audio.get()
            if chunk is None:
                await stream.input_stream.end_stream()
                return
            self._pending -= len(chunk)
            await stream.input_stream.send_audio_event(audio_chunk=chunk)


class _Handler(TranscriptResultStreamHandler):
    """The SDK's handler, turning its TranscriptEvents into ours."""

    def __init__(self, owner: TranscribeStream, output_stream: Any) -> None:
        super().__init__(output_stream)
        self.owner = owner

    async def handle_transcript_event(self, transcript_event: Any) -> None:
        for result in transcript_event.transcript.results:
            if result.channel_id not in (None, "ch_0"):
                continue
            alternatives = result.alternatives or []
            text = (alternatives[0].transcript or "").strip() if alternatives else ""
            self.owner._on_result(result.result_id or "", text, bool(result.is_partial))
