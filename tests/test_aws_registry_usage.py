"""The provider table and the per-call usage/cost record."""

from __future__ import annotations

import pytest

from esl_app.config.tenants import parse_tenants
from esl_app.providers import registry
from esl_app.providers.registry import ProviderUnavailable, make_agent, make_stt, make_tts
from esl_app.providers.usage import (
    DEFAULT_PRICES,
    CallUsage,
    Prices,
    estimate_cost,
    prices_from_env,
)

TENANTS = parse_tenants("""
tenants:
  - id: sunrise
    name: Sunrise
    dids: ["1001"]
    timezone: America/New_York
    hours: {mon-fri: "08:00-17:00"}
    agent: bedrock
    bedrock: {agent_id: A1, alias_id: B2, region: eu-west-1}
    doctors: [{id: smith, name: Dr. Smith}]
  - id: plain
    name: Plain
    dids: ["1002"]
    timezone: America/New_York
    hours: {mon-fri: "08:00-17:00"}
    doctors: [{id: smith, name: Dr. Smith}]
""")


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("IVR_AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")


def test_table_builds_every_aws_provider(tmp_path, monkeypatch):
    agent = make_agent("bedrock", TENANTS.get("sunrise"))
    assert agent.name == "bedrock" and agent.tenant.bedrock.region == "eu-west-1"
    monkeypatch.setenv("IVR_TRANSCRIBE_VOCABULARY", "ivr-{tenant}")
    stt = make_stt("transcribe", TENANTS.get("sunrise"))
    assert (stt.name, stt.region, stt.vocabulary_name) == ("transcribe", "us-west-2",
                                                           "ivr-sunrise")
    tts = make_tts("polly", TENANTS.get("sunrise"), region="ca-central-1", cache_dir=tmp_path)
    assert (tts.name, tts.region) == ("polly", "ca-central-1")


def test_local_and_freeswitch_entries_exist():
    for table in (registry.AGENTS, registry.STT, registry.TTS):
        assert "local" in table
    assert set(registry.STT) == {"local", "transcribe", "freeswitch"}
    assert set(registry.TTS) == {"local", "polly", "freeswitch"}


def test_unknown_name_and_tenant_without_bedrock():
    with pytest.raises(ProviderUnavailable, match="unknown tts provider 'azure'"):
        make_tts("azure")
    with pytest.raises(ProviderUnavailable, match="no 'bedrock' configuration"):
        make_agent("bedrock", TENANTS.get("plain"))


def test_missing_extra_names_the_install(monkeypatch):
    # a vendor module whose SDK import fails (as without `pip install ivr[aws]`)
    monkeypatch.setitem(registry.TTS, "polly", ("boto3.not_installed", "PollyTts", "aws"))
    with pytest.raises(ProviderUnavailable, match=r"pip install ivr\[aws\]"):
        make_tts("polly")


def test_usage_round_trip_and_cost():
    u = CallUsage(stt_provider="transcribe", tts_provider="polly", agent_provider="bedrock")
    u.add_stt(118.0, new_stream=True)
    u.add_tts("Thank you for calling Sunrise Family Clinic.", cached=True)
    u.add_tts("x" * 500, cached=False)
    u.add_agent_turn("I need an appointment", "Sure, with which doctor?", invocations=2)
    for _ in range(4):
        u.add_agent_turn("a" * 40, "b" * 120)
    again = CallUsage.from_dict(dict(u.to_dict(), future_field=1))
    assert again == u
    cost = estimate_cost(u)
    assert cost["stt"] == round(118 / 60 * 0.024, 4)
    assert cost["tts"] == round(500 / 1e6 * 16, 4)  # the cached greeting is free
    assert 0 < cost["agent"] < 0.01
    assert cost["total"] == pytest.approx(cost["stt"] + cost["tts"] + cost["agent"], abs=2e-4)
    assert 0.03 < cost["total"] < 0.08  # "about $0.05 a call"


def test_local_providers_cost_nothing_and_minimum_billing():
    local = CallUsage(stt_provider="local", tts_provider="local", agent_provider="local",
                      stt_seconds=100, tts_chars=900, agent_invocations=5)
    assert estimate_cost(local)["total"] == 0
    short = CallUsage(stt_provider="transcribe", stt_seconds=3, stt_streams=1)
    assert estimate_cost(short)["stt"] == round(15 / 60 * 0.024, 4)
    std = CallUsage(tts_provider="polly", tts_engine="standard", tts_chars=1_000_000)
    assert estimate_cost(std)["tts"] == 4.0


def test_price_table_overrides_and_errors():
    p = prices_from_env({"IVR_PRICES": '{"transcribe_per_minute": 0.015, "currency": "EUR"}'})
    assert p.transcribe_per_minute == 0.015 and p.currency == "EUR"
    assert prices_from_env({}) is DEFAULT_PRICES
    with pytest.raises(ValueError, match="unknown key 'polly'"):
        Prices.from_mapping({"polly": 1})
    with pytest.raises(ValueError, match="transcribe_per_minute"):
        Prices.from_mapping({"transcribe_per_minute": "cheap"})
    with pytest.raises(ValueError, match="IVR_PRICES"):
        prices_from_env({"IVR_PRICES": "[1]"})
