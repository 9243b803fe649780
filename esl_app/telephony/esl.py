"""A hardened outbound ESL session on top of greenswitch's ``OutboundSession``.

greenswitch gets the shape of the protocol right but trusts the peer: its
reader greenlet dies on a frame without ``Content-Type`` or on a reply nobody
asked for, it URL-decodes a whole block before splitting it into lines (so an
encoded ``%0A`` forges headers), ``send()`` can wait forever and blocking
waits match completions by application name. A phone call must never hang
because FreeSWITCH (or anything pretending to be it) sent something odd, and
one bad connection must never hurt the other calls of the process. So this
subclass replaces the reader and the command path and keeps greenswitch's
public surface (``connect``, ``myevents``, ``linger``, ``session_data``,
``uuid``, ``hangup``, ``uuid_break``).

Events are not dispatched to handlers: every event is handed to one ``sink``
callable (the call controller's queue), so one greenlet sees all of a call's
events in wire order.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from greenswitch.esl import OutboundSession, OutboundSessionHasGoneAway

__all__ = [
    "CommandTimeout",
    "EslError",
    "EslEvent",
    "EslSession",
    "ProtocolViolation",
    "SessionGone",
    "parse_headers",
]

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # 1 MiB: a real event body is a few KiB; more is garbage or an attack
MAX_LINE = 16 << 10
MAX_HEADERS = 1000


class EslError(RuntimeError):
    """Something went wrong on the ESL connection of one call."""


class SessionGone(EslError, OutboundSessionHasGoneAway):
    """The connection is closed (hang-up, reset, or closed by us)."""


class CommandTimeout(EslError):
    """A command got no reply in time; the connection is no longer trusted."""


class ProtocolViolation(EslError):
    """The peer sent something that cannot be framed (the call is ended)."""


@dataclass
class EslEvent:
    """One framed message: decoded headers plus an optional body.

    ``data`` mirrors greenswitch's attribute: the reply text of a
    ``command/reply`` or the body of an ``api/response``.
    """

    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    data: str = ""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def name(self) -> str:
        """``Event-Name`` (or ``DISCONNECT`` for a disconnect notice)."""
        if self.content_type == "text/disconnect-notice":
            return "DISCONNECT"
        return self.headers.get("Event-Name", "")

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.headers.get(key, default)


def parse_headers(raw: str, *, decode: bool = True) -> dict[str, str]:
    """Parse a ``Name: value`` block: split lines first, then unquote each value.

    Decoding after splitting is what keeps an encoded newline (``%0A``) inside
    its value instead of turning it into a forged header.
    """
    headers: dict[str, str] = {}
    for line in raw.split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        value = value[1:] if value.startswith(" ") else value
        if decode and "%" in value:
            value = unquote(value, errors="replace")
        headers[name.strip()] = value
    return headers


class EslSession(OutboundSession):
    """One call's outbound ESL connection, safe against a misbehaving peer.

    ``sink`` receives every event (:class:`EslEvent`) and, exactly once, the
    string ``"closed"`` when the connection is gone for whatever reason.
    """

    def __init__(
        self,
        sock,
        address,
        *,
        sink: Callable[[EslEvent | str], None],
        command_timeout: float = 5.0,
        max_body: int = MAX_BODY,
    ) -> None:
        self._sink = sink
        self.command_timeout = command_timeout
        self.max_body = max_body
        self._pending: deque[AsyncResult] = deque()
        self._send_lock = Semaphore()
        self._closed_sent = False
        self.close_reason = ""
        self.protocol_errors = 0
        self.hungup = False
        self.address = address
        super().__init__(address, sock)
        self.session_data = {}

    # -- greenswitch overrides -------------------------------------------------------

    def start_event_handlers(self) -> None:
        """Only our reader: events go straight to the sink, no handler greenlet."""
        self._receive_events_greenlet = gevent.spawn(self._reader)
        self._process_events_greenlet = None

    @property
    def channel_up(self) -> bool:
        """True while commands for the channel still make sense (not hung up or closed)."""
        return self.connected and not self.hungup and not self._lingering

    @property
    def uuid(self) -> str:
        data = self.session_data or {}
        return data.get("Unique-ID") or data.get("variable_uuid") or ""

    def connect(self) -> dict[str, str]:
        """Send ``connect`` and keep the channel data (headers already decoded)."""
        if self._outbound_connected:
            return self.session_data
        reply = self.send("connect")
        self.session_data = dict(reply.headers)
        self._outbound_connected = True
        return self.session_data

    def send(self, data: str, timeout: float | None = None) -> EslEvent:
        """Send one command and wait (bounded) for its reply, in wire order."""
        if not self.connected:
            raise SessionGone(self.close_reason or "not connected")
        result: AsyncResult = AsyncResult()
        raw = (data + "\n\n").encode("utf-8")
        wait = self.command_timeout if timeout is None else timeout
        try:
            with gevent.Timeout(wait, CommandTimeout(f"no reply to {data.split()[0]!r}")):
                with self._send_lock:
                    self._pending.append(result)
                    self.sock.sendall(raw)
                return result.get()
        except OSError as exc:
            self._shutdown(f"send failed: {exc}")
            raise SessionGone(str(exc)) from None

    def execute(self, app: str, arg: str | None = None, *, event_uuid: str | None = None,
                lock: bool = True) -> str:
        """Run a dialplan application; returns the ``Event-UUID`` its completion will carry."""
        app_uuid = event_uuid or str(uuidlib.uuid4())
        lines = ["sendmsg", "call-command: execute", f"execute-app-name: {app}"]
        if arg:
            lines.append(f"execute-app-arg: {arg.replace(chr(10), ' ')}")
        if lock:
            lines.append("event-lock: true")
        lines.append(f"Event-UUID: {app_uuid}")
        reply = self.send("\n".join(lines))
        if reply.data.startswith("-ERR"):
            raise EslError(f"{app}: {reply.data}")
        return app_uuid

    def call_command(self, app_name, app_args=None, block=False, response_timeout=None):
        """The greenswitch entry point, routed through :meth:`execute` (never blocks)."""
        return self.execute(app_name, app_args)

    def api(self, command: str, timeout: float | None = None) -> str:
        """A blocking ``api`` command; returns the response body."""
        return self.send(f"api {command}", timeout=timeout).data

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """Hang up; a no-op if the call is already gone (greenswitch raises)."""
        if not self.channel_up:
            return
        self.hungup = True  # nothing more to say to this channel
        with contextlib.suppress(EslError):
            self.send(f"sendmsg\ncall-command: hangup\nhangup-cause: {cause}", timeout=2.0)

    def uuid_break(self) -> str:
        """Stop what is playing and drop queued media (barge-in)."""
        return self.api(f"uuid_break {self.uuid} all", timeout=2.0)

    def stop(self) -> None:
        """Close the connection and end the reader; idempotent, never raises."""
        if self.channel_up:
            with contextlib.suppress(Exception):
                self.send("exit", timeout=0.5)
        self._shutdown("closed by us")
        reader = self._receive_events_greenlet
        if reader is not None and reader is not gevent.getcurrent():
            reader.join(timeout=1.0)
            if not reader.dead:
                reader.kill(block=False)

    # -- reading -------------------------------------------------------------------

    def _reader(self) -> None:
        reason = "connection closed by peer"
        try:
            while self._run:
                frame = self._read_frame()
                if frame is None:
                    break
                self._dispatch(frame)
        except ProtocolViolation as exc:
            reason = f"protocol violation: {exc}"
            log.warning("esl %s: %s; ending this call", self._label(), exc)
        except (OSError, ValueError) as exc:
            reason = f"connection error: {exc}"
        except gevent.GreenletExit:
            reason = "closed by us"
        finally:
            self._shutdown(reason)

    def _read_frame(self) -> EslEvent | None:
        lines: list[str] = []
        while True:
            raw = self.sock_file.readline(MAX_LINE)
            if not raw:
                return None
            if not raw.endswith(b"\n"):
                raise ProtocolViolation("header line too long")
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line:
                if lines:
                    break
                continue  # stray blank line between frames
            lines.append(line)
            if len(lines) > MAX_HEADERS:
                raise ProtocolViolation("too many header lines")
        headers = parse_headers("\n".join(lines))
        body = self._read_body(headers)
        event = EslEvent(headers=headers)
        ctype = headers.get("Content-Type", "")
        if ctype == "text/event-plain":
            inner, _, rest = body.partition("\n\n")
            event.headers = {**parse_headers(inner), "Content-Type": ctype}
            inner_len = _int(event.headers.get("Content-Length"))
            event.body = rest[:inner_len] if inner_len is not None else rest
        else:
            event.body = body
        return event

    def _read_body(self, headers: dict[str, str]) -> str:
        if "Content-Length" not in headers:
            return ""
        length = _int(headers["Content-Length"])
        if length is None or length < 0:
            raise ProtocolViolation(f"bad Content-Length {headers['Content-Length']!r}")
        if length > self.max_body:
            raise ProtocolViolation(f"Content-Length {length} over the {self.max_body} limit")
        data = b""
        while len(data) < length:
            chunk = self.sock_file.read(length - len(data))
            if not chunk:
                raise ProtocolViolation("connection closed inside a body")
            data += chunk
        return data.decode("utf-8", errors="replace")

    def _dispatch(self, event: EslEvent) -> None:
        ctype = event.content_type
        if ctype in ("command/reply", "api/response"):
            event.data = (event.headers.get("Reply-Text", "").strip()
                          if ctype == "command/reply" else event.body)
            if not self._pending:
                # FreeSWITCH never does this: whatever is on the other end cannot be
                # trusted with a caller. Ending our side makes FreeSWITCH continue the
                # dialplan, which goes to the clinic's human line.
                self.protocol_errors += 1
                log.warning("esl %s: unsolicited %s; ending the call", self._label(), ctype)
                raise ProtocolViolation(f"unsolicited {ctype}")
            self._pending.popleft().set(event)
        elif ctype == "text/event-plain":
            if event.name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
                self.hungup = True
            self._sink(event)
        elif ctype == "text/disconnect-notice":
            if event.headers.get("Content-Disposition") == "linger":
                self._lingering = True
            self._outbound_connected = False
            self._sink(event)
        elif not ctype:
            self.protocol_errors += 1
            log.warning("esl %s: frame without Content-Type; ending the call", self._label())
            raise ProtocolViolation("frame without Content-Type")
        else:
            log.debug("esl %s: %s ignored", self._label(), ctype)

    def _shutdown(self, reason: str) -> None:
        """Mark the connection dead, fail pending commands, tell the sink once."""
        if not self.close_reason:
            self.close_reason = reason
        self.connected = False
        self._run = False
        self._outbound_connected = False
        while self._pending:
            self._pending.popleft().set_exception(SessionGone(reason))
        with contextlib.suppress(Exception):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv
        with contextlib.suppress(Exception):
            self.sock.close()
        with contextlib.suppress(Exception):
            self.sock_file.close()
        if not self._closed_sent:
            self._closed_sent = True
            self._sink("closed")

    def _label(self) -> str:
        return self.uuid[:8] if self.session_data else str(self.address)


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
