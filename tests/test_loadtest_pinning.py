"""``ivr loadtest --server-cpus/--generator-cpus``: arguments, affinity, report keys, validity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import click
import pytest
from click.testing import CliRunner

from esl_app.sim import loadmeasure as lm
from esl_app.sim import loadtest as lt

BOOT = ("import esl_app.__main__, sys\nfrom esl_app.sim.loadtest import main\n"
        "sys.exit(main(sys.argv[1:]))")
NEW_KEYS = {"server_cpus", "generator_cpus", "server_cpu_ms_per_call_second",
            "generator_idle_percent", "valid", "invalid_reason"}
linux = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
two_cpus = pytest.mark.skipif(not hasattr(os, "sched_getaffinity")
                              or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")


@linux
def test_parse_cpus_forms_and_errors():
    first = min(os.sched_getaffinity(0))
    assert lm.parse_cpus(str(first)) == {first}
    assert lm.parse_cpus(f"{first}-{first}") == {first}
    for bad in ("", "a", "0-", "-1", "1-0"):
        with pytest.raises(click.BadParameter):
            lm.parse_cpus(bad)
    with pytest.raises(click.BadParameter, match="does not exist here"):
        lm.parse_cpus("4095")


def test_parse_cpus_says_linux_only(monkeypatch):
    monkeypatch.delattr(os, "sched_setaffinity", raising=False)
    with pytest.raises(click.UsageError, match="needs Linux"):
        lm.parse_cpus("0")


@two_cpus
def test_resolve_pinning_splits_and_refuses_overlap():
    usable = sorted(os.sched_getaffinity(0))
    a, b = usable[0], usable[1]
    assert lm.resolve_pinning(None, None) == (None, None)
    srv, gen = lm.resolve_pinning(str(a), None)
    assert srv == {a} and gen == set(usable) - {a}
    srv, gen = lm.resolve_pinning(None, str(b))
    assert gen == {b} and srv == set(usable) - {b}
    with pytest.raises(click.UsageError, match="share CPU"):
        lm.resolve_pinning(f"{a},{b}", str(b))
    with pytest.raises(click.UsageError, match="at least one CPU"):
        lm.resolve_pinning(",".join(map(str, usable)), None)


def test_cli_rejects_a_cpu_that_does_not_exist():
    res = CliRunner().invoke(lt.loadtest, ["--calls", "1", "--server-cpus", "4095"])
    assert res.exit_code == 2
    assert "does not exist here" in res.output or "needs Linux" in res.output


@linux
def test_pinner_and_pin_tree_move_a_child_and_its_threads():
    cpu = min(os.sched_getaffinity(0))
    code = "import os; print(sorted(os.sched_getaffinity(0)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         preexec_fn=lt._pinner(frozenset({cpu})), check=True)
    assert json.loads(out.stdout) == [cpu]
    # a running process with a second thread: every thread is moved (taskset -a)
    code = ("import threading, time, sys\n"
            "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
            "print('up', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "up"
        assert lm.pin_tree(p.pid, {cpu}) >= 2
        tasks = os.listdir(f"/proc/{p.pid}/task")
        assert all(os.sched_getaffinity(int(t)) == {cpu} for t in tasks)
    finally:
        p.kill()
        p.wait()
    assert threading.active_count() >= 1


def test_validity_flag():
    pinned = lt.LoadConfig(server_cpus=frozenset({0}), generator_cpus=frozenset({1}))
    assert lt._validity(lt.LoadConfig(), None) == {"valid": None, "invalid_reason": None}
    assert lt._validity(pinned, 55.0)["valid"] is True
    bad = lt._validity(pinned, 4.2)
    assert bad["valid"] is False and "4.2% idle" in bad["invalid_reason"]
    assert lt._validity(pinned, None)["valid"] is False


def test_cpu_per_call_second_and_idle_of_some_cpus():
    # (t, cpu s, mem, active): 100 calls for 2 s using 0.2 s of CPU → 1 ms per call-second
    samples = [(0.0, 0.0, 0, 10), (1.0, 0.1, 0, 100), (2.0, 0.2, 0, 100), (3.0, 0.3, 0, 100)]
    assert lm._cpu_ms_per_call_second(samples, 100) == 1.0
    assert lm._cpu_ms_per_call_second(samples[:1], 100) is None
    z = [0] * len(lm._HOST_FIELDS)
    t0 = {0: list(z), 1: list(z)}
    busy_idle = [60, 0, 0, 40, 0, 0, 0, 0]  # user 60, idle 40
    t1 = {0: [90, 0, 0, 10, 0, 0, 0, 0], 1: busy_idle}
    per = [(t0, 100), (t1, 100)]
    assert lm._cpus_idle(per, 100, {1}) == 40.0
    assert lm._cpus_idle(per, 100, {0, 1}) == 25.0
    assert lm._cpus_idle(per[:1], 100, {1}) is None


@two_cpus
def test_small_pinned_run_reports_the_new_keys(tmp_path):
    usable = sorted(os.sched_getaffinity(0))
    out = subprocess.run(
        [sys.executable, "-c", BOOT, "--calls", "6", "--ramp", "0.3", "--time-scale", "0.1",
         "--workers", "1", "--clinics", "2", "--server-cpus", str(usable[0]),
         "--generator-cpus", str(usable[1]), "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert NEW_KEYS <= set(report)
    assert report["server_cpus"] == [usable[0]] and report["generator_cpus"] == [usable[1]]
    assert report["calls_completed"] == 6
    assert report["valid"] in (True, False)  # a verdict, not None, for a pinned run
    if report["valid"] is False:
        assert report["invalid_reason"]
    assert "pinned: server on CPU" in out.stderr
    # an unpinned run keeps the keys, with no verdict
    assert lt._validity(lt.LoadConfig(), 1.0)["valid"] is None
