"""Record the ESL wire of a call and reduce it to what the bot relies on (golden traces).

:class:`TraceProxy` sits between a switch (FreeSWITCH's ``socket`` application, or the
emulator's outbound channel) and the bot's ESL port: it forwards bytes both ways
untouched and records every frame of each direction with its arrival time. The
switch's frames are parsed with the emulator's :class:`~esl_app.sim.emulator.wire.FrameParser`,
the bot's commands with :class:`~esl_app.sim.emulator.wire.CommandParser`, so the recording
sees exactly the blocks each peer sees.

:func:`normalise` keeps what the bot relies on and drops what varies by nature:

* ``exchanges``: the bot's commands in the order it sent them (``sendmsg execute
  playback``, ``api uuid_setvar`` ...), each with the kind of reply it got. Replies are
  paired with commands by order, as the bot pairs them.
* ``events``: the events the switch sent, in its order, up to the first CHANNEL_HANGUP
  (``Event-Name``, plus the ``Application`` of CHANNEL_EXECUTE*, the ``Event-Subclass``
  of CUSTOM); SESSION_HEARTBEAT and CHANNEL_PARK are left out (:data:`UNORDERED`).
  ``after_hangup``: the events after it, in order. ``notices``: the disconnect notices
  (``Content-Disposition``), in order. They are apart because mod_event_socket sends the
  linger notice on the first pass of its loop that finds the channel down, between
  whichever of the hang-up's events it has sent by then (read_packet), and drops what it
  has not sent when the bot closes (the bot closes once it sees CHANNEL_HANGUP): a live
  recording may hold only a first part of ``after_hangup`` (:func:`cut_short`).
  A CHANNEL_UNBRIDGE that comes just before CHANNEL_HANGUP is put just after it: the
  bridged leg's hang-up unbridges the channel on another thread, which wins that race
  now and then (seen once in about thirty real calls); the bot reads neither order.
* Where the two directions fall relative to each other is not kept: that is timing (the
  bot pipelines commands; FreeSWITCH runs a queued application ~20 ms after replying,
  the emulator at once), and the bot matches replies by order and events by
  Application-UUID, never by interleaving.
* Immediate repeats collapse (:func:`collapse`): how many sentences a reply has is the
  conversation's business, not the wire's.
* ``frames``: per kind, the outer header layout (names in order: ``Content-Length``
  before ``Content-Type`` on events; the ``connect`` reply's trailer) and the value of
  each header the bot reads, as sent (URL-encoded), with uuids reduced to their role
  (``<Unique-ID>`` the channel, ``<Event-UUID>`` one the bot sent, ``<uuid>`` another).
* ``closed_by``: who closed the connection first.
"""

from __future__ import annotations

import difflib
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import yaml
from gevent import socket
from gevent.server import StreamServer

from esl_app.sim.emulator.wire import (
    CommandParser,
    FrameParser,
    parse_event_plain,
    parse_header_block,
)

__all__ = ["Message", "Recording", "TraceProxy", "differences", "emulated_call", "normalise"]


@dataclass
class Message:
    """One frame on the wire. ``origin``: ``switch`` (to the bot) or ``bot`` (a command).

    ``headers`` are the outer headers as sent (values not decoded); for an event,
    ``event`` holds its decoded inner headers and ``body`` its inner body.
    """

    origin: str
    at: float  # seconds since the connection opened
    headers: list[tuple[str, str]]
    line: str = ""  # a command's first line
    event: dict[str, str] = field(default_factory=dict)
    event_raw: dict[str, str] = field(default_factory=dict)  # inner headers, values as sent
    body: str | None = None

    @property
    def content_type(self) -> str:
        return next((v for k, v in self.headers if k.lower() == "content-type"), "")

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)


@dataclass
class Recording:
    """Both directions of one proxied connection, in the order the proxy saw them."""

    messages: list[Message] = field(default_factory=list)
    closed_by: str = ""  # who closed first: switch | bot
    done: gevent.event.Event = field(default_factory=gevent.event.Event)


class TraceProxy:
    """A TCP proxy that records every ESL frame of every connection through it."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self.recordings: list[Recording] = []
        self._new = gevent.event.Event()
        self._server = StreamServer((host, 0), self._handle)

    def start(self) -> TraceProxy:
        self._server.start()
        return self

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self._server.server_port)

    @property
    def addr(self) -> str:
        """``host:port`` as a dialplan's ``socket`` application takes it."""
        return f"{self.address[0]}:{self.address[1]}"

    def stop(self) -> None:
        self._server.stop(timeout=1)

    def wait_recording(self, index: int = 0, timeout: float = 30.0) -> Recording:
        """The ``index``-th connection's recording, once both sides have closed it."""
        deadline = time.monotonic() + timeout
        while len(self.recordings) <= index:
            self._new.clear()
            if not self._new.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"no connection #{index} through the proxy")
        rec = self.recordings[index]
        if not rec.done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("the proxied connection was not closed")
        return rec

    def _handle(self, downstream: socket.socket, _addr: object) -> None:
        rec = Recording()
        self.recordings.append(rec)
        self._new.set()
        t0 = time.monotonic()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            rec.closed_by = "bot"
            rec.done.set()
            return
        for s in (upstream, downstream):
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pumps = [gevent.spawn(self._pump, downstream, upstream, "switch", rec, t0),
                 gevent.spawn(self._pump, upstream, downstream, "bot", rec, t0)]
        gevent.joinall(pumps)
        for s in (upstream, downstream):
            s.close()
        rec.done.set()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, origin: str, rec: Recording,
              t0: float) -> None:
        frames = FrameParser() if origin == "switch" else None
        commands = CommandParser() if origin == "bot" else None
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                rec.closed_by = rec.closed_by or origin
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            at = time.monotonic() - t0
            try:
                dst.sendall(data)
            except OSError:
                pass
            if frames is not None:
                for fr in frames.feed(data):
                    msg = Message("switch", at, fr.headers)
                    if fr.content_type == "text/event-plain" and fr.body is not None:
                        msg.event, msg.body = parse_event_plain(fr.body)
                        head = fr.body.split(b"\n\n", 1)[0].decode("utf-8", "replace")
                        msg.event_raw = dict(parse_header_block(head))
                    elif fr.body is not None:
                        msg.body = fr.body.decode("utf-8", "replace")
                    rec.messages.append(msg)
            elif commands is not None:
                for cmd in commands.feed(data):
                    body = cmd.body.decode("utf-8", "replace") if cmd.body is not None else None
                    rec.messages.append(Message("bot", at, cmd.headers, cmd.line, body=body))


# -- normalising: what the bot relies on ----------------------------------------------

#: The connect reply's headers the bot reads (call.py, esl.py; the ``variable_sip_*`` and
#: ``variable_uuid`` fallbacks are read only when these are missing).
CONNECT_READS = ("Unique-ID", "Caller-Destination-Number", "Caller-Caller-ID-Number",
                 "variable_ivr_tenant", "variable_ivr_tts", "variable_ivr_stt",
                 "Reply-Text", "Control", "Content-Length")
#: Event headers the bot reads (events.py, verbs.py), by Event-Name; every event: these.
EVENT_READS = ("Event-Name", "Unique-ID")
EVENT_READS_BY_NAME = {
    "CHANNEL_EXECUTE": ("Application", "Application-UUID"),
    "CHANNEL_EXECUTE_COMPLETE": ("Application", "Application-UUID", "Application-Response"),
    "CHANNEL_HANGUP": ("Hangup-Cause",),
    "CHANNEL_HANGUP_COMPLETE": ("Hangup-Cause",),
    "DTMF": ("DTMF-Digit",),
    "DETECTED_SPEECH": ("Speech-Type", "Content-Length"),
    "CUSTOM": ("Event-Subclass",),
}
#: ...and by kind, where only one application's completion is read for it (verbs.Bridge).
EVENT_READS_BY_KIND = {"CHANNEL_EXECUTE_COMPLETE bridge": ("variable_originate_disposition",)}
NOTICE_READS = ("Content-Disposition", "Controlled-Session-UUID", "Linger-Time",
                "Content-Length")
#: Events left out of the sequence: SESSION_HEARTBEAT comes by the clock, and CHANNEL_PARK
#: is fired as ``socket`` parks the channel, racing the bot's ``myevents`` (the bot got it
#: in about half of the loopback calls seen; WIRE-FACTS 4.3), so whether it comes is luck.
UNORDERED = frozenset({"SESSION_HEARTBEAT", "CHANNEL_PARK"})
#: Values that differ per run by nature (lengths of bodies holding paths, uuids, times).
_ANY_VALUE = frozenset({("event", "Content-Length")})
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}")


def command_kind(msg: Message) -> str:
    """``sendmsg execute playback``, ``api uuid_setvar``, ``api uuid_audio_fork start``..."""
    words = msg.line.split()
    if not words:
        return "(blank)"
    verb = words[0].lower()
    if verb == "sendmsg":
        what = (msg.header("call-command") or "").lower()
        if what == "execute":
            return f"sendmsg execute {msg.header('execute-app-name') or ''}".strip()
        return f"sendmsg {what}".strip()
    if verb in ("api", "bgapi") and len(words) > 1:
        if words[1] == "uuid_audio_fork" and len(words) > 3:
            return f"{verb} uuid_audio_fork {words[3]}"
        return f"{verb} {words[1]}"
    return verb


def event_kind(msg: Message) -> str:
    """Event-Name, with the Application of an execute event or the Subclass of a CUSTOM."""
    name = msg.event.get("Event-Name", "?")
    if name in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
        return f"{name} {msg.event.get('Application', '')}"
    if name == "CUSTOM":
        return f"CUSTOM {msg.event.get('Event-Subclass', '')}"
    return name


def collapse(seq: list[str], longest: int = 2) -> list[str]:
    """Drop immediate repeats of one item or of a block of up to ``longest`` items.

    How many sentences a reply has (one playback each) is the conversation's business,
    not the wire's: three prompt pairs and one say the same about the switch.
    """
    out = list(seq)
    changed = True
    while changed:
        changed = False
        for k in range(1, longest + 1):
            i = 0
            while i + 2 * k <= len(out):
                if out[i:i + k] == out[i + k:i + 2 * k]:
                    del out[i + k:i + 2 * k]
                    changed = True
                else:
                    i += 1
    return out


def _layout(headers: list[tuple[str, str]]) -> str:
    """The outer header names in order; a long block (the connect reply): ends only."""
    names = [k for k, _ in headers]
    if len(names) > 8:
        names = [names[0], "...", *names[-4:]]
    return ", ".join(names)


def normalise(rec: Recording) -> dict[str, Any]:
    """Reduce a recording to what the bot relies on (see the module docstring)."""
    channel = ""
    sent_ids: set[str] = set()
    for m in rec.messages:
        if m.origin == "bot" and m.header("Event-UUID"):
            sent_ids.add((m.header("Event-UUID") or "").lower())
        elif not channel and m.content_type == "command/reply" and m.header("Unique-ID"):
            channel = (m.header("Unique-ID") or "").lower()
    names = {u: "<Event-UUID>" for u in sent_ids}
    names[channel] = "<Unique-ID>"

    def shape(value: str) -> str:
        return _UUID.sub(lambda mo: names.get(mo.group(0).lower(), "<uuid>"), value)

    exchanges: list[str] = []
    waiting: deque[tuple[int, str]] = deque()
    events: list[str] = []
    notices: list[str] = []
    frames: dict[str, dict[str, Any]] = {}

    def note(kind: str, layout: str, reads: dict[str, str]) -> None:
        entry = frames.setdefault(kind, {"layout": [], "reads": {}})
        if layout not in entry["layout"]:
            entry["layout"].append(layout)
        for name, value in reads.items():
            values = entry["reads"].setdefault(name, [])
            if value not in values:
                values.append(value)

    for m in rec.messages:
        if m.origin == "bot":
            kind = command_kind(m)
            waiting.append((len(exchanges), kind))
            exchanges.append(f"{kind} -> (no reply)")
            continue
        ctype = m.content_type
        if ctype in ("command/reply", "api/response"):
            index, kind = waiting.popleft() if waiting else (-1, "(unsolicited)")
            if index >= 0:
                exchanges[index] = f"{kind} -> {ctype}"
            if kind == "connect":
                reads = {h: shape(v) for h in CONNECT_READS
                         if (v := m.header(h)) is not None}
            elif ctype == "command/reply":
                reads = {"Reply-Text": shape(m.header("Reply-Text") or "")}
            else:
                reads = {"body": shape(m.body or "")}
            note(f"reply to {kind}", _layout(m.headers), reads)
        elif ctype == "text/event-plain":
            kind = event_kind(m)
            name = m.event.get("Event-Name", "")
            if name in UNORDERED:
                continue
            events.append(kind)
            wanted = (*EVENT_READS, *EVENT_READS_BY_NAME.get(name, ()),
                      *EVENT_READS_BY_KIND.get(kind, ()))
            reads = {h: ("<any>" if ("event", h) in _ANY_VALUE else shape(v))
                     for h in wanted if (v := m.event_raw.get(h)) is not None}
            note(kind, _layout(m.headers), reads)
        elif ctype == "text/disconnect-notice":
            kind = f"disconnect-notice {m.header('Content-Disposition') or ''}".strip()
            notices.append(kind)
            note(kind, _layout(m.headers),
                 {h: shape(v) for h in NOTICE_READS if (v := m.header(h)) is not None})
        else:
            events.append(ctype or "(no Content-Type)")
    for entry in frames.values():
        entry["reads"] = {k: sorted(v) for k, v in sorted(entry["reads"].items())}
    if "CHANNEL_HANGUP" in events:
        at = events.index("CHANNEL_HANGUP")
        if at and events[at - 1] == "CHANNEL_UNBRIDGE":  # a race in the switch: see above
            events[at - 1:at + 1] = ["CHANNEL_HANGUP", "CHANNEL_UNBRIDGE"]
    cut = events.index("CHANNEL_HANGUP") + 1 if "CHANNEL_HANGUP" in events else len(events)
    return {"exchanges": collapse(exchanges), "events": collapse(events[:cut]),
            "after_hangup": collapse(events[cut:]), "notices": notices,
            "closed_by": rec.closed_by, "frames": dict(sorted(frames.items()))}


COMPARED = ("exchanges", "events", "after_hangup", "notices", "closed_by", "frames")


def dumps(obj: Any, indent: int = 0) -> str:
    """JSON with each container that fits in a line on one line: short, reviewable diffs."""
    flat = json.dumps(obj)
    if not isinstance(obj, dict | list) or not obj or indent + len(flat) <= 96:
        return flat
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    return "[\n" + ",\n".join(pad + dumps(v, indent + 1) for v in obj) + "\n" + " " * indent + "]"


def complete(trace: dict[str, Any]) -> bool:
    """The bot got the whole hang-up sequence (it ends with CHANNEL_HANGUP_COMPLETE)."""
    return trace.get("after_hangup", [])[-1:] == ["CHANNEL_HANGUP_COMPLETE"]


def cut_short(golden: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """``golden`` as a recording cut short where ``got``'s hang-up sequence stops.

    FreeSWITCH sends what follows CHANNEL_HANGUP as its session thread fires it, and
    drops what it has not sent when the bot closes the socket (the bot closes once it
    sees the hang-up), so a live recording may get only a first part of it.
    """
    tail = got.get("after_hangup", [])
    full = golden.get("after_hangup", [])
    if tail == full or tail != full[:len(tail)]:
        return golden
    kept = {*golden["events"], *tail, *golden["notices"]}
    frames = {k: v for k, v in golden["frames"].items()
              if k in kept or k.startswith("reply to ")}
    return {**golden, "after_hangup": tail, "frames": frames}


def differences(golden: dict[str, Any], got: dict[str, Any]) -> str:
    """A unified diff of the compared parts (empty when the traces agree)."""
    def lines(trace: dict[str, Any]) -> list[str]:
        return dumps({k: trace.get(k) for k in COMPARED}).splitlines()

    return "\n".join(difflib.unified_diff(lines(golden), lines(got), "golden (FreeSWITCH)",
                                          "this recording", lineterm=""))


# -- the scripted call -------------------------------------------------------------------

#: The golden file: the real switch's normalised trace of :data:`SCRIPT`.
GOLDEN = Path(__file__).parent / "golden" / "transfer_by_dtmf.json"
GOLDEN_DID = "2090"
CALLER_ID = "+15550100100"  # the harness's Caller and the emulator place the same caller
#: A clinic open around the clock (the call must not change with the hour), whose human
#: line is the kit's 1005 (answers, echoes).
GOLDEN_TENANT: dict[str, Any] = {
    "id": "golden", "name": "Golden Clinic", "dids": [GOLDEN_DID],
    "timezone": "America/New_York", "language": "en-US", "voice": "Joanna",
    "greeting": "Thank you for calling Golden Clinic.", "hours": {"mon-sun": "00:00-24:00"},
    "slot_minutes": 30, "handoff": "loopback/1005/public", "agent": "local",
    "doctors": [{"id": "lee", "name": "Dr. Ann Lee", "specialty": "family medicine"}],
}
#: What the rendered dialplan sets on the channel before ``socket`` (esl_app/config/dialplan.py).
DIALPLAN_VARIABLES = {"ivr_tenant": "golden", "ivr_did": GOLDEN_DID,
                      "hangup_after_bridge": "true", "continue_on_fail": "true"}
CALLER_LINE = "I'd like to book an appointment"
QUIET_S = 0.9  # the bot has finished talking once silent this long (Caller.wait_bot_quiet)
HOLD_S = 1.0  # the caller stays on the human line this long, then hangs up
SCRIPT = ("wait for the greeting to end; say: " + CALLER_LINE + "; wait for the reply to "
          "end; press 0 (the bot transfers to the human line, which answers); after "
          f"{HOLD_S:g} s the caller hangs up")


def tenants_yaml(path: Path) -> Path:
    """Write a tenants.yaml holding the golden clinic only."""
    path.write_text(yaml.safe_dump({"tenants": [GOLDEN_TENANT]}, sort_keys=False))
    return path


def emulated_call(bot: tuple[str, int], *, time_scale: float = 0.5,
                  timeout: float = 40.0) -> Recording:
    """Play :data:`SCRIPT` with the emulator (audio mode, as FreeSWITCH forks audio).

    ``time_scale`` shortens the prompts: the comparison is of order, not of timing.
    """
    from esl_app.sim.emulator.audio import AudioFork
    from esl_app.sim.emulator.channel import BridgeOutcome
    from esl_app.sim.emulator.outbound import EmulatedCall

    proxy = TraceProxy(bot).start()
    try:
        call = EmulatedCall(
            proxy.address, GOLDEN_DID, CALLER_ID, variables=dict(DIALPLAN_VARIABLES),
            audio_fork=AudioFork, time_scale=time_scale,
            bridge_outcome=BridgeOutcome("answer", ring_seconds=0.0, talk_seconds=600.0,
                                         caller_hangs_up_after=False)).start()
        try:
            _wait_quiet(call, timeout)
            call.say(CALLER_LINE)
            _wait_quiet(call, timeout)
            call.press("0")
            deadline = time.monotonic() + timeout
            while not call.channel.bridged_us:
                if call.ended or time.monotonic() > deadline:
                    raise AssertionError(f"the bot did not transfer: {call.transcript}")
                gevent.sleep(0.05)
            gevent.sleep(HOLD_S)
            call.hang_up()
            assert call.wait_ended(timeout), "the emulated call did not end"
            call.wait_closed(timeout)  # a lingering socket is the bot's to close
        finally:
            call.close()
        return proxy.wait_recording(0, timeout)
    finally:
        proxy.stop()


def _wait_quiet(call: Any, timeout: float) -> None:
    """The bot listens and has stayed quiet for :data:`QUIET_S` (as the real caller waits)."""
    deadline = time.monotonic() + timeout
    while True:
        if not call.wait_until_listening(max(0.0, deadline - time.monotonic())):
            raise AssertionError(f"the bot did not finish talking: {call.transcript}")
        gevent.sleep(QUIET_S)
        if call.channel.listening.is_set():
            return
