import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from esl_app.cli import cli
from esl_app.db import close_db

FIX = Path(__file__).parent / "fixtures" / "tenants"


@pytest.fixture
def run(tmp_path, repo_root):
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'cli.db'}"

    def _run(*args, ok=True):
        result = runner.invoke(cli, ["--db", db, "--tenants", str(repo_root / "tenants.yaml"),
                                     *args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code != 0, result.output
        return result

    _run("db", "init")  # only `db init` creates a database
    yield _run
    close_db()


def test_db_init_idempotent(run):
    assert "database ready" in run("db", "init").output
    assert "database ready" in run("db", "init").output


def test_tenants_import_list_show_export(run, repo_root):
    out = run("tenants", "import").output
    assert "added tenant sunrise" in out and "2 added" in out
    again = run("tenants", "import", str(repo_root / "tenants.yaml")).output
    assert "0 added, 0 updated, 2 unchanged" in again
    listed = json.loads(run("tenants", "list", "--json").output)
    assert {t["id"] for t in listed} == {"sunrise", "lakeside"}
    assert all(isinstance(t["dids"], list) and t["dids"] for t in listed)  # a list, not "a,b"
    table = run("tenants", "list").output
    assert table.splitlines()[0].split()[:3] == ["ID", "NAME", "DIDS"]
    shown = yaml.safe_load(run("tenants", "show", "sunrise").output)
    assert shown["doctors"][0]["id"] == "smith"
    assert json.loads(run("tenants", "show", "sunrise", "--json").output)["timezone"] == \
        "America/New_York"
    exported = yaml.safe_load(run("tenants", "export").output)
    assert [t["id"] for t in exported["tenants"]] == ["lakeside", "sunrise"]
    err = run("tenants", "show", "nope", ok=False)
    assert "unknown tenant 'nope'" in err.output


def test_tenants_import_errors(run, tmp_path):
    for fixture, msg in [("bad_yaml_syntax.yaml", "line"),
                         ("bad_duplicate_did.yaml", "already used by tenant 'a'"),
                         ("bad_timezone.yaml", "unknown time zone"),
                         ("bad_hours_overlap.yaml", "overlaps"),
                         ("nope.yaml", "file not found")]:
        res = run("tenants", "import", str(FIX / fixture), ok=False)
        assert msg in res.output
        assert len(res.output.strip().splitlines()) == 1


def test_slots_generate_and_appointments(run):
    run("tenants", "import")
    out = run("slots", "generate", "--tenant", "sunrise", "--days", "3").output
    assert "created" in out
    assert "created 0 slot(s)" in run("slots", "generate", "--tenant", "sunrise", "--days",
                                      "3").output
    assert "unknown tenant" in run("slots", "generate", "--tenant", "nope", ok=False).output
    from esl_app.scheduling import service

    slot = service.search_slots("sunrise")[0]
    appt = service.book("sunrise", slot.slot_id, patient_name="Jane Roe")
    rows = json.loads(run("appointments", "list", "--tenant", "sunrise", "--json").output)
    assert [r["confirmation"] for r in rows] == [appt.confirmation]
    day = slot.start.date().isoformat()
    assert appt.confirmation in run("appointments", "list", "--tenant", "sunrise", "--date",
                                    day).output
    assert "(none)" in run("appointments", "list", "--tenant", "lakeside").output
    assert "YYYY-MM-DD" in run("appointments", "list", "--tenant", "sunrise", "--date", "x",
                               ok=False).output
    # another tenant cannot cancel it
    assert "no appointment" in run("appointments", "cancel", appt.confirmation, "--tenant",
                                   "lakeside", ok=False).output
    assert "cancelled" in run("appointments", "cancel", appt.confirmation, "--tenant",
                              "sunrise").output
    assert "already cancelled" in run("appointments", "cancel", appt.confirmation, "--tenant",
                                      "sunrise", ok=False).output
    assert run("appointments", "list", "--tenant", "sunrise", "--json").output.strip() == "[]"


def test_tokens_and_remove(run):
    run("tenants", "import")
    token = run("tenants", "token", "sunrise").output.strip().splitlines()[0]
    from esl_app.scheduling.tokens import verify_token

    assert verify_token(token) == "sunrise"
    assert "revoked 1" in run("tenants", "token", "sunrise", "--revoke").output
    assert verify_token(token) is None
    assert "unknown tenant" in run("tenants", "token", "nope", ok=False).output
    run("slots", "generate", "--tenant", "lakeside", "--days", "3")
    from esl_app.scheduling import service

    slot = service.search_slots("lakeside")[0]
    service.book("lakeside", slot.slot_id, patient_name="Kept")
    assert "upcoming appointment" in run("tenants", "remove", "lakeside", ok=False).output
    assert "removed" in run("tenants", "remove", "lakeside", "--force").output
    assert "unknown tenant" in run("tenants", "remove", "lakeside", ok=False).output


def test_console_script_errors_exit_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "esl_app", "--db", "mysql://x/y", "db", "init"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: unsupported database URL")
    proc = subprocess.run([sys.executable, "-m", "esl_app", "--db",
                           f"sqlite:///{tmp_path / 'a.db'}", "tenants", "import",
                           str(FIX / "bad_unknown_key.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {FIX / 'bad_unknown_key.yaml'}: tenant 'a': unknown key 'colour'"]
