"""The emulator against the golden trace the real FreeSWITCH recorded.

``tests/freeswitch/test_golden_trace.py`` records one scripted call at the real switch
(and re-records it with ``IVR_RERECORD_GOLDEN=1``); here the emulator plays the same
script against the same kind of bot (``ivr serve`` with the golden clinic) through the
same recording proxy, and what the bot receives must normalise to the same trace. No
FreeSWITCH is needed. When they differ the switch wins: fix ``esl_app/sim/emulator``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from freeswitch.harness import Bot
from freeswitch.trace import (
    GOLDEN,
    collapse,
    cut_short,
    differences,
    emulated_call,
    normalise,
    tenants_yaml,
)


@pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("sox"),
                    reason="espeak-ng and sox are needed to speak as the caller")
def test_the_emulator_sends_the_golden_trace(tmp_path: Path) -> None:
    bot = Bot(tmp_path, tenants_yaml(tmp_path / "tenants.yaml"), days=2)
    bot.prepare()
    bot.start()
    try:
        trace = normalise(emulated_call(("127.0.0.1", bot.esl_port)))
    finally:
        bot.stop()
    diff = differences(json.loads(GOLDEN.read_text()), trace)
    assert not diff, f"the emulator differs from FreeSWITCH (the switch wins):\n{diff}"


def _golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_a_live_recording_may_stop_early_in_the_hang_up_only() -> None:
    golden = _golden()
    tail = golden["after_hangup"]
    frames = {k: v for k, v in golden["frames"].items() if k not in tail[1:]}
    early = {**golden, "after_hangup": tail[:1], "frames": frames}
    assert not differences(cut_short(golden, early), early)
    assert differences(golden, early)  # the emulator's own trace must be whole
    swapped = {**golden, "after_hangup": [tail[1], tail[0]]}
    assert differences(cut_short(golden, swapped), swapped)


def test_repeats_collapse() -> None:
    pair = ["CHANNEL_EXECUTE playback", "CHANNEL_EXECUTE_COMPLETE playback"]
    assert collapse(["A", *pair * 3, "DTMF", *pair, "B", "B"]) == ["A", *pair, "DTMF", *pair, "B"]
