"""Barge-in on the real FreeSWITCH: caller speech onset → the bot's prompt stops.

Run: .venv/bin/python bench/bench_freeswitch_bargein.py [--calls 24] [--concurrency 2] [--json]

Needs the FreeSWITCH test kit in /opt/freeswitch and /opt/fs-test (`./dev test` installs
it; see docs/freeswitch.md). Starts the switch if it is not running
(and stops it again), a real `ivr serve` on free ports with the repo's tenants.yaml,
and renders the dialplan into a context of its own.

Each call: FreeSWITCH calls the bot through mod_loopback; 0.6 s into the greeting the
caller's leg plays an espeak-ng line. Measured on FreeSWITCH's own clock
(Event-Date-Timestamp, 20 ms ticks; also between the two events' arrival at the
benchmark, µs resolution): from the speech onset in the caller's audio (the caller leg's
playback start plus where speech begins in the WAV) to CHANNEL_EXECUTE_COMPLETE of the
bot's interrupted playback. That is everything the caller waits for: audio through
the switch, mod_audio_fork's 20 ms framing, our VAD (it needs min_speech_ms of speech,
120 ms by default, before it calls it speech), the call's queue, `uuid_break` on the
wire and FreeSWITCH stopping the file. Also printed: the bot's own share
(ivr_barge_in_reaction_seconds: VAD detection → uuid_break sent) from /metrics.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent.pool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from freeswitch import harness  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not harness.available():
        print(harness.SKIP_REASON, file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ivr-bench-fs-"))
    switch = harness.Switch()
    switch.start()
    esl = harness.InboundEsl().connect()
    plan = harness.DialplanInstall(esl, tag=f"b{os.getpid()}")
    tenants = work / "tenants.yaml"
    shutil.copy(ROOT / "tenants.yaml", tenants)
    bot = harness.Bot(work, tenants, days=3)
    try:
        bot.prepare()
        bot.start()
        plan.install(tenants, bot.esl)
        harness.barge_in_once(esl, plan)  # warm: prompts cached, recogniser loaded
        pool = gevent.pool.Pool(args.concurrency)
        t0 = time.monotonic()
        results = pool.map(lambda _: harness.barge_in_once(esl, plan), range(args.calls))
        wall = time.monotonic() - t0
        react = [r.reaction_ms for r in results]
        react_rx = [r.reaction_rx_ms for r in results]
        own_sum = bot.metric("ivr_barge_in_reaction_seconds_sum")
        own_n = bot.metric("ivr_barge_in_reaction_seconds_count")
        out = {
            "barge_ins": len(react), "concurrency": args.concurrency,
            "reaction_ms": {"p50": round(_pct(react, 50), 1), "p90": round(_pct(react, 90), 1),
                            "p99": round(_pct(react, 99), 1), "max": round(max(react), 1),
                            "min": round(min(react), 1)},
            "reaction_rx_ms": {"p50": round(_pct(react_rx, 50), 1),
                               "p90": round(_pct(react_rx, 90), 1),
                               "p99": round(_pct(react_rx, 99), 1),
                               "max": round(max(react_rx), 1)},
            "bot_share_ms_mean": round(own_sum / own_n * 1000, 2) if own_n else None,
            "wall_s": round(wall, 1),
            "machine": f"{platform.node()} {os.cpu_count()} cpu {platform.machine()}",
        }
    finally:
        plan.remove()
        esl.close()
        bot.stop()
        switch.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
    else:
        r = out["reaction_ms"]
        print(f"barge-ins: {out['barge_ins']} (concurrency {out['concurrency']}), "
              f"{out['wall_s']} s")
        print(f"speech onset -> prompt stopped (FreeSWITCH clock): p50 {r['p50']} ms, "
              f"p90 {r['p90']} ms, p99 {r['p99']} ms, min {r['min']} ms, max {r['max']} ms")
        x = out["reaction_rx_ms"]
        print(f"the same, between the events' arrival here: p50 {x['p50']} ms, "
              f"p90 {x['p90']} ms, p99 {x['p99']} ms, max {x['max']} ms")
        print(f"bot's own share (VAD detection -> uuid_break sent), mean: "
              f"{out['bot_share_ms_mean']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
