"""Calls per server core: the largest N one pinned worker holds, measured on its own core.

    .venv/bin/python bench/bench_core.py [--start 1200] [--step 100] [--duration 60]
        [--server-cpus 0 --generator-cpus 1] [--pyspy var/pyspy-core.txt] [--json]

Each step is one `ivr loadtest --calls N --audio --profile cloud --workers 1 --server-cpus 0
--generator-cpus 1`: one worker (all its threads) on CPU 0, every emulator process on the
other CPU, N real-time audio callers holding full booking conversations and calling
again until --duration has passed, so N calls are up for about that long. N passes when:
0 failed calls, 0 lost frames, barge-in p99 <= 150 ms, set-up p99 <= 20 ms, and the
generator kept >= 10 % idle on its CPU (the run is `valid`; a step that is not is run
again after 30 s, up to --retries times, for a box where others' work took the
generator's CPU, and otherwise counts as failed).

From --start the search goes up by --step while N passes, or down while it fails; the
answer is the largest N that passed. At that N two more runs: `--profile cloud-stt`
(the agent and Polly answer at once, so `server_turn_response_ms` is our own work per
turn; passes at p99 <= 10 ms) and, with --pyspy, the same cloud run again with py-spy
sampling the worker (on the generator's CPU, non-blocking) for 30 s of steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOT = ("import esl_app.__main__, sys\nfrom esl_app.sim.loadtest import main\n"
        "sys.exit(main(sys.argv[1:]))")
LIMITS = {"barge_in_p99_ms": 150.0, "setup_p99_ms": 20.0}
OWN_WORK_P99_MS = 10.0


def loadtest(n: int, args: argparse.Namespace, profile: str = "cloud",
             pyspy: str | None = None) -> dict:
    cmd = [sys.executable, "-c", BOOT, "--calls", str(n), "--ramp", str(max(2.0, n / 50)),
           "--duration", str(args.duration), "--audio", "--profile", profile,
           "--workers", "1", "--procs", str(args.procs), "--server-cpus", args.server_cpus,
           "--generator-cpus", args.generator_cpus, "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    spy = None
    if pyspy:
        spy = _spy_later(proc.pid, n, args, pyspy)
    out, err = proc.communicate(timeout=args.timeout)
    if spy is not None:
        spy.wait(timeout=120)
    lines = out.strip().splitlines()
    if not lines:
        return {"calls": n, "error": err.strip().splitlines()[-3:]}
    r = json.loads(lines[-1])
    if args.save:  # every step's whole report, for the figures the row leaves out
        Path(args.save).mkdir(parents=True, exist_ok=True)
        tag = f"{n}-{profile}{'-pyspy' if pyspy else ''}-{int(time.time())}"
        (Path(args.save) / f"{tag}.json").write_text(json.dumps(r))
    return r


def _spy_later(parent: int, n: int, args: argparse.Namespace, out: str) -> subprocess.Popen:
    """py-spy on the worker once every call is up (ramp + one call), on the generator's CPUs."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    delay = max(2.0, n / 50) + 20

    def worker() -> int | None:
        # parent (loadtest) → ivr serve supervisor → its one worker
        for pid in _kids(parent):
            for w in _kids(pid):
                return w
        return None

    time.sleep(delay)
    pid = worker()
    if pid is None:
        raise RuntimeError("py-spy: no server worker found")
    cmd = ["taskset", "-c", args.generator_cpus, exe, "record", "--pid", str(pid),
           "--duration", "30", "--rate", "200", "--nonblocking", "--format", "raw",
           "--output", out]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kids(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def passes(r: dict) -> tuple[bool, str]:
    if "error" in r:
        return False, f"error: {r['error']}"
    why = []
    if r.get("valid") is not True:
        why.append(f"not valid: {r.get('invalid_reason')}")
    if r["calls_failed"]:
        why.append(f"{r['calls_failed']} failed")
    if r["frames_lost"]:
        why.append(f"{r['frames_lost']} lost frames")
    for key, limit in LIMITS.items():
        if r.get(key) is None or r[key] > limit:
            why.append(f"{key} {r.get(key)} > {limit:g}")
    return not why, "; ".join(why)


def row(r: dict) -> str:
    if "error" in r:
        return f"N {r['calls']}: {r['error']}"
    return (f"N {r['calls']}: peak {r['peak_concurrent']}, {r['calls_completed']} ok "
            f"{r['calls_failed']} failed, {r['frames_lost']} lost of {r['frames_sent']} frames; "
            f"set-up p99 {r['setup_p99_ms']} ms, barge-in p50/p99 {r['barge_in_p50_ms']}/"
            f"{r['barge_in_p99_ms']} ms, turn p50 {r['turn_p50_ms']} ms; server "
            f"{r['server_cpu_steady_percent']}% of its core "
            f"({r['server_cpu_ms_per_call_second']} ms per call-second, core idle "
            f"{r['server_cpus_idle_percent']}%, hub lag p99 "
            f"{(r.get('server_hub_lag_ms') or {}).get('p99')} ms), generator "
            f"{r['emulator_cpu_steady_percent']}% (its CPU idle {r['generator_idle_percent']}%, "
            f"hub lag p99 {(r.get('emulator_hub_lag_ms') or {}).get('p99')} ms); server side: "
            f"set-up p99 {(r.get('server_setup_ms') or {}).get('p99')} ms, barge-in p99 "
            f"{(r.get('server_barge_in_ms') or {}).get('p99')} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=int, default=1200)
    ap.add_argument("--step", type=int, default=100)
    ap.add_argument("--max", type=int, default=3000)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--procs", type=int, default=1, help="emulator processes")
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--generator-cpus", default="1")
    ap.add_argument("--pyspy", default=None, help="write a py-spy profile (raw) here at N")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--retries", type=int, default=2,
                    help="re-runs of a step that was not valid (generator short of CPU)")
    ap.add_argument("--save", default=None, help="directory for every step's JSON report")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    print(f"# {os.cpu_count()} CPUs; server CPU {args.server_cpus}, generator CPU "
          f"{args.generator_cpus}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    best: dict | None = None
    n, direction = args.start, 0
    while 0 < n <= args.max:
        r = loadtest(n, args)
        for _ in range(args.retries):  # a busy box (others' work on the generator's CPU)
            if r.get("valid") is not False:
                break
            print(f"(N {n}: not valid, {r.get('invalid_reason')}; again in 30 s)", flush=True)
            time.sleep(30)
            r = loadtest(n, args)
        ok, why = passes(r)
        print(("PASS " if ok else "FAIL ") + row(r) + ("" if ok else f"  [{why}]"), flush=True)
        if ok:
            best = r if best is None or n > best["calls"] else best
            if direction < 0:
                break
            direction = 1
            n += args.step
        else:
            if direction > 0:
                break
            direction = -1
            n -= args.step
    if best is None:
        print("no N passed")
        return 1
    n = best["calls"]
    own = loadtest(n, args, profile="cloud-stt")
    own_p99 = (own.get("server_turn_response_ms") or {}).get("p99")
    own_ok = own_p99 is not None and own_p99 <= OWN_WORK_P99_MS and not own.get("calls_failed")
    print(f"own work per turn at N {n} (cloud-stt): p99 {own_p99} ms "
          f"({'PASS' if own_ok else 'FAIL'}); {row(own)}", flush=True)
    if args.pyspy:
        prof = loadtest(n, args, pyspy=args.pyspy)
        print(f"py-spy at N {n}: {args.pyspy}; that run: {row(prof)}", flush=True)
    summary = {"calls_per_core": n if own_ok else None, "best_cloud": best,
               "own_work_p99_ms": own_p99, "own_work_run": own}
    print(f"calls per server core: {n} (cloud profile figures above)"
          + ("" if own_ok else f"; own work per turn p99 {own_p99} ms misses "
             f"{OWN_WORK_P99_MS:g} ms"))
    if args.json:
        print(json.dumps(summary))
    return 0 if own_ok else 1


if __name__ == "__main__":
    sys.exit(main())
