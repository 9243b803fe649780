"""ESL review fixes, over real TCP.

- A write cut short by a timeout (half a command on the wire) ends the session: the next
  command would otherwise merge with it and every later reply would go to the wrong
  command. A timeout while only *waiting* for the reply keeps the session and consumes
  the late reply in order.
- An outbound ``socket`` application without ``full``: mod_event_socket refuses linger and
  api (``-ERR command not found``, its connect reply says ``Control: single-channel``);
  the call ends with one plain error naming the fix.
"""

from __future__ import annotations

import logging
import os
import socket

import gevent
import pytest
from fakes.memory import freed_without_the_collector
from fakes.telephony import WirePeer, make_services, start_server, wait_until
from test_setup_pipelining import _read_commands

from esl_app.sim.emulator.wire import api_response, command_reply, serialize_event
from esl_app.telephony.esl import NOT_FULL, CommandTimeout, EslSession, SessionGone

BIG = 8 << 20  # far more than loopback socket buffers hold


def _pair(timeout: float = 0.3) -> tuple[EslSession, socket.socket, list]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    peer = socket.create_connection(listener.getsockname())
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours, addr = listener.accept()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    listener.close()
    events: list = []
    return EslSession(ours, addr, sink=events.append, command_timeout=timeout), peer, events


def _drain(peer: socket.socket) -> bytes:
    """Everything the bot wrote, up to its close."""
    data = b""
    with gevent.Timeout(10):
        while chunk := peer.recv(1 << 20):
            data += chunk
    return data


def test_send_cut_short_by_its_timeout_ends_the_session():
    session, peer, events = _pair()
    big = "api " + "x" * BIG
    try:
        with pytest.raises(CommandTimeout):
            session.send(big)  # the peer reads nothing: the write cannot complete
        assert not session.connected and session.close_reason == "send stalled"
        assert events == ["closed"]
        with pytest.raises(SessionGone):
            session.send("api status")  # never glued to the half-written command
        data = _drain(peer)
        assert 0 < len(data) < len(big) + 2 and big.encode().startswith(data)
    finally:
        session.stop()
        peer.close()


def test_handshake_cut_short_by_its_timeout_ends_the_session():
    session, peer, events = _pair()
    # the socket buffer is already full (blank lines: mod_event_socket skips them)
    fd = session.sock.fileno()
    with pytest.raises(BlockingIOError):
        while True:
            os.write(fd, b"\n" * 65536)
    try:
        with pytest.raises(CommandTimeout):
            session.handshake()
        assert not session.connected and session.close_reason == "send stalled"
        assert events == ["closed"]
        data = _drain(peer)
        assert not data.strip(b"\n") or b"connect\n\nmyevents\n\nlinger\n\n".startswith(
            data.strip(b"\n"))
    finally:
        session.stop()
        peer.close()


def test_a_late_reply_after_a_complete_write_keeps_the_session_in_order():
    session, peer, events = _pair()
    try:
        with pytest.raises(CommandTimeout):
            session.send("api sofia status")  # written whole; the reply comes too late
        assert session.connected and not events
        job = gevent.spawn(session.send, "api status", timeout=5)
        assert _read_commands(peer, 2) == ["api sofia status", "api status"]
        peer.sendall(api_response("late\n"))
        peer.sendall(api_response("UP\n"))
        assert job.get(timeout=5).data == "UP\n"  # the late reply went to its own command
    finally:
        session.stop()
        peer.close()


# -- socket application without "full" ------------------------------------------------


@pytest.fixture
def server():
    srv = start_server(make_services())
    yield srv
    srv.stop(timeout=2)


def _channel_data(peer: WirePeer, control: str | None) -> bytes:
    headers = [
        ("Event-Name", "CHANNEL_DATA"), ("Content-Type", "command/reply"),
        ("Reply-Text", "+OK\n"), ("Socket-Mode", "async"),
        ("Unique-ID", peer.uuid), ("Channel-Name", f"sofia/internal/{peer.caller}@x"),
        ("Caller-Caller-ID-Number", peer.caller),
        ("Caller-Destination-Number", peer.did), ("Channel-State", "CS_EXECUTE"),
        ("variable_uuid", peer.uuid),
    ]
    if control is not None:  # mod_event_socket since 2008; absent in older ones
        headers.insert(4, ("Control", control))
    return serialize_event(headers)


def _not_full_switch(peer: WirePeer, control: str | None) -> list[str]:
    """Answer like mod_event_socket for ``socket host:port async`` (no ``full``)."""
    seen: list[str] = []
    with gevent.Timeout(10):
        while True:
            while not peer.queue:
                data = peer.sock.recv(65536)
                if not data:
                    return seen
                peer.queue.extend(peer.parser.feed(data))
            cmd = peer.queue.pop(0)
            seen.append(cmd.header("execute-app-name") or cmd.name)
            if cmd.name == "connect":
                peer.send(_channel_data(peer, control))
            elif cmd.name == "myevents":
                peer.send(command_reply("+OK Events Enabled"))
            elif cmd.name == "sendmsg":
                peer.send(command_reply("+OK"))
            elif cmd.name == "exit":
                peer.send(command_reply("+OK bye"))
                return seen
            else:  # linger, api, ...: after sendmsg in parse_command, refused
                peer.send(command_reply("-ERR command not found"))


@pytest.mark.parametrize("control", ["single-channel", None])
def test_socket_without_full_ends_the_call_with_one_plain_error(server, control, caplog):
    caplog.set_level(logging.WARNING)
    peer = WirePeer(server.address)
    try:
        seen = _not_full_switch(peer, control)
        wait_until(lambda: server.active_calls == 0)
    finally:
        peer.close()
    # the answer goes out with connect, before the bot can know; nothing is said after it
    assert seen[:4] == ["connect", "myevents", "linger", "answer"]
    assert "speak" not in seen and "playback" not in seen
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and NOT_FULL in errors[0].getMessage()
    assert "add 'full' to the socket application's arguments" in NOT_FULL
    assert server.last_transcripts[-1].outcome == "error"


@pytest.mark.parametrize("ending", ["hang-up", "timeout"])
def test_a_command_cut_short_leaves_no_cycle_for_the_collector(ending):
    """A hang-up (or a timeout) while a command waits for its reply must not tie the
    waiting frame into a reference cycle through the exception's traceback: every
    call ended that way would wait for a full collection (issue #9)."""
    session, peer, _events = _pair(timeout=0.2 if ending == "timeout" else 5.0)

    def ask(owner):  # owner: the call controller whose greenlet sent the command
        with pytest.raises((SessionGone, CommandTimeout)):
            session.send("api status")

    def end(g):
        gevent.sleep(0.05)
        if ending == "hang-up":
            peer.close()  # FreeSWITCH goes away with the reply outstanding
        g.join(timeout=5)
        assert g.successful()

    try:
        assert freed_without_the_collector(ask, end), "the waiting frame is left to the cyclic GC"
    finally:
        session.stop()
        peer.close()
