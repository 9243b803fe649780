"""Who held the hub: a real thread notices when a process's hub stops, and says why.

Why: every call of a worker runs on its one hub. ``ivr_hub_lag_seconds`` shows
*that* the hub ran late; when it stops for long (a ~3 s stop of both workers was
seen under load, and then every audio stream looked dead) an operator needs *why*:

- Python or C code running long on the hub (on CPU the whole time);
- the main thread blocked in the kernel (a page fault, a full pipe, a disk);
- the main thread runnable but given no core (cores taken by other work);
- the whole process not run at all (a paused or starved machine, SIGSTOP).

The hub cannot see its own stop, so a real OS thread watches a heartbeat that the
hub's lag sampler (``bridge.watch_hub_lag``, which feeds ``on_lag``) beats, and
while it is stale samples the main thread: its Python stack
(``sys._current_frames``), its kernel state and wait channel
(``/proc/self/task/<tid>/stat``, ``wchan``), its CPU time (the thread's CPU clock)
and its run-queue wait (``schedstat``). A
process that was not run at all shows as the watcher itself waking that late.

The thread never logs (in a monkey-patched process logging's locks are gevent's):
it hands each finding to the hub, which logs one WARNING per stop once it runs
again, at most one every ``min_gap_s`` (the rest are counted into the next).
The thread wakes 10 times a second for two clock reads: ~2 ms of CPU a second,
mostly taking the GIL (measured with a busy hub; the hub's own throughput did not
change measurably).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

import gevent
from gevent import monkey

from esl_app.support.bridge import HubChannel, watch_hub_lag

__all__ = ["HubWatch", "describe"]

log = logging.getLogger(__name__)

STACK_FRAMES = 6  # innermost frames of the hub's Python stack shown in a report


class HubWatch:
    """Watch this process's hub from a real thread; ``start()`` on the hub's thread."""

    def __init__(self, threshold_s: float = 0.25, every_s: float = 0.1,
                 min_gap_s: float = 5.0,
                 observe: Callable[[dict[str, Any]], Any] | None = None,
                 on_lag: Callable[[float], Any] | None = None,
                 beat_every_s: float = 0.02) -> None:
        self.observe = observe  # called on the hub with each finding (a metric), before the log
        self.on_lag = on_lag  # each lag sample of the heartbeat (a worker's ivr_hub_lag_seconds)
        self.threshold_s = threshold_s
        self.every_s = every_s  # how often the thread looks
        self.beat_every_s = beat_every_s  # how often the hub beats
        self.min_gap_s = min_gap_s
        self.reports: list[dict[str, Any]] = []  # every finding, newest last (bounded)
        self._beat = time.monotonic()
        self._stopped = False
        self._ident = 0
        self._tid = 0
        self._channel: HubChannel | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self._last_logged = -1e9
        self._held: list[dict[str, Any]] = []

    # -- on the hub ----------------------------------------------------------------------

    def start(self) -> HubWatch:
        """Beat the heartbeat from the lag sampler's greenlet; start the watching thread."""
        self._ident = monkey.get_original("_thread", "get_ident")()
        self._tid = monkey.get_original("_thread", "get_native_id")()
        self._channel = HubChannel()
        self._greenlets = [gevent.spawn(watch_hub_lag, self._tick, self.beat_every_s),
                           self._channel.deliver_to(self._report)]
        self._beat = time.monotonic()
        monkey.get_original("_thread", "start_new_thread")(self._watch, ())
        return self

    def stop(self) -> None:
        self._stopped = True
        for g in self._greenlets:
            g.kill(block=False)

    def _tick(self, lag_s: float) -> None:
        self._beat = time.monotonic()
        if self.on_lag is not None:
            self.on_lag(lag_s)

    def _report(self, found: dict[str, Any]) -> None:
        if "failed" in found:
            # the watch is gone (the lag sampler beats on): say so once, loudly
            log.error("event-loop watch stopped; stops of this process's event loop will "
                      "no longer be explained: %s", found["failed"])
            return
        if self.observe is not None:
            with contextlib.suppress(Exception):
                self.observe(found)
        self.reports.append(found)
        del self.reports[:-100]
        now = time.monotonic()
        if now - self._last_logged < self.min_gap_s:
            self._held.append(found)
            return
        self._last_logged = now
        more = ""
        if self._held:
            longest = max(h["ms"] for h in self._held)
            more = f" ({len(self._held)} more since the last report, longest {longest:.0f} ms)"
            self._held.clear()
        log.warning("%s%s", describe(found), more)

    # -- in the watching thread -------------------------------------------------------------

    def _watch(self) -> None:
        """The thread's body: a failure is handed to the hub, which logs it (the thread cannot)."""
        try:
            self._look()
        except BaseException as exc:  # noqa: BLE001 - a thread's death must not pass unseen
            self._send({"failed": f"{type(exc).__name__}: {exc}"})

    def _look(self) -> None:
        # Each look takes the GIL from the hub for a moment: a look is two clock reads,
        # and /proc is read only while the hub stands still.
        sleep = monkey.get_original("time", "sleep")
        mono = time.monotonic
        cpu_now = self._cpu_clock()
        last = mono()
        cpu = cpu_now()  # the hub thread's CPU ns at the last look
        stall: dict[str, Any] | None = None
        while not self._stopped:
            sleep(self.every_s)
            now = mono()
            late = now - last - self.every_s  # how late this thread woke: was the process run?
            last = now
            age = now - self._beat
            if late > self.threshold_s:
                # this thread could not run either; the hub may well have beaten first
                c = cpu_now()
                found = {"ms": late * 1000, "late_ms": late * 1000, "states": {}, "stack": [],
                         "cpu_ms": _ms(cpu, c), "runq_ms": None}
                found["kind"] = _classify(found)
                self._send(found)
                stall, cpu = None, c
                continue
            if stall is None:
                if age <= self.threshold_s:
                    cpu = cpu_now()
                    continue
                stall = {"since": self._beat, "cpu0": cpu, "seen": now,
                         "sched": _sched(self._tid), "states": Counter(),
                         "stack": self._stack(), "late_ms": 0.0}
            if age > self.threshold_s:
                stall["states"][_state(self._tid)] += 1
                stall["late_ms"] = max(stall["late_ms"], late * 1000)
                continue
            # the hub beat again: the stop is over
            c = cpu_now()
            ms = max(0.0, (self._beat - stall["since"] - self.beat_every_s) * 1000)
            sched = _sched(self._tid)
            runq = None  # the run-queue share of the part watched (from detection on)
            if sched is not None and stall["sched"] is not None:
                watched = max(1e-3, now - stall["seen"]) * 1000
                runq = (sched[1] - stall["sched"][1]) / 1e6 * ms / watched
            found = {"ms": ms, "states": dict(stall["states"].most_common(3)),
                     "stack": stall["stack"], "late_ms": stall["late_ms"],
                     "cpu_ms": _ms(stall["cpu0"], c), "runq_ms": runq}
            found["kind"] = _classify(found)
            self._send(found)
            stall, cpu = None, c

    def _cpu_clock(self) -> Callable[[], int | None]:
        """Reads the hub thread's CPU time in ns, without a system call that drops the GIL."""
        try:
            clock = time.pthread_getcpuclockid(self._ident)
            time.clock_gettime_ns(clock)
        except (AttributeError, OSError):
            return lambda: None
        return lambda: time.clock_gettime_ns(clock)

    def _send(self, found: dict[str, Any]) -> None:
        if self._channel is not None:
            self._channel.put(found)

    def _stack(self) -> list[str]:
        frame = sys._current_frames().get(self._ident)
        if frame is None:
            return []
        try:
            frames = traceback.extract_stack(frame)[-STACK_FRAMES:]
        finally:
            del frame
        return [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames)]


def _classify(found: dict[str, Any]) -> str:
    """What held the hub: the largest of its thread's shares of the stop.

    On a CPU, in the run queue, or asleep in the kernel (the rest); or the whole
    process not run, when the watching thread woke that late too.
    """
    ms = found["ms"] or 1.0
    cpu, runq = found["cpu_ms"], found["runq_ms"]
    if cpu is None:
        return "not_run" if found["late_ms"] >= ms / 2 else "stopped"
    if found["late_ms"] >= ms / 2 and cpu < ms / 2:
        return "not_run"
    shares = {"on_cpu": cpu, "no_core": runq or 0.0, "blocked": ms - cpu - (runq or 0.0)}
    return max(shares, key=shares.__getitem__)


def _ms(before: int | None, after: int | None) -> float | None:
    return None if before is None or after is None else (after - before) / 1e6


_WHY = {
    "on_cpu": "the hub's thread was mostly on a CPU (code that should yield or move to a "
              "thread, or a C call holding the GIL)",
    "blocked": "mostly blocked in the kernel (a system call, a page fault, the GIL)",
    "no_core": "mostly runnable but given no core (the cores were busy with other work)",
    "not_run": "the whole process was not run (the machine paused or was starved)",
    "stopped": "cause not measurable here",
}


def describe(found: dict[str, Any]) -> str:
    """One log line for a finding of :class:`HubWatch`."""
    parts = [f"event loop stopped for {found['ms']:.0f} ms: {_WHY.get(found['kind'], '?')}"]
    if found.get("cpu_ms") is not None:
        parts.append(f"on CPU {found['cpu_ms']:.0f} ms")
    if found.get("runq_ms") is not None:
        parts.append(f"waiting for a CPU ~{found['runq_ms']:.0f} ms")
    if found.get("late_ms", 0) > found["ms"] / 2:
        parts.append(f"the watching thread woke {found['late_ms']:.0f} ms late too")
    if found.get("states"):
        parts.append("main thread " + ", ".join(f"{s} ×{n}" for s, n in found["states"].items()))
    if found.get("stack"):
        parts.append("at " + " < ".join(found["stack"]))
    return "; ".join(parts)


def _sched(tid: int) -> tuple[int, int] | None:
    """(ns on a CPU, ns waiting in the run queue) of thread ``tid``, or None."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/self/task/{tid}/schedstat") as fh:
            on_cpu, waited = fh.read().split()[:2]
        return int(on_cpu), int(waited)
    return None


def _state(tid: int) -> str:
    """The thread's scheduler state and, when sleeping, its wait channel (``D in folio_wait…``)."""
    state = "?"
    with contextlib.suppress(OSError, IndexError):
        with open(f"/proc/self/task/{tid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    if state in ("S", "D"):
        with contextlib.suppress(OSError):
            with open(f"/proc/self/task/{tid}/wchan") as fh:
                wchan = fh.read().strip()
            if wchan and wchan != "0":
                return f"{state} in {wchan}"
    return state


def _short(path: str) -> str:
    """A source path from its package down (``esl_app/media/server.py``)."""
    for mark in ("/esl_app/", "/site-packages/", "/lib/python"):
        at = path.rfind(mark)
        if at >= 0:
            return path[at + 1:]
    return path.rsplit("/", 1)[-1]
