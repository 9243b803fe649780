"""No level of logging writes personal data; the CLI shows it only when asked.

``ivr -vv`` on a real call: the patient's name, the number said in words and the
transcript must not reach the log; ``calls list`` and ``calls show`` mask the caller's
number, ``calls show --reveal`` shows it and leaves an audit entry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

NAME = "Johnathan Quixote"
SPOKEN = "five five five, two two two, three four five six"
CALLER = "+15550177123"
REPO = Path(__file__).resolve().parent.parent


def ivr(db: str, repo_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "esl_app", "--db", db, "--tenants",
                           str(repo_root / "tenants.yaml"), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def called(tmp_path_factory: pytest.TempPathFactory):
    repo_root = REPO
    """One booking call at -vv by a caller who also says a phone number in words."""
    db = f"sqlite:///{tmp_path_factory.mktemp('privacy') / 'ivr.db'}"
    assert ivr(db, repo_root, "db", "init").returncode == 0
    says = ["I'd like to book with Dr. Smith", "next Tuesday morning", "the first one",
            NAME, f"no, call me on {SPOKEN}", "yes", "no thanks"]
    proc = ivr(db, repo_root, "-vv", "simulate", "--did", "1001", "--caller", CALLER,
               "--time-scale", "0.02", "--json", *[a for s in says for a in ("--say", s)])
    assert proc.returncode == 0, proc.stderr
    call = json.loads(proc.stdout)
    return db, call, proc.stderr


def test_debug_logs_hold_no_personal_data(called):
    _, call, log = called
    assert "DEBUG" in log and "INSERT INTO" in log  # it really ran at debug level
    assert any(NAME in t["text"] for t in call["turns"])  # and the name was said
    for secret in (NAME, "Quixote", SPOKEN, "five five five", CALLER, CALLER[2:],
                   "next Tuesday morning"):
        assert secret not in log, secret


def test_calls_list_and_show_mask_the_caller(called, repo_root: Path):
    db, call, _ = called
    listed = json.loads(ivr(db, repo_root, "calls", "list", "--json").stdout)
    assert listed[0]["caller"].endswith("23") and CALLER[2:] not in listed[0]["caller"]
    table = ivr(db, repo_root, "calls", "list").stdout
    assert CALLER[2:] not in table
    shown = ivr(db, repo_root, "calls", "show", call["call_id"]).stdout
    assert CALLER not in shown and CALLER[2:] not in shown
    assert "five five five" not in shown and "…56" in shown
    as_json = json.loads(ivr(db, repo_root, "calls", "show", call["call_id"], "--json").stdout)
    assert CALLER[2:] not in json.dumps(as_json)


def test_reveal_shows_the_record_and_is_audited(called, repo_root: Path):
    db, call, _ = called
    shown = json.loads(ivr(db, repo_root, "calls", "show", call["call_id"], "--reveal",
                           "--json").stdout)
    assert shown["caller"] == CALLER
    assert any(SPOKEN in t["text"] for t in shown["turns"])
    audit = json.loads(ivr(db, repo_root, "audit", "list", "--tenant", "sunrise",
                           "--json").stdout)
    assert any(a["action"] == "reveal" and a["entity"] == "call"
               and a["entity_id"] == call["call_id"] and a["actor"] == "cli" for a in audit)
