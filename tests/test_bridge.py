"""esl_app.bridge: the hub <-> OS-thread hand-over."""

from __future__ import annotations

import gc
import weakref

import gevent
import pytest

from esl_app.bridge import run_in_thread


def test_a_failing_thread_job_leaves_no_cycle_for_the_collector():
    """The waiting greenlet's frames (a call's state) must be freed by reference
    counting when the job raises: workers run the cyclic collector every 10 minutes."""

    class Owner:
        pass

    def boom():
        raise RuntimeError("database is down")

    def ask(owner):
        with pytest.raises(RuntimeError, match="database is down"):
            run_in_thread(boom, pool="test-cycles")

    gc.collect()
    gc.disable()
    try:
        owner = Owner()
        ref = weakref.ref(owner)
        g = gevent.spawn(ask, owner)
        del owner
        g.join(timeout=5)
        assert g.successful()
        del g
        gevent.sleep(0)
        gevent.sleep(0)
        assert ref() is None, "the waiting frames are left to the cyclic GC"
    finally:
        gc.enable()


def test_run_in_thread_from_one_of_the_pools_threads_runs_at_once():

    def outer():
        return run_in_thread(lambda: 7 * 6, pool="test-nested")

    assert run_in_thread(outer, pool="test-nested") == 42
