"""An operator moves a live call away from the bot (uuid_transfer): the bot lets go.

Seen on the real FreeSWITCH 1.10: the transfer breaks the bot's playback, whose
completion already carries the new ``transfer_source``, and only then does the
``socket`` application complete; the socket stays open. A bot that took that
completion for the end of its prompt sent the next one, and it played to whoever
had the call now (tests/freeswitch/test_ivrctl.py holds the real switch to this).
"""

from __future__ import annotations

import pytest
from fakes.telephony import local_bot, wait_until

from esl_app.sim.simulate import SimCall, transcript_for

SCALE = 0.05


@pytest.fixture
def bot(tmp_path):
    yield from local_bot(tmp_path)


def test_transfer_mid_prompt_releases_the_call_without_a_word_more(bot):
    sim = SimCall(bot.address, "1001", time_scale=SCALE).start()
    ch = sim.call.channel
    wait_until(lambda: any(t.speaker == "bot" for t in ch.turns), timeout=10)
    played = len(ch.turns)
    ch.transfer("1005", "XML", "public")
    t = transcript_for(sim, bot)
    assert t["outcome"] == "handoff"
    wait_until(lambda: bot.server.active_calls == 0, timeout=10)
    wait_until(lambda: ch.hung_up, timeout=10)  # the emulated talk after the transfer ends
    assert ch.hangup_by == "caller"  # not the bot: the caller was no longer its to hang up
    assert [x for x in ch.turns[played:] if x.speaker == "bot"] == []


def test_an_application_queued_before_a_transfer_still_runs_after_it(bot, tmp_path):
    """The emulator follows FreeSWITCH 1.10.12: ``uuid_transfer`` breaks only the running
    application; an ``execute`` the bot had queued behind it runs afterwards, for whoever
    has the call now. Why the bot never queues a sentence behind the one playing."""
    from esl_app.media.pcm import append_wav_text, silence, write_wav

    queued = tmp_path / "queued.wav"
    write_wav(queued, silence(8000, 300), 8000)
    assert append_wav_text(queued, "a sentence queued behind the prompt")
    sim = SimCall(bot.address, "1001", time_scale=SCALE).start()
    ch = sim.call.channel
    wait_until(lambda: any(t.speaker == "bot" for t in ch.turns), timeout=10)
    ch.execute("playback", str(queued))  # as if the bot had queued its next sentence
    ch.transfer("1005", "XML", "public")
    assert transcript_for(sim, bot)["outcome"] == "handoff"
    wait_until(lambda: any("queued behind" in t.text for t in ch.turns), timeout=10)
