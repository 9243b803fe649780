"""Turn latency: agent replies streamed into TTS, cached acknowledgements, honest emulation.

The call-engine tests drive the real controller over TCP with a hand-written
FreeSWITCH side (``WirePeer``): the test decides when each prompt completes, so
"the ack is still playing" and "the answer is queued behind it" are exact
states, not timing guesses. The Bedrock tests go through botocore's real
serialiser and event-stream decoder (``aws_fixtures``), as test_aws_bedrock.py.
"""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import gevent
import pytest
from aws_fixtures.eventstream import Responder, bedrock_events, stream_response
from fakes.telephony import (
    TENANTS_YAML,
    WirePeer,
    make_services,
    speech,
    start_server,
    wait_until,
)

from esl_app.config.tenants import DEFAULT_ACK_PHRASES, ConfigError, parse_tenants
from esl_app.providers.agent.base import (
    AgentError,
    AgentReply,
    CallContext,
    Utterance,
    complete_sentences,
    respond_stream,
)
from esl_app.providers.agent.bedrock import BedrockAgent, BedrockAgentError, new_client
from esl_app.providers.resilience import ResilientAgent
from esl_app.sim.latency import (
    CLOUD,
    STREAM_CHARS_PER_S,
    STREAM_FIRST_S,
    Delays,
    SlowAgent,
    release_schedule,
)
from esl_app.telephony.call import FILLER_TEXT, TROUBLE_TEXT

ANSWER = "I have Tuesday at 9 AM with Dr. Smith. Shall I book it?"


class StreamingAgent:
    """A streaming agent at the boundary: scripted pieces with pauses between them.

    ``script`` maps a caller's word to [(seconds to wait, piece or AgentReply or
    Exception), ...]; the pieces are yielded as they "arrive".
    """

    name = "streaming"

    def __init__(self, script: dict[str, list]) -> None:
        self.script = script
        self.produced: list[tuple[float, str]] = []

    def greet(self, call: CallContext) -> AgentReply:
        return AgentReply("How can I help you?")

    def respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        for item in self.respond_stream(call, utterance):
            if isinstance(item, AgentReply):
                return item
        raise AgentError("no reply")

    def respond_stream(self, call: CallContext, utterance: Utterance):
        text = (utterance.text or "").lower()
        steps = next((v for k, v in self.script.items() if k in text),
                     [(0, AgentReply("Sorry?"))])
        said = ""
        for wait, item in steps:
            gevent.sleep(wait)
            if isinstance(item, Exception):
                raise item
            if isinstance(item, AgentReply):
                if not said and item.text:
                    yield item.text
                yield item
                return
            said += item
            self.produced.append((time.monotonic(), item))
            yield item

    def end(self, call: CallContext) -> None:
        pass


class InProcessAgent(StreamingAgent):
    """The scripted streaming agent, declared in-process (answers on the call's greenlet)."""

    in_process = True

    def __init__(self, script: dict[str, list]) -> None:
        super().__init__(script)
        self.ran_on: list[object] = []

    def greet(self, call: CallContext) -> AgentReply:
        self.ran_on.append(gevent.getcurrent())
        return super().greet(call)

    def respond_stream(self, call: CallContext, utterance: Utterance):
        self.ran_on.append(gevent.getcurrent())
        yield from super().respond_stream(call, utterance)


def _call(peer: WirePeer, server) -> None:
    """Handshake, let the greeting play, and wait for the bot to listen."""
    peer.handshake()
    greet = peer.next_app()
    assert "Sunrise Family Clinic" in greet.header("execute-app-arg")
    peer.complete(greet)
    second = peer.next_app()
    assert "How can I help" in second.header("execute-app-arg")
    peer.complete(second)


def _text(cmd) -> str:
    return (cmd.header("execute-app-arg") or "").rsplit("|", 1)[-1]


def _serve(agent, yaml: str = TENANTS_YAML):
    return start_server(make_services(agent, tenants=parse_tenants(yaml)))


# -- the call engine ---------------------------------------------------------------


def test_first_sentence_plays_while_the_rest_is_still_written():
    agent = StreamingAgent({"book": [(0.05, "I have Tuesday at 9 AM with Dr. Smith. "),
                                     (1.0, "Shall I book it?"),
                                     (0.0, AgentReply(ANSWER))]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "I want to book")
        first = peer.next_app()
        got_first = time.monotonic()
        assert _text(first) == "I have Tuesday at 9 AM with Dr. Smith."
        # the second sentence had not been written when the first went out
        assert len(agent.produced) == 1
        peer.complete(first)
        second = peer.next_app()
        assert _text(second) == "Shall I book it?"
        assert agent.produced[1][0] > got_first
        peer.complete(second)
        peer.hangup()
        wait_until(lambda: server.completed == 1)
        bot = [t for t in server.last_transcripts[-1].to_dict()["turns"] if t["speaker"] == "bot"]
        assert bot[-1]["text"] == ANSWER  # one transcript turn for the whole answer
    finally:
        peer.close()
        server.stop(timeout=2)


def test_fast_agent_gets_no_acknowledgement():
    agent = StreamingAgent({"book": [(0.0, AgentReply(ANSWER))]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "I want to book")
        first = peer.next_app()
        assert _text(first) == "I have Tuesday at 9 AM with Dr. Smith."
        peer.complete(first)
        peer.complete(peer.next_app())
        peer.hangup()
        wait_until(lambda: server.completed == 1)
        said = [t["text"] for t in server.last_transcripts[-1].to_dict()["turns"]]
        assert not any(t in DEFAULT_ACK_PHRASES for t in said)
    finally:
        peer.close()
        server.stop(timeout=2)


BOTH_PATHS = pytest.mark.parametrize("cls", [StreamingAgent, InProcessAgent],
                                     ids=["helper", "in-process"])


@BOTH_PATHS
def test_slow_agent_gets_a_varied_acknowledgement_then_the_answer_without_a_gap(cls):
    """In-process too: its stall (a database wait) gets the ack from a libev timer."""
    slow = [(0.8, "Okay then. "), (0.0, AgentReply("Okay then."))]
    agent = cls({"one": slow, "two": slow, "three": slow})
    server = _serve(agent)
    peer = WirePeer(server.address)
    acks = []
    try:
        _call(peer, server)
        for word in ("one", "two", "three"):
            speech(peer, word)
            t0 = time.monotonic()
            ack = peer.next_app()
            waited = time.monotonic() - t0
            assert _text(ack) in DEFAULT_ACK_PHRASES, _text(ack)
            assert 0.25 <= waited < 0.7  # the default budget is 300 ms
            acks.append(_text(ack))
            gevent.sleep(0.9)  # the answer arrives while the ack still plays...
            peer.complete(ack)
            t1 = time.monotonic()
            answer = peer.next_app()  # ...and follows it at once: it was synthesised ahead
            assert time.monotonic() - t1 < 0.2
            assert _text(answer) == "Okay then."
            peer.complete(answer)
        assert acks[0] != acks[1] and acks[1] != acks[2]  # never twice in a row
        peer.hangup()
        wait_until(lambda: server.completed == 1)
        turns = server.last_transcripts[-1].to_dict()["turns"]
        bot = [t["text"] for t in turns if t["speaker"] == "bot"]
        assert bot[-2:] == [acks[-1], "Okay then."]  # recorded like other bot speech
    finally:
        peer.close()
        server.stop(timeout=2)


def test_acknowledgement_budget_is_per_tenant_and_can_be_off():
    yaml = TENANTS_YAML.replace("    no_input_seconds: 1\n    doctors: [{id: smith",
                                "    no_input_seconds: 1\n    ack_after_ms: 0\n"
                                "    doctors: [{id: smith", 1)
    assert parse_tenants(yaml).get("sunrise").ack_after_ms == 0
    agent = StreamingAgent({"one": [(0.6, "Done. "), (0.0, AgentReply("Done."))]})
    server = _serve(agent, yaml)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "one")
        assert _text(peer.next_app()) == "Done."
    finally:
        peer.close()
        server.stop(timeout=2)


@BOTH_PATHS
def test_speech_over_the_acknowledgement_does_not_cut_it_and_the_answer_is_heard(cls):
    """The caller keeps talking after "Okay.": the answer still plays, their words wait."""
    booked = AgentReply("You are booked. Anything else?", outcome="booked",
                        confirmation="K7M-4Q2")
    agent = cls({"yes": [(0.6, "You are booked. "), (0.3, "Anything else?"),
                                    (0.0, booked)],
                            "thanks": [(0.0, AgentReply("Goodbye.", action="hangup"))]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "yes please")
        ack = peer.next_app()
        assert _text(ack) in DEFAULT_ACK_PHRASES
        speech(peer, "thanks")  # over the acknowledgement
        gevent.sleep(0.2)
        peer.complete(ack)
        first = peer.next_app()  # not an api uuid_break: the ack was not cut
        assert _text(first) == "You are booked."
        peer.complete(first)
        second = peer.next_app()
        assert _text(second) == "Anything else?"
        peer.complete(second)
        bye = peer.next_app()  # their words were kept for the next listen
        assert _text(bye) == "Goodbye."
        peer.complete(bye)
        wait_until(lambda: server.completed == 1)
        t = server.last_transcripts[-1].to_dict()
        assert t["outcome"] == "booked" and t["confirmation"] == "K7M-4Q2"
        assert peer.setvars.get("ivr_outcome") == "booked"
        said = [(x["speaker"], x["text"], x["barged_in"]) for x in t["turns"]]
        assert said[-4:] == [("bot", _text(ack), False),
                             ("bot", "You are booked. Anything else?", False),
                             ("caller", "thanks", False), ("bot", "Goodbye.", False)]
    finally:
        peer.close()
        server.stop(timeout=2)


def test_hang_up_mid_stream_still_records_the_booking():
    booked = AgentReply("You are booked. Your code is K7M-4Q2.", outcome="booked",
                        confirmation="K7M-4Q2")
    agent = StreamingAgent({"yes": [(0.0, "You are booked. "), (0.3, "Your code is K7M-4Q2."),
                                    (0.0, booked)]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "yes")
        first = peer.next_app()
        assert _text(first) == "You are booked."
        peer.hangup()  # while the first sentence plays and the rest is being written
        wait_until(lambda: server.completed == 1)
        t = server.last_transcripts[-1].to_dict()
        assert t["outcome"] == "booked"
    finally:
        peer.close()
        server.stop(timeout=2)


def test_agent_failure_mid_stream_apologises_and_hands_over():
    agent = StreamingAgent({"book": [(0.0, "Let me look. "), (0.2, AgentError("down"))]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "book")
        first = peer.next_app()
        assert _text(first) == "Let me look."
        peer.complete(first)
        sorry = peer.next_app()
        assert _text(sorry) == TROUBLE_TEXT
        peer.complete(sorry)
        hold = peer.next_app()
        assert "transfer" in _text(hold)
    finally:
        peer.close()
        server.stop(timeout=2)


def test_filler_never_collides_with_the_acknowledgement():
    """ResilientAgent asks for its filler while the ack plays: skipped, the answer follows."""
    primary = StreamingAgent({"book": [(1.0, "Tuesday works. "),
                                       (0.0, AgentReply("Tuesday works."))]})
    signals: list[str] = []

    def on_filler(call: CallContext) -> None:
        signals.append("filler")
        call.signal("filler")

    agent = ResilientAgent(primary, None, filler_after_s=0.5, filler_every_s=5.0,
                           on_filler=on_filler)
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "book")
        ack = peer.next_app()
        assert _text(ack) in DEFAULT_ACK_PHRASES
        wait_until(lambda: signals == ["filler"], 3)
        gevent.sleep(0.7)  # the answer is written while the ack still plays
        peer.complete(ack)
        answer = peer.next_app()
        assert _text(answer) == "Tuesday works."  # not the filler
        peer.complete(answer)
        peer.hangup()
        wait_until(lambda: server.completed == 1)
        said = [t["text"] for t in server.last_transcripts[-1].to_dict()["turns"]]
        assert FILLER_TEXT not in said
    finally:
        peer.close()
        server.stop(timeout=2)


def test_filler_plays_into_silence_after_a_short_acknowledgement():
    primary = StreamingAgent({"book": [(1.2, "Tuesday works. "),
                                       (0.0, AgentReply("Tuesday works."))]})
    agent = ResilientAgent(primary, None, filler_after_s=0.6, filler_every_s=5.0,
                           on_filler=lambda call: call.signal("filler"))
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "book")
        ack = peer.next_app()
        assert _text(ack) in DEFAULT_ACK_PHRASES
        peer.complete(ack)  # a short "Okay." is over before the filler is due
        filler = peer.next_app()
        assert _text(filler) == FILLER_TEXT
        peer.complete(filler)
        assert _text(peer.next_app()) == "Tuesday works."
    finally:
        peer.close()
        server.stop(timeout=2)


def test_streaming_resilient_agent_falls_back_mid_answer_without_repeating():
    primary = StreamingAgent({"book": [(0.0, "Let me look that up. "),
                                       (0.2, BedrockAgentError("cut", retry_safe=True,
                                                               transient=True))]})
    fallback = StreamingAgent({"book": [(0.0, AgentReply("Which day would suit you?"))]})
    agent = ResilientAgent(primary, fallback, filler_after_s=5.0)
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "book")
        first = peer.next_app()
        assert _text(first) == "Let me look that up."
        peer.complete(first)
        second = peer.next_app()
        assert _text(second) == "Which day would suit you?"  # no retry, no repeat
        peer.complete(second)
        peer.hangup()
        wait_until(lambda: server.completed == 1)
        bot = [t["text"] for t in server.last_transcripts[-1].to_dict()["turns"]
               if t["speaker"] == "bot"]
        assert bot[-1] == "Let me look that up. Which day would suit you?"
    finally:
        peer.close()
        server.stop(timeout=2)


# -- the agents' streams -----------------------------------------------------------

TENANT_YAML = """
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
NOW = datetime(2026, 11, 23, 23, 30, tzinfo=ZoneInfo("UTC"))


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return new_client("us-east-1", read_timeout_s=2, connect_timeout_s=1)


def _ctx(tenant=None) -> CallContext:
    tenant = tenant or parse_tenants(TENANT_YAML).get("sunrise")
    return CallContext(call_id="call-1", tenant=tenant, caller="+15550001111", did="1001",
                       now=NOW)


def test_bedrock_streams_each_sentence_as_its_chunks_arrive(aws):
    chunks = ["Sure. Dr. Smith ", "has Tuesday at 9 AM", ". Shall I ", "book it?"]
    read: list[int] = []
    frames = bedrock_events([{"chunk": {"bytes": c}} for c in chunks])
    responder = Responder(aws, "InvokeAgent", [stream_response(
        frames, before_each=lambda: read.append(1))])
    agent = BedrockAgent(client=aws)
    out = []
    for item in agent.respond_stream(_ctx(), Utterance(text="Tuesday?")):
        out.append((len(read), item))
    body = responder.requests[0]
    assert body["streamingConfigurations"] == {"streamFinalResponse": True}
    texts = [x for _, x in out if isinstance(x, str)]
    assert texts == ["Sure. ", "Dr. Smith has Tuesday at 9 AM. ", "Shall I book it?"]
    # "Sure." went out after two frames were read, before the rest had arrived
    assert out[0][0] < len(frames)
    reply = out[-1][1]
    assert isinstance(reply, AgentReply) and reply.text == "".join(texts).strip()


def test_bedrock_non_streaming_respond_asks_for_one_answer(aws):
    responder = Responder(aws, "InvokeAgent", [stream_response(
        bedrock_events([{"chunk": {"bytes": "Hello there."}}]))])
    reply = BedrockAgent(client=aws).respond(_ctx(), Utterance(text="hi"))
    assert reply.text == "Hello there."
    assert "streamingConfigurations" not in responder.requests[0]


def test_bedrock_stream_spells_the_confirmation_code(aws):
    from aws_fixtures.eventstream import load

    frames = bedrock_events(load("bedrock_lambda_booking.json")["events"])
    Responder(aws, "InvokeAgent", [stream_response(frames)])
    items = list(BedrockAgent(client=aws).respond_stream(_ctx(), Utterance(text="yes")))
    reply = items[-1]
    spoken = "".join(i for i in items if isinstance(i, str))
    assert '<say-as interpret-as="characters">K7M-4Q2</say-as>' in spoken
    assert reply.outcome == "booked" and " ".join(spoken.split()) == reply.text


def test_bedrock_failure_mid_stream_after_a_sentence(aws):
    frames = bedrock_events([{"chunk": {"bytes": "Let me check. Dr. Smith"}},
                             {"exception": {"type": "throttlingException",
                                            "message": "Your request rate is too high."}}])
    Responder(aws, "InvokeAgent", [stream_response(frames)])
    got = []
    with pytest.raises(BedrockAgentError) as info:
        for item in BedrockAgent(client=aws).respond_stream(_ctx(), Utterance(text="hi")):
            got.append(item)
    assert got == ["Let me check. "]  # the unfinished sentence is never spoken
    assert info.value.transient


def test_resilient_stream_retries_only_before_any_text():
    calls = {"n": 0}

    class Flaky(StreamingAgent):
        def respond_stream(self, call, utterance):
            calls["n"] += 1
            if calls["n"] == 1:
                raise BedrockAgentError("throttled", retry_safe=True, transient=True)
            yield "Fine. "
            yield AgentReply("Fine.")

    agent = ResilientAgent(Flaky({}), StreamingAgent({}))
    items = list(agent.respond_stream(_ctx(), Utterance(text="x")))
    assert items[:-1] == ["Fine. "] and items[-1].text == "Fine."
    assert calls["n"] == 2


def test_default_stream_wraps_a_plain_agent():
    class Plain:
        name = "plain"

        def respond(self, call, utterance):
            return AgentReply("One. Two.", action="hangup")

    items = list(respond_stream(Plain(), _ctx(), Utterance(text="x")))
    assert items[0] == "One. Two." and items[1].action == "hangup"


def test_complete_sentences_holds_back_the_unfinished_one():
    assert complete_sentences("Hello. I have Dr.") == (["Hello."], "I have Dr.")
    assert complete_sentences("with Dr. Smith ") == ([], "with Dr. Smith ")
    done, rest = complete_sentences("Dr. Smith is in. Tuesday ")
    assert done == ["Dr. Smith is in."] and rest == "Tuesday "


# -- honest emulation ----------------------------------------------------------------


def test_release_schedule_keeps_the_total_and_the_generation_rate():
    text = "I have Tuesday at 9 AM with Dr. Smith. Shall I book it for you?"
    plan = release_schedule(text, 1.2)
    assert "".join(p for _, p in plan) == text
    assert plan[-1][0] == pytest.approx(1.2)  # the complete reply: the drawn time
    first_sentence_end = next(t for t, p in plan if p.endswith("Smith. "))
    rest = len(text) - (text.index("Smith. ") + len("Smith. "))
    assert first_sentence_end == pytest.approx(1.2 - rest / STREAM_CHARS_PER_S)
    assert all(a <= b for (a, _), (b, _) in zip(plan, plan[1:], strict=False))


def test_release_schedule_never_before_the_first_token_floor():
    plan = release_schedule("word " * 100, 0.5)
    assert plan[0][0] == pytest.approx(STREAM_FIRST_S)
    assert plan[-1][0] == pytest.approx(0.5)


def test_slow_agent_stream_takes_the_drawn_time_to_the_complete_reply():
    class Inner:
        name = "inner"

        def respond(self, call, utterance):
            return AgentReply(ANSWER)

    delays = Delays(CLOUD, seed=3)
    agent = SlowAgent(Inner(), delays)
    t0 = time.monotonic()
    stamps = [(time.monotonic() - t0, item)
              for item in agent.respond_stream(_ctx(), Utterance(text="x"))]
    drawn = delays.total_ms["agent"] / 1000
    assert 0.5 <= drawn <= 1.5
    assert stamps[-1][0] == pytest.approx(drawn, abs=0.05)
    assert stamps[0][0] >= STREAM_FIRST_S - 0.02
    assert stamps[0][0] < drawn - 0.05  # the first piece is out before the end
    assert "".join(i for _, i in stamps[:-1]) == ANSWER


def test_ack_phrases_are_validated():
    base = TENANTS_YAML.replace("    no_input_seconds: 1\n    doctors: [{id: smith",
                                "    no_input_seconds: 1\n    ack_phrases: PHRASES\n"
                                "    doctors: [{id: smith", 1)
    ok = parse_tenants(base.replace("PHRASES", '["Okay.", "Right."]')).get("sunrise")
    assert ok.ack_phrases == ("Okay.", "Right.")
    assert ok.to_dict()["ack_phrases"] == ["Okay.", "Right."]
    for bad in ('["Okay."]', '"Okay."', '["Okay.", "' + "x" * 41 + '"]'):
        with pytest.raises(ConfigError, match="ack_phrases"):
            parse_tenants(base.replace("PHRASES", bad))
    with pytest.raises(ConfigError, match="ack_after_ms"):
        parse_tenants(TENANTS_YAML.replace("    no_input_seconds: 1\n    doctors: [{id: smith",
                                           "    no_input_seconds: 1\n    ack_after_ms: -5\n"
                                           "    doctors: [{id: smith", 1))
