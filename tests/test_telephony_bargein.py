"""Barge-in over the audio fork: real VAD on real frames, uuid_break measured on the wire."""

from __future__ import annotations

import math
import shutil
import struct

import gevent
import pytest
from fakes.telephony import local_bot, wait_until

from esl_app.sim.emulator.audio import AudioFork
from esl_app.sim.simulate import SimCall, transcript_for

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("sox"),
                                reason="espeak-ng and sox are needed to speak as the caller")


class ClickFork(AudioFork):
    """A caller whose line is a 60 ms click instead of speech (a door, a cough, a tap)."""

    def _synthesise(self, call):
        while not self._stopping:
            text = call.next_utterance(timeout=None)
            if text is None or self._stopping:
                return
            n = int(self.rate * 0.06)
            click = b"".join(struct.pack("<h", int(12000 * math.copysign(1, math.sin(i / 3))))
                             for i in range(n))
            self._audio.put((text, click))


@pytest.fixture
def audio_bot(tmp_path):
    yield from local_bot(tmp_path, audio=True)


def _forks(cls):
    """The emulator's fork hook factory, and the forks it made (to inspect)."""
    made: list[AudioFork] = []

    def factory():
        made.append(cls(lead_ms=0))
        return made[-1]

    return made, factory


def _breaks(sim):
    return [c for c in sim.call.commands if c.line.startswith("api uuid_break")]


def test_speech_over_a_long_prompt_sends_uuid_break_after_the_onset(audio_bot):
    forks, factory = _forks(AudioFork)

    sim = SimCall(audio_bot.address, "1001", time_scale=1.0, audio=True,
                  audio_fork=factory).start()
    wait_until(lambda: bool(forks) and forks[0].connected.is_set()
               and sim.call.channel.current_playback is not None, 20)
    sim.call.say("operator please")  # over the greeting
    wait_until(lambda: bool(_breaks(sim)), 20)
    record = forks[0].records[0]
    brk = _breaks(sim)[0]
    assert record.speech_at is not None
    reaction_ms = (brk.at - record.speech_at) * 1000
    print(f"barge-in reaction: {reaction_ms:.0f} ms from the first speech frame to uuid_break")
    assert reaction_ms >= 0  # the break follows the caller's onset, never precedes it
    assert brk.line.endswith(" all")
    assert sim.call.wait_ended(40)
    t = transcript_for(sim, audio_bot)
    assert t["turns"][0]["speaker"] == "bot" and t["turns"][0]["barged_in"] is True


def test_a_60ms_click_does_not_barge_in(audio_bot):
    forks, factory = _forks(ClickFork)

    sim = SimCall(audio_bot.address, "1001", time_scale=1.0, audio=True,
                  audio_fork=factory).start()
    wait_until(lambda: bool(forks) and forks[0].connected.is_set()
               and sim.call.channel.current_playback is not None, 20)
    sim.call.say("click")
    wait_until(lambda: bool(forks[0].records) and forks[0].records[0].end_stream_ms is not None,
               10)
    assert sim.call.wait_until_listening(30)  # the greeting played to its end
    assert _breaks(sim) == []
    sim.call.hang_up()
    assert sim.call.wait_ended(20)
    t = transcript_for(sim, audio_bot)
    assert not any(turn["barged_in"] for turn in t["turns"])


def test_audio_stream_lost_mid_call_is_noticed_and_handed_over(audio_bot):
    forks, factory = _forks(AudioFork)

    sim = SimCall(audio_bot.address, "1001", time_scale=0.2, audio=True,
                  audio_fork=factory).start()
    assert sim.call.wait_until_listening(30)
    forks[0].stop()  # the fork dies (FreeSWITCH's module closed it, the network dropped it)
    assert sim.call.wait_ended(30)
    t = transcript_for(sim, audio_bot)
    said = " ".join(x["text"] for x in t["turns"] if x["speaker"] == "bot")
    assert "trouble hearing you" in said
    assert t["outcome"] == "handoff" and t["transfer_to"] == "user/1000"


def test_fork_closed_just_before_the_hang_up_event_is_a_hang_up_not_a_lost_stream(audio_bot):
    """FreeSWITCH closes the fork (1000) at hang-up; the event may come a little later."""
    forks, factory = _forks(AudioFork)

    sim = SimCall(audio_bot.address, "1001", time_scale=0.2, audio=True,
                  audio_fork=factory).start()
    assert sim.call.wait_until_listening(30)
    forks[0].stop()  # the close frame goes first...
    wait_until(lambda: forks[0].close_code is not None or forks[0].ended.is_set(), 10)
    sim.call.hang_up()  # ...the hang-up event follows on the ESL socket
    assert sim.call.wait_ended(30)
    t = transcript_for(sim, audio_bot)
    said = " ".join(x["text"] for x in t["turns"] if x["speaker"] == "bot")
    assert "trouble hearing you" not in said
    assert t["outcome"] == "caller_hangup" and not t.get("transfer_to")


def test_fork_dropped_just_before_the_hang_up_event_is_a_hang_up_not_a_lost_stream(audio_bot):
    """Seen through the real switch under load: the fork's TCP connection ends without a
    close frame at hang-up (mod_audio_fork tears it down), the event comes after."""
    forks, factory = _forks(AudioFork)

    sim = SimCall(audio_bot.address, "1001", time_scale=0.2, audio=True,
                  audio_fork=factory).start()
    assert sim.call.wait_until_listening(30)
    forks[0]._abort()  # no close frame: the media server sees the connection drop
    gevent.sleep(0.3)
    sim.call.hang_up()
    assert sim.call.wait_ended(30)
    t = transcript_for(sim, audio_bot)
    said = " ".join(x["text"] for x in t["turns"] if x["speaker"] == "bot")
    assert "trouble hearing you" not in said
    assert t["outcome"] == "caller_hangup" and not t.get("transfer_to")
