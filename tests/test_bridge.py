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
