"""The emulator's audio mode: stream the caller like mod_audio_fork does.

Installed as the emulated channel's ``AudioForkHook``: on ``uuid_audio_fork
<uuid> start <url> mono 8k <metadata>`` it opens the WebSocket (subprotocol
``audio.drachtio.org``), sends the metadata text frame, then one 20 ms L16
frame at a time at real-time pace: silence, the caller's next line
synthesised with espeak-ng at the call's rate, silence. ``stop`` (or hang-up)
closes with code 1000; a close from the server is answered and ends the fork.

Why it is built this way (a load generator must keep up with a thousand
streams from a couple of processes):

- One **pacer** per process sends every fork's frames: forks are spread over
  four 5 ms phases of the 20 ms frame clock, and each tick visits only the
  forks of its phase, each sending the frames due by then (normally one; a
  fork behind catches up in one write). No timer or greenlet switch per frame.
- Frames are masked once, when a line is first prepared (a random key per
  frame, as the RFC asks of clients; silence cycles through 50 pre-masked
  frames), and caller lines are synthesised once per distinct text, voice and
  rate per process (concurrent requests share one espeak-ng run).
- Writes go to the non-blocking socket; what the kernel does not take waits in
  the fork's own buffer (as in mod_audio_fork's) and is flushed first.

Lateness stays honest: frame *n* is due at ``t0 + n × 20 ms``; a frame handed
to the kernel more than ``LATE_S`` (100 ms) after its slot counts in
``late`` (a real mod_audio_fork buffer would have overrun).

For barge-in measurements each utterance records when its first *speech*
frame (the first frame of audible level, after espeak's leading silence) was
sent, as wall-clock monotonic time and as stream position.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.pool
import websocket

from esl_app.media.pcm import frame_bytes, rms
from esl_app.media.server import SUBPROTOCOL
from esl_app.providers.tts.local import espeak_voice, synthesize_pcm
from esl_app.sim.emulator.net import connect_ws
from esl_app.support.bridge import cooperate

__all__ = ["AudioFork", "UtteranceRecord", "parse_rate", "prepare_lines", "synthesize_cached"]

log = logging.getLogger(__name__)
FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
SPEECH_RMS = 100.0
LATE_S = 0.100
_PHASES = 4  # pacer ticks per frame period
_SILENCE_POOL = 50


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


# -- masking and caches ---------------------------------------------------------------------


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    words = (n + 3) >> 2
    k = int.from_bytes(key * words, "little")
    return (int.from_bytes(payload, "little") ^ k).to_bytes(words * 4, "little")[:n]


def _client_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One final, masked client frame (RFC 6455 5.2)."""
    key = key or os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    return head + key + _mask(payload, key)


@dataclass(frozen=True)
class _Line:
    """A caller line ready to send: masked frames and where its speech starts."""

    frames: tuple[bytes, ...]
    speech_idx: int | None  # index of the first audible frame


_lines: OrderedDict[tuple[Any, ...], _Line] = OrderedDict()
_silence: dict[int, tuple[bytes, ...]] = {}
_pcm_cache: OrderedDict[tuple[str, str, int, int], bytes] = OrderedDict()
_pcm_inflight: dict[tuple[str, str, int, int], gevent.event.Event] = {}
_CACHE_MAX = 512


def _prepared(pcm: bytes, lead_ms: int, trail_ms: int, rate: int) -> _Line:
    """The masked frames of lead silence + ``pcm`` + trailing silence (cached per pcm)."""
    key = (pcm, lead_ms, trail_ms, rate)
    line = _lines.get(key)
    if line is not None:
        _lines.move_to_end(key)
        return line
    size = frame_bytes(rate, FRAME_MS)
    data = bytes(frame_bytes(rate, lead_ms)) + pcm + bytes(frame_bytes(rate, trail_ms))
    data += bytes(-len(data) % size)
    raw = [data[i:i + size] for i in range(0, len(data), size)]
    keys = os.urandom(4 * len(raw))
    speech = next((i for i, f in enumerate(raw) if rms(f) >= SPEECH_RMS), None)
    line = _Line(tuple(_client_frame(0x2, f, keys[4 * i:4 * i + 4]) for i, f in enumerate(raw)),
                 speech)
    _lines[key] = line
    while len(_lines) > _CACHE_MAX:
        _lines.popitem(last=False)
    return line


def _silence_frames(rate: int) -> tuple[bytes, ...]:
    frames = _silence.get(rate)
    if frames is None:
        quiet = bytes(frame_bytes(rate, FRAME_MS))
        frames = _silence[rate] = tuple(_client_frame(0x2, quiet) for _ in range(_SILENCE_POOL))
    return frames


def wav_pcm(path: str, rate: int) -> bytes:
    """A recording (16-bit mono WAV) as L16 at ``rate``: a callee's greeting and beep."""
    import audioop
    import wave

    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: not 16-bit mono")
        pcm = w.readframes(w.getnframes())
        src = w.getframerate()
    if src != rate:
        pcm, _ = audioop.ratecv(pcm, 2, 1, src, rate, None)
    return pcm


def synthesize_cached(text: str, voice: str, rate: int, speed: int) -> bytes:
    """espeak-ng PCM of a line, once per (text, voice, rate, speed) in this process.

    Concurrent askers of one line wait for the first and look again; if it failed or
    its call ended meanwhile (its greenlet killed) the next one synthesises the line
    itself. No exception is handed across greenlets: another call's GreenletExit
    would end the waiter's synthesis greenlet, and that caller would never speak.
    """
    key = (text, voice, rate, speed)
    while True:
        pcm = _pcm_cache.get(key)
        if pcm is not None:
            return pcm
        pending = _pcm_inflight.get(key)
        if pending is None:
            break
        pending.wait()
    done = _pcm_inflight[key] = gevent.event.Event()
    try:
        pcm = synthesize_pcm(text, voice, rate, speed)
        _pcm_cache[key] = pcm
        while len(_pcm_cache) > _CACHE_MAX:
            _pcm_cache.popitem(last=False)
    finally:
        del _pcm_inflight[key]
        done.set()
    return pcm


def prepare_lines(texts: Iterable[str], *, voice: str = "en-us", rate: int = 8000,
                  speed: int = 160, lead_ms: int = 300, trail_ms: int = 0,
                  concurrency: int = 2) -> dict[str, bytes]:
    """Synthesise and frame caller lines now, as a fork would at their first use.

    Why: a load generator knows its callers' lines in advance. Left to first use,
    each espeak-ng run (and its framing) lands in the measured window, when the
    first calls reach that step of the conversation, and competes with the calls
    for the CPU (measured at 1000 calls: the set-ups of that second wait up to
    250 ms). Returns each line's PCM, as ``synthesize_cached`` gives it to a fork.
    """
    ev = espeak_voice(voice)
    out: dict[str, bytes] = {}

    def one(text: str) -> None:
        pcm = synthesize_cached(text, ev, rate, speed)
        _prepared(pcm, lead_ms, trail_ms, rate)
        out[text] = pcm

    gevent.pool.Pool(max(1, concurrency)).map(one, dict.fromkeys(texts))
    _silence_frames(rate)
    return out


class _Lines:
    """The fork's queue of (text, pcm) lines; ``put(None)`` ends the stream.

    A deque, not a gevent queue: the pacer checks it on every frame of an idle fork.
    """

    __slots__ = ("_q",)

    def __init__(self) -> None:
        self._q: deque[Any] = deque()

    def put(self, item: Any) -> None:
        self._q.append(item)

    def __bool__(self) -> bool:
        return bool(self._q)

    def popleft(self) -> Any:
        return self._q.popleft()


# -- the pacer ----------------------------------------------------------------------------


class _Pacer:
    """Sends every fork's due frames from one greenlet (one per process)."""

    def __init__(self) -> None:
        self.phases: list[dict[int, AudioFork]] = [{} for _ in range(_PHASES)]
        self.tick_s = FRAME_S / _PHASES
        self.t0 = time.monotonic()
        self.k = 0
        self._glet: gevent.Greenlet | None = None

    def add(self, fork: AudioFork) -> None:
        """Join the least busy phase; the fork's frame clock starts at that phase's next tick."""
        p = min(range(_PHASES), key=lambda i: len(self.phases[i]))
        if self._glet is None or self._glet.dead:
            self.t0 = time.monotonic()
            self.k = 0
            self._glet = gevent.spawn(self._run)
        k = self.k + ((p - self.k) % _PHASES)
        fork._t0 = self.t0 + k * self.tick_s
        self.phases[p][id(fork)] = fork

    def remove(self, fork: AudioFork) -> None:
        for ph in self.phases:
            ph.pop(id(fork), None)

    def _run(self) -> None:
        """Each tick's forks, then sleep to the next tick.

        Behind schedule it does not go straight on to the next tick: it first gives
        the loop one iteration (``cooperate``), or a pacer catching up would hold the
        whole emulator, every call's ESL with it, for as long as the catching up
        takes (hundreds of ms near the generator's capacity, seen as set-up times
        the bot had no part in). FreeSWITCH's media and event socket threads never
        wait for each other that way.
        """
        mono = time.monotonic
        while any(self.phases):
            slot = self.t0 + self.k * self.tick_s
            delay = slot - mono()
            if delay > 0:
                gevent.sleep(delay)
            else:
                cooperate()
            now = mono()
            for fork in list(self.phases[self.k % _PHASES].values()):
                try:
                    fork._pace(slot, now)
                except Exception:  # noqa: BLE001 - one broken fork must not stop the others
                    log.exception("audio fork pacing failed")
                    fork._abort()
            self.k += 1


_pacers: dict[int, _Pacer] = {}


def _pacer() -> _Pacer:
    hub = gevent.get_hub()
    p = _pacers.get(id(hub))
    if p is None:
        p = _pacers[id(hub)] = _Pacer()
    return p


class AudioFork:
    """One emulated fork (implements the emulator's ``AudioForkHook``).

    ``voice`` is an espeak-ng voice or a Polly id; ``lead_ms``/``trail_ms`` the
    silence around each line; ``on_speech(record)`` is called (in the pacer)
    when an utterance's first audible frame has been sent.
    """

    def __init__(self, voice: str = "en-us", speed: int = 160, lead_ms: int = 300,
                 trail_ms: int = 0,
                 on_speech: Callable[[UtteranceRecord], None] | None = None,
                 drop_after_ms: int | None = None) -> None:
        """A fork to stream one call's caller lines.

        ``drop_after_ms``: the connection breaks once that much audio was streamed (no
        close frame, as when the network or the far end drops it): the fork then ends
        with ``mod_audio_fork::disconnect``, as mod_audio_fork's CONNECTION_DROPPED.
        """
        self.voice = espeak_voice(voice)
        self._drop_at = None if drop_after_ms is None else max(1, drop_after_ms // FRAME_MS)
        self.speed = speed
        self.lead_ms = lead_ms
        self.trail_ms = trail_ms
        self.on_speech = on_speech
        self.records: list[UtteranceRecord] = []
        self.frames_sent = 0
        self.late = 0  # frames handed to the kernel more than LATE_S after their slot
        self.close_code: int | None = None
        self._ws: websocket.WebSocket | None = None
        self._raw: Any = None
        self._stopping = False
        self._audio = _Lines()
        self._greenlets: list[gevent.Greenlet] = []
        self.rate = 8000
        self.connected = gevent.event.Event()
        self.ended = gevent.event.Event()
        self._call: Any = None
        self._t0 = 0.0
        self._n = 0  # frames queued so far (frame n is due at _t0 + n * 20 ms)
        self._cur: tuple[bytes, ...] = ()
        self._idx = 0
        self._line: _Line | None = None
        self._record: UtteranceRecord | None = None
        self._quiet: tuple[bytes, ...] = ()
        self._qi = 0
        self._out = b""  # bytes the kernel has not taken yet
        self._out_frames: deque[tuple[int, float]] = deque()  # (end offset in _out, due)
        self._closing = False
        self._done = gevent.event.Event()  # the pacer sent our close frame (or gave up)

    # -- AudioForkHook ------------------------------------------------------------------

    def start(self, url: str, mix: str, rate: str, metadata: str | None, call: Any) -> None:
        """Connect and stream in the background."""
        self.rate = parse_rate(rate)
        self._greenlets = [gevent.spawn(self._run, url, metadata, call),
                           gevent.spawn(self._synthesise, call)]

    def stop(self) -> None:
        """Close the WebSocket with 1000 (as ``uuid_audio_fork … stop`` does)."""
        self._stopping = True
        self._audio.put(None)

    # -- lines ----------------------------------------------------------------------------

    def _synthesise(self, call: Any) -> None:
        """Turn the caller's lines into PCM ahead of the frame clock."""
        while not self._stopping:
            text = call.next_utterance(timeout=None)
            if text is None or self._stopping:
                return
            try:
                pcm = (wav_pcm(text[5:].strip(), self.rate) if text.startswith("#wav ")
                       else synthesize_cached(text, self.voice, self.rate, self.speed))
            except Exception:  # noqa: BLE001 - a broken line must not end the call
                log.exception("emulator could not synthesise %r", text)
                continue
            self._line_ready(text, pcm)
            self._audio.put((text, pcm))

    def _line_ready(self, text: str, pcm: bytes) -> None:
        """Hook: a line is about to be queued (the load test registers its fingerprint)."""

    # -- connection -----------------------------------------------------------------------

    def _run(self, url: str, metadata: str | None, call: Any) -> None:
        sock = None
        try:
            sock = connect_ws(url, timeout=5)
            ws = websocket.create_connection(url, subprotocols=[SUBPROTOCOL], timeout=5,
                                             enable_multithread=False, socket=sock)
        except Exception as exc:  # noqa: BLE001 - like mod_audio_fork::connect_failed
            if sock is not None:
                sock.close()
            log.warning("audio fork connect to %s failed: %s", url, exc)
            # mod_audio_fork's body names no cause, whatever went wrong
            self._fire(call, "mod_audio_fork::connect_failed", '{"reason":"Unable to connect"}')
            self.ended.set()
            return
        self._ws = ws
        self._fire(call, "mod_audio_fork::connect")
        self.connected.set()
        pacer = None
        try:
            if metadata:
                ws.sock.sendall(_client_frame(0x1, metadata.encode()))
            ws.sock.settimeout(None)
            self._raw = getattr(ws.sock, "_sock", ws.sock)
            self._call = call
            self._quiet = _silence_frames(self.rate)
            pacer = _pacer()
            pacer.add(self)
            self._read(ws.sock)
        except OSError as exc:
            log.info("audio fork to %s ended: %s", url, exc)
        finally:
            if pacer is not None:
                pacer.remove(self)
            try:
                ws.sock.close()
            except Exception:  # noqa: BLE001
                pass
            self._fire(call, "mod_audio_fork::disconnect")
            self.ended.set()
            for g in self._greenlets:
                if g is not gevent.getcurrent():
                    g.kill(block=False)

    def _read(self, sock: Any) -> None:
        """Server frames: text is ignored, ping answered, a close answered and the fork ended.

        Once we sent our close, we wait up to 2 s for the server's.
        """
        buf = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                if self._closing or self._done.is_set():
                    return  # our close went out and the server dropped the socket
                raise
            if not data:
                return
            buf += data
            while len(buf) >= 2:
                op, ln = buf[0] & 0x0F, buf[1] & 0x7F
                hdr = 2
                if ln == 126:
                    if len(buf) < 4:
                        break
                    ln, hdr = struct.unpack("!H", buf[2:4])[0], 4
                elif ln == 127:
                    if len(buf) < 10:
                        break
                    ln, hdr = struct.unpack("!Q", buf[2:10])[0], 10
                if len(buf) < hdr + ln:
                    break
                payload, buf = buf[hdr:hdr + ln], buf[hdr + ln:]
                if op == 0x9:
                    self._queue_control(_client_frame(0xA, payload))
                elif op == 0x8:
                    self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 \
                        else 1005
                    if not self._closing:  # the server closes: answer, stop pacing
                        self._closing = True
                        self._queue_control(_client_frame(0x8, payload[:2]))
                    return

    def _queue_control(self, frame: bytes) -> None:
        """A control frame goes out through the pacer's buffer (never mid-frame)."""
        self._out += frame
        self._flush(time.monotonic())

    # -- pacing (called by the pacer, never blocks) ---------------------------------------

    def _pace(self, slot: float, now: float) -> None:
        if self._out:
            self._flush(now)
        if self._closing:
            return
        if self._drop_at is not None and self._n >= self._drop_at:
            log.info("audio fork: connection dropped after %d ms (scripted)", self._n * FRAME_MS)
            self._abort()
            return
        if self._stopping or getattr(self._call, "hung_up", False):
            self._closing = True
            self._out += _client_frame(0x8, struct.pack("!H", 1000))
            self._flush(now)
            _pacer().remove(self)
            self._done.set()
            reader = self._greenlets[0] if self._greenlets else None
            if reader is not None:  # the server has 2 s to answer our close
                gevent.spawn_later(2.0, reader.kill, block=False)
            return
        due = int((slot - self._t0) / FRAME_S + 0.5) + 1  # frames due by this slot
        k = due - self._n
        if k <= 0:
            return
        if k == 1 and not self._out:  # the usual case: one frame, nothing pending
            frame = self._next()
            slot_at = self._t0 + self._n * FRAME_S
            self._n += 1
            try:
                sent = self._raw.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._abort()
                return
            if sent == len(frame):
                self.frames_sent += 1
                if now - slot_at > LATE_S:
                    self.late += 1
            else:
                self._out = frame[sent:]
                self._out_frames.append((len(self._out), slot_at))
            return
        for _ in range(k):
            frame = self._next()
            self._out += frame
            self._out_frames.append((len(self._out), self._t0 + self._n * FRAME_S))
            self._n += 1
        self._flush(now)

    def _next(self) -> bytes:
        """The next frame to send: the current line's, else silence."""
        if self._idx >= len(self._cur):
            rec = self._record
            if rec is not None:
                rec.end_stream_ms = self._n * FRAME_MS
                self._record = None
            self._cur = ()
            self._idx = 0
            if self._audio:
                item = self._audio.popleft()
                if item is None:
                    self._stopping = True
                else:
                    text, pcm = item
                    self._line = _prepared(pcm, self.lead_ms, self.trail_ms, self.rate)
                    self._cur = self._line.frames
                    self._record = UtteranceRecord(text, time.monotonic())
                    self.records.append(self._record)
        if self._cur:
            frame = self._cur[self._idx]
            line = self._line
            if line is not None and self._idx == line.speech_idx and self._record is not None:
                rec = self._record
                rec.speech_at = time.monotonic()
                rec.speech_stream_ms = self._n * FRAME_MS
                if self.on_speech is not None:
                    self.on_speech(rec)
            self._idx += 1
        else:
            frame = self._quiet[self._qi]
            self._qi = (self._qi + 1) % len(self._quiet)
        return frame

    def _flush(self, now: float) -> None:
        """Hand what the kernel takes; count frames fully handed over (late or not)."""
        out = self._out
        try:
            sent = self._raw.send(out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._abort()
            return
        frames = self._out_frames
        while frames and frames[0][0] <= sent:
            _end, due = frames.popleft()
            self.frames_sent += 1
            if now - due > LATE_S:
                self.late += 1
        if sent >= len(out):
            self._out = b""
        else:
            self._out = out[sent:]
            if frames:
                self._out_frames = deque((e - sent, d) for e, d in frames)

    def _abort(self) -> None:
        """The socket failed: stop pacing this fork (its reader sees the error and ends)."""
        self._closing = True
        _pacer().remove(self)
        self._done.set()
        try:
            self._raw.shutdown(2)
        except (OSError, AttributeError):
            pass

    @staticmethod
    def _fire(call: Any, subclass: str, body: str | None = None) -> None:
        fire = getattr(call, "fire_custom", None)
        if fire is None:
            return
        try:
            fire(subclass, body=body)
        except Exception:  # noqa: BLE001 - events are best effort
            log.debug("could not fire %s", subclass, exc_info=True)
