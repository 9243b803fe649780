"""Latency profiles: seeded draws within the published ranges, cache hits stay free."""

from __future__ import annotations

import pytest

from esl_app.providers.stt.base import TranscriptEvent
from esl_app.providers.tts.base import PlayInstruction
from esl_app.sim.latency import (
    CLOUD,
    LOCAL,
    Delays,
    SlowAgent,
    SlowStt,
    SlowTts,
    get_profile,
    make_provider_cache,
)

FAST = CLOUD.__class__("fast", stt_final_ms=(1, 2), agent_ms=(1, 2), tts_first_audio_ms=(1, 2))


def test_profiles_and_seeded_draws():
    assert get_profile("local") is LOCAL and not LOCAL.adds_latency
    with pytest.raises(ValueError, match="cloud"):
        get_profile("moon")
    a, b = Delays(CLOUD, seed=5), Delays(CLOUD, seed=5)
    draws = [a.draw("agent") for _ in range(50)]
    assert draws == [b.draw("agent") for _ in range(50)]
    assert all(0.5 <= d <= 1.5 for d in draws)
    assert all(0.1 <= a.draw("stt") <= 0.3 for _ in range(50))
    assert all(0.2 <= a.draw("tts") <= 0.5 for _ in range(50))
    assert Delays(LOCAL).draw("agent") == 0.0


class _Agent:
    name = "inner"

    def greet(self, call):
        return "hello"

    def respond(self, call, utterance):
        return utterance

    def end(self, call):
        self.ended = True


class _Tts:
    name = "t"

    def __init__(self, cached: bool) -> None:
        self.cached = cached

    def synthesize(self, text, *, voice, sample_rate, language="en-US"):
        return PlayInstruction("playback", "/x.wav", text, cached=self.cached)


def test_wrappers_delegate_and_count_waits():
    d = Delays(FAST, seed=1)
    agent = SlowAgent(_Agent(), d)
    assert agent.greet(None) == "hello" and agent.respond(None, "u") == "u"
    agent.end(None)
    assert d.count["agent"] == 2
    SlowTts(_Tts(cached=True), d).synthesize("hi", voice="Joanna", sample_rate=8000)
    assert d.count["tts"] == 0  # a cache hit never reaches Polly
    out = SlowTts(_Tts(cached=False), d).synthesize("hi", voice="Joanna", sample_rate=8000)
    assert out.text == "hi" and d.count["tts"] == 1


class _Stream:
    def __init__(self, on_event):
        self.on_event = on_event
        self.closed = False

    def feed(self, pcm):
        self.on_event(TranscriptEvent("partial", "bo"))

    def finalize(self):
        self.on_event(TranscriptEvent("final", "book"))

    def set_hints(self, hints):
        pass

    def close(self):
        self.closed = True


class _Stt:
    name = "s"

    def open_stream(self, call_id, sample_rate, language, on_event, hints=()):
        return _Stream(on_event)


def test_slow_stt_holds_back_only_finals():
    import gevent

    got = []
    stream = SlowStt(_Stt(), Delays(FAST, seed=2)).open_stream("c", 8000, "en-US", got.append)
    stream.feed(b"\0" * 320)
    stream.finalize()
    assert [e.kind for e in got] == ["partial"]
    gevent.sleep(0.05)
    assert [e.kind for e in got] == ["partial", "final"]
    stream.finalize()
    stream.close()  # a pending final is dropped with the stream
    gevent.sleep(0.05)
    assert len(got) == 2 and stream.inner.closed


def test_provider_cache_per_profile():
    from esl_app.runtime.wiring import ProviderCache

    assert type(make_provider_cache("local")) is ProviderCache
    assert hasattr(make_provider_cache("cloud", seed=1), "delays")


def test_cloud_stt_profile_adds_only_the_recognisers_latency():
    # the turn then holds our own work alone, under the load of real-time frames
    from esl_app.sim.latency import CLOUD_STT, EmulatedPolly

    prof = get_profile("cloud-stt")
    assert prof is CLOUD_STT and prof.stt_final_ms == CLOUD.stt_final_ms
    cache = make_provider_cache(prof, seed=1)
    cache._agent_factory = lambda tenant: _Agent()
    agent = cache.agent_for(type("T", (), {"id": "t", "agent": "local"})())
    assert isinstance(agent, _Agent)  # not a SlowAgent: it answers at once
    tts = cache.tts_for(None, "polly")
    assert isinstance(tts, EmulatedPolly)  # prompts still written, as Polly's would be
    assert all(cache.delays.draw("tts") == 0.0 for _ in range(20))
    assert 0.1 <= cache.delays.draw("stt") <= 0.3 and cache.delays.draw("agent") == 0.0


def test_server_log_problems_are_counted_by_kind_without_ids() -> None:
    from esl_app.sim.loadtest import _log_problem

    a = _log_problem("2026-11-30 12:00:01,123 WARNING esl_app.telephony.call: "
                     "call 3f2a9c1e-1b2c-4d5e-8f90-123456789abc: agent failed: timed out")
    b = _log_problem("2026-11-30 12:00:02,456 WARNING esl_app.telephony.call: "
                     "call 9a8b7c6d-1b2c-4d5e-8f90-abcdefabcdef: agent failed: timed out")
    assert a == b == "WARNING esl_app.telephony.call: call #: agent failed: timed out"
    assert _log_problem("2026-11-30 12:00:02,456 INFO esl_app.x: fine") is None
    assert _log_problem("Traceback (most recent call last):") is None
