"""Shared helpers for scheduling tests on SQLite and Postgres."""

import os
import uuid
from contextlib import contextmanager
from urllib.parse import urlparse, urlunparse

import psycopg2

TWO_TENANTS = """
tenants:
  - id: alpha
    name: Alpha Clinic
    dids: ["3001", "+15550103001"]
    timezone: America/New_York
    hours: {mon-fri: "08:00-17:00", sat: "09:00-12:00"}
    slot_minutes: 30
    handoff: user/1000
    doctors: [{id: smith, name: Dr. Sarah Smith}, {id: patel, name: Dr. Raj Patel}]
  - id: beta
    name: Beta Clinic
    dids: ["3002"]
    timezone: Europe/Berlin
    hours: {mon-fri: "09:00-12:00"}
    slot_minutes: 20
    handoff: user/1001
    doctors: [{id: jones, name: Dr. Ann Jones}]
"""


@contextmanager
def fresh_postgres_db(base_url: str):
    """A throw-away database on the test server, dropped afterwards."""
    name = f"ivr_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(base_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    parts = urlparse(base_url)
    url = urlunparse(parts._replace(path="/" + name))
    try:
        yield url
    finally:
        from esl_app.db import close_db

        close_db()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def postgres_url() -> str | None:
    return os.environ.get("IVR_TEST_POSTGRES_URL")


def on_both_databases(kind: str, tmp_path, tenants_yaml: str, days: int, now):
    """Generator body of a ``params=["sqlite", "postgres"]`` fixture: a ready database."""
    import pytest

    from esl_app.sim.testing import make_db

    if kind == "sqlite":
        from esl_app.db import close_db

        make_db(tmp_path, tenants_yaml, days=days, now=now)
        yield "sqlite"
        close_db()
        return
    base = postgres_url()
    if not base:
        pytest.skip("IVR_TEST_POSTGRES_URL not set")
    with fresh_postgres_db(base) as url:
        make_db(tmp_path, tenants_yaml, days=days, now=now, url=url)
        yield "postgres"
