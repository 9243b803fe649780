r"""ESL framing exactly as FreeSWITCH's mod_event_socket writes and reads it.

Everything here is checked against ``mod_event_socket.c`` (listener_run, read_packet,
parse_command, api_exec, send_disconnect) and ``switch_event.c`` (switch_event_serialize)
of FreeSWITCH 1.10, so that the bot is tested against the bytes it will meet in production:

* replies: ``Content-Type: command/reply\nReply-Text: <text>\n\n`` (values *not* encoded);
* api: ``Content-Type: api/response\nContent-Length: N\n\n<body>``;
* events: ``Content-Length: N\nContent-Type: text/event-plain\n\n<serialized event>``, where
  the serialized event is ``Name: url-encoded value`` lines, then either ``\n`` or
  ``Content-Length: M\n\n<body>`` (the body itself is not encoded);
* the outbound ``connect`` reply is a serialized CHANNEL_DATA event with no outer frame;
* disconnect notices, auth request and rude rejection as listener_run sends them.

The command parser mirrors read_packet: leading CR/LF are skipped, a block ends at two
newlines (CRs ignored), the first line is the command, later lines are ``name: value``
headers, and a ``Content-Length`` header pulls that many body bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DISCONNECT_GOODBYE",
    "RUDE_REJECTION_TEXT",
    "Command",
    "CommandParser",
    "Frame",
    "FrameParser",
    "ProtocolError",
    "api_response",
    "auth_request",
    "bgapi_reply",
    "command_reply",
    "disconnect_notice",
    "event_frame",
    "find_header",
    "linger_notice",
    "parse_header_block",
    "rude_rejection",
    "serialize_event",
    "url_decode",
    "url_encode",
]

_UNSAFE = frozenset(b'\r\n "#%&+:;<=>?@[\\]^`{|}')
_HEX = "0123456789ABCDEF"

#: Body of the notice FS sends before closing a socket (listener_run, ``done:``).
DISCONNECT_GOODBYE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
#: Body of ``text/rude-rejection`` for a client refused by the inbound ACL.
RUDE_REJECTION_TEXT = "Access Denied, go away.\n"

#: read_packet's max_len: a header block longer than this is cut off by FreeSWITCH.
MAX_HEADER_BYTES = 10 * 1024 * 1024


class ProtocolError(ValueError):
    """Raised when a peer sends something that cannot be framed (limits, bad lengths)."""


def _encode_byte(b: int) -> str:
    if b < 0x20 or b > 0x7E or b in _UNSAFE:
        return "%" + _HEX[b >> 4] + _HEX[b & 0x0F]
    return chr(b)


# every byte (as the latin-1 character of the same value) -> what switch_url_encode writes
_URL_TABLE = {b: _encode_byte(b) for b in range(256)}


def url_encode(value: str) -> str:
    """Encode like switch_url_encode: bytes < 0x20, > 0x7e and the unsafe set become %XX.

    One ``str.translate`` over the UTF-8 bytes (seen as latin-1) instead of a
    Python loop per byte: the emulator serialises every header of every event.
    """
    return value.encode("utf-8").decode("latin-1").translate(_URL_TABLE)


def url_decode(value: str) -> str:
    """Decode like switch_url_decode (``%XX`` only; ``+`` stays a plus), UTF-8 with replacement."""
    raw = value.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25 and i + 2 < n:
            pair = raw[i + 1 : i + 3]
            if len(pair) == 2 and all(ch in b"0123456789abcdefABCDEF" for ch in pair):
                out.append(int(pair, 16))
                i += 3
                continue
        out.append(c)
        i += 1
    return out.decode("utf-8", "replace")


# serialized header lines by (name, value): every event of a channel repeats its ~80
# channel-data headers, and encoding them again was a fifth of an emulated call's CPU
_LINES: dict[tuple[str, str], str] = {}
_LINES_MAX = 1 << 16  # cleared, not grown, beyond it (dates and sequence numbers never repeat)


def _header_line(name: str, value: str) -> str:
    enc = url_encode(value)
    return f"{name}: {enc if enc else '_undef_'}\n"


def serialize_event(
    headers: Iterable[tuple[str, str]], body: str | None = None, *, encode: bool = True
) -> bytes:
    """Serialize an event like switch_event_serialize (values encoded, empty → ``_undef_``)."""
    lines: list[str] = []
    if encode:
        cache = _LINES
        for name, value in headers:
            key = (name, value)
            line = cache.get(key)
            if line is None:
                line = _header_line(name, value)
                if len(cache) >= _LINES_MAX:
                    cache.clear()
                cache[key] = line
            lines.append(line)
    else:
        for name, value in headers:
            lines.append(f"{name}: [{value}]\n")
    text = "".join(lines)
    if body:
        blen = len(body.encode("utf-8"))
        text += f"Content-Length: {blen}\n\n{body}"
    else:
        text += "\n"
    return text.encode("utf-8")


def event_frame(serialized: bytes, fmt: str = "plain") -> bytes:
    """Wrap a serialized event the way read_packet sends queued events."""
    return (
        f"Content-Length: {len(serialized)}\nContent-Type: text/event-{fmt}\n\n".encode()
        + serialized
    )


def command_reply(text: str) -> bytes:
    """A plain ``command/reply`` (listener_run: reply not starting with ``~``)."""
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def bgapi_reply(job_uuid: str) -> bytes:
    """The ``~``-style reply bgapi produces, carrying the Job-UUID twice."""
    return (
        f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job_uuid}\n"
        f"Job-UUID: {job_uuid}\n\n"
    ).encode()


def api_response(body: str) -> bytes:
    r"""An ``api/response``; an empty result becomes ``-ERR no reply\n`` as in api_exec."""
    if not body:
        body = "-ERR no reply\n"
    data = body.encode("utf-8")
    return f"Content-Type: api/response\nContent-Length: {len(data)}\n\n".encode() + data


def auth_request() -> bytes:
    """First frame on an inbound connection."""
    return b"Content-Type: auth/request\n\n"


def rude_rejection() -> bytes:
    """Frame for a client refused by the ACL (followed by a disconnect notice and close)."""
    data = RUDE_REJECTION_TEXT.encode()
    return f"Content-Type: text/rude-rejection\nContent-Length: {len(data)}\n\n".encode() + data


def disconnect_notice(session_uuid: str | None, message: str = DISCONNECT_GOODBYE) -> bytes:
    """send_disconnect: with a session it names it and says ``Content-Disposition: disconnect``."""
    data = message.encode()
    if session_uuid:
        head = (
            "Content-Type: text/disconnect-notice\n"
            f"Controlled-Session-UUID: {session_uuid}\n"
            "Content-Disposition: disconnect\n"
            f"Content-Length: {len(data)}\n\n"
        )
    else:
        head = f"Content-Type: text/disconnect-notice\nContent-Length: {len(data)}\n\n"
    return head.encode() + data


def linger_notice(session_uuid: str, channel_name: str, linger_time: int) -> bytes:
    """The notice sent when a lingering channel goes down (values are not encoded)."""
    return (
        "Content-Type: text/disconnect-notice\n"
        f"Controlled-Session-UUID: {session_uuid}\n"
        "Content-Disposition: linger\n"
        f"Channel-Name: {channel_name}\n"
        f"Linger-Time: {linger_time}\n"
        "Content-Length: 0\n\n"
    ).encode()


def parse_header_block(text: str, *, decode: bool = False) -> list[tuple[str, str]]:
    """Split ``Name: value`` lines (line split first, then optional URL-decoding per value)."""
    out: list[tuple[str, str]] = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            out.append((line, ""))
            continue
        value = value.lstrip(" ")
        out.append((name, url_decode(value) if decode else value))
    return out


def find_header(headers: list[tuple[str, str]], name: str,
                default: str | None = None) -> str | None:
    """Case-insensitive lookup in a header block (FS headers are case-insensitive)."""
    low = name.lower()
    for k, v in headers:
        if k.lower() == low:
            return v
    return default


@dataclass
class Command:
    """One command block received from a client, as read_packet splits it."""

    raw: bytes
    line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        """The first word of the command line, lower-cased (``sendmsg``, ``api`` ...)."""
        return self.line.split(" ", 1)[0].lower() if self.line else ""

    @property
    def args(self) -> str:
        """The command line after the first word."""
        parts = self.line.split(" ", 1)
        return parts[1] if len(parts) > 1 else ""

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive header lookup (FS event headers are case-insensitive)."""
        return find_header(self.headers, name, default)

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly view for logs and test assertions."""
        return {
            "line": self.line,
            "headers": dict(self.headers),
            "body": self.body.decode("utf-8", "replace") if self.body is not None else None,
            "at": self.at,
        }


class CommandParser:
    """Incremental parser for client→FreeSWITCH command blocks, with size limits."""

    def __init__(self, max_header: int = MAX_HEADER_BYTES, max_body: int = MAX_HEADER_BYTES):
        self._buf = bytearray()
        self._pending: Command | None = None
        self._need = 0
        self.max_header = max_header
        self.max_body = max_body

    def feed(self, data: bytes) -> list[Command]:
        """Add bytes; return every complete command now available."""
        self._buf += data
        out: list[Command] = []
        while True:
            if self._pending is not None:
                if len(self._buf) < self._need:
                    break
                cmd = self._pending
                cmd.body = bytes(self._buf[: self._need])
                cmd.raw += cmd.body
                del self._buf[: self._need]
                self._pending = None
                out.append(cmd)
                continue
            # skip leading CR/LF ("bah" in read_packet)
            i = 0
            while i < len(self._buf) and self._buf[i] in (0x0D, 0x0A):
                i += 1
            if i:
                del self._buf[:i]
            end = self._find_end()
            if end < 0:
                if len(self._buf) > self.max_header:
                    raise ProtocolError(f"command header block exceeds {self.max_header} bytes")
                break
            block = bytes(self._buf[:end])
            del self._buf[:end]
            cmd = self._parse_block(block)
            clen = cmd.header("content-length")
            n = 0
            if clen is not None:
                try:
                    n = int(clen.strip() or "0")
                except ValueError:
                    n = 0  # atoi() of junk is 0 in FS: no body
            if n > self.max_body:
                raise ProtocolError(f"Content-Length {n} exceeds limit {self.max_body}")
            if n > 0:
                self._pending = cmd
                self._need = n
                continue
            out.append(cmd)
        return out

    def _find_end(self) -> int:
        """Index just past the block terminator: two LFs with only CRs between them."""
        crcount = 0
        for idx, b in enumerate(self._buf):
            if b == 0x0A:
                crcount += 1
                if crcount == 2:
                    return idx + 1
            elif b != 0x0D:
                crcount = 0
        return -1

    @staticmethod
    def _parse_block(block: bytes) -> Command:
        text = block.decode("utf-8", "replace")
        lines = [ln.rstrip("\r") for ln in text.split("\n")]
        first = lines[0] if lines else ""
        headers: list[tuple[str, str]] = []
        for ln in lines[1:]:
            if not ln:
                continue
            name, sep, value = ln.partition(":")
            if not sep:
                continue  # FS adds no header for a line without a colon
            headers.append((name, value.lstrip(" ")))
        return Command(raw=block, line=first, headers=headers)


@dataclass
class Frame:
    """One FreeSWITCH→client message: outer headers plus optional body."""

    headers: list[tuple[str, str]]
    body: bytes | None = None
    raw: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive lookup in the outer header block."""
        return find_header(self.headers, name, default)

    @property
    def content_type(self) -> str | None:
        """The frame's Content-Type (None for malformed frames)."""
        return self.header("Content-Type")

    def event(self) -> tuple[dict[str, str], str | None]:
        """Decode a ``text/event-plain`` body into (headers, event body)."""
        if self.body is None:
            return {}, None
        return parse_event_plain(self.body)


def parse_event_plain(data: bytes) -> tuple[dict[str, str], str | None]:
    """Decode a serialized plain event: split lines, URL-decode values, read nested body."""
    sep = data.find(b"\n\n")
    head = data if sep < 0 else data[:sep]
    rest = b"" if sep < 0 else data[sep + 2 :]
    headers = dict(parse_header_block(head.decode("utf-8", "replace"), decode=True))
    body: str | None = None
    if "Content-Length" in headers:
        n = int(headers["Content-Length"])
        body = rest[:n].decode("utf-8", "replace")
    return headers, body


class FrameParser:
    """Incremental parser for what FreeSWITCH sends (used by tests and raw clients)."""

    def __init__(self, max_body: int = 64 * 1024 * 1024):
        self._buf = bytearray()
        self.max_body = max_body

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return every complete frame."""
        self._buf += data
        out: list[Frame] = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                break
            head = bytes(self._buf[:end])
            headers = parse_header_block(head.decode("utf-8", "replace"))
            clen = next((v for k, v in headers if k.lower() == "content-length"), None)
            n = int(clen) if clen else 0
            if n > self.max_body:
                raise ProtocolError(f"Content-Length {n} too large")
            if len(self._buf) < end + 2 + n:
                break
            body = bytes(self._buf[end + 2 : end + 2 + n]) if clen is not None else None
            raw = bytes(self._buf[: end + 2 + n])
            del self._buf[: end + 2 + n]
            out.append(Frame(headers=headers, body=body, raw=raw))
        return out


def render_headers(headers: Sequence[tuple[str, str]]) -> str:
    """Plain ``Name: value`` lines with no encoding (used for sendmsg-style blocks)."""
    return "".join(f"{k}: {v}\n" for k, v in headers)
