"""Operator errors fail loudly: cancelled appointments, unknown tenants, missing paths.

Each case used to be accepted silently (exit 0) or misreported ("no appointment" for one
the API still shows); every refusal is now exit 1 with one line on stderr.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fakes.api import LiveApi, live_api

from esl_app.cli import cli
from esl_app.db import close_db
from esl_app.scheduling import service

BAD_INPUT = 1  # the CLI's one exit code for refusals and bad input (esl_app/cli/__init__.py)


@pytest.fixture
def run(tmp_path: Path, repo_root: Path):
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'cli.db'}"

    def _run(*args: str) -> Result:
        return runner.invoke(cli, ["--db", db, "--tenants", str(repo_root / "tenants.yaml"),
                                   *args], catch_exceptions=False)

    assert _run("db", "init").exit_code == 0  # only `db init` creates a database
    assert _run("tenants", "import").exit_code == 0
    yield _run
    close_db()


def _refused(result: Result, message: str) -> None:
    assert result.exit_code == BAD_INPUT, result.output
    assert result.stderr.splitlines() == [f"error: {message}"]


# ------------------------------------------------------------------ cancelled appointments


def test_cli_cancel_twice_says_already_cancelled(run):
    assert run("slots", "generate", "--tenant", "sunrise", "--days", "3").exit_code == 0
    appt = service.book("sunrise", service.search_slots("sunrise")[0].slot_id,
                        patient_name="Jane Roe")
    code = appt.confirmation
    assert run("appointments", "cancel", code, "--tenant", "sunrise").exit_code == 0
    _refused(run("appointments", "cancel", code, "--tenant", "sunrise"),
             f"appointment {code} is already cancelled")
    # a truly unknown code and another tenant's code are still "no appointment"
    _refused(run("appointments", "cancel", "ZZZ-ZZZ", "--tenant", "sunrise"),
             "no appointment with that confirmation code")
    _refused(run("appointments", "cancel", code, "--tenant", "lakeside"),
             "no appointment with that confirmation code")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    with live_api(tmp_path_factory.mktemp("http_cancelled")) as live:
        yield live


def _jcall(api: LiveApi, method: str, path: str, tenant: str = "sunrise",
           body: object = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    headers = dict(api.auth(tenant))
    raw = None
    if body is not None:
        raw = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=raw, headers=headers)
        resp = conn.getresponse()
        assert resp.getheader("Content-Type", "").startswith("application/json")
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_api_cancelled_appointment_is_409_not_404(api: LiveApi):
    appt = service.book("sunrise", service.search_slots("sunrise")[0].slot_id,
                        patient_name="Ann Lee")
    base = f"/v1/tenants/sunrise/appointments/{appt.confirmation}"
    assert _jcall(api, "DELETE", base)[0] == 200
    status, got = _jcall(api, "GET", base)
    assert status == 200 and got["status"] == "cancelled"
    free = service.search_slots("sunrise")[0].slot_id
    for method, path, body in (("DELETE", base, None),
                               ("POST", f"{base}/reschedule", {"slot_id": free})):
        status, data = _jcall(api, method, path, body=body)
        assert (status, data) == (409, {"error": f"appointment {appt.confirmation} "
                                                  "is already cancelled"}), (method, path)
    # the refused reschedule did not take the slot
    assert free in {s.slot_id for s in service.search_slots("sunrise", limit=10)}
    # a truly unknown code is still 404
    for method, path, body in (
            ("DELETE", "/v1/tenants/sunrise/appointments/ZZZ-ZZZ", None),
            ("POST", "/v1/tenants/sunrise/appointments/ZZZ-ZZZ/reschedule", {"slot_id": free})):
        status, data = _jcall(api, method, path, body=body)
        assert status == 404 and data["error"]


def test_api_other_tenants_cancelled_code_stays_404(api: LiveApi):
    appt = service.book("lakeside", service.search_slots("lakeside")[0].slot_id,
                        patient_name="Lake Person")
    service.cancel("lakeside", appt.confirmation, enforce_window=False)
    base = f"/v1/tenants/sunrise/appointments/{appt.confirmation}"
    free = service.search_slots("sunrise")[0].slot_id
    for method, path, body in (("GET", base, None), ("DELETE", base, None),
                               ("POST", f"{base}/reschedule", {"slot_id": free})):
        status, data = _jcall(api, method, path, body=body)
        assert status == 404 and "cancelled" not in data["error"], (method, path)


# ------------------------------------------------------------------------ unknown tenants


@pytest.mark.parametrize("args", [
    ("callbacks", "list", "--tenant", "bogus"),
    ("callbacks", "list", "--tenant", "bogus", "--all", "--json"),
    ("callbacks", "done", "1", "--tenant", "bogus"),
    ("audit", "list", "--tenant", "bogus"),
    ("tenants", "token", "bogus", "--revoke"),
    ("tenants", "token", "bogus"),
    ("tenants", "remove", "bogus"),
    ("slots", "generate", "--tenant", "bogus"),
    ("appointments", "list", "--tenant", "bogus"),
    ("appointments", "cancel", "ABC-DEF", "--tenant", "bogus"),
    ("calls", "list", "--tenant", "bogus"),
])
def test_unknown_tenant_is_refused_without_audit(run, args: tuple[str, ...]):
    from esl_app.db.models import AuditLog

    _refused(run(*args), "unknown tenant 'bogus'")
    assert AuditLog.select().where(AuditLog.tenant_id == "bogus").count() == 0


def test_known_tenant_still_works(run):
    for args in (("callbacks", "list", "--tenant", "sunrise"),
                 ("audit", "list", "--tenant", "sunrise"),
                 ("tenants", "token", "sunrise", "--revoke"),
                 ("calls", "list", "--tenant", "sunrise")):
        result = run(*args)
        assert result.exit_code == 0, (args, result.output)


def test_a_removed_tenants_audit_trail_stays_readable(run):
    assert run("tenants", "remove", "lakeside", "--force").exit_code == 0
    listed = run("audit", "list", "--tenant", "lakeside", "--json")
    assert listed.exit_code == 0, listed.output
    entries = json.loads(listed.stdout)  # the trail outlives the tenant, removal included
    assert entries[0]["action"] == "remove" and entries[0]["entity"] == "tenant"
    _refused(run("callbacks", "list", "--tenant", "lakeside"), "unknown tenant 'lakeside'")


# ---------------------------------------------------------------------- prompt cache path


def test_prompts_missing_dir_fails(run, tmp_path: Path):
    missing = tmp_path / "nonexistent" / "dir"
    _refused(run("maintenance", "prompts", "--dir", str(missing)),
             f"prompt cache directory '{missing}' does not exist")
    assert not missing.exists()


def test_prompts_dir_that_is_a_file_fails(run, tmp_path: Path):
    afile = tmp_path / "prompts.txt"
    afile.write_text("not a cache")
    _refused(run("maintenance", "prompts", "--dir", str(afile)),
             f"prompt cache '{afile}' is not a directory")
    assert afile.read_text() == "not a cache"


def test_prompts_bad_dir_uses_the_bad_input_exit_code(run, tmp_path: Path):
    bad_date = run("appointments", "list", "--tenant", "sunrise", "--date", "x")
    bad_dir = run("maintenance", "prompts", "--dir", str(tmp_path / "nope"))
    assert bad_dir.exit_code == bad_date.exit_code == BAD_INPUT


def test_prompts_existing_dir_still_prunes(run, tmp_path: Path):
    cache = tmp_path / "cache"
    cache.mkdir()
    result = run("maintenance", "prompts", "--dir", str(cache))
    assert result.exit_code == 0 and "removed 0 prompt(s)" in result.output
