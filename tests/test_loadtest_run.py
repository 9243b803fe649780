"""The load generator: a small text-mode run end to end, and its pure helpers."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

from esl_app.sim.loadcallers import _PICKS, _doctors_of, caller_lines, reply_for
from esl_app.sim.loadmeasure import percentile

BOOT = ("import esl_app.__main__, sys\nfrom esl_app.sim.loadtest import main\n"
        "sys.exit(main(sys.argv[1:]))")
KEYS = {"calls_completed", "calls_failed", "frames_sent", "frames_lost", "setup_p99_ms",
        "barge_in_p50_ms", "barge_in_p99_ms", "turn_overhead_p99_ms", "server_cpu_percent",
        "server_cpu_steady_percent",
        "rss_per_call_kb"}


def _shm_prompt_dirs() -> set[str]:
    return {n for n in (os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else ())
            if n.startswith("ivr-load-prompts-")}


def test_small_text_run_reports_json(tmp_path):
    from esl_app.providers.tts.cache import on_memory_fs

    shm_before = _shm_prompt_dirs()
    out = subprocess.run(
        [sys.executable, "-c", BOOT, "--calls", "10", "--ramp", "0.5", "--time-scale", "0.1",
         "--workers", "2", "--procs", "2", "--clinics", "3", "--emulator-nice", "5", "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert KEYS <= set(report)
    assert report["calls_completed"] == 10 and report["calls_failed"] == 0, report["errors"]
    assert report["samples"]["setup_ms"] == 10
    # set-up's parts: the connect, then the server's accept up to its first command
    first = report["esl_first_command_ms"]
    assert report["samples"]["first_ms"] == 10
    assert 0 <= first["p50"] <= first["p99"] <= report["setup_ms"]["p99"]
    assert "to the first command" in out.stderr
    assert report["samples"]["overhead_ms"] >= 30  # every turn measured
    assert report["barge_in_p50_ms"] is not None  # callers talk over the greeting
    assert report["frames_sent"] == 0 and report["frames_lost"] == 0  # text mode
    assert "started 10/10" in out.stderr  # the progress display
    assert report["unusual_calls"] == []  # every call booked: no conversation kept
    assert report["emulator_nice"] == 5
    # the server's prompt cache on tmpfs (as the README recommends), removed afterwards
    tmpfs = os.path.isdir("/dev/shm") and on_memory_fs("/dev/shm")
    assert report["prompt_cache"] == ("tmpfs" if tmpfs else "disk")
    assert _shm_prompt_dirs() <= shm_before
    # the server's own share, from its workers' histograms: one set-up per call
    assert report["server_setup_ms"]["count"] == 10  # the warm-up calls are left out
    # (it ends once connect's reply is read; the answer went out before, with connect)
    assert 0 < report["server_setup_ms"]["p50"] <= (report["setup_ms"]["p99"]
                                                    + report["esl_rtt_ms"]["p99"])
    # every turn's response, from the ESL reader taking the final to the playback command
    turns = report["server_turn_response_ms"]
    assert turns["count"] >= 30 and 0 < turns["p50"] <= report["turn_overhead_ms"]["p99"]
    # text mode: FreeSWITCH's recogniser detects the caller, not our VAD
    assert report["server_barge_in_ms"]["count"] == 0
    # the workers' event-loop lag, sampled every 20 ms all along
    lag = report["server_hub_lag_ms"]
    assert lag["count"] >= 50 and 0 <= lag["p50"] <= lag["p99"]
    assert report["server_gc_full_ms"]["count"] >= 0  # full collections, timed (if any)
    # our own part of set-up: the server side less the switch's reply to connect
    own = report["server_setup_own_ms"]
    assert own["count"] == 10 and 0 < own["p50"] <= report["server_setup_ms"]["p99"]
    # the load generator's own share: its event loops' lag and its CPU
    emu_lag = report["emulator_hub_lag_ms"]
    assert emu_lag["count"] >= 50 and 0 <= emu_lag["p50"] <= emu_lag["p99"]
    assert "emulator_cpu_steady_percent" in report
    assert "emulators' event-loop lag" in out.stderr  # the summary, on stderr with --json
    assert set(report["host_cpu_steady"] or {}) <= {
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}


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
    # the confirmation names the number called from (no question of its own for it)
    assert reply_for("Thank you, John Smith. Shall I book Friday, November 27 at 8 AM with "
                     "Dr. Lee for John Smith, at the number you're calling from, ending in "
                     "0 1 0 0?", rng, "1001") == "yes"
    # a day alone is offered times across it at once (no "morning or afternoon?")
    assert reply_for("On Friday, November 27 I have 8 AM, noon or 3 PM with Dr. Lee. Which "
                     "would you like?", rng, "1001") in _PICKS
    assert reply_for("Is there anything else I can help you with?", rng, "1001") == "no thanks"
    # offered a person, a booking caller tries again; asked for the doctor, names one
    assert reply_for("Please say yes or no. Would you like me to connect you with the front "
                     "desk?", rng, "2035") == "no"
    assert reply_for("Sorry, which doctor was that?", rng, "2035") in _doctors_of("2035")


def test_every_line_a_caller_says_is_prepared_before_the_run():
    """The emulators synthesise caller_lines() before the clock starts: a line missing
    from it would be synthesised at first use, inside the measured window."""
    prompts = ("How can I help you today?", "What day would you like to come in?",
               "I have 9 AM or 10 AM. Which would you like?", "Which one works for you?",
               "There are no openings then. Another day?", "May I have your name?",
               "Shall I book it?", "Is that right?", "Is there anything else?",
               "Sorry, I didn't catch that. Would you like to book an appointment?",
               "Something the caller has no answer for.", "Sorry, which doctor was that?",
               "I'm sorry, I don't see any open times. Would you like me to connect you with "
               "the front desk?")
    n_tenants = 50
    lines = set(caller_lines(n_tenants))
    said = {reply_for(p, random.Random(seed), f"2{i:03d}")
            for p in prompts for seed in range(40) for i in range(n_tenants)}
    said |= {"no thanks"}  # said directly before hanging up
    assert said <= lines, said - lines
    assert len(lines) == len(caller_lines(n_tenants))  # no duplicates to synthesise twice


def test_steady_cpu_is_the_median_while_every_call_is_up():
    from esl_app.sim.loadmeasure import _steady_cpu

    # (time, cumulative CPU s, memory, active): ramp, three full seconds, tail
    samples = [(0.0, 0.0, 0, 0), (1.0, 0.2, 0, 50), (2.0, 1.2, 0, 100), (3.0, 2.1, 0, 100),
               (4.0, 3.2, 0, 99), (5.0, 3.3, 0, 10)]
    assert _steady_cpu(samples, 100) == 100.0  # 100, 90, 110 -> median 100
    assert _steady_cpu(samples[:2], 0) is None


def test_histogram_quantiles_from_worker_files_interpolate_like_prometheus(tmp_path):
    """Two 'workers' write one histogram; the report reads both files, as after a run."""
    script = """
import os, sys
from esl_app.http import metrics
for v in [float(x) for x in sys.argv[1:]]:
    metrics.CALL_SETUP.observe(v)
"""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    # 100 values: 90 of 1.5 ms, 9 of 12 ms, 1 of 40 ms, split over two processes
    values = ["0.0015"] * 90 + ["0.012"] * 9 + ["0.04"]
    for part in (values[:50], values[50:]):
        subprocess.run([sys.executable, "-c", script, *part], check=True, env=env)
    from esl_app.sim.loadmeasure import _server_figures

    q = _server_figures(str(tmp_path))["setup_ms"]
    assert q["count"] == 100
    assert 1.0 < q["p50"] <= 2.0  # inside the (1, 2] ms bucket
    assert 10.0 < q["p95"] <= 15.0  # inside (10, 15]
    assert 10.0 < q["p99"] <= 15.0  # rank 99 is the last of the 12 ms values
    # less a baseline (the warm-up): only the 12 and 40 ms values are left
    from esl_app.sim.loadmeasure import _hist_buckets

    base = _hist_buckets(str(tmp_path))
    base["ivr_call_setup_seconds"] = {
        le: (90.0 if le >= 0.002 else 0.0) for le in base["ivr_call_setup_seconds"]}
    later = _server_figures(str(tmp_path), base)["setup_ms"]
    assert later["count"] == 10 and 10.0 < later["p50"] <= 15.0
    empty = _server_figures(str(tmp_path))["barge_in_ms"]
    assert empty == {"p50": None, "p95": None, "p99": None, "count": 0}


def test_host_cpu_split_is_taken_over_the_window_with_every_call_up():
    from esl_app.sim.loadmeasure import _host_split

    # cumulative ticks: user nice system idle iowait irq softirq steal
    t0 = [0, 0, 0, 0, 0, 0, 0, 0]
    t1 = [50, 0, 10, 40, 0, 0, 0, 0]  # the ramp: not counted
    t2 = [110, 0, 40, 40, 0, 0, 10, 0]  # every call up
    t3 = [170, 0, 70, 40, 0, 0, 20, 0]
    split = _host_split([(t0, 0), (t1, 50), (t2, 100), (t3, 100)], 100)
    assert split["user"] == 60.0 and split["system"] == 30.0 and split["softirq"] == 10.0
    assert split["idle"] == 0.0
    assert _host_split([(t0, 0), (None, 100)], 100) is None


def _one_text_call(tmp_path, did: str, *, seed: int):
    """One load-test caller's whole call to a local bot (text mode)."""
    from fakes.telephony import local_bot

    from esl_app.sim.loadcallers import run_one_call

    bot_gen = local_bot(tmp_path)
    bot = next(bot_gen)
    try:
        return run_one_call(bot.address, did, random.Random(seed), audio=False,
                            time_scale=0.02, stt_ms=None, tts=None, turn_timeout=10)
    finally:
        bot_gen.close()


def test_a_call_that_does_not_book_is_kept_with_its_last_words(tmp_path):
    """What went wrong in a run is read from the call's own conversation, not guessed."""
    from esl_app.sim.loadcallers import UNUSUAL_LINES, _unusual
    from esl_app.sim.loadtest import summarize

    st = _one_text_call(tmp_path, "5559999", seed=3)
    assert st.outcome != "booked"
    kept = _unusual(st, "5559999")
    assert kept["did"] == "5559999" and kept["outcome"] == st.outcome
    assert kept["said"][0].startswith("bot: ") and "not in service" in kept["said"][0]
    assert len(kept["said"]) <= UNUSUAL_LINES
    text = summarize({**_minimal_report(), "unusual_calls": [kept]})
    assert "unusual call to 5559999" in text and "not in service" in text


def _minimal_report() -> dict:
    empty = {"p50": None, "p95": None, "p99": None}
    return {"calls_completed": 0, "calls_failed": 1, "peak_concurrent": 1, "mode": "text",
            "profile": "local", "wall_s": 1.0, "frames_sent": 0, "frames_received": 0,
            "frames_lost": 0, "server_cpu_percent": 0.0, "emulator_cpu_percent": 0.0,
            "rss_per_call_kb": None, "server_mem_kb_baseline": 0, "server_mem_kb_peak": 0,
            "setup_ms": empty, "tcp_connect_ms": empty, "esl_rtt_ms": empty,
            "esl_first_command_ms": empty, "barge_in_ms": empty,
            "turn_overhead_ms": empty, "turn_ms": empty, "answer_ms": empty,
            "outcomes": {}, "errors": {}}


def test_a_long_conversation_keeps_how_it_began_and_how_it_ended():
    from esl_app.sim.loadcallers import UNUSUAL_LINES, CallStats, _unusual

    st = CallStats(outcome="caller_hangup", turns=14,
                   said=[f"line {i}" for i in range(40)])
    said = _unusual(st, "2035")["said"]
    assert said[:4] == ["line 0", "line 1", "line 2", "line 3"]
    assert said[4] == "… 24 lines …"
    assert said[5:] == [f"line {i}" for i in range(28, 40)]
    assert len(said) == UNUSUAL_LINES + 1


def test_failed_calls_fail_the_run(tmp_path):
    """Issue #30: "0 completed, 2 failed" used to exit 0."""
    out = subprocess.run(
        [sys.executable, "-c", BOOT, "--calls", "2", "--ramp", "0.1", "--server",
         "127.0.0.1:1", "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["calls_completed"] == 0 and report["calls_failed"] == 2
    assert "error: loadtest: 2 of 2 call(s) failed, none reached a clinic" in out.stderr


def test_a_server_given_up_on_goes_with_its_workers():
    """``ivr serve`` that never got ready: SIGKILL on the supervisor alone left its
    workers running for ever (the loadtest kept the box busy after it had failed)."""
    import signal
    import time

    from esl_app.sim.loadtest import _end

    # a "supervisor" that ignores SIGTERM and forks a "worker" that does too
    code = ("import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "pid = os.fork()\nif pid:\n    print(pid, flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    worker = int(proc.stdout.readline())
    t0 = time.monotonic()
    _end(proc, grace=0.5)
    assert time.monotonic() - t0 < 5
    assert proc.poll() == -signal.SIGKILL
    for _ in range(100):  # the orphan is reaped by init: wait until it is gone
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("the worker outlived _end")


def test_words_the_bot_did_not_hear_are_counted_and_the_call_kept(tmp_path, monkeypatch):
    """A load-test caller answers every question, so "I didn't hear anything" is a loss."""
    from esl_app.sim import loadcallers
    from esl_app.sim.emulator.channel import _SPEECH_FILE
    from esl_app.sim.loadcallers import _unusual
    from esl_app.sim.loadtest import summarize

    real = loadcallers._text_recogniser
    heard = []

    def dropping(channel, stt_ms, rng, ends):
        inner = real(channel, stt_ms, rng, ends)

        def recognise(text):
            heard.append(text)
            if len(heard) == 2:  # the answer after the barge-in: speech, then no result
                channel.fire("DETECTED_SPEECH", _SPEECH_FILE,
                             before=[("Speech-Type", "begin-speaking")])
                return
            inner(text)
        return recognise

    monkeypatch.setattr(loadcallers, "_text_recogniser", dropping)
    st = _one_text_call(tmp_path, "1001", seed=5)
    assert st.outcome == "booked", st.error  # the caller said it again
    assert st.missed == 1 and st.unusual
    assert any("didn't hear anything" in line for line in st.said), st.said
    kept = _unusual(st, "1001")
    text = summarize({**_minimal_report(), "calls_missed_speech": 1, "unusual_calls": [kept]})
    assert "in 1 calls the bot said it heard nothing" in text and "(words lost" in text
