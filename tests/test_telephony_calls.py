"""Whole calls over TCP: the FreeSWITCH emulator dials the bot, the local agent answers."""

from __future__ import annotations

import json

import gevent
import pytest
from fakes.telephony import local_bot, wait_until

from esl_app.scheduling import service
from esl_app.sim.emulator.channel import BridgeOutcome
from esl_app.sim.simulate import SimCall, run_lines, transcript_for
from esl_app.telephony.records import get_call, list_calls

SCALE = 0.02  # emulated media time: a 3 s prompt plays in 60 ms


@pytest.fixture
def bot(tmp_path):
    yield from local_bot(tmp_path)


def _call(bot, lines, did="1001", hang_up_at_end=True, **kw):
    sim = SimCall(bot.address, did, time_scale=SCALE, **kw).start()
    events: list[dict] = []
    run_lines(sim, lines, events.append, hang_up_at_end=hang_up_at_end)
    return sim, transcript_for(sim, bot), events


def _no_leak(bot):
    wait_until(lambda: bot.server.active_calls == 0 and bot.server.connections == 0)


# the confirmation names the number called from: no question of its own for it
BOOKING = ["I'd like to book an appointment with Dr. Smith", "next Tuesday morning",
           "the first one", "John Smith", "yes", "no thanks"]


def test_booking_call_end_to_end(bot):
    sim, t, events = _call(bot, BOOKING)
    assert t["tenant"] == "sunrise" and t["did"] == "1001"
    assert t["outcome"] == "booked"
    code = t["confirmation"]
    assert code and t["appointment"]["doctor"] == "smith"
    stored = service.get_appointment("sunrise", code)
    assert stored.patient_name == "John Smith" and stored.status == "booked"
    assert stored.start.isoformat() == t["appointment"]["start"]
    assert stored.call_id == t["call_id"]
    said = " ".join(x["text"] for x in t["turns"] if x["speaker"] == "bot")
    assert "Sunrise Family Clinic" in said and code in said
    assert [e["event"] for e in events].count("listening") >= len(BOOKING)
    # the emulator heard the code spelt out, the channel carries the result for CDRs
    assert any("dash" in e.get("text", "") for e in events if e["event"] == "bot_said")
    assert sim.call.transcript["variables"]["ivr_outcome"] == "booked"
    _no_leak(bot)
    rec = get_call(t["call_id"])
    assert rec["outcome"] == "booked" and rec["confirmation"] == code
    assert rec["turns"] == t["turns"]
    assert list_calls("sunrise")[0]["call_id"] == t["call_id"]
    assert list_calls("lakeside") == []


def _booked(phone="+15550100100", name="Jane Doe"):
    slot = service.search_slots("sunrise", limit=1)[0]
    return service.book("sunrise", slot.slot_id, patient_name=name, phone=phone)


def _spelt(code: str) -> str:
    return " ".join(code.replace("-", ""))


def test_cancel_call(bot):
    ap = _booked()
    _, t, _ = _call(bot, ["I need to cancel my appointment", _spelt(ap.confirmation),
                          "Jane Doe", "yes", "no thanks"])
    assert t["outcome"] == "cancelled", t["turns"]
    assert service.get_appointment("sunrise", ap.confirmation).status == "cancelled"
    _no_leak(bot)


def test_reschedule_call(bot):
    ap = _booked()
    _, t, _ = _call(bot, ["I want to reschedule my appointment", _spelt(ap.confirmation),
                          "Jane Doe", "next Wednesday afternoon", "the first one", "yes",
                          "no thanks"])
    assert t["outcome"] == "rescheduled", t["turns"]
    moved = service.get_appointment("sunrise", ap.confirmation)
    assert moved.status == "booked" and moved.start != ap.start
    _no_leak(bot)


def test_transfer_on_request(bot):
    sim, t, events = _call(bot, ["can I talk to a person please"], hang_up_at_end=False)
    assert t["outcome"] == "handoff" and t["transfer_to"] == "user/1000"
    assert {"event": "transfer", "to": "user/1000"} in events
    assert sim.call.transcript["transfer_to"] == "user/1000"
    _no_leak(bot)


def test_transfer_on_dtmf_zero(bot):
    _, t, events = _call(bot, ["#dtmf 0"], did="2002", hang_up_at_end=False)
    assert t["tenant"] == "lakeside"
    assert t["outcome"] == "handoff" and t["transfer_to"] == "user/2000"
    _no_leak(bot)


def test_failed_transfer_takes_a_message(bot):
    """Nobody answers the human line in time: back to the bot, the caller leaves a message."""
    from esl_app.scheduling.callbacks import list_tickets

    _, t, events = _call(bot, ["#dtmf 0", "yes please", "Jane Doe", "yes",
                               "it is about my test results", "yes"], hang_up_at_end=False,
                         bridge_outcome=BridgeOutcome(kind="no_answer", ring_seconds=0.1))
    assert t["outcome"] == "message_taken", t["turns"]
    assert t["transfer_to"] is None
    tickets = list_tickets("sunrise")
    assert len(tickets) == 1
    assert tickets[0].name == "Jane Doe" and tickets[0].phone.endswith("5550100100")
    assert "test results" in tickets[0].reason and tickets[0].call_id == t["call_id"]
    said = " ".join(x["text"] for x in t["turns"] if x["speaker"] == "bot")
    assert "five five five" in said  # the caller ID was read back digit by digit
    _no_leak(bot)


def test_busy_transfer_then_caller_declines_message(bot):
    from esl_app.scheduling.callbacks import list_tickets

    _, t, _ = _call(bot, ["I want to talk to the front desk", "no thanks"],
                    hang_up_at_end=False,
                    bridge_outcome=BridgeOutcome(kind="busy", ring_seconds=0.1))
    assert t["outcome"] in ("message_declined", "handoff"), t["turns"]
    assert list_tickets("sunrise") == []
    _no_leak(bot)


def test_emergency_mid_booking(bot):
    _, t, _ = _call(bot, ["I'd like to book an appointment with Dr. Smith",
                          "actually I have crushing chest pain right now"],
                    hang_up_at_end=False)
    assert t["outcome"] == "emergency", t["turns"]
    said = " ".join(x["text"] for x in t["turns"] if x["speaker"] == "bot")
    assert "911" in said
    assert service.list_appointments("sunrise") == []
    rec = get_call(t["call_id"])
    assert rec["outcome"] == "emergency"
    _no_leak(bot)


def test_silence_reprompts_twice_then_transfers(bot):
    # sunrise: no_input_seconds 1, no_input_action transfer
    sim = SimCall(bot.address, "1001", time_scale=SCALE).start()
    assert sim.call.wait_ended(30)
    t = transcript_for(sim, bot)
    bot_lines = [x["text"] for x in t["turns"] if x["speaker"] == "bot"]
    assert any("didn't hear anything" in x for x in bot_lines)
    assert any("still there" in x for x in bot_lines)
    assert t["outcome"] == "no_input" and t["transfer_to"] == "user/1000"
    _no_leak(bot)


def test_silence_then_goodbye_when_configured(bot):
    sim = SimCall(bot.address, "2002", time_scale=SCALE).start()
    assert sim.call.wait_ended(30)
    t = transcript_for(sim, bot)
    assert t["outcome"] == "no_input" and t["transfer_to"] is None
    assert "Goodbye" in t["turns"][-1]["text"]


def test_caller_hangs_up_mid_sentence_no_booking_no_leak(bot):
    before = gevent.get_hub().loop.activecnt
    sim = SimCall(bot.address, "1001", time_scale=SCALE).start()
    for line in BOOKING[:3]:
        assert sim.act(line)
    assert sim.act(BOOKING[3])  # the name
    sim.call.channel.time_scale = 1.0  # the next prompt plays in real time
    # the bot now reads back the booking question; hang up while it talks
    wait_until(lambda: sim.call.channel.current_playback is not None)
    sim.call.hang_up()
    assert sim.call.wait_ended(10)
    t = transcript_for(sim, bot)
    assert t["outcome"] == "caller_hangup" and t["confirmation"] is None
    assert service.find_appointments("sunrise", name="John Smith") == []
    _no_leak(bot)
    assert sim.call.wait_closed(5)
    assert gevent.get_hub().loop.activecnt <= before + 5  # no timers or watchers left


def test_caller_barges_in_over_a_prompt(bot):
    sim = SimCall(bot.address, "1001", time_scale=0.3).start()
    wait_until(lambda: sim.call.channel.current_playback is not None)
    sim.call.say("I'd like to book an appointment")  # over the greeting
    assert sim.call.wait_until_listening(20)
    sim.call.hang_up()
    sim.call.wait_ended(10)
    t = transcript_for(sim, bot)
    first = t["turns"][0]
    assert first["speaker"] == "bot" and first["barged_in"] is True
    assert any(x["speaker"] == "caller" for x in t["turns"])
    assert sim.call.transcript["turns"][0]["barged_in"] is True


def test_unknown_did_is_rejected(bot):
    sim = SimCall(bot.address, "5559999", time_scale=SCALE).start()
    assert sim.call.wait_ended(10)
    t = transcript_for(sim, bot)
    assert t["outcome"] == "rejected" and t["tenant"] is None
    assert "not in service" in " ".join(x["text"] for x in t["turns"])
    _no_leak(bot)


def test_fifty_simultaneous_calls_land_in_the_right_clinic(bot):
    sims = []
    for i in range(50):
        did = "1001" if i % 2 else "2002"
        sims.append((did, SimCall(bot.address, did, caller=f"+1555010{i:04d}",
                                  time_scale=SCALE).start()))

    def drive(sim):
        sim.act("what are your opening hours")
        sim.finish()

    gevent.joinall([gevent.spawn(drive, s) for _, s in sims], timeout=90, raise_error=True)
    for did, sim in sims:
        t = transcript_for(sim, bot)
        assert t["tenant"] == ("sunrise" if did == "1001" else "lakeside")
        greeting = t["turns"][0]["text"]
        assert ("Sunrise" in greeting) == (did == "1001")
    _no_leak(bot)


def test_emulator_fault_injection_ends_call_server_survives(bot):
    sim = SimCall(bot.address, "1001", time_scale=SCALE).start()
    assert sim.call.wait_until_listening(10)
    sim.call.inject_raw(b"Content-Length: 99999999999\nContent-Type: text/event-plain\n\n")
    assert sim.call.wait_ended(10)
    _no_leak(bot)
    sim2 = SimCall(bot.address, "1001", time_scale=SCALE).start()
    assert sim2.call.wait_until_listening(10)
    sim2.call.reset()
    _no_leak(bot)
    _, t, _ = _call(bot, ["#dtmf 0"], hang_up_at_end=False)
    assert t["outcome"] == "handoff"


def test_transcript_is_json_serialisable(bot):
    _, t, _ = _call(bot, [])
    assert t["outcome"] == "caller_hangup"
    assert json.loads(json.dumps(t))["call_id"] == t["call_id"]


def test_two_callers_want_the_same_slot(bot):
    """Both hear the same offer; the first to pick holds it, the second is offered another."""
    a = SimCall(bot.address, "1001", caller="+15550100111", time_scale=SCALE).start()
    b = SimCall(bot.address, "1001", caller="+15550100222", time_scale=SCALE).start()
    for sim in (a, b):
        for line in ["I'd like to book an appointment with Dr. Smith", "next Tuesday morning"]:
            assert sim.act(line)
    assert a.act("the first one")  # A holds it while giving details
    for line in ["the first one", "the first one", "Bob Jones", "yes", "no thanks"]:
        assert b.act(line)
    b.finish()
    for line in ["Ann Lee", "yes", "no thanks"]:
        assert a.act(line)
    a.finish()
    ta, tb = transcript_for(a, bot), transcript_for(b, bot)
    assert ta["outcome"] == "booked" and tb["outcome"] == "booked", (ta["turns"], tb["turns"])
    assert ta["appointment"]["start"] < tb["appointment"]["start"]
    said_b = [x["text"] for x in tb["turns"] if x["speaker"] == "bot"]
    assert any("just taken" in s for s in said_b)
    assert sum("You're booked" in s for s in said_b) == 1
    booked = service.list_appointments("sunrise")
    assert sorted(x.patient_name for x in booked) == ["Ann Lee", "Bob Jones"]
    _no_leak(bot)
