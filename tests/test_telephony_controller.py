"""Events in → commands out: the call controller driven by a hand-written FreeSWITCH side."""

from __future__ import annotations

import contextlib

import gevent
import pytest
from fakes.telephony import WirePeer, make_services, speech, start_server, wait_until


def test_booking_dialogue_commands_and_transcript():
    server = start_server(make_services())
    peer = WirePeer(server.address)
    try:
        peer.handshake()
        greet = peer.next_app()
        # the recogniser is armed before the first prompt so the caller can talk over it
        assert peer.detects == ["pocketsphinx ivr ivr"]
        assert greet.header("execute-app-name") == "speak"
        assert greet.header("Event-UUID")
        assert "Sunrise Family Clinic" in greet.header("execute-app-arg")
        # a stale completion (wrong Application-UUID) must not end the prompt
        peer.event("CHANNEL_EXECUTE_COMPLETE", [("Application", "speak"),
                                                ("Application-UUID", "not-ours")])
        peer.complete(greet)
        second = peer.next_app()
        assert "How can I help" in second.header("execute-app-arg")
        peer.complete(second)
        speech(peer, "I want to book an appointment")
        offer = peer.next_app()
        assert peer.detects[-1] == "resume"
        assert "Tuesday at 9 AM with Dr. Smith." in offer.header("execute-app-arg")
        peer.complete(offer)
        ask = peer.next_app()
        assert ask.header("execute-app-arg").endswith("Shall I book it?")
        # barge-in: the caller talks over the question
        peer.event("DETECTED_SPEECH", [("Speech-Type", "begin-speaking")])
        brk = peer.command()
        assert brk.line == f"api uuid_break {peer.uuid} all"
        peer.api_ok()
        peer.complete(ask)
        nlsml = '<result><interpretation confidence="80"><input>yes please</input>' \
                '</interpretation></result>'
        peer.event("DETECTED_SPEECH", [("Speech-Type", "detected-speech")], nlsml)
        booked = peer.next_app()
        assert booked.header("execute-app-arg") == "flite|slt|You are booked."
        peer.complete(booked)
        code = peer.next_app()
        assert "K, 7, M, dash, 4, Q, 2" in code.header("execute-app-arg")
        peer.hangup()
        wait_until(lambda: server.completed == 1)
        t = server.last_transcripts[-1].to_dict()
        assert t["tenant"] == "sunrise" and t["did"] == "1001"
        assert t["outcome"] == "booked" and t["confirmation"] == "K7M-4Q2"
        assert t["appointment"] == {"doctor": "smith", "start": "2026-11-24T09:00:00-05:00"}
        bot_turns = [x for x in t["turns"] if x["speaker"] == "bot"]
        assert bot_turns[1]["barged_in"] is True
        assert bot_turns[1]["text"].endswith("Shall I book it?")
        assert bot_turns[0]["barged_in"] is False
        caller = [x["text"] for x in t["turns"] if x["speaker"] == "caller"]
        assert caller == ["I want to book an appointment", "yes please"]
        assert all(isinstance(x["at_ms"], int) for x in t["turns"])
        assert peer.setvars["ivr_tenant"] == "sunrise"
        assert peer.setvars["ivr_outcome"] == "booked"
        assert peer.setvars["ivr_confirmation"] == "K7M-4Q2"
        wait_until(lambda: server.active_calls == 0 and server.connections == 0)
    finally:
        peer.close()
        server.stop(timeout=2)


def test_dtmf_zero_bridges_to_handoff():
    server = start_server(make_services())
    peer = WirePeer(server.address)
    try:
        peer.handshake()
        cmd = peer.next_app()
        peer.event("DTMF", [("DTMF-Digit", "0"), ("DTMF-Duration", "2000")])
        brk = peer.command()
        assert brk.line.startswith("api uuid_break")
        peer.api_ok()
        peer.complete(cmd)
        hold = peer.next_app()
        assert "transfer" in hold.header("execute-app-arg")
        peer.complete(hold)
        bridge = peer.next_app()
        assert "continue_on_fail=true" in peer.settings[-1]
        assert "call_timeout=25" in peer.settings[-1]
        assert bridge.header("execute-app-name") == "bridge"
        assert bridge.header("execute-app-arg") == "user/1000"
        peer.event("CHANNEL_EXECUTE_COMPLETE", [
            ("Application", "bridge"), ("Application-UUID", bridge.header("Event-UUID")),
            ("Application-Response", "_none_"), ("variable_originate_disposition", "SUCCESS")])
        hup = peer.command()
        assert hup.header("call-command") == "hangup"
        peer.ok()
        peer.hangup()
        wait_until(lambda: server.completed == 1)
        t = server.last_transcripts[-1].to_dict()
        assert t["outcome"] == "handoff" and t["transfer_to"] == "user/1000"
    finally:
        peer.close()
        server.stop(timeout=2)


def _socket_done(peer: WirePeer, answer_state: str) -> None:
    """The dialplan's ``socket`` application completes, as FreeSWITCH reports it."""
    peer.event("CHANNEL_EXECUTE_COMPLETE", [
        ("Answer-State", answer_state), ("Application", "socket"),
        ("Application-Data", "127.0.0.1:8084 async full"),
        ("Application-Response", "PLAYBACK ERROR" if answer_state == "hangup" else "_none_"),
        ("Application-UUID", "dialplan-socket")])


@pytest.mark.parametrize("answer_state, outcome", [
    ("hangup", "caller_hangup"),  # the hang-up's own completion, ahead of its event
    ("answered", "handoff"),  # moved away (uuid_transfer): not ours to hang up
])
def test_the_socket_apps_end_says_whether_the_caller_hung_up_or_was_moved(
        answer_state, outcome):
    """A hang-up mid-prompt whose ``socket`` completion outran its CHANNEL_HANGUP.

    FreeSWITCH sends CHANNEL_HANGUP first, but a loaded CI box once delivered the
    completion first, and the call was stored as handed over to someone. The
    completion's own ``Answer-State`` tells the two apart.
    """
    server = start_server(make_services())
    peer = WirePeer(server.address)
    sent: list[str] = []

    def answer_everything() -> None:  # as FreeSWITCH does, so the bot waits for nothing
        while (cmd := peer.command(timeout=30)) is not None:
            sent.append(f"{cmd.line} {cmd.header('execute-app-name') or ''}")
            peer.api_ok() if cmd.name == "api" else peer.ok()

    try:
        peer.handshake()
        peer.next_app()  # the greeting, playing
        replies = gevent.spawn(answer_everything)
        _socket_done(peer, answer_state)
        wait_until(lambda: server.completed == 1, timeout=3)  # on the completion alone
        record = server.last_transcripts[-1]
        assert record.outcome == outcome
        assert [x.speaker for x in record.turns] == ["bot"]
        assert record.usage["ended"] == ("caller_hangup" if answer_state == "hangup" else "left")
        with contextlib.suppress(OSError):  # the bot may have closed its side already
            peer.hangup()  # CHANNEL_HANGUP (or whoever has the call now hangs up)
        wait_until(lambda: server.active_calls == 0 and server.connections == 0)
        replies.kill()
        assert not any("hangup" in line for line in sent), sent  # nor did the bot hang up
    finally:
        peer.close()
        server.stop(timeout=2)


def test_next_times_out_while_unrelated_events_keep_coming():
    """A heartbeat every 50 ms must not restart a 0.3 s wait (a caller's silence)."""
    import time

    import gevent
    from gevent.queue import Queue

    from esl_app.telephony.call import CallController
    from esl_app.telephony.events import Msg

    queue: Queue = Queue()
    ctl = CallController.__new__(CallController)
    ctl.queue = queue
    ctl.gone = False

    def heartbeat():
        while True:
            queue.put(Msg("other"))
            gevent.sleep(0.05)

    g = gevent.spawn(heartbeat)
    try:
        t0 = time.monotonic()
        assert ctl.next(timeout=0.3) is None
        assert 0.25 <= time.monotonic() - t0 < 1.0
        queue.put(Msg("dtmf", text="5"))
        msg = ctl.next(timeout=0.3)
        assert msg is not None and msg.kind == "dtmf"  # what means something still arrives
    finally:
        g.kill()


def test_a_message_kind_is_one_of_the_known_kinds() -> None:
    from esl_app.telephony.events import Kind, Msg

    assert Msg("dtmf", text="5").kind is Kind.DTMF  # older code's strings still work
    assert Msg(Kind.HANGUP).kind == "hangup"  # and read as the same strings in logs
    with pytest.raises(ValueError):
        Msg("transcrpt")  # a typo fails where it is made, not as a message nobody reads
