"""A worker's garbage-collection pacing (esl_app/runtime/workers.py)."""

from __future__ import annotations

import gc
import weakref

import gevent
import pytest

from esl_app.runtime import workers


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def fast_gc(monkeypatch):
    monkeypatch.setattr(workers, "_GC_FREEZE_EVERY_S", 0.01)
    monkeypatch.setattr(workers, "_GC_SWEEP_EVERY_S", 0.3)
    g = gevent.spawn(workers._pace_gc)
    yield
    g.kill()
    gc.unfreeze()
    gc.collect()


def test_frozen_cycles_wait_for_the_sweep_then_go(fast_gc):
    """Frozen objects stay out of every collection until the sweep, which frees them."""
    node = _Node()
    ref = weakref.ref(node)
    gevent.sleep(0.05)  # frozen by now
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()  # what an automatic collection would do: the frozen cycle is not walked
    assert ref() is not None
    for _ in range(100):  # the sweep (0.3 s here, 10 min in a worker) unfreezes and collects
        gevent.sleep(0.01)
        if ref() is None:
            break
    assert ref() is None


def test_objects_without_cycles_are_freed_at_once_even_frozen(fast_gc):
    class Plain:
        pass

    obj = Plain()
    ref = weakref.ref(obj)
    gevent.sleep(0.05)
    del obj
    assert ref() is None  # reference counting does not wait for any collection


def test_full_collections_are_timed():
    from esl_app.http.metrics import GC_FULL

    def count():
        return next(s.value for m in GC_FULL.collect() for s in m.samples
                    if s.name == "ivr_gc_full_seconds_count")

    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection in between: only the two below run
    n = len(gc.callbacks)
    workers._time_full_collections()
    try:
        before = count()
        gc.collect(0)  # a young collection: not counted
        assert count() == before
        gc.collect()
        assert count() == before + 1
    finally:
        del gc.callbacks[n:]
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize("index", [0, 1])
def test_workers_take_turns_to_sweep(monkeypatch, index):
    """Of two workers, the first sweeps half a period in, the second a whole period in."""
    monkeypatch.setattr(workers, "_GC_FREEZE_EVERY_S", 0.01)
    monkeypatch.setattr(workers, "_GC_SWEEP_EVERY_S", 1.0)
    g = gevent.spawn(workers._pace_gc, index, 2)
    try:
        node = _Node()
        ref = weakref.ref(node)
        gevent.sleep(0.05)  # frozen by now: only a sweep frees the cycle
        del node
        gevent.sleep(0.7)  # worker 0 has swept (at 0.5 s), worker 1 not yet (1.0 s)
        assert (ref() is None) == (index == 0)
        gevent.sleep(0.5)
        assert ref() is None
    finally:
        g.kill()
        gc.unfreeze()
        gc.collect()
