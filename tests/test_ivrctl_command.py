"""ivrctl as operators run it: the ``ivrctl`` command the package installs, and the script.

``pip install -e .`` puts ``ivrctl`` next to the interpreter (``.venv/bin``); the checkout's
``scripts/ivrctl.py`` is the same program and runs directly thanks to its run bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_scripts_ivrctl import SCRIPT, free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMMANDS = ("calls", "hangup", "transfer", "drain", "reload", "test-call", "health")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("FS_ESL_HOST", "FS_ESL_PORT", "FS_ESL_PASSWORD"):
        env.pop(name, None)
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=env)


def test_installed_command_runs_help():
    command = BIN / "ivrctl"
    assert command.is_file() and os.access(command, os.X_OK), (
        f"no ivrctl command in {BIN}: run `pip install -e .` again after the setup.cfg change")
    proc = _run(str(command), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: ivrctl ")
    for name in COMMANDS:
        assert name in proc.stdout
    assert proc.stdout == _run(sys.executable, str(SCRIPT), "--help").stdout


def test_installed_command_reaches_the_ops_logic():
    port = free_port()  # closed again: nothing listens there
    proc = _run(str(BIN / "ivrctl"), "--port", str(port), "--password", "x", "calls")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: cannot reach FreeSWITCH event socket at 127.0.0.1:{port}")
    assert "Traceback" not in proc.stderr


def test_script_runs_by_its_shebang():
    assert os.access(SCRIPT, os.X_OK), "scripts/ivrctl.py lost its run bit"
    proc = _run(str(SCRIPT), "--help")  # #!/usr/bin/env python3: the venv's, first on PATH
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: ivrctl ")


def test_git_records_the_run_bit():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    entry = subprocess.run(["git", "ls-files", "-s", "scripts/ivrctl.py"], capture_output=True,
                           text=True, cwd=ROOT, check=True).stdout
    assert entry.startswith("100755 "), entry
