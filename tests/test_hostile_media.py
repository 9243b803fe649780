"""Hostile clients against the audio-fork server (issue #31 items 5 and 9): loopback only.

Tricklers send a plausible upgrade request one byte a second: each read is well
inside the old per-read timeout, so before the fix they held every handshake slot
and a live call's fork waited behind them; now the whole handshake has one
deadline and part of the slots are kept for registered calls.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import gevent
import gevent.event
import pytest
import websocket

from esl_app.media.server import MediaRegistry, MediaServer, fork_metadata

UPGRADE = (b"GET /fork/%s HTTP/1.1\r\nHost: ivr\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")

# every test on both frame paths (the compiled loop and its Python twin)
pytestmark = pytest.mark.usefixtures("both_frame_paths")


class Sink:
    def __init__(self) -> None:
        self.started = gevent.event.Event()

    def on_stream_start(self, metadata):
        self.started.set()

    def on_audio(self, pcm):
        return None

    def on_stream_end(self, reason):
        pass


@contextmanager
def media(**kw) -> Iterator[tuple[MediaServer, MediaRegistry]]:
    registry = MediaRegistry()
    server = MediaServer("127.0.0.1", 0, registry, **kw).start()
    try:
        yield server, registry
    finally:
        server.stop(timeout=1)


def raw(server: MediaServer) -> socket.socket:
    return socket.create_connection(server.address, timeout=5)


@contextmanager
def tricklers(server: MediaServer, count: int, every: float = 1.0) -> Iterator[list]:
    """``count`` sockets, each sending one more byte of an upgrade every ``every`` s."""
    socks = [raw(server) for _ in range(count)]
    head = UPGRADE % b"no-such-call"

    def trickle() -> None:
        for i in range(len(head)):
            for s in socks:
                try:
                    s.send(head[i:i + 1])
                except OSError:
                    pass
            gevent.sleep(every)

    glet = gevent.spawn(trickle)
    gevent.sleep(0.3)  # the server has taken them all in
    try:
        yield socks
    finally:
        glet.kill()
        for s in socks:
            s.close()


def fork(server: MediaServer, registry: MediaRegistry, uuid: str) -> float:
    """A live call's fork connects and authenticates; returns the seconds it took."""
    sink = Sink()
    token = registry.register(uuid, sink)
    host, port = server.address
    started = time.monotonic()
    ws = websocket.create_connection(f"ws://{host}:{port}/fork/{uuid}",
                                     subprotocols=["audio.drachtio.org"], timeout=2)
    try:
        ws.send(fork_metadata(token))
        assert sink.started.wait(2)
        return time.monotonic() - started
    finally:
        ws.close()


def answer(s: socket.socket, timeout: float = 3.0) -> bytes:
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def test_tricklers_cannot_keep_a_live_calls_fork_out():
    """260 tricklers against 200 slots: live forks still get in, within a second."""
    with media(max_streams=200, handshake_timeout=4.0) as (server, registry):
        with tricklers(server, 260):
            assert server.evicted >= 60  # the 60 beyond the slots displaced unnamed ones
            for i in range(3):
                assert fork(server, registry, f"live-{i}") < 1.0
            # an unknown call in a reserved slot is turned away in HTTP, not upgraded
            s = raw(server)
            s.sendall(UPGRADE % b"nobody")
            assert answer(s).startswith(b"HTTP/1.1 503 ")
            s.close()


def test_the_handshake_has_one_deadline_not_one_per_read():
    with media(handshake_timeout=1.0) as (server, _):
        started = time.monotonic()
        with tricklers(server, 1, every=0.2) as (s,):
            got = answer(s)
        # a proper HTTP answer, not a WebSocket close frame on a connection never upgraded
        assert got.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert time.monotonic() - started < 1.8


def test_a_silent_connection_gets_408_and_is_closed():
    with media(handshake_timeout=0.5) as (server, _):
        s = raw(server)
        started = time.monotonic()
        assert answer(s).startswith(b"HTTP/1.1 408 ")  # and then EOF
        assert time.monotonic() - started < 1.5
        s.close()


def test_an_upgraded_fork_without_metadata_is_closed_within_the_same_deadline():
    with media(handshake_timeout=0.8) as (server, registry):
        registry.register("quiet", Sink())
        host, port = server.address
        started = time.monotonic()
        ws = websocket.create_connection(f"ws://{host}:{port}/fork/quiet", timeout=3)
        opcode, frame = ws.recv_data_frame(True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert struct.unpack("!H", frame.data[:2])[0] == 1008
        assert time.monotonic() - started < 1.5
        ws.close()


def test_every_slot_taken_is_an_immediate_503():
    with media(max_streams=4, known_reserve=0, handshake_timeout=4.0) as (server, _):
        with tricklers(server, 4):
            s = raw(server)
            started = time.monotonic()
            assert answer(s).startswith(b"HTTP/1.1 503 ")
            assert time.monotonic() - started < 0.5
            s.close()


def test_unknown_call_warnings_are_rate_limited(caplog):
    with media(warn_every=0.6) as (server, _):
        with caplog.at_level(logging.WARNING, logger="esl_app.media.server"):
            for _ in range(30):
                s = raw(server)
                s.sendall(UPGRADE % b"nobody")
                answer(s)
                s.close()
            gevent.sleep(0.7)
            s = raw(server)
            s.sendall(UPGRADE % b"nobody")
            answer(s)
            s.close()
    warnings = [r.getMessage() for r in caplog.records if "unknown call" in r.getMessage()]
    assert len(warnings) == 2
    assert "29 more" in warnings[1]


def test_known_reserve_is_checked():
    with pytest.raises(ValueError):
        MediaServer("127.0.0.1", 0, MediaRegistry(), max_streams=10, known_reserve=10)
