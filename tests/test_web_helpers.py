"""Shared setup of the dashboard tests: two clinics, three users, a signed-in client.

Test modules import the fixtures by their function names (``web_fixture``,
``cheap_hashes_fixture``); pytest knows them as ``web`` and ``cheap_hashes``.

Passwords are hashed with cheap Argon2 parameters here (the default costs ~50 ms each);
the code path is the production one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import falcon.testing
import pytest
from argon2 import PasswordHasher

from esl_app.db import close_db, write_txn
from esl_app.db.models import CallRecord, Slot
from esl_app.scheduling import service
from esl_app.sim.testing import make_db
from esl_app.web import auth
from esl_app.web.routes import WebConfig, create_web_app

TENANTS = """
tenants:
  - id: sunrise
    name: Sunrise Family Clinic
    dids: ["1001"]
    timezone: America/New_York
    greeting: Thank you for calling Sunrise Family Clinic.
    hours: {mon-sun: "08:00-18:00"}
    handoff: user/1000
    stt: freeswitch
    tts: freeswitch
    no_input_seconds: 20
    policy: {min_notice_minutes: 60, cancel_window_hours: 24}
    doctors:
      - {id: smith, name: Dr. Sarah Smith}
      - {id: patel, name: Dr. Raj Patel}
  - id: lakeside
    name: Lakeside Dental
    dids: ["2002"]
    timezone: America/Chicago
    greeting: Welcome to Lakeside Dental.
    hours: {mon-sun: "09:00-17:00"}
    handoff: user/2000
    stt: freeswitch
    tts: freeswitch
    data: {store_transcripts: false}
    doctors: [{id: jones, name: Dr. Amy Jones}]
"""
PASSWORD = "correct horse battery"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(name="cheap_hashes", autouse=True)
def cheap_hashes_fixture() -> Iterator[None]:
    auth.set_hasher(CHEAP)
    yield
    auth.set_hasher(None)


class Client:
    """A browser stand-in over falcon's TestClient: keeps cookies, fills in CSRF tokens."""

    def __init__(self, app: Any, address: str = "10.0.0.1") -> None:
        self.client = falcon.testing.TestClient(app)
        self.cookies: dict[str, str] = {}
        self.address = address
        self.csrf = ""

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        h.update(extra or {})
        return h

    def _keep(self, result: Any) -> Any:
        for name, cookie in result.cookies.items():
            if cookie.value:
                self.cookies[name] = cookie.value
            else:
                self.cookies.pop(name, None)
        found = re.search(r'name="csrf" value="([^"]+)"', result.text or "")
        if found:
            self.csrf = found.group(1)
        return result

    def get(self, path: str, **kw: Any) -> Any:
        query = None
        if "?" in path:
            path, query = path.split("?", 1)
        return self._keep(self.client.simulate_get(
            path, query_string=query, headers=self._headers(kw.pop("headers", None)),
            remote_addr=self.address, **kw))

    def post(self, path: str, fields: dict[str, str] | None = None, *, csrf: bool = True,
             headers: dict[str, str] | None = None, body: str | None = None) -> Any:
        data = dict(fields or {})
        if csrf and "csrf" not in data:
            data["csrf"] = self.csrf
        return self._keep(self.client.simulate_post(
            path, body=body if body is not None else urlencode(data),
            headers=self._headers({**FORM, **(headers or {})}), remote_addr=self.address))

    def login(self, username: str, password: str = PASSWORD) -> Any:
        self.get("/ui/login")
        return self.post("/ui/login", {"username": username, "password": password})


@dataclass
class WebEnv:
    """A database with two clinics, their users, some bookings, calls and tickets."""

    app: Any
    now: datetime
    codes: dict[str, str] = field(default_factory=dict)
    calls: dict[str, str] = field(default_factory=dict)
    tickets: dict[str, int] = field(default_factory=dict)
    slots: dict[str, int] = field(default_factory=dict)

    def client(self, username: str | None = None, address: str = "10.0.0.1") -> Client:
        c = Client(self.app, address)
        if username:
            r = c.login(username)
            assert r.status_code == 303, r.text
        return c


def free_slot(tenant_id: str, *, after: datetime, doctor_pk: int | None = None) -> int:
    """The first open slot of the tenant starting after ``after`` (naive UTC)."""
    q = Slot.select().where((Slot.tenant == tenant_id) & (Slot.state == "open")
                            & (Slot.start > after)).order_by(Slot.start)
    if doctor_pk:
        q = q.where(Slot.doctor == doctor_pk)
    return q.first().id


def local_today_slot(tenant_id: str, tz_name: str) -> int:
    """An open slot on the clinic's local today (made from two days back)."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(tz_name)
    today = datetime.now(UTC).astimezone(tz).date()
    for s in Slot.select().where((Slot.tenant == tenant_id) & (Slot.state == "open")
                                 ).order_by(Slot.start):
        if s.start.replace(tzinfo=UTC).astimezone(tz).date() == today:
            return s.id
    raise AssertionError("no slot today")


def add_call(call_id: str, tenant_id: str, *, caller: str = "+15551234567",
             outcome: str = "booked", started: datetime | None = None,
             turns: list[dict[str, Any]] | None = None, confirmation: str | None = None
             ) -> None:
    started = started or datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)
    turns = turns if turns is not None else [
        {"speaker": "bot", "text": "Hello, how can I help?", "at_ms": 200, "barged_in": True},
        {"speaker": "caller", "text": "Book me, my number is 555 123 4567", "at_ms": 900,
         "barged_in": False},
        {"speaker": "bot", "text": "You are booked.", "at_ms": 1350, "barged_in": False},
    ]
    usage = {"usage": {"agent_invocations": 2, "tts_chars": 40, "tts_chars_cached": 10,
                       "stt_seconds": 1.5},
             "cost": {"stt": 0.001, "tts": 0.0006, "agent": 0.002, "total": 0.0036,
                      "currency": "USD"}, "duration_ms": 30000}
    with write_txn():
        CallRecord.create(call_id=call_id, tenant_id=tenant_id, did="1001", caller=caller,
                          started_at=started,
                          ended_at=None if outcome == "in_progress"
                          else started + timedelta(seconds=30),
                          outcome=outcome, confirmation=confirmation, turns=json.dumps(turns),
                          usage=json.dumps(usage))


def build_env(tmp_path: Path, registry: Any = None, url: str | None = None) -> WebEnv:
    """The database (SQLite, or ``url``), users and data every dashboard test starts from."""
    from esl_app.scheduling.callbacks import create_ticket

    real_now = datetime.now(UTC)
    past = real_now - timedelta(days=2)
    make_db(tmp_path, TENANTS, days=16, now=past, url=url)
    auth.add_user("sunrise", "alice", PASSWORD)
    auth.add_user("lakeside", "bob", PASSWORD)
    auth.add_user("sunrise", "olga", PASSWORD, operator=True)
    env = WebEnv(app=create_web_app(WebConfig(registry=registry)), now=real_now)
    naive_now = real_now.replace(tzinfo=None)
    for tenant_id, tz in (("sunrise", "America/New_York"), ("lakeside", "America/Chicago")):
        today_slot = local_today_slot(tenant_id, tz)
        env.codes[f"{tenant_id}-today"] = service.book(
            tenant_id, today_slot, patient_name=f"Today Patient {tenant_id}",
            phone="+15550001111", now=past).confirmation
        later = free_slot(tenant_id, after=naive_now + timedelta(days=3))
        env.codes[f"{tenant_id}-later"] = service.book(
            tenant_id, later, patient_name=f"Later Patient {tenant_id}",
            now=past).confirmation
        env.slots[f"{tenant_id}-free"] = free_slot(tenant_id,
                                                   after=naive_now + timedelta(days=4))
        call_id = f"{tenant_id[:4]}0000-1111-2222-3333-444455556666"
        add_call(call_id, tenant_id, confirmation=env.codes[f"{tenant_id}-later"])
        env.calls[tenant_id] = call_id
        env.tickets[tenant_id] = create_ticket(tenant_id, name=f"Caller of {tenant_id}",
                                               phone="+15559876543",
                                               reason="please call back").id
    return env


@pytest.fixture(name="web")
def web_fixture(tmp_path: Path) -> Iterator[WebEnv]:
    env = build_env(tmp_path)
    yield env
    close_db()
