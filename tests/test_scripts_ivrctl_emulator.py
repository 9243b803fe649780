"""scripts/ivrctl.py against the FreeSWITCH emulator's inbound event socket.

Calls come from the emulator; which tenant a test call gets is decided by the rendered
dialplan (evaluated as FreeSWITCH would, see test_dialplan_render), and the bot is a
stand-in outbound ESL server that answers and holds the call. As on a real switch, a new
channel shows in ``show channels`` only after a while (the core writes that table
asynchronously): ``DB_LAG``, what FreeSWITCH 1.10 takes on an idle machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest
from gevent.server import StreamServer
from test_dialplan_render import place_call
from test_scripts_ivrctl import SCRIPT, free_port, ivrctl, run

from esl_app.config.dialplan import render_dialplan
from esl_app.config.tenants import load_tenants
from esl_app.sim.emulator.channel import Channel
from esl_app.sim.emulator.core import Switch
from esl_app.sim.emulator.inbound import InboundServer
from esl_app.sim.emulator.outbound import originate_into_bot

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "not-ClueCon-7f3a"
CALLER = "+15557654321"
DB_LAG = 0.15


class HoldingBot:
    """An outbound ESL server that answers every call and keeps it until hang-up."""

    def __init__(self) -> None:
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def _handle(self, sock, addr) -> None:
        sock.sendall(b"connect\n\nmyevents\n\nlinger\n\n"
                     b"sendmsg\ncall-command: execute\nexecute-app-name: answer\n\n")
        while sock.recv(65536):
            pass

    def stop(self) -> None:
        self.server.stop(timeout=1)


@pytest.fixture
def bot():
    b = HoldingBot()
    yield b
    b.stop()


@pytest.fixture
def xml(bot) -> str:
    return render_dialplan(load_tenants(ROOT / "tenants.yaml"), [bot.address])


@pytest.fixture
def fs(bot, xml):
    """The emulated switch, its inbound socket, and FreeSWITCH's routing of originate."""
    host, port = bot.address.split(":")
    switch = Switch(password=PASSWORD, bot_address=(host, int(port)), db_lag=DB_LAG)

    def originate(sw, did, caller, variables, address):
        routed = place_call(xml, did, globals_=sw.global_vars, reachable=(bot.address,))
        tags = {k: v for k, v in routed.channel.items() if k.startswith("ivr_")}
        if routed.ended_by.startswith("bot"):
            return originate_into_bot(sw, did, caller, {**variables, **tags}, address)
        channel = Channel(sw, did, caller, variables={**variables, **tags})
        if routed.ended_by.startswith("human"):
            channel.execute("bridge", routed.ran[-1][1])
        else:
            channel.hangup("NO_ROUTE_DESTINATION", by="dialplan")
        return channel

    switch.originate_hook = originate
    server = InboundServer(switch, "127.0.0.1", 0).start()
    switch.env = {"FS_ESL_PORT": str(server.address[1]), "FS_ESL_PASSWORD": PASSWORD}
    yield switch
    server.stop()
    for ch in list(switch.channels.values()):
        ch.hangup("NORMAL_CLEARING", by="test")


def bot_call(switch: Switch, tenant: str, did: str) -> Channel:
    return Channel(switch, did, CALLER, variables={"ivr_tenant": tenant, "ivr_did": did})


def listed(switch: Switch) -> None:
    """Wait until the channels made so far show in ``show channels``."""
    gevent.sleep(switch.db_lag + 0.01)


def ctl(switch: Switch, *args: str):
    return run(*args, env=switch.env)


def test_wrong_password_is_a_clear_error(fs):
    result = run("calls", env={**fs.env, "FS_ESL_PASSWORD": "wrong"})
    assert result.exit_code == ivrctl.EXIT_CONNECT
    assert result.stderr.strip() == (
        f"error: FreeSWITCH at 127.0.0.1:{fs.env['FS_ESL_PORT']} rejected the ESL password "
        "(set --password or FS_ESL_PASSWORD to event_socket.conf.xml's password)")


def test_wrong_password_as_a_script(fs):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--port", fs.env["FS_ESL_PORT"],
                           "--password", "nope", "health"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == ivrctl.EXIT_CONNECT
    assert "rejected the ESL password" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_calls_lists_bot_calls_with_masked_callers(fs):
    a = bot_call(fs, "sunrise", "1001")
    b = bot_call(fs, "lakeside", "+15550101002")
    Channel(fs, "4444", "+15550000000")  # not routed by our dialplan
    assert json.loads(ctl(fs, "calls", "--json").output) == []  # not listed yet
    listed(fs)
    result = ctl(fs, "calls", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {r["uuid"]: r for r in json.loads(result.output)}
    assert set(rows) == {a.uuid, b.uuid}
    assert rows[a.uuid]["tenant"] == "sunrise" and rows[a.uuid]["did"] == "1001"
    assert rows[b.uuid]["tenant"] == "lakeside" and rows[b.uuid]["did"] == "+15550101002"
    assert rows[a.uuid]["caller"] == "**********21"
    assert rows[a.uuid]["state"] == "RINGING"
    assert isinstance(rows[a.uuid]["duration"], int)
    table = ctl(fs, "calls")
    assert table.exit_code == 0
    assert a.uuid in table.output and "lakeside" in table.output
    assert CALLER not in table.output and CALLER[1:] not in table.output


def test_calls_with_no_calls(fs):
    result = ctl(fs, "calls")
    assert result.exit_code == 0
    assert "(no calls)" in result.output


def test_calls_as_a_script(fs):
    call = bot_call(fs, "sunrise", "1001")
    listed(fs)
    proc = subprocess.run([sys.executable, str(SCRIPT), "calls", "--json"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={"PATH": "", **fs.env})
    assert proc.returncode == 0, proc.stderr
    assert [r["uuid"] for r in json.loads(proc.stdout)] == [call.uuid]


def test_hangup(fs):
    call = bot_call(fs, "sunrise", "1001")
    result = ctl(fs, "hangup", call.uuid, "--cause", "CALL_REJECTED")
    assert result.exit_code == 0, result.stderr
    assert call.hangup_cause == "CALL_REJECTED" and call.hangup_by == "api"
    again = ctl(fs, "hangup", call.uuid)
    assert again.exit_code == 1
    assert "No Such Channel" in again.stderr


def test_transfer(fs):
    call = bot_call(fs, "sunrise", "1001")
    result = ctl(fs, "transfer", call.uuid, "1000")
    assert result.exit_code == 0, result.stderr
    assert "1000" in (call.transfer_to or "")
    missing = ctl(fs, "transfer", "0f0f0f0f-0000-0000-0000-000000000000", "1000")
    assert missing.exit_code == 1
    assert "No such channel" in missing.stderr


def test_drain_on_off_status_and_the_dialplan_obeys(fs, xml, bot):
    status = ctl(fs, "drain", "status")
    assert status.exit_code == 0
    assert status.output.startswith("drain: off (ivr_drain=unset)")
    bot_call(fs, "sunrise", "1001")
    listed(fs)
    on = ctl(fs, "drain", "on")
    assert on.exit_code == 0, on.stderr
    assert on.output.startswith("drain: on") and "1 call with the bot" in on.output
    assert fs.global_vars["ivr_drain"] == "true"
    drained = place_call(xml, "1001", globals_=fs.global_vars, reachable=(bot.address,))
    assert drained.ended_by == "human user/1000"
    off = ctl(fs, "drain", "off")
    assert off.exit_code == 0 and off.output.startswith("drain: off")
    back = place_call(xml, "1001", globals_=fs.global_vars, reachable=(bot.address,))
    assert back.ended_by == f"bot {bot.address}"


def test_reload_renders_then_reloadxml(fs, tmp_path):
    out = tmp_path / "ivr" / "ivr_public.xml"
    result = ctl(fs, "reload", "--out", str(out), "--tenants", str(ROOT / "tenants.yaml"),
                 "--bot", "127.0.0.1:9001")
    assert result.exit_code == 0, result.stderr
    assert "reloadxml: +OK [Success]" in result.output
    assert out.read_text() == render_dialplan(load_tenants(ROOT / "tenants.yaml"),
                                              ["127.0.0.1:9001"])


def test_reload_with_bad_tenants_changes_nothing(fs, tmp_path):
    bad = tmp_path / "tenants.yaml"
    bad.write_text("tenants: [{id: Bad!}]\n")
    out = tmp_path / "ivr_public.xml"
    result = ctl(fs, "reload", "--out", str(out), "--tenants", str(bad))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "tenant" in result.stderr
    assert not out.exists()


def test_test_call_reaches_the_bot_and_is_hung_up(fs):
    # longer than test-call would poll the listing: it must not need show channels at all
    fs.db_lag = 30.0
    result = ctl(fs, "test-call", "+15550101002")
    assert result.exit_code == 0, result.stderr
    assert result.output.startswith(
        "ok: +15550101002 answered by the bot; tenant lakeside, ivr_did +15550101002, "
        "application ")
    with gevent.Timeout(10):
        while fs.channels:
            gevent.sleep(0.01)


def test_originate_answers_with_the_a_leg_which_names_the_b_leg(fs):
    fs.db_lag = 30.0
    reply = fs.api("originate", "{origination_caller_id_number=0000000000}loopback/1001/public "
                                "&park()")
    assert reply.startswith("+OK ")
    a_leg = reply[4:].strip()
    b_leg = fs.api("uuid_getvar", f"{a_leg} other_loopback_leg_uuid")
    assert fs.api("uuid_getvar", f"{b_leg} other_loopback_leg_uuid") == a_leg
    assert [fs.api("uuid_getvar", f"{u} loopback_leg") for u in (a_leg, b_leg)] == ["A", "B"]
    assert fs.api("uuid_getvar", f"{a_leg} ivr_tenant") == "_undef_"
    assert fs.api("uuid_getvar", f"{b_leg} ivr_tenant") == "sunrise"
    assert fs.api("uuid_getvar", f"{b_leg} ivr_did") == "1001"
    assert json.loads(fs.api("show", "channels as json")) == {"row_count": 0}
    fs.db_lag = 0.0
    rows = json.loads(fs.api("show", "channels as json"))["rows"]
    assert {r["name"]: r["uuid"] for r in rows} == {"loopback/1001-a": a_leg,
                                                   "loopback/1001-b": b_leg}
    assert fs.api("uuid_kill", b_leg) == "+OK\n"
    with gevent.Timeout(10):
        while fs.channels:  # the a-leg hangs up with the b-leg
            gevent.sleep(0.01)


def _forget_the_b_leg(fs) -> None:
    """A switch whose a-leg does not name its b-leg: unset it as soon as originate returns."""
    hook = fs.originate_hook

    def originate(sw, did, caller, variables, address):
        a_leg = variables["other_loopback_leg_uuid"]
        gevent.spawn(sw.api, "uuid_setvar", f"{a_leg} other_loopback_leg_uuid")
        return hook(sw, did, caller, variables, address)

    fs.originate_hook = originate


def test_test_call_without_the_b_leg_name_waits_for_the_listing(fs):
    _forget_the_b_leg(fs)
    fs.db_lag = 0.5
    started = time.monotonic()
    result = ctl(fs, "test-call", "1002")
    assert result.exit_code == 0, result.stderr
    assert result.output.startswith("ok: 1002 answered by the bot; tenant lakeside")
    assert time.monotonic() - started >= 0.5


def test_test_call_without_the_b_leg_name_gives_up_after_a_bounded_wait(fs):
    _forget_the_b_leg(fs)
    fs.db_lag = 30.0
    started = time.monotonic()
    result = ctl(fs, "test-call", "1002")
    assert result.exit_code == 1
    assert "no channel carries ivr_tenant" in result.stderr
    assert ivrctl.LISTING_WAIT <= time.monotonic() - started < ivrctl.LISTING_WAIT + 2


def test_test_call_while_draining_reports_the_human_line(fs):
    assert ctl(fs, "drain", "on").exit_code == 0
    result = ctl(fs, "test-call", "1001")
    assert result.exit_code == 1
    assert "went to the human line (user/1000)" in result.stderr


def test_test_call_to_an_unknown_number_fails(fs):
    result = ctl(fs, "test-call", "9999")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: test call to 9999 failed: NO_ROUTE_DESTINATION (no extension matches: "
        "dialplan rendered and reloaded?)")
    assert not fs.channels


def test_health_all_good(fs, bot):
    result = ctl(fs, "health", "--bot", bot.address, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    names = [c["check"] for c in report["checks"]]
    assert names[0] == "freeswitch" and f"bot {bot.address}" in names
    assert "sofia profile external" in names


def test_health_reports_an_unreachable_bot(fs):
    dead = f"127.0.0.1:{free_port()}"
    result = ctl(fs, "health", "--bot", dead)
    assert result.exit_code == 1
    assert f"FAIL  bot {dead}:" in result.output
    assert "OK    freeswitch: UP" in result.output
