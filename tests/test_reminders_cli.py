"""``ivr reminders list|run-once|pause|resume`` and ``ivr dnc add|list|remove``, as an
operator types them: the dry run changes nothing and shows no number, the do-not-call
list and a pause stop a call, and a real round dials through the emulated switch's
inbound Event Socket (FS_ESL_PORT) and records the attempt.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from esl_app.cli import cli
from esl_app.db import close_db
from esl_app.scheduling import service
from esl_app.sim.emulator.callees import Callee
from esl_app.sim.emulator.core import Switch
from esl_app.sim.emulator.inbound import InboundServer

PASSWORD = "ClueCon"
PHONE = "+15550108001"
TENANTS = """
tenants:
  - id: sunrise
    name: Sunrise Family Clinic
    dids: ["1001"]
    timezone: UTC
    hours: {mon-sun: "00:00-24:00"}
    slot_minutes: 30
    doctors: [{id: smith, name: Dr. Sarah Smith}]
    reminders: {hours_before: [24], window: "00:00-23:59", max_attempts: 2,
                retry_minutes: 30, caller_id: "+15550101001",
                dial: "sofia/gateway/clinic/{number}", ring_seconds: 10}
"""


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS)

    def _run(*args: str, ok: bool = True):
        result = runner.invoke(cli, ["--db", db_url, "--tenants", str(tenants), *args],
                               catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result

    _run("db", "init")
    _run("tenants", "import")
    _run("slots", "generate", "--tenant", "sunrise", "--days", "2")
    yield _run
    close_db()


def _book_soon() -> service.AppointmentView:
    """An appointment a few hours from now: its 24-hour reminder is due at once."""
    slot = service.search_slots("sunrise", limit=1,
                                after=datetime.now(UTC) + timedelta(hours=3))[0]
    return service.book("sunrise", slot.slot_id, patient_name="Ann Example", phone=PHONE)


def _dry(run) -> list[dict]:
    return json.loads(run("reminders", "run-once", "--tenant", "sunrise", "--dry-run",
                          "--json").output)


def test_dry_run_dnc_pause_and_list_change_only_what_they_say(run):
    appt = _book_soon()
    table = run("reminders", "run-once", "--tenant", "sunrise", "--dry-run").output
    header, line = table.splitlines()
    assert header.split() == ["TENANT", "CODE", "APPOINTMENT", "HOURS_BEFORE", "PHONE",
                              "WOULD_CALL", "WHY_NOT"]
    assert appt.confirmation in line and "…01" in line and "True" in line
    assert PHONE not in table and "5550108001" not in table  # the last digits only
    # a dry run plans and claims nothing
    assert run("reminders", "list", "--tenant", "sunrise").output.strip() == "(none)"

    assert run("dnc", "add", "555-010-8001", "--tenant", "sunrise").output.strip() == "added"
    assert run("dnc", "add", PHONE, "--tenant", "sunrise").output.strip() == \
        "already on the list"
    listed = json.loads(run("dnc", "list", "--tenant", "sunrise", "--json").output)
    assert [(d["phone"], d["source"]) for d in listed] == [("5550108001", "cli")]
    assert [(p["would_call"], p["why_not"]) for p in _dry(run)] == [(False, "do not call")]
    assert run("dnc", "remove", PHONE, "--tenant", "sunrise").output.strip() == "removed"
    gone = run("dnc", "remove", PHONE, "--tenant", "sunrise", ok=False)
    assert gone.exit_code == 1 and "not on sunrise's do-not-call list" in gone.output
    assert run("dnc", "add", "12", "--tenant", "sunrise", ok=False).exit_code == 1

    assert "paused" in run("reminders", "pause", "--tenant", "sunrise").output
    assert [(p["would_call"], p["why_not"]) for p in _dry(run)] == [(False, "paused")]
    assert run("reminders", "list", "--tenant", "sunrise").output.startswith(
        "reminder calls of sunrise are paused")
    assert "resumed" in run("reminders", "resume", "--tenant", "sunrise").output
    assert [(p["code"], p["would_call"]) for p in _dry(run)] == [(appt.confirmation, True)]

    unknown = run("reminders", "list", "--tenant", "nope", ok=False)
    assert unknown.exit_code == 1 and unknown.output.strip() == "error: unknown tenant 'nope'"


def test_run_once_dials_through_the_event_socket_and_records_the_attempt(run, monkeypatch):
    from esl_app.db.models import CallRecord

    appt = _book_soon()
    switch = Switch(password=PASSWORD, time_scale=0.02)
    switch.callees[PHONE[2:]] = Callee("busy")
    server = InboundServer(switch, "127.0.0.1", 0).start()
    try:
        monkeypatch.setenv("FS_ESL_HOST", "127.0.0.1")
        monkeypatch.setenv("FS_ESL_PORT", str(server.address[1]))
        monkeypatch.setenv("FS_ESL_PASSWORD", PASSWORD)
        placed = json.loads(run("reminders", "run-once", "--tenant", "sunrise",
                                "--bot", "127.0.0.1:8084", "--json").output)
        again = run("reminders", "run-once", "--tenant", "sunrise").output
    finally:
        server.stop()
    assert [(p["code"], p["attempt"], p["outcome"], p["result"]) for p in placed] == [
        (appt.confirmation, 1, "reminder_busy", "due")]  # busy: tried again later
    assert switch.callees[PHONE[2:]].calls == 1
    assert again.strip().endswith("0 reminder call(s) placed")  # the retry waits 30 min
    rows = json.loads(run("reminders", "list", "--tenant", "sunrise", "--json").output)
    assert [(r["code"], r["state"], r["attempts"], r["outcome"]) for r in rows] == [
        (appt.confirmation, "due", 1, "reminder_busy")]
    record = CallRecord.get(CallRecord.call_id == placed[0]["call_id"])
    assert (record.tenant_id, record.outcome) == ("sunrise", "reminder_busy")
