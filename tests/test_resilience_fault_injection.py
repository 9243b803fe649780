"""Fault injection: 20 conversations while the Bedrock agent fails at random.

The primary is the real BedrockAgent; its HTTP layer (a botocore before-send
hook) answers normally for a while, then fails in a random way (HTTP 429, an
in-stream throttlingException, a malformed frame, a stalled stream, 403, a
read timeout). ResilientAgent falls back to the real LocalAgent over a real
SQLite database. Every call must end in a booking, a transfer or a goodbye,
never in silence (no gap above 3 s, scaled) or an exception.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import gevent
import gevent.event
import pytest
from aws_fixtures.eventstream import Responder, bedrock_events, error_response, stream_response
from botocore.exceptions import ReadTimeoutError

from esl_app.providers.agent.base import CallContext, Utterance
from esl_app.providers.agent.bedrock import BedrockAgent, new_client
from esl_app.providers.resilience import ResilientAgent

SCALE = 0.3  # 3 s of allowed silence becomes 0.9 s: scaled, yet robust to a busy CI machine
NOW = datetime(2026, 11, 23, 14, 0, tzinfo=ZoneInfo("America/New_York"))
SCRIPT = ["I need an appointment with Dr. Smith", "tomorrow morning", "the first one",
          "Ann Lee", "yes", "yes", "goodbye"]
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
"""


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def _stall():
    gevent.event.Event().wait()


def failure(kind):
    ok = bedrock_events([{"chunk": {"bytes": "Let me"}}])
    return {
        "http429": lambda: error_response(429, "ThrottlingException", "Rate exceeded"),
        "http500": lambda: error_response(500, "InternalServerException", "oops"),
        "http403": lambda: error_response(403, "AccessDeniedException", "denied"),
        "throttle_event": lambda: stream_response(bedrock_events([
            {"exception": {"type": "throttlingException", "message": "slow down"}}])),
        "malformed": lambda: stream_response([b"\x00\x00\x00\x10garbage-garbage!"]),
        "stall": lambda: stream_response(ok, before_each=_stall),
        "read_timeout": lambda: (_ for _ in ()).throw(
            ReadTimeoutError(endpoint_url="https://bedrock.invalid")),
    }[kind]


def flaky_bedrock(tenant, rng, client):
    fail_at = rng.randrange(0, 4)  # the request number that starts failing
    kind = rng.choice(["http429", "http500", "http403", "throttle_event", "malformed",
                       "stall", "read_timeout"])
    script = [stream_response(bedrock_events([{"chunk": {"bytes": "Sure, go on."}}]))
              for _ in range(fail_at)]
    script += [failure(kind)] * 20
    Responder(client, "InvokeAgent", script)
    return BedrockAgent(tenant, client=client), kind


def test_twenty_calls_with_a_failing_agent(tmp_path):
    from esl_app.providers.agent.local.dialogue import LocalAgent
    from esl_app.sim.testing import make_db

    tenant = make_db(tmp_path, TENANTS, days=7, now=NOW).get("sunrise")
    rng = random.Random(20261123)
    outcomes = {}

    # clients up front: building one is CPU work that would stall the hub mid-call
    # (production shares one client per region)
    clients = [new_client("us-east-1", read_timeout_s=60, connect_timeout_s=1)
               for _ in range(20)]

    def one_call(n):
        primary, kind = flaky_bedrock(tenant, rng, clients[n])
        audible = []
        agent = ResilientAgent(primary, LocalAgent(), filler_after_s=1.2 * SCALE,
                               filler_every_s=2.5 * SCALE, timeout_s=8.0 * SCALE,
                               max_turn_s=12.0 * SCALE,
                               on_filler=lambda call: audible.append(time.monotonic()))
        call = CallContext(call_id=f"call-{n}", tenant=tenant, caller=f"+1555000{n:04d}",
                           now=NOW)
        last = None
        silence = 0.0
        try:
            for line in SCRIPT:
                start = time.monotonic()
                audible.clear()
                last = agent.respond(call, Utterance(text=line))
                marks = [start] + audible + [time.monotonic()]
                silence = max([silence] + [b - a for a, b in zip(marks, marks[1:],
                                                                 strict=False)])
                if last.action != "continue":
                    break
        finally:
            agent.end(call)
        outcomes[n] = (kind, last, silence, agent.fell_back(call))

    # All twenty at once: SQLite writers queue cooperatively (esl_app.db.write_txn), so a
    # booking never stalls the hub in SQLite's C busy-wait while other calls wait.
    gevent.joinall([gevent.spawn(one_call, n) for n in range(20)], raise_error=True)
    assert len(outcomes) == 20
    kinds = set()
    for n, (kind, reply, silence, _why) in outcomes.items():
        kinds.add(kind)
        assert silence <= 3.0 * SCALE, f"call {n} ({kind}): {silence / SCALE:.1f} s silence"
        ended = reply.outcome == "booked" or reply.action in ("transfer", "hangup")
        assert ended, f"call {n} ({kind}) ended with {reply}"
    assert len(kinds) >= 4  # the seed exercises a spread of failure modes
