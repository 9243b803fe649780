"""A new ESL connection is served in the loop iteration that accepted it (issue #32).

A call's set-up is timed on the caller's side: a handler that only starts at the
next iteration waits for every other watcher of this one first, and a listener
watcher of ordinary priority waits for the calls' sockets that the same poll found
ready. Both waits were most of the set-up tail on a busy worker.
"""

from __future__ import annotations

import gevent
import pytest
from fakes.telephony import WirePeer, make_services, start_server, wait_until
from gevent.event import Event
from gevent.pool import Pool

from esl_app.telephony import server as server_mod


@pytest.fixture
def server():
    srv = start_server(make_services())
    yield srv
    srv.stop(timeout=2)


@pytest.fixture
def iteration():
    """The hub's loop iterations so far, counted by a prepare watcher: ``iteration[0]``."""
    count = [0]

    def tick() -> None:
        count[0] += 1

    prepare = gevent.get_hub().loop.prepare()
    prepare.start(tick)
    yield count
    prepare.stop()


def _time_handler(srv, note) -> None:
    """Call ``note()`` as each connection's handler starts."""
    handle = srv._handle

    def timed_handle(sock, address):
        note()
        return handle(sock, address)

    srv.server._handle = timed_handle


def test_handler_starts_in_the_accept_iteration(server, monkeypatch, iteration):
    seen: dict[str, int] = {}
    accept = server.server.do_read

    def do_read():
        args = accept()
        if args:
            seen["accepted"] = iteration[0]
        return args

    monkeypatch.setattr(server.server, "do_read", do_read)
    _time_handler(server, lambda: seen.__setitem__("handler", iteration[0]))
    # something else is due in every iteration, as on a busy worker
    busy = gevent.spawn(lambda: [gevent.sleep(0) for _ in range(10_000)])
    peer = WirePeer(server.address)
    try:
        wait_until(lambda: "handler" in seen, timeout=5)
        assert seen["handler"] == seen["accepted"]
        assert peer.command(5).name == "connect"
    finally:
        busy.kill()
        peer.close()


def test_listener_watcher_has_the_highest_priority(server):
    assert server.server._watcher.priority == server_mod._FIRST == 2
    server.server.stop_accepting()  # as when the pool is full...
    server.server.start_accepting()  # ...and a call ends
    assert server.server._watcher.priority == 2


def _on_hub(fn):
    """Run ``fn`` from a hub callback (like an accept) and return its result."""
    out = gevent.event.AsyncResult()
    gevent.get_hub().loop.run_callback(lambda: out.set(fn()))
    return out.get(timeout=5)


def test_spawn_now_runs_the_greenlet_at_once_and_only_once():
    pool = Pool(4)
    spawn = server_mod._spawn_now(pool)
    runs: list[str] = []
    release = Event()

    def handler(name: str) -> None:
        runs.append(name)
        release.wait()
        runs.append(name + " done")

    def from_hub():
        g = spawn(handler, "a")
        return g, list(runs)  # what had run when spawn returned

    g, at_return = _on_hub(from_hub)
    assert at_return == ["a"]  # ran up to its first wait inside the spawn
    assert len(pool) == 1
    gevent.sleep(0.05)
    assert runs == ["a"]  # the start the pool scheduled was cancelled, not run again
    release.set()
    g.join(timeout=5)
    assert runs == ["a", "a done"]
    assert len(pool) == 0


def test_spawn_now_off_the_hub_is_a_plain_spawn():
    pool = Pool(4)
    spawn = server_mod._spawn_now(pool)
    runs: list[str] = []
    g = spawn(runs.append, "b")
    assert runs == []  # scheduled, not run inside the caller's greenlet
    g.join(timeout=5)
    assert runs == ["b"]
    assert len(pool) == 0


def test_a_handler_that_fails_at_once_leaves_the_server_serving(server):
    calls = [0]
    handle = server._handle

    def failing(sock, address):
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("boom before the first wait")
        return handle(sock, address)

    server.server._handle = failing
    first = WirePeer(server.address)
    wait_until(lambda: calls[0] == 1, timeout=5)
    second = WirePeer(server.address)
    try:
        assert second.command(5).name == "connect"
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("workers, iterations", [(1, 1), (2, 5)])
def test_a_burst_of_calls_is_accepted_at_once_by_a_lone_worker(workers, iterations,
                                                               iteration):
    """Alone, a worker accepts five queued calls in one wake-up; beside others, one each."""
    from gevent import monkey

    from esl_app.runtime.workers import _accept_policy

    srv = start_server(make_services())
    _accept_policy(srv, workers)
    started: list[int] = []
    _time_handler(srv, lambda: started.append(iteration[0]))
    plain = monkey.get_original("socket", "socket")
    socks = []
    try:
        # queued by the kernel before the hub runs again: blocking connects, no yield
        for _ in range(5):
            s = plain()
            s.connect(srv.address)
            socks.append(s)
        wait_until(lambda: len(started) == 5, timeout=5)
        assert len(set(started)) == iterations
    finally:
        for s in socks:
            s.close()
        srv.stop(timeout=2)
