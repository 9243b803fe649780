"""``ivr loadtest``: N concurrent emulated calls against ``ivr serve``, measured from outside.

Why separate processes: the callers (FreeSWITCH emulators) run in their own
processes, so the server's CPU and memory are measured alone (from ``/proc``)
and the callers never share its hub. The parent starts the server (unless
``--server``), spawns the emulator processes, shows progress on stderr and
merges their samples into one report.

Each emulated caller holds a full booking conversation with the local agent:
it answers whatever the bot asks (day, slot, name, confirmation), barges in
over the greeting, and hangs up after "anything else?". Text mode uses
FreeSWITCH-side recognition (``DETECTED_SPEECH``); ``--audio`` streams the
caller's voice over the audio fork in real-time 20 ms frames. Every line a
caller may say is synthesised (espeak-ng) and framed in each emulator process
before its clock starts: the generator's own start-up work stays out of the
measured window.

What is measured, all on the emulator's clock (``wire.Command.at``):

- set-up: TCP connect starts → the bot's ``answer`` arrives; two parts of it are
  reported apart: ``tcp_connect_ms`` (the connect itself) and
  ``esl_first_command_ms`` (connected → the bot's ``connect`` arrives: the
  server's accept, its handler's start and its first write, which carries
  ``myevents``, ``linger`` and the ``answer`` too);
- ESL round trip: ``connect`` arrives → the first command that waited for the
  switch's reply arrives (the ``api uuid_setvar`` that names the channel: the
  channel data, and the tenant lookup);
- barge-in: the caller's speech onset (text: ``begin-speaking`` fired; audio:
  first audible frame sent) → ``uuid_break`` arrives;
- turn overhead: the final result is delivered (text: ``detected-speech``
  fired) → the bot's first ``playback``/``speak`` arrives; with ``--profile
  local`` and FreeSWITCH speech this is our own work per turn;
- turn latency: end of the caller's speech → first playback (includes the
  emulated recogniser latency of the cloud profile); that first audio may be a
  cached acknowledgement ("Okay."), so ``answer_ms`` is also reported: end of
  the caller's speech → first playback of the agent's actual answer (neither
  an acknowledgement nor the filler);
- frames: sent, and lost = frames that left more than 100 ms behind their
  real-time slot (a real mod_audio_fork buffer would have overrun).
  ``frames_received`` is sent − lost: the server does not report what it read,
  so frames dropped inside the server would not show here.

Also reported, to tell the server's share of those times from the rest (the
network, the switch, and on one machine the load generator's own scheduling):
``server_setup_ms`` (ESL accept → ``answer`` written; it holds the one round trip
for the channel data, so the switch's reply time too), ``server_barge_in_ms``
(our VAD detects the caller → ``uuid_break`` written) and
``server_turn_response_ms`` (the final transcript received → the reply's first
playback command written: with ``--profile local --tts freeswitch``, our own work
per turn without the two process wake-ups the outside figure includes), from the
workers' Prometheus histograms (bucket-interpolated); ``server_setup_own_ms``, the
server side of set-up less its wait for the switch's reply to ``connect``; and
``host_cpu_steady``, the whole machine's CPU by kind while every call was up (idle
near 0: saturated).

The load generator's own share: ``emulator_cpu_steady_percent`` (its processes'
CPU while every call was up) and ``emulator_hub_lag_ms``, how late its event loops
ran a due timer. On one machine that lag is in every outside figure: a frame sent
late, a command read late and so timestamped late.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from esl_app.sim.loadcallers import UNUSUAL_KEPT, _did, run_one_call, synthetic_tenants
from esl_app.sim.loadmeasure import (
    GENERATOR_IDLE_MIN,
    _children,
    _cpu_list,
    _cpu_ms_per_call_second,
    _cpu_pct,
    _cpus_idle,
    _hist_buckets,
    _host_split,
    _host_ticks,
    _pcts,
    _percpu_ticks,
    _pids_listening,
    _proc_sample,
    _server_figures,
    _steady_cpu,
    pin_tree,
    resolve_pinning,
)

__all__ = ["LoadConfig", "loadtest", "run_loadtest", "summarize"]

_BOOTSTRAP = ("import esl_app.__main__, sys\n"
              "from {mod} import {fn}\n"
              "sys.exit({fn}(sys.argv[1:]))")


@dataclass
class LoadConfig:
    """A load-test run."""

    calls: int = 10
    ramp: float = 5.0
    duration: float = 0.0
    audio: bool = False
    profile: str = "local"
    server: tuple[str, int] | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    procs: int = 1
    time_scale: float = 1.0
    tts: str | None = None
    seed: int = 1
    tenants: int = 50
    db_url: str | None = None  # default: a fresh SQLite file in the temp dir
    progress: bool = True
    warmup: int = 0  # unmeasured calls first (imports, caches): default 2 per worker
    emulator_nice: int = 0  # niceness of the emulator processes (0: same as the server)
    prompt_cache: str = "memory"  # the started server's var/prompts: tmpfs ("memory") or disk
    server_cpus: frozenset[int] | None = None  # pinned run: the server's workers here
    generator_cpus: frozenset[int] | None = None  # … and every emulator process here

    @property
    def pinned(self) -> bool:
        return self.server_cpus is not None


def _pinner(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that puts the child (and all it starts) on ``cpus``."""
    if cpus is None:
        return None
    wanted = set(cpus)
    return lambda: os.sched_setaffinity(0, wanted)


def _warm_up(address: tuple[str, int], cfg: LoadConfig) -> None:
    """A few short unmeasured calls so first-call imports and cold caches are not counted."""
    import gevent

    jobs = [gevent.spawn(run_one_call, address, did, random.Random(i), audio=False,
                         time_scale=0.05, stt_ms=None, tts=cfg.tts, max_turns=3, barge=False)
            for i in range(cfg.warmup) for did in (_did(0), _did(1))]
    gevent.joinall(jobs, timeout=60)


@dataclass
class _Server:
    proc: Any
    esl: tuple[str, int]
    pid: int
    tmp: Any
    log_tail: list[str]
    problems: dict[str, int] = field(default_factory=dict)  # warning/error kind -> count
    prompts: Any = None  # the tmpfs directory var/prompts points to, if any
    metrics_dir: str = ""  # the workers' PROMETHEUS_MULTIPROC_DIR
    hist_base: dict[str, dict[float, float]] = field(default_factory=dict)  # after warm-up


def _start_server(cfg: LoadConfig) -> _Server:
    """``ivr serve`` on free ports with a fresh SQLite db in a temp dir."""
    import gevent
    from gevent import subprocess

    from esl_app.config.settings import sqlite_url
    from esl_app.sim.testing import make_db

    tmp = tempfile.TemporaryDirectory(prefix="ivr-load-")
    tenants_path = str(Path(tmp.name) / "tenants.yaml")
    yaml_text = synthetic_tenants(cfg.tenants)
    Path(tenants_path).write_text(yaml_text)
    db = cfg.db_url or sqlite_url(Path(tmp.name) / "ivr-test.db")
    make_db(tmp.name, yaml_text, days=21, url=db)
    with contextlib.suppress(Exception):
        from esl_app.db import database

        database().close()
    # `ivr serve`; the prompt cache (./var/prompts) starts cold in the temp dir, on tmpfs
    # unless asked for a disk: the layout the README recommends for a busy box
    prompts = _prompts_on_tmpfs(Path(tmp.name)) if cfg.prompt_cache == "memory" else None
    env = dict(os.environ, IVR_PROFILE=cfg.profile, IVR_PROFILE_SEED=str(cfg.seed))
    # the workers' metrics in files we can read once they stop (server-side latencies)
    prom = Path(tmp.name) / "metrics"
    prom.mkdir()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    if cfg.audio:  # the cloud profile's emulated Transcribe learns caller lines here
        from esl_app.sim.emulated_stt import TABLE_ENV

        env[TABLE_ENV] = str(Path(tmp.name) / "stt-lines")
    args = [sys.executable, "-m", "esl_app", "--db", db, "--tenants", tenants_path, "serve",
            "--workers", str(cfg.workers), "--esl", "127.0.0.1:0", "--media", "127.0.0.1:0",
            "--http", "127.0.0.1:0", "--drain-timeout", "5",
            "--max-calls", str(max(2000, cfg.calls + 100))]
    # pinned: the supervisor before it forks, so every worker and thread inherits the CPUs
    # a session of its own: a server that never got ready goes with all its workers
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env,
                            cwd=tmp.name, preexec_fn=_pinner(cfg.server_cpus),
                            start_new_session=True)
    tail: list[str] = []
    problems: dict[str, int] = {}
    ready: dict[str, Any] = {}
    got = gevent.event.Event()

    def read() -> None:
        from esl_app.runtime.workers import READY_PREFIX

        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line.startswith(READY_PREFIX):
                ready.update(json.loads(line[len(READY_PREFIX):]))
                got.set()
            else:
                tail.append(line)
                del tail[:-50]
                kind = _log_problem(line)
                if kind:
                    problems[kind] = problems.get(kind, 0) + 1
        got.set()

    gevent.spawn(read)
    if not got.wait(60) or not ready:
        _end(proc, grace=5.0)
        raise click.ClickException("the server did not start: " + " | ".join(tail[-5:]))
    return _Server(proc, (ready["esl"][0], ready["esl"][1]), ready["pid"], tmp, tail, problems,
                   prompts=prompts, metrics_dir=str(prom))


def _prompts_on_tmpfs(root: Path) -> Any:
    """``root/var/prompts`` as a link into a fresh directory on /dev/shm (None: no tmpfs)."""
    from esl_app.providers.tts.cache import on_memory_fs

    if not os.path.isdir("/dev/shm") or not on_memory_fs("/dev/shm"):
        return None
    shm = tempfile.TemporaryDirectory(prefix="ivr-load-prompts-", dir="/dev/shm")
    (root / "var").mkdir(exist_ok=True)
    (root / "var" / "prompts").symlink_to(shm.name)
    return shm


_LOG_LINE = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ([\w.]+): (.*)$")
_VARYING = re.compile(r"\b(?:[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{8,}|\d+)\b")


def _log_problem(line: str) -> str | None:
    """``LEVEL logger: message`` with call ids and numbers blanked, for a warning/error line.

    Why: a failed call in a load run is explained by the server's log, which lives in
    a temp dir that is gone when the report is read; counting kinds keeps it short.
    """
    m = _LOG_LINE.match(line)
    if m is None:
        return None
    return f"{m.group(1)} {m.group(2)}: {_VARYING.sub('#', m.group(3))[:160]}"


def _end(proc: Any, grace: float) -> None:
    """SIGTERM ``ivr serve`` (it drains its workers), then SIGKILL its whole session.

    Killing the supervisor alone would leave its workers running, orphaned.
    """
    import signal

    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(Exception):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of it: workers that hung
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)


def _stop_server(srv: _Server) -> dict[str, dict[str, float | None]]:
    """Stop it; returns the server-side times its workers recorded (``_server_figures``)."""
    _end(srv.proc, grace=30.0)
    inside: dict[str, dict[str, float | None]] = {}
    try:
        inside = _server_figures(srv.metrics_dir, srv.hist_base)
    except Exception:  # noqa: BLE001 - a diagnostic: never fail the run for it
        sys.stderr.write("loadtest: could not read the server's metrics files\n")
    srv.tmp.cleanup()
    if srv.prompts is not None:
        srv.prompts.cleanup()
    return inside


def run_loadtest(cfg: LoadConfig, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the test; returns the report (the ``--json`` object)."""
    from esl_app.sim.latency import get_profile

    prof = get_profile(cfg.profile)
    echo = echo or (lambda s: None)
    own_affinity = None
    if cfg.pinned:
        # this process (progress, sampling, the warm-up callers) is the generator's too
        own_affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, set(cfg.generator_cpus or ()))
    try:
        return _run_loadtest(cfg, prof)
    finally:
        if own_affinity is not None:
            os.sched_setaffinity(0, own_affinity)


def _run_loadtest(cfg: LoadConfig, prof: Any) -> dict[str, Any]:
    import gevent
    from gevent import subprocess

    srv = None
    if cfg.server is None:
        srv = _start_server(cfg)
        address = srv.esl
        server_pids = lambda: [srv.pid, *_children(srv.pid)]  # noqa: E731
    else:
        address = cfg.server
        found = _pids_listening(address[1])
        server_pids = lambda: found  # noqa: E731
    if cfg.server_cpus is not None:  # also threads that exist already (a running server)
        for pid in server_pids():
            pin_tree(pid, cfg.server_cpus)
    try:
        gevent.sleep(0.5)
        if cfg.warmup:
            _warm_up(address, cfg)
            if srv is not None:  # the server-side figures leave the warm-up calls out
                with contextlib.suppress(Exception):
                    srv.hist_base = _hist_buckets(srv.metrics_dir)
        cpu0, mem0 = _proc_sample(server_pids())
        procs = max(1, min(cfg.procs, cfg.calls))
        children = []
        results: list[dict[str, Any]] = []
        progress: dict[int, dict[str, int]] = {}
        t_start = time.monotonic()
        for k in range(procs):
            ccfg = {"host": address[0], "port": address[1], "seed": cfg.seed * 100 + k,
                    "calls_total": cfg.calls, "indices": list(range(k, cfg.calls, procs)),
                    "ramp": cfg.ramp, "duration": cfg.duration, "audio": cfg.audio,
                    "time_scale": cfg.time_scale, "tts": cfg.tts, "tenants": cfg.tenants,
                    "stt_ms": list(prof.stt_final_ms) if prof.stt_final_ms and not cfg.audio
                    else None,
                    "stt_table": (str(Path(srv.tmp.name) / "stt-lines") if srv is not None
                                  else os.environ.get("IVR_EMULATED_STT_TABLE"))
                    if cfg.audio else None}
            nice = ["nice", "-n", str(cfg.emulator_nice)] if cfg.emulator_nice else []
            p = subprocess.Popen(
                [*nice, sys.executable, "-c", _BOOTSTRAP.format(mod="esl_app.sim.loadcallers",
                                                                fn="_child_main"),
                 json.dumps(ccfg)],
                stdout=subprocess.PIPE, preexec_fn=_pinner(cfg.generator_cpus))
            children.append(p)

        def reader(k: int, p: Any) -> None:
            for raw in p.stdout:
                with contextlib.suppress(ValueError):
                    obj = json.loads(raw)
                    if "progress" in obj:
                        progress[k] = obj["progress"]
                    elif "result" in obj:
                        results.append(obj["result"])

        readers = [gevent.spawn(reader, k, p) for k, p in enumerate(children)]
        peak_active = 0
        peak_mem = mem0
        samples: list[tuple[float, float, float, int]] = []
        host: list[tuple[list[int] | None, int]] = []
        percpu: list[tuple[dict[int, list[int]] | None, int]] = []
        emu_samples: list[tuple[float, float, float, int]] = []
        emu_cpu = 0.0
        while not all(r.dead for r in readers):
            gevent.sleep(1.0)
            cpu, mem = _proc_sample(server_pids())
            emu_cpu = max(emu_cpu, _proc_sample([p.pid for p in children], memory=False)[0])
            active = sum(v.get("active", 0) for v in progress.values())
            samples.append((time.monotonic(), cpu, mem, active))
            emu_samples.append((samples[-1][0], emu_cpu, 0.0, active))
            host.append((_host_ticks(), active))
            percpu.append((_percpu_ticks(), active))
            if active >= peak_active:
                peak_active = active
                peak_mem = max(peak_mem, mem)
            done = sum(v.get("done", 0) for v in progress.values())
            failed = sum(v.get("failed", 0) for v in progress.values())
            started = sum(v.get("started", 0) for v in progress.values())
            if cfg.progress and len(samples) >= 2:
                pct = _cpu_pct(samples[-2], samples[-1])
                at = samples[-1][0] - t_start
                sys.stderr.write(
                    f"\r[{at:6.1f}s] started {started}/{cfg.calls} active {active} "
                    f"done {done} failed {failed} | server cpu {pct:5.1f}% "
                    f"mem {mem / 1024:7.1f} MB   ")
                sys.stderr.flush()
        for p in children:
            p.wait()
        t_end = time.monotonic()
        cpu1, _ = _proc_sample(server_pids(), memory=False)
        if cfg.progress:
            sys.stderr.write("\n")
    finally:
        inside = _stop_server(srv) if srv is not None else {}
    server_log: dict[str, int] = dict(srv.problems) if srv is not None else {}
    merged: dict[str, Any] = {"setup_ms": [], "connect_ms": [], "first_ms": [], "rtt_ms": [],
                              "barge_ms": [], "overhead_ms": [], "turn_ms": [], "answer_ms": []}
    emu_lags: list[float] = []
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    unusual: list[dict[str, Any]] = []
    completed = failed = sent = lost = missed = 0
    for r in results:
        completed += r["calls_completed"]
        missed += r.get("calls_missed_speech", 0)
        failed += r["calls_failed"]
        sent += r["frames_sent"]
        lost += r["frames_lost"]
        for k in merged:
            merged[k].extend(r.get(k, ()))
        emu_lags.extend(r.get("hub_lag_ms", ()))
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
        unusual.extend(r.get("unusual", ()))
    failed += cfg.calls - completed - failed if cfg.duration == 0 else 0
    wall = max(1e-6, t_end - t_start)
    steady = _steady_cpu(samples, peak_active)
    report: dict[str, Any] = {
        "calls": cfg.calls, "mode": "audio" if cfg.audio else "text", "profile": cfg.profile,
        "workers": cfg.workers if cfg.server is None else None,
        "calls_completed": completed, "calls_failed": failed,
        "peak_concurrent": peak_active, "wall_s": round(wall, 1),
        "frames_sent": sent, "frames_received": sent - lost, "frames_lost": lost,
        "server_cpu_percent": round((cpu1 - cpu0) / wall * 100, 1),
        "server_cpu_steady_percent": steady,
        "host_cpu_steady": _host_split(host, peak_active),
        "server_setup_ms": inside.get("setup_ms"),
        "server_setup_own_ms": inside.get("setup_own_ms"),
        "server_barge_in_ms": inside.get("barge_in_ms"),
        "server_turn_response_ms": inside.get("turn_response_ms"),
        "server_hub_lag_ms": inside.get("hub_lag_ms"),
        "server_gc_full_ms": inside.get("gc_full_ms"),
        "emulator_cpu_percent": round(emu_cpu / wall * 100, 1),
        "emulator_cpu_steady_percent": _steady_cpu(emu_samples, peak_active),
        "emulator_hub_lag_ms": {**_pcts(emu_lags), "count": len(emu_lags)},
        "emulator_nice": cfg.emulator_nice,
        "prompt_cache": (None if srv is None else "tmpfs" if srv.prompts is not None
                         else "disk"),
        "server_mem_kb_baseline": round(mem0),
        "server_mem_kb_peak": round(peak_mem),
        "rss_per_call_kb": (round((peak_mem - mem0) / peak_active, 1) if peak_active
                            else None),
        "setup_ms": _pcts(merged["setup_ms"]), "esl_rtt_ms": _pcts(merged["rtt_ms"]),
        "tcp_connect_ms": _pcts(merged["connect_ms"]),
        "esl_first_command_ms": _pcts(merged["first_ms"]),
        "barge_in_ms": _pcts(merged["barge_ms"]),
        "turn_overhead_ms": _pcts(merged["overhead_ms"]),
        "turn_ms": _pcts(merged["turn_ms"]),
        "answer_ms": _pcts(merged["answer_ms"]),
        "samples": {k: len(v) for k, v in merged.items()},
        "outcomes": outcomes, "errors": errors,
        "calls_missed_speech": missed,
        "unusual_calls": unusual[:UNUSUAL_KEPT],
        "server_log": dict(sorted(server_log.items(), key=lambda kv: -kv[1])[:20]),
    }
    # pinned: the server's cost per call, and whether the generator kept up on its own CPUs
    gen_idle = (_cpus_idle(percpu, peak_active, cfg.generator_cpus)
                if cfg.generator_cpus is not None else None)
    report.update({
        "server_cpus": sorted(cfg.server_cpus) if cfg.server_cpus is not None else None,
        "generator_cpus": (sorted(cfg.generator_cpus) if cfg.generator_cpus is not None
                           else None),
        "server_cpu_ms_per_call_second": _cpu_ms_per_call_second(samples, peak_active),
        "server_cpus_idle_percent": (_cpus_idle(percpu, peak_active, cfg.server_cpus)
                                     if cfg.server_cpus is not None else None),
        "generator_idle_percent": gen_idle,
        **_validity(cfg, gen_idle),
    })
    report["setup_p99_ms"] = report["setup_ms"]["p99"]
    report["barge_in_p50_ms"] = report["barge_in_ms"]["p50"]
    report["barge_in_p99_ms"] = report["barge_in_ms"]["p99"]
    report["turn_overhead_p99_ms"] = report["turn_overhead_ms"]["p99"]
    report["turn_p50_ms"] = report["turn_ms"]["p50"]
    report["answer_p50_ms"] = report["answer_ms"]["p50"]
    return report


def _validity(cfg: LoadConfig, gen_idle: float | None) -> dict[str, Any]:
    """``valid``: a pinned run counts only if its generator kept ``GENERATOR_IDLE_MIN`` idle.

    Why: a generator short of CPU sends frames late and reads commands late, and
    its lateness would be charged to the server. Unpinned runs (``valid`` None)
    share the cores and are judged by the box's idle in ``host_cpu_steady``.
    """
    if not cfg.pinned:
        return {"valid": None, "invalid_reason": None}
    if gen_idle is None:
        return {"valid": False,
                "invalid_reason": "the generator's idle was not measured (no steady window)"}
    if gen_idle < GENERATOR_IDLE_MIN:
        return {"valid": False,
                "invalid_reason": f"the load generator's CPUs kept {gen_idle}% idle, under "
                                  f"{GENERATOR_IDLE_MIN:g}%: it, not the server, may set "
                                  "the figures"}
    return {"valid": True, "invalid_reason": None}


def summarize(r: dict[str, Any]) -> str:
    """The report as a few human-readable lines."""
    def row(name: str, d: dict[str, Any]) -> str:
        return (f"  {name:28} p50 {_f(d['p50'])}  p95 {_f(d['p95'])}  p99 {_f(d['p99'])} ms")

    lines = [
        f"calls: {r['calls_completed']} completed, {r['calls_failed']} failed "
        f"(peak {r['peak_concurrent']} concurrent, {r['mode']} mode, profile {r['profile']}, "
        f"{r['wall_s']} s)",
        f"frames: {r['frames_sent']} sent, {r['frames_received']} received, "
        f"{r['frames_lost']} lost",
        f"server: {r['server_cpu_percent']}% CPU over the run, "
        f"{_f(r.get('server_cpu_steady_percent'))}% with every call up (100% = one core; emulators "
        f"{r['emulator_cpu_percent']}% over the run, "
        f"{_f(r.get('emulator_cpu_steady_percent'))}% with every call up), "
        f"{_f(r['rss_per_call_kb'])} kB per call (PSS {r['server_mem_kb_baseline'] // 1024} → "
        f"{r['server_mem_kb_peak'] // 1024} MB)",
        row("set-up (connect → answer)", r["setup_ms"]),
        row("  of it, TCP connect", r["tcp_connect_ms"]),
        row("  then, to the first command", r["esl_first_command_ms"]),
        row("ESL round trip", r["esl_rtt_ms"]),
        row("barge-in (onset → break)", r["barge_in_ms"]),
        row("turn overhead (final → play)", r["turn_overhead_ms"]),
        row("turn (end of speech → play)", r["turn_ms"]),
        row("answer (speech end → answer)", r["answer_ms"]),
    ]
    for key, name in (("server_setup_ms", "server side of set-up"),
                      ("server_setup_own_ms", "  of it, our own work"),
                      ("server_barge_in_ms", "server side of barge-in"),
                      ("server_turn_response_ms", "server side of final → play"),
                      ("server_hub_lag_ms", "server event-loop lag"),
                      ("server_gc_full_ms", "server full collections"),
                      ("emulator_hub_lag_ms", "emulators' event-loop lag")):
        if r.get(key) and r[key].get("count"):
            lines.append(row(name, r[key]))
    if r.get("server_cpus") is not None:
        lines.append(
            f"pinned: server on CPU {_cpu_list(r['server_cpus'])} "
            f"({_f(r.get('server_cpu_ms_per_call_second'))} ms CPU per call-second, its CPUs "
            f"{_f(r.get('server_cpus_idle_percent'))}% idle), generator on CPU "
            f"{_cpu_list(r['generator_cpus'])} ({_f(r.get('generator_idle_percent'))}% idle)"
            + ("" if r.get("valid") else f"; NOT VALID: {r.get('invalid_reason')}"))
    elif r.get("server_cpu_ms_per_call_second") is not None:
        lines.append(f"server CPU per call-second: "
                     f"{r['server_cpu_ms_per_call_second']} ms (not pinned)")
    host = r.get("host_cpu_steady")
    if host:
        lines.append("machine, every call up: " + ", ".join(
            f"{k} {v}%" for k, v in host.items() if v))
    lines += [
        "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items())),
    ]
    if r["errors"]:
        lines.append("errors: " + "; ".join(f"{k} ×{v}" for k, v in r["errors"].items()))
    if r.get("calls_missed_speech"):
        lines.append(f"caller's words lost: in {r['calls_missed_speech']} calls the bot said it "
                     "heard nothing")
    for kind, n in list(r.get("server_log", {}).items())[:5]:
        lines.append(f"server log: {n} × {kind}")
    for u in r.get("unusual_calls", ())[:3]:
        why = u["error"] or ("words lost" if u["outcome"] == "booked" else u["outcome"])
        lines.append(f"unusual call to {u['did']} ({why}, {u['turns']} turns), last words: "
                     + " | ".join(u["said"][-4:]))
    return "\n".join(lines)


def _f(v: Any) -> str:
    return "-" if v is None else (f"{v:8.1f}" if isinstance(v, float) else f"{v:>8}")


def _hostport(value: str | None) -> tuple[str, int] | None:
    from esl_app.config.settings import parse_hostport

    if not value:
        return None
    try:
        return parse_hostport(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--calls", type=click.IntRange(1, 100000), required=True,
              help="Concurrent callers.")
@click.option("--ramp", type=float, default=None,
              help="Seconds over which the calls start (default: calls/100).")
@click.option("--duration", type=float, default=0.0, show_default=True,
              help="Keep every caller calling again for this long (0: one call each).")
@click.option("--audio", is_flag=True, help="Stream the caller's voice over the audio fork.")
@click.option("--profile", type=click.Choice(["local", "cloud", "cloud-stt"]),
              default="local",
              show_default=True, help="Provider latency profile of the started server.")
@click.option("--server", default=None, help="HOST:PORT of a running server's ESL port.")
@click.option("--workers", type=click.IntRange(1, 64), default=os.cpu_count() or 1,
              show_default=True, help="Worker processes of the started server.")
@click.option("--procs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Emulator processes.")
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="Emulated media time (1.0: prompts last as long as spoken).")
@click.option("--tts", default=None,
              help="Force the bot's TTS (ivr_tts), e.g. 'freeswitch' to leave synthesis out.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--server-db", "db_url", default=None,
              help="Database for the started server (default: fresh SQLite in a temp dir); "
                   "its tables get the synthetic clinics and their slots. Not the global "
                   "--db: a load test never writes into the deployment's database.")
@click.option("--clinics", "n_tenants", type=click.IntRange(1, 999), default=50,
              show_default=True,
              help="Synthetic clinics the callers dial, DIDs 2000, 2001, … With --server "
                   "the running server must serve those DIDs: a call it rejects (not in "
                   "service) counts as failed.")
@click.option("--warmup", type=click.IntRange(0, 1000), default=None,
              help="Unmeasured warm-up calls per tenant first (default: 2 per worker).")
@click.option("--emulator-nice", type=click.IntRange(0, 19), default=0, show_default=True,
              help="Run the emulator processes at this niceness: with both on one machine, "
                   "the server gets the CPU first, as it would on a box of its own "
                   "(an emulator that falls behind shows as lost frames).")
@click.option("--prompt-cache", type=click.Choice(["memory", "disk"]), default="memory",
              show_default=True,
              help="Where the started server's prompt cache lives: tmpfs (/dev/shm, when "
                   "there is one), where a miss is written inline, or the temp dir's disk, "
                   "where it is written on a thread.")
@click.option("--server-cpus", default=None, metavar="CPUS",
              help="Pin the server's workers and all their threads to these CPUs (e.g. 0, "
                   "0-1, 0,2; Linux); the emulators go on the others unless "
                   "--generator-cpus says. Reports the server's CPU per call-second and "
                   f"whether the generator kept {GENERATOR_IDLE_MIN:g}% idle (valid).")
@click.option("--generator-cpus", default=None, metavar="CPUS",
              help="Pin every emulator process (and this one) to these CPUs; the server "
                   "goes on the others unless --server-cpus says.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line on stdout.")
@click.pass_context
def loadtest(ctx: click.Context, calls: int, ramp: float | None, duration: float, audio: bool,
             profile: str, server: str | None, workers: int, procs: int, time_scale: float,
             tts: str | None, seed: int, db_url: str | None, n_tenants: int,
             warmup: int | None, emulator_nice: int, prompt_cache: str,
             server_cpus: str | None, generator_cpus: str | None,
             as_json: bool) -> None:
    """Drive N concurrent emulated calls through full conversations and measure the server."""
    srv_cpus, gen_cpus = resolve_pinning(server_cpus, generator_cpus)
    cfg = LoadConfig(calls=calls, ramp=calls / 100.0 if ramp is None else ramp,
                     duration=duration, audio=audio, profile=profile,
                     server=_hostport(server), workers=workers, procs=procs,
                     time_scale=time_scale, tts=tts, seed=seed,
                     tenants=n_tenants, db_url=db_url,
                     warmup=2 * workers if warmup is None else warmup,
                     emulator_nice=emulator_nice, prompt_cache=prompt_cache,
                     server_cpus=srv_cpus, generator_cpus=gen_cpus)
    report = run_loadtest(cfg)
    click.echo(summarize(report), err=as_json)
    if as_json:
        click.echo(json.dumps(report))
    failed, done = report.get("calls_failed", 0), report.get("calls_completed", 0)
    if failed or not done:
        click.echo(f"error: loadtest: {failed} of {failed + done} call(s) failed"
                   + ("" if done else ", none reached a clinic"), err=True)
        ctx.exit(1)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -c 'import esl_app.__main__; …'``)."""
    try:
        rv = loadtest.main(args=argv, prog_name="ivr loadtest", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return 1
    return rv if isinstance(rv, int) else 0  # ctx.exit(n) comes back as n here
