"""Audio mode: the bot forks the call's audio to its media server; VAD + STT turn it into turns.

The fork hook is a minimal mod_audio_fork stand-in (metadata text frame, then 20 ms L16
frames in real time): espeak-ng speaks the caller's line, silence fills the gaps.
"""

from __future__ import annotations

import shutil

import pytest
from fakes.telephony import TENANTS_YAML, wait_until

from esl_app.sim.simulate import SimCall, SimpleAudioFork, start_local_bot, transcript_for
from esl_app.sim.testing import make_db

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("sox"),
                                reason="espeak-ng and sox are needed to speak as the caller")

ForkHook = SimpleAudioFork


def test_audio_call_hears_the_caller(tmp_path):
    tenants = make_db(tmp_path, TENANTS_YAML.replace("stt: freeswitch", "stt: local"))
    bot = start_local_bot(tenants, audio=True)
    hooks: list[ForkHook] = []

    def factory():
        hooks.append(ForkHook())
        return hooks[-1]

    try:
        sim = SimCall(bot.address, "1001", time_scale=0.2, audio=True,
                      audio_fork=factory).start()
        assert sim.call.wait_until_listening(20)
        assert sim.call.channel.fork_url and "/fork/" in sim.call.channel.fork_url
        sim.call.say("operator")
        assert sim.call.wait_ended(40)
        t = transcript_for(sim, bot)
        caller = [x["text"] for x in t["turns"] if x["speaker"] == "caller"]
        assert caller, t["turns"]  # the recogniser produced a turn from audio
        assert t["outcome"] == "handoff" and t["transfer_to"] == "user/1000"
        assert hooks and hooks[0].frames > 0
        wait_until(lambda: bot.server.active_calls == 0)
    finally:
        bot.stop()


def test_audio_barge_in_cuts_the_prompt(tmp_path):
    tenants = make_db(tmp_path, TENANTS_YAML.replace("stt: freeswitch", "stt: local"))
    bot = start_local_bot(tenants, audio=True)
    try:
        sim = SimCall(bot.address, "1001", time_scale=1.0, audio=True,
                      audio_fork=ForkHook).start()
        wait_until(lambda: sim.call.channel.fork_url is not None
                   and sim.call.channel.current_playback is not None, 20)
        sim.call.say("operator")  # over the greeting
        assert sim.call.wait_ended(40)
        t = transcript_for(sim, bot)
        assert t["turns"][0]["speaker"] == "bot" and t["turns"][0]["barged_in"] is True
        assert sim.call.transcript["turns"][0]["barged_in"] is True
        uuid_breaks = [c for c in sim.call.commands if c.line.startswith("api uuid_break")]
        assert uuid_breaks
    finally:
        bot.stop()
