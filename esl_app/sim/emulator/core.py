"""The emulated switch: core identity, event bus, channel registry and API commands.

One :class:`Switch` plays the part of the FreeSWITCH process: it numbers events
(``Event-Sequence``), stamps them with the core's identity headers in the order
``switch_event_create`` adds them, delivers each event to every ESL listener whose
subscription matches (event list, CUSTOM subclasses, ``filter`` headers, ``myevents``),
and answers the API commands ops scripts and the bot use, with FreeSWITCH's reply texts.
Outbound channels and inbound connections share one Switch, so ``show channels`` from an
inbound client lists the calls the emulator placed into the bot.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import socket as _socket
import time
import uuid as _uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import gevent

from esl_app.sim.emulator import wire

if TYPE_CHECKING:
    from esl_app.sim.emulator.channel import Channel

__all__ = ["EVENT_NAMES", "Event", "Subscription", "Switch"]

log = logging.getLogger(__name__)

#: Event names the subscription commands accept (switch_event.c EVENT_NAMES, abridged to
#: the ones a channel or this emulator can raise, plus ALL).
EVENT_NAMES = frozenset(
    """CUSTOM CLONE CHANNEL_CREATE CHANNEL_DESTROY CHANNEL_STATE CHANNEL_CALLSTATE
    CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_EXECUTE
    CHANNEL_EXECUTE_COMPLETE CHANNEL_HOLD CHANNEL_UNHOLD CHANNEL_BRIDGE CHANNEL_UNBRIDGE
    CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_UNPARK
    CHANNEL_APPLICATION CHANNEL_ORIGINATE CHANNEL_UUID API LOG INBOUND_CHAN OUTBOUND_CHAN
    STARTUP SHUTDOWN PUBLISH UNPUBLISH TALK NOTALK SESSION_CRASH MODULE_LOAD MODULE_UNLOAD
    DTMF MESSAGE PRESENCE_IN NOTIFY_IN PRESENCE_OUT PRESENCE_PROBE MESSAGE_WAITING
    MESSAGE_QUERY ROSTER CODEC BACKGROUND_JOB DETECTED_SPEECH DETECTED_TONE PRIVATE_COMMAND
    HEARTBEAT TRAP ADD_SCHEDULE DEL_SCHEDULE EXE_SCHEDULE RE_SCHEDULE RELOADXML NOTIFY
    PHONE_FEATURE PHONE_FEATURE_SUBSCRIBE SEND_MESSAGE RECV_MESSAGE REQUEST_PARAMS
    CHANNEL_DATA GENERAL COMMAND SESSION_HEARTBEAT CLIENT_DISCONNECTED SERVER_DISCONNECTED
    SEND_INFO RECV_INFO RECV_RTCP_MESSAGE SEND_RTCP_MESSAGE CALL_SECURE NAT RECORD_START
    RECORD_STOP PLAYBACK_START PLAYBACK_STOP CALL_UPDATE FAILURE SOCKET_DATA MEDIA_BUG_START
    MEDIA_BUG_STOP CONFERENCE_DATA_QUERY CONFERENCE_DATA CALL_SETUP_REQ CALL_SETUP_RESULT
    CALL_DETAIL DEVICE_STATE TEXT SHUTDOWN_REQUESTED ALL""".split()
)

#: The event list ``myevents`` switches on (parse_command).
MYEVENTS = frozenset(
    """CHANNEL_ANSWER CHANNEL_APPLICATION CHANNEL_BRIDGE CHANNEL_CREATE CHANNEL_DATA
    CHANNEL_DESTROY CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP
    CHANNEL_HANGUP_COMPLETE CHANNEL_ORIGINATE CHANNEL_UUID CHANNEL_OUTGOING CHANNEL_PARK
    CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_STATE CHANNEL_UNBRIDGE CHANNEL_UNPARK
    DETECTED_SPEECH DTMF NOTALK TALK""".split()
)


@dataclass
class Event:
    """A fired event: ordered headers (already including base and channel data) and a body."""

    name: str
    headers: list[tuple[str, str]]
    body: str | None = None
    subclass: str | None = None

    def get(self, name: str) -> str | None:
        """Case-insensitive header lookup (switch_event_get_header)."""
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None

    def serialize(self, fmt: str = "plain") -> bytes:
        """The bytes FS puts after the outer ``text/event-<fmt>`` frame headers."""
        if fmt == "json":
            obj: dict[str, Any] = {}
            for k, v in self.headers:
                obj[k] = v
            if self.body:
                obj["Content-Length"] = str(len(self.body.encode()))
                obj["_body"] = self.body
            return json.dumps(obj).encode()
        return wire.serialize_event(self.headers, self.body)


@dataclass
class Subscription:
    """What one ESL listener wants: the event_list/event_hash/filters of mod_event_socket."""

    enabled: bool = False
    all: bool = False
    names: set[str] = field(default_factory=set)
    custom: set[str] = field(default_factory=set)
    filters: list[tuple[str, str]] = field(default_factory=list)
    my_uuid: str | None = None
    fmt: str = "plain"

    def wants(self, ev: Event) -> bool:
        """Apply event_handler's rules in its order: list, CUSTOM hash, filters, myevents."""
        if not self.enabled:
            return False
        send = self.all
        if not send and ev.name in self.names:
            send = ev.name != "CUSTOM" or not ev.subclass or ev.subclass in self.custom
        if send and self.filters:
            send = self._filtered(ev)
        if send and self.my_uuid is not None:
            uid = ev.get("Unique-ID")
            if not uid or uid != self.my_uuid:
                send = False
        return send

    def _filtered(self, ev: Event) -> bool:
        send = False
        for hname, hval in self.filters:
            val = ev.get(hname)
            if val is None:
                continue
            comp = hval
            pos = True
            while comp and comp[0] in "+- ":
                if comp[0] == "+":
                    pos = True
                elif comp[0] == "-":
                    pos = False
                comp = comp[1:]
            if send and pos:
                continue
            if not comp:
                continue
            if hval.startswith("/"):
                import re

                pattern = comp.strip("/")
                cmp = re.search(pattern, val) is not None
            else:
                cmp = val.lower() == comp.lower()
            if cmp:
                if pos:
                    send = True
                else:
                    return False
        return send

    def command(self, verb: str, rest: str) -> str:
        """Handle ``event``/``nixevent``/``noevents``; return the Reply-Text FS would send."""
        if verb == "noevents":
            if self.enabled:
                self.enabled = False
                self.all = False
                self.names.clear()
                self.custom.clear()
                return "+OK no longer listening for events"
            return "-ERR not listening for events"
        words = [w for w in rest.split(" ") if w]
        key_count = 0
        custom = False
        if verb == "event":
            for i, w in enumerate(words):
                if i == 0 and w.lower() in ("plain", "json", "xml"):
                    self.fmt = w.lower()
                    continue
                if custom:
                    self.custom.add(w)
                elif w.upper() in EVENT_NAMES:
                    key_count += 1
                    if w.upper() == "ALL":
                        self.all = True
                    self.names.add(w.upper())
                    if w.upper() == "CUSTOM":
                        custom = True
            if not key_count:
                return "-ERR no keywords supplied"
            self.enabled = True
            return f"+OK event listener enabled {self.fmt}"
        # nixevent
        for w in words:
            if custom:
                self.custom.discard(w)
            elif w.upper() in EVENT_NAMES:
                key_count += 1
                up = w.upper()
                if up == "CUSTOM":
                    custom = True
                elif up == "ALL":
                    self.all = False
                    self.names.clear()
                else:
                    if self.all:
                        self.all = False
                        self.names = set(EVENT_NAMES) - {"ALL"}
                    self.names.discard(up)
        if not key_count:
            return "-ERR no keywords supplied"
        self.enabled = True
        return "+OK events nixed"

    def filter_command(self, rest: str) -> str:
        """``filter <header> <value>`` / ``filter delete <header> [value]`` replies."""
        rest = rest.lstrip(" ")
        name, _, val = rest.partition(" ")
        if name.lower() == "delete" and val:
            hname, _, hval = val.partition(" ")
            if hname.lower() == "all":
                self.filters.clear()
            else:
                self.filters = [
                    (k, v)
                    for k, v in self.filters
                    if not (k.lower() == hname.lower() and (not hval or v == hval))
                ]
            return f"+OK filter deleted. [{hname}][{hval or '(null)'}]"
        if val:
            if name.lower() == "add":
                name, _, val = val.partition(" ")
            self.filters.append((name, val))
            return f"+OK filter added. [{name}]=[{val}]"
        return "-ERR invalid syntax"


Listener = Callable[[Event], None]


def _epoch_us() -> int:
    return int(time.time() * 1_000_000)


@functools.lru_cache(maxsize=1)
def _dates_of(sec: int) -> tuple[str, str]:
    stamp = datetime.fromtimestamp(sec, UTC)
    return (stamp.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            stamp.strftime("%a, %d %b %Y %H:%M:%S GMT"))


def _event_dates() -> tuple[str, str]:
    """Event-Date-Local and Event-Date-GMT: both change once a second, so format once."""
    return _dates_of(int(time.time()))


class Switch:
    """Process-wide emulator state shared by outbound channels and inbound clients."""

    version = "1.10.12-release"

    def __init__(
        self,
        *,
        hostname: str = "ivr-emulator",
        ipv4: str = "127.0.0.1",
        password: str = "ClueCon",
        bot_address: tuple[str, int] | None = None,
        time_scale: float = 1.0,
        db_lag: float = 0.0,
    ) -> None:
        self.core_uuid = str(_uuid.uuid4())
        self.hostname = hostname
        self.ipv4 = ipv4
        self.password = password
        self.bot_address = bot_address
        self.time_scale = time_scale
        #: Seconds a new channel stays out of ``show channels``: FreeSWITCH lists channels
        #: from its core SQL table, written asynchronously (~150 ms late on an idle switch).
        self.db_lag = db_lag
        self.started = time.monotonic()
        self.global_vars: dict[str, str] = {
            "hostname": hostname,
            "local_ip_v4": ipv4,
            "domain": ipv4,
            "core_uuid": self.core_uuid,
        }
        self.channels: dict[str, Channel] = {}
        self.sessions_since_start = 0
        self.peak_sessions = 0
        self._seq = 0
        self._listeners: list[Listener] = []
        # listeners bound to one channel by ``myevents``: the only events they can ever
        # want carry that Unique-ID, so an event reaches them without asking the others
        self._bound: dict[str, list[Listener]] = {}
        self._bound_to: dict[Listener, str] = {}  # and the other way: a close finds it
        #: factory(switch, did, caller, variables, address) -> started call, for originate
        self.originate_hook: Callable[..., Any] | None = None
        #: scripted phones for ``originate`` to a number (esl_app/sim/emulator/callees.py)
        self.callees: dict[str, Any] = {}

    # -- events -----------------------------------------------------------------------
    def next_sequence(self) -> int:
        """Event-Sequence is process-wide and monotonically increasing."""
        self._seq += 1
        return self._seq

    def base_headers(
        self, name: str, calling: tuple[str, str, int], subclass: str | None = None
    ) -> list[tuple[str, str]]:
        """The headers switch_event_create puts first, in its order."""
        local, gmt = _event_dates()
        hdrs = [("Event-Name", name)]
        if subclass:
            hdrs.append(("Event-Subclass", subclass))
        hdrs += [
            ("Core-UUID", self.core_uuid),
            ("FreeSWITCH-Hostname", self.hostname),
            ("FreeSWITCH-Switchname", self.hostname),
            ("FreeSWITCH-IPv4", self.ipv4),
            ("FreeSWITCH-IPv6", "::1"),
            ("Event-Date-Local", local),
            ("Event-Date-GMT", gmt),
            ("Event-Date-Timestamp", str(_epoch_us())),
            ("Event-Calling-File", calling[0]),
            ("Event-Calling-Function", calling[1]),
            ("Event-Calling-Line-Number", str(calling[2])),
            ("Event-Sequence", str(self.next_sequence())),
        ]
        return hdrs

    def add_listener(self, fn: Listener) -> None:
        """Register an ESL connection's delivery function."""
        self._listeners.append(fn)

    def bind_listener(self, fn: Listener, uuid: str) -> None:
        """``fn``'s subscription now requires Unique-ID ``uuid`` (``myevents``): index it.

        Why: every event used to be offered to every connection, so a thousand calls
        cost a thousand subscription checks per event, and the load generator, not the
        server, ran out of CPU first. Which events a connection gets is unchanged.
        """
        try:
            self._listeners.remove(fn)
        except ValueError:
            return  # already removed (the connection closed)
        self._bound.setdefault(uuid, []).append(fn)
        self._bound_to[fn] = uuid

    def remove_listener(self, fn: Listener) -> None:
        """Forget a closed connection."""
        try:
            self._listeners.remove(fn)
            return
        except ValueError:
            pass
        uuid = self._bound_to.pop(fn, None)
        fns = self._bound.get(uuid) if uuid is not None else None
        if fns is not None:
            fns.remove(fn)
            if not fns:
                del self._bound[uuid]

    def fire(self, ev: Event) -> None:
        """Deliver an event to every listener that may want it.

        The unbound ones and those bound to the event's channel; each applies its own
        subscription.
        """
        bound = self._bound.get(ev.get("Unique-ID") or "")
        for fn in [*self._listeners, *bound] if bound else list(self._listeners):
            try:
                fn(ev)
            except Exception:  # a broken listener must not break the channel
                log.exception("event listener failed")

    # -- channels ---------------------------------------------------------------------
    def register(self, ch: Channel) -> None:
        """Track a live channel (for API commands and ``show channels``)."""
        self.channels[ch.uuid] = ch
        self.sessions_since_start += 1
        self.peak_sessions = max(self.peak_sessions, len(self.channels))

    def unregister(self, ch: Channel) -> None:
        """Drop a destroyed channel."""
        self.channels.pop(ch.uuid, None)

    # -- API --------------------------------------------------------------------------
    def api(self, command: str, arg: str | None) -> str:
        """Run one API command and return its output text, as switch_api_execute would."""
        cmd = command.strip()
        fn = self._API.get(cmd.lower())
        if fn is None:
            return f"-ERR {cmd} Command not found!\n"
        return fn(self, (arg or "").strip())

    def bgapi(self, command: str, arg: str | None, job_uuid: str) -> None:
        """Run an API command in the background and fire BACKGROUND_JOB with its output."""

        def run() -> None:
            out = self.api(command, arg) or "Command returned no output!"
            hdrs = self.base_headers("BACKGROUND_JOB", ("mod_event_socket.c", "api_exec", 1572))
            hdrs += [("Job-UUID", job_uuid), ("Job-Command", command)]
            if arg:
                hdrs.append(("Job-Command-Arg", arg))
            self.fire(Event("BACKGROUND_JOB", hdrs, out))

        gevent.spawn(run)

    def _chan(self, uid: str) -> Channel | None:
        return self.channels.get(uid)

    def _api_status(self, arg: str) -> str:
        up = time.monotonic() - self.started
        secs = int(up)
        ms = int((up - secs) * 1000)
        us = int((up - secs) * 1_000_000) % 1000
        days, rem = divmod(secs, 86400)
        hours, rem = divmod(rem, 3600)
        mins, s = divmod(rem, 60)
        n = len(self.channels)
        return (
            f"UP 0 years, {days} days, {hours} hours, {mins} minutes, {s} seconds, "
            f"{ms} milliseconds, {us} microseconds\n"
            f"FreeSWITCH ({self.hostname}) is ready\n"
            f"{self.sessions_since_start} session(s) since startup\n"
            f"{n} session(s) - peak {self.peak_sessions}, last 5min {self.peak_sessions} \n"
            "0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n"
            "1000 session(s) max\n"
            "min idle cpu 0.00/99.00\n"
            "Current Stack Size/Max 240K/8192K\n"
        )

    def _api_show(self, arg: str) -> str:
        words = arg.split()
        what = words[0].lower() if words else ""
        as_json = len(words) >= 3 and words[-2].lower() == "as" and words[-1].lower() == "json"
        if what not in ("channels", "calls"):
            return "-USAGE: codec|endpoint|application|api|dialplan|file|timer|calls [count]|"\
                "channels [count|like <match string>]|calls|detailed_calls|bridged_calls|"\
                "detailed_bridged_calls|aliases|complete|chat|management|modules|nat_map|say|"\
                "interfaces|interface_types|tasks|limits|status\n"
        now = time.monotonic()
        rows = [ch.show_row() for ch in list(self.channels.values())
                if not ch.destroyed and now - ch.created_mono >= self.db_lag]
        if what == "calls":
            for r in rows:
                r["b_uuid"] = ""
        if as_json:
            if not rows:
                return json.dumps({"row_count": 0}) + "\n"
            return json.dumps({"row_count": len(rows), "rows": rows}) + "\n"
        if not rows:
            return "uuid,direction,created,created_epoch,name,state\n\n0 total.\n"
        keys = list(rows[0].keys())
        out = ",".join(keys) + "\n"
        for r in rows:
            out += ",".join(str(r[k]) for k in keys) + "\n"
        return out + f"\n{len(rows)} total.\n"

    def _api_uuid_kill(self, arg: str) -> str:
        if not arg:
            return "-USAGE: <uuid> [cause]\n"
        uid, _, cause = arg.partition(" ")
        ch = self._chan(uid)
        if ch is None or ch.hung_up:
            return "-ERR No Such Channel!\n"
        ch.hangup(cause.strip() or "NORMAL_CLEARING", by="api")
        return "+OK\n"

    def _api_uuid_break(self, arg: str) -> str:
        if not arg:
            return "-USAGE: <uuid> [all]\n"
        uid, _, flag = arg.partition(" ")
        ch = self._chan(uid)
        if ch is None or ch.hung_up:
            return "-ERR No Such Channel!\n"
        ch.do_break(all_="all" in flag)
        return "+OK\n"

    def _api_uuid_setvar(self, arg: str) -> str:
        parts = arg.split(" ", 2)
        if len(parts) < 2:
            return "-USAGE: <uuid> <var> [value]\n"
        ch = self._chan(parts[0])
        if ch is None or ch.hung_up:
            return "-ERR No such channel!\n"
        if len(parts) == 3 and parts[2]:
            ch.variables[parts[1]] = parts[2]
        else:
            ch.variables.pop(parts[1], None)
        return "+OK\n"

    def _api_uuid_getvar(self, arg: str) -> str:
        parts = arg.split(" ")
        if len(parts) < 2:
            return "-USAGE: <uuid> <var>\n"
        ch = self._chan(parts[0])
        if ch is None or ch.hung_up:
            return "-ERR No such channel!\n"
        val = ch.get_variable(parts[1])
        return val if val is not None else "_undef_"

    def _api_uuid_dump(self, arg: str) -> str:
        parts = arg.split()
        if not parts:
            return "-USAGE: <uuid> [format]\n"
        ch = self._chan(parts[0])
        if ch is None:
            return "-ERR No such channel!\n"
        hdrs = self.base_headers("CHANNEL_DATA", ("mod_commands.c", "uuid_dump_function", 6138))
        hdrs += ch.channel_data()
        if len(parts) > 1 and parts[1] == "json":
            return json.dumps(dict(hdrs))
        return "".join(f"{k}: {wire.url_encode(v)}\n" for k, v in hdrs)

    def _api_uuid_exists(self, arg: str) -> str:
        """``true`` while the session exists (until it is destroyed), else ``false``."""
        ch = self._chan(arg.strip())
        return "true" if ch is not None and not getattr(ch, "destroyed", False) else "false"

    def _api_uuid_transfer(self, arg: str) -> str:
        parts = arg.split()
        if len(parts) > 1 and parts[1] in ("-bleg", "-both"):
            parts.pop(1)
        if len(parts) < 2:
            return "-USAGE: <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]\n"
        ch = self._chan(parts[0])
        if ch is None or ch.hung_up:
            return "-ERR No such channel!\n"
        ch.transfer(parts[1], parts[2] if len(parts) > 2 else "XML",
                    parts[3] if len(parts) > 3 else "default")
        return "+OK\n"

    def _api_uuid_audio_fork(self, arg: str) -> str:
        parts = arg.split(" ")
        if len(parts) < 2:
            return (
                "-USAGE: <uuid> [start | stop | send_text | pause | resume | graceful-shutdown ]"
                " [wss-url | path] [mono | mixed | stereo]"
                " [8000 | 16000 | 24000 | 32000 | 64000] [bugname] [metadata]\n"
            )
        ch = self._chan(parts[0])
        if ch is None or ch.hung_up:
            return "-ERR Operation Failed\n"
        return ch.audio_fork(parts[1], parts[2:])

    def _api_global_getvar(self, arg: str) -> str:
        if not arg:
            return "".join(f"{k}={v}\n" for k, v in self.global_vars.items())
        return self.global_vars.get(arg, "")

    def _api_global_setvar(self, arg: str) -> str:
        name, sep, val = arg.partition("=")
        if not sep or not name.strip():
            return "-USAGE: <var>[=<value>]\n"
        self.global_vars[name.strip()] = val.strip()
        return "+OK\n"

    def _api_reloadxml(self, arg: str) -> str:
        hdrs = self.base_headers("RELOADXML", ("switch_xml.c", "switch_xml_open_root", 2409))
        self.fire(Event("RELOADXML", hdrs))
        return "+OK [Success]\n"

    def _api_sofia(self, arg: str) -> str:
        if arg.split()[:1] != ["status"]:
            return "-ERR Unknown command!\n"
        ip = self.ipv4
        sep = "=" * 99
        head = "Name\t   Type\t                                      Data\tState\n"
        return (
            " " * 21 + head +
            f"{sep}\n"
            f"            external\tprofile\t           sip:mod_sofia@{ip}:5080\tRUNNING (0)\n"
            f"              {ip}\t  alias\t                                  internal\tALIASED\n"
            f"            internal\tprofile\t           sip:mod_sofia@{ip}:5060\t"
            f"RUNNING ({len(self.channels)})\n"
            f"{sep}\n2 profiles 1 alias\n\n"
        )

    def _api_hostname(self, arg: str) -> str:
        return _socket.gethostname() if not self.hostname else self.hostname

    def _api_version(self, arg: str) -> str:
        return f"FreeSWITCH Version {self.version} (emulator)\n"

    def _api_originate(self, arg: str) -> str:
        """``originate [{vars}]loopback/<did>[/<context>] <&app(args)|exten>``.

        As mod_loopback does: the b-leg enters the dialplan (``originate_hook`` plays it,
        e.g. a call into the bot), the a-leg runs the originate's application and is the
        uuid answered. Each leg names the other in ``other_loopback_leg_uuid``, and
        ``loopback_leg`` is ``A`` or ``B``; the hang-up of either ends both. A b-leg that
        has already ended fails the originate with its cause. Unlike FreeSWITCH, the
        answer does not wait for the b-leg to be answered.
        """
        parts = split_args(arg)
        if len(parts) < 2:
            return "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] "\
                "[<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]\n"
        url, target = parts[0], parts[1]
        variables: dict[str, str] = {}
        if url.startswith("{") and "}" in url:
            spec, url = url[1:].split("}", 1)
            for kv in spec.split(","):
                k, _, v = kv.partition("=")
                if k:
                    variables[k.strip()] = v.strip()
        if not url.startswith("loopback/"):
            return self._originate_number(url, target, variables)
        segs = url.split("/")
        did = segs[1] if len(segs) > 1 else ""
        if not did:
            return "-ERR INVALID_NUMBER_FORMAT\n"
        address = self.bot_address
        if target.startswith("&socket(") and target.endswith(")"):
            hostport = target[len("&socket(") : -1].split()[0]
            host, _, port = hostport.rpartition(":")
            address = (host or "127.0.0.1", int(port or 8084))
        if address is None or self.originate_hook is None:
            return "-ERR DESTINATION_OUT_OF_ORDER\n"
        caller = variables.pop("origination_caller_id_number", "0000000000")
        a_uuid = str(_uuid.uuid4())
        b_vars = {**variables, "loopback_leg": "B", "other_loopback_leg_uuid": a_uuid}
        call = self.originate_hook(self, did, caller, b_vars, address)
        b_leg = getattr(call, "channel", call)
        b_leg.name = b_leg.variables["channel_name"] = f"loopback/{did}-b"
        if b_leg.hung_up:
            return f"-ERR {b_leg.hangup_cause or 'NORMAL_CLEARING'}\n"
        a_leg = self._loopback_a_leg(a_uuid, b_leg, target, caller, variables)
        return f"+OK {a_leg.uuid}\n"

    def _originate_number(self, url: str, target: str, variables: dict[str, str]) -> str:
        """A call to a phone (``sofia/gateway/<gw>/<number>``, ``user/<number>``).

        Its answered leg runs the originate's application: ``&socket(host:port …)``
        connects it to that outbound socket (the bot), as FreeSWITCH does.
        """
        from esl_app.sim.emulator.callees import originate_to_callee

        number = url.rstrip("/").rsplit("/", 1)[-1]
        if not re.fullmatch(r"\+?[0-9]{3,15}", number or ""):
            return "-ERR INVALID_NUMBER_FORMAT\n"
        address = None
        socket_data = ""
        if target.startswith("&socket("):
            socket_data = target[len("&socket("):].removesuffix(")")
            host, _, port = socket_data.split()[0].rpartition(":") if socket_data else "::"
            address = (host or "127.0.0.1", int(port or 8084) if port.isdigit() else 8084)
        return originate_to_callee(self, number, variables, address, socket_data)

    def _loopback_a_leg(self, uid: str, b_leg: Channel, target: str, caller: str,
                        variables: dict[str, str]) -> Channel:
        """The originating leg: it runs ``&app(args)`` and ends together with ``b_leg``."""
        from esl_app.sim.emulator.channel import Channel

        a_leg = Channel(self, b_leg.did, caller, uuid=uid, variables={
            **variables, "loopback_leg": "A", "other_loopback_leg_uuid": b_leg.uuid})
        a_leg.name = a_leg.variables["channel_name"] = f"loopback/{b_leg.did}-a"
        app, _, app_arg = target.removeprefix("&").partition("(")
        if not target.startswith("&") or app not in Channel._APPS:
            app, app_arg = "park", ""  # an extension, or an app the emulator lacks: it holds
        a_leg.execute(app, app_arg.removesuffix(")"))
        gevent.spawn(_hang_up_together, a_leg, b_leg)
        return a_leg

    _API: dict[str, Callable[[Switch, str], str]] = {
        "status": _api_status,
        "show": _api_show,
        "uuid_kill": _api_uuid_kill,
        "uuid_break": _api_uuid_break,
        "uuid_setvar": _api_uuid_setvar,
        "uuid_getvar": _api_uuid_getvar,
        "uuid_dump": _api_uuid_dump,
        "uuid_exists": _api_uuid_exists,
        "uuid_transfer": _api_uuid_transfer,
        "uuid_audio_fork": _api_uuid_audio_fork,
        "global_getvar": _api_global_getvar,
        "global_setvar": _api_global_setvar,
        "reloadxml": _api_reloadxml,
        "sofia": _api_sofia,
        "hostname": _api_hostname,
        "version": _api_version,
        "originate": _api_originate,
    }


def split_args(arg: str) -> list[str]:
    """Split API arguments as FreeSWITCH does.

    On spaces, except inside single quotes (which are dropped): ``&socket(h:p async
    full)`` unquoted is three arguments, and the socket application then gets ``h:p``
    alone, without ``full``.
    """
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in arg.strip():
        if ch == "'":
            quoted = not quoted
        elif ch == " " and not quoted:
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def _hang_up_together(a_leg: Channel, b_leg: Channel) -> None:
    """mod_loopback: when one leg of the pair ends, the other hangs up with its cause."""
    gevent.wait([a_leg.ended, b_leg.ended], count=1)
    first = a_leg if a_leg.ended.is_set() else b_leg
    for leg in (a_leg, b_leg):
        leg.hangup(first.hangup_cause or "NORMAL_CLEARING", by="loopback")
