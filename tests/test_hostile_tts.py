"""Issue #31 item 1: one tenant setting must not grow a worker's memory without bound.

Reported: a 5.4 MB greeting gave 30 s of silence, then "tts failed … timed out",
while espeak-ng kept running and the worker buffered its output (55 MB → 3.0 GB in
~75 s), again on every call. These tests put a hostile ``espeak-ng`` first on PATH
(a shell script: it writes its pid, then floods stdout or hangs) and check that the
child is killed and reaped on timeout, on a hang-up (greenlet kill) and when it
writes too much, and that the worker's memory stays flat.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gevent
import pytest

from esl_app.config.tenants import ConfigError, parse_tenants
from esl_app.providers.tts import local
from esl_app.providers.tts.base import TtsError
from esl_app.providers.tts.local import LocalTts

FLOOD_MB = 64  # what the hostile espeak-ng writes: above the cap, small enough for a test


def _rss_kb() -> int:
    """This process's resident set (kB), from /proc: no psutil."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (i.e. it was not killed and reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pid: int, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        gevent.sleep(0.02)
    return False


@pytest.fixture
def hostile_espeak(tmp_path, monkeypatch):
    """Install a fake ``espeak-ng`` running ``body``; returns a reader of its pid."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pid_file = tmp_path / "espeak.pid"
    spawned: list[int] = []

    def install(body: str):
        script = bin_dir / "espeak-ng"
        script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\n{body}\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

        def pid() -> int:
            value = int(pid_file.read_text())
            spawned.append(value)
            return value

        return pid

    yield install
    if pid_file.exists():
        spawned.append(int(pid_file.read_text()))
    for pid in spawned:  # whatever the outcome, leave no process behind
        if _alive(pid):
            os.kill(pid, 9)


def test_a_tool_past_its_timeout_is_killed_and_reaped(hostile_espeak, monkeypatch, tmp_path):
    pid_of = hostile_espeak("exec sleep 30")
    monkeypatch.setattr(local, "SYNTH_TIMEOUT_S", 0.5, raising=False)
    tts = LocalTts(cache_dir=tmp_path / "prompts")
    started = time.monotonic()
    with gevent.Timeout(5), pytest.raises(TtsError, match="timed out"):
        tts.synthesize("Thank you for calling.", voice="Joanna", sample_rate=8000)
    assert time.monotonic() - started < 3
    assert _gone(pid_of())


def test_a_hang_up_mid_synthesis_kills_the_child(hostile_espeak, tmp_path):
    pid_of = hostile_espeak("exec sleep 30")
    tts = LocalTts(cache_dir=tmp_path / "prompts")
    g = gevent.spawn(tts.synthesize, "Thank you for calling.", voice="Joanna",
                     sample_rate=8000)
    gevent.sleep(0.3)  # the child runs
    pid = pid_of()
    assert _alive(pid)
    g.kill(block=True, timeout=3)  # what a hang-up does to the call's synthesis greenlet
    assert g.dead
    assert _gone(pid)


def test_a_flood_of_output_is_capped_and_memory_stays_flat(hostile_espeak, tmp_path):
    pid_of = hostile_espeak(f"head -c {FLOOD_MB * 1024 * 1024} /dev/zero\nexec sleep 30")
    tts = LocalTts(cache_dir=tmp_path / "prompts")
    before = _rss_kb()
    outcome: BaseException | None = None
    try:
        with gevent.Timeout(4):
            tts.synthesize("Thank you for calling.", voice="Joanna", sample_rate=8000)
    except (TtsError, gevent.Timeout) as exc:
        outcome = exc
    grown_mb = (_rss_kb() - before) / 1024
    cap_mb = (local.MAX_AUDIO_SECONDS * 22050 * 2) / 1024 / 1024 if hasattr(
        local, "MAX_AUDIO_SECONDS") else 0
    assert grown_mb < cap_mb + 8, f"the worker grew {grown_mb:.0f} MB"
    assert _gone(pid_of())
    assert isinstance(outcome, TtsError) and "exceeds" in str(outcome)


def test_text_beyond_the_limit_is_refused_before_any_process():
    with pytest.raises(TtsError, match="too long"):
        local.synthesize_pcm("a" * (local.MAX_TEXT_CHARS + 1))


def test_a_real_synthesis_still_works(tmp_path):
    pcm = local.synthesize_pcm("Hello.", "en-us", 8000)
    assert 2000 < len(pcm) < 8000 * 2 * 5


def test_a_huge_greeting_is_refused_at_validation():
    """The root cause: the 5.4 MB greeting is refused with one line naming tenant and key."""
    yaml_text = f"""
tenants:
  - id: sunrise
    name: Sunrise Clinic
    dids: ["1001"]
    timezone: America/New_York
    greeting: "{'Welcome. ' * 60_000}"
    hours: {{mon-fri: "08:00-17:00"}}
    doctors: [{{id: smith, name: Dr. Smith}}]
"""
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        parse_tenants(yaml_text, source="t.yaml")
    message = str(info.value)
    assert message.startswith("t.yaml: tenant 'sunrise': key 'greeting'")
    assert "\n" not in message and len(message) < 200
    assert time.monotonic() - started < 5
