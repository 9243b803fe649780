"""Hostile clients against the HTTP API server (issue #31 items 4 and 7): loopback only.

The limits are set through the ``IVR_HTTP_*`` variables, not serve_http's new
arguments, so that the same tests run against the server before the fix (which
ignores them) and fail there: /healthz timed out behind a few dozen idle sockets,
a silent socket stayed open, an oversized head got an empty or no answer.
Attackers connect from 127.0.0.2..5 and the probe from 127.0.0.1, as an attacker
and a load balancer would be different addresses.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import gevent
import pytest

from esl_app.db import close_db
from esl_app.http.app import http_limits, serve_http
from esl_app.sim.testing import make_db

HEAD = b"GET /healthz HTTP/1.1\r\nHost: ivr\r\n"  # never finished: a slowloris head


@pytest.fixture(scope="module", autouse=True)
def _db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    make_db(tmp_path_factory.mktemp("hostile-http"), days=1)
    yield
    close_db()


@contextmanager
def server(monkeypatch: pytest.MonkeyPatch, max_connections: int = 1000,
           **env: str) -> Iterator[int]:
    for name, value in env.items():
        monkeypatch.setenv(f"IVR_HTTP_{name.upper()}", value)
    srv = serve_http("127.0.0.1", 0, max_connections=max_connections)
    try:
        yield srv.server_port
    finally:
        srv.stop(timeout=1)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5,
                                    source_address=(source, 0))


def slow_clients(port: int, count: int, sources: tuple[str, ...]) -> list[socket.socket]:
    """``count`` connections (spread over ``sources``) that send half a head, then nothing."""
    out = []
    for i in range(count):
        s = connect(port, sources[i % len(sources)])
        s.sendall(HEAD)
        out.append(s)
    gevent.sleep(0.3)  # the server takes them all in before the probe
    return out


def read_all(s: socket.socket, timeout: float) -> bytes:
    """Everything until EOF (or until ``timeout``: then what came so far)."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def request(port: int, raw: bytes, source: str = "127.0.0.1",
            timeout: float = 3.0) -> tuple[float, int, dict]:
    """Send ``raw``; (seconds to the whole answer, status, JSON body)."""
    s = connect(port, source)
    started = time.monotonic()
    try:
        s.sendall(raw)
        data = read_all(s, timeout)
    finally:
        s.close()
    took = time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return took, status, json.loads(body) if body else {}


def healthz(port: int, source: str = "127.0.0.1") -> tuple[float, int, dict]:
    return request(port, HEAD + b"Connection: close\r\n\r\n", source)


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def test_slowloris_from_one_address_leaves_healthz_answering(monkeypatch):
    """300 idle heads from one address: it keeps 100 slots, /healthz answers at once."""
    with server(monkeypatch, max_per_address="100") as port:
        slow = slow_clients(port, 300, ("127.0.0.2",))
        try:
            for _ in range(3):
                took, status, body = healthz(port)
                assert status == 200 and body["status"] == "ok"
                assert took < 1.0
            # the attacker's own extra connections were answered 503, not queued; from
            # its address too, /healthz displaces a reserve connection without a head
            took, status, body = request(port, b"GET /openapi.yaml HTTP/1.1\r\nHost: x\r\n\r\n",
                                         "127.0.0.2")
            assert took < 1.0 and status == 503 and body == {"error": "the server is busy; "
                                                                       "retry later"}
            took, status, _ = healthz(port, "127.0.0.2")
            assert took < 1.0 and status == 200
        finally:
            close_all(slow)


def test_full_pool_still_answers_healthz_and_refuses_the_rest_fast(monkeypatch):
    """Many addresses fill every slot: /healthz still answers 200, other paths 503, fast."""
    with server(monkeypatch, max_connections=100, max_per_address="30",
                header_timeout="5") as port:
        sources = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
        slow = slow_clients(port, 120, sources)  # 100 slots + 20 of the 32 reserve
        try:
            took, status, _ = healthz(port)
            assert status == 200 and took < 1.0
            took, status, body = request(port, b"GET /openapi.yaml HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 503 and took < 1.0 and "busy" in body["error"]
        finally:
            close_all(slow)


def test_a_full_reserve_gives_way_to_a_new_connection(monkeypatch):
    """The oldest reserve connection still without its head is answered 503 and closed."""
    with server(monkeypatch, max_connections=2, reserve="2") as port:
        slow = slow_clients(port, 4, ("127.0.0.2", "127.0.0.3"))  # 2 general, 2 reserve
        try:
            took, status, _ = healthz(port)
            assert status == 200 and took < 0.5
            got = [read_all(s, 0.1) for s in slow]
            assert got[:2] == [b"", b""]  # general slots: not displaced
            assert got[2].startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in got[2]
            # the newer reserve connection keeps its slot (to its 1 s head deadline)
            assert not got[3].startswith(b"HTTP/1.1 503 ")
        finally:
            close_all(slow)


def test_no_reserve_is_an_immediate_503(monkeypatch):
    with server(monkeypatch, max_connections=2, reserve="0") as port:
        slow = slow_clients(port, 2, ("127.0.0.2", "127.0.0.3"))
        try:
            took, status, body = healthz(port)
            assert status == 503 and took < 0.5 and body["error"]
        finally:
            close_all(slow)


def test_a_reserve_connection_whose_head_is_in_is_not_displaced(monkeypatch):
    """Admission runs before the connections' greenlets: a whole head waiting is kept."""
    monkeypatch.setenv("IVR_HTTP_RESERVE", "1")
    srv = serve_http("127.0.0.1", 0, max_connections=1)
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        ours = [p[0] for p in pairs]
        peers = [p[1] for p in pairs]
        for s in peers:
            s.settimeout(3)
        srv.do_handle(ours[0], ("127.0.0.2", 1))  # the general slot
        peers[1].sendall(HEAD + b"Connection: close\r\n\r\n")
        srv.do_handle(ours[1], ("127.0.0.2", 2))  # the reserve, its head waiting
        srv.do_handle(ours[2], ("127.0.0.2", 3))  # nothing to displace: 503
        assert peers[2].recv(65536).startswith(b"HTTP/1.1 503 ")
        assert peers[1].recv(65536).startswith(b"HTTP/1.1 200 ")  # served
        assert srv.evicted == 0
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        srv.stop(timeout=1)


def test_a_silent_connection_is_closed_at_the_head_deadline(monkeypatch):
    with server(monkeypatch, header_timeout="1") as port:
        silent = connect(port)
        trickle = connect(port)
        started = time.monotonic()
        # one byte every 0.25 s: each read is quick, the head as a whole is not
        for byte in HEAD[:4]:  # 1 s in all
            trickle.sendall(bytes((byte,)))
            gevent.sleep(0.25)
        got = read_all(trickle, 3.0)
        assert got.startswith(b"HTTP/1.1 408 ") and b'"error"' in got
        assert time.monotonic() - started < 2.0
        got = read_all(silent, 3.0)  # EOF after the answer: closed, not kept open
        assert got.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 2.0
        silent.close()
        trickle.close()


def test_an_idle_keep_alive_connection_is_closed(monkeypatch):
    with server(monkeypatch, idle_timeout="0.5") as port:
        s = connect(port)
        s.sendall(HEAD + b"\r\n")
        s.settimeout(3)
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        assert read_all(s, 3.0) == b""  # closed quietly, no 408 between requests
        assert 0.4 < time.monotonic() - started < 1.5
        s.close()


@pytest.mark.parametrize(("raw", "status", "words"), [
    (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431, "head"),
    (b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431, "head"),
    (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request line"),
    (b"BREW\r\n\r\n", 400, "not valid HTTP"),
    (b"GET / HTTP/9.9\r\n\r\n", 400, "not valid HTTP"),
])
def test_server_level_rejects_are_json(monkeypatch, raw: bytes, status: int, words: str):
    with server(monkeypatch) as port:
        took, got, body = request(port, raw)
    assert got == status and words in body["error"] and took < 1.0


def test_limits_come_from_arguments_then_environment(monkeypatch):
    monkeypatch.setenv("IVR_HTTP_IDLE_TIMEOUT", "7.5")
    monkeypatch.setenv("IVR_HTTP_MAX_PER_ADDRESS", "9")
    limits = http_limits(max_per_address=12)
    assert limits.idle_timeout == 7.5 and limits.max_per_address == 12
    assert limits.header_timeout == 10.0 and limits.max_connections == 1000
    for env, raw in [("IVR_HTTP_HEADER_TIMEOUT", "soon"), ("IVR_HTTP_HEADER_TIMEOUT", "0"),
                     ("IVR_HTTP_MAX_PER_ADDRESS", "2.5"), ("IVR_HTTP_RESERVE", "-1")]:
        with monkeypatch.context() as m:
            m.setenv(env, raw)
            with pytest.raises(ValueError, match=env):
                http_limits()
    with pytest.raises(ValueError, match="max_connections"):
        http_limits(max_connections=0)


def test_a_trickled_body_is_cut_at_the_deadline(monkeypatch):
    """A head at once, then its body one byte at a time: the body has a deadline too."""
    with server(monkeypatch, header_timeout="1") as port:
        for path in (b"/v1/tenants/sunrise/appointments", b"/healthz"):  # read, unread
            s = connect(port)
            s.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/json\r\nContent-Length: 16000\r\n\r\n{")
            started = time.monotonic()
            s.settimeout(0.25)
            got = b""
            while time.monotonic() - started < 4:
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    s.sendall(b" ")
                    continue
                if not chunk:
                    break
                got += chunk
            s.close()
            assert time.monotonic() - started < 3, (path, got[:60])
            assert got.startswith((b"HTTP/1.1 401 ", b"HTTP/1.1 405 ")), got[:60]


def test_a_broken_or_slow_body_read_by_the_api_is_4xx_not_500(monkeypatch):
    from esl_app.scheduling.tokens import issue_token

    auth = b"Authorization: Bearer " + issue_token("sunrise").encode() + b"\r\n"
    head = (b"POST /v1/tenants/sunrise/appointments HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n" + auth)
    with server(monkeypatch, header_timeout="1") as port:
        took, status, body = request(port, head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
        assert status == 400 and body == {"error": "the body could not be read"}
        took, status, body = request(port, head + b"Content-Length: 100\r\n\r\n{", timeout=4)
        assert status == 408 and body == {"error": "the request body did not arrive in time"}
        assert took < 3


class Reconnecting:
    """``count`` slowloris connections, each redialled the moment the server drops it."""

    def __init__(self, port: int, count: int, sources: tuple[str, ...]) -> None:
        self.port = port
        self.running = True
        self.dials = 0
        self.glets = [gevent.spawn(self._one, sources[i % len(sources)])
                      for i in range(count)]

    def _one(self, source: str) -> None:
        while self.running:
            try:
                s = connect(self.port, source)
            except OSError:
                gevent.sleep(0.01)
                continue
            self.dials += 1
            try:
                s.sendall(HEAD)
                while self.running and s.recv(65536):
                    pass
            except OSError:
                pass
            finally:
                s.close()

    def stop(self) -> None:
        self.running = False
        gevent.killall(self.glets, timeout=2)


@pytest.mark.parametrize(("sources", "probe_from"), [
    (("127.0.0.1",), "127.0.0.1"),  # the probe's own address, over its per-address cap
    (("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"), "127.0.0.1"),  # pool full
])
def test_reconnecting_slowloris_cannot_hold_the_reserve(monkeypatch, sources, probe_from):
    """Attackers redial as soon as they are dropped; every /healthz probe still gets 200.

    Before eviction the redials kept the reserve full and about half the probes got a
    fast 503; now a new connection displaces the oldest reserve connection that has not
    sent its request head, and a probe, which sends its head at once, is served.
    """
    with server(monkeypatch, max_connections=60, max_per_address="40", reserve="8",
                header_timeout="2") as port:
        attack = Reconnecting(port, 200, sources)
        try:
            gevent.sleep(1.5)  # every slot taken, the reserve churning
            dials = attack.dials
            results = []
            for _ in range(20):
                results.append(healthz(port, probe_from))
                gevent.sleep(0.05)
            assert attack.dials - dials > 100, "the attackers were not redialling"
        finally:
            attack.stop()
        assert [status for _, status, _ in results] == [200] * 20, results
        assert max(took for took, _, _ in results) < 1.0, results
