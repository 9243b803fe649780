"""A worker's full garbage collections, timed (esl_app/workers.py)."""

from __future__ import annotations

import gc

from esl_app import workers


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
