"""Opt-in live smoke test: one call's worth of Polly → Transcribe → Bedrock Agent → Polly.

Run with ``IVR_LIVE_AWS=1 pytest -m aws`` and AWS credentials in the standard
chain. The Bedrock part also needs ``IVR_LIVE_BEDROCK_AGENT_ID`` and
``IVR_LIVE_BEDROCK_ALIAS_ID`` (an agent deployed by cdk/). Skipped otherwise;
never runs in CI.
"""

from __future__ import annotations

import os
import uuid
import wave

import gevent
import gevent.event
import pytest

from esl_app.config.tenants import parse_tenants
from esl_app.providers.agent.base import CallContext, Utterance

pytestmark = pytest.mark.aws


def _live() -> None:
    if os.environ.get("IVR_LIVE_AWS") != "1":
        pytest.skip("live AWS tests need IVR_LIVE_AWS=1")
    import boto3

    if boto3.Session().get_credentials() is None:
        pytest.skip("no AWS credentials")


def test_one_call_through_all_three_services(tmp_path):
    _live()
    from esl_app.providers.agent.bedrock import BedrockAgent
    from esl_app.providers.stt.transcribe import TranscribeStt
    from esl_app.providers.tts.polly import PollyTts

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    polly = PollyTts(region, cache_dir=tmp_path)
    caller = polly.synthesize("I would like to book an appointment with Doctor Smith.",
                              voice="Matthew", sample_rate=8000)
    with wave.open(caller.arg) as w:
        pcm = w.readframes(w.getnframes())

    finals: list[str] = []
    done = gevent.event.Event()

    def on_event(event):
        if event.kind in ("final", "error"):
            finals.append(f"{event.kind}:{event.text}")
            done.set()

    stream = TranscribeStt(region).open_stream(str(uuid.uuid4()), 8000, "en-US", on_event)
    try:
        for i in range(0, len(pcm), 320):  # real time, 20 ms frames
            stream.feed(pcm[i:i + 320])
            gevent.sleep(0.02)
        for _ in range(50):  # trailing silence lets the service end the result
            stream.feed(b"\0" * 320)
            gevent.sleep(0.02)
        stream.finalize()
        assert done.wait(10), "no transcript"
    finally:
        stream.close()
    assert finals[0].startswith("final:") and "appointment" in finals[0].lower()

    agent_id = os.environ.get("IVR_LIVE_BEDROCK_AGENT_ID")
    alias_id = os.environ.get("IVR_LIVE_BEDROCK_ALIAS_ID")
    if not (agent_id and alias_id):
        pytest.skip("Bedrock part needs IVR_LIVE_BEDROCK_AGENT_ID and IVR_LIVE_BEDROCK_ALIAS_ID")
    tenant = parse_tenants(f"""
tenants:
  - id: sunrise
    name: Sunrise Family Clinic
    dids: ["1001"]
    timezone: America/New_York
    hours: {{mon-fri: "08:00-17:00"}}
    handoff: user/1000
    agent: bedrock
    bedrock: {{agent_id: {agent_id}, alias_id: {alias_id}, region: {region}}}
    doctors: [{{id: smith, name: Dr. Sarah Smith}}]
""").get("sunrise")
    agent = BedrockAgent(tenant)
    call = CallContext(call_id=str(uuid.uuid4()), tenant=tenant, caller="+15550001111")
    try:
        reply = agent.respond(call, Utterance(text=finals[0].split(":", 1)[1]))
    finally:
        agent.end(call)
    assert reply.text
    spoken = polly.synthesize(reply.text, voice="Joanna", sample_rate=8000)
    assert spoken.duration_ms and spoken.duration_ms > 0
