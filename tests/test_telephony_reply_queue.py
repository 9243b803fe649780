"""A reply's sentences are queued on the switch ahead of time: no dead air between them.

The bot sends each sentence's playback as soon as it is ready, behind the one playing
(FreeSWITCH runs a channel's ``event-lock`` applications in order, as the emulator
does). Issue #27: when the next sentence went out only after the previous one's
completion, the gap grew under load until the caller (and the emulator, after its
200 ms ``listen_settle``) took the bot for finished and talked over the rest.
"""

from __future__ import annotations

import gevent
import pytest
from fakes.telephony import local_bot, wait_until

from esl_app.sim.simulate import SimCall, run_lines, transcript_for


@pytest.fixture
def bot(tmp_path):
    yield from local_bot(tmp_path)


BOOKING = ["I'd like to book an appointment with Dr. Smith", "next Tuesday morning",
           "the first one", "John Smith", "yes", "no thanks"]


def _bot_lines(sim):
    return [t.text for t in sim.call.channel.turns if t.speaker == "bot"]


def test_no_idle_channel_between_the_sentences_of_a_reply(bot):
    """Structural: whenever a playback completes and the bot has more of that reply to
    say, the next playback is already in the channel's queue (no gap at all, whatever
    the load), and 'listening' is announced only once per reply."""
    sim = SimCall(bot.address, "1001", time_scale=0.02).start()
    events: list[dict] = []
    run_lines(sim, BOOKING, events.append)
    t = transcript_for(sim, bot)
    assert t["outcome"] == "booked", t["turns"]
    ch = sim.call.channel
    said = _bot_lines(sim)
    assert len(said) > len([x for x in t["turns"] if x["speaker"] == "bot"])  # multi-sentence
    assert ch.playback_gaps == [], ch.playback_gaps
    # the caller was never invited to talk in the middle of a reply
    listening = [e for e in events if e["event"] == "listening"]
    assert len(listening) == len(BOOKING)


def test_barge_in_mid_reply_drops_the_queued_sentences(bot):
    sim = SimCall(bot.address, "1001", time_scale=0.5).start()
    ch = sim.call.channel
    # the greeting's first sentence plays, its second waits in the channel's queue
    wait_until(lambda: ch.current_playback is not None and ch._apps.qsize() >= 1, 10)
    assert "Sunrise Family Clinic" in ch.current_playback.text
    sim.call.say("what are your opening hours")
    assert sim.call.wait_until_listening(20)
    said = _bot_lines(sim)
    assert not any("How can I help" in s for s in said), said  # dropped, never played
    sim.call.hang_up()
    assert sim.call.wait_ended(10)
    t = transcript_for(sim, bot)
    first = t["turns"][0]
    assert first["speaker"] == "bot" and first["barged_in"] is True
    assert "How can I help" not in first["text"]  # the record says what was heard
    assert any("8" in x["text"] for x in t["turns"][2:] if x["speaker"] == "bot")  # hours
    wait_until(lambda: bot.server.active_calls == 0 and bot.server.connections == 0)


def test_hang_up_mid_reply_with_sentences_queued_is_clean(bot):
    sim = SimCall(bot.address, "1001", time_scale=0.5).start()
    ch = sim.call.channel
    wait_until(lambda: ch.current_playback is not None and ch._apps.qsize() >= 1, 10)
    sim.call.hang_up()
    assert sim.call.wait_ended(10)
    t = transcript_for(sim, bot)
    assert t["outcome"] == "caller_hangup"
    bot_turns = [x for x in t["turns"] if x["speaker"] == "bot"]
    assert len(bot_turns) == 1 and "How can I help" not in bot_turns[0]["text"]
    wait_until(lambda: bot.server.active_calls == 0 and bot.server.connections == 0)
    assert sim.call.wait_closed(5)
    gevent.sleep(0.1)
    assert not any("How can I help" in s for s in _bot_lines(sim))
