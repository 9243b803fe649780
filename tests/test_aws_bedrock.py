"""BedrockAgent against botocore's real request serialiser, event-stream decoder and parser.

Responses are recorded payloads (tests/aws_fixtures) encoded with the SDKs'
own serialisers and handed to botocore by a ``before-send`` hook: no network.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from aws_fixtures.eventstream import (
    Responder,
    bedrock_events,
    encode_event,
    error_response,
    load,
    stream_response,
)
from botocore.exceptions import ReadTimeoutError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

from esl_app.config.tenants import parse_tenants
from esl_app.providers.agent.base import CallContext, Utterance
from esl_app.providers.agent.bedrock import BedrockAgent, BedrockAgentError, new_client

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
    doctors:
      - {id: smith, name: Dr. Sarah Smith}
"""
NOW = datetime(2026, 11, 23, 23, 30, tzinfo=ZoneInfo("UTC"))  # 18:30 Mon in New York


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def tenant():
    return parse_tenants(TENANTS).get("sunrise")


@pytest.fixture
def client():
    return new_client("us-east-1", read_timeout_s=2, connect_timeout_s=1)


def call_for(tenant, **kw):
    return CallContext(call_id="call-1", tenant=tenant, caller="+15550001111", did="1001",
                       now=NOW, **kw)


def test_multi_chunk_answer_and_session_attributes(tenant, client):
    frames = bedrock_events(load("bedrock_chunks.json")["events"])
    # cut the byte stream at odd places: frames straddle network reads
    responder = Responder(client, "InvokeAgent", [stream_response(frames, split=7)])
    agent = BedrockAgent(tenant, client=client)
    call = call_for(tenant)
    reply = agent.respond(call, Utterance(text="I need an appointment"))
    assert reply.text == "Sure. Which doctor would you like to see, Dr. Smith or Dr. Patel?"
    assert reply.action == "continue"
    body = responder.requests[0]
    assert body["inputText"] == "I need an appointment"
    assert body["enableTrace"] is True
    assert body["sessionState"]["sessionAttributes"] == {
        "tenantId": "sunrise", "tenantTimezone": "America/New_York",
        "today": "2026-11-23", "weekday": "Monday", "callerNumber": "+15550001111"}
    assert "/agents/S2MOVY5G8J/agentAliases/XOOC4XVDXZ/sessions/call-1/text" in responder.urls[0]
    assert agent.invocations == 1
    assert call.state["bedrock"]["invocations"] == 1


def test_lambda_booking_seen_in_trace(tenant, client):
    frames = bedrock_events(load("bedrock_lambda_booking.json")["events"])
    Responder(client, "InvokeAgent", [stream_response(frames)])
    reply = BedrockAgent(tenant, client=client).respond(call_for(tenant), Utterance(text="yes"))
    assert reply.outcome == "booked"
    assert reply.confirmation == "K7M-4Q2"
    assert reply.appointment == {"doctor": "smith", "start": "2026-11-24T09:00:00-05:00"}
    # the code is marked up so Polly spells it
    assert '<say-as interpret-as="characters">K7M-4Q2</say-as>' in reply.text


def test_lambda_handoff_becomes_transfer(tenant, client):
    frames = bedrock_events(load("bedrock_lambda_handoff.json")["events"])
    Responder(client, "InvokeAgent", [stream_response(frames)])
    reply = BedrockAgent(tenant, client=client).respond(
        call_for(tenant), Utterance(text="a person please"))
    assert reply.action == "transfer"
    assert reply.transfer_to == "user/1000"
    assert reply.outcome == "handoff"
    assert reply.text == "I'll transfer you to our front desk now."


def test_http_429_throttling(tenant, client):
    Responder(client, "InvokeAgent",
              [error_response(429, "ThrottlingException", "Rate exceeded")])
    with pytest.raises(BedrockAgentError) as info:
        BedrockAgent(tenant, client=client).respond(call_for(tenant), Utterance(text="hi"))
    assert info.value.code == "ThrottlingException"
    assert info.value.transient and info.value.retry_safe


def test_access_denied_is_not_transient(tenant, client):
    Responder(client, "InvokeAgent",
              [error_response(403, "AccessDeniedException", "no")])
    with pytest.raises(BedrockAgentError) as info:
        BedrockAgent(tenant, client=client).respond(call_for(tenant), Utterance(text="hi"))
    assert not info.value.transient


def test_throttling_event_mid_stream(tenant, client):
    frames = bedrock_events([{"chunk": {"bytes": "Let me "}},
                             {"exception": {"type": "throttlingException",
                                            "message": "Your request rate is too high."}}])
    Responder(client, "InvokeAgent", [stream_response(frames)])
    with pytest.raises(BedrockAgentError) as info:
        BedrockAgent(tenant, client=client).respond(call_for(tenant), Utterance(text="hi"))
    assert info.value.code == "throttlingException"
    assert info.value.transient and info.value.retry_safe


def test_throttling_after_lambda_booking_is_not_retry_safe(tenant, client):
    events = load("bedrock_lambda_booking.json")["events"][:2]  # the confirm invocation
    frames = bedrock_events(events + [{"exception": {"type": "internalServerException",
                                                     "message": "boom"}}])
    Responder(client, "InvokeAgent", [stream_response(frames)])
    with pytest.raises(BedrockAgentError) as info:
        BedrockAgent(tenant, client=client).respond(call_for(tenant), Utterance(text="yes"))
    assert info.value.transient and not info.value.retry_safe


def test_read_timeout_before_response(tenant, client):
    def hang():
        raise ReadTimeoutError(endpoint_url="https://bedrock-agent-runtime.invalid")

    Responder(client, "InvokeAgent", [hang])
    with pytest.raises(BedrockAgentError) as info:
        BedrockAgent(tenant, client=client).respond(call_for(tenant), Utterance(text="hi"))
    assert info.value.transient and info.value.retry_safe


def test_read_timeout_mid_stream(tenant, client):
    frames = bedrock_events([{"chunk": {"bytes": "Let me check"}}])
    Responder(client, "InvokeAgent", [stream_response(
        frames, fail=Urllib3ReadTimeout(None, None, "Read timed out."))])
    with pytest.raises(BedrockAgentError) as info:
        BedrockAgent(tenant, client=client).respond(call_for(tenant), Utterance(text="hi"))
    assert info.value.transient


@pytest.mark.parametrize("corrupt", ["checksum", "truncated", "garbage"])
def test_malformed_stream(tenant, client, corrupt):
    frame = encode_event("bedrock-agent-runtime", "InvokeAgent", "chunk", {"bytes": b"Hello"})
    if corrupt == "checksum":
        data = frame[:-1] + bytes([frame[-1] ^ 0xFF])
    elif corrupt == "truncated":
        data = frame[: len(frame) // 2]
    else:
        data = b"\x00\x00\x00\x05not an event stream at all"
    Responder(client, "InvokeAgent", [stream_response([data])])
    with pytest.raises(BedrockAgentError):
        BedrockAgent(tenant, client=client).respond(call_for(tenant), Utterance(text="hi"))


def test_empty_completion_is_an_error(tenant, client):
    Responder(client, "InvokeAgent", [stream_response([])])
    with pytest.raises(BedrockAgentError) as info:
        BedrockAgent(tenant, client=client).respond(call_for(tenant), Utterance(text="hi"))
    assert info.value.code == "empty"


def test_dtmf_and_empty_input(tenant, client):
    frames = bedrock_events([{"chunk": {"bytes": "Thanks."}}])
    responder = Responder(client, "InvokeAgent", [stream_response(frames)])
    agent = BedrockAgent(tenant, client=client)
    assert agent.respond(call_for(tenant), Utterance(dtmf="12")).text == "Thanks."
    assert "1 2" in responder.requests[0]["inputText"]
    assert agent.respond(call_for(tenant), Utterance(text="  ")).text.startswith("Sorry")
    assert len(responder.requests) == 1


def test_end_session(tenant, client):
    responder = Responder(client, "InvokeAgent",
                          [stream_response(bedrock_events([{"chunk": {"bytes": "Bye."}}]))])
    agent = BedrockAgent(tenant, client=client)
    agent.end(call_for(tenant))
    assert responder.requests[0]["endSession"] is True
    # a failing end never raises
    Responder(client, "InvokeAgent", [error_response(500, "InternalServerException", "x")])
    agent.end(call_for(tenant))


def test_greet_needs_no_round_trip(tenant, client):
    responder = Responder(client, "InvokeAgent", [])
    assert BedrockAgent(tenant, client=client).greet(call_for(tenant)).text
    assert responder.requests == []


# -- RETURN_CONTROL: the tools run here, against a real database ----------------

@pytest.fixture
def db_tenant(tmp_path):
    from esl_app.sim.testing import make_db

    tenants = make_db(tmp_path, TENANTS, days=7, now=NOW)
    return tenants.get("sunrise")


def _sub(events, **values):
    text = json.dumps(events)
    for key, value in values.items():
        text = text.replace(f"${key}", value)
    return json.loads(text)


def test_return_control_search_then_book(db_tenant, client):
    fx = load("bedrock_return_control.json")
    responder = Responder(client, "InvokeAgent", [
        stream_response(bedrock_events(fx["first"])),
        stream_response(bedrock_events(fx["second"])),
    ])
    agent = BedrockAgent(db_tenant, client=client)
    call = call_for(db_tenant)
    reply = agent.respond(call, Utterance(text="Dr. Smith, tomorrow morning"))
    assert reply.text.startswith("Dr. Smith has openings")
    # the second request carries our tool results, not text
    second = responder.requests[1]
    assert "inputText" not in second
    state = second["sessionState"]
    assert state["invocationId"] == "inv-42"
    (result,) = state["returnControlInvocationResults"]
    api = result["apiResult"]
    assert (api["apiPath"], api["httpMethod"], api["httpStatusCode"]) == ("/searchSlots", "GET",
                                                                          200)
    body = json.loads(api["responseBody"]["application/json"]["body"])
    assert body["ok"] and body["slots"]
    slot = body["slots"][0]
    assert slot["doctor"] == "smith" and slot["start"].startswith("2026-11-24T")
    assert state["sessionAttributes"]["tenantId"] == "sunrise"

    # book it through a function-details RETURN_CONTROL group
    responder.script += [
        stream_response(bedrock_events(_sub(fx["confirm"], SLOT=slot["slot_id"]))),
    ]
    # the final answer quotes the code we produced: fill it in when we see the request

    def answer():
        results = responder.requests[-1]["sessionState"]["returnControlInvocationResults"]
        fr = results[0]["functionResult"]
        code = json.loads(fr["responseBody"]["TEXT"]["body"])["confirmation"]
        return stream_response(bedrock_events(_sub(fx["confirm_answer"], CODE=code)))

    responder.script.append(answer)
    reply = agent.respond(call, Utterance(text="yes, Ann Lee"))
    assert reply.outcome == "booked"
    assert reply.confirmation and f">{reply.confirmation}</say-as>" in reply.text
    assert reply.appointment["start"] == slot["start"]

    from esl_app.scheduling import service
    appt = service.get_appointment("sunrise", reply.confirmation)
    assert appt.patient_name == "Ann Lee"
    assert appt.call_id == "call-1"
    assert appt.phone == "+15550001111"


def test_return_control_handoff(db_tenant, client):
    fx = load("bedrock_return_control.json")
    responder = Responder(client, "InvokeAgent", [stream_response(bedrock_events(fx["handoff"]))])
    reply = BedrockAgent(db_tenant, client=client).respond(call_for(db_tenant),
                                                           Utterance(text="a human"))
    assert reply.action == "transfer" and reply.transfer_to == "user/1000"
    assert len(responder.requests) == 1  # no need to ask the model how to say it


def test_return_control_taken_slot_reports_409(db_tenant, client):
    fx = load("bedrock_return_control.json")
    responder = Responder(client, "InvokeAgent", [
        stream_response(bedrock_events(_sub(fx["confirm"], SLOT="no-such-slot"))),
        stream_response(bedrock_events([{"chunk": {"bytes": "That time is gone."}}])),
    ])
    reply = BedrockAgent(db_tenant, client=client).respond(call_for(db_tenant),
                                                           Utterance(text="book it"))
    assert reply.outcome is None
    fr = responder.requests[1]["sessionState"]["returnControlInvocationResults"][0]
    body = json.loads(fr["functionResult"]["responseBody"]["TEXT"]["body"])
    assert body["ok"] is False
