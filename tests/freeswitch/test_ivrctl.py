"""``ivrctl`` (the installed command) against the real FreeSWITCH and a real bot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest

from freeswitch.harness import CONF, Bot, Caller, DialplanInstall, InboundEsl, free_port

IVRCTL = str(Path(sys.executable).with_name("ivrctl"))


def ivrctl(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([IVRCTL, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FS_ESL_PASSWORD": "ClueCon", **(env or {})})


def test_health(fs_bot: Bot) -> None:
    # An earlier test's call is counted when the bot has finished with it, which on a
    # busy box can be after its channels are gone: start from a bot with no call.
    deadline = time.monotonic() + 10
    while fs_bot.metric("ivr_calls_active") and time.monotonic() < deadline:
        gevent.sleep(0.2)
    calls_before = fs_bot.metric("ivr_calls_total")
    out = ivrctl("health", "--bot", fs_bot.esl, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert report["ok"] and checks["freeswitch"]["detail"].startswith("UP")
    assert checks["sofia profile internal"]["ok"]
    assert checks[f"bot {fs_bot.esl}"]["detail"] == "reachable"
    gevent.sleep(0.5)
    assert fs_bot.metric("ivr_calls_total") == calls_before  # the probe is not a call
    dead = f"127.0.0.1:{free_port()}"
    out = ivrctl("health", "--bot", dead)
    assert out.returncode == 1 and f"FAIL  bot {dead}" in out.stdout


@pytest.mark.parametrize(("did", "tenant"), [("1001", "sunrise"), ("1002", "lakeside")])
def test_test_call_reaches_the_bot(did: str, tenant: str, fs_plan: DialplanInstall,
                                   fs_bot: Bot) -> None:
    for _ in range(3):  # the b-leg lookup once raced FreeSWITCH's channel list
        out = ivrctl("test-call", did, "--context", fs_plan.context())
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"ok: {did} answered by the bot; tenant {tenant}")


def test_test_call_unknown_number(fs_plan: DialplanInstall, fs_bot: Bot) -> None:
    out = ivrctl("test-call", "9999", "--context", fs_plan.context())
    assert out.returncode == 1 and "NO_ROUTE_DESTINATION" in out.stderr


def test_drain_sends_new_calls_to_the_human_line(fs_plan: DialplanInstall, fs_bot: Bot) -> None:
    try:
        out = ivrctl("drain", "on")
        assert out.returncode == 0 and out.stdout.startswith("drain: on"), out
        out = ivrctl("test-call", "2001", "--context", fs_plan.context())
        assert out.returncode == 1 and "went to the human line (loopback/1005/public)" \
            in out.stderr, out.stderr
    finally:
        out = ivrctl("drain", "off")
    assert out.returncode == 0 and out.stdout.startswith("drain: off")
    assert ivrctl("drain", "status").stdout.startswith("drain: off")
    out = ivrctl("test-call", "2001", "--context", fs_plan.context())
    assert out.returncode == 0, out.stderr


def _live_call(esl: InboundEsl, plan: DialplanInstall) -> Caller:
    call = Caller(esl, plan, "1001").dial()
    esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_EXECUTE"
                 and e.get("Application") == "playback", 15, call.start, "the greeting")
    return call


def _listed(uuid: str) -> dict:
    deadline = time.monotonic() + 5  # `show channels` lists a new channel late
    while True:
        out = ivrctl("calls", "--json")
        assert out.returncode == 0, out.stderr
        rows = {r["uuid"]: r for r in json.loads(out.stdout)}
        if uuid in rows or time.monotonic() > deadline:
            return rows.get(uuid, {})
        gevent.sleep(0.3)


def test_calls_and_hangup(fs_esl: InboundEsl, fs_plan: DialplanInstall, fs_bot: Bot) -> None:
    call = _live_call(fs_esl, fs_plan)
    row = _listed(call.b)
    assert row["tenant"] == "sunrise" and row["did"] == "1001"
    assert "0100100" not in row["caller"]  # the caller's number is masked
    out = ivrctl("hangup", call.b)
    assert out.returncode == 0, out.stderr
    call.wait_ended(10)
    assert fs_bot.wait_call_record(call.b)["outcome"] == "caller_hangup"
    out = ivrctl("hangup", call.b)
    assert out.returncode == 1 and "no such channel" in out.stderr.lower(), out.stderr


def test_transfer_takes_the_call_from_the_bot(fs_esl: InboundEsl, fs_plan: DialplanInstall,
                                              fs_bot: Bot) -> None:
    call = _live_call(fs_esl, fs_plan)
    mark = len(fs_esl.events)
    out = ivrctl("transfer", call.b, "1005", "--context", "public")
    assert out.returncode == 0, out.stderr
    fs_esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_EXECUTE"
                    and e.get("Application") == "echo", 10, mark, "the echo extension")
    record = fs_bot.wait_call_record(call.b)  # the bot let go of the call at once
    assert record["outcome"] == "handoff", record["outcome"]
    deadline = time.monotonic() + 10
    while fs_bot.metric("ivr_calls_active") and time.monotonic() < deadline:
        gevent.sleep(0.2)
    assert fs_bot.metric("ivr_calls_active") == 0
    gevent.sleep(1.0)
    assert not call.ended()  # the bot did not hang up: the caller is with the echo now
    # and it never talked over whoever has the call now
    assert not [e for e in call.bot_events(mark) if e.name == "CHANNEL_EXECUTE"
                and e.get("Application") in ("playback", "speak")]
    call.hangup()
    call.wait_ended()
    assert not fs_bot.log_problems()


def test_reload_renders_and_reloads(fs_plan: DialplanInstall, fs_tenants: Path,
                                    fs_bot: Bot) -> None:
    target = CONF / "dialplan" / fs_plan.context() / "ivr.xml"
    before = target.stat().st_mtime_ns
    out = ivrctl("reload", "--out", str(target), "--tenants", str(fs_tenants),
                 "--bot", fs_bot.esl)
    assert out.returncode == 0, out.stderr
    assert target.stat().st_mtime_ns > before
    assert "ivr_frontdesk" in target.read_text()
    out = ivrctl("test-call", "1002", "--context", fs_plan.context())
    assert out.returncode == 0, out.stderr
