"""ResilientAgent: fillers, timeouts, safe retries, fallback, and never more than 3 s of silence.

Timing runs on the real gevent clock scaled down by SCALE (0.2): the 3 s
silence limit becomes 0.6 s. All scenarios run at once, in their own greenlets,
so the whole test takes a few seconds.
"""

from __future__ import annotations

import time

import gevent
import gevent.event
import pytest
from aws_fixtures.eventstream import Responder, bedrock_events, error_response, stream_response

from esl_app.config.tenants import parse_tenants
from esl_app.providers.agent.base import AgentError, AgentReply, CallContext, Utterance
from esl_app.providers.agent.bedrock import BedrockAgent, BedrockAgentError, new_client
from esl_app.providers.resilience import ResilientAgent

SCALE = 0.2
MAX_SILENCE = 3.0 * SCALE

TENANTS = """
tenants:
  - id: sunrise
    name: Sunrise Family Clinic
    dids: ["1001"]
    timezone: America/New_York
    hours: {mon-fri: "08:00-17:00"}
    handoff: user/1000
    agent: bedrock
    bedrock: {agent_id: S2MOVY5G8J, alias_id: XOOC4XVDXZ, region: us-east-1}
    doctors: [{id: smith, name: Dr. Sarah Smith}]
  - id: nohuman
    name: No Human Clinic
    dids: ["1002"]
    timezone: America/New_York
    hours: {mon-fri: "08:00-17:00"}
    doctors: [{id: smith, name: Dr. Sarah Smith}]
"""
TENANT_SET = parse_tenants(TENANTS)


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


class ScriptedAgent:
    """A fake agent at the provider boundary: each turn follows the next step."""

    def __init__(self, name: str, *steps):
        self.name = name
        self.steps = list(steps)
        self.calls = 0
        self.ended = False

    def _step(self, call):
        self.calls += 1
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        kind, arg = step
        if kind == "hang":
            gevent.event.Event().wait()
        if kind == "sleep":
            gevent.sleep(arg * SCALE)
            return AgentReply(text=f"{self.name} answered")
        if kind == "raise":
            raise arg
        if kind == "none":
            return None
        return AgentReply(text=f"{self.name} answered")

    def greet(self, call):
        return self._step(call)

    def respond(self, call, utterance):
        return self._step(call)

    def end(self, call):
        self.ended = True
        raise RuntimeError("end must be contained")


def transient(safe=True):
    return BedrockAgentError("throttled", retry_safe=safe, transient=True,
                             code="throttlingException")


def make(primary, fallback=None, **kw):
    audible: list[float] = []
    agent = ResilientAgent(
        primary, fallback, filler_after_s=1.2 * SCALE, filler_every_s=2.5 * SCALE,
        timeout_s=8.0 * SCALE, max_turn_s=12.0 * SCALE,
        on_filler=lambda call: audible.append(time.monotonic()), **kw)
    return agent, audible


def run_turn(agent, audible, tenant_id="sunrise"):
    call = CallContext(call_id=f"c-{id(agent)}", tenant=TENANT_SET.get(tenant_id))
    start = time.monotonic()
    reply = agent.respond(call, Utterance(text="book me in"))
    audible.append(time.monotonic())
    marks = [start] + audible
    gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return call, reply, max(gaps)


def hanging_bedrock():
    """The real BedrockAgent whose HTTP stream stops delivering bytes."""
    tenant = TENANT_SET.get("sunrise")
    client = new_client("us-east-1", read_timeout_s=60, connect_timeout_s=1)
    frames = bedrock_events([{"chunk": {"bytes": "Let me"}}, {"chunk": {"bytes": " check"}}])
    n = {"i": 0}

    def stall():
        n["i"] += 1
        if n["i"] > 1:
            gevent.event.Event().wait()

    Responder(client, "InvokeAgent", [stream_response(frames, before_each=stall)])
    return BedrockAgent(tenant, client=client)


def throttled_then_ok_bedrock():
    tenant = TENANT_SET.get("sunrise")
    client = new_client("us-east-1", read_timeout_s=60, connect_timeout_s=1)
    responder = Responder(client, "InvokeAgent", [
        error_response(429, "ThrottlingException", "Rate exceeded"),
        stream_response(bedrock_events([{"chunk": {"bytes": "bedrock answered"}}])),
    ])
    return BedrockAgent(tenant, client=client), responder


SCENARIOS = {
    # name: (primary factory, fallback factory, expected reply text / action)
    "fast": (lambda: ScriptedAgent("primary", ("ok", None)), None, "primary answered"),
    "slow_ok": (lambda: ScriptedAgent("primary", ("sleep", 6.0)), None, "primary answered"),
    "hang_then_fallback": (lambda: ScriptedAgent("primary", ("hang", None)),
                           lambda: ScriptedAgent("local", ("ok", None)), "local answered"),
    "raise_unsafe": (lambda: ScriptedAgent("primary", ("raise", transient(safe=False))),
                     lambda: ScriptedAgent("local", ("ok", None)), "local answered"),
    "raise_then_retry_ok": (lambda: ScriptedAgent("primary", ("raise", transient()),
                                                  ("sleep", 2.0)),
                            lambda: ScriptedAgent("local", ("ok", None)), "primary answered"),
    "raise_then_retry_hangs": (lambda: ScriptedAgent("primary", ("raise", transient()),
                                                     ("hang", None)),
                               lambda: ScriptedAgent("local", ("ok", None)), "local answered"),
    "slow_5s_ok_fallback_hangs": (lambda: ScriptedAgent("primary", ("sleep", 5.0)),
                             lambda: ScriptedAgent("local", ("hang", None)), "primary answered"),
    "crash": (lambda: ScriptedAgent("primary", ("raise", ZeroDivisionError())),
              lambda: ScriptedAgent("local", ("ok", None)), "local answered"),
    "returns_none": (lambda: ScriptedAgent("primary", ("none", None)),
                     lambda: ScriptedAgent("local", ("ok", None)), "local answered"),
    "both_hang": (lambda: ScriptedAgent("primary", ("hang", None)),
                  lambda: ScriptedAgent("local", ("hang", None)), "transfer"),
    "both_fail": (lambda: ScriptedAgent("primary", ("raise", AgentError("x"))),
                  lambda: ScriptedAgent("local", ("raise", AgentError("y"))), "transfer"),
    "no_fallback": (lambda: ScriptedAgent("primary", ("hang", None)), None, "transfer"),
    "bedrock_stream_stalls": (hanging_bedrock,
                              lambda: ScriptedAgent("local", ("ok", None)), "local answered"),
}


def test_no_failure_mode_leaves_more_than_3s_of_silence():
    results = {}

    def scenario(name, primary_f, fallback_f, expected):
        agent, audible = make(primary_f(), fallback_f() if fallback_f else None)
        results[name] = run_turn(agent, audible) + (expected,)

    jobs = [gevent.spawn(scenario, name, *spec) for name, spec in SCENARIOS.items()]
    gevent.joinall(jobs, raise_error=True)
    for name, (_call, reply, silence, expected) in results.items():
        assert silence <= MAX_SILENCE, f"{name}: {silence / SCALE:.2f} s of silence"
        if expected == "transfer":
            assert reply.action == "transfer" and reply.transfer_to == "user/1000", name
        else:
            assert reply.text == expected, name


def test_filler_only_when_slow():
    agent, audible = make(ScriptedAgent("primary", ("sleep", 0.5)))
    _call, reply, _ = run_turn(agent, audible)
    assert reply.text == "primary answered"
    assert len(audible) == 1  # just the reply
    agent, audible = make(ScriptedAgent("primary", ("sleep", 4.0)))
    run_turn(agent, audible)
    assert len(audible) == 3  # fillers at 1.2 s and 3.7 s, then the reply


def test_fallback_sticks_for_the_rest_of_the_call():
    primary = ScriptedAgent("primary", ("raise", transient(safe=False)), ("ok", None))
    local = ScriptedAgent("local", ("ok", None))
    agent, _ = make(primary, local)
    call = CallContext(call_id="c1", tenant=TENANT_SET.get("sunrise"))
    assert agent.respond(call, Utterance(text="a")).text == "local answered"
    assert agent.fell_back(call) and call.state["resilience"]["fallback"]
    assert agent.respond(call, Utterance(text="b")).text == "local answered"
    assert primary.calls == 1
    agent.end(call)  # both ends called, exceptions contained
    assert primary.ended and local.ended
    assert agent.fell_back(call) is None


def test_transfer_policy_and_goodbye_without_handoff():
    agent, _ = make(ScriptedAgent("primary", ("raise", AgentError("x"))),
                    ScriptedAgent("local", ("ok", None)), on_failure="transfer")
    call = CallContext(call_id="c2", tenant=TENANT_SET.get("sunrise"))
    reply = agent.respond(call, Utterance(text="a"))
    assert reply.action == "transfer" and reply.outcome == "handoff"
    agent, _ = make(ScriptedAgent("primary", ("raise", AgentError("x"))))
    call = CallContext(call_id="c3", tenant=TENANT_SET.get("nohuman"))
    reply = agent.greet(call)
    assert reply.action == "hangup" and "Goodbye" in reply.text


def test_real_bedrock_throttled_once_is_retried():
    bedrock, responder = throttled_then_ok_bedrock()
    local = ScriptedAgent("local", ("ok", None))
    agent, audible = make(bedrock, local)
    _call, reply, silence = run_turn(agent, audible)
    assert reply.text == "bedrock answered"
    assert len(responder.requests) == 2 and local.calls == 0
    assert silence <= MAX_SILENCE
