"""The load test's callers: synthetic clinics, what a caller says, and one whole call.

Runs in the emulator processes (:func:`_child_main`): each emulated caller books
through the local agent, answering whatever the bot just asked, and measures the
call on the emulator's clock (see :mod:`esl_app.sim.loadtest` for the figures).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LATE_FRAME_S = 0.100  # the emulator counts late frames with the same bound (audio.LATE_S)

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


# -- one emulated caller (runs in an emulator process) ----------------------------------


@dataclass
class CallStats:
    """What one call measured."""

    ok: bool = False
    outcome: str = ""
    error: str = ""
    setup_ms: float | None = None
    connect_ms: float | None = None  # TCP connect → connected, on the emulator's clock
    #: connected → the server's first command (``connect``) parsed here: the server's
    #: accept, its handler's start and its first write, as the switch sees them
    first_ms: float | None = None
    rtt_ms: list[float] = field(default_factory=list)
    barge_ms: list[float] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)
    turn_ms: list[float] = field(default_factory=list)
    answer_ms: list[float] = field(default_factory=list)
    frames_sent: int = 0
    frames_lost: int = 0
    turns: int = 0
    #: times the bot said it heard nothing: a load-test caller answers every question,
    #: so each one is the caller's words lost (a dropped frame, a race at barge-in)
    missed: int = 0
    #: the conversation as the emulator heard it ("bot: …" / "caller: …"), taken only
    #: for a call that did not book (what went wrong is read from it, not guessed)
    said: list[str] = field(default_factory=list)

    @property
    def unusual(self) -> bool:
        """The call did not book, broke, or lost the caller's words: it is reported."""
        return bool(self.error) or self.outcome != "booked" or self.missed > 0


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
    from esl_app.telephony.lines import NOTHING_HEARD, STILL_THERE

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
    connected = time.monotonic()
    st.connect_ms = (connected - t0) * 1000
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
                if last_bot.startswith((NOTHING_HEARD, STILL_THERE)):
                    st.missed += 1
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
        # connect, myevents, linger and the answer travel in one write (pipelined): the
        # first command that waited for the switch's reply names the channel (uuid_setvar)
        connect = next((c.at for c in cmds if c.name == "connect"), None)
        uuid = call.channel.uuid
        named = None if connect is None else _first_after(cmds, connect,
                                                          lambda c: uuid in c.line)
        if connect is not None and named is not None:
            st.rtt_ms.append((named - connect) * 1000)
        if connect is not None:
            st.first_ms = (connect - connected) * 1000
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
            "missed": st.missed, "frames_late": st.frames_lost, "said": said}


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
    missed_calls = 0
    merged = CallStats()
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    setups: list[float] = []
    rtts: list[float] = []
    connects: list[float] = []
    firsts: list[float] = []
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
            if st.missed:
                nonlocal missed_calls
                missed_calls += 1
            if st.setup_ms is not None:
                setups.append(st.setup_ms)
            if st.connect_ms is not None:
                connects.append(st.connect_ms)
            if st.first_ms is not None:
                firsts.append(st.first_ms)
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
        "setup_ms": setups, "connect_ms": connects, "first_ms": firsts, "rtt_ms": rtts,
        "barge_ms": merged.barge_ms,
        "overhead_ms": merged.overhead_ms, "turn_ms": merged.turn_ms,
        "answer_ms": merged.answer_ms,
        "frames_sent": merged.frames_sent, "frames_lost": merged.frames_lost,
        "outcomes": outcomes, "errors": errors, "hub_lag_ms": lags, "unusual": unusual,
        "calls_missed_speech": missed_calls,
    }})
    return 0
