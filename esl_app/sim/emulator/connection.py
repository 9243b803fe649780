"""One ESL socket as mod_event_socket's listener sees it, shared by outbound and inbound mode.

A connection owns a reader greenlet (parses command blocks, answers each one in order)
and a writer greenlet that sends replies and subscribed events from a single FIFO, so a
reply never overtakes an event fired before it and frames are never interleaved. Every
command is recorded with its raw bytes and a monotonic timestamp for test assertions.
"""

from __future__ import annotations

import logging
import uuid as _uuid
from typing import Any

import gevent
import gevent.event
from gevent import socket as gsocket
from gevent.queue import Queue

from esl_app.sim.emulator import wire
from esl_app.sim.emulator.core import Event, Subscription, Switch

__all__ = ["EslConnection"]

log = logging.getLogger(__name__)

_CLOSE = object()


class EslConnection:
    """Base listener: generic commands (event, filter, api, bgapi, exit ...) and I/O."""

    #: Set by subclasses: the uuid of the controlled session (outbound) or None.
    session_uuid: str | None = None

    def __init__(self, switch: Switch, sock: gsocket.socket) -> None:
        self.switch = switch
        self.sock = sock
        self.sub = Subscription()
        self.commands: list[wire.Command] = []
        self.running = True
        self.exit_requested = False
        self.closed = gevent.event.Event()
        self._out: Queue[Any] = Queue()
        self._parser = wire.CommandParser()
        self._writer = gevent.spawn(self._write_loop)
        self._reader: gevent.Greenlet | None = None
        switch.add_listener(self._deliver)

    # -- plumbing ---------------------------------------------------------------------
    def start(self) -> None:
        """Begin reading commands in a greenlet."""
        self._reader = gevent.spawn(self._read_loop)

    def send(self, data: bytes) -> None:
        """Queue bytes for the writer (keeps replies and events in one order)."""
        if not self.closed.is_set():
            self._out.put(data)

    def close(self) -> None:
        """Flush what is queued, then close the socket."""
        if not self.closed.is_set():
            self._out.put(_CLOSE)

    def abort(self) -> None:
        """Close at once without flushing (fault tests)."""
        self._finish()

    def _deliver(self, ev: Event) -> None:
        if self.running and self.sub.wants(ev):
            self.send(wire.event_frame(ev.serialize(self.sub.fmt), self.sub.fmt))

    def _write_loop(self) -> None:
        while True:
            item = self._out.get()
            if item is _CLOSE:
                break
            try:
                self.sock.sendall(item)
            except OSError:
                break
        self._finish()

    def _finish(self) -> None:
        if self.closed.is_set():
            return
        self.running = False
        self.switch.remove_listener(self._deliver)
        try:
            self.sock.shutdown(gsocket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed.set()
        self.on_closed()

    def _read_loop(self) -> None:
        try:
            while self.running:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.on_peer_closed()
                    break
                try:
                    cmds = self._parser.feed(data)
                except wire.ProtocolError as exc:
                    log.warning("esl emulator: dropping connection: %s", exc)
                    self.on_peer_closed()
                    break
                for cmd in cmds:
                    self.commands.append(cmd)
                    self.on_command(cmd)
                    if not self.running:
                        break
        finally:
            if self.exit_requested:
                self.shutdown_after_exit()

    # -- hooks for subclasses -----------------------------------------------------------
    def on_command(self, cmd: wire.Command) -> None:
        """Answer one command (subclasses extend, then fall back to :meth:`generic`)."""
        reply = self.generic(cmd)
        if reply is not None:
            self.reply(reply)

    def on_peer_closed(self) -> None:
        """The client went away (EOF, reset or unparseable input)."""
        self.running = False
        self.close()

    def on_closed(self) -> None:
        """Called once the socket is closed."""

    def shutdown_after_exit(self) -> None:
        """After ``exit``/``-ERR invalid``: disconnect notice, then close (listener_run)."""
        self.send(wire.disconnect_notice(self.session_uuid))
        self.close()

    def reply(self, text: str) -> None:
        """Send a ``command/reply`` (``~`` prefix = raw header lines, as in listener_run)."""
        if text.startswith("~"):
            self.send(b"Content-Type: command/reply\n" + text[1:].encode())
        else:
            self.send(wire.command_reply(text))

    def generic(self, cmd: wire.Command) -> str | None:
        """Commands both modes share; returns Reply-Text, or None when already answered."""
        line = cmd.line
        low = line.lower()
        if low.startswith("exit") or low.startswith("..."):
            self.running = False
            self.exit_requested = True
            return "+OK bye"
        if low.startswith("filter "):
            return self.sub.filter_command(line[7:])
        if low.startswith("api "):
            api_cmd, _, arg = line[4:].partition(" ")
            out = self.switch.api(api_cmd, arg or None)
            self.send(wire.api_response(out))
            return None
        if low.startswith("bgapi "):
            api_cmd, _, arg = line[6:].partition(" ")
            job = cmd.header("job-uuid") or str(_uuid.uuid4())
            self.reply(f"~Reply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n")
            self.switch.bgapi(api_cmd, arg or None, job)
            return None
        if low.startswith("log"):
            level = line[4:].strip() or "debug"
            return f"+OK log level {level} [7]" if level.lower() in (
                "debug", "7", "info", "6", "notice", "5", "warning", "4", "err", "3",
                "crit", "2", "alert", "1", "console", "0") else "-ERR invalid log level"
        if low.startswith("nolog"):
            return "-ERR not loging"
        if low.startswith("event"):
            return self.sub.command("event", line[5:].strip())
        if low.startswith("nixevent"):
            return self.sub.command("nixevent", line[8:].strip())
        if low.startswith("noevents"):
            return self.sub.command("noevents", "")
        if low.startswith("divert_events"):
            if self.session_uuid is None:
                return "-ERR not controlling a session."
            onoff = line[13:].strip()
            if not onoff:
                return "-ERR missing value."
            return "+OK events diverted" if onoff.lower() == "on" else "+OK events not diverted"
        return "-ERR command not found"
