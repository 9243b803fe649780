"""scripts/ivrctl.py end to end: against FreeSWITCH's stand-in and against no FreeSWITCH."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import gevent.event
import pytest
from click.testing import CliRunner
from gevent.server import StreamServer

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "ivrctl.py"


def _load():
    spec = importlib.util.spec_from_file_location("ivrctl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ivrctl = _load()


def run(*args: str, env: dict[str, str] | None = None):
    """Run the click group in-process (the script's main() is exercised by subprocess)."""
    base = {"FS_ESL_HOST": None, "FS_ESL_PORT": None, "FS_ESL_PASSWORD": None,
            "IVR_TENANTS": None, "IVR_DIALPLAN_OUT": None}
    return CliRunner().invoke(ivrctl.cli, list(args), env={**base, **(env or {})})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- no FreeSWITCH

@pytest.mark.parametrize("command", ["", "calls", "hangup", "transfer", "drain", "reload",
                                     "test-call", "health"])
def test_every_operation_has_help(command):
    result = run(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_script_runs_as_a_file_with_help():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for name in ("calls", "hangup", "transfer", "drain", "reload", "test-call", "health"):
        assert name in proc.stdout


def test_unreachable_freeswitch_is_a_clear_error():
    port = free_port()  # closed again: nothing listens there
    proc = subprocess.run([sys.executable, str(SCRIPT), "--port", str(port), "--password",
                           "x", "calls"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == ivrctl.EXIT_CONNECT
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: cannot reach FreeSWITCH event socket at 127.0.0.1:{port}")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("behaviour, message", [
    ("silent", "accepted the connection but did not complete the ESL handshake within 0.3s"),
    ("close", "closed the connection before the ESL handshake"),
])
def test_broken_listener_fails_fast_instead_of_hanging(behaviour, message):
    release = gevent.event.Event()

    def handle(sock, addr):
        if behaviour == "silent":
            release.wait(10)

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        result = run("--port", str(server.server_port), "--password", "x", "--timeout", "0.3",
                     "drain", "status")
    finally:
        release.set()
        server.stop()
    assert result.exit_code == ivrctl.EXIT_CONNECT
    assert message in result.stderr


def test_missing_password_warns_about_the_well_known_one():
    result = run("--port", str(free_port()), "health")
    assert "ClueCon" in result.stderr and "warning" in result.stderr
    assert result.exit_code == ivrctl.EXIT_CONNECT


@pytest.mark.parametrize("args", [["hangup", "bad uuid"], ["hangup", "abc\napi status"],
                                  ["transfer", "0f0f0f0f-1111", "1000 XML x"],
                                  ["test-call", "12ab"], ["hangup", "0f0f0f0f", "--cause",
                                                          "x y"]])
def test_arguments_that_could_inject_esl_commands_are_refused(args):
    result = run("--password", "x", "--port", str(free_port()), *args)
    assert result.exit_code == 2
    assert "is not a valid" in result.output + result.stderr


def test_mask_keeps_only_the_last_two_digits():
    assert ivrctl.mask("+15551234567") == "**********67"
    assert "1234567" not in ivrctl.mask("+15551234567")


def test_sofia_status_table_is_parsed():
    rule = "=" * 40 + "\n"
    text = ("                     Name\t   Type\t          Data\tState\n" + rule
            + "            external\tprofile\t  sip:mod_sofia@1.2.3.4:5080\tRUNNING (0)\n"
            + "   external::carrier\tgateway\t  sip:acct@sip.example.net\tREGED\n"
            + rule + "1 profile 0 aliases\n")
    assert ivrctl._sofia_rows(text) == [("external", "profile", "RUNNING (0)"),
                                        ("external::carrier", "gateway", "REGED")]
