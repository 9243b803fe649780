"""The mod_audio_fork WebSocket endpoint: caller audio in, JSON commands out.

FreeSWITCH (``uuid_audio_fork <uuid> start ws://host:port/fork/<uuid> mono 8k
<metadata>``) opens one WebSocket per call with subprotocol
``audio.drachtio.org``. The first text frame is the metadata JSON, which must
carry the per-call secret the call engine registered (``{"token": ...}``); then
binary frames of raw L16 arrive (320 bytes every 20 ms at 8 kHz, but treated as
a plain byte stream).

One greenlet per connection (a bounded gevent pool, no polling accept loop).
Sink callbacks run in that greenlet and must not block: a call's sink should
run its VAD inline (barge-in latency) and queue anything else for the call's
controller greenlet.

Close codes we send: 1008 (policy) for unknown calls, a missing/bad token, or
no metadata; 1011 after a stall; 1001 when the server shuts down.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import gevent
import gevent.lock
import gevent.pool
from gevent.server import StreamServer
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

__all__ = [
    "SUBPROTOCOL",
    "MediaRegistry",
    "MediaServer",
    "StreamSink",
    "fork_metadata",
]

log = logging.getLogger(__name__)

SUBPROTOCOL = "audio.drachtio.org"
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
GOING_AWAY = 1001
_PATH = re.compile(r"^/fork/([A-Za-z0-9._-]{1,128})/?(?:\?.*)?$")


class StreamSink(Protocol):
    """What the call engine registers per call to receive its audio."""

    def on_stream_start(self, metadata: Mapping[str, Any]) -> None:
        """The fork is connected and authenticated (metadata as sent)."""
        ...

    def on_audio(self, pcm: bytes) -> None:
        """More caller audio (L16 at the fork's rate; any length)."""
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
            entry.conn.close(1000, "call ended", notify=False)

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


class _Connection:
    """One mod_audio_fork WebSocket."""

    def __init__(self, server: MediaServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.ws = WSConnection(ConnectionType.SERVER)
        self._wlock = gevent.lock.Semaphore()
        self.call_uuid: str | None = None
        self.entry: _Entry | None = None
        self.started = False
        self.ended = False
        self.closed = False
        self.bytes_in = 0

    def _send(self, event: Any) -> None:
        data = self.ws.send(event)
        with self._wlock:
            self.sock.sendall(data)

    def send_json(self, obj: Any) -> None:
        """Send one JSON text frame to FreeSWITCH (e.g. ``{"type": "killAudio"}``)."""
        self._send(Message(data=json.dumps(obj, separators=(",", ":"))))

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
        """Close with ``code``; tell the sink unless ``notify`` is False."""
        if not notify:
            self.ended = True
        if not self.closed:
            self.closed = True
            try:
                self._send(CloseConnection(code=code, reason=reason))
            except Exception:  # noqa: BLE001 - peer may be gone already
                pass
        self._end(end_reason or f"closed:{code}")

    def serve(self) -> None:
        srv = self.server
        text: list[str] = []
        self.sock.settimeout(srv.handshake_timeout)
        try:
            while not self.closed:
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    if self.started:
                        log.warning("audio fork of %s stalled", self.call_uuid)
                        self.close(INTERNAL_ERROR, "stalled", end_reason="stalled")
                    else:
                        self.close(POLICY_VIOLATION, "no metadata")
                    return
                self.ws.receive_data(data or None)
                for event in self.ws.events():
                    if isinstance(event, Request):
                        self._on_request(event)
                    elif isinstance(event, BytesMessage):
                        if not self.started:
                            self.close(POLICY_VIOLATION, "metadata first")
                            return
                        self.bytes_in += len(event.data)
                        self.entry.sink.on_audio(bytes(event.data))  # type: ignore[union-attr]
                    elif isinstance(event, TextMessage):
                        text.append(event.data)
                        if event.message_finished:
                            msg, text = "".join(text), []
                            if not self.started:
                                self._on_metadata(msg)
                            else:
                                log.debug("fork %s text: %s", self.call_uuid, msg[:200])
                    elif isinstance(event, Ping):
                        self._send(event.response())
                    elif isinstance(event, CloseConnection):
                        if not self.closed:
                            self.closed = True
                            try:
                                self._send(event.response())
                            except Exception:  # noqa: BLE001
                                pass
                        self._end("closed" if event.code == 1000 else f"closed:{event.code}")
                        return
                if not data:
                    self._end("disconnected")
                    return
        except (OSError, ConnectionError):
            self._end("disconnected")
        except Exception:
            log.exception("audio fork connection failed")
            self._end("disconnected")
        finally:
            if self.entry is not None and self.entry.conn is self:
                self.entry.conn = None
            try:
                self.sock.shutdown(socket.SHUT_WR)  # our close frame goes out before FIN
            except OSError:
                pass
            self.sock.close()

    def _on_request(self, req: Request) -> None:
        m = _PATH.match(req.target)
        if not m:
            self.closed = True
            self._send(RejectConnection(status_code=404))
            return
        self.call_uuid = m.group(1)
        proto = SUBPROTOCOL if SUBPROTOCOL in req.subprotocols else None
        self._send(AcceptConnection(subprotocol=proto))
        entry = self.server.registry.get(self.call_uuid)
        if entry is None:
            log.warning("audio fork for unknown call %s refused", self.call_uuid)
            self.close(POLICY_VIOLATION, "unknown call")

    def _on_metadata(self, msg: str) -> None:
        entry = self.server.registry.get(self.call_uuid or "")
        try:
            meta = json.loads(msg)
        except ValueError:
            meta = None
        token = meta.get("token") if isinstance(meta, dict) else None
        if entry is None or not isinstance(token, str) or not hmac.compare_digest(
                token.encode(), entry.token.encode()):
            log.warning("audio fork for %s refused: bad token", self.call_uuid)
            self.close(POLICY_VIOLATION, "bad token")
            return
        old = entry.conn
        if old is not None and old is not self:
            old.close(1000, "replaced", end_reason="replaced")
        self.entry = entry
        entry.conn = self
        self.started = True
        self.sock.settimeout(self.server.stall_ms / 1000)
        entry.sink.on_stream_start(meta)


class MediaServer:
    """The audio-fork WebSocket server (gevent ``StreamServer`` + wsproto).

    ``registry`` decides which calls may stream (see :class:`MediaRegistry`);
    ``stall_ms`` is how long a started stream may go without any data before
    the sink is told ``stalled``; ``max_streams`` bounds concurrent sockets.
    """

    def __init__(self, host: str, port: int, registry: MediaRegistry, *,
                 stall_ms: int = 1500, handshake_timeout: float = 5.0,
                 max_streams: int = 2000) -> None:
        self.registry = registry
        self.stall_ms = stall_ms
        self.handshake_timeout = handshake_timeout
        self._pool = gevent.pool.Pool(max_streams)
        self._conns: set[_Connection] = set()
        self._server = StreamServer((host, port), self._handle, spawn=self._pool)

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
        self._pool.join(timeout=timeout)
        self._pool.kill(timeout=timeout)

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

    def close_stream(self, call_uuid: str, code: int = 1000, reason: str = "") -> None:
        """Close a call's stream from our side (the sink is not notified)."""
        entry = self.registry.get(call_uuid)
        if entry and entry.conn:
            entry.conn.close(code, reason, notify=False)

    @property
    def active_streams(self) -> int:
        """Connections currently open."""
        return len(self._conns)

    def _handle(self, sock: socket.socket, _addr: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(self, sock)
        self._conns.add(conn)
        try:
            conn.serve()
        finally:
            self._conns.discard(conn)
