"""The load generator: a small text-mode run end to end, and its pure helpers."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from esl_app.loadtest import percentile, reply_for

BOOT = ("import esl_app.__main__, sys\nfrom esl_app.loadtest import main\n"
        "sys.exit(main(sys.argv[1:]))")
KEYS = {"calls_completed", "calls_failed", "frames_sent", "frames_lost", "setup_p99_ms",
        "barge_in_p50_ms", "barge_in_p99_ms", "turn_overhead_p99_ms", "server_cpu_percent",
        "server_cpu_steady_percent",
        "rss_per_call_kb"}


def test_small_text_run_reports_json(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", BOOT, "--calls", "10", "--ramp", "0.5", "--time-scale", "0.1",
         "--workers", "2", "--procs", "2", "--tenants", "3", "--emulator-nice", "5", "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert KEYS <= set(report)
    assert report["calls_completed"] == 10 and report["calls_failed"] == 0, report["errors"]
    assert report["samples"]["setup_ms"] == 10
    assert report["samples"]["overhead_ms"] >= 30  # every turn measured
    assert report["barge_in_p50_ms"] is not None  # callers talk over the greeting
    assert report["frames_sent"] == 0 and report["frames_lost"] == 0  # text mode
    assert "started 10/10" in out.stderr  # the progress display
    assert report["emulator_nice"] == 5


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def test_caller_answers_what_the_bot_asks():
    rng = random.Random(3)
    assert reply_for("How can I help you today?", rng, "1001").startswith("I'd like to book")
    assert reply_for("What day would you like to come in?", rng, "1001")
    assert reply_for("May I have your first and last name?", rng, "1001").count(" ") == 1
    assert reply_for("Shall I book Tuesday at 9 AM?", rng, "1001") == "yes"
    assert reply_for("Is there anything else I can help you with?", rng, "1001") == "no thanks"


def test_steady_cpu_is_the_median_while_every_call_is_up():
    from esl_app.loadtest import _steady_cpu

    # (time, cumulative CPU s, memory, active): ramp, three full seconds, tail
    samples = [(0.0, 0.0, 0, 0), (1.0, 0.2, 0, 50), (2.0, 1.2, 0, 100), (3.0, 2.1, 0, 100),
               (4.0, 3.2, 0, 99), (5.0, 3.3, 0, 10)]
    assert _steady_cpu(samples, 100) == 100.0  # 100, 90, 110 -> median 100
    assert _steady_cpu(samples[:2], 0) is None
