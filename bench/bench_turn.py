"""Turn latency: end of caller speech -> first bot audio, and our own work per turn.

    .venv/bin/python bench/bench_turn.py [--calls 20] [--audio]

Two load-test runs against a fresh 2-worker server:

1. `--profile cloud`: providers wait like AWS (Transcribe 100-300 ms to the final
   after end of speech, agent 500-1500 ms, Polly 200-500 ms to first audio on a
   cache miss; the agent's reply streamed at the rate documented in
   esl_app/sim/latency.py). Reported, p50/p95/p99:
   - end of caller speech -> first bot audio (target p50 <= 800 ms; the original
     design estimated 1000-2500 ms). This may be a cached acknowledgement
     ("Okay.") played when the agent has no first sentence after the tenant's
     ack_after_ms (300 ms by default);
   - end of caller speech -> first audio of the agent's actual answer (no
     acknowledgement, no filler): what streaming and caching alone achieve.
2. `--profile local --tts freeswitch`: no added latency and no local synthesis, so
   final transcript -> first playback command is our own work (ESL parsing, call
   controller, local agent with its slot search/booking queries, command out).
   Reported p50/p99 (target p99 <= 10 ms), as the emulator sees it and as the
   server's ivr_turn_response_seconds histogram does (from the ESL reader taking
   the final to the playback command going out: without the process wake-ups).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOT = ("import esl_app.__main__, sys\nfrom esl_app.sim.loadtest import main\n"
        "sys.exit(main(sys.argv[1:]))")


def loadtest(*extra: str) -> dict:
    out = subprocess.run([sys.executable, "-c", BOOT, "--json", *extra], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--audio", action="store_true", help="audio mode for the cloud run")
    args = p.parse_args()
    n = str(args.calls)
    cloud = loadtest("--calls", n, "--ramp", "2", "--profile", "cloud",
                     *(["--audio"] if args.audio else []))
    own = loadtest("--calls", n, "--ramp", "2", "--profile", "local", "--tts", "freeswitch")
    t, a, o = cloud["turn_ms"], cloud["answer_ms"], own["turn_overhead_ms"]
    print(f"cloud profile, {cloud['mode']} mode, {n} calls "
          f"({cloud['samples']['turn_ms']} turns, {cloud['calls_failed']} failed):")
    print(f"  end of caller speech -> first bot audio   p50 {t['p50']} ms   p95 {t['p95']} ms"
          f"   p99 {t['p99']} ms   (target p50 <= 800)")
    print(f"  end of caller speech -> agent's answer    p50 {a['p50']} ms   p95 {a['p95']} ms"
          f"   p99 {a['p99']} ms   ({cloud['samples']['answer_ms']} turns)")
    print(f"local agent, FreeSWITCH TTS, {n} calls ({own['samples']['overhead_ms']} turns, "
          f"{own['calls_failed']} failed):")
    print(f"  our own work per turn (final -> play)    p50 {o['p50']} ms   p95 {o['p95']} ms"
          f"   p99 {o['p99']} ms   (target p99 <= 10)")
    s = own.get("server_turn_response_ms") or {}
    print(f"  the same, server side (no wake-ups)      p50 {s.get('p50')} ms   "
          f"p95 {s.get('p95')} ms   p99 {s.get('p99')} ms   ({s.get('count')} turns)")


if __name__ == "__main__":
    main()
