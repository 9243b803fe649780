"""A finished call leaves no reference cycles: reference counting frees its state.

Both ends: the bot's call engine and the FreeSWITCH emulator's channel and connection.

Why it matters: whatever a call leaves in cycles waits for the cyclic GC, and at
1000 calls its middle and full collections pause the whole hub for tens of ms
(call set-up and barge-in tails). These tests run whole calls with the automatic
collector off, then collect with ``DEBUG_SAVEALL`` and look for the call engine's
objects among the unreachable ones.
"""

from __future__ import annotations

import gc
from collections import Counter

import pytest
from fakes.telephony import local_bot, wait_until

from esl_app.sim.simulate import SimCall, run_lines, transcript_for

SCALE = 0.02
BOOKING = ["I'd like to book an appointment with Dr. Smith", "next Tuesday morning",
           "the first one", "John Smith", "yes", "no thanks"]
# the caller talks over the bot's answers and hangs up while it speaks
INTERRUPTING = ["I'd like to book an appointment with Dr. Smith", "#hangup now"]


@pytest.fixture
def bot(tmp_path):
    yield from local_bot(tmp_path)


def _engine_garbage(bot, script: list[str]) -> tuple[Counter[str], dict]:
    """Run one call with the collector off; the call engine's objects left in cycles."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        sim = SimCall(bot.address, "1001", time_scale=SCALE).start()
        run_lines(sim, script, lambda ev: None)
        transcript = transcript_for(sim, bot)
        wait_until(lambda: bot.server.active_calls == 0 and bot.server.connections == 0)
        del sim
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        # the call engine's objects, and the emulator's: the load generator freezes
        # its heap, so a cycle there would be a leak (esl_app/sim/loadtest.py)
        found = Counter(type(o).__qualname__ for o in gc.garbage
                        if type(o).__module__.startswith(("esl_app.telephony",
                                                          "esl_app.sim.emulator")))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()
        gc.collect()
    return found, transcript


def test_a_booking_call_leaves_no_cycles(bot):
    found, transcript = _engine_garbage(bot, BOOKING)
    assert transcript["outcome"] == "booked"
    assert not found, f"call engine objects left to the cyclic GC: {dict(found)}"


def test_a_call_hung_up_mid_answer_leaves_no_cycles(bot):
    found, transcript = _engine_garbage(bot, INTERRUPTING)
    assert transcript["outcome"] == "caller_hangup"
    assert not found, f"call engine objects left to the cyclic GC: {dict(found)}"


def test_a_hang_up_while_the_agent_thinks_leaves_no_cycles(tmp_path, monkeypatch):
    """The agent job killed at clean-up keeps its GreenletExit, whose traceback holds
    the job's frame and the controller: the controller must let go of the job."""
    from fakes.telephony import TENANTS_YAML

    from esl_app.sim.latency import make_provider_cache
    from esl_app.sim.simulate import start_local_bot
    from esl_app.sim.testing import make_db
    from esl_app.telephony import call as call_mod

    monkeypatch.setattr(call_mod, "HANGUP_GRACE", 0.01)  # the agent (0.5-1.5 s) is killed
    bot = start_local_bot(make_db(tmp_path, TENANTS_YAML),
                          providers=make_provider_cache("cloud", seed=1))
    try:
        found, transcript = _engine_garbage(bot, INTERRUPTING)
    finally:
        bot.stop()
    assert transcript["outcome"] == "caller_hangup"
    assert not found, f"call engine objects left to the cyclic GC: {dict(found)}"


def test_an_audio_call_leaves_no_cycles(tmp_path):
    """(Last in this file: stopping its bot leaves a cycle the next test would see.)

    Audio mode adds the fork's listen source, VAD and recogniser stream to the call.

    Workers freeze their heap every second (esl_app/runtime/workers.py), so a cycle here
    would hold the call's memory until the 10-minute sweep: in a 12-minute soak
    at 300 calls the source <-> controller cycle grew each worker by ~8 MB a minute.
    """
    import shutil

    import gevent
    from fakes.telephony import TENANTS_YAML

    from esl_app.sim.simulate import SimpleAudioFork, start_local_bot
    from esl_app.sim.testing import make_db

    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        pytest.skip("espeak-ng and sox are needed to speak as the caller")
    tenants = make_db(tmp_path, TENANTS_YAML.replace("stt: freeswitch", "stt: local"))
    bot = start_local_bot(tenants, audio=True)
    try:
        for _ in range(2):  # the first call also fills the process's caches
            gc.collect()
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                sim = SimCall(bot.address, "1001", time_scale=0.2, audio=True,
                              audio_fork=SimpleAudioFork).start()
                assert sim.call.wait_until_listening(20)
                sim.call.say("operator")
                assert sim.call.wait_ended(40)
                wait_until(lambda: bot.server.active_calls == 0)
                gevent.sleep(0.2)
                del sim
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                found = Counter(type(o).__qualname__ for o in gc.garbage
                                if type(o).__module__.startswith((
                                    "esl_app.telephony", "esl_app.media",
                                    "esl_app.providers")))
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                if was_enabled:
                    gc.enable()
        assert not found, f"server objects left to the cyclic GC: {dict(found)}"
    finally:
        bot.stop()
