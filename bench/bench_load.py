"""Load benchmark: `ivr loadtest` at increasing concurrency, one table.

    .venv/bin/python bench/bench_load.py [--calls 50,200,500,1000] [--audio 50,100]
        [--profile cloud] [--workers 2] [--procs 2] [--server-cpus 0 --generator-cpus 1]

Each step starts a fresh server (2 workers by default) on free ports with a fresh
SQLite database, runs N concurrent booking calls in emulator processes separate
from the server, and prints one row. Text mode uses FreeSWITCH-side recognition;
audio mode streams the callers' voices in real-time 20 ms frames (the server's VAD and
end of turn run for real; recognition is the local recogniser, or in the `cloud` profile
the emulated Transcribe, which matches the caller lines the load generator registered).
The default provider profile is `cloud` (emulated AWS latency and no local speech
synthesis or recognition CPU, as in production). "turn" is end of speech -> first bot
audio (often a cached acknowledgement), "answer" -> first audio of the agent's answer.
Unpinned, the server and the emulators share every core (the shared-box regression
check); with --server-cpus/--generator-cpus each has its own, and "valid" says whether
the generator kept 10 % idle. "ms/call-s" is the server's CPU per second of one call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOT = ("import esl_app.__main__, sys\nfrom esl_app.sim.loadtest import main\n"
        "sys.exit(main(sys.argv[1:]))")
COLS = [("mode", "mode", "{}"), ("N", "calls", "{}"), ("peak", "peak_concurrent", "{}"),
        ("ok", "calls_completed", "{}"), ("fail", "calls_failed", "{}"),
        ("frames", "frames_sent", "{}"), ("lost", "frames_lost", "{}"),
        ("cpu%", "server_cpu_percent", "{:.0f}"), ("emu%", "emulator_cpu_percent", "{:.0f}"),
        ("kB/call", "rss_per_call_kb", "{:.0f}"), ("setup p99", "setup_p99_ms", "{:.1f}"),
        ("rtt p99", ("esl_rtt_ms", "p99"), "{:.1f}"),
        ("barge p50", "barge_in_p50_ms", "{:.1f}"), ("barge p99", "barge_in_p99_ms", "{:.1f}"),
        ("turn p50", "turn_p50_ms", "{:.0f}"), ("answer p50", "answer_p50_ms", "{:.0f}"),
        ("ovh p99", "turn_overhead_p99_ms", "{:.1f}"),
        ("ms/call-s", "server_cpu_ms_per_call_second", "{:.3f}"),
        ("gen idle%", "generator_idle_percent", "{:.1f}"), ("valid", "valid", "{}")]


def _get(r: dict, key) -> object:
    if isinstance(key, tuple):
        return (r.get(key[0]) or {}).get(key[1])
    return r.get(key)


def run(n: int, audio: bool, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-c", BOOT, "--calls", str(n), "--ramp", str(max(2.0, n / 50)),
           "--workers", str(args.workers), "--procs", str(args.procs),
           "--profile", args.profile, "--json"]
    if audio:
        cmd.append("--audio")
    if args.tts:
        cmd += ["--tts", args.tts]
    if args.db:
        cmd += ["--server-db", args.db]
    if args.server_cpus:
        cmd += ["--server-cpus", args.server_cpus]
    if args.generator_cpus:
        cmd += ["--generator-cpus", args.generator_cpus]
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         timeout=args.timeout)
    if out.returncode:
        return {"mode": "audio" if audio else "text", "calls": n,
                "error": out.stderr.strip().splitlines()[-1:]}
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["bench_s"] = round(time.monotonic() - t0, 1)
    return r


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", default="50,200,500,1000")
    p.add_argument("--audio", default="50,100", help="audio-mode steps ('' for none)")
    p.add_argument("--profile", default="cloud")
    p.add_argument("--tts", default=None)
    p.add_argument("--db", default=None,
                   help="database URL for the server (default: a fresh SQLite file per step)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--server-cpus", default=None,
                   help="pin the server here, the emulators elsewhere (see ivr loadtest)")
    p.add_argument("--generator-cpus", default=None)
    args = p.parse_args()
    steps = [(int(n), False) for n in args.calls.split(",") if n]
    steps += [(int(n), True) for n in args.audio.split(",") if n]
    print(f"# {os.cpu_count()} CPUs, {args.workers} workers, {args.procs} emulator "
          f"processes, profile {args.profile}, db {args.db or 'sqlite (fresh per step)'}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(" | ".join(c[0] for c in COLS))
    for n, audio in steps:
        r = run(n, audio, args)
        if "error" in r:
            print(f"{r['mode']} | {n} | failed: {r['error']}")
            continue
        cells = []
        for _, key, fmt in COLS:
            v = _get(r, key)
            cells.append("-" if v is None else fmt.format(v))
        print(" | ".join(cells), flush=True)
        if r.get("errors"):
            print(f"    errors: {r['errors']}", flush=True)


if __name__ == "__main__":
    main()
