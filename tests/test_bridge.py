"""esl_app.support.bridge: the hub <-> OS-thread hand-over."""

from __future__ import annotations

import pytest
from fakes.memory import freed_without_the_collector

from esl_app.support.bridge import run_in_thread


def test_a_failing_thread_job_leaves_no_cycle_for_the_collector():
    """The waiting greenlet's frames (a call's state) must be freed by reference
    counting when the job raises: workers run the cyclic collector every 10 minutes."""

    def boom():
        raise RuntimeError("database is down")

    def ask(owner):
        with pytest.raises(RuntimeError, match="database is down"):
            run_in_thread(boom, pool="test-cycles")

    def end(g):
        g.join(timeout=5)
        assert g.successful()

    assert freed_without_the_collector(ask, end), "the waiting frames are left to the cyclic GC"


def test_run_in_thread_from_one_of_the_pools_threads_runs_at_once():
    def outer():
        return run_in_thread(lambda: 7 * 6, pool="test-nested")

    assert run_in_thread(outer, pool="test-nested") == 42


def test_a_forked_child_gets_its_own_thread_pools():
    """A pool made before fork never answered in the child (`ivr serve`'s workers hung)."""
    import os

    import gevent

    from esl_app.support.bridge import get_pool

    assert run_in_thread(lambda: "parent", pool="fork-test") == "parent"
    parent_pool = get_pool("fork-test")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave, whatever happens
        code = 1
        try:
            gevent.reinit()
            with gevent.Timeout(5, False):
                ok = (run_in_thread(lambda: "child", pool="fork-test") == "child"
                      and get_pool("fork-test") is not parent_pool)
                code = 0 if ok else 1
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    try:
        got = os.read(r, 1)  # the child writes within its 5 s timeout
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert got == b"\x00"
    assert get_pool("fork-test") is parent_pool  # the parent keeps its own


def _ready_pairs(n):
    from gevent import socket

    return [socket.socketpair() for _ in range(n)]


def test_cooperate_lets_sockets_that_became_ready_run_before_the_next_step():
    """A long step on the hub, split by cooperate(): every stream that became readable
    during the first half is served before the second half starts. A plain short sleep
    resumes the step first (libev runs what is due last in, first out), which is why
    cooperate() does not use one."""
    import time

    import gevent

    from esl_app.support.bridge import cooperate

    pairs = _ready_pairs(30)
    order: list[str] = []

    def reader(sock):
        sock.recv(8)
        order.append("io")

    def step():
        t0 = time.perf_counter()
        for _a, b in pairs:
            b.send(b"x")
        while time.perf_counter() - t0 < 0.002:  # the first half: CPU on the hub
            pass
        order.append("first")
        cooperate()
        order.append("second")

    readers = [gevent.spawn(reader, a) for a, _b in pairs]
    gevent.sleep(0.01)  # every reader waits on its socket
    job = gevent.spawn(step)
    gevent.joinall([*readers, job], timeout=5, raise_error=True)
    first, second = order.index("first"), order.index("second")
    assert order[first + 1:second] == ["io"] * 30
    for a, b in pairs:
        a.close()
        b.close()


def test_cooperate_on_an_idle_hub_does_not_wait_for_a_timer():
    """Nothing else due: the step goes on in the same pass instead of blocking the loop's
    poll for its minimum (1 ms with epoll). Counted in loop iterations, not time: a
    timer due in 50 ms must not have fired by the time 20 cooperate() calls are done."""
    import gevent

    from esl_app.support.bridge import cooperate

    fired = []
    timer = gevent.spawn_later(0.05, fired.append, 1)
    for _ in range(20):
        cooperate()
    assert not fired
    timer.kill()


def test_cooperate_is_a_no_op_in_a_real_thread_and_a_kill_in_it_leaves_no_watcher():
    """In a real thread (no hub there) it returns at once and makes no hub; a kill while
    a greenlet waits in it leaves no watcher of it running."""
    import gevent
    from gevent._hub_local import get_hub_if_exists

    from esl_app.support.bridge import cooperate

    def in_thread():
        cooperate()
        return get_hub_if_exists()

    assert run_in_thread(in_thread) is None

    loop = gevent.get_hub().loop
    before = loop.activecnt

    def waits_for_ever():
        while True:
            cooperate()

    g = gevent.spawn(waits_for_ever)
    gevent.sleep(0.01)
    g.kill(block=True, timeout=2)
    assert g.dead
    gevent.sleep(0)
    assert loop.activecnt == before


def test_cooperate_within_skips_a_second_yield_right_after_the_first():
    """``within``: the same greenlet back from a yield less than that ago goes on at once
    (a turn's understanding, then the calendar tool it calls: one iteration, not two);
    after more work than that, or after another greenlet's yield, it yields again."""
    import time

    import gevent

    from esl_app.support.bridge import cooperate

    ran: list[str] = []

    def other():
        ran.append("other")

    def step() -> list[bool]:
        seen = []
        cooperate()
        gevent.spawn(other)
        cooperate(within=0.05)  # right after its own yield: no iteration given
        seen.append(ran == [])
        cooperate()  # a plain yield always gives one
        seen.append(ran == ["other"])
        gevent.spawn(other)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.003:  # work past ``within``
            pass
        cooperate(within=0.002)
        seen.append(ran == ["other", "other"])
        return seen

    def first_yield_elsewhere():
        cooperate()

    assert gevent.spawn(step).get(timeout=5) == [True, True, True]
    # another greenlet's yield is not this one's: it yields
    gevent.spawn(first_yield_elsewhere).join(timeout=5)
    ran.clear()

    def fresh() -> bool:
        gevent.spawn(other)
        cooperate(within=10.0)
        return ran == ["other"]

    assert gevent.spawn(fresh).get(timeout=5)
