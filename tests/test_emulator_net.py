"""The emulator connects like FreeSWITCH: an IP literal takes no resolver round trip."""

from __future__ import annotations

import gevent
import pytest
from gevent import socket as gsocket

from esl_app.sim.emulator import net


@pytest.fixture
def listener():
    srv = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv
    srv.close()


@pytest.fixture
def resolver_calls(monkeypatch):
    """Every host handed to the hub's resolver (gevent's thread pool) during the test."""
    hub = gevent.get_hub()
    real = hub.resolver.getaddrinfo
    calls: list[str] = []

    def spy(host, *args, **kwargs):
        calls.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(hub.resolver, "getaddrinfo", spy)
    return calls


def test_an_ip_literal_connects_without_the_resolver(listener, resolver_calls):
    port = listener.getsockname()[1]
    sock = net.connect(("127.0.0.1", port), timeout=2)
    peer, _ = listener.accept()
    try:
        sock.sendall(b"connect\n\n")
        assert peer.recv(64) == b"connect\n\n"
        assert sock.gettimeout() == 2
    finally:
        sock.close()
        peer.close()
    assert resolver_calls == []


def test_a_name_still_resolves(listener, resolver_calls):
    port = listener.getsockname()[1]
    sock = net.connect(("localhost", port), timeout=2)
    sock.close()
    assert resolver_calls == ["localhost"]


def test_a_refused_connection_raises_and_leaves_no_socket(listener):
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(ConnectionRefusedError):
        net.connect(("127.0.0.1", port), timeout=2)


def test_the_fork_socket_has_nagle_off_and_tls_stays_with_websocket_client(listener):
    port = listener.getsockname()[1]
    sock = net.connect_ws(f"ws://127.0.0.1:{port}/fork/abc", timeout=2)
    assert sock is not None
    try:
        assert sock.getsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY) == 1
        assert sock.getpeername() == ("127.0.0.1", port)
    finally:
        sock.close()
    assert net.connect_ws(f"wss://127.0.0.1:{port}/fork/abc") is None


def test_a_connection_the_kernel_completed_needs_no_turn_of_the_event_loop(listener, monkeypatch):
    waits: list[object] = []
    real_wait = gsocket.socket._wait

    def spy(self, watcher, *args, **kwargs):
        waits.append(watcher)
        return real_wait(self, watcher, *args, **kwargs)

    monkeypatch.setattr(gsocket.socket, "_wait", spy)
    sock = net.connect(listener.getsockname(), timeout=2)
    try:
        assert sock.getpeername() == listener.getsockname()
    finally:
        sock.close()
    assert waits == []  # loopback: established inside connect, used at once
