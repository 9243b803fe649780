"""N concurrent calls through the real FreeSWITCH into `ivr serve`, on the same box.

Run: .venv/bin/python bench/bench_freeswitch_load.py --calls 150 [--duration 60] [--json]

Needs the FreeSWITCH test kit (/opt/freeswitch, /opt/fs-test); starts the switch if it
is not running (and stops it again), and a real `ivr serve` (1 worker, `--profile cloud`:
AWS latencies, and the emulated Transcribe instead of pocketsphinx, as in production
where recognition runs at AWS) with 10 synthetic clinics on a fresh SQLite database.

Each caller is the a-leg of a mod_loopback call FreeSWITCH places itself into the
rendered dialplan (the harness of tests/freeswitch), so every frame goes through the
switch's media path, mod_audio_fork and the outbound ESL socket. The caller talks over
the greeting 0.6 s into it (the barge-in, measured on FreeSWITCH's clock: speech
onset in the caller's audio → CHANNEL_EXECUTE_COMPLETE of the interrupted playback),
then answers as the load test's booking caller would: each time the bot has said
something and stopped, the caller plays its next line (espeak-ng WAVs, registered with
the emulated Transcribe as the load test does). Through the switch those lines do not
arrive bit-exact, and the emulated Transcribe recognises only exact audio: the bot
hears speech (VAD, turns, barge-in) but no words, so a call here goes greeting,
barge-in, "didn't hear anything" prompts, a failed transfer and goodbye after about
90 s, with the caller talking at each turn. The media load is a real call's; the
agent's share of ivr's CPU is missing (see docs/benchmarks.md for ivr's CPU per call
in full conversations). Calls start over --ramp seconds, and every caller calls again
until --duration has passed, so about N calls are up all along.

Reported: calls completed and failed (no answer, no greeting, the prompt did not stop,
the bot went silent for 30 s, mod_audio_fork could not connect), outcomes from the
bot's call records, barge-in p50/p99, and the CPU of FreeSWITCH, of ivr (all its
processes) and of this benchmark (the callers' driver) while every call was up, with
the box's idle.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid as uuidlib  # noqa: E402
import wave  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from freeswitch import harness  # noqa: E402

from esl_app.sim.loadcallers import _did, caller_lines, reply_for, synthetic_tenants  # noqa: E402
from esl_app.sim.loadmeasure import _HOST_FIELDS, _children, percentile  # noqa: E402

LIMIT_BARGE_P99_MS = 150.0
# the caller's audio reaches the bot sample for sample (no lossy codec between): the
# emulated Transcribe recognises a line only bit-exact, as the load test's callers
CODEC = "L16"
DEBUG = bool(os.environ.get("BENCH_DEBUG"))
QUIET_S = 0.9  # the bot has stopped talking: the caller answers
SILENT_S = 30.0  # the bot said nothing for this long: the call failed


class Events(list):
    """The inbound ESL event log, also indexed by channel (callers wait on their own)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_uuid: dict[str, list] = {}
        self.changed: dict[str, gevent.event.Event] = {}

    def append(self, ev) -> None:  # noqa: ANN001 - harness.Event
        super().append(ev)
        u = ev.uuid
        if u:
            self.by_uuid.setdefault(u, []).append(ev)
            flag = self.changed.get(u)
            if flag is not None:
                flag.set()
        if len(self) > 20000:  # callers read their own lists; the log needs no history
            del self[:10000]

    def wait(self, u: str, pred, timeout: float, start: int = 0):  # noqa: ANN001
        """The first event of channel ``u`` from index ``start`` matching ``pred``."""
        deadline = time.monotonic() + timeout
        flag = self.changed.setdefault(u, gevent.event.Event())
        i = start
        while True:
            evs = self.by_uuid.get(u, [])
            while i < len(evs):
                if pred(evs[i]):
                    return evs[i], i + 1
                i += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            flag.clear()
            flag.wait(min(left, 1.0))


class Stats:
    def __init__(self) -> None:
        self.completed = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.barge_ms: list[float] = []
        self.active = 0
        self.started = 0

    def fail(self, why: str) -> None:
        self.failed += 1
        self.errors[why] = self.errors.get(why, 0) + 1


def one_call(esl: harness.InboundEsl, ctl: harness.InboundEsl, plan: harness.DialplanInstall,
             events: Events, did: str, wavs: dict[str, tuple[Path, float]], rng: random.Random,
             stats: Stats, max_turns: int = 14) -> None:
    a = str(uuidlib.uuid4())
    vars_ = (f"origination_uuid={a},origination_caller_id_number=+1555{rng.randrange(10**7):07d},"
             "origination_caller_id_name=Load,ignore_early_media=true,originate_timeout=20,"
             f"absolute_codec_string={CODEC}")
    stats.started += 1
    stats.active += 1
    b = ""
    try:
        reply = ctl.api(f"originate {{{vars_}}}loopback/{did}/{plan.context()} &park()",
                        timeout=25)
        if not reply.startswith("+OK"):
            stats.fail(f"originate: {reply.strip()[:60]}")
            return
        b = ctl.api(f"uuid_getvar {a} other_loopback_leg_uuid").strip()
        try:
            greet, ib = events.wait(b, lambda e: e.name == "CHANNEL_EXECUTE"
                                    and e.get("Application") == "playback", 20)
        except TimeoutError:
            stats.fail("no greeting")
            return
        if DEBUG:
            print("codecs", [ctl.api(f"uuid_getvar {u} {v}").strip() for u in (a, b)
                             for v in ("read_codec", "read_rate", "write_codec")],
                  file=sys.stderr)
        gevent.sleep(0.6)
        line = reply_for("how can I help you", rng, did)
        wav, onset_ms = wavs[line]
        _, ia = _say(esl, events, a, wav, 0)
        started = events.by_uuid[a][ia - 1]
        try:
            done, ib = events.wait(b, lambda e: e.name == "CHANNEL_EXECUTE_COMPLETE"
                                   and e.get("Application-UUID") == greet.get("Application-UUID"),
                                   20, ib)
        except TimeoutError:
            stats.fail("the greeting did not stop")
            return
        stats.barge_ms.append((done.fs_time - started.fs_time) * 1000 - onset_ms)
        if any(e.name == "CUSTOM" and "connect_failed" in e.get("Event-Subclass")
               for e in events.by_uuid.get(b, ())):
            stats.fail("mod_audio_fork connect_failed")
            return
        # the conversation: answer whenever the bot has said something and stopped
        turns = 0
        while turns < max_turns:
            said, ib, ended = _bot_quiet(events, b, ib)
            if ended:
                break
            if said is None:
                stats.fail("the bot went silent")
                return
            heard = " ".join(said)
            if DEBUG:
                print(f"{b[:8]} bot: {heard}", file=sys.stderr)
            wav, _ = wavs[reply_for(heard, rng, did) if "anything else" not in heard.lower()
                          else "no thanks"]
            _, ia = _say(esl, events, a, wav, ia)
            turns += 1
        stats.completed += 1
    except Exception as exc:  # noqa: BLE001 - one broken call must not end the run
        stats.fail(f"{type(exc).__name__}: {str(exc)[:60]}")
    finally:
        stats.active -= 1
        if b and not any(e.name == "CHANNEL_HANGUP_COMPLETE" for e in events.by_uuid.get(b, ())):
            try:
                esl.api(f"uuid_kill {a} NORMAL_CLEARING")
            except Exception:  # noqa: BLE001
                pass
        for u in (a, b):
            events.by_uuid.pop(u, None)
            events.changed.pop(u, None)


def _say(esl, events: Events, a: str, wav: Path, ia: int) -> tuple[object, int]:  # noqa: ANN001
    reply = esl.api(f"uuid_broadcast {a} {wav} aleg")
    if not reply.startswith("+OK"):
        raise RuntimeError(f"uuid_broadcast: {reply.strip()[:60]}")
    return events.wait(a, lambda e: e.name == "CHANNEL_EXECUTE"
                       and e.get("Application-Data") == str(wav), 10, ia)


def _bot_quiet(events: Events, b: str, ib: int) -> tuple[list[str] | None, int, bool]:
    """(what the bot said, next index, ended): it said something and stayed quiet QUIET_S."""
    said: list[str] = []
    running: set[str] = set()
    last = time.monotonic()
    flag = events.changed.setdefault(b, gevent.event.Event())
    while True:
        evs = events.by_uuid.get(b, [])
        while ib < len(evs):
            ev = evs[ib]
            ib += 1
            if ev.name == "CHANNEL_HANGUP_COMPLETE":
                return said, ib, True
            app = ev.get("Application")
            if app not in ("playback", "speak", "bridge"):
                continue
            if ev.name == "CHANNEL_EXECUTE":
                running.add(ev.get("Application-UUID"))
                if app != "bridge":
                    said.append(harness.Caller._text(ev))
            elif ev.name == "CHANNEL_EXECUTE_COMPLETE":
                running.discard(ev.get("Application-UUID"))
            last = time.monotonic()
        now = time.monotonic()
        if said and not running and now - last >= QUIET_S:
            return said, ib, False
        if now - last > SILENT_S:
            return None, ib, False
        flag.clear()
        flag.wait(0.2)


def _speech_onset_ms(path: Path) -> float:
    return harness.speech_onset_ms(path)


def _pcm(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        return w.readframes(w.getnframes())


def _cpu_s(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def _box_ticks() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:1 + len(_HOST_FIELDS)]]


def _freeswitch_pids() -> list[int]:
    out = subprocess.run(["pidof", "freeswitch"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=150)
    ap.add_argument("--ramp", type=float, default=None, help="seconds (default calls/10)")
    ap.add_argument("--duration", type=float, default=60.0,
                    help="callers call again until this many seconds have passed")
    ap.add_argument("--clinics", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    # stopped (SIGTERM, a timeout): still remove the dialplan, the server and the switch
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
    if not harness.available():
        print(harness.SKIP_REASON, file=sys.stderr)
        return 2
    ramp = args.calls / 10 if args.ramp is None else args.ramp
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="ivr-bench-fsload-"))
    tenants = work / "tenants.yaml"
    yaml_text = synthetic_tenants(args.clinics)
    tenants.write_text(yaml_text)
    table = work / "stt-lines"
    from esl_app.sim.emulated_stt import TABLE_ENV, LineTable

    lt = LineTable(table)
    wavs: dict[str, tuple[Path, float]] = {}
    for text in caller_lines(args.clinics):
        wav = harness.speech_wav(text, lead_ms=200)
        lt.register(text, _pcm(wav))
        wavs[text] = (wav, _speech_onset_ms(wav))
    from esl_app.sim.testing import make_db

    make_db(work, yaml_text, days=21, url=f"sqlite:///{work / 'ivr.db'}")
    switch = harness.Switch()
    switch.start()
    events = Events()
    esl = harness.InboundEsl()
    esl.events = events
    esl.connect()
    ctl = harness.InboundEsl().connect()  # originates wait on this one, not the callers' commands
    ctl.api("status")
    ctl._command("noevents")
    plan = harness.DialplanInstall(esl, tag=f"l{os.getpid()}")
    bot = harness.Bot(work, tenants, days=21)
    bot.env[TABLE_ENV] = str(table)
    bot.env["IVR_PROFILE"] = "cloud"
    out: dict = {}
    try:
        log = open(bot.log, "ab")  # noqa: SIM115 - the subprocess owns it
        bot.proc = subprocess.Popen(
            [harness.IVR, "serve", "--esl", bot.esl, "--media", f"127.0.0.1:{bot.media_port}",
             "--http", f"127.0.0.1:{bot.http_port}", "--workers", str(args.workers),
             "--profile", "cloud", "--max-calls", str(args.calls * 2 + 50)],
            stdout=log, stderr=subprocess.STDOUT, env=bot.env, cwd=work)
        log.close()
        deadline = time.monotonic() + 60
        while "ivr ready " not in bot.log.read_text(errors="replace"):
            if time.monotonic() > deadline or bot.proc.poll() is not None:
                raise RuntimeError("ivr serve did not start: " + bot.log.read_text()[-2000:])
            time.sleep(0.1)
        plan.install(tenants, bot.esl)
        stats = Stats()
        warm = Stats()
        gevent.joinall([gevent.spawn(one_call, esl, ctl, plan, events, _did(i % args.clinics),
                                     wavs, random.Random(i), warm, 0) for i in range(2)])
        ivr_pids = lambda: [bot.proc.pid, *_children(bot.proc.pid)]  # noqa: E731
        fs_pids = _freeswitch_pids()
        t0 = time.monotonic()

        def caller(i: int) -> None:
            gevent.sleep(i * ramp / args.calls)
            rng = random.Random(1000 + i)
            first = True
            while first or time.monotonic() - t0 < args.duration:
                first = False
                one_call(esl, ctl, plan, events, _did(rng.randrange(args.clinics)), wavs, rng,
                         stats)

        jobs = [gevent.spawn(caller, i) for i in range(args.calls)]
        samples = []  # (t, fs cpu, ivr cpu, own cpu, box ticks, active)
        while not all(j.dead for j in jobs):
            gevent.sleep(1.0)
            samples.append((time.monotonic(), _cpu_s(fs_pids), _cpu_s(ivr_pids()),
                            sum(os.times()[:2]), _box_ticks(), stats.active))
            sys.stderr.write(f"\r[{samples[-1][0] - t0:6.1f}s] started {stats.started} active "
                             f"{stats.active} completed {stats.completed} failed "
                             f"{stats.failed}   ")
        sys.stderr.write("\n")
        wall = time.monotonic() - t0
        peak = max(s[5] for s in samples)
        win = [s for s in samples if s[5] >= 0.95 * peak]
        cpu = {}
        if len(win) >= 2:
            span = win[-1][0] - win[0][0]
            for k, i in (("freeswitch", 1), ("ivr", 2), ("bench_callers", 3)):
                cpu[k] = round((win[-1][i] - win[0][i]) / span * 100, 1)
            d = [b - a for a, b in zip(win[0][4], win[-1][4], strict=True)]
            cpu["box_idle"] = round(100 * (d[3] + d[4]) / sum(d), 1)
            cpu["steady_s"] = round(span, 1)
        outcomes: dict[str, int] = {}
        try:
            for c in json.loads(bot.ivr("calls", "list", "--json", "--limit", "10000").stdout):
                outcomes[c.get("outcome") or "?"] = outcomes.get(c.get("outcome") or "?", 0) + 1
        except Exception as exc:  # noqa: BLE001 - a diagnostic
            outcomes = {"unread": str(exc)[:80]}
        b = stats.barge_ms
        own_n = bot.metric("ivr_barge_in_reaction_seconds_count")
        own_mean = (round(bot.metric("ivr_barge_in_reaction_seconds_sum") / own_n * 1000, 2)
                    if own_n else None)
        out = {
            "calls": args.calls, "peak_concurrent": peak, "wall_s": round(wall, 1),
            "calls_started": stats.started, "calls_completed": stats.completed,
            "calls_failed": stats.failed, "errors": stats.errors,
            "barge_in_ms": {"n": len(b), "over_limit": sum(x > LIMIT_BARGE_P99_MS for x in b),
                            "p50": _r(percentile(b, 50)),
                            "p99": _r(percentile(b, 99)), "max": _r(max(b) if b else None)},
            "bot_barge_in_share_ms_mean": own_mean,
            "cpu_percent_steady": cpu, "outcomes_incl_warmup": outcomes,
            "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()[0],
            "bot_log_problems": bot.log_problems()[:5],
        }
        p99 = out["barge_in_ms"]["p99"]
        out["passed"] = (stats.failed == 0 and p99 is not None and p99 <= LIMIT_BARGE_P99_MS)
        if cpu.get("ivr"):
            out["freeswitch_per_ivr_cpu"] = round(cpu["freeswitch"] / cpu["ivr"], 2)
    finally:
        plan.remove()
        esl.close()
        ctl.close()
        bot.stop()
        switch.stop()
        if DEBUG:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
    else:
        bi, c = out["barge_in_ms"], out["cpu_percent_steady"]
        print(f"calls: {out['calls_completed']} completed, {out['calls_failed']} failed of "
              f"{out['calls_started']} (peak {out['peak_concurrent']} concurrent, "
              f"{out['wall_s']} s) {out['errors'] or ''}")
        print(f"barge-in (FreeSWITCH clock): p50 {bi['p50']} ms, p99 {bi['p99']} ms, "
              f"max {bi['max']} ms over {bi['n']} ({bi['over_limit']} over "
              f"{LIMIT_BARGE_P99_MS:g} ms)")
        print(f"CPU with every call up (100% = one core): FreeSWITCH {c.get('freeswitch')}%, "
              f"ivr {c.get('ivr')}%, callers' driver {c.get('bench_callers')}%, box idle "
              f"{c.get('box_idle')}% (over {c.get('steady_s')} s)")
        print(f"the bot's own share of a barge-in (VAD detection -> uuid_break sent), mean: "
              f"{out['bot_barge_in_share_ms_mean']} ms")
        print(f"outcomes (bot's records): {out['outcomes_incl_warmup']}")
        print("PASS" if out["passed"] else "FAIL", f"(0 failed, barge-in p99 <= "
              f"{LIMIT_BARGE_P99_MS:g} ms)")
    return 0 if out.get("passed") else 1


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


if __name__ == "__main__":
    sys.exit(main())
