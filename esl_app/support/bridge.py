"""The one bridge between the gevent hub and real OS threads / asyncio.

Why: a gevent process has one OS thread running every call's greenlets. CPU-bound
work (pocketsphinx decoding, resampling) or a blocking C call would freeze every
call, and asyncio SDKs (Amazon Transcribe) need their own event loop. Such work
runs in real OS threads; results come back to the hub through an ``async``
watcher, the only thread-safe way to wake a gevent loop.

API:

- :func:`run_in_thread` ``(fn, *args, **kwargs) -> result``: run ``fn`` in a real
  thread, blocking only the calling greenlet (exceptions re-raised).
- :func:`spawn_in_thread` ``(fn, *args, **kwargs) -> gevent.event.AsyncResult``;
  :func:`result_of` waits for such a result (or any ``AsyncResult``) and raises its
  exception without leaving a reference cycle behind.
- :class:`HubChannel`: a queue any thread may ``put`` into; greenlets ``get``
  from it, or :meth:`HubChannel.deliver_to` calls a callback on the hub per item.
- :func:`watch_hub_lag` ``(observe, every)``: forever, how late the hub runs a due
  timer (a worker's ``ivr_hub_lag_seconds``, the load generator's own lag).
- :func:`cooperate` ``()``: between two steps of a long piece of work on the hub, let
  the loop poll and run everything else that is due first (a no-op off the hub).
- :class:`AsyncioLoopThread`: an asyncio loop in its own OS thread;
  ``submit(coro) -> concurrent.futures.Future``, ``wait(fut, timeout)`` waits
  for it from a greenlet without blocking the hub.

Create channels and wait on them from the hub's thread (the main gevent thread).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.queue
import gevent.threadpool
from gevent import monkey
from gevent._hub_local import get_hub_if_exists  # gevent's own, since 1.3: no hub is made

__all__ = [
    "AsyncioLoopThread",
    "ChannelClosed",
    "HubChannel",
    "SLICE_S",
    "cooperate",
    "get_pool",
    "result_of",
    "resumed",
    "run_in_thread",
    "spawn_in_thread",
    "watch_hub_lag",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

_pools: dict[str, gevent.threadpool.ThreadPool] = {}
_pools_pid = 0  # the process that made ``_pools``: a forked child must not use them


def get_pool(name: str = "default", size: int = 4) -> gevent.threadpool.ThreadPool:
    """A named pool of real OS threads, created on first use (bounded concurrency).

    Separate pools keep slow work of one kind (decoding) from starving another
    (synthesis subprocess waits); ``size`` only applies on creation.

    A pool made before ``fork`` (the serve supervisor reads the tenants before it forks
    its workers) never delivers a result in the child, even after ``gevent.reinit()``:
    the child waits for ever. Each process therefore makes its own pools.
    """
    global _pools_pid
    pid = os.getpid()
    if _pools_pid != pid:
        _pools.clear()  # the parent's: their threads and hub wake-ups stayed behind
        _pools_pid = pid
    pool = _pools.get(name)
    if pool is None:
        pool = _pools[name] = gevent.threadpool.ThreadPool(size)
    return pool


def run_in_thread(fn: Callable[..., T], *args: Any, pool: str = "default",
                  **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in an OS thread; only this greenlet waits.

    Like ``ThreadPool.apply`` (run at once when called off the pool's hub, e.g.
    from one of its threads), with :func:`result_of` for the reply.
    """
    threads = get_pool(pool)
    if gevent.get_hub() is not threads.hub:
        return fn(*args, **kwargs)
    result = threads.spawn(fn, *args, **kwargs)
    try:
        return result_of(result)
    finally:
        del result  # see result_of


def result_of(result: gevent.event.AsyncResult) -> Any:
    """``result.get()``, minus a reference cycle when it fails.

    gevent raises a stored exception from a helper frame that keeps it in a local,
    and the exception's traceback holds that frame: the waiting greenlet's frames
    (and a call's state they reach) would be left to the cyclic collector, which a
    worker only runs every 10 minutes (its heap is frozen). Callers holding
    ``result`` in a local should drop it in a ``finally`` for the same reason.
    """
    value = result.wait()
    exc = result.exception
    if exc is None:
        return value
    try:
        raise exc
    finally:
        del exc, result


def spawn_in_thread(fn: Callable[..., Any], *args: Any, pool: str = "default",
                    **kwargs: Any) -> gevent.event.AsyncResult:
    """Start ``fn`` in an OS thread and return its :class:`AsyncResult` at once."""
    return get_pool(pool).spawn(fn, *args, **kwargs)


_LAST = -2  # libev's lowest priority (EV_MINPRI): after everything else that is due


def cooperate(within: float = 0.0) -> None:
    """Give the hub one loop iteration before the calling greenlet goes on.

    Why: every call of a worker shares one hub, and a set-up or a barge-in waits for
    whatever holds it. A step of a few milliseconds (a turn's understanding, then
    its booking; a batch of media reads) split here lets the calls' socket reads
    run in between.

    How: the greenlet resumes from a *check* watcher of the lowest priority, which
    libev runs after the next poll and after every socket and timer that poll found
    due. An idle watcher keeps that poll from blocking when nothing else is due
    (~5 µs then). Neither ``sleep(0)`` (resumes before the loop polls again) nor a
    short timer (runs before that poll's sockets: libev invokes what is due last
    in, first out; and an idle loop blocks 1 ms for it) does this.

    ``within`` (seconds): no yield when this same greenlet came back from one less
    than that ago, so two yields with little work between (a turn's understanding,
    then the calendar tool it calls) cost one loop iteration, not two. Every yield
    is a wait for the rest of an iteration: on a busy worker, milliseconds.

    The greenlet can be killed here like at any wait, so call it only between
    steps, never inside a transaction or between a commit and its bookkeeping.
    Off the hub (a real thread, the hub itself, no hub yet) it does nothing.
    """
    hub = get_hub_if_exists()
    current = gevent.getcurrent()
    if hub is None or current is hub:
        return
    if within and _resumed[0]() is current and time.perf_counter() - _resumed[1] < within:
        return
    loop = hub.loop
    check = loop.check(priority=_LAST)
    idle = loop.idle(priority=_LAST)
    idle.start(_nothing)
    try:
        hub.wait(check)
    finally:
        idle.stop()
        idle.close()
        check.close()
    _resumed[:] = (weakref.ref(current), time.perf_counter())


def resumed() -> None:
    """Note that the calling greenlet just came back from a wait (its slice starts now).

    Why: :func:`cooperate` with ``within`` skips a yield early in a slice. A greenlet
    woken by a message (a call's queue) starts a slice as much as one resumed by
    ``cooperate`` itself, and a turn's work begins exactly there.
    """
    _resumed[:] = (weakref.ref(gevent.getcurrent()), time.perf_counter())


def _nobody() -> None:
    return None


#: the greenlet that last came back from a wait it told us of (:func:`cooperate`,
#: :func:`resumed`: a weak reference), and when
_resumed: list[Any] = [_nobody, 0.0]

#: work on the hub between two yields: a step this short since its greenlet last
#: woke goes on without one (``cooperate(SLICE_S)``); every yield is a wait for the rest
#: of a loop iteration, milliseconds on a busy worker
SLICE_S = 0.002


def _nothing() -> None:
    return None


def watch_hub_lag(observe: Callable[[float], Any], every: float = 0.02) -> None:
    """Forever: ``observe(seconds)``, how late the hub ran a timer due ``every`` s on.

    Every greenlet of a process shares its one hub: whatever runs long on it (a
    full garbage collection, a blocking system call, a big batch of frames, or no
    CPU to be had) delays all of them by as much. Run it in its own greenlet.
    """
    loop = gevent.get_hub().loop
    mono = time.monotonic
    while True:
        loop.update_now()  # the timer counts from now, not from the loop's cached time
        due = mono() + every
        gevent.sleep(every)
        observe(max(0.0, mono() - due))


class ChannelClosed(Exception):
    """The :class:`HubChannel` was closed and is drained."""


_CLOSED = object()


class HubChannel:
    """A thread-safe queue whose consumer is a greenlet.

    ``put`` may be called from any thread (or the hub itself): the item goes into
    a lock-free deque and an ``async`` watcher wakes the hub, which moves items
    into a gevent queue. Greenlets never spin or poll.
    """

    def __init__(self) -> None:
        self._pending: collections.deque[Any] = collections.deque()
        self._queue: gevent.queue.Queue = gevent.queue.Queue()
        self._hub = gevent.get_hub()
        self._watcher = self._hub.loop.async_()
        self._watcher.start(self._drain)
        # An idle channel must not keep the hub alive; waiters ref it while waiting.
        self._watcher.ref = False
        self._waiters = 0
        self._closed = False
        self._deliverer: gevent.Greenlet | None = None

    def put(self, item: Any) -> None:
        """Hand ``item`` to the hub; safe from any thread, never blocks."""
        if self._closed:
            return
        self._pending.append(item)
        self._watcher.send()

    def _drain(self) -> None:
        while self._pending:
            self._queue.put(self._pending.popleft())

    def get(self, timeout: float | None = None) -> Any:
        """Next item, waited for by a greenlet.

        Raises ``gevent.queue.Empty`` on timeout, :class:`ChannelClosed` once
        closed and empty.
        """
        self._drain()
        self._waiters += 1
        self._watcher.ref = True
        try:
            item = self._queue.get(timeout=timeout)
        finally:
            self._waiters -= 1
            if not self._waiters:
                self._watcher.ref = False
        if item is _CLOSED:
            self._queue.put(_CLOSED)  # every later get sees it too
            raise ChannelClosed
        return item

    def deliver_to(self, callback: Callable[[Any], None]) -> gevent.Greenlet:
        """Call ``callback(item)`` in one greenlet, in order, for every item.

        Why a greenlet and not the watcher callback itself: callbacks may block
        (put into a bounded queue, log), which is forbidden inside the hub.
        """

        def loop() -> None:
            while True:
                try:
                    item = self.get()
                except ChannelClosed:
                    return
                try:
                    callback(item)
                except Exception:  # a consumer bug must not kill delivery
                    log.exception("HubChannel callback failed")

        self._deliverer = gevent.spawn(loop)
        return self._deliverer

    def close(self) -> None:
        """Stop accepting items; waiters get :class:`ChannelClosed` after the rest.

        Call from the hub's thread.
        """
        if self._closed:
            return
        self._closed = True
        self._drain()
        self._queue.put(_CLOSED)
        self._watcher.stop()
        self._watcher.close()


class AsyncioLoopThread:
    """An asyncio event loop running forever in its own real OS thread.

    Why: asyncio SDKs need a loop, and a loop cannot share the gevent thread.
    The loop is built with the original (unpatched) selector and thread class so
    gevent's monkey-patching does not leak into it.
    """

    def __init__(self, name: str = "asyncio-bridge") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: Any = None
        self._done: Any = None

    def start(self) -> AsyncioLoopThread:
        """Start the thread (idempotent); returns self."""
        if self._thread is not None:
            return self
        # Under monkey-patching threading.Thread makes greenlets: use the raw primitives.
        start_thread = monkey.get_original("_thread", "start_new_thread")
        new_lock = monkey.get_original("_thread", "allocate_lock")
        selector_cls = monkey.get_original("selectors", "DefaultSelector")
        self._loop = asyncio.SelectorEventLoop(selector_cls())
        ready, done = new_lock(), new_lock()
        ready.acquire()
        done.acquire()

        def run() -> None:
            try:
                asyncio.set_event_loop(self._loop)
                self._loop.call_soon(ready.release)
                self._loop.run_forever()
            finally:
                done.release()

        self._done = done
        self._thread = start_thread(run, ())
        ready.acquire(timeout=5)  # microseconds in practice
        return self

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (start() first)."""
        if self._loop is None:
            raise RuntimeError("AsyncioLoopThread not started")
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; returns a thread-safe future.

        Do not call ``.result()`` on it from a greenlet (it would block the hub):
        use :meth:`wait`.
        """
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        # The loop thread completes the future: its condition must hold a real lock.
        real_lock = monkey.get_original("_thread", "allocate_lock")()
        fut._condition = threading.Condition(real_lock)  # type: ignore[attr-defined]

        async def runner() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                result = await coro
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        self.loop.call_soon_threadsafe(self.loop.create_task, runner())
        return fut

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a plain callable on the loop thread (e.g. feed an asyncio queue)."""
        self.loop.call_soon_threadsafe(fn, *args)

    @staticmethod
    def wait(fut: concurrent.futures.Future[T], timeout: float | None = None) -> T:
        """Wait for ``fut`` from a greenlet, keeping the hub free; re-raises its error.

        Raises ``TimeoutError`` after ``timeout`` seconds (the future keeps running).
        """
        if fut.done():
            return fut.result()
        channel = HubChannel()
        fut.add_done_callback(lambda _f: channel.put(None))
        try:
            channel.get(timeout=timeout)
        except gevent.queue.Empty:
            raise TimeoutError("asyncio future did not finish in time") from None
        finally:
            channel.close()
        return fut.result()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """``submit`` then ``wait``: run one coroutine to completion from a greenlet."""
        return self.wait(self.submit(coro), timeout)

    def stop(self) -> None:
        """Stop the loop and join its thread (idempotent)."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._done.acquire(timeout=5)
        self._loop.close()
        self._thread = None
