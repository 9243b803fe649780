"""Prompt-cache misses: how long each holds the worker's hub, and what that costs others.

    .venv/bin/python bench/bench_prompts.py [--misses 2000] [--concurrency 20] [--dir D]

Every new sentence of every call is a miss of the on-disk prompt cache: a WAV
(its text inside) is created and renamed into place. Here ``--concurrency``
greenlets synthesise ``--misses`` distinct sentences through the emulated Polly
(no added latency) into ``--dir`` (default: a fresh directory under ./var, on
the file system of the default ``./var/prompts``), while a 5 ms ticker
measures how late the hub runs it. Printed as JSON:

- ``hub_cpu_us_per_miss``: CPU the hub's own thread spent per miss (the file
  work moved to a thread no longer counts; its hand-over does);
- ``process_cpu_us_per_miss``: CPU of the whole process per miss, the file
  work's threads included: what a miss costs the machine's cores;
- ``wall_us_per_miss``: elapsed time per miss, all greenlets together;
- ``hub_lag_ms``: p50/p99/max of the ticker's lateness: what every other call
  of the worker waited while the misses went on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
import gevent.pool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from esl_app.providers.tts.cache import PromptCache  # noqa: E402
from esl_app.sim.latency import LOCAL, Delays, EmulatedPolly  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--misses", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--dir", default=None, help="cache directory (default: fresh, under ./var)")
    args = ap.parse_args()
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="prompts-",
                                                                dir=_tmp_root()))
    try:
        return _run(args, base)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


def _tmp_root() -> str:
    root = ROOT / "var"  # beside the default ./var/prompts (git-ignored)
    root.mkdir(exist_ok=True)
    return str(root)


def _run(args: argparse.Namespace, base: Path) -> int:
    tts = EmulatedPolly(Delays(LOCAL), cache=PromptCache(base))
    lags: list[float] = []
    loop = gevent.get_hub().loop

    def ticker() -> None:
        while True:
            loop.update_now()
            due = time.monotonic() + 0.005
            gevent.sleep(0.005)
            lags.append(time.monotonic() - due)

    stamp = time.time()
    texts = [f"Sentence {i} of the run at {stamp}." for i in range(args.misses)]
    tts.synthesize("warm-up", voice="Joanna", sample_rate=8000)
    tick = gevent.spawn(ticker)
    gevent.sleep(0.02)
    lags.clear()
    pool = gevent.pool.Pool(args.concurrency)
    cpu0, pcpu0, t0 = time.thread_time(), time.process_time(), time.perf_counter()
    pool.map(lambda t: tts.synthesize(t, voice="Joanna", sample_rate=8000), texts)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    pcpu = time.process_time() - pcpu0
    tick.kill()
    lags.sort()
    n = len(lags)
    print(json.dumps({
        "misses": args.misses, "concurrency": args.concurrency, "dir": str(base),
        "hub_cpu_us_per_miss": round(cpu / args.misses * 1e6, 1),
        "process_cpu_us_per_miss": round(pcpu / args.misses * 1e6, 1),
        "wall_us_per_miss": round(wall / args.misses * 1e6, 1),
        "hub_lag_ms": {"p50": round(lags[n // 2] * 1e3, 2),
                       "p99": round(lags[min(n - 1, int(n * 0.99))] * 1e3, 2),
                       "max": round(lags[-1] * 1e3, 2), "samples": n},
        "cache": {k: v for k, v in tts.cache.stats().items() if k in ("hits", "misses")},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
