"""Hostile text and malformed requests at the API: 4xx, never 500; the same on both
databases; nothing raw on the operator's terminal.

Reported: NUL, ESC, bidi overrides and zero-width characters stored in patient names
(NUL: 201 on SQLite, 500 on Postgres); `ivr appointments list` printed ESC[2J raw; a
body of 5000 '[' was a RecursionError 500; `limit=²` a 500 while `limit=٣` meant 3; a
lone surrogate in patient_name a 500; the database down a 500 instead of 503.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner
from fakes.api import live_api
from fakes.scheduling import fresh_postgres_db, on_both_databases, postgres_url
from test_http_api import call, jcall

from esl_app.cli import cli
from esl_app.http.app import serve_http
from esl_app.scheduling import callbacks, service
from esl_app.scheduling.errors import InvalidRequest
from esl_app.scheduling.text import clean_text, printable
from esl_app.scheduling.tokens import issue_token
from esl_app.sim.testing import REPO_TENANTS, make_db


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    with live_api(tmp_path_factory.mktemp("hostile-text")) as live:
        yield live


def _slot(api) -> str:
    status, slots = jcall(api, "GET", "/v1/tenants/sunrise/slots?limit=50")
    assert status == 200 and slots
    return slots


@pytest.mark.parametrize("name,why", [
    ("Ann\x00Roe", "contains control characters"),
    ("\x1b[2J\x1b[31mAnn", "contains control characters"),
    ("Ann\x7fRoe", "contains control characters"),
    ("Ann\ud800Roe", "is not valid text"),
])
def test_control_characters_and_surrogates_are_422(api, name, why):
    raw = json.dumps({"slot_id": _slot(api)[0]["slot_id"], "patient_name": name}).encode()
    status, headers, data = call(api, "POST", "/v1/tenants/sunrise/appointments", raw=raw,
                                 headers={"Content-Type": "application/json"})
    assert status == 422, data
    assert json.loads(data) == {"error": f"patient_name: {why}"}


def test_invisible_format_characters_are_removed_and_text_normalised(api):
    slots = _slot(api)
    name = "A\u0301nn \u202eeoR\u202c\u200b\ufeff  Zo\u00eb\tLee"  # NFD á, bidi, ZW, BOM
    status, appt = jcall(api, "POST", "/v1/tenants/sunrise/appointments",
                         body={"slot_id": slots[1]["slot_id"], "patient_name": name})
    assert status == 201, appt
    assert appt["patient_name"] == "\u00c1nn eoR Zo\u00eb Lee"


@pytest.mark.parametrize("raw,status", [
    (b"[" * 5000, 400), (b"{" * 5000, 400), (b'{"a": ' * 2500, 400)])
def test_deep_nesting_is_400_not_500(api, raw, status):
    got, headers, data = call(api, "POST", "/v1/tenants/sunrise/appointments", raw=raw,
                              headers={"Content-Type": "application/json"})
    assert got == status and headers["content-type"].startswith("application/json"), data


@pytest.mark.parametrize("limit", ["²", "٣", "３", "1e1", "-1", " 3", "0", "51", "9" * 40])
def test_limit_takes_ascii_digits_only(api, limit):
    from urllib.parse import quote

    status, body = jcall(api, "GET", f"/v1/tenants/sunrise/slots?limit={quote(limit)}")
    assert status == 422 and body == {"error": "limit: must be an integer from 1 to 50"}


def test_the_same_text_rules_on_both_databases(request, tmp_path):
    """Service level (the agent's tools and message taking use it too)."""
    for kind in ("sqlite", "postgres"):
        gen = on_both_databases(kind, tmp_path / kind, REPO_TENANTS.read_text(), 2, None)
        try:
            next(gen)
        except pytest.skip.Exception:
            continue
        try:
            slot = service.search_slots("sunrise", limit=3)
            with pytest.raises(InvalidRequest, match="control characters"):
                service.book("sunrise", slot[0].slot_id, patient_name="Ann\x00Roe")
            appt = service.book("sunrise", slot[0].slot_id, patient_name="Ann\u202e Roe\u200b")
            assert appt.patient_name == "Ann Roe"
            with pytest.raises(InvalidRequest, match="control characters"):
                callbacks.create_ticket("sunrise", name="x", phone="5550100", reason="a\x00b")
            ticket = callbacks.create_ticket("sunrise", name="Ann\u200b", phone="5550100",
                                             reason="call\nme " + "x" * 3000)
            assert ticket.name == "Ann" and len(ticket.reason) == 2000
        finally:
            gen.close()


def test_the_cli_escapes_stored_control_characters(tmp_path: Path):
    """A row stored before the boundary checks must not reach the terminal raw."""
    make_db(tmp_path, days=2)
    from esl_app.db.models import Appointment

    slot = service.search_slots("sunrise", limit=1)[0]
    appt = service.book("sunrise", slot.slot_id, patient_name="Ann Roe")
    Appointment.update(patient_name="\x1b[2J\x1b[31mEvil\u202e").where(
        Appointment.code == appt.confirmation).execute()
    out = CliRunner().invoke(cli, ["--db", f"sqlite:///{tmp_path / 'ivr-test.db'}",
                                   "appointments", "list", "--tenant", "sunrise"]).output
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b[2J\\x1b[31mEvil\\u202e" in out
    assert printable("Zoë Lee") == "Zoë Lee"


def test_clean_text_rules():
    assert clean_text(" a\r\n b\u2028c ", "f", max_len=10) == "a b c"
    assert clean_text("\u0915\u094d\u200d\u0937", "f", max_len=10) == "\u0915\u094d\u200d\u0937"
    with pytest.raises(InvalidRequest, match="f is longer than 3 characters"):
        clean_text("abcd", "f", max_len=3)


def test_database_down_is_503_not_500(tmp_path: Path):
    base = postgres_url()
    if not base:
        pytest.skip("IVR_TEST_POSTGRES_URL not set")
    with fresh_postgres_db(base) as url:
        make_db(tmp_path, days=2, url=url)
        token = issue_token("sunrise")
        server = serve_http("127.0.0.1", 0)
        name = url.rsplit("/", 1)[1]
        admin = psycopg2.connect(base)
        admin.autocommit = True
        try:
            with admin.cursor() as cur:  # the database goes away under the API
                cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s", (name,))

            class Api:
                port = server.server_port

                @staticmethod
                def auth(_tenant: str) -> dict[str, str]:
                    return {"Authorization": f"Bearer {token}"}

            for path in ("/v1/tenants/sunrise/slots", "/healthz"):
                status, headers, data = call(Api, "GET", path)
                assert status == 503, (path, status, data)
                assert headers["content-type"].startswith("application/json")
        finally:
            with admin.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.close()
            server.stop(timeout=2)
