"""The emulator's audio mode: stream the caller like mod_audio_fork does.

Installed as the emulated channel's ``AudioForkHook``: on ``uuid_audio_fork
<uuid> start <url> mono 8k <metadata>`` it opens the WebSocket (subprotocol
``audio.drachtio.org``), sends the metadata text frame, then one 20 ms L16
frame at a time at real-time pace: silence, the caller's next line
synthesised with espeak-ng at the call's rate, silence. ``stop`` (or hang-up)
closes with code 1000.

Pacing uses an absolute schedule (start + n * 20 ms), so scheduling jitter
does not accumulate. Synthesis runs in a separate greenlet ahead of the sender
(espeak-ng via gevent.subprocess), so the frame clock never stalls. For
barge-in measurements each utterance records when its first *speech* frame
(the first frame of audible level, after espeak's leading silence) was sent,
as wall-clock monotonic time and as stream position.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.queue
import websocket

from esl_app.media.pcm import frame_bytes, rms
from esl_app.media.server import SUBPROTOCOL
from esl_app.providers.tts.local import espeak_voice, synthesize_pcm

__all__ = ["AudioFork", "UtteranceRecord", "parse_rate"]

log = logging.getLogger(__name__)
FRAME_MS = 20
SPEECH_RMS = 100.0


def parse_rate(rate: str) -> int:
    """``8k`` / ``16k`` / ``8000`` -> Hz."""
    r = rate.strip().lower()
    return int(float(r[:-1]) * 1000) if r.endswith("k") else int(r)


@dataclass
class UtteranceRecord:
    """When one caller line went out on the wire."""

    text: str
    first_frame_at: float  # time.monotonic() of its first frame (leading silence included)
    speech_at: float | None = None  # monotonic time of the first audible frame
    speech_stream_ms: int | None = None  # stream position of that frame
    end_stream_ms: int | None = None  # stream position after its last frame


class AudioFork:
    """One emulated fork (implements the emulator's ``AudioForkHook``).

    ``voice`` is an espeak-ng voice or a Polly id; ``lead_ms``/``trail_ms`` the
    silence around each line; ``on_speech(record)`` is called (in the sender
    greenlet) when an utterance's first audible frame has been sent.
    """

    def __init__(self, voice: str = "en-us", speed: int = 160, lead_ms: int = 300,
                 trail_ms: int = 0,
                 on_speech: Callable[[UtteranceRecord], None] | None = None) -> None:
        self.voice = espeak_voice(voice)
        self.speed = speed
        self.lead_ms = lead_ms
        self.trail_ms = trail_ms
        self.on_speech = on_speech
        self.records: list[UtteranceRecord] = []
        self.frames_sent = 0
        self.close_code: int | None = None
        self._ws: websocket.WebSocket | None = None
        self._stopping = False
        self._audio: gevent.queue.Queue = gevent.queue.Queue()
        self._greenlets: list[gevent.Greenlet] = []
        self.rate = 8000
        self.connected = gevent.event.Event()
        self.ended = gevent.event.Event()

    # -- AudioForkHook ------------------------------------------------------------------

    def start(self, url: str, mix: str, rate: str, metadata: str | None, call: Any) -> None:
        """Connect and stream in background greenlets."""
        self.rate = parse_rate(rate)
        self._greenlets = [gevent.spawn(self._run, url, metadata, call),
                           gevent.spawn(self._synthesise, call)]

    def stop(self) -> None:
        """Close the WebSocket with 1000 (as ``uuid_audio_fork … stop`` does)."""
        self._stopping = True
        self._audio.put(None)

    # -- internals ------------------------------------------------------------------------

    def _synthesise(self, call: Any) -> None:
        """Turn the caller's lines into PCM ahead of the frame clock."""
        while not self._stopping:
            text = call.next_utterance(timeout=None)
            if text is None or self._stopping:
                return
            try:
                pcm = synthesize_pcm(text, self.voice, self.rate, self.speed)
            except Exception:  # noqa: BLE001 - a broken line must not end the call
                log.exception("emulator could not synthesise %r", text)
                continue
            self._audio.put((text, pcm))

    def _run(self, url: str, metadata: str | None, call: Any) -> None:
        try:
            ws = websocket.create_connection(url, subprotocols=[SUBPROTOCOL], timeout=5,
                                             enable_multithread=False)
        except Exception as exc:  # noqa: BLE001 - like mod_audio_fork::connect_failed
            log.warning("audio fork connect to %s failed: %s", url, exc)
            self._fire(call, "mod_audio_fork::connect_failed", f'{{"reason":"{exc}"}}')
            self.ended.set()
            return
        self._ws = ws
        self._fire(call, "mod_audio_fork::connect")
        self.connected.set()
        try:
            if metadata:
                ws.send(metadata)
            self._stream(ws, call)
        except (OSError, websocket.WebSocketException) as exc:
            log.info("audio fork to %s ended: %s", url, exc)
        finally:
            try:
                ws.close(status=1000)
            except Exception:  # noqa: BLE001
                pass
            self._fire(call, "mod_audio_fork::disconnect")
            self.ended.set()
            for g in self._greenlets:
                if g is not gevent.getcurrent():
                    g.kill(block=False)

    def _stream(self, ws: websocket.WebSocket, call: Any) -> None:
        size = frame_bytes(self.rate, FRAME_MS)
        quiet = bytes(size)
        t0 = time.monotonic()
        n = 0
        current: list[bytes] = []
        record: UtteranceRecord | None = None
        while not self._stopping and not getattr(call, "hung_up", False):
            if not current:
                if record is not None:
                    record.end_stream_ms = n * FRAME_MS
                    record = None
                try:
                    item = self._audio.get_nowait()
                except gevent.queue.Empty:
                    item = False
                if item is None:
                    break
                if item:
                    text, pcm = item
                    pcm = bytes(frame_bytes(self.rate, self.lead_ms)) + pcm + \
                        bytes(frame_bytes(self.rate, self.trail_ms))
                    pcm += bytes(-len(pcm) % size)
                    current = [pcm[i:i + size] for i in range(0, len(pcm), size)]
                    current.reverse()
                    record = UtteranceRecord(text, time.monotonic())
                    self.records.append(record)
            frame = current.pop() if current else quiet
            # absolute schedule: frame n leaves at t0 + n * 20 ms
            delay = t0 + n * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            ws.send_binary(frame)
            n += 1
            self.frames_sent = n
            if record is not None and record.speech_at is None and rms(frame) >= SPEECH_RMS:
                record.speech_at = time.monotonic()
                record.speech_stream_ms = (n - 1) * FRAME_MS
                if self.on_speech is not None:
                    self.on_speech(record)

    @staticmethod
    def _fire(call: Any, subclass: str, body: str | None = None) -> None:
        fire = getattr(call, "fire_custom", None)
        if fire is None:
            return
        try:
            fire(subclass, body=body)
        except Exception:  # noqa: BLE001 - events are best effort
            log.debug("could not fire %s", subclass, exc_info=True)
