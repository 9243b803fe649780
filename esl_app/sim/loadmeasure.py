"""The load test's measurements.

Percentiles, CPU from /proc (the server's, the generator's, the host's per CPU),
pinning process trees to CPUs, and the server's own histograms from its /metrics.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import click

# -- statistics ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no samples."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


def _cpu_pct(a: tuple[float, float, float, int], b: tuple[float, float, float, int]) -> float:
    """CPU % between two samples (time, cumulative CPU seconds, memory, active)."""
    return (b[1] - a[1]) / max(1e-6, b[0] - a[0]) * 100


def _steady_cpu(samples: list[tuple[float, float, float, int]], peak: int) -> float | None:
    """Median server CPU % over the 1 s samples taken while (nearly) every call was up.

    The whole-run average mixes in the ramp and the tail; this is the figure for
    "N concurrent calls".
    """
    rates = [_cpu_pct(a, b) for a, b in zip(samples, samples[1:], strict=False)
             if peak and b[3] >= 0.95 * peak]
    if not rates:
        return None
    rates.sort()
    return round(rates[len(rates) // 2], 1)


_HOST_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _host_ticks() -> list[int] | None:
    """The machine's cumulative CPU ticks by kind (``/proc/stat``), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:1 + len(_HOST_FIELDS)]]
    except (OSError, ValueError):
        return None


def _host_split(samples: list[tuple[list[int] | None, int]], peak: int
                ) -> dict[str, float] | None:
    """The whole machine's CPU by kind, % of all cores, while (nearly) every call was up.

    Why: with the load generator on the same cores, a run whose tails blow up is
    usually a saturated machine (idle near 0); ``softirq`` is the kernel's TCP work
    for the frames, charged to no process.
    """
    window = [t for t, active in samples if t is not None and peak and active >= 0.95 * peak]
    if len(window) < 2:
        return None
    d = [b - a for a, b in zip(window[0], window[-1], strict=True)]
    total = sum(d) or 1
    return {k: round(100 * v / total, 1) for k, v in zip(_HOST_FIELDS, d, strict=True)}


# -- pinning: the server on some CPUs, the load generator on the others ------------------

GENERATOR_IDLE_MIN = 10.0  # % idle the generator's CPUs must keep for a pinned run to count


def parse_cpus(text: str, option: str = "--server-cpus") -> frozenset[int]:
    """``"0"``, ``"0,2"``, ``"0-3"`` → CPU numbers; a clear error for ones this box lacks.

    Why here and not at use: a typo'd CPU would otherwise surface as an ``OSError``
    from ``sched_setaffinity`` after the server had started.
    """
    if not hasattr(os, "sched_setaffinity"):
        raise click.UsageError(f"{option} needs Linux (os.sched_setaffinity); this is "
                               f"{sys.platform}")
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise click.BadParameter(f"expected CPU numbers like 0, 0,2 or 0-3; got '{text}'",
                                     param_hint=option)
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise click.BadParameter(f"empty CPU range '{part}'", param_hint=option)
        cpus.update(range(a, b + 1))
    usable = os.sched_getaffinity(0)
    missing = sorted(cpus - usable)
    if missing:
        raise click.BadParameter(
            f"CPU {', '.join(map(str, missing))} does not exist here (usable CPUs: "
            f"{_cpu_list(usable)})", param_hint=option)
    return frozenset(cpus)


def _cpu_list(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def resolve_pinning(server_cpus: str | None, generator_cpus: str | None
                    ) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """The two CPU sets of a pinned run (one given: the other is every other usable CPU)."""
    if server_cpus is None and generator_cpus is None:
        return None, None
    srv = parse_cpus(server_cpus, "--server-cpus") if server_cpus is not None else None
    gen = parse_cpus(generator_cpus, "--generator-cpus") if generator_cpus is not None else None
    usable = frozenset(os.sched_getaffinity(0))
    if srv is None:
        srv = usable - gen  # type: ignore[operator]
    if gen is None:
        gen = usable - srv
    if not srv or not gen:
        raise click.UsageError("a pinned run needs at least one CPU for the server and one "
                               f"for the load generator (usable: {_cpu_list(usable)})")
    if srv & gen:
        raise click.UsageError(f"--server-cpus and --generator-cpus share CPU "
                               f"{_cpu_list(srv & gen)}: the generator would take the "
                               "server's CPU, which is what pinning is for avoiding")
    return srv, gen


def pin_tree(pid: int, cpus: Iterable[int]) -> int:
    """Every thread of ``pid`` and of its descendants onto ``cpus`` (``taskset -a``).

    Children and threads started later inherit it from the process that makes them;
    this catches those that exist already. Returns the number of threads pinned.
    """
    cpus = set(cpus)
    done = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), cpus)
                    done += 1
        todo.extend(_children(p))
    return done


def _percpu_ticks() -> dict[int, list[int]] | None:
    """Each CPU's cumulative ticks by kind (``/proc/stat`` ``cpuN`` lines), None off Linux."""
    try:
        out: dict[int, list[int]] = {}
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *vals = line.split()
                    out[int(name[3:])] = [int(x) for x in vals[:len(_HOST_FIELDS)]]
        return out
    except (OSError, ValueError, IndexError):
        return None


def _cpus_idle(samples: list[tuple[dict[int, list[int]] | None, int]], peak: int,
               cpus: Iterable[int]) -> float | None:
    """Idle % (idle + iowait) of ``cpus`` while (nearly) every call was up."""
    window = [t for t, active in samples if t is not None and peak and active >= 0.95 * peak]
    if len(window) < 2:
        return None
    idle = total = 0
    for c in cpus:
        if c not in window[0] or c not in window[-1]:
            continue
        d = [b - a for a, b in zip(window[0][c], window[-1][c], strict=True)]
        total += sum(d)
        idle += d[_HOST_FIELDS.index("idle")] + d[_HOST_FIELDS.index("iowait")]
    return round(100 * idle / total, 1) if total else None


def _cpu_ms_per_call_second(samples: list[tuple[float, float, float, int]], peak: int
                            ) -> float | None:
    """Server CPU ms per second of one call, over the 1 s samples with every call up.

    Why a rate per call: it compares runs of different sizes and machines of
    different core counts (1000 ms = a whole core for one call for a second).
    """
    cpu = call_s = 0.0
    for a, b in zip(samples, samples[1:], strict=False):
        if peak and min(a[3], b[3]) >= 0.95 * peak:
            cpu += b[1] - a[1]
            call_s += (b[0] - a[0]) * (a[3] + b[3]) / 2
    return round(cpu * 1000 / call_s, 3) if call_s else None


_SERVER_HISTS = {"setup_ms": "ivr_call_setup_seconds",
                 "setup_own_ms": "ivr_call_setup_own_seconds",
                 "barge_in_ms": "ivr_barge_in_reaction_seconds",
                 "turn_response_ms": "ivr_turn_response_seconds",
                 "hub_lag_ms": "ivr_hub_lag_seconds",
                 "gc_full_ms": "ivr_gc_full_seconds"}


def _hist_buckets(path: str) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts of the server-side histograms, by metric name.

    Summed over the workers' multiprocess files in ``path`` (readable while they run).
    """
    from prometheus_client import CollectorRegistry, multiprocess

    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg, path=path)
    out: dict[str, dict[float, float]] = {name: {} for name in _SERVER_HISTS.values()}
    for metric in reg.collect():
        if metric.name not in out:
            continue
        buckets = out[metric.name]
        for s in metric.samples:
            if s.name == metric.name + "_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return out


def _quantiles(buckets: dict[float, float]) -> dict[str, float | None]:
    """p50/p95/p99 in ms (and the count) from cumulative buckets.

    Interpolated within buckets as Prometheus' ``histogram_quantile`` does, so a
    figure is only as fine as the buckets (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50 ms ...).
    """
    out: dict[str, float | None] = {"p50": None, "p95": None, "p99": None, "count": 0}
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return out
    total = buckets[bounds[-1]]
    out["count"] = int(total)
    for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        rank = q * total
        lo, below = 0.0, 0.0
        for le in bounds:
            if buckets[le] >= rank:
                if le == float("inf"):
                    out[key] = round(lo * 1000, 1)  # beyond the last bound: report that bound
                else:
                    span = buckets[le] - below
                    frac = (rank - below) / span if span else 1.0
                    out[key] = round((lo + (le - lo) * frac) * 1000, 1)
                break
            lo, below = le, buckets[le]
    return out


def _server_figures(path: str, before: dict[str, dict[float, float]] | None = None
                    ) -> dict[str, dict[str, float | None]]:
    """Quantiles of every server-side histogram, keyed like ``_SERVER_HISTS``.

    One read of the workers' files; less what ``before`` (their state after the
    warm-up) held.
    """
    now = _hist_buckets(path)
    before = before or {}
    return {key: _quantiles({le: v - before.get(name, {}).get(le, 0.0)
                             for le, v in now[name].items()})
            for key, name in _SERVER_HISTS.items()}


def _pcts(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}": (None if (v := percentile(values, q)) is None else round(v, 2))
            for q in (50, 95, 99)}


# -- server processes: start, find, sample ---------------------------------------------


def _pids_listening(port: int) -> list[int]:
    """Pids holding a TCP socket listening on ``port`` (all workers share it)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if len(parts) > 9 and parts[3] == "0A" and \
                        int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
    if not inodes:
        return []
    wanted = {f"socket:[{i}]" for i in inodes}
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (d / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        pids.append(int(d.name))
                        break
    return sorted(pids)


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(x) for x in text.split()]
    return []


def _proc_sample(pids: Iterable[int], memory: bool = True) -> tuple[float, float]:
    """(CPU seconds used, memory in kB: PSS if readable, else RSS) summed over ``pids``.

    Reading PSS (``smaps_rollup``) walks the process's page tables under its memory
    map lock, and the process waits for it in its next ``mmap``/``munmap`` (several ms
    at a few hundred MB): ``memory=False`` (CPU only) where the figure is not used.
    """
    tick = os.sysconf("SC_CLK_TCK")
    cpu = 0.0
    mem = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            # own + reaped children (espeak/sox run by the local TTS are the server's cost)
            cpu += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
            if not memory:
                continue
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        mem += float(line.split()[1])
                        break
            except OSError:
                mem += float(Path(f"/proc/{pid}/statm").read_text().split()[1]) * \
                    os.sysconf("SC_PAGE_SIZE") / 1024
    return cpu, mem
