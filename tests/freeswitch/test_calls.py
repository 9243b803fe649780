"""Whole calls through the real FreeSWITCH into a real ``ivr serve``."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import gevent

from freeswitch.callers import BookingCaller, MessageCaller
from freeswitch.harness import FSCTL, Bot, Caller, DialplanInstall, InboundEsl, free_port


def _join(jobs: list[gevent.Greenlet]) -> None:
    """Wait for every caller; the first failure stops the others, then is raised.

    Without the stop, the other callers went on dialling after their test had failed,
    and their channels were charged to the tests that ran next.
    """
    try:
        gevent.joinall(jobs, raise_error=True)
    finally:
        gevent.killall(jobs)


def _appointment(bot: Bot, tenant: str, code: str) -> dict:
    rows = json.loads(bot.ivr("appointments", "list", "--tenant", tenant, "--all",
                              "--json").stdout)
    return next((r for r in rows if r.get("confirmation") == code), {})


def _book(via: str, esl: InboundEsl, plan: DialplanInstall, bot: Bot) -> None:
    call = Caller(esl, plan, "1001", via=via).dial()
    caller = BookingCaller(call, rng=random.Random(via))
    caller.converse()
    if not call.ended():
        call.hangup()
    call.wait_ended()
    record = bot.wait_call_record(call.b)
    assert record["outcome"] == "booked", (record["outcome"], caller.bot, caller.said)
    code = record["confirmation"]
    assert code and _appointment(bot, "sunrise", code), code
    # the code was read back to the caller
    assert any(code.replace("-", "")[:3].lower() in h.replace("-", "").replace(" ", "").lower()
               or "confirmation" in h.lower() for h in caller.bot), caller.bot


def test_booking_by_voice_over_loopback_and_sip(fs_esl: InboundEsl, fs_plan: DialplanInstall,
                                               fs_bot: Bot) -> None:
    """Two callers at once, one through mod_loopback, one over SIP/RTP (PCMU) via sofia."""
    jobs = [gevent.spawn(_book, via, fs_esl, fs_plan, fs_bot) for via in ("loopback", "sip")]
    _join(jobs)
    assert not fs_bot.log_problems()


def _record(bot: Bot, call: Caller) -> dict:
    call.wait_ended()
    return bot.wait_call_record(call.b)


def _outcome(bot: Bot, call: Caller, want: str) -> None:
    """The call's outcome is ``want``; if not, say what the bot logged about the call."""
    record = _record(bot, call)
    said = [(t["speaker"], t["text"]) for t in record["turns"]]
    lines = [ln for ln in bot.log.read_text(errors="replace").splitlines()
             if call.b[:8] in ln and " INFO " not in ln]
    assert record["outcome"] == want, (record["outcome"], said, lines)


def _keys_booking(esl: InboundEsl, plan: DialplanInstall, bot: Bot) -> None:
    """Choose the time and confirm on the keypad (RFC 2833 over loopback)."""
    call = Caller(esl, plan, "1001").dial()
    caller = BookingCaller(call, rng=random.Random(3), keys=True)
    caller.converse()
    if not call.ended():
        call.hangup()
    record = _record(bot, call)
    assert record["outcome"] == "booked", (record["outcome"], caller.bot, caller.said)
    assert "#2" in caller.said and "#1" in caller.said


def _zero_to_answering_line(esl: InboundEsl, plan: DialplanInstall, bot: Bot) -> None:
    """0 on the keypad: the bot bridges to the clinic's line, which answers (ext 1005)."""
    call = Caller(esl, plan, "2001").dial()
    call.wait_bot_quiet()
    mark = len(esl.events)
    call.dtmf("0")
    esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_BRIDGE", 20, mark,
                 "the bridge to the human line")
    gevent.sleep(1.0)
    call.hangup()
    record = _record(bot, call)
    assert record["outcome"] == "handoff"
    assert record["transfer_to"] == "loopback/1005/public"


def _unanswered_line_takes_message(esl: InboundEsl, plan: DialplanInstall, bot: Bot) -> None:
    """The line rings out (ext 1004, 5 s): back to the bot, which takes a message."""
    call = Caller(esl, plan, "2002").dial()
    caller = MessageCaller(call)
    caller.converse()
    if not call.ended():
        call.hangup()
    record = _record(bot, call)
    assert record["outcome"] == "message_taken", (record["outcome"], caller.bot, caller.said)
    tickets = json.loads(bot.ivr("callbacks", "list", "--tenant", "noanswer", "--json").stdout)
    assert any("appointment" in json.dumps(t).lower() for t in tickets), tickets


def _unregistered_line_message_declined(esl: InboundEsl, plan: DialplanInstall,
                                        bot: Bot) -> None:
    """user/1000 is not registered: the bot is back at once and the caller declines."""
    call = Caller(esl, plan, "1001", caller_id="+15550100111").dial()
    caller = MessageCaller(call, decline=True)
    caller.converse()
    if not call.ended():
        call.hangup()
    record = _record(bot, call)
    assert record["outcome"] == "message_declined", (record["outcome"], caller.bot)
    assert any("leave a message" in h for h in caller.bot)


def test_keys_transfers_and_messages(fs_esl: InboundEsl, fs_plan: DialplanInstall,
                                     fs_bot: Bot) -> None:
    """DTMF and the three kinds of human line, four callers at once."""
    jobs = [gevent.spawn(fn, fs_esl, fs_plan, fs_bot) for fn in (
        _keys_booking, _zero_to_answering_line, _unanswered_line_takes_message,
        _unregistered_line_message_declined)]
    _join(jobs)
    assert not fs_bot.log_problems()


def _holds(bot: Bot) -> int:
    import sqlite3

    with sqlite3.connect(bot.workdir / "ivr.db") as db:
        return db.execute("SELECT count(*) FROM slot WHERE hold_owner IS NOT NULL").fetchone()[0]


def _hangup_mid_prompt(esl: InboundEsl, plan: DialplanInstall, bot: Bot) -> None:
    call = Caller(esl, plan, "1001").dial()
    esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_EXECUTE"
                 and e.get("Application") == "playback", 15, call.start, "the greeting")
    gevent.sleep(0.5)
    call.hangup()
    _outcome(bot, call, "caller_hangup")


def _hangup_mid_recognition(esl: InboundEsl, plan: DialplanInstall, bot: Bot) -> None:
    call = Caller(esl, plan, "1001").dial()
    call.wait_bot_quiet()
    call.say("I would like to book an appointment with doctor Smith next Tuesday morning",
             wait=False)
    gevent.sleep(1.2)
    call.hangup()
    _outcome(bot, call, "caller_hangup")


def _hangup_mid_booking(esl: InboundEsl, plan: DialplanInstall, bot: Bot) -> None:
    """At the name question the picked time is held; the hang-up must free it.

    Reaching the name question is this part's set-up, not what it tests: a call whose
    words the recogniser missed until the bot offered the front desk (and went there)
    is hung up and placed again, as a caller would redial.
    """
    for attempt in range(3):
        call = Caller(esl, plan, "1001").dial()
        caller = BookingCaller(call, rng=random.Random(7 + attempt))
        heard = caller.until(lambda h: "name" in h.lower() or "please hold" in h.lower())
        # the name asked, and not on the way to the front desk: a line that mentions a
        # name while it hands over ("... please hold") is such a call, not the set-up
        if any("name" in h.lower() for h in heard) \
                and not any("please hold" in h.lower() for h in heard) and _holds(bot) >= 1:
            break
        call.hangup()
        call.wait_ended()
        _record(bot, call)  # that call is over and stored before the next one
    else:
        raise AssertionError(f"three calls never reached the name question: {caller.bot}")
    call.hangup()
    _outcome(bot, call, "caller_hangup")


def test_hangups_release_everything(fs_esl: InboundEsl, fs_plan: DialplanInstall,
                                    fs_bot: Bot) -> None:
    """Caller hang-up mid-prompt, mid-recognition, mid-booking: nothing of the call stays."""
    jobs = [gevent.spawn(fn, fs_esl, fs_plan, fs_bot) for fn in (
        _hangup_mid_prompt, _hangup_mid_recognition, _hangup_mid_booking)]
    _join(jobs)
    deadline = time.monotonic() + 10
    while fs_bot.metric("ivr_calls_active") and time.monotonic() < deadline:
        gevent.sleep(0.2)
    assert fs_bot.metric("ivr_calls_active") == 0
    assert _holds(fs_bot) == 0
    assert not fs_bot.log_problems()


def test_dead_bot_sends_the_call_to_the_human_line(fs_esl: InboundEsl, fs_plan: DialplanInstall,
                                                   fs_tenants: Path) -> None:
    """No bot listening: the dialplan goes on to the clinic's line (which answers here)."""
    fs_plan.install(fs_tenants, f"127.0.0.1:{free_port()}", suffix="_down")
    call = Caller(fs_esl, fs_plan, "2001", suffix="_down").dial()
    bridge = fs_esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_EXECUTE"
                             and e.get("Application") == "bridge", 15, call.start, "bridge")
    assert bridge.get("Application-Data") == "loopback/1005/public"
    fs_esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_BRIDGE", 15, call.start,
                    "the human line answering")
    call.hangup()
    call.wait_ended()


def test_bot_dying_mid_call_sends_the_caller_to_the_human_line(
        fs_esl: InboundEsl, fs_plan: DialplanInstall, fs_tenants: Path,
        tmp_path: Path) -> None:
    """A bot killed mid-call: FreeSWITCH ends the socket app and the dialplan goes on.

    (FreeSWITCH 1.10.12 does not hang up here: the rendered dialplan's next condition
    bridges to the clinic's line, ext 1005, which answers.)
    """
    bot = Bot(tmp_path, fs_tenants, days=1)
    bot.prepare()
    bot.start()
    try:
        fs_plan.install(fs_tenants, bot.esl, suffix="_kill")
        call = Caller(fs_esl, fs_plan, "2001", suffix="_kill").dial()
        call.wait_bot_quiet()
        mark = len(fs_esl.events)
        bot.kill()
        bridge = fs_esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_EXECUTE"
                                 and e.get("Application") == "bridge", 15, mark, "bridge")
        assert bridge.get("Application-Data") == "loopback/1005/public"
        fs_esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_BRIDGE", 15, mark,
                        "the human line answering")
        assert not call.ended()
        call.hangup()
        call.wait_ended()
    finally:
        bot.stop()


def test_sipp_call_reaches_the_bot(fs_esl: InboundEsl, fs_plan: DialplanInstall,
                                   fs_bot: Bot) -> None:
    """A foreign SIP user agent (sipp, PCMU RTP from a capture of speech) into the bot."""
    import subprocess

    mark = len(fs_esl.events)
    out = subprocess.run([str(FSCTL.with_name("test_call.sh"))], capture_output=True, text=True,
                         timeout=90, env={**os.environ, "DEST": fs_plan.sip_user("1001"),
                                          "CALL_SECONDS": "10", "CALLER": "15551230000"})
    assert "RESULT: OK" in out.stdout, out.stdout[-2000:]
    ev = fs_esl.wait_for(lambda e: e.name == "CHANNEL_EXECUTE" and e.get("Application")
                         == "socket" and e.get("Caller-Destination-Number") == "1001"
                         and e.get("variable_sip_from_user") == "15551230000", 5, mark,
                         "the sipp call in the bot's socket")
    fs_esl.owned.add(ev.uuid)
    record = fs_bot.wait_call_record(ev.uuid)
    assert record["outcome"] == "caller_hangup"
    assert [t for t in record["turns"] if t["speaker"] == "caller"], record["turns"]
