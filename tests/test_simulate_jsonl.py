"""``ivr simulate --jsonl`` is interactive: events stream as they happen, each caller
line is read when it arrives, and ``call_ended`` is the last line, printed as soon as
the call ends whatever stdin is doing.

Reported: it read all of stdin until EOF before the call started (a driver waiting for
``listening`` waited forever), and after the bot hung up with stdin still open it
neither printed ``call_ended`` nor exited.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

BOOKING = {
    "help": "I'd like an appointment with Dr. Smith",
    "day": "next Tuesday morning",
    "pick": "the first one",
    "name": "Ann Roe",
    "phone": "five five five, oh one oh one, double oh two",
    "confirm": "yes",
    "else": "no, that's all",
}


def _kind(text: str) -> str:
    t = text.lower()
    for kind, words in (("else", "anything else"), ("confirm", "shall i book"),
                        ("phone", "number"), ("name", "name"), ("pick", "which"),
                        ("help", "help"), ("day", "day")):
        if words in t:
            return kind
    return "help"


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ivr.db'}"
    assert subprocess.run([sys.executable, "-m", "esl_app", "--db", url, "db", "init"],
                          capture_output=True, timeout=60).returncode == 0
    return url


def _start(db: str, repo_root: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "esl_app", "--db", db, "--tenants",
         str(repo_root / "tenants.yaml"), "simulate", "--jsonl", "--did", "1001",
         "--time-scale", "0.03", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        bufsize=1)


def test_a_driver_answers_after_listening_and_the_call_ends_with_stdin_open(db, repo_root):
    proc = _start(db, repo_root)
    assert proc.stdin is not None and proc.stdout is not None
    events, heard, answered = [], [], []
    for raw in proc.stdout:  # stdin stays open the whole time
        ev = json.loads(raw)
        events.append(ev)
        if ev["event"] == "bot_said":
            heard.append(ev["text"])
        elif ev["event"] == "listening":
            kind = _kind(" ".join(heard))
            heard = []
            answered.append(kind)
            proc.stdin.write(BOOKING[kind] + "\n")
            proc.stdin.flush()
        elif ev["event"] == "call_ended":
            ended_at = time.monotonic()
            break
    # the process exits on its own although stdin is still open
    assert proc.wait(timeout=10) == 0
    exited_after = time.monotonic() - ended_at
    assert events[-1]["event"] == "call_ended" and events[-1]["outcome"] == "booked"
    assert events[-1]["confirmation"]
    assert answered[:2] == ["help", "day"] and answered[-1] == "else"
    assert exited_after < 5
    proc.stdin.close()


def test_events_stream_before_any_input(db, repo_root):
    """The greeting arrives while stdin has sent nothing (it used to wait for EOF)."""
    proc = _start(db, repo_root)
    assert proc.stdout is not None and proc.stdin is not None
    first = json.loads(proc.stdout.readline())
    assert first["event"] == "bot_said"
    while json.loads(proc.stdout.readline())["event"] != "listening":
        pass
    proc.stdin.write("#hangup\n")
    proc.stdin.flush()
    last = [json.loads(line) for line in proc.stdout][-1]
    assert last["event"] == "call_ended" and last["outcome"] == "caller_hangup"
    assert proc.wait(timeout=10) == 0


def test_end_of_stdin_hangs_up(db, repo_root):
    proc = _start(db, repo_root, "--say", "I'd like an appointment")
    out, _ = proc.communicate("", timeout=60)  # EOF at once
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1]["event"] == "call_ended"
    assert lines[-1]["outcome"] == "caller_hangup"
    assert any(ev["event"] == "listening" for ev in lines)
