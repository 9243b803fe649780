import struct
import wave

import gevent
import pytest
from fakes.emulator import FakeBot

from esl_app.sim.emulator.channel import BridgeOutcome
from esl_app.sim.emulator.outbound import EmulatedCall
from esl_app.sim.emulator.wire import parse_header_block

SCALE = 0.02


@pytest.fixture
def bot():
    b = FakeBot()
    yield b
    b.stop()


def _start(bot, **kw):
    call = EmulatedCall(bot.address, did="1001", caller="+15550100100", time_scale=SCALE,
                        listen_settle=0.05, variables={"ivr_tenant": "sunrise"}, **kw)
    call.start()
    bot.accept()
    return call


def _handshake(bot, linger=True):
    bot.send("connect\n\n")
    raw = bot.read_raw_until_blank()
    hdrs = dict(parse_header_block(raw.decode()))
    assert hdrs["Content-Type"] == "command/reply"
    assert hdrs["Reply-Text"] == "%2BOK%0A"
    assert hdrs["Socket-Mode"] == "async" and hdrs["Control"] == "full"
    assert hdrs["Event-Name"] == "CHANNEL_DATA"
    assert hdrs["Caller-Destination-Number"] == "1001"
    assert hdrs["Caller-Caller-ID-Number"] == "%2B15550100100"
    assert hdrs["variable_ivr_tenant"] == "sunrise"
    keys = [k for k, _ in parse_header_block(raw.decode())]
    assert keys[:2] == ["Event-Name", "Core-UUID"]
    assert keys[-4:] == ["Content-Type", "Reply-Text", "Socket-Mode", "Control"]
    assert bot.command("myevents\n\n").raw == (
        b"Content-Type: command/reply\nReply-Text: +OK Events Enabled\n\n")
    if linger:
        assert bot.command("linger\n\n").raw == (
            b"Content-Type: command/reply\nReply-Text: +OK will linger\n\n")
    return hdrs["Unique-ID"]


def _execute(bot, app, arg, app_uuid):
    fr = bot.command(
        f"sendmsg\ncall-command: execute\nexecute-app-name: {app}\n"
        f"execute-app-arg: {arg}\nevent-lock: true\nEvent-UUID: {app_uuid}\n\n")
    assert fr.raw == b"Content-Type: command/reply\nReply-Text: +OK\n\n"


def _drain(call):
    out = []
    while not call.events.empty():
        out.append(call.events.get())
    return out


def _send_exec(bot, app, arg, app_uuid):
    bot.send(f"sendmsg\ncall-command: execute\nexecute-app-name: {app}\n"
             f"execute-app-arg: {arg}\nevent-lock: true\nEvent-UUID: {app_uuid}\n\n")


def _wav(path, seconds, text):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack("<h", 0) * int(8000 * seconds))
    (path.parent / (path.name + ".txt")).write_text(text)


def test_answer_speak_break_detect_dtmf_hangup(bot, tmp_path):
    call = _start(bot)
    uid = _handshake(bot)
    assert uid == call.uuid

    _execute(bot, "answer", "", "app-1")
    ex = bot.next_event("CHANNEL_EXECUTE")
    assert ex["Application"] == "answer" and ex["Application-UUID"] == "app-1"
    ans = bot.next_event("CHANNEL_ANSWER")
    assert ans["Answer-State"] == "answered"
    done = bot.next_event("CHANNEL_EXECUTE_COMPLETE")
    assert done["Application-UUID"] == "app-1" and done["Application-Response"] == "_none_"

    _execute(bot, "detect_speech", "pocketsphinx ivr ivr", "app-2")
    assert bot.next_event("CHANNEL_EXECUTE_COMPLETE")["Application-UUID"] == "app-2"

    wav = tmp_path / "greet.wav"
    _wav(wav, 100.0, "Thank you for calling.")  # 100 s x 0.02 = 2 s unless broken
    _execute(bot, "playback", str(wav), "app-3")
    assert bot.next_event("CHANNEL_EXECUTE")["Application-UUID"] == "app-3"
    assert call.events.get(timeout=2) == {"event": "bot_said", "text": "Thank you for calling."}

    call.say("I would like an appointment")  # barge-in while the bot talks
    assert bot.next_event("DETECTED_SPEECH")["Speech-Type"] == "begin-speaking"
    fr = bot.command(f"api uuid_break {uid} all\n\n")
    assert fr.raw == b"Content-Type: api/response\nContent-Length: 4\n\n+OK\n"
    done = bot.next_event("CHANNEL_EXECUTE_COMPLETE")
    assert done["Application-UUID"] == "app-3"
    assert done["Application-Response"] == "FILE PLAYED"
    det = bot.next_event("DETECTED_SPEECH")
    assert det["Speech-Type"] == "detected-speech"
    assert '<input mode="speech">I would like an appointment</input>' in det["_body"]
    assert call.transcript["turns"][0]["barged_in"] is True
    brk = [c for c in call.commands if c.line.startswith("api uuid_break")]
    assert brk and brk[0].at > 0

    _execute(bot, "detect_speech", "resume", "app-4")
    bot.next_event("CHANNEL_EXECUTE_COMPLETE")
    assert call.wait_until_listening(2)
    call.press("12")
    d1 = bot.next_event("DTMF")
    d2 = bot.next_event("DTMF")
    assert (d1["DTMF-Digit"], d2["DTMF-Digit"]) == ("1", "2")
    assert d1["DTMF-Duration"] == "2000"

    _execute(bot, "speak", "flite|kal|Goodbye", "app-5")
    assert bot.next_event("CHANNEL_EXECUTE_COMPLETE")["Application-UUID"] == "app-5"

    assert bot.command(
        "sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n"
    ).raw == b"Content-Type: command/reply\nReply-Text: +OK\n\n"
    hup = bot.next_event("CHANNEL_HANGUP")
    assert hup["Hangup-Cause"] == "NORMAL_CLEARING"
    # as on FreeSWITCH: the socket application ends, the state machine runs, and the
    # linger notice comes after CHANNEL_HANGUP_COMPLETE (tests/freeswitch/golden)
    after = []
    while (fr := bot.read_frame()).content_type == "text/event-plain":
        hdrs, _ = fr.event()
        after.append((hdrs["Event-Name"], hdrs.get("Application") or hdrs["Channel-State"]))
    assert after == [("CHANNEL_UNPARK", "CS_EXECUTE"), ("CHANNEL_EXECUTE_COMPLETE", "socket"),
                     ("CHANNEL_STATE", "CS_HANGUP"), ("CHANNEL_STATE", "CS_REPORTING"),
                     ("CHANNEL_HANGUP_COMPLETE", "CS_REPORTING")]
    assert fr.content_type == "text/disconnect-notice"
    assert fr.header("Content-Disposition") == "linger"
    assert fr.header("Controlled-Session-UUID") == uid
    assert call.wait_ended(2)
    fr = bot.command("exit\n\n")
    assert fr.raw == b"Content-Type: command/reply\nReply-Text: +OK bye\n\n"
    fr = bot.read_frame()
    assert fr.content_type == "text/disconnect-notice"
    assert fr.header("Content-Disposition") == "disconnect"
    assert fr.body.startswith(b"Disconnected, goodbye.")
    assert bot.is_closed()
    ended = [e for e in _drain(call) if e["event"] == "call_ended"]
    assert ended[0]["hangup_by"] == "bot"
    assert ended[0]["variables"] == {"ivr_tenant": "sunrise"}


def test_caller_hangup_without_linger_closes(bot):
    call = _start(bot)
    _handshake(bot, linger=False)
    call.hang_up()
    assert bot.next_event("CHANNEL_HANGUP")["Hangup-Cause"] == "NORMAL_CLEARING"
    bot.next_event("CHANNEL_HANGUP_COMPLETE")  # the events come first (WIRE-FACTS 4.8)
    fr = bot.read_frame()
    assert fr.content_type == "text/disconnect-notice"
    assert fr.header("Content-Disposition") == "disconnect"
    assert bot.is_closed()
    assert call.wait_ended(2)


def test_bridge_busy_hangs_up_without_continue_on_fail(bot):
    call = _start(bot, bridge_outcome=BridgeOutcome(kind="busy"))
    _handshake(bot)
    _execute(bot, "bridge", "user/1000", "b-1")
    hup = bot.next_event("CHANNEL_HANGUP")
    assert hup["Hangup-Cause"] == "USER_BUSY"
    done = bot.next_event("CHANNEL_EXECUTE_COMPLETE")
    assert done["Application-UUID"] == "b-1"
    assert done["variable_originate_disposition"] == "USER_BUSY"
    assert call.wait_ended(2)


def test_bridge_answer_then_far_end_hangs_up(bot):
    call = _start(bot, bridge_outcome=BridgeOutcome(kind="answer", ring_seconds=1,
                                                    talk_seconds=2))
    _handshake(bot)
    _execute(bot, "bridge", "user/1000", "b-2")
    br = bot.next_event("CHANNEL_BRIDGE")
    assert br["Bridge-A-Unique-ID"] == call.uuid
    bot.next_event("CHANNEL_UNBRIDGE")
    done = bot.next_event("CHANNEL_EXECUTE_COMPLETE")
    assert done["variable_originate_disposition"] == "SUCCESS"
    assert done["variable_bridge_hangup_cause"] == "NORMAL_CLEARING"
    bot.next_event("CHANNEL_HANGUP")
    assert call.wait_ended(2)
    evs = _drain(call)
    assert {"event": "transfer", "to": "user/1000"} in evs


def test_api_errors_and_unknown_command(bot):
    call = _start(bot)
    _handshake(bot)
    fr = bot.command("api uuid_break 00000000-0000-0000-0000-000000000000\n\n")
    assert fr.body == b"-ERR No Such Channel!\n"
    fr = bot.command("api nosuchcmd foo\n\n")
    assert fr.body == b"-ERR nosuchcmd Command not found!\n"
    fr = bot.command("bogus\n\n")
    assert fr.header("Reply-Text") == "-ERR command not found"
    fr = bot.command(f"api uuid_setvar {call.uuid} ivr_outcome booked\n\n")
    assert fr.body == b"+OK\n"
    fr = bot.command(f"api uuid_getvar {call.uuid} ivr_outcome\n\n")
    assert fr.body == b"booked"
    fr = bot.command("myevents\n\n")
    assert fr.header("Reply-Text") == "-ERR aready enabled."
    fr = bot.command("bgapi status\n\n")
    job = fr.header("Job-UUID")
    assert fr.header("Reply-Text") == f"+OK Job-UUID: {job}"
    call.close()


def test_socket_close_by_bot_hangs_up_call(bot):
    call = _start(bot)
    _handshake(bot)
    bot.sock.close()
    assert call.wait_ended(2)
    assert call.transcript["hangup_by"] == "socket_closed"


def test_run_script_with_text_mode_bot(bot):
    """A tiny scripted bot: greet, listen, echo each result, hang up on 'bye'."""
    call = _start(bot)

    def fake_bot():
        _handshake(bot)
        _send_exec(bot, "answer", "", "a")
        _send_exec(bot, "detect_speech", "pocketsphinx ivr ivr", "d")
        _send_exec(bot, "speak", "flite|kal|Hello", "s0")
        n = 0
        while True:
            ev = bot.next_event("DETECTED_SPEECH")
            if ev["Speech-Type"] != "detected-speech":
                continue
            text = ev["_body"].split('<input mode="speech">')[1].split("<")[0]
            if text == "bye":
                bot.send("sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n")
                return
            n += 1
            _send_exec(bot, "speak", f"flite|kal|You said {text}", f"s{n}")
            _send_exec(bot, "detect_speech", "resume", f"r{n}")

    g = gevent.spawn(fake_bot)
    result = call.run_script(["hello there", "bye"], timeout=5)
    g.join(timeout=5)
    texts = [(t["speaker"], t["text"]) for t in result["turns"]]
    assert texts == [("bot", "Hello"), ("caller", "hello there"),
                     ("bot", "You said hello there"), ("caller", "bye")]
    assert result["hangup_by"] == "bot"


def test_greenswitch_outbound_session_drives_call(tmp_path):
    from gevent.queue import Queue
    from gevent.server import StreamServer
    from greenswitch.esl import OutboundSession

    results: Queue = Queue()

    def handle(sock, addr):
        s = OutboundSession(addr, sock)
        s.connect()
        s.myevents()
        s.linger()
        s.answer()
        wav = tmp_path / "hi.wav"
        _wav(wav, 1.0, "Hi there")
        ev = s.playback(str(wav), block=True)
        results.put((s.session_data.get("Caller-Destination-Number"),
                     ev.headers.get("Application-Response")))
        s.hangup()
        gevent.sleep(0.2)
        s.stop()

    srv = StreamServer(("127.0.0.1", 0), handle)
    srv.start()
    try:
        call = EmulatedCall(("127.0.0.1", srv.server_port), did="1001", time_scale=SCALE)
        call.start()
        assert results.get(timeout=5) == ("1001", "FILE PLAYED")
        assert call.wait_ended(5)
        assert call.transcript["turns"][0]["text"] == "Hi there"
        assert call.wait_closed(5)
    finally:
        srv.stop(timeout=1)


def test_fault_injection_raw_bytes_and_reset(bot):
    call = _start(bot)
    _handshake(bot)
    call.inject_raw(b"Content-Type: command/reply\nReply-Text: +OK unsolicited\n\n")
    assert bot.read_frame().header("Reply-Text") == "+OK unsolicited"
    call.inject_raw(b"X-No-Content-Type: 1\n\n")
    assert bot.read_frame().content_type is None
    call.reset()
    assert bot.is_closed()
    assert call.wait_ended(2)
    assert call.transcript["hangup_by"] == "reset"


def test_unreachable_bot_raises_and_ends():
    from gevent import socket as gsocket

    s = gsocket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    call = EmulatedCall(("127.0.0.1", port), did="1001", time_scale=SCALE)
    with pytest.raises(OSError):
        call.start()
    assert call.wait_ended(2)
    assert call.transcript["hangup_by"] == "socket_failed"


def test_events_reach_bound_and_unbound_listeners_as_their_subscriptions_say():
    """``myevents`` binds a connection to its channel: the switch then offers it only
    that channel's events (not every event of every call), and still offers every event
    to the unbound ones (``event plain ALL``), who still apply their own filters."""
    from esl_app.sim.emulator.core import MYEVENTS, Event, Subscription, Switch

    sw = Switch()
    got: dict[str, list[str]] = {"a": [], "b": [], "all": [], "answers": []}

    def listener(name, sub):
        def deliver(ev):
            if sub.wants(ev):
                got[name].append(ev.get("Unique-ID") or "-")
        return deliver

    subs = {}
    for name, uid in (("a", "uuid-a"), ("b", "uuid-b")):
        sub = subs[name] = Subscription(enabled=True, names=set(MYEVENTS), my_uuid=uid)
        fn = listener(name, sub)
        sw.add_listener(fn)
        sw.bind_listener(fn, uid)
    sw.add_listener(listener("all", Subscription(enabled=True, all=True)))
    sw.add_listener(listener("answers", Subscription(enabled=True, names={"CHANNEL_ANSWER"})))
    for uid in ("uuid-a", "uuid-b", "uuid-c", "uuid-a"):
        sw.fire(Event("CHANNEL_EXECUTE", [("Event-Name", "CHANNEL_EXECUTE"),
                                          ("Unique-ID", uid)]))
    sw.fire(Event("CHANNEL_ANSWER", [("Event-Name", "CHANNEL_ANSWER"), ("Unique-ID", "uuid-b")]))
    sw.fire(Event("HEARTBEAT", [("Event-Name", "HEARTBEAT")]))
    assert got["a"] == ["uuid-a", "uuid-a"]
    assert got["b"] == ["uuid-b", "uuid-b"]
    assert got["all"] == ["uuid-a", "uuid-b", "uuid-c", "uuid-a", "uuid-b", "-"]
    assert got["answers"] == ["uuid-b"]
    # a closed connection is forgotten whether bound or not
    assert len(sw._bound["uuid-a"]) == 1
    gone = sw._bound["uuid-a"][0]
    sw.remove_listener(gone)
    assert "uuid-a" not in sw._bound and gone not in sw._bound_to
    sw.fire(Event("CHANNEL_EXECUTE", [("Event-Name", "CHANNEL_EXECUTE"), ("Unique-ID", "uuid-a")]))
    assert got["a"] == ["uuid-a", "uuid-a"]
