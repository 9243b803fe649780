"""Emulated FreeSWITCH channels that dial *into* the bot's outbound ESL server.

:class:`OutboundConnection` is the ``socket`` application's side of a call leg
(:class:`~esl_app.sim.emulator.channel.Channel`), and
:class:`EmulatedCall` is the driver API used by tests, ``ivr simulate`` and the load
generator. :class:`RawEslClient` sends arbitrary bytes for fault tests.

Event order, reply texts and header order follow mod_event_socket.c and
switch_core_session.c; see ``docs/call-wire-contract.md``. A call recorded at the real
FreeSWITCH (``tests/freeswitch/golden/``) holds them to it:
``tests/test_emulator_golden_trace.py`` fails when the emulator's wire differs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.event
from gevent import socket as gsocket
from gevent.queue import Queue

from esl_app.sim.emulator import net, wire
from esl_app.sim.emulator.channel import AudioForkHook, BridgeOutcome, Channel
from esl_app.sim.emulator.connection import EslConnection
from esl_app.sim.emulator.core import MYEVENTS, Switch

__all__ = [
    "EmulatedCall",
    "OutboundConnection",
    "RawEslClient",
    "originate_into_bot",
]

log = logging.getLogger(__name__)

# Commands an outbound socket answers "-ERR command not found" to unless its ``socket``
# application was given ``full`` (mod_event_socket's parse_command).
_FULL_ONLY = frozenset({"linger", "nolinger", "api", "bgapi", "event", "events", "nixevent",
                        "noevents", "filter", "divert_events", "log", "nolog", "sendevent"})


class OutboundConnection(EslConnection):
    """The ``socket`` application's listener: async + full control over one channel."""

    def __init__(self, switch: Switch, sock: gsocket.socket, channel: Channel) -> None:
        self.channel = channel
        self.session_uuid = channel.uuid
        self.linger: int | None = None  # None = not lingering, -1 = until exit
        self.connected = False
        self._handled_down = False
        self._disconnected = False
        self._linger_timer: gevent.Greenlet | None = None
        super().__init__(switch, sock)
        channel.conn = self

    def on_command(self, cmd: wire.Command) -> None:
        """Session commands first, then the generic ones (full control)."""
        low = cmd.line.lower()
        ch = self.channel
        if low.startswith("resume"):
            ch.variables["socket_resume"] = "true"
            ch.resumed = True
            self.reply("+OK")
        elif low.startswith("connect"):
            self.connected = True
            self.send(ch.connect_reply(full=ch.socket_full))
        elif not ch.socket_full and low.split(" ", 1)[0] in _FULL_ONLY:
            # mod_event_socket: without 'full' these are not session commands
            self.reply("-ERR command not found")
        elif low.startswith("getvar"):
            name = cmd.line[6:].strip()
            val = ch.get_variable(name) if name else ""
            self.reply(val or "-ERR command not found")
        elif low.startswith("myevents"):
            if self.sub.my_uuid is not None:
                self.reply("-ERR aready enabled.")
                return
            self.sub.names |= MYEVENTS
            self.sub.my_uuid = ch.uuid
            self.sub.enabled = True
            self.switch.bind_listener(self._deliver, ch.uuid)
            if "xml" in cmd.line or "XML" in cmd.line:
                self.sub.fmt = "xml"
            if "json" in cmd.line or "JSON" in cmd.line:
                self.sub.fmt = "json"
            self.reply("+OK Events Enabled")
        elif low.startswith("sendmsg"):
            self._sendmsg(cmd)
        elif low.startswith("linger"):
            rest = cmd.line[6:]
            if rest.startswith(" ") and rest[1:2]:
                try:
                    secs = int(rest[1:].split()[0])
                except ValueError:
                    secs = 0
                self.linger = secs
                self.reply(f"+OK will linger {secs} seconds")
            else:
                self.linger = -1
                self.reply("+OK will linger")
        elif low.startswith("nolinger"):
            self.linger = None
            self.reply("+OK will not linger")
        else:
            super().on_command(cmd)

    def _sendmsg(self, cmd: wire.Command) -> None:
        target = cmd.line[7:].strip() or (cmd.header("session-id") or "")
        ch: Channel | None = self.channel
        if target and target != self.channel.uuid:
            ch = self.switch.channels.get(target)
            if ch is None:
                self.reply(f"-ERR invalid session id [{target}]")
                return
        self.reply("+OK")
        assert ch is not None
        verb = (cmd.header("call-command") or "").lower()
        if verb == "execute":
            name = cmd.header("execute-app-name") or ""
            arg = cmd.header("execute-app-arg") or ""
            ctype = (cmd.header("content-type") or "").lower()
            if ctype == "text/plain" and cmd.body is not None:
                arg = cmd.body.decode("utf-8", "replace")
            try:
                loops = int(cmd.header("loops") or "1")
            except ValueError:
                loops = 1
            ch.execute(name, arg, cmd.header("Event-UUID"), loops)
        elif verb == "hangup":
            cause = cmd.header("hangup-cause") or "NORMAL_CLEARING"
            target_ch = ch
            gevent.spawn(lambda: target_ch.hangup(cause, by="bot"))

    def channel_down(self) -> None:
        """The channel hung up: linger notice, or disconnect and close (read_packet)."""
        if self._handled_down or self.closed.is_set():
            return
        self._handled_down = True
        if self.linger is not None:
            self.send(wire.linger_notice(self.channel.uuid, self.channel.name, self.linger))
            if self.linger >= 0:
                self._linger_timer = gevent.spawn_later(self.linger, self._linger_expired)
        else:
            self._disconnect()

    def _linger_expired(self) -> None:
        self._disconnect()

    def _disconnect(self) -> None:
        """listener_run's end, however it came: the disconnect notice (once), then close."""
        self.running = False
        if not self._disconnected:
            self._disconnected = True
            self.send(wire.disconnect_notice(self.channel.uuid))
        self.close()

    def on_peer_closed(self) -> None:
        """The bot closed the socket: a call it still controlled is hung up.

        FreeSWITCH still writes its disconnect notice before it closes its side (seen
        after a lingering bot closed without ``exit``; tests/freeswitch/golden).
        A call transferred away (its ``socket`` app completed) is not the bot's any
        more: on FreeSWITCH 1.10 it goes on in its new extension.
        """
        self._disconnect()
        if not self.channel.hung_up and not self.channel.transfer_us:
            self.channel.hangup("NORMAL_CLEARING", by="socket_closed")

    def shutdown_after_exit(self) -> None:
        """``exit``: +OK bye was queued; disconnect notice, close, and drop the call."""
        self._disconnect()
        if not self.channel.hung_up and not self.channel.transfer_us:
            self.channel.hangup("NORMAL_CLEARING", by="socket_closed")

    def on_closed(self) -> None:
        """Cancel a pending linger timer; the channel forgets the closed connection.

        Channel and connection refer to each other: left so, every emulated call is a
        reference cycle for the cyclic GC, whose full passes over 1000 calls' state
        stall the load generator for ~100 ms (late frames that are not the bot's).
        """
        if self._linger_timer is not None:
            self._linger_timer.kill(block=False)
        if self.channel.conn is self:
            self.channel.conn = None


class EmulatedCall:
    """Driver API: place one call into an outbound ESL server and act as the caller.

    ``events`` yields the out-events of docs/contracts.md §1 (``bot_said``, ``listening``,
    ``transfer``, ``call_ended``); ``commands`` lists every command the bot sent (raw,
    parsed, ``at``).
    """

    def __init__(
        self,
        server: tuple[str, int],
        did: str,
        caller: str = "+15550100100",
        *,
        caller_name: str | None = None,
        time_scale: float = 1.0,
        bridge_outcome: BridgeOutcome | None = None,
        variables: dict[str, str] | None = None,
        switch: Switch | None = None,
        audio_fork: Callable[[], AudioForkHook] | None = None,
        context: str = "public",
        listen_settle: float = 0.2,
        connect_timeout: float = 5.0,
        socket_data: str | None = None,
    ) -> None:
        self.server = server
        self.switch = switch or Switch(time_scale=time_scale)
        self.connect_timeout = connect_timeout
        self.channel = Channel(
            self.switch, did, caller, caller_name=caller_name, variables=variables,
            time_scale=time_scale, bridge_outcome=bridge_outcome, audio_fork=audio_fork,
            context=context,
            socket_data=socket_data or f"{server[0]}:{server[1]} async full",
            listen_settle=listen_settle)
        self.conn: OutboundConnection | None = None

    # convenience views -------------------------------------------------------------------
    @property
    def uuid(self) -> str:
        """The channel's Unique-ID."""
        return self.channel.uuid

    @property
    def events(self) -> Queue[dict[str, Any]]:
        """Out-events queue (dicts shaped like ``ivr simulate --jsonl`` output)."""
        return self.channel.out_events

    @property
    def commands(self) -> list[wire.Command]:
        """Every command block received from the bot, in order."""
        return self.conn.commands if self.conn else []

    @property
    def ended(self) -> bool:
        """True once the channel has hung up and reported."""
        return self.channel.ended.is_set()

    @property
    def transcript(self) -> dict[str, Any]:
        """The call_ended summary (valid once ended; partial before)."""
        return self.channel.summary()

    # actions --------------------------------------------------------------------------------
    def start(self) -> EmulatedCall:
        """Connect to the bot like the ``socket`` app; raises OSError if it is unreachable."""
        try:
            sock = net.connect(self.server, timeout=self.connect_timeout)
        except OSError:
            self.channel.hangup("DESTINATION_OUT_OF_ORDER", by="socket_failed")
            raise
        sock.settimeout(None)
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        self.conn = OutboundConnection(self.switch, sock, self.channel)
        self.conn.start()
        self.channel.socket_parked()
        return self

    def say(self, text: str) -> None:
        """The caller speaks now (does not wait for the bot)."""
        self.channel.say(text)

    def press(self, digits: str) -> None:
        """The caller presses DTMF keys."""
        self.channel.press(digits)

    def hang_up(self, cause: str = "NORMAL_CLEARING") -> None:
        """The caller hangs up."""
        self.channel.hangup(cause, by="caller")

    def wait_until_listening(self, timeout: float | None = None) -> bool:
        """Block until the bot has finished talking and listens (False on timeout/end).

        "Listening" can be set and cleared again before this greenlet runs (the bot
        re-arms recognition and starts a reply); keep waiting until it holds, the call
        ends or the deadline passes.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            waiter = gevent.wait([self.channel.listening, self.channel.ended], timeout=left,
                                 count=1)
            if self.ended or self.channel.ended.is_set():
                return False
            if waiter and self.channel.listening.is_set():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            gevent.sleep(0.01)

    def wait_ended(self, timeout: float | None = None) -> bool:
        """Block until the call is over."""
        return self.channel.ended.wait(timeout)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the ESL socket is closed (after linger/exit)."""
        if self.conn is None:
            return True
        return self.conn.closed.wait(timeout)

    def run_script(self, lines: Iterable[str], timeout: float = 30.0) -> dict[str, Any]:
        """Play a caller script: text, ``#dtmf 12``, ``#silence 6``, ``#hangup``.

        Each line waits until the bot listens; returns the ``call_ended`` summary.
        """
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            if self.ended:
                break
            if line == "#hangup":
                self.hang_up()
                break
            if line.startswith("#silence"):
                try:
                    secs = float(line.split()[1])
                except (IndexError, ValueError):
                    secs = 1.0
                self.channel._caller_input()
                gevent.sleep(secs * self.channel.time_scale)
                continue
            if not self.wait_until_listening(timeout):
                break
            if line.startswith("#dtmf"):
                self.press(line[5:].strip())
            else:
                self.say(line)
        self.wait_ended(timeout)
        return self.transcript

    # fault injection ------------------------------------------------------------------------
    def inject_raw(self, data: bytes) -> None:
        """Send arbitrary bytes on the live socket, in order with replies and events."""
        if self.conn is not None:
            self.conn.send(data)

    def reset(self) -> None:
        """Abort the TCP connection with a RST (SO_LINGER 0) and drop the call."""
        if self.conn is None:
            return
        import struct

        try:
            self.conn.sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.conn.abort()
        if not self.channel.hung_up:
            self.channel.hangup("NORMAL_CLEARING", by="reset")

    def close(self) -> None:
        """Hang up if needed and close the socket (test teardown)."""
        if not self.channel.hung_up:
            self.channel.hangup("NORMAL_CLEARING", by="caller")
        if self.conn is not None:
            self.conn.close()


def originate_into_bot(
    switch: Switch, did: str, caller: str, variables: dict[str, str],
    address: tuple[str, int],
) -> EmulatedCall:
    """Switch.originate_hook: ``originate loopback/<did>`` places a call into the bot."""
    call = EmulatedCall(address, did, caller, switch=switch, variables=variables,
                        time_scale=switch.time_scale)
    try:
        call.start()
    except OSError:
        log.warning("originate: bot at %s:%s unreachable", *address)
    return call


class RawEslClient:
    """A bare socket that plays FreeSWITCH toward the bot with hand-made bytes."""

    def __init__(self, server: tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = net.connect(server, timeout=timeout)
        self.parser = wire.CommandParser()
        self._pending: list[wire.Command] = []

    def send(self, data: bytes) -> None:
        """Write raw bytes (frames, garbage, partial frames)."""
        self.sock.sendall(data)

    def read_command(self, timeout: float = 5.0) -> wire.Command | None:
        """Next command block the bot sent (None on EOF/timeout)."""
        self.sock.settimeout(timeout)
        while not self._pending:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                return None
            if not data:
                return None
            self._pending.extend(self.parser.feed(data))
        return self._pending.pop(0)

    def is_closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the bot closes the connection within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self._pending.extend(self.parser.feed(data))
        except (TimeoutError, OSError) as exc:
            return not isinstance(exc, TimeoutError)

    def reset(self) -> None:
        """Abort with a TCP RST."""
        import struct

        self.sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        """Close normally."""
        self.sock.close()
