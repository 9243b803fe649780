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

- set-up: TCP connect starts → the bot's ``answer`` arrives;
- ESL round trip: ``connect`` arrives → the bot's ``answer`` arrives (the bot
  pipelines ``myevents``/``linger`` after ``connect``; the answer is the first
  command that waits for a reply, the channel data, and the tenant lookup);
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
import gc
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

__all__ = ["LoadConfig", "loadtest", "percentile", "run_loadtest", "summarize"]

LATE_FRAME_S = 0.100  # the emulator counts late frames with the same bound (audio.LATE_S)
_BOOTSTRAP = ("import esl_app.__main__, sys\n"
              "from {mod} import {fn}\n"
              "sys.exit({fn}(sys.argv[1:]))")

# the callers: what they say depends on what the bot just asked
_DOCTORS = (("smith", "Sarah Smith"), ("patel", "Raj Patel"), ("johnson", "Emily Johnson"),
            ("garcia", "Luis Garcia"), ("nguyen", "Anh Nguyen"), ("okafor", "Chidi Okafor"))
_ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
_VOICES = ("Joanna", "Matthew", "Salli", "Joey")


def _did(i: int) -> str:
    return f"2{i:03d}"


def synthetic_tenants(count: int) -> str:
    """tenants.yaml text for ``count`` clinics (DIDs 2000, 2001, …), two doctors each.

    Why: a thousand callers of two clinics all fight for the same few slots,
    which no deployment sees; spread over many clinics, as in production.
    """
    out = ["tenants:"]
    for i in range(count):
        a, b = _DOCTORS[i % len(_DOCTORS)], _DOCTORS[(i + 1) % len(_DOCTORS)]
        out += [
            f"  - id: clinic{i:03d}",
            f"    name: Clinic {i:03d}",
            f'    dids: ["{_did(i)}"]',
            f"    timezone: {_ZONES[i % len(_ZONES)]}",
            "    language: en-US",
            f"    voice: {_VOICES[i % len(_VOICES)]}",
            f"    greeting: Thank you for calling Clinic {i:03d}.",
            "    hours:",
            '      mon-fri: "08:00-17:00"',
            "    slot_minutes: 30",
            "    handoff: user/1000",
            "    agent: local",
            "    doctors:",
            f"      - {{id: {a[0]}, name: Dr. {a[1]}, specialty: family medicine}}",
            f"      - {{id: {b[0]}, name: Dr. {b[1]}, specialty: pediatrics}}",
        ]
    return "\n".join(out) + "\n"


def _doctors_of(did: str) -> tuple[str, str]:
    i = int(did[1:]) if did.startswith("2") and did[1:].isdigit() else 0
    a, b = _DOCTORS[i % len(_DOCTORS)], _DOCTORS[(i + 1) % len(_DOCTORS)]
    return (f"Dr. {a[1].split()[1]}", f"Dr. {b[1].split()[1]}")

_DAYS = ("next Tuesday morning", "Wednesday afternoon", "Thursday morning", "Friday",
         "next Monday afternoon", "Tuesday afternoon", "Wednesday morning",
         "Thursday afternoon", "next Friday morning", "Monday morning")
_PICKS = ("the first one", "the second one", "the last one", "the first one")
_NAMES = ("John Smith", "Maria Garcia", "Wei Chen", "Aisha Khan", "Tom Brown",
          "Olga Ivanova", "Pedro Alvarez", "Emma Wilson")
CALLER_LEAD_MS = 200  # silence before each caller line (espeak adds its own)


def caller_lines(n_tenants: int) -> tuple[str, ...]:
    """Every line a load-test caller may say to the clinics ``2000``… (see :func:`reply_for`)."""
    doctors = dict.fromkeys(d for i in range(n_tenants) for d in _doctors_of(_did(i)))
    return tuple(dict.fromkeys((*(f"I'd like to book an appointment with {d}" for d in doctors),
                                *doctors, *_PICKS, *_DAYS, *_NAMES, "yes", "no", "no thanks",
                                "the first one")))


def reply_for(prompt: str, rng: random.Random, did: str) -> str:
    """The caller's next line for the bot's last words (a booking caller)."""
    p = prompt.lower()
    if "anything else" in p:
        return "no thanks"
    # a read-back, before the checks for times and names: it holds both ("Shall I book
    # … at 9 AM … for John Smith, at the number you're calling from, ending in …?")
    if "shall i book" in p or "is that right" in p or "correct" in p:
        return "yes"
    if "help you" in p or "book, change or cancel" in p or "didn't catch" in p and "book" in p:
        return f"I'd like to book an appointment with {rng.choice(_doctors_of(did))}"
    if "which would you like" in p or "which one" in p or " or " in p and " am" in p:
        return rng.choice(_PICKS)
    if "what day" in p or "which day" in p or "another day" in p or "no openings" in p \
            or "nothing" in p:
        return rng.choice(_DAYS)
    if "name" in p:
        return rng.choice(_NAMES)
    if "front desk?" in p:  # offered a person: a booking caller tries again
        return "no"
    if "which doctor" in p:
        return rng.choice(_doctors_of(did))
    return "the first one"


# -- statistics ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no samples."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


def _cpu_pct(a: tuple[float, float, float, int], b: tuple[float, float, float, int]) -> float:
    """CPU % between two samples (time, cumulative CPU seconds, memory, active)."""
    return (b[1] - a[1]) / max(1e-6, b[0] - a[0]) * 100


def _steady_cpu(samples: list[tuple[float, float, float, int]], peak: int) -> float | None:
    """Median server CPU % over the 1 s samples taken while (nearly) every call was up.

    The whole-run average mixes in the ramp and the tail; this is the figure for
    "N concurrent calls".
    """
    rates = [_cpu_pct(a, b) for a, b in zip(samples, samples[1:], strict=False)
             if peak and b[3] >= 0.95 * peak]
    if not rates:
        return None
    rates.sort()
    return round(rates[len(rates) // 2], 1)


_HOST_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _host_ticks() -> list[int] | None:
    """The machine's cumulative CPU ticks by kind (``/proc/stat``), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:1 + len(_HOST_FIELDS)]]
    except (OSError, ValueError):
        return None


def _host_split(samples: list[tuple[list[int] | None, int]], peak: int
                ) -> dict[str, float] | None:
    """The whole machine's CPU by kind, % of all cores, while (nearly) every call was up.

    Why: with the load generator on the same cores, a run whose tails blow up is
    usually a saturated machine (idle near 0); ``softirq`` is the kernel's TCP work
    for the frames, charged to no process.
    """
    window = [t for t, active in samples if t is not None and peak and active >= 0.95 * peak]
    if len(window) < 2:
        return None
    d = [b - a for a, b in zip(window[0], window[-1], strict=True)]
    total = sum(d) or 1
    return {k: round(100 * v / total, 1) for k, v in zip(_HOST_FIELDS, d, strict=True)}


# -- pinning: the server on some CPUs, the load generator on the others ------------------

GENERATOR_IDLE_MIN = 10.0  # % idle the generator's CPUs must keep for a pinned run to count


def parse_cpus(text: str, option: str = "--server-cpus") -> frozenset[int]:
    """``"0"``, ``"0,2"``, ``"0-3"`` → CPU numbers; a clear error for ones this box lacks.

    Why here and not at use: a typo'd CPU would otherwise surface as an ``OSError``
    from ``sched_setaffinity`` after the server had started.
    """
    if not hasattr(os, "sched_setaffinity"):
        raise click.UsageError(f"{option} needs Linux (os.sched_setaffinity); this is "
                               f"{sys.platform}")
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise click.BadParameter(f"expected CPU numbers like 0, 0,2 or 0-3; got '{text}'",
                                     param_hint=option)
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise click.BadParameter(f"empty CPU range '{part}'", param_hint=option)
        cpus.update(range(a, b + 1))
    usable = os.sched_getaffinity(0)
    missing = sorted(cpus - usable)
    if missing:
        raise click.BadParameter(
            f"CPU {', '.join(map(str, missing))} does not exist here (usable CPUs: "
            f"{_cpu_list(usable)})", param_hint=option)
    return frozenset(cpus)


def _cpu_list(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def resolve_pinning(server_cpus: str | None, generator_cpus: str | None
                    ) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """The two CPU sets of a pinned run (one given: the other is every other usable CPU)."""
    if server_cpus is None and generator_cpus is None:
        return None, None
    srv = parse_cpus(server_cpus, "--server-cpus") if server_cpus is not None else None
    gen = parse_cpus(generator_cpus, "--generator-cpus") if generator_cpus is not None else None
    usable = frozenset(os.sched_getaffinity(0))
    if srv is None:
        srv = usable - gen  # type: ignore[operator]
    if gen is None:
        gen = usable - srv
    if not srv or not gen:
        raise click.UsageError("a pinned run needs at least one CPU for the server and one "
                               f"for the load generator (usable: {_cpu_list(usable)})")
    if srv & gen:
        raise click.UsageError(f"--server-cpus and --generator-cpus share CPU "
                               f"{_cpu_list(srv & gen)}: the generator would take the "
                               "server's CPU, which is what pinning is for avoiding")
    return srv, gen


def pin_tree(pid: int, cpus: Iterable[int]) -> int:
    """Every thread of ``pid`` and of its descendants onto ``cpus`` (``taskset -a``).

    Children and threads started later inherit it from the process that makes them;
    this catches those that exist already. Returns the number of threads pinned.
    """
    cpus = set(cpus)
    done = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), cpus)
                    done += 1
        todo.extend(_children(p))
    return done


def _percpu_ticks() -> dict[int, list[int]] | None:
    """Each CPU's cumulative ticks by kind (``/proc/stat`` ``cpuN`` lines), None off Linux."""
    try:
        out: dict[int, list[int]] = {}
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *vals = line.split()
                    out[int(name[3:])] = [int(x) for x in vals[:len(_HOST_FIELDS)]]
        return out
    except (OSError, ValueError, IndexError):
        return None


def _cpus_idle(samples: list[tuple[dict[int, list[int]] | None, int]], peak: int,
               cpus: Iterable[int]) -> float | None:
    """Idle % (idle + iowait) of ``cpus`` while (nearly) every call was up."""
    window = [t for t, active in samples if t is not None and peak and active >= 0.95 * peak]
    if len(window) < 2:
        return None
    idle = total = 0
    for c in cpus:
        if c not in window[0] or c not in window[-1]:
            continue
        d = [b - a for a, b in zip(window[0][c], window[-1][c], strict=True)]
        total += sum(d)
        idle += d[_HOST_FIELDS.index("idle")] + d[_HOST_FIELDS.index("iowait")]
    return round(100 * idle / total, 1) if total else None


def _cpu_ms_per_call_second(samples: list[tuple[float, float, float, int]], peak: int
                            ) -> float | None:
    """Server CPU ms per second of one call, over the 1 s samples with every call up.

    Why a rate per call: it compares runs of different sizes and machines of
    different core counts (1000 ms = a whole core for one call for a second).
    """
    cpu = call_s = 0.0
    for a, b in zip(samples, samples[1:], strict=False):
        if peak and min(a[3], b[3]) >= 0.95 * peak:
            cpu += b[1] - a[1]
            call_s += (b[0] - a[0]) * (a[3] + b[3]) / 2
    return round(cpu * 1000 / call_s, 3) if call_s else None


_SERVER_HISTS = {"setup_ms": "ivr_call_setup_seconds",
                 "setup_own_ms": "ivr_call_setup_own_seconds",
                 "barge_in_ms": "ivr_barge_in_reaction_seconds",
                 "turn_response_ms": "ivr_turn_response_seconds",
                 "hub_lag_ms": "ivr_hub_lag_seconds",
                 "gc_full_ms": "ivr_gc_full_seconds"}


def _hist_buckets(path: str) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts of the server-side histograms, by metric name.

    Summed over the workers' multiprocess files in ``path`` (readable while they run).
    """
    from prometheus_client import CollectorRegistry, multiprocess

    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg, path=path)
    out: dict[str, dict[float, float]] = {name: {} for name in _SERVER_HISTS.values()}
    for metric in reg.collect():
        if metric.name not in out:
            continue
        buckets = out[metric.name]
        for s in metric.samples:
            if s.name == metric.name + "_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return out


def _quantiles(buckets: dict[float, float]) -> dict[str, float | None]:
    """p50/p95/p99 in ms (and the count) from cumulative buckets.

    Interpolated within buckets as Prometheus' ``histogram_quantile`` does, so a
    figure is only as fine as the buckets (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50 ms ...).
    """
    out: dict[str, float | None] = {"p50": None, "p95": None, "p99": None, "count": 0}
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return out
    total = buckets[bounds[-1]]
    out["count"] = int(total)
    for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        rank = q * total
        lo, below = 0.0, 0.0
        for le in bounds:
            if buckets[le] >= rank:
                if le == float("inf"):
                    out[key] = round(lo * 1000, 1)  # beyond the last bound: report that bound
                else:
                    span = buckets[le] - below
                    frac = (rank - below) / span if span else 1.0
                    out[key] = round((lo + (le - lo) * frac) * 1000, 1)
                break
            lo, below = le, buckets[le]
    return out


def _server_figures(path: str, before: dict[str, dict[float, float]] | None = None
                    ) -> dict[str, dict[str, float | None]]:
    """Quantiles of every server-side histogram, keyed like ``_SERVER_HISTS``.

    One read of the workers' files; less what ``before`` (their state after the
    warm-up) held.
    """
    now = _hist_buckets(path)
    before = before or {}
    return {key: _quantiles({le: v - before.get(name, {}).get(le, 0.0)
                             for le, v in now[name].items()})
            for key, name in _SERVER_HISTS.items()}


def _pcts(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}": (None if (v := percentile(values, q)) is None else round(v, 2))
            for q in (50, 95, 99)}


# -- one emulated caller (runs in an emulator process) ----------------------------------


@dataclass
class CallStats:
    """What one call measured."""

    ok: bool = False
    outcome: str = ""
    error: str = ""
    setup_ms: float | None = None
    connect_ms: float | None = None  # TCP connect → connected, on the emulator's clock
    rtt_ms: list[float] = field(default_factory=list)
    barge_ms: list[float] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)
    turn_ms: list[float] = field(default_factory=list)
    answer_ms: list[float] = field(default_factory=list)
    frames_sent: int = 0
    frames_lost: int = 0
    turns: int = 0
    #: the conversation as the emulator heard it ("bot: …" / "caller: …"), taken only
    #: for a call that did not book (what went wrong is read from it, not guessed)
    said: list[str] = field(default_factory=list)

    @property
    def unusual(self) -> bool:
        """The call did not book (or broke): its conversation goes into the report."""
        return bool(self.error) or self.outcome != "booked"


class _Fire:
    """Wraps ``Channel.fire`` to timestamp DETECTED_SPEECH (speech onset, final result)."""

    def __init__(self, channel: Any) -> None:
        self.inner = channel.fire
        self.onsets: list[float] = []
        self.finals: list[float] = []

    def __call__(self, name: str, calling: Any, **kw: Any) -> Any:
        if name == "DETECTED_SPEECH":
            kind = dict(kw.get("before", ())).get("Speech-Type")
            (self.onsets if kind == "begin-speaking" else self.finals).append(time.monotonic())
        return self.inner(name, calling, **kw)


def _text_recogniser(channel: Any, stt_ms: tuple[int, int] | None, rng: random.Random,
                     ends: list[float]) -> Callable[[str], None]:
    """Channel._recognise with a recogniser latency after end of speech (cloud profile)."""
    from xml.sax.saxutils import escape

    import gevent

    from esl_app.sim.emulator.channel import _SPEECH_FILE, SECONDS_PER_CHAR

    def recognise(text: str) -> None:
        channel.fire("DETECTED_SPEECH", _SPEECH_FILE, before=[("Speech-Type", "begin-speaking")])
        gevent.sleep(max(0.05, len(text) * SECONDS_PER_CHAR) * channel.time_scale)
        ends.append(time.monotonic())
        if stt_ms:
            gevent.sleep(rng.uniform(*stt_ms) / 1000.0)
        if channel.hung_up or not channel.asr_active or channel.asr_paused:
            return
        g = escape(channel.asr_grammar, {'"': "&quot;"})
        body = (f'<?xml version="1.0"?><result grammar="{g}">'
                f'<interpretation grammar="{g}" confidence="90">'
                f'<input mode="speech">{escape(text)}</input>'
                "</interpretation></result>")
        channel.asr_paused = True
        channel.fire("DETECTED_SPEECH", _SPEECH_FILE, before=[("Speech-Type", "detected-speech")],
                     body=body)

    return recognise


_FORK_CLASS: list[type] = []


def load_fork(**kw: Any) -> Any:
    """The emulator's :class:`AudioFork` for load tests.

    Frames that leave more than ``LATE_FRAME_S`` behind their slot are counted by
    the fork itself (``late``). With ``IVR_EMULATED_STT_TABLE`` set (cloud
    profile), each caller line's audio fingerprint is published there before the
    line's first frame is sent, for the server's emulated recogniser
    (:mod:`esl_app.sim.emulated_stt`).
    """
    return _fork_class()(**kw)


def _fork_class() -> type:
    """The load test's fork class (made once; its imports happen here)."""
    if not _FORK_CLASS:
        from esl_app.sim.emulated_stt import TABLE_ENV, LineTable
        from esl_app.sim.emulator.audio import AudioFork

        path = os.environ.get(TABLE_ENV)
        table = LineTable(path) if path else None

        class LoadFork(AudioFork):
            @staticmethod
            def register_line(text: str, pcm: bytes) -> None:
                """Publish a line's fingerprint for the server's emulated recogniser."""
                if table is not None:
                    table.register(text, pcm)

            def _line_ready(self, text: str, pcm: bytes) -> None:
                self.register_line(text, pcm)

        _FORK_CLASS.append(LoadFork)
    return _FORK_CLASS[0]


def _first_after(cmds: list[Any], t: float, pred: Callable[[Any], bool]) -> float | None:
    for c in cmds:
        if c.at >= t and pred(c):
            return c.at
    return None


def _is_play(c: Any) -> bool:
    return c.name == "sendmsg" and (c.header("execute-app-name") or "") in ("playback", "speak")


_FILLERS: set[str] = set()


STATEMENT_WAIT_S = 0.5  # how long a caller waits after a statement for the question


def _bot_goes_on(events: Any) -> bool:
    """True if the bot says more within :data:`STATEMENT_WAIT_S` after a statement.

    The bot speaks a reply sentence by sentence; when the next one is still being
    synthesised there is a pause between them ("Thank you, John Smith." … "Shall I
    book …?"). Answering into it, as the callers did after 50 ms, put their answer to a
    question they had not heard yet: about one call in a hundred in text mode then
    looped until the turn limit.
    """
    from gevent.queue import Empty

    try:
        events.peek(timeout=STATEMENT_WAIT_S)
    except Empty:
        return False
    return True


def _is_filler_text(text: str) -> bool:
    """An acknowledgement or the "one moment" filler: no answer to the caller yet."""
    if not _FILLERS:
        from esl_app.config.tenants import DEFAULT_ACK_PHRASES
        from esl_app.telephony.call import FILLER_TEXT

        _FILLERS.update(p.lower() for p in (*DEFAULT_ACK_PHRASES, FILLER_TEXT))
    return text.strip().lower() in _FILLERS


def _is_answer(c: Any) -> bool:
    """A playback that is neither an acknowledgement nor the "one moment" filler."""
    if not _is_play(c):
        return False
    arg = c.header("execute-app-arg") or ""
    if c.header("execute-app-name") == "speak":
        text = arg.rsplit("|", 1)[-1]
    else:
        from esl_app.sim.emulator.channel import prompt_info

        info = prompt_info(arg)
        text = info[1] if info is not None else ""
    return not _is_filler_text(text)


def _is_break(c: Any) -> bool:
    return c.name == "api" and c.args.startswith("uuid_break")


def run_one_call(address: tuple[str, int], did: str, rng: random.Random, *, audio: bool,
                 time_scale: float, stt_ms: tuple[int, int] | None, tts: str | None,
                 max_turns: int = 14, barge: bool = True, turn_timeout: float = 60.0
                 ) -> CallStats:
    """One full booking conversation; never raises (the stats say what went wrong)."""
    import gevent

    from esl_app.sim.emulator.outbound import EmulatedCall

    st = CallStats()
    variables = {} if audio else {"ivr_stt": "freeswitch"}
    if tts:
        variables["ivr_tts"] = tts
    fork_holder: list[Any] = []

    def make_fork() -> Any:
        f = load_fork(lead_ms=CALLER_LEAD_MS)
        fork_holder.append(f)
        return f

    call = EmulatedCall(address, did, f"+1555{rng.randrange(10**7):07d}", time_scale=time_scale,
                        variables=variables, audio_fork=make_fork if audio else None,
                        listen_settle=0.05)
    ends: list[float] = []
    fire = _Fire(call.channel)
    call.channel.fire = fire  # type: ignore[method-assign]
    if not audio:
        call.channel._recognise = _text_recogniser(  # type: ignore[method-assign]
            call.channel, stt_ms, rng, ends)
    t0 = time.monotonic()
    try:
        call.start()
    except OSError as exc:
        st.error = f"connect: {exc}"
        return st
    st.connect_ms = (time.monotonic() - t0) * 1000
    try:
        events = call.events
        last_bot = ""  # the bot's latest sentence
        heard: list[str] = []  # what the bot said since the caller last spoke
        turns = 0
        barged = not barge
        done = False
        deadline = time.monotonic() + turn_timeout
        while not done:
            try:
                ev = events.get(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - queue.Empty: the bot went quiet
                st.error = "timeout waiting for the bot"
                break
            kind = ev.get("event")
            if kind == "bot_said":
                last_bot = ev.get("text", "")
                heard.append(last_bot)
                if not barged:  # talk over the greeting's first sentence
                    barged = True
                    gevent.sleep(0.3 * time_scale)
                    if not call.channel.playback_idle.is_set():
                        call.say(reply_for("how can I help you", rng, did))
                        heard.clear()
                        turns += 1
                        deadline = time.monotonic() + turn_timeout
            elif kind == "listening":
                if _is_filler_text(last_bot):
                    continue  # "Okay." / "One moment…": a caller waits for the answer
                if not last_bot.rstrip().endswith("?") and _bot_goes_on(events):
                    continue  # "Thank you." then a pause: a caller waits for the question
                reply = " ".join(heard)  # "Which doctor…: Dr. A or Dr. B? Or any doctor."
                if turns >= max_turns or "anything else" in reply.lower() and turns > 2:
                    if "anything else" in reply.lower():
                        call.say("no thanks")
                        gevent.sleep(2.0 * time_scale + 0.2)
                    if not call.ended:
                        call.hang_up()
                    done = True
                    continue
                call.say(reply_for(reply, rng, did))
                heard.clear()
                turns += 1
                deadline = time.monotonic() + turn_timeout
            elif kind == "call_ended":
                done = True
        if not call.wait_ended(10):
            call.hang_up()
            call.wait_ended(5)
        st.turns = turns
        summary = call.transcript
        variables_out = summary.get("variables", {})
        st.outcome = variables_out.get("ivr_outcome") or (
            "caller_hangup" if summary.get("hangup_by") == "caller" else
            summary.get("hangup_by") or "?")
        if st.unusual:
            st.said = [f"{t['speaker']}: {t['text']}" for t in summary.get("turns", ())]
        cmds = list(call.commands)
        answer = _first_after(cmds, t0, lambda c: c.name == "sendmsg"
                              and c.header("execute-app-name") == "answer")
        st.setup_ms = None if answer is None else (answer - t0) * 1000
        # connect, myevents and linger travel in one write (pipelined): the first
        # command that depends on a reply is the answer, which needs the channel data
        connect = next((c.at for c in cmds if c.name == "connect"), None)
        if connect is not None and answer is not None:
            st.rtt_ms.append((answer - connect) * 1000)
        onsets = list(fire.onsets)
        finals = list(fire.finals)
        turn_ends = list(ends)
        if audio and fork_holder:
            fork = fork_holder[-1]
            onsets = [r.speech_at for r in fork.records if r.speech_at is not None]
            turn_ends = [r.speech_at + ((r.end_stream_ms or 0) - (r.speech_stream_ms or 0)) / 1000
                         for r in fork.records if r.speech_at is not None and r.end_stream_ms]
            finals = []
            st.frames_sent = fork.frames_sent
            st.frames_lost = getattr(fork, "late", 0)
        for t in onsets:
            brk = _first_after(cmds, t, _is_break)
            play_between = brk is not None and any(_is_play(c) for c in cmds
                                                   if t <= c.at < brk)
            if brk is not None and not play_between and brk - t < 5.0:
                st.barge_ms.append((brk - t) * 1000)
        for t in finals:
            play = _first_after(cmds, t, _is_play)
            if play is not None:
                st.overhead_ms.append((play - t) * 1000)
        for t in turn_ends:
            play = _first_after(cmds, t, _is_play)
            if play is not None:
                st.turn_ms.append((play - t) * 1000)
                said = _first_after(cmds, t, _is_answer)
                if said is not None:
                    st.answer_ms.append((said - t) * 1000)
        # "rejected": the server does not serve the DID (not in service): no clinic reached
        st.ok = (answer is not None and not st.error
                 and st.outcome not in ("error", "rejected")
                 and summary.get("answered", False))
        if not st.ok and not st.error:
            st.error = f"outcome {st.outcome}"
    except Exception as exc:  # noqa: BLE001 - one broken call must not end the run
        st.error = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            call.close()
    return st


UNUSUAL_KEPT = 10  # calls that did not book, kept with their conversation per report
UNUSUAL_LINES = 16  # lines kept of each such conversation: its first 4 and last 12


def _unusual(st: CallStats, did: str) -> dict[str, Any]:
    """A call that did not book, as the report keeps it: how it began and ended, not who called."""
    said = st.said
    if len(said) > UNUSUAL_LINES:
        head = UNUSUAL_LINES // 4
        said = [*said[:head], f"… {len(said) - UNUSUAL_LINES} lines …",
                *said[head - UNUSUAL_LINES:]]
    return {"did": did, "outcome": st.outcome, "error": st.error, "turns": st.turns,
            "said": said}


def _child_main(argv: list[str]) -> int:
    """Emulator process: run this process's share of callers, report JSON lines on stdout."""
    import gevent

    from esl_app.support.bridge import watch_hub_lag

    cfg = json.loads(argv[0])
    from esl_app.runtime.fds import reserve_fds

    # like the server's workers (fds.py): no fd-table doubling stalls this hub mid-ramp
    reserve_fds(2 * len(cfg["indices"]))
    if cfg.get("stt_table"):  # before load_fork() first runs: lines get registered there
        os.environ["IVR_EMULATED_STT_TABLE"] = cfg["stt_table"]
    # import now what the calls will need: a first import in the middle of the run
    # stops this process's hub for 100+ ms, and every caller's frames are late
    if cfg["audio"]:
        fork_class = _fork_class()
        # the callers' lines too, synthesised and framed before the clock starts, as a
        # generator with its audio on disk would: not at first use in the measured run
        from esl_app.sim.emulator.audio import prepare_lines

        for text, pcm in prepare_lines(caller_lines(cfg["tenants"]),
                                       lead_ms=CALLER_LEAD_MS).items():
            fork_class.register_line(text, pcm)
    _is_filler_text("")
    address = (cfg["host"], cfg["port"])
    rng = random.Random(cfg["seed"])
    n_total = cfg["calls_total"]
    ramp = cfg["ramp"]
    duration = cfg["duration"]
    out = sys.stdout
    counts = {"started": 0, "active": 0, "done": 0, "failed": 0}
    merged = CallStats()
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    setups: list[float] = []
    rtts: list[float] = []
    connects: list[float] = []
    unusual: list[dict[str, Any]] = []
    t_start = time.monotonic()

    def emit(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def slot(global_index: int) -> None:
        gevent.sleep(global_index * ramp / max(1, n_total))
        crng = random.Random(rng.random())
        first = True
        while first or (duration and time.monotonic() - t_start < duration):
            first = False
            did = _did(crng.randrange(cfg["tenants"]))
            counts["started"] += 1
            counts["active"] += 1
            st = run_one_call(address, did, crng, audio=cfg["audio"],
                              time_scale=cfg["time_scale"], stt_ms=cfg.get("stt_ms"),
                              tts=cfg.get("tts"))
            counts["active"] -= 1
            counts["done" if st.ok else "failed"] += 1
            outcomes[st.outcome or "none"] = outcomes.get(st.outcome or "none", 0) + 1
            if st.error:
                key = st.error[:80]
                errors[key] = errors.get(key, 0) + 1
            if st.unusual and len(unusual) < UNUSUAL_KEPT:
                unusual.append(_unusual(st, did))
            if st.setup_ms is not None:
                setups.append(st.setup_ms)
            if st.connect_ms is not None:
                connects.append(st.connect_ms)
            rtts.extend(st.rtt_ms)
            merged.barge_ms.extend(st.barge_ms)
            merged.overhead_ms.extend(st.overhead_ms)
            merged.turn_ms.extend(st.turn_ms)
            merged.answer_ms.extend(st.answer_ms)
            merged.frames_sent += st.frames_sent
            merged.frames_lost += st.frames_lost

    def progress() -> None:
        while True:
            emit({"progress": dict(counts)})
            gevent.sleep(0.5)
            # 1000 calls' emulator state is a large live heap: a full collection walks
            # all of it, ~100-130 ms in which no caller's frame goes out (the "late
            # frames" of a run, in both emulator processes at once). Frozen every half
            # second, a pass only walks what is newer; nothing leaks by it, since the
            # emulated calls hold no reference cycles (tests/test_call_memory.py)
            gc.freeze()

    # this process's own event-loop lag: how late it ran its callers' frames, answered
    # the bot's commands and timestamped them (on a saturated machine, most of the
    # outside latencies' tails)
    lags: list[float] = []
    ticker = gevent.spawn(progress)
    lag_watch = gevent.spawn(watch_hub_lag, lambda s: lags.append(round(s * 1000, 2)))
    gevent.joinall([gevent.spawn(slot, i) for i in cfg["indices"]])
    ticker.kill()
    lag_watch.kill()
    emit({"progress": dict(counts)})
    emit({"result": {
        "calls_completed": counts["done"], "calls_failed": counts["failed"],
        "setup_ms": setups, "connect_ms": connects, "rtt_ms": rtts, "barge_ms": merged.barge_ms,
        "overhead_ms": merged.overhead_ms, "turn_ms": merged.turn_ms,
        "answer_ms": merged.answer_ms,
        "frames_sent": merged.frames_sent, "frames_lost": merged.frames_lost,
        "outcomes": outcomes, "errors": errors, "hub_lag_ms": lags, "unusual": unusual,
    }})
    return 0


# -- server processes: start, find, sample ---------------------------------------------


def _pids_listening(port: int) -> list[int]:
    """Pids holding a TCP socket listening on ``port`` (all workers share it)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if len(parts) > 9 and parts[3] == "0A" and \
                        int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
    if not inodes:
        return []
    wanted = {f"socket:[{i}]" for i in inodes}
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (d / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        pids.append(int(d.name))
                        break
    return sorted(pids)


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(x) for x in text.split()]
    return []


def _proc_sample(pids: Iterable[int], memory: bool = True) -> tuple[float, float]:
    """(CPU seconds used, memory in kB: PSS if readable, else RSS) summed over ``pids``.

    Reading PSS (``smaps_rollup``) walks the process's page tables under its memory
    map lock, and the process waits for it in its next ``mmap``/``munmap`` (several ms
    at a few hundred MB): ``memory=False`` (CPU only) where the figure is not used.
    """
    tick = os.sysconf("SC_CLK_TCK")
    cpu = 0.0
    mem = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            # own + reaped children (espeak/sox run by the local TTS are the server's cost)
            cpu += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
            if not memory:
                continue
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        mem += float(line.split()[1])
                        break
            except OSError:
                mem += float(Path(f"/proc/{pid}/statm").read_text().split()[1]) * \
                    os.sysconf("SC_PAGE_SIZE") / 1024
    return cpu, mem


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
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env,
                            cwd=tmp.name, preexec_fn=_pinner(cfg.server_cpus))
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
        with contextlib.suppress(Exception):
            proc.kill()
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


def _stop_server(srv: _Server) -> dict[str, dict[str, float | None]]:
    """Stop it; returns the server-side times its workers recorded (``_server_figures``)."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        srv.proc.send_signal(signal.SIGTERM)
    try:
        srv.proc.wait(timeout=30)
    except Exception:  # noqa: BLE001
        srv.proc.kill()
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
                [*nice, sys.executable, "-c", _BOOTSTRAP.format(mod="esl_app.sim.loadtest",
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
    merged: dict[str, Any] = {"setup_ms": [], "connect_ms": [], "rtt_ms": [], "barge_ms": [],
                              "overhead_ms": [], "turn_ms": [], "answer_ms": []}
    emu_lags: list[float] = []
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    unusual: list[dict[str, Any]] = []
    completed = failed = sent = lost = 0
    for r in results:
        completed += r["calls_completed"]
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
        "barge_in_ms": _pcts(merged["barge_ms"]),
        "turn_overhead_ms": _pcts(merged["overhead_ms"]),
        "turn_ms": _pcts(merged["turn_ms"]),
        "answer_ms": _pcts(merged["answer_ms"]),
        "samples": {k: len(v) for k, v in merged.items()},
        "outcomes": outcomes, "errors": errors,
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
    for kind, n in list(r.get("server_log", {}).items())[:5]:
        lines.append(f"server log: {n} × {kind}")
    for u in r.get("unusual_calls", ())[:3]:
        why = u["error"] or u["outcome"]
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
