"""A turn's own work without needless greenlet hand-offs, and nothing lost for it.

An in-process agent (the local one) answers on the call's own greenlet, and a
sentence the TTS can give at once (a cached prompt, FreeSWITCH's own ``speak``)
is played without a trip through the synthesis greenlet. Each test drives the real
controller over TCP with the hand-written FreeSWITCH side (``WirePeer``).
"""

from __future__ import annotations

import time

import gevent
import pytest
from fakes.telephony import WirePeer, make_services, speech, start_server, wait_until
from test_turn_streaming import InProcessAgent, _call, _text

from esl_app.config.tenants import DEFAULT_ACK_PHRASES
from esl_app.providers.agent.base import AgentError, AgentReply
from esl_app.providers.tts.base import PlayInstruction, TtsCapabilities
from esl_app.providers.tts.cache import PromptCache
from esl_app.support import bridge
from esl_app.telephony import call as call_mod
from esl_app.telephony.call import TROUBLE_TEXT, CallServices


class HelperAgent(InProcessAgent):
    in_process = False


class CacheTts:
    """A TTS with a prompt cache at the boundary: ``cached`` texts are ready at once."""

    name = "cache-tts"
    capabilities = TtsCapabilities(ssml=False, sample_rates=(8000, 16000))

    def __init__(self, cached: set[str], slow: dict[str, float] | None = None) -> None:
        self.cached = cached
        self.slow = slow or {}
        self.synthesized: list[str] = []

    def _instruction(self, text: str) -> PlayInstruction:
        return PlayInstruction(app="speak", arg=f"flite|slt|{text}", text=text)

    def synthesize(self, text: str, *, voice: str, sample_rate: int,
                   language: str = "en-US") -> PlayInstruction:
        self.synthesized.append(text)
        gevent.sleep(self.slow.get(text, 0.0))
        return self._instruction(text)

    def instant(self, text: str, *, voice: str, sample_rate: int,
                language: str = "en-US") -> PlayInstruction | None:
        return self._instruction(text) if text in self.cached else None


def _serve(agent, tts=None):
    base = make_services(agent)
    if tts is None:
        return start_server(base)
    return start_server(CallServices(tenants=base.tenants, agent_for=lambda t: agent,
                                     tts_for=lambda t, name: tts))


def _hear(peer: WirePeer, n: int) -> list[str]:
    """The bot's next ``n`` sentences, each played to its end."""
    said = []
    for _ in range(n):
        app = peer.next_app()
        said.append(_text(app))
        peer.complete(app)
    return said


def _finish(peer: WirePeer, server) -> dict:
    peer.hangup()
    wait_until(lambda: server.completed == 1)
    return server.last_transcripts[-1].to_dict()


@pytest.mark.parametrize("cls", [InProcessAgent, HelperAgent], ids=["in-process", "helper"])
def test_an_in_process_agent_answers_on_the_calls_greenlet(cls):
    agent = cls({"book": [(0.0, "I have Tuesday at nine. "),
                          (0.0, AgentReply("I have Tuesday at nine. You are booked.",
                                           outcome="booked", confirmation="K7M-4Q2"))]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "book it")
        assert _hear(peer, 2) == ["I have Tuesday at nine.", "You are booked."]
        assert peer.setvars.get("ivr_outcome") == "booked"
        t = _finish(peer, server)
        assert t["outcome"] == "booked" and t["confirmation"] == "K7M-4Q2"
        greet_on, respond_on = agent.ran_on
        if cls is InProcessAgent:  # both turns on the one greenlet that runs the call
            assert greet_on is respond_on
        else:  # a helper greenlet per turn
            assert greet_on is not respond_on
    finally:
        peer.close()
        server.stop(timeout=2)


def test_an_in_process_agent_failing_mid_reply_says_what_it_finished_then_hands_over():
    agent = InProcessAgent({"book": [(0.0, "Let me look. "), (0.0, "Tuesday at"),
                                     (0.0, AgentError("calendar down"))]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "book")
        first = peer.next_app()
        assert _text(first) == "Let me look."  # the unfinished "Tuesday at" is not said
        peer.complete(first)
        sorry = peer.next_app()
        assert _text(sorry) == TROUBLE_TEXT
        peer.complete(sorry)
        assert "transfer" in _text(peer.next_app())
    finally:
        peer.close()
        server.stop(timeout=2)


def test_an_in_process_agent_past_the_timeout_is_cut_and_the_caller_told(monkeypatch):
    monkeypatch.setattr(call_mod, "AGENT_TIMEOUT", 0.3)
    agent = InProcessAgent({"book": [(30.0, AgentReply("Too late."))]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "book")
        t0 = time.monotonic()
        sorry = peer.next_app()
        assert _text(sorry) == TROUBLE_TEXT
        assert time.monotonic() - t0 < 2.0
    finally:
        peer.close()
        server.stop(timeout=2)


def test_a_hang_up_during_an_in_process_turn_keeps_the_booking():
    """The caller hangs up while the (in-process) agent books: the booking is recorded."""
    booked = AgentReply("You are booked, code K7M-4Q2. Goodbye.", action="hangup",
                        outcome="booked", confirmation="K7M-4Q2")
    agent = InProcessAgent({"yes": [(0.3, booked)]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "yes")
        gevent.sleep(0.05)
        peer.hangup()
        wait_until(lambda: server.completed == 1)
        t = server.last_transcripts[-1].to_dict()
        assert t["outcome"] == "booked" and t["confirmation"] == "K7M-4Q2"
    finally:
        peer.close()
        server.stop(timeout=2)


def test_a_hang_up_during_a_stall_acknowledgement_keeps_the_booking():
    booked = AgentReply("You are booked, code K7M-4Q2.", outcome="booked",
                        confirmation="K7M-4Q2")
    agent = InProcessAgent({"yes": [(0.8, booked)]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "yes")
        ack = peer.next_app()
        assert _text(ack) in DEFAULT_ACK_PHRASES
        peer.hangup()  # while "Okay." plays and the agent is still booking
        wait_until(lambda: server.completed == 1)
        t = server.last_transcripts[-1].to_dict()
        assert t["outcome"] == "booked" and t["confirmation"] == "K7M-4Q2"
        assert [x["text"] for x in t["turns"] if x["speaker"] == "bot"][-1] == _text(ack)
    finally:
        peer.close()
        server.stop(timeout=2)


def test_cached_sentences_skip_the_synthesis_greenlet_and_keep_their_order():
    """A slow uncached first sentence, a cached second: played in order; only the
    first is synthesised, and a reply all cached synthesises nothing."""
    agent = InProcessAgent({
        "book": [(0.0, AgentReply("Tuesday at nine is open. Shall I book it?"))],
        "yes": [(0.0, AgentReply("Done. Anything else?"))]})
    tts = CacheTts(cached={"Shall I book it?", "Done.", "Anything else?",
                           "How can I help you?"},
                   slow={"Tuesday at nine is open.": 0.3})
    server = _serve(agent, tts)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "book")
        assert _hear(peer, 2) == ["Tuesday at nine is open.", "Shall I book it?"]
        speech(peer, "yes")
        assert _hear(peer, 2) == ["Done.", "Anything else?"]
        assert "Tuesday at nine is open." in tts.synthesized
        assert not {"Shall I book it?", "Done.", "Anything else?"} & set(tts.synthesized)
        _finish(peer, server)
    finally:
        peer.close()
        server.stop(timeout=2)


class BrokenInstantTts(CacheTts):
    def instant(self, text: str, **kw) -> PlayInstruction | None:
        raise RuntimeError("cache index corrupt")


def test_a_failing_instant_falls_back_to_synthesis():
    """``instant`` is only a shortcut: when it raises, the sentence is synthesised."""
    agent = InProcessAgent({"book": [(0.0, AgentReply("Tuesday at nine is open."))]})
    tts = BrokenInstantTts(cached=set())
    server = _serve(agent, tts)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "book")
        assert _hear(peer, 1) == ["Tuesday at nine is open."]
        assert "Tuesday at nine is open." in tts.synthesized
        _finish(peer, server)
    finally:
        peer.close()
        server.stop(timeout=2)


def test_prompt_cache_get_ready_needs_the_file_and_a_known_duration(tmp_path):
    """A prompt another worker wrote: ready once this process knows its duration."""
    from esl_app.media.pcm import wav_bytes
    from esl_app.providers.tts.cache import cache_key

    cache = PromptCache(tmp_path)
    assert cache.get_ready("p", "v", 8000, "hello", "Hello.") is None  # not made yet
    path = cache.path_for(cache_key("p", "v", 8000, "hello"))
    path.write_bytes(wav_bytes(bytes(8000), 8000))  # half a second, by another process
    assert cache.get_ready("p", "v", 8000, "hello", "Hello.") is None  # header unread here
    given = cache.get_ready("p", "v", 8000, "hello", "Hello.", duration_ms=480)
    assert given == PlayInstruction(app="playback", arg=str(path), text="Hello.",
                                    duration_ms=480, cached=True)
    assert cache.hits == 1
    assert cache.duration_ms(path) == 500  # what a synthesize hit does first
    assert cache.get_ready("p", "v", 8000, "hello", "Hello.").duration_ms == 500
    path.unlink()
    assert cache.get_ready("p", "v", 8000, "hello", "Hello.", duration_ms=480) is None


def test_prompt_cache_get_ready_gives_a_new_prompts_duration(tmp_path):
    from esl_app.media.pcm import wav_bytes

    cache = PromptCache(tmp_path)
    made = cache.get_or_create("p", "v", 8000, "one second", "One second.",
                               lambda _tmp: wav_bytes(bytes(16000), 8000))
    ready = cache.get_ready("p", "v", 8000, "one second", "One second.")
    assert ready is not None and ready.arg == str(made.path) and ready.duration_ms == 1000


def test_resumed_starts_a_slice_that_cooperate_within_does_not_cut():
    """After resumed(), cooperate(SLICE_S) goes on at once; past the slice it yields."""
    order: list[str] = []

    def other() -> None:
        order.append("other")

    def worker() -> None:
        bridge.resumed()
        gevent.spawn(other)
        bridge.cooperate(bridge.SLICE_S)  # early in the slice: no yield
        order.append("early")
        t_end = time.perf_counter() + bridge.SLICE_S * 2
        while time.perf_counter() < t_end:
            pass
        bridge.cooperate(bridge.SLICE_S)  # past it: the other greenlet runs first
        order.append("late")

    gevent.spawn(worker).join()
    assert order == ["early", "other", "late"]


def test_emulated_polly_and_freeswitch_speak_are_instant_as_their_providers_are(tmp_path):
    from esl_app.providers.tts.freeswitch import FreeswitchTts
    from esl_app.sim.latency import CLOUD, Delays, EmulatedPolly

    polly = EmulatedPolly(Delays(CLOUD, seed=1), PromptCache(tmp_path))
    assert polly.instant("Thank you.", voice="Joanna", sample_rate=8000) is None
    made = polly.synthesize("Thank you.", voice="Joanna", sample_rate=8000)  # waits ~0.2 s
    ready = polly.instant("Thank you.", voice="Joanna", sample_rate=8000)
    assert ready is not None and ready.cached
    assert (ready.arg, ready.duration_ms) == (made.arg, made.duration_ms)
    fs = FreeswitchTts()
    assert fs.instant("Hi.", voice="Joanna", sample_rate=8000) == fs.synthesize(
        "Hi.", voice="Joanna", sample_rate=8000)


@pytest.mark.postgres
def test_a_postgres_lock_wait_in_the_local_agent_is_acknowledged(tmp_path):
    """The real local agent on Postgres, its calendar locked by another session: the
    query waits (psycogreen yields), "Okay." plays, and the offer follows the unlock."""
    import psycopg2
    from fakes.scheduling import fresh_postgres_db, postgres_url

    from esl_app.db.models import Slot
    from esl_app.providers.agent.local import LocalAgent
    from esl_app.sim.testing import make_db

    base = postgres_url()
    if not base:
        pytest.skip("IVR_TEST_POSTGRES_URL not set")
    with fresh_postgres_db(base) as url:
        tenants = make_db(tmp_path, days=14, url=url)
        server = start_server(make_services(LocalAgent(), tenants=tenants))
        peer = WirePeer(server.address)
        holder = psycopg2.connect(url)
        try:
            peer.handshake()
            while True:  # the greeting, however many sentences: then the bot listens
                try:
                    peer.complete(peer.next_app(timeout=0.5))
                except gevent.Timeout:
                    break
            with holder.cursor() as cur:
                cur.execute(f'LOCK TABLE "{Slot._meta.table_name}" IN ACCESS EXCLUSIVE MODE')
            speech(peer, "I'd like to book with Dr. Smith tomorrow morning")
            ack = peer.next_app()
            assert _text(ack) in DEFAULT_ACK_PHRASES, _text(ack)
            peer.complete(ack)
            with pytest.raises(gevent.Timeout):  # nothing more while the lock is held
                peer.next_app(timeout=0.3)
            holder.commit()  # the lock goes: the search runs and the offer is spoken
            offer = peer.next_app()
            assert _text(offer) not in DEFAULT_ACK_PHRASES and _text(offer) != TROUBLE_TEXT
        finally:
            holder.close()
            peer.close()
            server.stop(timeout=2)
