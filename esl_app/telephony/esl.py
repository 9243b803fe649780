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
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from greenswitch.esl import OutboundSession, OutboundSessionHasGoneAway

from esl_app.support.bridge import result_of

__all__ = [
    "PEER_CLOSED",
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


PEER_CLOSED = "connection closed by peer"  # close_reason when the other side closed


class EslError(RuntimeError):
    """Something went wrong on the ESL connection of one call."""


class SessionGone(EslError, OutboundSessionHasGoneAway):
    """The connection is closed (hang-up, reset, or closed by us)."""


class CommandTimeout(EslError):
    """A command got no reply in time; the connection is no longer trusted."""


class ProtocolViolation(EslError):
    """The peer sent something that cannot be framed (the call is ended)."""


class EslEvent:
    """One framed message: decoded headers plus an optional body.

    ``data`` mirrors greenswitch's attribute: the reply text of a
    ``command/reply`` or the body of an ``api/response``.

    An event read from the wire keeps its header block undecoded until someone
    looks at more than its name: a call receives dozens of events nobody reads
    (``CHANNEL_EXECUTE`` for every prompt), and decoding ~80 headers each is most
    of what the reader costs.
    """

    __slots__ = ("_body", "_ctype", "_headers", "_inner", "_rest", "at", "data")

    def __init__(self, headers: dict[str, str] | None = None, body: str = "",
                 data: str = "") -> None:
        self._headers: dict[str, str] = {} if headers is None else headers
        self._inner: str | None = None
        self._rest = ""
        self._ctype = ""
        self._body = body
        self.data = data
        self.at = 0.0  # time.monotonic() the reader received it (DETECTED_SPEECH only)

    @classmethod
    def from_block(cls, ctype: str, block: str) -> EslEvent:
        """An event whose headers (``block`` up to the blank line) are parsed on demand."""
        event = cls()
        inner, _, rest = block.partition("\n\n")
        event._inner = inner
        event._ctype = ctype
        length = _header_value(inner, "Content-Length")
        if length is _UNSURE:
            event._rest = rest  # cut once the headers are decoded
        else:
            n = _int(length) if length is not None else None
            event._body = rest[:n] if n is not None else rest
        return event

    def _decode(self) -> None:
        inner, self._inner = self._inner, None
        if inner is None:
            return
        headers = {**parse_headers(inner), "Content-Type": self._ctype}
        self._headers = headers
        if self._rest:
            length = _int(headers.get("Content-Length"))
            self._body = self._rest[:length] if length is not None else self._rest
            self._rest = ""

    @property
    def headers(self) -> dict[str, str]:
        if self._inner is not None:
            self._decode()
        return self._headers

    @headers.setter
    def headers(self, value: dict[str, str]) -> None:
        self._inner = None
        self._headers = value

    @property
    def body(self) -> str:
        if self._rest:
            self._decode()
        return self._body

    @body.setter
    def body(self, value: str) -> None:
        if self._inner is not None:
            self._decode()
        self._body = value

    @property
    def content_type(self) -> str:
        if self._inner is not None:
            return self._ctype
        return self._headers.get("Content-Type", "")

    @property
    def name(self) -> str:
        """``Event-Name`` (or ``DISCONNECT`` for a disconnect notice)."""
        if self.content_type == "text/disconnect-notice":
            return "DISCONNECT"
        return self.get("Event-Name", "") or ""

    def get(self, key: str, default: str | None = None) -> str | None:
        if self._inner is not None and key != "Content-Type":
            value = _header_value(self._inner, key)
            if value is not _UNSURE:
                return default if value is None else value
        return self.headers.get(key, default)

    def __repr__(self) -> str:
        return f"EslEvent({self.content_type!r}, {self.name!r})"


_UNSURE: Any = object()


def _header_value(block: str, key: str) -> Any:
    """One header read straight from an undecoded block, without decoding the rest.

    Gives exactly :func:`parse_headers`'s value, None when the block cannot hold the
    key, or ``_UNSURE`` (then the caller decodes it all). Safe when ``key`` occurs
    once in the block, as a line's ``Name: `` prefix: no other line can then produce
    (or override) that key.
    """
    count = block.count(key)
    if count == 0:
        return None
    if count != 1:
        return _UNSURE
    prefix = key + ": "
    if block.startswith(prefix):
        start = len(prefix)
    else:
        at = block.find("\n" + prefix)
        if at < 0:
            return _UNSURE
        start = at + 1 + len(prefix)
    end = block.find("\n", start)
    value = block[start:] if end < 0 else block[start:end]
    if "\r" in block:
        value = value.rstrip("\r")
    return _unquote(value) if "%" in value else value


def parse_headers(raw: str, *, decode: bool = True) -> dict[str, str]:
    """Parse a ``Name: value`` block: split lines first, then unquote each value.

    Decoding after splitting is what keeps an encoded newline (``%0A``) inside
    its value instead of turning it into a forged header. Every event of every
    call goes through here (~80 lines each), so the common shape (no carriage returns,
    ASCII escapes) takes a short path with the same result.
    """
    headers: dict[str, str] = {}
    crlf = "\r" in raw
    for line in raw.split("\n"):
        if crlf:
            line = line.rstrip("\r")
        name, sep, value = line.partition(":")
        if not sep:
            continue
        if value[:1] == " ":
            value = value[1:]
        if decode and "%" in value:
            value = _unquote(value)
        headers[name.strip()] = value
    return headers


_HEX_CHARS: dict[str, str] = {}
for _code in range(128):
    _hi, _lo = f"{_code:02x}"
    for _a in {_hi, _hi.upper()}:
        for _b in {_lo, _lo.upper()}:
            _HEX_CHARS[_a + _b] = chr(_code)


def _unquote(value: str) -> str:
    """``unquote(value, errors="replace")``, faster for ASCII escapes (``%20``, ``%3A``).

    Anything else (a byte over 0x7F, a malformed escape) takes the standard library's
    path, so the result is always exactly the stdlib's.
    """
    parts = value.split("%")
    out = [parts[0]]
    get = _HEX_CHARS.get
    for part in parts[1:]:
        char = get(part[:2])
        if char is None:
            return unquote(value, errors="replace")
        out.append(char)
        out.append(part[2:])
    return "".join(out)


class _Deferred:
    """The reply slot of a pipelined command: checked by the reader when it arrives.

    ``check`` turns the reply into an error message (or None); a failure is kept on
    the session and raised by the next :meth:`EslSession.send` or :meth:`flush`.
    """

    __slots__ = ("check", "label", "session")

    def __init__(self, session: EslSession, label: str,
                 check: Callable[[EslEvent], str | None] | None) -> None:
        self.session = session
        self.label = label
        self.check = check

    def set(self, event: EslEvent) -> None:
        problem = None
        if self.check is not None:
            try:
                problem = self.check(event)
            except Exception as exc:  # noqa: BLE001 - a checker bug must not kill the reader
                problem = f"reply check failed: {exc}"
        self._done(EslError(f"{self.label}: {problem}") if problem else None)

    def set_exception(self, exc: BaseException) -> None:
        self._done(exc if isinstance(exc, EslError) else EslError(str(exc)))

    def _done(self, error: EslError | None) -> None:
        """One reply fewer outstanding; the session keeps the first failure."""
        session = self.session
        session._outstanding -= 1
        if error is not None and session._deferred_error is None:
            session._deferred_error = error
        if session._outstanding == 0:
            session._settled.set()


def _execute_frame(app: str, arg: str | None, lock: bool, app_uuid: str) -> str:
    """A ``sendmsg`` that runs ``app`` on the socket's own channel (no trailing blank line)."""
    lines = ["sendmsg", "call-command: execute", f"execute-app-name: {app}"]
    if arg:
        lines.append(f"execute-app-arg: {arg.replace(chr(10), ' ')}")
    if lock:
        lines.append("event-lock: true")
    lines.append(f"Event-UUID: {app_uuid}")
    return "\n".join(lines)


def _reply_error(event: EslEvent) -> str | None:
    """A ``command/reply`` that refused the command (``-ERR …``)."""
    return event.data if event.data.startswith("-ERR") else None


# mod_event_socket (parse_command) answers every command after ``sendmsg`` in its list
# (linger, api, bgapi, event, ...) with ``-ERR command not found`` on an outbound socket
# whose ``socket`` application was not given ``full``; its ``connect`` reply then says
# ``Control: single-channel`` (``full`` otherwise).
NOT_FULL = ("outbound socket not in full mode: add 'full' to the socket application's "
            "arguments")


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
        self._pending: deque[AsyncResult | _Deferred] = deque()
        self._outstanding = 0  # pipelined commands whose reply has not arrived yet
        self._settled = Event()  # set while nothing pipelined is outstanding
        self._settled.set()
        self._deferred_error: EslError | None = None
        self._send_lock = Semaphore()
        self._closed_sent = False
        self._not_full_logged = False
        self.close_reason = ""
        # the other side went away on its own: a clean close, or a reset / broken pipe (a
        # peer that closes with our data unread makes its kernel answer with a reset)
        self.peer_gone = False
        self.protocol_errors = 0
        self.hungup = False
        self.channel_hungup = False
        self.address = address
        # Commands are small and often follow each other without waiting for a reply
        # (pipelining): Nagle's algorithm would hold each one until the previous one
        # is acknowledged, i.e. add a round trip per command.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(address, sock)
        self.session_data = {}
        # seconds the handshake waited for the switch's reply to ``connect`` (written →
        # in hand): the part of a call's set-up that is FreeSWITCH's, not ours
        self.handshake_wait_s = 0.0
        # greenswitch registers its own bound methods as handlers; our reader hands every
        # event to the sink and never calls them, and they would make each session a
        # reference cycle left to the cyclic GC (whose pauses stop the hub)
        self.event_handlers.clear()

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
        """Send ``connect`` alone and keep the channel data (greenswitch's API)."""
        return self.handshake(follow=())

    def handshake(self, *, follow: tuple[str, ...] = ("myevents", "linger"),
                  answer: str | None = None) -> dict[str, str]:
        """``connect``, ``myevents`` and ``linger`` in one write; returns the channel data.

        mod_event_socket reads a socket's commands one at a time, in order, and
        answers each before reading the next, so the three need not wait for each
        other: the call's set-up costs one round trip instead of three. The
        ``myevents``/``linger`` replies are still checked (pipelined: see :meth:`post`).
        ``answer`` (an Event-UUID) sends ``answer`` in the same write: nothing in it
        needs the channel data, so FreeSWITCH answers a round trip (and our set-up
        work) sooner; its completion carries that UUID. A socket application
        without ``full`` ends the call here, with a plain error.
        """
        if self._outbound_connected:
            return self.session_data
        if not self.connected:
            raise SessionGone(self.close_reason or "not connected")
        first: AsyncResult = AsyncResult()
        slots: list[AsyncResult | _Deferred] = [first]
        slots += [_Deferred(self, name, self._linger_error if name == "linger" else _reply_error)
                  for name in follow]
        raw = "".join(f"{name}\n\n" for name in ("connect", *follow))
        if answer is not None:
            slots.append(_Deferred(self, "answer", _reply_error))
            raw += _execute_frame("answer", None, True, answer) + "\n\n"
        with gevent.Timeout(self.command_timeout, CommandTimeout("no reply to 'connect'")):
            self._write(raw.encode(), slots)
            written = time.monotonic()
            try:
                reply = result_of(first)
            finally:
                del first, slots  # see send()
            self.handshake_wait_s = time.monotonic() - written
        if reply.headers.get("Control") == "single-channel":
            # nothing but sendmsg would work; an answer sent with connect has run, and
            # FreeSWITCH takes the call on to the dialplan's next step (the human line)
            raise EslError(self._not_full())
        self.session_data = dict(reply.headers)
        self._outbound_connected = True
        return self.session_data

    def _linger_error(self, event: EslEvent) -> str | None:
        """The ``linger`` reply: an FS that gives no ``Control`` header says it this way."""
        if event.data.startswith("-ERR command not found"):
            return self._not_full()
        return _reply_error(event)

    def _not_full(self) -> str:
        """The socket application lacks ``full``: say so once, plainly (the call ends)."""
        if not self._not_full_logged:
            self._not_full_logged = True
            log.error("esl %s: %s (without it FreeSWITCH refuses linger and api); ending the "
                      "call", self._label(), NOT_FULL)
        return NOT_FULL

    def send(self, data: str, timeout: float | None = None) -> EslEvent:
        """Send one command and wait (bounded) for its reply, in wire order.

        A pipelined command that failed before it (see :meth:`post`) is raised here,
        once this reply (which FreeSWITCH sends after theirs) has arrived. A timeout
        while writing shuts the session down (see :meth:`_write`); one while waiting for
        the reply leaves its slot queued, so that the late reply is consumed in order.
        """
        if not self.connected:
            raise SessionGone(self.close_reason or "not connected")
        result: AsyncResult = AsyncResult()
        raw = (data + "\n\n").encode("utf-8")
        wait = self.command_timeout if timeout is None else timeout
        with gevent.Timeout(wait, CommandTimeout(f"no reply to {data.split()[0]!r}")):
            self._write(raw, [result])
            try:
                reply = result_of(result)
            finally:
                # a hang-up sets SessionGone in the result, and its traceback holds this
                # frame: holding the result here would make a cycle that only the
                # cyclic collector frees (with the call's state it reaches)
                del result
        self._raise_deferred()
        return reply

    def post(self, data: str, *, check: Callable[[EslEvent], str | None] | None = _reply_error,
             label: str | None = None) -> None:
        """Send one command without waiting for its reply (pipelining).

        FreeSWITCH runs a socket's commands in order and replies in order, so a
        command posted before another takes effect before it, and its reply is
        matched to it like any other. ``check`` inspects that reply when it
        arrives; a failure (or a lost connection) is raised by the next
        :meth:`send` or :meth:`flush`. ``check=None``: the reply needs no verdict
        (the checker may also act on it, e.g. note that a variable was not set).
        """
        if not self.connected:
            raise SessionGone(self.close_reason or "not connected")
        slot = _Deferred(self, label or data.split(None, 1)[0], check)
        raw = (data + "\n\n").encode("utf-8")
        try:
            with gevent.Timeout(self.command_timeout):
                self._write(raw, [slot])  # cut short: the session is shut down
        except gevent.Timeout:
            raise CommandTimeout(f"could not send {slot.label!r}") from None

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every posted command has its reply; raise the first failure."""
        if self._outstanding and not self._settled.wait(
                self.command_timeout if timeout is None else timeout):
            raise CommandTimeout("no reply to pipelined commands")
        self._raise_deferred()

    @property
    def outstanding(self) -> int:
        """Posted commands still waiting for their reply."""
        return self._outstanding

    def _raise_deferred(self) -> None:
        error, self._deferred_error = self._deferred_error, None
        if error is not None:
            raise error

    def _write(self, raw: bytes, slots: list[AsyncResult | _Deferred]) -> None:
        """Queue the reply slots and write the bytes, atomically with respect to others.

        Once the slots are queued the write must complete: cut short (the caller's
        timeout, a kill), it may leave half a command on the wire, which the next one
        would merge with, and every later reply would go to the wrong command. So the
        session is shut down then. (Timed out waiting for the lock: nothing was queued
        or written, the session stays as it was.)
        """
        try:
            with self._send_lock:
                for slot in slots:
                    self._pending.append(slot)
                    if isinstance(slot, _Deferred):
                        self._outstanding += 1
                        self._settled.clear()
                try:
                    self.sock.sendall(raw)
                except OSError:
                    raise
                except BaseException:
                    self._shutdown("send stalled")
                    raise
        except OSError as exc:
            if isinstance(exc, ConnectionResetError | BrokenPipeError):
                self.peer_gone = True
            self._shutdown(f"send failed: {exc}")
            raise SessionGone(str(exc)) from None

    def execute(self, app: str, arg: str | None = None, *, event_uuid: str | None = None,
                lock: bool = True, wait: bool = True) -> str:
        """Run a dialplan application; returns the ``Event-UUID`` its completion will carry.

        ``wait=False`` pipelines it (:meth:`post`): a ``-ERR`` reply is raised by the
        next :meth:`send`/:meth:`flush` instead of here.
        """
        app_uuid = event_uuid or str(uuidlib.uuid4())
        frame = _execute_frame(app, arg, lock, app_uuid)
        if not wait:
            self.post(frame, label=app)
            return app_uuid
        reply = self.send(frame)
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
        reason = PEER_CLOSED
        try:
            while self._run:
                frame = self._read_frame()
                if frame is None:
                    self.peer_gone = True
                    break
                self._dispatch(frame)
        except ProtocolViolation as exc:
            reason = f"protocol violation: {exc}"
            log.warning("esl %s: %s; ending this call", self._label(), exc)
        except (OSError, ValueError) as exc:
            reason = f"connection error: {exc}"
            if isinstance(exc, ConnectionResetError | BrokenPipeError):
                self.peer_gone = True
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
        ctype = headers.get("Content-Type", "")
        if ctype == "text/event-plain":
            return EslEvent.from_block(ctype, body)
        return EslEvent(headers=headers, body=body)

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
            name = event.name
            if name == "DETECTED_SPEECH":
                event.at = time.monotonic()  # a final's arrival starts the turn response time
            elif name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
                self.hungup = True
                self.channel_hungup = True  # FreeSWITCH said so (not our own hangup)
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
