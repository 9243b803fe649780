"""The mod_audio_fork WebSocket endpoint: caller audio in, JSON commands out.

FreeSWITCH (``uuid_audio_fork <uuid> start ws://host:port/fork/<uuid> mono 8k
<metadata>``) opens one WebSocket per call with subprotocol
``audio.drachtio.org``. The first text frame is the metadata JSON, which must
carry the per-call secret the call engine registered (``{"token": ...}``); then
binary frames of raw L16 arrive (320 bytes every 20 ms at 8 kHz, but treated as
a plain byte stream).

Why it is built this way (issue #9: a thousand streams, 50,000 frames a second,
on one 2-core machine):

- A connection greenlet (bounded gevent pool) does only the HTTP upgrade and
  waits for the metadata. Once the stream is authenticated it hands the socket
  to the server's single **reader**, and the greenlet ends: a live stream holds
  no greenlet (no saved C stack) and costs no greenlet switch per frame.
- The reader waits on one ``epoll`` (its fd watched by the gevent hub), then
  reads every ready socket once (level-triggered: what it leaves is read in the
  next batch) and pauses, so that frames of many streams are taken in one
  wake-up; the pause grows with the number of streams (5 ms, 30 ms at 500
  streams, up to 60 ms from 1000), so that under load one read takes two to four
  frames (1200 streams: 5.3-5.5 µs of server CPU per frame at 60 ms, 5.7-6.3 at
  30 ms, bench_frames 2026-12-07). Frames
  parse with integer header arithmetic (a run of plain binary frames takes a
  short fast loop) and unmask in C (websockets' ``apply_mask``); every
  binary payload of one read goes to the sink in one ``on_audio`` call (audio
  is a byte stream, frame boundaries mean nothing).
- Latency where it counts: a sink whose ``on_audio`` returns True (its VAD is
  in a voiced run that may be a barge-in, or the caller has been quiet for
  nearly the end of a turn) is read every ``urgent_ms`` (5 ms) during the pause,
  so the frame that decides waits 5 ms, not up to 30. Only streams in that state
  (a few at a time) cost the extra reads.
- Stalls are found by one watchdog greenlet scanning last-read times, not by a
  timer per stream.
- Nothing on the reader or the watchdog waits for a socket: a close frame that
  cannot leave at once (FreeSWITCH stopped reading) drops the connection, and other
  writes are bounded by ``send_timeout`` (then the stream is dropped), so one stuck
  peer never holds up the other streams.

The WebSocket rules still hold (RFC 6455): client frames must be masked, RSV
bits must be clear (no extension is negotiated), control frames are final and
≤ 125 bytes and may arrive between fragments, continuation frames need an open
message, text must be UTF-8, frames and messages are bounded by ``max_message``
(1009), the close handshake is answered and a close code validated.

Sink callbacks run on the reader (or the connection greenlet before hand-off)
and must not block: a call's sink runs its VAD inline (barge-in latency) and
queues anything else for the call's controller greenlet.

Close codes we send: 1008 (policy) for unknown calls, a missing/bad token, or
no metadata; 1011 after a stall; 1001 when the server shuts down; 1002, 1007,
1009 for protocol violations. Before the upgrade, refusals are HTTP responses:
400, 404, 426, 431; 408 when no complete upgrade request came within the
handshake deadline; 503 when the handshake slots are taken (see MediaServer).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import gevent
import gevent.lock
import gevent.pool
import gevent.socket as gsocket
from gevent.monkey import get_original
from gevent.server import StreamServer

from esl_app.support.bridge import cooperate
from esl_app.support.sockets import refuse

__all__ = [
    "SUBPROTOCOL",
    "MediaRegistry",
    "MediaServer",
    "StreamSink",
    "fork_metadata",
]

log = logging.getLogger(__name__)

SUBPROTOCOL = "audio.drachtio.org"
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
POLICY_VIOLATION = 1008
TOO_BIG = 1009
INTERNAL_ERROR = 1011
_PATH = re.compile(r"^/fork/([A-Za-z0-9._-]{1,128})/?(?:\?.*)?$")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 8192
_RECV = 16384
_MS_PER_STREAM = 0.06  # reader pause per live stream (500 streams: 30 ms)
_YIELD_EVERY = 64  # streams read between two yields to the rest of the hub in a batch
_CLOSE_WAIT_S = 2.0  # after our close frame, how long the peer gets to answer
_PROBATION_S = 1.0  # a connection in a reserved slot must name a live call this fast
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 24\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
         b"503 Service Unavailable\n")
# valid close codes a peer may send (RFC 6455 7.4; 1004-1006, 1015 are never sent)
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
                          1014))
_epoll = get_original("select", "epoll")
_EPOLLIN = get_original("select", "EPOLLIN")
_REP: dict[int, int] = {}


def _unmask_py(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with a repeated 4-byte mask, as one big-int operation (no byte loop)."""
    n = len(data)
    words = (n + 3) >> 2
    rep = _REP.get(words)
    if rep is None:  # 0x00000001_00000001_…: key * rep repeats the key ``words`` times
        rep = _REP[words] = int.from_bytes(b"\x01\x00\x00\x00" * words, "little")
    x = int.from_bytes(data, "little") ^ (int.from_bytes(key, "little") * rep)
    return x.to_bytes(n, "little") if not n & 3 else x.to_bytes(words * 4, "little")[:n]


try:  # websockets' C speedup: 0.2 µs for a 20 ms frame, the big-int XOR 2.6 µs
    from websockets.speedups import apply_mask as _unmask
except ImportError:  # pragma: no cover - websockets ships it in every binary wheel
    _unmask = _unmask_py


def _ws_audio_py(data: bytes, pos: int, limit: int) -> tuple[bytes | None, int]:
    """From ``pos``, a run of final masked binary frames with a 16-bit length.

    Their payloads unmasked and joined (``None``: no such frame at ``pos``) and the
    position after the last whole one; anything else stops it (a partial frame, text,
    control, a payload over ``limit``) and is left to the general loop.
    """
    n = len(data)
    audio: list[bytes] = []
    while n - pos > 8 and data[pos] == 0x82 and data[pos + 1] == 0xFE:
        ln = (data[pos + 2] << 8) | data[pos + 3]
        end = pos + 8 + ln
        if end > n or ln > limit:
            break
        audio.append(_unmask(data[pos + 8:end], data[pos + 4:pos + 8]))
        pos = end
    if not audio:
        return None, pos
    return (audio[0] if len(audio) == 1 else b"".join(audio)), pos


try:  # the same loop compiled (esl_app/media/_fastpath.c)
    from esl_app.media._fastpath import ws_audio as _ws_audio  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - built by every install with a C compiler
    _ws_audio = _ws_audio_py


def _frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked server frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def _close_frame(code: int, reason: str = "") -> bytes:
    return _frame(0x8, struct.pack("!H", code) + reason.encode()[:120])


class StreamSink(Protocol):
    """What the call engine registers per call to receive its audio."""

    def on_stream_start(self, metadata: Mapping[str, Any]) -> None:
        """The fork is connected and authenticated (metadata as sent)."""
        ...

    def on_audio(self, pcm: bytes) -> bool | None:
        """More caller audio (L16 at the fork's rate; any length).

        Return True while a time-critical decision waits on the next frames (a
        barge-in not yet confirmed, a turn about to end): the reader then reads this
        stream every ``urgent_ms`` instead of at the batch cadence. None or False
        otherwise.
        """
        ...

    def on_stream_end(self, reason: str) -> None:
        """The stream ended, with a reason.

        ``closed`` (code 1000, e.g. fork stop), ``closed:<code>``, ``disconnected``
        (socket lost), ``stalled`` (no audio for ``stall_ms``), ``replaced`` (a newer
        fork of the call connected), ``shutdown``.
        """
        ...


@dataclass
class _Entry:
    sink: StreamSink
    token: str
    conn: _Connection | None = field(default=None, repr=False)


class MediaRegistry:
    """Call uuid -> (sink, secret token); the only calls the server accepts."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def register(self, call_uuid: str, sink: StreamSink, token: str | None = None) -> str:
        """Accept forks of this call; returns the token to put in the fork metadata."""
        token = token or secrets.token_urlsafe(18)
        self._entries[call_uuid] = _Entry(sink, token)
        return token

    def unregister(self, call_uuid: str) -> None:
        """Forget the call (on hang-up); an open stream of it is closed."""
        entry = self._entries.pop(call_uuid, None)
        if entry and entry.conn:
            entry.conn.close(NORMAL, "call ended", notify=False)

    def get(self, call_uuid: str) -> _Entry | None:
        """The registration of a call, or None."""
        return self._entries.get(call_uuid)

    def __contains__(self, call_uuid: object) -> bool:
        return call_uuid in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def fork_metadata(token: str, **extra: Any) -> str:
    """Metadata for ``uuid_audio_fork``: compact JSON (FreeSWITCH splits args on spaces)."""
    text = json.dumps({"token": token, **extra}, separators=(",", ":"))
    if " " in text:
        raise ValueError("fork metadata must not contain spaces")
    return text


class _Throttle:
    """At most one WARNING per ``every`` seconds of each kind; the next counts the rest.

    Anyone who can reach the port can make a refused connection; one line each
    would let them flood the log (issue #31).
    """

    def __init__(self, every: float) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._held[kind] = self._held.get(kind, 0) + 1
            log.debug(msg, *args)
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            msg += " (and %d more since the last such warning)"
            args = (*args, held)
        log.warning(msg, *args)


class _Evicted(Exception):
    """A newer connection needs the reserved slot this one has not used to name a call."""


class _Fail(Exception):
    """A protocol violation: close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Connection:
    """One mod_audio_fork WebSocket: RFC 6455 server side, parsed by hand for speed."""

    __slots__ = ("server", "sock", "raw", "fd", "_wlock", "call_uuid", "entry", "started",
                 "ended", "closed", "done", "bytes_in", "last_rx", "close_at", "_buf", "_frag",
                 "_text", "in_reader", "urgent", "upgraded", "known")

    def __init__(self, server: MediaServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock  # the gevent socket: blocking-style writes from any greenlet
        self.raw: Any = getattr(sock, "_sock", sock)  # the non-blocking OS socket (reader)
        self.fd = sock.fileno()
        self._wlock = gevent.lock.Semaphore()
        self.call_uuid: str | None = None
        self.entry: _Entry | None = None
        self.started = False  # metadata accepted: audio goes to the sink
        self.ended = False  # the sink was told (or must never be)
        self.closed = False  # we sent (or answered) a close frame
        self.done = False  # socket released
        self.bytes_in = 0
        self.last_rx = 0.0
        self.close_at = 0.0
        self._buf = b""  # an incomplete frame from the previous read
        self._frag = 0  # opcode of the fragmented message in progress (0: none)
        self._text: bytearray | None = None
        self.in_reader = False
        self.urgent = False  # the sink asked for its next audio soon (see StreamSink)
        self.upgraded = False  # our 101 went out: errors are WebSocket closes from now on
        self.known = False  # the path names a registered call (counted apart, see MediaServer)

    # -- writing ---------------------------------------------------------------------------

    def _sendall(self, data: bytes) -> None:
        """Blocking write, from a controller greenlet (or the connection greenlet before hand-over).

        Bounded by the server's ``send_timeout``, lock wait included: a peer that stops
        reading must not hold the caller, nor the write lock that the reader's close and
        pong would wait for. A write that failed or was cut short may have left half a
        frame on the wire, so the connection is dropped (the sink hears ``disconnected``).
        """
        try:
            with self._deadline():
                with self._wlock:
                    self.sock.sendall(data)
        except OSError:
            self._drop("disconnected")
            raise

    def _deadline(self) -> gevent.Timeout:
        return gevent.Timeout(self.server.send_timeout, TimeoutError("audio fork write timed out"))

    def _send_nowait(self, data: bytes, *, drop_if_stuck: bool = False) -> None:
        """Send without ever blocking the caller (the reader, the watchdog).

        What the socket does not take at once is finished by a greenlet, bounded like
        :meth:`_sendall`. ``drop_if_stuck`` (close frames): if a write is already waiting
        (lock held) or the socket buffer is full, the peer is not reading and would never
        see our close frame: the connection is dropped at once instead.
        """
        if not self._wlock.acquire(blocking=False):
            if drop_if_stuck:
                self.release()
            else:
                gevent.spawn(self._sendall_quiet, data)
            return
        try:
            sent = self.raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._wlock.release()
            return
        if sent >= len(data):
            self._wlock.release()
            return
        if drop_if_stuck:
            self._wlock.release()
            self.release()
            return
        gevent.spawn(self._finish_send, data[sent:])  # keeps the lock: nothing interleaves

    def _finish_send(self, rest: bytes) -> None:
        try:
            with self._deadline():
                self.sock.sendall(rest)
        except OSError:
            self._wlock.release()
            self._drop("disconnected")  # half a frame went out: the stream is unusable
            return
        self._wlock.release()

    def _sendall_quiet(self, data: bytes) -> None:
        try:
            self._sendall(data)
        except OSError:
            pass

    def send_json(self, obj: Any) -> None:
        """Send one JSON text frame to FreeSWITCH (e.g. ``{"type": "killAudio"}``)."""
        self._sendall(_frame(0x1, json.dumps(obj, separators=(",", ":")).encode()))

    # -- ending ----------------------------------------------------------------------------

    def _end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        entry = self.entry
        if entry is not None and entry.conn is self:
            entry.conn = None
        if self.started and entry is not None:
            try:
                entry.sink.on_stream_end(reason)
            except Exception:
                log.exception("media sink on_stream_end failed for %s", self.call_uuid)

    def close(self, code: int, reason: str = "", notify: bool = True,
              end_reason: str | None = None) -> None:
        """Close with ``code`` (any greenlet); tell the sink unless ``notify`` is False.

        Never blocks. The peer then has ``_CLOSE_WAIT_S`` to answer with its close
        frame before the socket is dropped; a peer whose socket cannot take the close
        frame at once is dropped straight away.
        """
        if not notify:
            self.ended = True
        if not self.closed:
            self.closed = True
            self.close_at = gevent.get_hub().loop.now()
            # never waits: this runs on the reader and the watchdog, shared by every stream
            self._send_nowait(_close_frame(code, reason), drop_if_stuck=True)
        self._end(end_reason or f"closed:{code}")

    def _drop(self, reason: str) -> None:
        """Give up on the connection without a close handshake (its writes are stuck)."""
        self.closed = True
        self._end(reason)
        self.release()

    def release(self) -> None:
        """Drop the socket (our close frame, if any, leaves before FIN)."""
        if self.done:
            return
        self.done = True
        entry = self.entry
        if entry is not None and entry.conn is self:
            entry.conn = None
        self.server._forget(self)
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.close()

    # -- reading ---------------------------------------------------------------------------

    def consume(self, data: bytes) -> bool:
        """Parse received bytes; deliver audio; False once the connection is finished."""
        try:
            return self._parse(data)
        except _Fail as exc:
            log.warning("audio fork %s: protocol error: %s", self.call_uuid, exc.reason)
            self.close(exc.code, exc.reason)
            return False

    def _parse(self, data: bytes) -> bool:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        n = len(data)
        audio: list[bytes] = []
        pos = 0
        if self.started and not self._frag and not self.closed:
            # fast path: a run of final masked binary frames of 126..65535 bytes (a 20 ms
            # frame is 320 or 640; a read under load holds one to three); whatever else
            # follows (a partial frame, text, control, a violation) takes the general loop
            pcm, pos = _ws_audio(data, 0, self.server.max_message)
            if pcm is not None:
                audio.append(pcm)
            if pos == n:
                self._deliver(audio)
                return True
        try:
            return self._frames(data, pos, n, audio)
        except _Fail:
            if audio:  # what came before the violation is still the caller's audio
                self._deliver(audio)
            raise

    def _frames(self, data: bytes, pos: int, n: int, audio: list[bytes]) -> bool:
        """The general loop over every complete frame in ``data[pos:n]``.

        Binary payloads gather in ``audio`` (which may hold the fast path's) and
        reach the sink together.
        """
        limit = self.server.max_message
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            if not b1 & 0x80:
                raise _Fail(PROTOCOL_ERROR, "unmasked client frame")
            if b0 & 0x70:
                raise _Fail(PROTOCOL_ERROR, "reserved bits set")
            opcode = b0 & 0x0F
            ln = b1 & 0x7F
            if opcode >= 8:
                if not b0 & 0x80 or ln > 125:
                    raise _Fail(PROTOCOL_ERROR, "bad control frame")
                if opcode > 10:
                    raise _Fail(PROTOCOL_ERROR, f"unknown opcode {opcode}")
            elif opcode > 2:
                raise _Fail(PROTOCOL_ERROR, f"unknown opcode {opcode}")
            hdr = 6
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                hdr = 8
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2:pos + 10], "big")
                hdr = 14
            if ln > limit:
                raise _Fail(TOO_BIG, "frame too big")
            end = pos + hdr + ln
            if end > n:
                break
            payload = _unmask(data[pos + hdr:end], data[pos + hdr - 4:pos + hdr]) if ln else b""
            pos = end
            fin = b0 & 0x80
            if opcode == 2 or (opcode == 0 and self._frag == 2):
                if opcode == 2 and self._frag:
                    raise _Fail(PROTOCOL_ERROR, "new message inside a fragmented one")
                self._frag = 0 if fin else 2
                if not self.started:
                    self.close(POLICY_VIOLATION, "metadata first")
                    return False
                if ln:
                    audio.append(payload)
            elif opcode == 1 or opcode == 0:
                if opcode == 1:
                    if self._frag:
                        raise _Fail(PROTOCOL_ERROR, "new message inside a fragmented one")
                    self._text = bytearray()
                elif self._frag != 1 or self._text is None:
                    raise _Fail(PROTOCOL_ERROR, "continuation without a message")
                self._text += payload
                if len(self._text) > limit:
                    raise _Fail(TOO_BIG, "message too big")
                self._frag = 0 if fin else 1
                if fin:
                    raw, self._text = bytes(self._text), None
                    try:
                        msg = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        raise _Fail(INVALID_DATA, "text is not UTF-8") from None
                    if audio:
                        self._deliver(audio)
                        audio.clear()
                    if not self._on_text(msg):
                        return False
            elif opcode == 9:
                if not self.closed:
                    self._send_nowait(_frame(0xA, payload))
            elif opcode == 8:
                if audio:
                    self._deliver(audio)
                    audio.clear()
                return self._on_close(payload)
            # opcode 10 (pong): nothing to do
        if pos < n:
            self._buf = data[pos:] if pos else data
        if audio:
            self._deliver(audio)
            audio.clear()
        return True

    def _deliver(self, audio: list[bytes]) -> None:
        if self.closed:
            self.urgent = False
            return  # closing: what still arrives is dropped
        pcm = audio[0] if len(audio) == 1 else b"".join(audio)
        self.bytes_in += len(pcm)
        self.urgent = self.entry.sink.on_audio(pcm) is True  # type: ignore[union-attr]

    def _on_close(self, payload: bytes) -> bool:
        if len(payload) == 1:
            raise _Fail(PROTOCOL_ERROR, "bad close frame")
        code = 1005
        if payload:
            code = (payload[0] << 8) | payload[1]
            if code not in _VALID_CLOSE and not 3000 <= code <= 4999:
                raise _Fail(PROTOCOL_ERROR, "bad close code")
            try:
                payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise _Fail(INVALID_DATA, "close reason is not UTF-8") from None
        if not self.closed:
            self.closed = True
            self._send_nowait(_close_frame(NORMAL if code == 1005 else code),
                              drop_if_stuck=True)
        self._end("closed" if code in (1000, 1005) else f"closed:{code}")
        return False

    def _on_text(self, msg: str) -> bool:
        if self.started:
            log.debug("fork %s text: %s", self.call_uuid, msg[:200])
            return True
        entry = self.server.registry.get(self.call_uuid or "")
        try:
            meta = json.loads(msg)
        except ValueError:
            meta = None
        token = meta.get("token") if isinstance(meta, dict) else None
        if entry is None or not isinstance(token, str) or not hmac.compare_digest(
                token.encode(), entry.token.encode()):
            self.server.warnings.warning("bad-token", "audio fork for %s refused: bad token",
                                         self.call_uuid)
            self.close(POLICY_VIOLATION, "bad token")
            return False
        old = entry.conn
        if old is not None and old is not self:
            old.close(NORMAL, "replaced", end_reason="replaced")
        self.entry = entry
        entry.conn = self
        self.started = True
        self.last_rx = gevent.get_hub().loop.now()
        entry.sink.on_stream_start(meta)
        return True

    # -- the connection greenlet: upgrade + metadata --------------------------------------

    def serve(self, probation: bool = False) -> None:
        """Handshake and metadata; then hand the socket to the reader and return.

        Upgrade and metadata together must be done within ``handshake_timeout``: one
        deadline, not one per read, or a byte every few seconds would hold the slot
        for ever. On ``probation`` (a reserved slot) the request head must name a
        registered call within ``_PROBATION_S``.
        """
        srv = self.server
        handed = False
        end = time.monotonic() + srv.handshake_timeout
        try:
            rest = self._handshake(min(end, time.monotonic() + _PROBATION_S)
                                   if probation else end, probation)
            if rest is None:
                return
            if rest and not self.consume(rest):
                return
            while not self.started and not self.closed:
                data = self._recv_by(end)
                if not data:
                    self._end("disconnected")
                    return
                if not self.consume(data):
                    return
            if self.started and not self.closed:
                self.sock.settimeout(None)
                handed = srv._reader_add(self)
        except _Evicted:
            self._reject(503, "Service Unavailable", "Retry-After: 1\r\n")
        except TimeoutError:
            if not self.upgraded:  # still HTTP: say so in HTTP, not with a WebSocket frame
                self._reject(408, "Request Timeout")
            elif self.started:
                self.close(INTERNAL_ERROR, "stalled", end_reason="stalled")
            else:
                self.close(POLICY_VIOLATION, "no metadata")
        except (OSError, ConnectionError):
            self._end("disconnected")
        except Exception:
            log.exception("audio fork connection failed")
            self._end("disconnected")
        finally:
            if not handed:
                self.release()

    def _recv_by(self, end: float, size: int = _RECV) -> bytes:
        """One read that must come by ``end`` (monotonic); TimeoutError after it."""
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("audio fork handshake deadline")
        self.sock.settimeout(left)
        return self.sock.recv(size)  # type: ignore[no-any-return]

    def _handshake(self, end: float, probation: bool = False) -> bytes | None:
        """Read the HTTP upgrade by ``end`` and answer it; returns bytes read past it."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            if len(buf) > _MAX_HEAD:
                self._reject(431, "Request Header Fields Too Large")
                return None
            data = self._recv_by(end, 4096)
            if not data:
                return None
            buf += data
        self.server._probation.pop(gevent.getcurrent(), None)  # the head is in: no eviction
        head, _, rest = buf.partition(b"\r\n\r\n")
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise ValueError(line)
                key = name.strip().lower()
                headers[key] = (headers[key] + ", " if key in headers else "") + value.strip()
        except ValueError:
            self._reject(400, "Bad Request")
            return None
        upgrade = {t.strip().lower() for t in headers.get("upgrade", "").split(",")}
        conn_tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        key = headers.get("sec-websocket-key", "")
        try:
            key_ok = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            key_ok = False
        if method != "GET" or version != "HTTP/1.1" or "websocket" not in upgrade \
                or "upgrade" not in conn_tokens or not key_ok or "host" not in headers:
            self._reject(400, "Bad Request")
            return None
        if headers.get("sec-websocket-version") != "13":
            self._reject(426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n")
            return None
        m = _PATH.match(target)
        if not m:
            self._reject(404, "Not Found")
            return None
        self.call_uuid = m.group(1)
        if self.server.registry.get(self.call_uuid) is not None:
            self.server._known(self)
        elif probation:  # a reserved slot is for live calls only
            self._reject(503, "Service Unavailable", "Retry-After: 1\r\n")
            return None
        offered = {p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")}
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        resp = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n")
        if SUBPROTOCOL in offered:
            resp += f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
        self._sendall((resp + "\r\n").encode())
        self.upgraded = True
        if self.server.registry.get(self.call_uuid) is None:  # unknown (or ended meanwhile)
            self.server.warnings.warning("unknown", "audio fork for unknown call %s refused",
                                         self.call_uuid)
            self.close(POLICY_VIOLATION, "unknown call")
            return None
        return rest

    def _reject(self, status: int, text: str, extra: str = "") -> None:
        """An HTTP error response (before the upgrade); the caller releases the socket."""
        self.closed = True
        self.ended = True
        body = f"{status} {text}\n".encode()
        try:
            self.sock.settimeout(None)  # the deadline may be spent: _sendall has its own
            self._sendall(f"HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\n"
                          f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
                          .encode() + body)
        except OSError:
            pass


class _Reader:
    """Reads every handed-over stream of one server from one greenlet (see module notes)."""

    def __init__(self, server: MediaServer) -> None:
        self.server = server
        self.ep = _epoll()
        self.conns: dict[int, _Connection] = {}
        self.hot: set[_Connection] = set()  # streams whose sink asked for audio soon
        hub = gevent.get_hub()
        self._watcher = hub.loop.io(self.ep.fileno(), 1)
        self._glets = [gevent.spawn(self._run), gevent.spawn(self._watchdog)]
        self.batches = 0
        self.reads = 0
        self.urgent_reads = 0

    def add(self, conn: _Connection) -> None:
        conn.in_reader = True
        conn.last_rx = gevent.get_hub().loop.now()
        self.conns[conn.fd] = conn
        self.ep.register(conn.fd, _EPOLLIN)

    def remove(self, conn: _Connection) -> None:
        self.hot.discard(conn)
        if self.conns.get(conn.fd) is conn:
            del self.conns[conn.fd]
            try:
                self.ep.unregister(conn.fd)
            except (OSError, ValueError):
                pass

    def _run(self) -> None:
        hub = gevent.get_hub()
        loop = hub.loop
        poll = self.ep.poll
        conns = self.conns
        srv = self.server
        while True:
            try:
                self._batch(hub, loop, poll, conns)
            except Exception:  # noqa: BLE001 - the reader must outlive any one stream's bug
                log.exception("media reader batch failed")
            # the pause grows with the streams: at real time a socket holds one frame per
            # 20 ms, so under load longer pauses read two or three frames per recv
            pause = min(srv.max_batch_ms, max(srv.batch_ms, len(conns) * _MS_PER_STREAM))
            if not pause:
                continue
            if not (self.hot and srv.urgent_ms < pause):
                gevent.sleep(pause / 1000.0)
                continue
            try:
                self._urgent_until(loop, loop.now() + pause / 1000.0)
            except Exception:  # noqa: BLE001 - as above
                log.exception("media reader urgent read failed")
                self.hot.clear()

    def _urgent_until(self, loop: Any, end: float) -> None:
        """Pause until ``end``, reading the hot streams every ``urgent_ms`` meanwhile.

        A barge-in is confirmed by the frame that completes the caller's voiced run;
        waiting for the next batch would add up to the whole pause (30 ms at 500
        streams) to its reaction; so would the end of the caller's turn. Only the few
        streams in that state are read early.
        """
        step = self.server.urgent_ms / 1000.0
        hot = self.hot
        while hot:
            left = end - loop.now()
            if left <= step:
                break
            gevent.sleep(step)
            now = loop.now()
            for conn in list(hot):
                if conn.done:
                    hot.discard(conn)
                    continue
                self.urgent_reads += 1
                self._read(conn, now)
        left = end - loop.now()
        if left > 0:
            gevent.sleep(left)

    def _batch(self, hub: Any, loop: Any, poll: Any, conns: dict[int, _Connection]) -> None:
        """Wait until some stream is readable, then read every ready one once."""
        hub.wait(self._watcher)
        ready = poll(0, 4096)
        now = loop.now()
        self.batches += 1
        self.reads += len(ready)
        read = self._read
        for i, (fd, _ev) in enumerate(ready):
            if i and not i % _YIELD_EVERY:
                # a batch of 500 streams is ~10 ms of work: let the calls' ESL traffic
                # (set-up, uuid_break on a barge-in just detected) run in between
                cooperate()
                now = loop.now()
            conn = conns.get(fd)
            if conn is not None:
                read(conn, now)

    def _read(self, conn: _Connection, now: float) -> None:
        """One non-blocking read of ``conn``: parse and deliver it, or end the stream."""
        try:
            data = conn.raw.recv(_RECV)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            conn._end("disconnected")
            conn.release()
            return
        conn.last_rx = now
        try:
            alive = conn.consume(data)
        except Exception:
            log.exception("audio fork %s: sink failed", conn.call_uuid)
            conn.close(INTERNAL_ERROR, "internal error", end_reason="disconnected")
            alive = False
        if not alive:  # close handshake done, or we failed the connection
            conn.release()
        elif conn.urgent:
            self.hot.add(conn)
        elif self.hot:
            self.hot.discard(conn)

    def _watchdog(self) -> None:
        """Stalled streams and unanswered close frames, every quarter of ``stall_ms``."""
        srv = self.server
        loop = gevent.get_hub().loop
        stall_s = srv.stall_ms / 1000.0
        while True:
            gevent.sleep(max(0.02, stall_s / 4))
            now = loop.now()
            for conn in list(self.conns.values()):
                if conn.closed:
                    if conn.close_at and now - conn.close_at > _CLOSE_WAIT_S:
                        conn.release()
                elif now - conn.last_rx > stall_s:
                    # look before judging: if this hub was held up (a blocking syscall, a
                    # page fault, a starved core) the frames wait in the socket, and the
                    # stream is late only because we did not read it
                    self._read(conn, now)
                    if conn.done or conn.last_rx == now:
                        continue
                    log.warning("audio fork of %s stalled", conn.call_uuid)
                    conn.close(INTERNAL_ERROR, "stalled", end_reason="stalled")

    def stop(self) -> None:
        # let go of the greenlets before they die: a killed one keeps its GreenletExit,
        # whose traceback holds the frame whose ``self`` is this reader (a cycle that
        # would keep every stream's registry entry and sink for the cyclic collector)
        glets, self._glets = self._glets, []
        for g in glets:
            g.kill(block=False)
        self._watcher.stop()
        self.ep.close()


class MediaServer:
    """The audio-fork WebSocket server (gevent ``StreamServer`` + one epoll reader).

    ``registry`` decides which calls may stream (see :class:`MediaRegistry`);
    ``stall_ms`` is how long a started stream may go without any data before
    the sink is told ``stalled``; ``max_streams`` bounds concurrent handshakes
    (upgrade plus metadata, all within ``handshake_timeout``), of which
    ``known_reserve`` (default a tenth) are kept for forks whose path names a
    registered call: once the other slots are taken, a new connection must name
    one within a second, and with every slot taken it displaces the oldest that
    has not (or gets an immediate 503), so idle or trickling sockets cannot keep
    a live call's fork out (issue #31); refused connections log one WARNING per
    ``warn_every`` seconds of each kind, with a count of the rest;
    the reader pauses between batches ``batch_ms`` at least, growing with the
    live streams (0.06 ms each) up to ``max_batch_ms``: the most latency a
    frame can gain, traded for CPU (bench/bench_frames.py: at 200 real-time
    streams 19 µs of server CPU per frame with 5 ms pauses, 14 µs with 40 ms);
    a stream whose sink asks for its next audio soon (``on_audio`` returned True:
    a barge-in under way, a turn about to end) is read every ``urgent_ms`` during
    those pauses;
    ``max_message`` bounds a frame or text message (larger: close 1009);
    ``send_timeout`` bounds a write to a stream (``send_json``): a FreeSWITCH side that
    stops reading gets its stream dropped, and ``send_json`` returns False.
    """

    def __init__(self, host: str, port: int, registry: MediaRegistry, *,
                 stall_ms: int = 1500, handshake_timeout: float = 5.0,
                 max_streams: int = 2000, batch_ms: float = 5.0, max_batch_ms: float = 60.0,
                 urgent_ms: float = 5.0, max_message: int = 1 << 20,
                 send_timeout: float = 2.0, known_reserve: int | None = None,
                 warn_every: float = 60.0) -> None:
        if max_streams < 1 or handshake_timeout <= 0:
            raise ValueError("max_streams and handshake_timeout must be positive")
        if known_reserve is None:
            known_reserve = max_streams // 10
        if not 0 <= known_reserve < max_streams:
            raise ValueError("known_reserve must be from 0 to max_streams - 1")
        self.registry = registry
        self.max_streams = max_streams
        self.known_reserve = known_reserve
        self.warnings = _Throttle(warn_every)
        self._handshakes = 0  # connection greenlets (upgrade + metadata) alive
        self._unknown = 0  # of those, not (yet) known to be a registered call's fork
        # started connections in reserved slots that have not named a call, oldest first
        self._probation: dict[Any, _Connection] = {}
        self.refused = 0
        self.evicted = 0
        self.send_timeout = send_timeout
        self.stall_ms = stall_ms
        self.handshake_timeout = handshake_timeout
        self.batch_ms = batch_ms
        self.max_batch_ms = max(batch_ms, max_batch_ms)
        self.urgent_ms = urgent_ms
        self.max_message = max_message
        # unbounded: only for stop(); admission is _admit's (a full gevent pool would stop
        # accepting, and the forks of live calls would queue behind idle sockets)
        self._pool = gevent.pool.Pool()
        self._conns: set[_Connection] = set()
        self._reader: _Reader | None = None
        self._server = StreamServer((host, port), self._handle, spawn=self._admit)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (port 0 -> ephemeral)."""
        return self._server.address[:2]

    def start(self) -> MediaServer:
        """Bind and accept in the background; returns self."""
        self._server.start()
        return self

    def serve_forever(self) -> None:
        """Start and block until stopped."""
        self._server.serve_forever()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, close every stream with 1001 (sinks get ``shutdown``)."""
        self._server.close()
        for conn in list(self._conns):
            conn.close(GOING_AWAY, "shutdown", end_reason="shutdown")
            if conn.in_reader:
                conn.release()
        self._pool.join(timeout=timeout)
        self._pool.kill(timeout=timeout)
        if self._reader is not None:
            self._reader.stop()
            self._reader = None

    def send_json(self, call_uuid: str, obj: Any) -> bool:
        """Send a JSON text frame to the call's fork; False if it has no live stream."""
        entry = self.registry.get(call_uuid)
        conn = entry.conn if entry else None
        if conn is None or conn.closed:
            return False
        try:
            conn.send_json(obj)
        except OSError:
            return False
        return True

    def close_stream(self, call_uuid: str, code: int = NORMAL, reason: str = "") -> None:
        """Close a call's stream from our side (the sink is not notified)."""
        entry = self.registry.get(call_uuid)
        if entry and entry.conn:
            entry.conn.close(code, reason, notify=False)

    @property
    def active_streams(self) -> int:
        """Connections currently open."""
        return len(self._conns)

    @property
    def reader_stats(self) -> dict[str, int]:
        """Reader batches and socket reads so far (reads per batch shows the batching).

        ``urgent_reads``: reads of streams whose sink asked for audio soon, between batches.
        """
        r = self._reader
        if r is None:
            return {"batches": 0, "reads": 0, "urgent_reads": 0}
        return {"batches": r.batches, "reads": r.reads, "urgent_reads": r.urgent_reads}

    def _reader_add(self, conn: _Connection) -> bool:
        if self._reader is None:
            self._reader = _Reader(self)
        self._reader.add(conn)
        return True

    def _forget(self, conn: _Connection) -> None:
        self._conns.discard(conn)
        if conn.in_reader and self._reader is not None:
            self._reader.remove(conn)

    def _admit(self, func: Any, handle: Any, close: Any, args: tuple[Any, ...]) -> Any:
        """StreamServer's spawn: a slot, a reserved slot (probation), or an immediate 503."""
        accepted, addr = args
        if self._handshakes >= self.max_streams and not self._evict():
            self.refused += 1
            self.warnings.warning("full", "audio fork refused: all %d handshake slots taken",
                                  self.max_streams)
            refuse(accepted, _BUSY)
            return None
        probation = self._unknown >= self.max_streams - self.known_reserve
        self._handshakes += 1
        self._unknown += 1
        return self._pool.spawn(func, handle, close, (accepted, addr, probation))

    def _evict(self) -> bool:
        """Displace the oldest reserved-slot connection that has not named a call."""
        while self._probation:
            glet = next(iter(self._probation))
            self._probation.pop(glet)
            if not glet.dead:
                self.evicted += 1
                glet.kill(_Evicted(), block=False)
                return True
        return False

    def _known(self, conn: _Connection) -> None:
        """The connection is a registered call's fork: it no longer counts as unknown."""
        if not conn.known:
            conn.known = True
            self._unknown -= 1

    def _handle(self, accepted: socket.socket, _addr: Any, probation: bool = False) -> None:
        # StreamServer closes the accepted socket object when this returns; the stream
        # outlives the greenlet, so it owns the descriptor through a socket of its own.
        conn: _Connection | None = None
        try:
            sock = gsocket.socket(accepted.family, accepted.type, accepted.proto,
                                  fileno=accepted.detach())
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            self._conns.add(conn)
            if probation:
                self._probation[gevent.getcurrent()] = conn
            conn.serve(probation)
        finally:
            self._handshakes -= 1
            if conn is None or not conn.known:
                self._unknown -= 1
            self._probation.pop(gevent.getcurrent(), None)


