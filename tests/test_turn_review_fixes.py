"""Review fixes for streamed turns: nothing the caller or the record needs is dropped.

Each test drives the real controller over TCP with the hand-written FreeSWITCH
side (``WirePeer``); the audio-loss test adds the real media server and a
WebSocket fork as mod_audio_fork opens it.
"""

from __future__ import annotations

import contextlib
import time

import gevent
import gevent.event
import pytest
import websocket
from fakes.telephony import WirePeer, make_services, speech, start_server, wait_until
from test_turn_streaming import StreamingAgent, _call, _serve, _text

from esl_app.config.tenants import DEFAULT_ACK_PHRASES
from esl_app.providers.agent.base import AgentReply, CallContext, Utterance
from esl_app.providers.tts.base import PlayInstruction, TtsError
from esl_app.providers.tts.freeswitch import FreeswitchTts
from esl_app.runtime.wiring import start_media_for_calls
from esl_app.sim.emulated_stt import EmulatedTranscribe, LineTable
from esl_app.sim.emulator.wire import api_response
from esl_app.telephony.call import CallServices

BOOKED = AgentReply("You are booked, code K7M-4Q2. Goodbye.", action="hangup",
                    outcome="booked", confirmation="K7M-4Q2")
TRANSFER = AgentReply("Let me connect you with our front desk.", action="transfer",
                      transfer_to="user/1000", outcome="handoff")


class FlakySpeak(FreeswitchTts):
    """FreeSWITCH's TTS with a provider's faults: slow, or failing once, for some texts."""

    def __init__(self, slow: dict[str, float] | None = None, fail_once: tuple[str, ...] = ()
                 ) -> None:
        super().__init__()
        self.slow = slow or {}
        self.fail_once = fail_once
        self.failed: set[str] = set()

    def synthesize(self, text: str, *, voice: str, sample_rate: int,
                   language: str = "en-US") -> PlayInstruction:
        for part, seconds in self.slow.items():
            if part in text:
                gevent.sleep(seconds)
        if any(p in text for p in self.fail_once) and text not in self.failed:
            self.failed.add(text)
            raise TtsError("throttled")
        return super().synthesize(text, voice=voice, sample_rate=sample_rate,
                                  language=language)


def _serve_with(agent, tts):
    base = make_services(agent)
    return start_server(CallServices(tenants=base.tenants, agent_for=lambda t: agent,
                                     tts_for=lambda t, name: tts))


def _hung_up(peer: WirePeer) -> None:
    """The bot's next command is the hang-up: answer it as FreeSWITCH does."""
    cmd = peer.command()
    assert cmd.line == "sendmsg" and cmd.header("call-command") == "hangup"
    peer.ok()
    peer.hangup()


def _finish(peer: WirePeer, server) -> dict:
    peer.hangup()
    wait_until(lambda: server.completed == 1)
    return server.last_transcripts[-1].to_dict()


# -- 1. a reply arriving while a barged-in playback reports its end --------------------


def test_reply_arriving_while_the_broken_playback_ends_is_kept():
    agent = StreamingAgent({
        "book": [(0.0, "I have Tuesday at nine. "), (0.2, "You are booked."),
                 (0.0, AgentReply("I have Tuesday at nine. You are booked.",
                                  outcome="booked", confirmation="K7M-4Q2"))],
        "bye": [(0.0, AgentReply("Goodbye.", action="hangup"))]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "book Tuesday")
        first = peer.next_app()
        assert _text(first) == "I have Tuesday at nine."
        peer.event("DETECTED_SPEECH", [("Speech-Type", "begin-speaking")])
        brk = peer.command()
        assert brk.line.startswith("api uuid_break")
        gevent.sleep(0.6)  # the agent's reply lands while the break is not yet answered
        peer.api_ok()
        peer.complete(first)
        speech(peer, "bye")
        t0 = time.monotonic()
        bye = peer.next_app()  # not after AGENT_TIMEOUT of dead air
        assert bye is not None and _text(bye) == "Goodbye."
        assert time.monotonic() - t0 < 2.0
        assert peer.setvars.get("ivr_outcome") == "booked"
        peer.complete(bye)
        wait_until(lambda: server.completed == 1)
        t = server.last_transcripts[-1].to_dict()
        assert t["outcome"] == "booked" and t["confirmation"] == "K7M-4Q2"
        bot = [(x["text"], x["barged_in"]) for x in t["turns"] if x["speaker"] == "bot"]
        assert ("I have Tuesday at nine.", True) in bot
    finally:
        peer.close()
        server.stop(timeout=2)


# -- 2. barge-in before the answer is heard ---------------------------------------------


@pytest.mark.parametrize("reply", [BOOKED, TRANSFER], ids=["hangup", "transfer"])
def test_a_cough_before_the_answer_plays_does_not_cut_it(reply):
    """The reply is complete, its first sentence still being synthesised: a cough."""
    agent = StreamingAgent({"yes": [(0.0, reply)]})
    tts = FlakySpeak(slow={"booked": 0.4, "front desk": 0.4})
    server = _serve_with(agent, tts)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "yes")
        gevent.sleep(0.15)
        peer.event("DETECTED_SPEECH", [("Speech-Type", "begin-speaking")])
        first = peer.next_app()  # before the fix: the hang-up / a silent transfer
        assert _text(first) == ("You are booked, code K7M-4Q2." if reply is BOOKED
                                else reply.text)
        peer.complete(first)
        if reply.action == "hangup":
            second = peer.next_app()
            assert _text(second) == "Goodbye."
            peer.complete(second)
            _hung_up(peer)  # after it
            wait_until(lambda: server.completed == 1)
            t = server.last_transcripts[-1].to_dict()
            assert t["outcome"] == "booked"
        else:
            bridge = peer.next_app()
            assert bridge.header("execute-app-name") == "bridge"
            t = _finish(peer, server)
        bot = [(x["text"], x["barged_in"]) for x in t["turns"] if x["speaker"] == "bot"]
        assert bot[-1] == (reply.text, False)
    finally:
        peer.close()
        server.stop(timeout=2)


@pytest.mark.parametrize("reply", [BOOKED, TRANSFER], ids=["hangup", "transfer"])
def test_an_answer_the_caller_never_heard_is_made_up_for_before_acting(reply):
    """Its speech failed (a throttled TTS): the closing line / a transfer notice still plays."""
    agent = StreamingAgent({"yes": [(0.0, reply)]})
    tts = FlakySpeak(fail_once=("booked", "Goodbye", "front desk"))
    server = _serve_with(agent, tts)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "yes")
        if reply.action == "hangup":
            first = peer.next_app()  # before the fix: straight to the hang-up
            assert _text(first) == "You are booked, code K7M-4Q2."
            peer.complete(first)
            second = peer.next_app()
            assert _text(second) == "Goodbye."
            peer.complete(second)
            _hung_up(peer)
            wait_until(lambda: server.completed == 1)
            t = server.last_transcripts[-1].to_dict()
            bot = [x["text"] for x in t["turns"] if x["speaker"] == "bot"]
            assert bot[-1] == BOOKED.text and t["outcome"] == "booked"
        else:
            hold = peer.next_app()  # before the fix: a silent transfer
            assert _text(hold) == "Please hold while I transfer you."
            peer.complete(hold)
            assert peer.next_app().header("execute-app-name") == "bridge"
            t = _finish(peer, server)
            bot = [x["text"] for x in t["turns"] if x["speaker"] == "bot"]
            assert TRANSFER.text not in bot  # never recorded as said
            assert bot[-1] == "Please hold while I transfer you."
    finally:
        peer.close()
        server.stop(timeout=2)


# -- 3. a reply queued just as the caller hangs up --------------------------------------


class HeldAgent(StreamingAgent):
    """Replies only when the test releases it."""

    def __init__(self, reply: AgentReply) -> None:
        super().__init__({})
        self.reply = reply
        self.release = gevent.event.Event()
        self.done = False

    def respond_stream(self, call: CallContext, utterance: Utterance):
        self.release.wait()
        self.done = True
        yield self.reply


def test_reply_queued_as_the_caller_hangs_up_still_counts():
    agent = HeldAgent(AgentReply("You are booked.", outcome="booked",
                                 confirmation="K7M-4Q2"))
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "yes")
        while True:  # the acknowledgement goes out; its reply is held back
            cmd = peer.command()
            if cmd.header("execute-app-name") == "detect_speech":
                peer.ok()
                peer.complete(cmd, "_none_")
                continue
            break
        assert _text(cmd) in DEFAULT_ACK_PHRASES
        peer.hangup()
        gevent.sleep(0.2)  # the hang-up is queued...
        agent.release.set()
        wait_until(lambda: agent.done)
        gevent.sleep(0.2)  # ...then the reply, and the agent's job has ended
        peer.ok()
        wait_until(lambda: server.completed == 1)
        t = server.last_transcripts[-1].to_dict()
        assert t["outcome"] == "booked" and t["confirmation"] == "K7M-4Q2"
    finally:
        peer.close()
        server.stop(timeout=2)


# -- 4. the audio fork dies during a turn -----------------------------------------------


def test_audio_lost_during_a_turn_still_hands_over(tmp_path):
    media, factory = start_media_for_calls(
        stt_for=lambda tenant: EmulatedTranscribe(LineTable(tmp_path)))
    agent = StreamingAgent({"": [(0.7, "Tuesday works. "), (0.0, AgentReply("Tuesday works."))]})
    base = make_services(agent)
    server = start_server(CallServices(
        tenants=base.tenants, agent_for=lambda t: agent, tts_for=base.tts_for,
        listen_mode="audio", audio_source_for=factory))
    peer = WirePeer(server.address)
    ws = None
    feeding = None
    try:
        peer.handshake()
        fork = peer.next_app()
        assert fork.line.startswith("api uuid_audio_fork")
        _, _, _uuid, _start, url, _mix, _rate, meta = fork.line.split(" ", 7)
        peer.api_ok()
        ws = websocket.create_connection(url, subprotocols=["audio.drachtio.org"], timeout=5)
        ws.send(meta)

        def feed() -> None:  # mod_audio_fork streams the caller's (silent) line
            while True:
                ws.send_binary(b"\x00" * 320)
                gevent.sleep(0.02)

        feeding = gevent.spawn(feed)
        for _ in range(2):  # the greeting and the opening line
            peer.complete(peer.next_app())
        peer.event("DTMF", [("DTMF-Digit", "1")])
        peer.event("DTMF", [("DTMF-Digit", "#")])
        ack = peer.next_app()
        assert _text(ack) in DEFAULT_ACK_PHRASES
        feeding.kill()
        ws.close()  # the fork dies while the acknowledgement plays
        gevent.sleep(0.6)
        peer.complete(ack)
        answer = peer.next_app()
        assert _text(answer) == "Tuesday works."
        peer.complete(answer)
        exists = peer.next_app()  # first: is this a hang-up whose event is late?
        assert exists.line == f"api uuid_exists {peer.uuid}"
        peer.send(api_response("true"))
        sorry = peer.next_app()  # before the fix: "Sorry, I didn't hear anything."
        assert "trouble hearing you" in _text(sorry)
        peer.complete(sorry)
        hold = peer.next_app()
        assert "transfer" in _text(hold)
    finally:
        if feeding is not None:
            feeding.kill()
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        peer.close()
        server.stop(timeout=2)
        media.stop()


# -- 5. control characters never reach an ESL command -----------------------------------


@pytest.mark.parametrize(("target", "clean"), [
    ("user/1000\r\n", "user/1000"),
    ("user/1000\n\nlog ERR injected", "user/1000 log ERR injected"),
])
def test_transfer_target_with_line_breaks_never_splits_a_command(target, clean):
    reply = AgentReply("Connecting you now.", action="transfer", transfer_to=target,
                       outcome="handoff")
    agent = StreamingAgent({"desk": [(0.0, reply)]})
    server = _serve(agent)
    peer = WirePeer(server.address)
    try:
        _call(peer, server)
        speech(peer, "front desk please")
        said = peer.next_app()
        assert _text(said) == "Connecting you now."
        peer.complete(said)
        seen = []
        while True:
            cmd = peer.next_app()
            seen.append(cmd.line)
            if cmd.header("execute-app-name") == "bridge":
                break
        assert seen == ["sendmsg"]  # nothing smuggled in between (e.g. "log ERR ...")
        assert cmd.header("execute-app-arg") == clean
        assert peer.setvars["ivr_transfer_to"] == clean
        peer.complete(cmd, "SUCCESS")
        _hung_up(peer)  # after the bridge
        wait_until(lambda: server.completed == 1)
        t = server.last_transcripts[-1].to_dict()
        assert t["transfer_to"] == clean and t["outcome"] == "handoff"
    finally:
        peer.close()
        server.stop(timeout=2)


# -- 6. a barge-in that drops a playback FreeSWITCH had not started ---------------------


def _barge_into_the_second_greeting_sentence(peer: WirePeer, *, started: bool):
    """The greeting's second sentence is queued; the caller talks before or after it starts."""
    peer.handshake()
    greet = peer.next_app()
    peer.started(greet)
    peer.complete(greet)
    second = peer.next_app()
    assert "How can I help" in second.header("execute-app-arg")
    if started:
        peer.started(second)
    peer.event("DETECTED_SPEECH", [("Speech-Type", "begin-speaking")])
    brk = peer.command()
    assert brk.line.startswith("api uuid_break") and brk.line.endswith(" all")
    peer.api_ok()
    return second


def test_a_playback_dropped_by_the_break_is_not_awaited():
    # uuid_break … all flushes the channel's queued apps: a playback still queued never
    # sends CHANNEL_EXECUTE nor its completion. The caller's words must be answered
    # at once, not after the two seconds a started playback gets to end.
    server = start_server(make_services())
    peer = WirePeer(server.address)
    try:
        _barge_into_the_second_greeting_sentence(peer, started=False)
        t0 = time.monotonic()
        speech(peer, "book Tuesday")
        answer = peer.next_app()
        waited = time.monotonic() - t0
        assert answer is not None and "Tuesday at 9 AM" in _text(answer)
        assert waited < 1.0, waited
        peer.started(answer)
        peer.complete(answer)
        t = _finish(peer, server)
        bot = [(x["text"], x["barged_in"]) for x in t["turns"] if x["speaker"] == "bot"]
        assert any(b for text, b in bot if "How can I help" in text)
    finally:
        peer.close()
        server.stop(timeout=2)


def test_a_started_playback_is_still_awaited_after_the_break():
    # It had started: FreeSWITCH stops it and reports its end; the bot answers after that
    # (the channel quiet), not during the grace it gives a playback to show it started.
    server = start_server(make_services())
    peer = WirePeer(server.address)
    try:
        second = _barge_into_the_second_greeting_sentence(peer, started=True)
        speech(peer, "book Tuesday")
        with pytest.raises(gevent.Timeout):
            peer.command(timeout=0.8)  # nothing while the broken playback has not ended
        peer.complete(second)
        answer = peer.next_app()
        assert answer is not None and "Tuesday at 9 AM" in _text(answer)
        peer.started(answer)
        peer.complete(answer)
        _finish(peer, server)
    finally:
        peer.close()
        server.stop(timeout=2)
