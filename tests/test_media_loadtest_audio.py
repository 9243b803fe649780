"""Audio-mode load test end to end: real frames, the cloud profile's emulated recogniser.

The callers' lines reach the server only as audio; the bookings complete only if the
emulated Transcribe recognised each line from the frames the media server received.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

BOOT = ("import esl_app.__main__, sys\nfrom esl_app.sim.loadtest import main\n"
        "sys.exit(main(sys.argv[1:]))")

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("sox"),
                                reason="espeak-ng and sox are needed to speak as the caller")


def test_small_audio_run_books_through_the_emulated_recogniser(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", BOOT, "--calls", "3", "--ramp", "0.5", "--audio",
         "--profile", "cloud", "--time-scale", "0.3", "--workers", "2", "--clinics", "3",
         "--json"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["calls_completed"] == 3 and report["calls_failed"] == 0, report["errors"]
    assert report["outcomes"] == {"booked": 3}  # every line was heard, word for word
    assert report["frames_sent"] > 1000 and report["frames_lost"] == 0
    assert report["barge_in_p50_ms"] is not None
    # the server's share of it: our VAD's detection to uuid_break written
    assert report["server_barge_in_ms"]["count"] >= 1
    assert report["server_barge_in_ms"]["p99"] < report["barge_in_ms"]["p99"]
    assert report["server_setup_ms"]["count"] == 3
    assert report["server_turn_response_ms"]["count"] >= 3 * 3  # the recogniser's finals
