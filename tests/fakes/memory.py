"""Whether what a greenlet's frames reach is freed by reference counting alone.

Workers freeze their heap and run the cyclic collector every 10 minutes (issue
#9): a greenlet that ends by an exception or a kill must not leave its frames,
and the call state they reach, in a reference cycle.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import gevent


class Owner:
    """Stands for what the greenlet's frames reach: a call controller, a Speak verb."""


def freed_without_the_collector(run: Callable[[Owner], object],
                                end: Callable[[gevent.Greenlet], None]) -> bool:
    """Run ``run(owner)`` in a greenlet with the cyclic GC off; ``end(g)`` makes it end.

    True when, the greenlet gone, nothing keeps ``owner`` alive.
    """
    gc.collect()
    gc.disable()
    try:
        owner = Owner()
        ref = weakref.ref(owner)
        g = gevent.spawn(run, owner)
        del owner
        end(g)
        del g
        gevent.sleep(0)  # the hub lets go of the dead greenlet (its links' callback)
        gevent.sleep(0)
        return ref() is None
    finally:
        gc.enable()
