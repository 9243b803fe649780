"""The golden trace: one scripted call's ESL wire, recorded at the real FreeSWITCH.

The emulator is held to FreeSWITCH by comparing what each sends the bot in the same
call. Here the real switch places the call (mod_loopback, into a dialplan rendering
whose ``socket`` points at a recording proxy in front of ``ivr serve``); the recording,
reduced to what the bot relies on (``trace.normalise``), must still match the golden
file (but for the end of the hang-up sequence, which the bot's close may cut off:
``trace.cut_short``), so a change of switch (or kit) behaviour shows. The emulator's
side runs in the normal suite, without FreeSWITCH: ``tests/test_emulator_golden_trace.py``.

Re-record the golden file (after a deliberate change of switch, kit or bot; review the
diff of ``tests/freeswitch/golden/``, and fix the emulator, not the golden file, when the
emulator's test then fails)::

    IVR_RERECORD_GOLDEN=1 .venv/bin/python -m pytest tests/freeswitch/test_golden_trace.py
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import gevent
import pytest

from freeswitch.harness import Bot, Caller, DialplanInstall, InboundEsl
from freeswitch.trace import (
    CALLER_ID,
    CALLER_LINE,
    GOLDEN,
    GOLDEN_DID,
    HOLD_S,
    QUIET_S,
    SCRIPT,
    Recording,
    TraceProxy,
    complete,
    cut_short,
    differences,
    dumps,
    normalise,
    tenants_yaml,
)

SUFFIX = "_trace"


@dataclass
class Traced:
    """``ivr serve`` with the golden clinic, and the recording proxy in front of it."""

    bot: Bot
    proxy: TraceProxy


@pytest.fixture(scope="module")
def traced_bot(fs_plan: DialplanInstall) -> Iterator[Traced]:
    """The bot behind a proxy, which the ``_trace`` rendering of the dialplan dials."""
    workdir = Path(tempfile.mkdtemp(prefix="ivr-fs-golden-"))
    bot = Bot(workdir, tenants_yaml(workdir / "tenants.yaml"), days=2)
    proxy = TraceProxy(("127.0.0.1", bot.esl_port))
    try:
        bot.prepare()
        bot.start()
        proxy.start()
        fs_plan.install(bot.tenants, proxy.addr, suffix=SUFFIX)
        yield Traced(bot, proxy)
    finally:
        proxy.stop()
        bot.stop()
        if not os.environ.get("IVR_FS_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


def switch_call(esl: InboundEsl, plan: DialplanInstall, traced: Traced) -> Recording:
    """:data:`trace.SCRIPT`, played by a loopback caller the real switch places."""
    index = len(traced.proxy.recordings)
    call = Caller(esl, plan, GOLDEN_DID, caller_id=CALLER_ID, suffix=SUFFIX).dial()
    try:
        call.wait_bot_quiet(quiet=QUIET_S)
        mark = len(esl.events)
        call.say(CALLER_LINE)
        try:  # its reply begins (a pause in recognising is not the reply's end)
            esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_EXECUTE"
                         and e.get("Application") in ("playback", "speak"), 15, mark,
                         "the bot's reply")
            call.wait_bot_quiet(quiet=QUIET_S)
            call.dtmf("0")
            esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_BRIDGE", 15,
                         mark, "the transfer to the human line")
        except TimeoutError as exc:
            log = traced.bot.log.read_text(errors="replace").splitlines()[-15:]
            raise AssertionError(f"{exc}; the bot said {call.heard}; its log ends:\n"
                                 + "\n".join(log)) from None
        gevent.sleep(HOLD_S)
    finally:
        call.hangup()
    call.wait_ended()
    return traced.proxy.wait_recording(index, 15)


def test_the_switch_still_sends_the_golden_trace(fs_esl: InboundEsl, fs_plan: DialplanInstall,
                                                 traced_bot: Traced) -> None:
    trace = normalise(switch_call(fs_esl, fs_plan, traced_bot))
    if os.environ.get("IVR_RERECORD_GOLDEN"):
        for _ in range(3):  # the golden file holds the whole hang-up sequence
            if complete(trace):
                break
            trace = normalise(switch_call(fs_esl, fs_plan, traced_bot))
        assert complete(trace), f"the bot closed before the hang-up ended: {trace}"
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(dumps({
            "about": "tests/freeswitch/test_golden_trace.py: the ESL wire of one call, "
                     "normalised by tests/freeswitch/trace.py",
            "script": SCRIPT, "via": "mod_loopback", "freeswitch": fs_esl.api("version").strip(),
            "recorded": datetime.now(UTC).strftime("%Y-%m-%d"), **trace}) + "\n")
        return
    golden = json.loads(GOLDEN.read_text())
    diff = differences(cut_short(golden, trace), trace)
    assert not diff, ("FreeSWITCH no longer sends the golden trace (re-record with "
                      f"IVR_RERECORD_GOLDEN=1 if the change is meant):\n{diff}")
