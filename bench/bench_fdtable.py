"""How long a worker's hub stops when the kernel grows its fd table, and with reserve_fds.

    .venv/bin/python bench/bench_fdtable.py [--sockets 2500] [--runs 5] [--json]

A worker accepts two sockets per call. Each time its descriptors pass a power of
two (64, 128, … 2048) the kernel doubles the fd table inside that ``accept`` or
``socket`` call, and in a process with threads it first waits for an RCU grace
period (``expand_files`` → ``synchronize_rcu``). Each run here is a fresh
threaded interpreter that opens ``--sockets`` sockets one by one and times each
``socket()``, once as the kernel leaves it (``grow``) and once after
``esl_app.runtime.fds.reserve_fds`` (``reserved``). Printed per mode: the slowest calls
(ms and the descriptor they got), the summed time of calls over 1 ms, and what
``reserve_fds`` itself took. The figures depend on the machine's load: run it
quiet and again beside a load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, socket, sys, threading, time
sys.path.insert(0, sys.argv[3])
n, reserve = int(sys.argv[1]), sys.argv[2] == "reserved"
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # as a worker has
took = 0.0
if reserve:
    from esl_app.runtime.fds import reserve_fds
    t = time.perf_counter(); reserve_fds(n); took = (time.perf_counter() - t) * 1e3
socks, times = [], []
for _ in range(n):
    t = time.perf_counter(); s = socket.socket(); dt = (time.perf_counter() - t) * 1e3
    socks.append(s); times.append((dt, s.fileno()))
print(json.dumps({"times": times, "reserve_ms": took}))
"""


def one(sockets: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(sockets), mode, str(ROOT)],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sockets", type=int, default=2500)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    report: dict[str, dict] = {}
    for mode in ("grow", "reserved"):
        worst, over_1ms, reserve_ms = [], [], []
        for _ in range(a.runs):
            r = one(a.sockets, mode)
            times = sorted(r["times"], reverse=True)
            worst.append([[round(ms, 2), fd] for ms, fd in times[:5]])
            over_1ms.append(round(sum(ms for ms, _ in times if ms > 1.0), 2))
            reserve_ms.append(round(r["reserve_ms"], 2))
        report[mode] = {"slowest_socket_ms_fd": worst, "ms_in_calls_over_1ms": over_1ms,
                        "median_ms_in_calls_over_1ms": statistics.median(over_1ms),
                        "reserve_fds_ms": reserve_ms}
    if a.json:
        print(json.dumps(report))
    else:
        for mode, r in report.items():
            print(f"{mode:9} stalled {r['ms_in_calls_over_1ms']} ms per run "
                  f"(median {r['median_ms_in_calls_over_1ms']}); reserve_fds took "
                  f"{r['reserve_fds_ms']} ms")
            for w in r["slowest_socket_ms_fd"]:
                print(f"          slowest socket() ms/fd: {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
