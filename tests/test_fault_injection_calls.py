"""Fault injection through the real call engine: 20 calls while Bedrock fails at random.

Issue 5's "done when": twenty simulated calls while the agent provider fails at
random; every call ends in a booking, a transfer or a goodbye, never in silence
(no gap above 3 s) or a crash. Unlike ``test_resilience_fault_injection.py``
(ResilientAgent driven directly), everything here is the production path:

* the FreeSWITCH emulator dials ``start_local_bot`` over TCP (text mode);
* the tenant has ``agent: bedrock`` and its agent is built by the production
  ``make_tenant_agent`` — GuardedAgent(ResilientAgent(BedrockAgent, LocalAgent,
  on_filler=the engine's filler)) — only the botocore client is ours: one client
  for all calls (as in production), whose ``before-send`` hook plays the
  Bedrock Agent service (:class:`FakeBedrock`), frames built with botocore's own
  event-stream encoding (``aws_fixtures.eventstream``);
* the fake service books through RETURN_CONTROL (our tools run in process on
  the real SQLite database); each call's session fails in its own way from a
  random request on (HTTP 429/500/403, in-stream throttling, malformed frames,
  a stream cut mid-answer, a stalled stream, read timeouts, one transient
  throttle, slow answers), some calls never fail;
* callers answer what the bot last asked (:func:`next_line`), so a call that
  moves to the local agent mid-booking still completes, as a real caller would;
  one caller asks for a person (a transfer), one only wants the opening hours
  (a goodbye); the calls arrive 0.15 s apart and are all up at once.

Silence is measured on the wire: a listener on each call's emulated switch
records, with timestamps, when the caller's speech is recognised
(``DETECTED_SPEECH``) and when each ``speak`` starts and ends
(``CHANNEL_EXECUTE`` / ``CHANNEL_EXECUTE_COMPLETE``). From a caller's last word
to the bot's answer no stretch without audio may exceed 3 s; the cached filler
("One moment while I check.") counts as audio. The greeting (answer → first
audio) is no answer to the caller and is held to the unscaled 3 s.

Time scale: ``SCALE`` = 0.2. The emulator plays media at 0.2 × real time and
every resilience timing is scaled alike (filler after 1.2 s → 0.24 s, then
every 2.5 s → 0.5 s; attempt timeout 8 s → 1.6 s; turn bound 12 s → 2.4 s;
Bedrock endSession 3 s → 0.6 s), so the 3 s silence bound becomes 0.6 s. The
expected worst gap is a filler period (0.5 s start to start, about 0.16 s of
actual silence) and an unfailed turn answers in a few tens of milliseconds, so
0.6 s leaves room for a loaded 2-core CI machine while still catching a
missing filler (a stalled agent would be silent for the whole 1.6 s timeout).
Measured: worst gap 0.25 s idle and 0.30 s with the 2 cores 4x oversubscribed;
with the filler disabled the test fails at 1.1 s.

``test_a_failure_right_after_the_booking_does_not_book_twice`` guards the defect this
test found: a turn failing after confirmAppointment ran used to make the caller book
twice; the committed result now travels in ``call.state["unannounced"]``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import gevent
import gevent.event
import pytest
from aws_fixtures.eventstream import bedrock_events, error_response, stream_response
from botocore.exceptions import ReadTimeoutError
from fakes.telephony import wait_until
from urllib3.exceptions import ProtocolError

from esl_app.providers.agent.bedrock import BedrockAgent, new_client
from esl_app.providers.resilience import GOODBYE_TEXT, TRANSFER_TEXT
from esl_app.runtime.wiring import ProviderCache, make_tenant_agent
from esl_app.scheduling import service
from esl_app.sim.emulator.core import Event, Switch
from esl_app.sim.simulate import SimCall, start_local_bot, transcript_for
from esl_app.sim.testing import make_db
from esl_app.telephony.call import FILLER_TEXT, TROUBLE_TEXT

SCALE = 0.2  # emulated media time and every resilience timing (see the module docstring)
MAX_SILENCE = 3.0 * SCALE
#: Calls arrive 0.15 s apart (all twenty are up at once within 3 s): twenty callers
#: in lockstep would make every agent request of a turn land in the same instant.
STAGGER = 0.15
CALLS = 20
SEED = 20261123
TENANTS = """
tenants:
  - id: sunrise
    name: Sunrise Family Clinic
    dids: ["1001"]
    timezone: America/New_York
    greeting: Thank you for calling Sunrise Family Clinic.
    hours: {mon-fri: "08:00-17:00"}
    handoff: user/1000
    stt: freeswitch
    tts: freeswitch
    agent: bedrock
    bedrock: {agent_id: S2MOVY5G8J, alias_id: XOOC4XVDXZ, region: us-east-1}
    doctors: [{id: smith, name: Dr. Sarah Smith}, {id: jones, name: Dr. Amy Jones}]
"""
#: How each call's Bedrock session behaves: "ok" never fails, "slow" answers
#: after the filler, "throttle_once" fails once (the retry succeeds), the rest
#: fail from a random request on, for the rest of the call.
_GOODBYE = "Thank you for calling Sunrise Family Clinic. Goodbye!"
KINDS = ["ok", "ok", "ok", "slow", "slow", "throttle_once", "http429", "http500", "http403",
         "throttle_event", "malformed", "midstream_cut", "stall", "stall", "read_timeout",
         "slow_timeout", "http429", "malformed", "stall", "throttle_event"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]
FIRST = ["Ann", "Bob", "Carl", "Dana", "Eve"]
LAST = ["Lee", "Park", "Moore", "Hill"]


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


# -- the Bedrock Agent service, one session per call ------------------------------------------

def _stall() -> None:
    gevent.event.Event().wait()  # until ResilientAgent kills the attempt


def _failure(kind: str, rng: random.Random, scale: float) -> Any:
    """One failed response (or a transport error raised from the HTTP layer)."""
    if kind in ("http429", "throttle_once"):
        return error_response(429, "ThrottlingException", "Rate exceeded")
    if kind == "http500":
        return error_response(500, "InternalServerException", "Internal failure")
    if kind == "http403":
        return error_response(403, "AccessDeniedException", "not authorized")
    if kind == "throttle_event":
        return stream_response(bedrock_events([
            {"exception": {"type": "throttlingException", "message": "slow down"}}]))
    if kind == "malformed":
        return stream_response([b"\x00\x00\x00\x10garbage-garbage!"])
    if kind == "midstream_cut":
        return stream_response(bedrock_events([{"chunk": {"bytes": "Let me look"}}]),
                               fail=ProtocolError("Connection broken: IncompleteRead"))
    if kind == "stall":
        return stream_response(bedrock_events([{"chunk": {"bytes": "Hm"}}]),
                               before_each=_stall)
    if kind == "slow_timeout":  # the socket read times out after a while
        gevent.sleep(rng.uniform(0.3, 1.2) * 8.0 * scale)
    raise ReadTimeoutError(endpoint_url="https://bedrock-agent-runtime.us-east-1.amazonaws.com")


def _next_weekday(name: str, tz: Any) -> date:
    today = datetime.now(tz).date()
    ahead = (WEEKDAYS.index(name) - today.weekday()) % 7 or 7
    return today + timedelta(days=ahead)


@dataclass
class Session:
    """One call's Bedrock session: a small booking "model" and its failure plan."""

    kind: str
    fail_from: int  # the request number from which the plan fails
    rng: random.Random
    tz: Any
    scale: float = SCALE
    requests: int = 0
    stage: str = "start"
    doctor: str = "smith"
    slots: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, Any] | None = None
    name: str = ""
    failed: int = 0

    def answer(self, body: dict[str, Any]) -> Any:
        n = self.requests
        self.requests += 1
        if self.kind == "slow":  # past the filler, within the attempt timeout
            gevent.sleep(self.rng.uniform(1.5, 3.0) * self.scale)
        elif self.kind != "ok" and n >= self.fail_from and not (
                self.kind == "throttle_once" and self.failed):
            self.failed += 1
            return _failure(self.kind, self.rng, self.scale)
        return stream_response(bedrock_events(self._model(body)))

    # what a Bedrock Agent with RETURN_CONTROL action groups answers
    def _model(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        if body.get("endSession"):
            return [{"chunk": {"bytes": "Goodbye."}}]
        results = (body.get("sessionState") or {}).get("returnControlInvocationResults")
        if results:
            return self._after_tool(results[0])
        text = str(body.get("inputText", "")).lower()
        if self.stage == "done" or "goodbye" in text:
            return _say("Thank you for calling Sunrise Family Clinic. Goodbye!")
        if "hours" in text:
            return _say("We're open Monday to Friday from 8 AM to 5 PM. Is there anything "
                        "else I can help you with?")
        if self.stage == "start":
            if "book" not in text and "appointment" not in text:
                return _say("How can I help you today?")
            self.doctor = "jones" if "jones" in text else "smith"
            self.stage = "day"
            return _say("What day would you like to come in?")
        if self.stage in ("day", "searching"):
            day = next((d for d in WEEKDAYS if d in text), "tuesday")
            part = "afternoon" if "afternoon" in text else "morning"
            self.stage = "searching"
            return [{"returnControl": {"invocationId": f"inv-{self.requests}", "invocationInputs": [
                {"apiInvocationInput": {
                    "actionGroup": "appointments", "actionInvocationType": "RESULT",
                    "apiPath": "/searchSlots", "httpMethod": "GET", "parameters": [
                        {"name": "doctor", "type": "string", "value": self.doctor},
                        {"name": "date", "type": "string",
                         "value": _next_weekday(day, self.tz).isoformat()},
                        {"name": "partOfDay", "type": "string", "value": part},
                        {"name": "limit", "type": "integer", "value": "3"}]}}]}}]
        if self.stage == "offer":
            pick = 1 if "second" in text and len(self.slots) > 1 else 0
            self.chosen = self.slots[pick]
            self.stage = "name"
            return _say("Great. May I have your first and last name?")
        if self.stage == "name":
            self.name = str(body.get("inputText", "")).strip().title()
            self.stage = "confirm"
            assert self.chosen is not None
            return _say(f"Shall I book {self.chosen['spoken']} for {self.name}?")
        if self.stage in ("confirm", "booking"):
            if not text.startswith("yes"):
                self.stage = "day"
                return _say("No problem. What day would you like to come in?")
            assert self.chosen is not None
            self.stage = "booking"
            return [{"returnControl": {"invocationId": f"inv-{self.requests}", "invocationInputs": [
                {"functionInvocationInput": {
                    "actionGroup": "booking", "actionInvocationType": "RESULT",
                    "function": "confirmAppointment", "parameters": [
                        {"name": "slotId", "type": "string",
                         "value": str(self.chosen["slot_id"])},
                        {"name": "patientName", "type": "string", "value": self.name}]}}]}}]
        return _say("Sorry, could you say that again?")

    def _after_tool(self, result: dict[str, Any]) -> list[dict[str, Any]]:
        if "apiResult" in result:  # searchSlots
            body = json.loads(result["apiResult"]["responseBody"]["application/json"]["body"])
            self.slots = body.get("slots") or []
            if not self.slots:
                self.stage = "day"
                return _say("I have nothing then. What other day would you like to come in?")
            self.stage = "offer"
            times = ", or ".join(s["spoken"] for s in self.slots[:3])
            return _say(f"I have {times}. Which would you like?")
        body = json.loads(result["functionResult"]["responseBody"]["TEXT"]["body"])
        if not body.get("ok"):
            self.stage = "day"
            return _say("I'm sorry, that time was just taken. What day would you like to "
                        "come in?")
        self.stage = "done"
        return _say(f"You're booked for {body['spoken']}. Your confirmation code is "
                    f"{body['confirmation']}. Is there anything else I can help you with?")


def _say(text: str) -> list[dict[str, Any]]:
    return [{"trace": {"agentId": "S2MOVY5G8J", "agentAliasId": "XOOC4XVDXZ",
                       "sessionId": "s", "trace": {"orchestrationTrace": {
                           "rationale": {"traceId": "t", "text": "Answer the caller."}}}}},
            {"chunk": {"bytes": text}}]


class FakeBedrock:
    """The ``before-send`` hook of the one shared client: routes by Bedrock session id."""

    _SESSION = re.compile(r"/sessions/([^/]+)/text")

    def __init__(self, client: Any) -> None:
        self.sessions: dict[str, Session] = {}
        client.meta.events.register("before-send.bedrock-agent-runtime.InvokeAgent", self)

    def __call__(self, request: Any, **_kw: Any) -> Any:
        match = self._SESSION.search(request.url)
        assert match, request.url
        body = request.body
        if isinstance(body, bytes | bytearray):
            body = body.decode()
        return self.sessions[unquote(match.group(1))].answer(json.loads(body or "{}"))


# -- the caller and the wire timeline ----------------------------------------------------------

def next_line(heard: str, persona: dict[str, str]) -> str | None:
    """What a caller answers to the bot's last words (None: the bot said goodbye)."""
    h = heard.lower()
    if "goodbye" in h:
        return None
    if "anything else" in h:
        return "no thanks, goodbye"
    if "connect you with" in h and "?" in h:
        return "yes please"
    if "what day" in h or "what other day" in h:
        return persona["day"]
    if "which would you like" in h:
        return "the first one"
    if "shall i book" in h or "reach you" in h:
        return "yes"
    if "name" in h and "?" in h:
        return persona["name"]
    return persona["opening"]


class Timeline:
    """Timestamped wire events of one emulated call (a listener on its switch)."""

    def __init__(self, switch: Switch) -> None:
        self.events: list[tuple[float, str, str, str]] = []
        switch.add_listener(self)

    def __call__(self, ev: Event) -> None:
        if ev.name in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
            app = ev.get("Application") or ""
            if app in ("speak", "playback") and not (ev.get("Application-Data") or "").startswith(
                    "silence_stream://"):
                self.events.append((time.monotonic(), ev.name, ev.get("Application-UUID") or "",
                                    ev.get("Application-Data") or ""))
        elif ev.name == "DETECTED_SPEECH" and ev.get("Speech-Type") == "detected-speech":
            self.events.append((time.monotonic(), "CALLER_DONE", "", ""))
        elif ev.name in ("CHANNEL_ANSWER", "CHANNEL_HANGUP"):
            self.events.append((time.monotonic(), ev.name, "", ""))

    def describe(self) -> str:
        """The timeline, for a failure message."""
        t0 = self.events[0][0] if self.events else 0.0
        return "\n".join(f"{at - t0:7.3f} {name:26} {data[-50:]}"
                         for at, name, _, data in self.events)

    def fillers(self) -> int:
        """How many times the caller heard "One moment while I check."."""
        return sum(1 for _, name, _, data in self.events
                   if name == "CHANNEL_EXECUTE" and FILLER_TEXT in data)

    def greeting_delay(self) -> float:
        """From the answer to the first audio (the greeting)."""
        answer = next((at for at, name, *_ in self.events if name == "CHANNEL_ANSWER"), None)
        first = next((at for at, name, *_ in self.events if name == "CHANNEL_EXECUTE"), None)
        assert answer is not None and first is not None, self.describe()
        return first - answer

    def worst_silence(self) -> tuple[float, str]:
        """The longest stretch without audio while the caller waits for the bot.

        From each recognised caller line until the first audio that is not the
        filler (fillers count as audio); a call that hangs up before answering
        counts its silence up to the hang-up.
        """
        audio: list[tuple[float, float, str]] = []
        starts: dict[str, tuple[float, str]] = {}
        owed: list[float] = []
        hangup = None
        for at, name, app_uuid, data in self.events:
            if name == "CHANNEL_EXECUTE":
                starts[app_uuid] = (at, data)
            elif name == "CHANNEL_EXECUTE_COMPLETE" and app_uuid in starts:
                begin, text = starts.pop(app_uuid)
                audio.append((begin, at, text))
            elif name == "CALLER_DONE":
                owed.append(at)
            elif name == "CHANNEL_HANGUP" and hangup is None:
                hangup = at
        for begin, text in starts.values():  # still playing at hang-up
            audio.append((begin, hangup or begin, text))
        audio.sort()
        worst, where = 0.0, ""
        for t0 in owed:
            cursor = t0
            for begin, end, text in audio:
                if end <= t0:
                    continue
                gap = begin - cursor
                if gap > worst:
                    worst, where = gap, f"before {text[-60:]!r}"
                if FILLER_TEXT not in text:
                    break
                cursor = max(cursor, end)
            else:
                if hangup is not None and hangup - cursor > worst:
                    worst, where = hangup - cursor, "before the hang-up"
        return worst, where


def wait_for_question(sim: SimCall, timeout: float = 20.0) -> str | None:
    """What the bot said since the caller's last line, once it waits for an answer.

    A patient caller: the emulator's "listening" may come while the bot is still
    between two sentences, or after it re-armed recognition but before its
    answer starts (a busy machine), so the caller answers words that end in a
    question or a goodbye at once, anything else once the bot has stayed quiet
    for a moment ("Which doctor…? Or any doctor."). ``wait_until_listening`` can
    return False while the call is up (the flag was set and cleared again
    before this greenlet ran), so False does not mean the call is over.
    None: the call ended.
    """
    turns = sim.call.channel.turns
    deadline = time.monotonic() + timeout
    heard, since = "", 0.0
    while not sim.call.ended and time.monotonic() < deadline:
        if not sim.call.wait_until_listening(max(0.0, deadline - time.monotonic())):
            gevent.sleep(0.01)
            continue
        last_caller = max((i for i, t in enumerate(turns) if t.speaker == "caller"), default=-1)
        now_heard = " ".join(t.text for t in turns[last_caller + 1:]
                             if t.speaker == "bot" and FILLER_TEXT not in t.text)
        if now_heard.rstrip().endswith("?") or "goodbye" in now_heard.lower():
            return now_heard
        if now_heard != heard:
            heard, since = now_heard, time.monotonic()
        elif heard and time.monotonic() - since > 0.5:
            return heard
        gevent.sleep(0.02)
    return None if sim.call.ended else heard


def drive(sim: SimCall, persona: dict[str, str], max_lines: int = 16) -> None:
    """Answer the bot until it says goodbye, transfers or hangs up."""
    for _ in range(max_lines):
        heard = wait_for_question(sim)
        line = None if heard is None else next_line(heard, persona)
        if line is None:
            break
        sim.call.say(line)
    if not sim.call.ended:
        wait_for_question(sim)
        sim.call.hang_up()
    sim.call.wait_ended(20)


# -- the tests ------------------------------------------------------------------------------------

def persona_for(n: int) -> dict[str, str]:
    """Caller ``n``: a doctor, day and part of day no other caller wants, a name."""
    return {"opening": f"I'd like to book an appointment with Dr. {['Smith', 'Jones'][n % 2]}",
            "day": f"next {WEEKDAYS[n // 2 % 5]} {['morning', 'afternoon'][n // 10 % 2]}",
            "name": f"{FIRST[n % 5]} {LAST[n // 5 % 4]}"}


@dataclass
class Placed:
    sim: SimCall
    timeline: Timeline
    session: Session
    transcript: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        turns = "\n".join(f"{x.at_ms:6d} ms {x.speaker}: {x.text}"
                          for x in self.sim.call.channel.turns)
        return f"{turns}\n{self.timeline.describe()}"

    @property
    def label(self) -> str:
        s = self.session
        plan = s.kind if s.kind in ("ok", "slow") else f"{s.kind} from request {s.fail_from}"
        return f"{self.sim.call.uuid[:8]} {plan} -> {self.transcript.get('outcome')}"


def place_calls(tmp_path: Any, plans: list[tuple[str, int]], personas: list[dict[str, str]],
                scale: float = SCALE, agent_scale: float | None = None) -> list[Placed]:
    """All calls at once into ``start_local_bot``; returns once every call is over.

    ``scale`` is the emulator's ``time_scale`` and, unless ``agent_scale`` is
    given, the factor of every resilience timing.
    """
    agent_scale = scale if agent_scale is None else agent_scale
    tenants = make_db(tmp_path, TENANTS, days=14)
    tenant = tenants.get("sunrise")
    client = new_client("us-east-1")  # one client for every call, as in production
    fake = FakeBedrock(client)

    def agent_factory(t: Any) -> Any:
        """The production wrapping around a Bedrock agent on the stubbed client."""
        primary = BedrockAgent(t, client=client, end_timeout_s=3.0 * agent_scale)
        return make_tenant_agent(t, primary=primary, filler_after_s=1.2 * agent_scale,
                                 filler_every_s=2.5 * agent_scale, timeout_s=8.0 * agent_scale,
                                 max_turn_s=12.0 * agent_scale)

    bot = start_local_bot(tenants, providers=ProviderCache(agent_factory=agent_factory))
    rng = random.Random(SEED)
    placed: list[Placed] = []
    try:
        for n, (kind, fail_from) in enumerate(plans):
            switch = Switch(time_scale=scale)  # one per call: its own wire timeline
            sim = SimCall(bot.address, "1001", caller=f"+1555020{n:04d}", time_scale=scale,
                          switch=switch)
            session = fake.sessions[sim.call.uuid] = Session(
                kind, fail_from, random.Random(rng.random()), tenant.tz, scale)
            placed.append(Placed(sim, Timeline(switch), session))

        def one(n: int, p: Placed, persona: dict[str, str]) -> None:
            gevent.sleep(n * STAGGER)
            p.sim.start()
            drive(p.sim, persona)

        gevent.joinall([gevent.spawn(one, n, p, persona)
                        for n, (p, persona) in enumerate(zip(placed, personas, strict=True))],
                       timeout=60, raise_error=True)
        wait_until(lambda: bot.server.active_calls == 0 and bot.server.connections == 0)
        for p in placed:
            p.transcript = transcript_for(p.sim, bot)
    finally:
        bot.stop()
    return placed


def bookings_by_call() -> dict[str, int]:
    counts: dict[str, int] = {}
    for appt in service.list_appointments("sunrise"):
        counts[appt.call_id or ""] = counts.get(appt.call_id or "", 0) + 1
    return counts


def test_twenty_calls_through_the_engine_while_bedrock_fails(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    rng = random.Random(SEED)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    plans = [(kind, rng.randrange(0, 8)) for kind in kinds]
    personas = [persona_for(n) for n in range(CALLS)]
    personas[5]["day"] = "actually, can I speak to a person please"  # a transfer
    personas[12]["opening"] = "what are your opening hours"  # then a goodbye
    placed = place_calls(tmp_path, plans, personas)
    elapsed = time.monotonic() - started

    report = []
    endings: dict[str, int] = {}
    booked = bookings_by_call()
    for p in placed:
        t, summary = p.transcript, p.sim.call.transcript
        said = [x["text"] for x in t["turns"] if x["speaker"] == "bot"]
        worst, where = p.timeline.worst_silence()
        label = f"{p.label} (worst silence {worst / SCALE:.2f} s scaled up, {where})"
        report.append(label)
        label += "\n" + p.describe()  # for a failure: what the emulator heard, and when
        assert p.sim.call.ended, label
        assert worst <= MAX_SILENCE, label
        # the greeting is not an answer to the caller; the spec's 3 s, unscaled, as a
        # generous bound for twenty connections being set up on a busy machine
        assert p.timeline.greeting_delay() <= 3.0, label
        if t["outcome"] == "booked":
            ending = "booked"
            assert t["confirmation"] and booked.get(t["call_id"], 0) >= 1, label
            assert any("confirmation code" in x for x in said), label
        elif t["outcome"] == "handoff":
            ending = "handoff"
            assert summary["transfer_to"] == "user/1000", label
        else:
            ending = "goodbye"
            assert said and "goodbye" in said[-1].lower(), label
            if t["outcome"] == "error":  # never without an apology
                assert any(x in " ".join(said) for x in (TROUBLE_TEXT, GOODBYE_TEXT,
                                                         TRANSFER_TEXT, "sorry")), label
            else:
                assert t["outcome"] in ("completed", "message_taken", "no_input"), label
        endings[ending] = endings.get(ending, 0) + 1
        if p.session.kind == "slow" or (p.session.kind == "stall" and p.session.failed):
            assert p.timeline.fillers() >= 1, label  # the engine spoke the filler
    print("\n".join(report), f"\nendings {endings}; {elapsed:.1f} s")

    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert not crashes, [r.getMessage() for r in crashes]
    assert sum(p.session.failed > 0 for p in placed) >= 10  # the seed breaks most calls
    assert sum(p.session.kind == "slow" for p in placed) >= 1  # fillers without a failure
    assert endings.get("booked", 0) >= CALLS // 2  # the local agent finishes what Bedrock began
    assert endings.get("handoff") and endings.get("goodbye")
    assert elapsed < 60


def test_a_failure_right_after_the_booking_does_not_book_twice(tmp_path):
    # requests: 0 opening, 1-2 search, 3 the slot, 4 the name, 5 "yes" -> confirmAppointment
    # runs here, 6 the tool result goes back to Bedrock and fails
    # fast media, production timings: no timeout can move the failure to another request
    (p,) = place_calls(tmp_path, [("http500", 6)], [persona_for(0)], scale=0.05,
                       agent_scale=1.0)
    assert p.session.failed
    assert p.transcript["outcome"] == "booked"
    assert bookings_by_call().get(p.transcript["call_id"]) == 1
