"""Dead air between the sentences of one reply, seen by the emulated switch (issue #27).

Runs N booking calls at once through the in-process bot and the FreeSWITCH emulator
(text mode, the repository's clinics) and reports the emulator's ``playback_gaps``: the
time a playback ended with nothing queued behind it until the next playback started,
with no caller input between (``Channel.playback_gaps``). Gaps over 1 s are re-prompts
after the caller's silence, not dead air inside a reply, and are left out.

    .venv/bin/python bench/bench_reply_gaps.py --calls 12 --rounds 2

Run it once quiet and once with CPU hogs beside it (``python -c 'while 1: pass' &`` per
core) to see what load does to the gap.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import gevent

from esl_app.sim.simulate import SimCall, start_local_bot
from esl_app.sim.testing import make_db

SETTLE_S = 0.2  # the emulator's listen_settle: a longer gap announces 'listening'
SCRIPT = ["I'd like to book an appointment with Dr. Patel", "next Tuesday morning",
          "the first one", "John Smith", "yes", "no thanks"]


def run(calls: int, rounds: int, time_scale: float) -> dict[str, float | int]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-gaps-"))
    make_db(tmp)
    from esl_app.config.tenants import load_tenants
    from esl_app.sim.testing import REPO_TENANTS

    bot = start_local_bot(load_tenants(REPO_TENANTS))
    gaps: list[float] = []
    plays = 0
    try:
        for _ in range(rounds):
            sims = [SimCall(bot.address, "+15550101001", caller=f"+1555020{i:04d}",
                            time_scale=time_scale).start() for i in range(calls)]

            def drive(sim: SimCall) -> None:
                for line in SCRIPT:
                    if not sim.act(line):
                        break
                sim.finish()

            gevent.joinall([gevent.spawn(drive, s) for s in sims], timeout=300)
            for sim in sims:
                ch = sim.call.channel
                gaps += [g for g in ch.playback_gaps if g < 1.0]
                plays += sum(1 for t in ch.turns if t.speaker == "bot")
    finally:
        bot.stop()
    ms = sorted(g * 1000 for g in gaps)
    return {
        "playbacks": plays,
        "gaps": len(ms),
        "over_settle": sum(1 for g in ms if g > SETTLE_S * 1000),
        "p50_ms": round(statistics.median(ms), 1) if ms else 0.0,
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1) if ms else 0.0,
        "max_ms": round(ms[-1], 1) if ms else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--time-scale", type=float, default=0.05)
    args = ap.parse_args()
    print(run(args.calls, args.rounds, args.time_scale))


if __name__ == "__main__":
    main()
