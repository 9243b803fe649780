"""The CLI's errors as an operator meets them: one line, naming the thing, one exit code
per kind (1 bad input, 2 usage, 3 unavailable), and no database made by a typo.

Run as real processes (``python -m esl_app``), as an operator's shell runs them.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from esl_app.cli import EXIT_INPUT, EXIT_UNAVAILABLE, EXIT_USAGE

FIX = Path(__file__).parent / "fixtures" / "tenants"


def ivr(*args: str, cwd: Path | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "esl_app", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def one_error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def ready_db(tmp_path: Path, repo_root: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ivr.db'}"
    assert ivr("--db", url, "db", "init").returncode == 0
    assert ivr("--db", url, "--tenants", str(repo_root / "tenants.yaml"),
               "tenants", "import").returncode == 0
    return url


# -------------------------------------------------------- only `db init` creates a database


def test_a_mistyped_sqlite_path_creates_nothing(tmp_path: Path):
    missing = tmp_path / "typo" / "dir" / "x.db"
    url = f"sqlite:///{missing}"
    for args in (["tenants", "list"], ["tenants", "import"], ["calls", "list"],
                 ["slots", "generate", "--tenant", "sunrise"],
                 ["maintenance", "purge", "--dry-run"]):
        line = one_error_line(ivr("--db", url, *args), EXIT_INPUT)
        assert f"database '{missing}' does not exist" in line and "ivr db init" in line
    assert not (tmp_path / "typo").exists()
    # `db init` creates the file, but not a folder a typo named
    line = one_error_line(ivr("--db", url, "db", "init"), EXIT_INPUT)
    assert f"folder '{missing.parent}' does not exist" in line
    assert not (tmp_path / "typo").exists()
    here = tmp_path / "x.db"
    assert ivr("--db", f"sqlite:///{here}", "db", "init").returncode == 0 and here.is_file()
    assert ivr("--db", f"sqlite:///{here}", "tenants", "list").returncode == 0


def test_simulate_and_serve_refuse_a_missing_database(tmp_path: Path, repo_root: Path):
    url = f"sqlite:///{tmp_path / 'nope.db'}"
    tenants = str(repo_root / "tenants.yaml")
    for args in (["simulate", "--did", "1001", "--say", "#hangup"],
                 ["serve", "--workers", "1", "--esl", "127.0.0.1:0", "--media", "127.0.0.1:0",
                  "--http", "127.0.0.1:0"]):
        line = one_error_line(ivr("--db", url, "--tenants", tenants, *args), EXIT_INPUT)
        assert "does not exist" in line
    assert not (tmp_path / "nope.db").exists()


def test_a_directory_is_not_a_database(tmp_path: Path):
    line = one_error_line(ivr("--db", f"sqlite:///{tmp_path}", "db", "init"), EXIT_INPUT)
    assert "is a directory" in line


# ----------------------------------------------------------------- one code per kind


def test_a_malformed_yaml_is_exit_1_everywhere(tmp_path: Path):
    bad = str(FIX / "bad_yaml_syntax.yaml")
    url = f"sqlite:///{tmp_path / 'ivr.db'}"
    ivr("--db", url, "db", "init")
    a = one_error_line(ivr("--db", url, "tenants", "import", bad), EXIT_INPUT)
    b = one_error_line(ivr("dialplan", "render", "--tenants", bad), EXIT_INPUT)
    c = one_error_line(ivr("--db", url, "--tenants", bad, "simulate", "--did", "1001"),
                       EXIT_INPUT)
    assert a == b == c and "bad_yaml_syntax.yaml" in a


def test_usage_errors_are_exit_2():
    assert ivr("tenants", "list", "--bogus").returncode == EXIT_USAGE
    assert ivr("appointments", "list").returncode == EXIT_USAGE  # --tenant missing


def test_an_unreachable_postgres_is_one_line_exit_3():
    port = _free_port()
    line = one_error_line(ivr("--db", f"postgresql://postgres@127.0.0.1:{port}/x",
                              "tenants", "list"), EXIT_UNAVAILABLE)
    assert f"postgresql://postgres@127.0.0.1:{port}/x" in line


def test_an_unreachable_bot_is_exit_3():
    port = _free_port()
    line = one_error_line(ivr("simulate", "--server", f"127.0.0.1:{port}", "--did", "1001",
                              "--say", "hello"), EXIT_UNAVAILABLE)
    assert f"cannot reach the bot at 127.0.0.1:{port}" in line


@pytest.mark.parametrize("option", ["--esl", "--http", "--media"])
def test_a_port_clash_names_the_address_and_option(tmp_path: Path, ready_db: str, option):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    addrs = {"--esl": "127.0.0.1:0", "--http": "127.0.0.1:0", "--media": "127.0.0.1:0"}
    addrs[option] = f"127.0.0.1:{port}"
    try:
        proc = ivr("--db", ready_db, "serve", "--workers", "1",
                   *[x for kv in addrs.items() for x in kv], cwd=tmp_path)
    finally:
        taken.close()
    line = one_error_line(proc, EXIT_UNAVAILABLE)
    assert line == f"error: cannot listen on 127.0.0.1:{port} ({option}): address already in use"


def test_a_closed_pipe_ends_simulate_quietly(tmp_path: Path, ready_db: str, repo_root: Path):
    """``ivr simulate … | head -1``: no traceback, and the bot saw the call end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "esl_app", "--db", ready_db, "--tenants",
         str(repo_root / "tenants.yaml"), "simulate", "--did", "1001", "--say",
         "I'd like to book an appointment", "--say", "next Tuesday", "--time-scale", "0.02"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert first.startswith("BOT: ")
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    calls = json.loads(ivr("--db", ready_db, "calls", "list", "--json").stdout)
    assert len(calls) == 1 and calls[0]["outcome"] == "caller_hangup"


# ------------------------------------------------------------------ what the README lists


def test_version_and_short_help():
    from esl_app import __version__

    proc = ivr("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"ivr {__version__}"
    for args in (["-h"], ["tenants", "-h"], ["serve", "-h"], ["appointments", "list", "-h"]):
        proc = ivr(*args)
        assert proc.returncode == 0 and proc.stdout.startswith("Usage: ivr"), args


def test_tenants_export_json_round_trips(tmp_path: Path, ready_db: str):
    data = json.loads(ivr("--db", ready_db, "tenants", "export", "--json").stdout)
    as_yaml = yaml.safe_load(ivr("--db", ready_db, "tenants", "export").stdout)
    assert data == as_yaml and [t["id"] for t in data["tenants"]] == ["lakeside", "sunrise"]
    again = tmp_path / "again.yaml"
    again.write_text(json.dumps(data))  # JSON is YAML: the export imports as it is
    proc = ivr("--db", ready_db, "tenants", "import", str(again))
    assert proc.returncode == 0 and "2 unchanged" in proc.stdout


def test_every_readme_command_exists(repo_root: Path):
    """Each command line of the README's CLI reference is accepted by `-h`."""
    readme = (repo_root / "README.md").read_text()
    block = readme.split("## CLI reference", 1)[1].split("```", 2)[1]
    checked = 0
    for line in block.splitlines()[1:]:
        if not re.match(r"^  [a-z]", line):  # a command, not a continuation
            continue
        synopsis = re.split(r"\s{3,}", line.strip())[0]
        flags = re.findall(r"--[a-z][a-z-]*", synopsis.split(" | ")[0])
        for variant in _variants(synopsis.split()):
            proc = ivr(*variant, "-h")
            assert proc.returncode == 0, (variant, proc.stderr)
            checked += 1
            for flag in flags:
                assert flag in proc.stdout, (variant, flag)
    assert checked >= 20


def _variants(words: list[str]) -> list[list[str]]:
    """``tenants list|export`` → [tenants list], [tenants export]; stop at options/args."""
    head: list[str] = []
    for word in words:
        if word.startswith("-") or not word.replace("|", "").replace("-", "").isalpha() \
                or word.isupper():
            break
        head.append(word)
    if not head:
        return []
    group, *rest = head
    if not rest:
        return [[group]]
    return [[group, sub] for sub in rest[0].split("|") if sub]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
