"""Issue #30, checked again as a new operator meets it: a running ``ivr serve`` in its own
process, the CLI in others, ``./dev`` on a machine that has nothing yet.

Each test failed on the code before its fix:

- a tenant reload was logged at INFO, below the default level, so ``ivr serve`` never
  showed it (item 2: "a reload is logged at the default level");
- a call to a number the bot does not serve never published ``ivr_outcome``, so
  ``ivr loadtest --server`` against a bot without DIDs 2000… counted every "not in
  service" call as completed and exited 0, and ``simulate --server`` said
  ``caller_hangup`` (item 4);
- ``ivr emulator inbound`` on a taken port ended in a traceback (item 9);
- ``./dev`` installed for a minute in silence (item 12);
- the README's CLI reference left out options and whole commands (item 11).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest

from esl_app.cli import EXIT_INPUT, EXIT_UNAVAILABLE, cli
from esl_app.sim.testing import REPO_TENANTS

NORTHSIDE = """
  - id: northside
    name: Northside Health
    dids: ["1003"]
    timezone: America/New_York
    greeting: Welcome to Northside Health.
    hours:
      mon-fri: "08:00-17:00"
    handoff: user/1002
    agent: local
    doctors:
      - {id: lee, name: Dr. Ann Lee, specialty: family medicine}
"""


def ivr(*args: str, cwd: Path | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "esl_app", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


class Serve:
    """``ivr serve`` as an operator starts it: default log level, ephemeral ports."""

    def __init__(self, tmp_path: Path) -> None:
        self.tenants = tmp_path / "tenants.yaml"
        self.tenants.write_text(REPO_TENANTS.read_text())
        self.db = f"sqlite:///{tmp_path / 'ivr.db'}"
        for args in (("db", "init"), ("tenants", "import"),
                     ("slots", "generate", "--tenant", "sunrise", "--days", "2")):
            proc = ivr("--db", self.db, "--tenants", str(self.tenants), *args)
            assert proc.returncode == 0, proc.stderr
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esl_app", "--db", self.db, "--tenants", str(self.tenants),
             "serve", "--workers", "1", "--esl", "127.0.0.1:0", "--media", "127.0.0.1:0",
             "--http", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        self.lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                if line.startswith("ivr ready "):
                    self.esl = "{}:{}".format(*json.loads(line[len("ivr ready "):])["esl"])
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(60) and self.proc.poll() is None, self.lines

    def stop(self) -> list[str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return self.lines


@pytest.fixture
def serving(tmp_path: Path):
    srv = Serve(tmp_path)
    yield srv
    srv.stop()


def test_a_reload_is_logged_at_the_default_level(serving: Serve):
    """Item 2: `tenants import` while serving; the next call reloads and the log says so
    without -v (counts only)."""
    serving.tenants.write_text(serving.tenants.read_text().rstrip("\n") + "\n" + NORTHSIDE)
    assert ivr("--db", serving.db, "tenants", "import", str(serving.tenants)).returncode == 0
    call = ivr("simulate", "--server", serving.esl, "--did", "1003", "--say", "goodbye",
               "--time-scale", "0.05")
    assert call.returncode == 0 and "BOT: Welcome to Northside Health." in call.stdout, call
    lines = serving.stop()
    reloads = [line.split(": ", 1)[1] for line in lines if "tenants reloaded" in line]
    assert reloads == ["tenants reloaded (source changed): 1 added, 0 changed, 0 removed, "
                       "3 in force"], lines


def test_a_number_not_in_service_is_rejected_for_a_remote_simulator(serving: Serve):
    """Item 4's root: the bot never published ``ivr_outcome`` for a number it does not
    serve, so whoever reads the channel (a remote simulator, the CDR) saw no outcome."""
    call = ivr("simulate", "--server", serving.esl, "--did", "9999", "--say", "hello",
               "--time-scale", "0.05")
    assert call.returncode == 0, call.stderr
    assert "this number is not in service" in call.stdout
    assert call.stdout.rstrip().endswith("--- call ended: rejected"), call.stdout


def test_loadtest_against_a_bot_without_its_dids_fails(serving: Serve):
    """Item 4: the example clinics do not answer DIDs 2000…: every call is "not in
    service", so the run failed (it printed "2 completed, 0 failed" and exited 0)."""
    proc = ivr("loadtest", "--server", serving.esl, "--calls", "2", "--ramp", "0.1",
               "--time-scale", "0.05", "--json")
    assert proc.returncode == EXIT_INPUT, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["calls_completed"] == 0 and report["calls_failed"] == 2
    assert report["outcomes"] == {"rejected": 2}
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: loadtest: 2 of 2 call(s) failed, none reached a clinic")


def test_emulator_inbound_on_a_taken_port_is_one_line():
    """Item 9: "[Errno 98] Address already in use" in a traceback, printed after the line
    that said it was listening."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = ivr("emulator", "inbound", "--listen", f"127.0.0.1:{port}", timeout=30)
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr
    assert proc.stderr.strip() == (
        f"error: cannot listen on 127.0.0.1:{port} (--listen): address already in use")


# ------------------------------------------------------------------ ./dev on a new machine

_STUB_PYTHON = """#!/bin/sh
case "$*" in
  "-m pip --version") exit 0 ;;
  "-m pip install"*)
    echo "pip $* | PYTHONWARNINGS=$PYTHONWARNINGS" >> "{log}"
    [ "$PYTHONWARNINGS" = "ignore::UserWarning" ] || echo "SetuptoolsDeprecationWarning: banner" >&2
    exit 0 ;;
  "-c "*) exit 0 ;;
esac
echo "unexpected: python $*" >&2; exit 1
"""


def test_dev_says_what_it_installs(tmp_path: Path, repo_root: Path):
    """Item 12: the first ``./dev demo`` showed nothing for ~45 s but setuptools' banner.
    Here on a checkout with no venv, no espeak-ng, sox, gcc or Python headers (stubbed
    installers)."""
    root = tmp_path / "checkout"
    root.mkdir()
    shutil.copy(repo_root / "dev", root / "dev")
    (root / "setup.cfg").write_text("")
    (root / "pyproject.toml").write_text("")
    log = tmp_path / "installs.log"
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "venv-python").write_text(_STUB_PYTHON.replace("{log}", str(log)))
    (stubs / "venv-ivr").write_text('#!/bin/sh\necho "ivr $*"\n')
    tools = tmp_path / "bin"  # the PATH: basic tools only, so espeak-ng and sox are missing
    tools.mkdir()
    for name in ("bash", "dirname", "rm", "touch", "grep", "id", "env", "mkdir", "cp", "cat"):
        found = shutil.which(name)
        assert found, name
        os.symlink(found, tools / name)
    headers = tmp_path / "python3-dev-installed"  # what dev's Python.h check sees
    (tools / "python3").write_text(
        f'#!/bin/sh\nif [ "$1" = "-c" ]; then [ -f "{headers}" ]; exit $?; fi\n'
        '[ "$1 $2" = "-m venv" ] || exit 1\nmkdir -p "$3/bin"\n'
        f'cp "{stubs}/venv-python" "$3/bin/python"\ncp "{stubs}/venv-ivr" "$3/bin/ivr"\n')
    (tools / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >> "{log}"\n')
    (tools / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for f in (*stubs.iterdir(), tools / "python3", tools / "apt-get", tools / "sudo"):
        f.chmod(0o755)
    env = {"PATH": str(tools), "HOME": str(tmp_path)}

    first = subprocess.run(["bash", str(root / "dev"), "demo"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "ivr demo\n"
    venv = root / ".venv"
    assert first.stderr.splitlines() == [
        "dev: installing Debian packages: espeak-ng sox gcc python3-dev",
        f"dev: creating the virtualenv {venv}",
        f"dev: installing ivr and its Python dependencies into {venv} "
        "(pip install -e .[aws,cdk,dev]; about a minute the first time)",
        "dev: ready",
    ]
    installs = log.read_text()
    assert re.search(r"apt-get install -y -q espeak-ng sox gcc python3-dev", installs), installs
    assert "-e .[aws,cdk,dev] | PYTHONWARNINGS=ignore::UserWarning" in installs, installs

    (tools / "espeak-ng").symlink_to(tools / "id")  # installed now
    (tools / "sox").symlink_to(tools / "id")
    (tools / "gcc").symlink_to(tools / "id")
    headers.write_text("")
    again = subprocess.run(["bash", str(root / "dev"), "demo"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert again.returncode == 0 and again.stdout == "ivr demo\n"
    assert again.stderr == ""  # installed once: nothing more to say


# ------------------------------------------------------------- the README's CLI reference

def _readme_cli_block(repo_root: Path) -> str:
    readme = (repo_root / "README.md").read_text()
    return readme.split("## CLI reference", 1)[1].split("```", 2)[1]


def _commands() -> dict[str, click.Command]:
    """Every runnable ``ivr`` command by its words ("tenants list"), groups expanded."""
    found: dict[str, click.Command] = {}
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None, name
        if isinstance(cmd, click.Group):
            sub_ctx = click.Context(cmd, parent=ctx)
            for sub in cmd.list_commands(sub_ctx):
                sub_cmd = cmd.get_command(sub_ctx, sub)
                assert sub_cmd is not None
                found[f"{name} {sub}"] = sub_cmd
        else:
            found[name] = cmd
    return found


def _entries(block: str) -> list[tuple[list[str], str]]:
    """README lines grouped by command: (the command words each line names, its text with
    continuation lines). ``tenants list|export`` names two, ``… | done TICKET`` another."""
    entries: list[tuple[list[str], str]] = []
    for line in block.splitlines()[1:]:
        if re.match(r"^  [a-z]", line):
            words = line.strip().split()
            group = words[0]
            names: list[str] = []
            subs = words[1] if len(words) > 1 and re.fullmatch(r"[a-z][a-z|-]*", words[1]) else ""
            names += [f"{group} {s}" for s in subs.split("|") if s] or [group]
            names += [f"{group} {m}" for m in re.findall(r"\| ([a-z-]+) ", line)]
            entries.append((names, line))
        elif entries and line.startswith("      "):
            names, text = entries[-1]
            entries[-1] = (names, text + "\n" + line)
    return entries


def test_the_readme_lists_every_command_and_option(repo_root: Path):
    """Item 11: the README listed a command that did not exist; it must also not leave
    any out: every command, and each of its options, appears in the CLI reference."""
    block = _readme_cli_block(repo_root)
    text_of: dict[str, str] = {}
    for names, text in _entries(block):
        for name in names:
            text_of[name] = text_of.get(name, "") + "\n" + text
    commands = _commands()
    assert sorted(set(text_of) - set(commands)) == []  # nothing listed that does not exist
    assert sorted(set(commands) - set(text_of)) == []  # nothing left out
    missing = []
    for name, cmd in commands.items():
        for param in cmd.params:
            longs = [o for o in param.opts if o.startswith("--")]
            if isinstance(param, click.Option) and longs and "--help" not in longs:
                if not any(re.search(re.escape(o) + r"(?![\w-])", text_of[name])
                           for o in longs):
                    missing.append(f"{name} {longs[0]}")
    assert missing == []
