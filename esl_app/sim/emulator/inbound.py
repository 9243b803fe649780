"""Inbound event socket (port 8021 by default) for ops scripts, as mod_event_socket serves it.

On connect the client gets ``auth/request``; ``auth <password>`` answers ``+OK accepted``
or ``-ERR invalid`` followed by a disconnect notice and close; before authentication every
other command is ``-ERR command not found``. A client outside the ACL gets
``text/rude-rejection`` and is disconnected. After authentication: ``api``, ``bgapi``,
``event``/``filter``/``nixevent``/``noevents``, ``exit``. API commands run against the shared
:class:`~esl_app.sim.emulator.core.Switch`, so the channels the emulator placed into the bot are
visible (``show channels``, ``uuid_getvar``, ``uuid_kill`` ...), and ``originate
loopback/<did>`` places a new emulated call into the bot: as with mod_loopback, the answer
names the parked a-leg, whose ``other_loopback_leg_uuid`` is the b-leg in the bot. Set the
Switch's ``db_lag`` to list new channels in ``show channels`` as late as FreeSWITCH does.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from gevent import socket as gsocket
from gevent.pool import Pool
from gevent.server import StreamServer

from esl_app.sim.emulator import wire
from esl_app.sim.emulator.connection import EslConnection
from esl_app.sim.emulator.core import Switch
from esl_app.sim.emulator.outbound import originate_into_bot

__all__ = ["InboundConnection", "InboundServer"]

log = logging.getLogger(__name__)


class InboundConnection(EslConnection):
    """One ops client: auth first, then the full command set."""

    def __init__(self, switch: Switch, sock: gsocket.socket) -> None:
        super().__init__(switch, sock)
        self.authed = False

    def on_command(self, cmd: wire.Command) -> None:
        """Authentication gate in front of the generic commands."""
        low = cmd.line.lower()
        if low.startswith("exit") or low.startswith("..."):
            super().on_command(cmd)
            return
        if not self.authed:
            if low.startswith("auth "):
                if cmd.line[5:] == self.switch.password:
                    self.authed = True
                    self.reply("+OK accepted")
                else:
                    self.reply("-ERR invalid")
                    self.running = False
                    self.exit_requested = True
                return
            self.reply("-ERR command not found")
            return
        if low.startswith("myevents "):
            uid = cmd.line[9:].strip().split(" ")[0]
            if uid not in self.switch.channels:
                self.reply("-ERR invalid uuid")
                return
            from esl_app.sim.emulator.core import MYEVENTS

            self.sub.names |= MYEVENTS
            self.sub.my_uuid = uid
            self.sub.enabled = True
            self.switch.bind_listener(self._deliver, uid)
            self.reply("+OK Events Enabled")
            return
        super().on_command(cmd)


class InboundServer:
    """``StreamServer`` with a bounded pool; one :class:`InboundConnection` per client."""

    def __init__(
        self,
        switch: Switch,
        host: str = "127.0.0.1",
        port: int = 8021,
        *,
        acl: Iterable[str] | None = None,
        max_connections: int = 100,
    ) -> None:
        self.switch = switch
        if switch.originate_hook is None:
            switch.originate_hook = originate_into_bot
        self.acl = [ipaddress.ip_network(a, strict=False) for a in (acl or [])]
        self.connections: list[InboundConnection] = []
        self._server = StreamServer((host, port), self._handle, spawn=Pool(max_connections))

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); port 0 resolves after :meth:`start`."""
        return self._server.address[0], self._server.server_port

    def start(self) -> InboundServer:
        """Bind and accept in the background."""
        self._server.start()
        return self

    def serve_forever(self) -> None:
        """Run until stopped (for a CLI command)."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop accepting and close every client."""
        self._server.stop(timeout=1)
        for c in list(self.connections):
            c.abort()

    def _allowed(self, ip: str) -> bool:
        if not self.acl:
            return True
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self.acl)

    def _handle(self, sock: gsocket.socket, addr: tuple[str, int]) -> None:
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        if not self._allowed(addr[0]):
            log.warning("inbound esl: client rejected by acl")
            try:
                sock.sendall(wire.rude_rejection() + wire.disconnect_notice(None))
            finally:
                sock.close()
            return
        conn = InboundConnection(self.switch, sock)
        self.connections.append(conn)
        conn.send(wire.auth_request())
        conn.start()
        conn.closed.wait()
        self.connections.remove(conn)
