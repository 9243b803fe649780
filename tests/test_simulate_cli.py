"""``ivr simulate`` and ``ivr calls`` through click, on a fresh database."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fakes.telephony import TENANTS_YAML

from esl_app.cli import cli
from esl_app.cli.calls import calls, simulate


@pytest.fixture
def env(tmp_path, monkeypatch):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS_YAML)
    monkeypatch.setenv("IVR_TENANTS", str(tenants))
    monkeypatch.setenv("IVR_DATABASE_URL", f"sqlite:///{tmp_path / 'sim.db'}")
    assert CliRunner().invoke(cli, ["db", "init"]).exit_code == 0
    return tmp_path


def test_simulate_say_json_then_calls_list_and_show(env):
    runner = CliRunner()
    res = runner.invoke(simulate, ["--did", "1001", "--say", "I want to book an appointment",
                                   "--say", "#dtmf 0", "--json", "--time-scale", "0.02"])
    assert res.exit_code == 0, res.output
    t = json.loads(res.output)
    assert t["tenant"] == "sunrise" and t["outcome"] == "handoff"
    assert t["transfer_to"] == "user/1000"
    assert [x["speaker"] for x in t["turns"]][:2] == ["bot", "caller"]
    res = runner.invoke(calls, ["list", "--tenant", "sunrise", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert rows[0]["call_id"] == t["call_id"] and rows[0]["outcome"] == "handoff"
    res = runner.invoke(calls, ["show", t["call_id"][:8]])
    assert res.exit_code == 0 and "transfer_to:" in res.output and "CALLER" in res.output
    res = runner.invoke(calls, ["show", "nope-nope"])
    assert res.exit_code == 1 and "error: no call" in res.output


def test_simulate_jsonl_over_stdin(env):
    res = CliRunner().invoke(simulate, ["--did", "2002", "--jsonl", "--time-scale", "0.02"],
                             input="what are your opening hours\n#hangup\n")
    assert res.exit_code == 0, res.output
    events = [json.loads(line) for line in res.output.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "bot_said" and "listening" in kinds
    assert kinds[-1] == "call_ended"
    end = events[-1]
    assert end["tenant"] == "lakeside" and end["outcome"] == "caller_hangup"
    assert any("9 AM" in e.get("text", "") for e in events if e["event"] == "bot_said")


def test_simulate_unreachable_server_fails_cleanly(env):
    res = CliRunner().invoke(simulate, ["--did", "1001", "--server", "127.0.0.1:1"])
    assert res.exit_code == 3 and "cannot reach the bot" in res.output  # 3: unavailable


def test_simulate_does_not_reprovision_a_database_that_has_clinics(env):
    """The database is the source once it holds clinics (as for `ivr serve`): a simulated
    call uses them and writes neither the file's clinics nor new slots into it."""
    from esl_app.db import init_db
    from esl_app.db.models import Slot, TenantRow

    first = CliRunner().invoke(simulate, ["--did", "2002", "--say", "#hangup",
                                          "--time-scale", "0.02"])
    assert first.exit_code == 0, first.output
    init_db(f"sqlite:///{env / 'sim.db'}", must_exist=True)
    before = ({r.id: r.config for r in TenantRow.select()}, Slot.select().count())
    assert set(before[0]) == {"sunrise", "lakeside"} and before[1] > 0

    (env / "tenants.yaml").write_text(
        TENANTS_YAML.replace("Welcome to Lakeside Dental.", "Lakeside, new greeting.")
        + """  - id: harbor
    name: Harbor Clinic
    dids: ["3003"]
    timezone: America/New_York
    greeting: Harbor Clinic.
    hours: {mon-fri: "08:00-17:00"}
    handoff: user/3000
    stt: freeswitch
    tts: freeswitch
    doctors: [{id: lee, name: Dr. Lee}]
""")
    res = CliRunner().invoke(simulate, ["--did", "2002", "--say", "#hangup", "--json",
                                        "--time-scale", "0.02"])
    assert res.exit_code == 0, res.output
    said = [t["text"] for t in json.loads(res.output)["turns"] if t["speaker"] == "bot"]
    assert said[0].startswith("Welcome to Lakeside Dental.")  # the stored greeting
    res = CliRunner().invoke(simulate, ["--did", "3003", "--say", "#hangup",
                                        "--time-scale", "0.02"])
    assert "no clinic stored in the database answers 3003" in res.output
    after = ({r.id: r.config for r in TenantRow.select()}, Slot.select().count())
    assert after == before
