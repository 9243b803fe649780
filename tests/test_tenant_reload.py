"""A serving bot gives the very next call what ``ivr tenants import`` committed.

Reported: with ``ivr serve`` running, the first call after an import still got the
old clinics (a new DID heard "not in service", a changed greeting the old one): the
reload ran behind the call. These tests run the bot in-process with the workers'
own tenant source, import through the CLI and place real emulated calls.
"""

import logging

import pytest
from click.testing import CliRunner

from esl_app.cli import cli
from esl_app.db import close_db
from esl_app.runtime.workers import _tenant_source
from esl_app.sim.simulate import SimCall, run_lines, start_local_bot, transcript_for
from esl_app.sim.testing import REPO_TENANTS, make_db
from esl_app.telephony.call import REJECT_TEXT

SCALE = 0.02  # emulated media time: prompts play 50 times faster

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


@pytest.fixture
def serving(tmp_path):
    """A bot over the repo's clinics, stored in a fresh database, as ``ivr serve`` runs it."""
    path = tmp_path / "tenants.yaml"
    path.write_text(REPO_TENANTS.read_text())
    make_db(tmp_path, path.read_text(), days=1)
    db_url = f"sqlite:///{tmp_path / 'ivr-test.db'}"
    bot = start_local_bot(_tenant_source(str(path)))
    yield bot, path, db_url
    bot.stop()
    close_db()


def _import(db_url: str, path) -> None:
    """Exactly what the operator runs: ``ivr --db URL tenants import FILE``."""
    result = CliRunner().invoke(cli, ["--db", db_url, "tenants", "import", str(path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _bot_lines(bot, did: str) -> list[str]:
    """Place one call to ``did``, hang up once the bot listens; what the bot said."""
    sim = SimCall(bot.address, did, time_scale=SCALE).start()
    run_lines(sim, [], lambda _event: None)
    assert sim.call.wait_ended(30)
    return [t["text"] for t in transcript_for(sim, bot)["turns"] if t["speaker"] == "bot"]


def _reload_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.INFO and r.getMessage().startswith("tenants reloaded")]


def test_first_call_after_import_reaches_a_new_clinic(serving, caplog):
    bot, path, db_url = serving
    caplog.set_level(logging.INFO, logger="esl_app.telephony.server")
    assert _bot_lines(bot, "1003") == [REJECT_TEXT]
    path.write_text(path.read_text().rstrip("\n") + "\n" + NORTHSIDE)
    _import(db_url, path)
    assert any("Welcome to Northside Health." in line for line in _bot_lines(bot, "1003"))
    assert _reload_lines(caplog) == [
        "tenants reloaded (source changed): 1 added, 0 changed, 0 removed, 3 in force"]


def test_first_call_after_import_hears_a_changed_greeting(serving, caplog):
    bot, path, db_url = serving
    caplog.set_level(logging.INFO, logger="esl_app.telephony.server")
    old = "Thank you for calling Sunrise Family Clinic."
    assert any(old in line for line in _bot_lines(bot, "1001"))
    path.write_text(path.read_text().replace(old, "Good day from Sunrise."))
    _import(db_url, path)
    lines = _bot_lines(bot, "1001")
    assert any("Good day from Sunrise." in line for line in lines)
    assert not any(old in line for line in lines)
    assert _reload_lines(caplog) == [
        "tenants reloaded (source changed): 0 added, 1 changed, 0 removed, 2 in force"]


def test_the_database_is_the_source_an_edit_alone_changes_nothing(serving, caplog):
    """The documented model: edit, ``tenants import``; SIGHUP only re-reads the database."""
    bot, path, db_url = serving
    caplog.set_level(logging.INFO, logger="esl_app.telephony.server")
    old = "Thank you for calling Sunrise Family Clinic."
    path.write_text(path.read_text().replace(old, "Good day from Sunrise."))
    assert any(old in line for line in _bot_lines(bot, "1001"))
    source = bot.server.services.tenants
    assert source.reload(reason="SIGHUP")  # what a worker's SIGHUP handler runs
    assert any(old in line for line in _bot_lines(bot, "1001"))
    assert _reload_lines(caplog) == [
        "tenants reloaded (SIGHUP): 0 added, 0 changed, 0 removed, 2 in force"]


def test_an_unchanged_database_is_not_re_read_per_call(serving):
    bot, _path, _db_url = serving
    source = bot.server.services.tenants
    for _ in range(2):
        _bot_lines(bot, "1001")
    assert source.checks == 2 and source.reloads == 0


def test_booking_settings_follow_an_import_from_another_process(serving):
    """The booking code caches a clinic's settings for 2 s; an import made by another
    process (the operator's shell) reaches it with the next call's reload, not later."""
    import subprocess
    import sys

    from esl_app.scheduling import service

    bot, path, db_url = serving
    assert service.get_tenant("sunrise").policy.hold_minutes != 9
    text = path.read_text()
    marker = "  - id: sunrise\n"
    assert marker in text
    path.write_text(text.replace(marker, marker + "    policy: {hold_minutes: 9}\n", 1))
    proc = subprocess.run([sys.executable, "-m", "esl_app", "--db", db_url, "tenants",
                           "import", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    _bot_lines(bot, "1001")  # the call's set-up sees the new fingerprint and reloads
    assert service.get_tenant("sunrise").policy.hold_minutes == 9
