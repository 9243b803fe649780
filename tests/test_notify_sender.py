"""The outbox sender: retries with backoff, permanent failures, leases, no double sends
between concurrent senders (processes and greenlets, SQLite and Postgres), the
background greenlet, and ``ivr outbox``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gevent
import pytest
from click.testing import CliRunner
from fakes.scheduling import on_both_databases

from esl_app.cli import cli
from esl_app.db import close_db, database, write_txn
from esl_app.db.models import OutboxMessage
from esl_app.notify.base import DeliveryResult, Message
from esl_app.notify.sender import (
    BACKOFF_CAP_SECONDS,
    MAX_ATTEMPTS,
    Sender,
    backoff_seconds,
    start_sender,
)
from esl_app.scheduling import service

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 24, 15, 0)  # naive UTC, as stored
PHONE = "+15550104444"
TENANTS = """
tenants:
  - id: alpha
    name: Alpha Clinic
    dids: ["3001"]
    timezone: America/New_York
    hours: {mon-fri: "08:00-17:00"}
    doctors: [{id: smith, name: Dr. Sarah Smith}]
    notifications: {sms: sns, email: ses, from_email: desk@alpha.example}
"""
ROOT = Path(__file__).resolve().parent.parent


class Fake:
    """A notifier answering from a script of results (the last one repeats)."""

    name = "fake"
    channel = "sms"

    def __init__(self, *results: DeliveryResult | Exception) -> None:
        self.results = list(results) or [DeliveryResult(True, provider_id="p")]
        self.sent: list[Message] = []

    def send(self, message: Message) -> DeliveryResult:
        self.sent.append(message)
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, Exception):
            raise result
        return result


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    yield from on_both_databases(request.param, tmp_path, TENANTS, 7, NOW)


def queue(n: int = 1, at: datetime = T0) -> list[int]:
    with write_txn():
        return [OutboxMessage.create(tenant="alpha", code="K7M-4Q2", event="booked",
                                     channel="sms", provider="sns", recipient=PHONE,
                                     body=f"message {i}", next_attempt_at=at, created_at=at).id
                for i in range(n)]


def row(message_id: int) -> OutboxMessage:
    with database().connection_context():
        return OutboxMessage.get_by_id(message_id)


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_seconds(n, 30, 3600) for n in range(1, 10)] == [
        30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert backoff_seconds(50) == BACKOFF_CAP_SECONDS


def test_retries_with_backoff_then_fails(db, caplog):
    fake = Fake(DeliveryResult(False, error=f"sns: Throttling for {PHONE}"))
    sender = Sender(notifier_for=lambda tenant, channel: fake, max_attempts=4,
                    backoff_base=10, backoff_cap=25)
    (mid,) = queue()
    now, waits = T0, []
    with caplog.at_level(logging.INFO, logger="esl_app.notify.sender"):
        for attempt in range(1, 5):
            assert sender.deliver_due(now=now).handled == 1
            r = row(mid)
            assert r.attempts == attempt and r.claimed_by is None
            assert r.last_error == "sns: Throttling for …44"  # an echoed number is masked
            if attempt < 4:
                assert r.status == "queued"
                waits.append((r.next_attempt_at - now).total_seconds())
                assert sender.deliver_due(now=r.next_attempt_at - timedelta(seconds=1)
                                          ).handled == 0  # not due yet
                now = r.next_attempt_at
    assert waits == [10, 20, 25]
    assert row(mid).status == "failed" and len(fake.sent) == 4
    assert sender.deliver_due(now=now + timedelta(days=1)).handled == 0
    assert "failed after 4 attempt(s)" in caplog.text
    assert PHONE not in caplog.text and "5550104444" not in caplog.text
    assert "message 0" not in caplog.text


def test_recovers_after_transient_failures(db):
    fake = Fake(DeliveryResult(False, error="smtp: SMTPConnectError (421)"),
                RuntimeError("provider bug"), DeliveryResult(True, provider_id="abc"))
    sender = Sender(notifier_for=lambda t, c: fake, backoff_base=1)
    (mid,) = queue()
    report1 = sender.deliver_due(now=T0)
    assert report1.retry == 1
    report2 = sender.deliver_due(now=T0 + timedelta(seconds=1))
    assert report2.retry == 1 and row(mid).last_error == "fake: RuntimeError"
    report3 = sender.deliver_due(now=T0 + timedelta(seconds=3))
    assert report3.sent == 1
    r = row(mid)
    assert (r.status, r.attempts, r.provider_id, r.last_error) == ("sent", 3, "abc", "")
    assert r.sent_at == T0 + timedelta(seconds=3)


def test_permanent_refusal_fails_at_once(db):
    fake = Fake(DeliveryResult(False, error="sns: InvalidParameter", permanent=True))
    (mid,) = queue()
    assert Sender(notifier_for=lambda t, c: fake).deliver_due(now=T0).failed == 1
    assert (row(mid).status, row(mid).attempts) == ("failed", 1)


def test_a_channel_switched_to_the_local_outbox_is_not_sent(db):
    (mid,) = queue()
    assert Sender(notifier_for=lambda t, c: None).deliver_due(now=T0).failed == 1
    assert row(mid).last_error == "the tenant's sms provider is now outbox"


def test_missing_provider_is_retried(db):
    def unavailable(tenant, channel):
        raise RuntimeError("needs the 'aws' extra")

    (mid,) = queue()
    assert Sender(notifier_for=unavailable).deliver_due(now=T0).retry == 1
    assert row(mid).last_error == "provider unavailable: needs the 'aws' extra"


def test_a_claim_is_a_lease(db):
    """A sender that died mid-send holds the message only until its lease ends."""
    (mid,) = queue()
    dead = Sender(owner="dead", lease_seconds=60)
    assert dead.claim(mid, T0) is not None
    fake = Fake()
    alive = Sender(notifier_for=lambda t, c: fake, owner="alive")
    assert alive.claim(mid, T0 + timedelta(seconds=30)) is None
    assert alive.deliver_due(now=T0 + timedelta(seconds=59)).handled == 0
    assert alive.deliver_due(now=T0 + timedelta(seconds=61)).sent == 1
    r = row(mid)
    assert (r.status, r.attempts) == ("sent", 2)
    # the dead sender waking up cannot overwrite the outcome
    dead._finish(r, DeliveryResult(False, error="late"), T0 + timedelta(seconds=62))
    assert row(mid).status == "sent" and row(mid).last_error == ""


def test_interrupted_too_often_gives_up(db):
    (mid,) = queue()
    fake = Fake()
    for i in range(MAX_ATTEMPTS):  # every sender dies while sending
        assert Sender(owner=f"s{i}").claim(mid, T0 + timedelta(minutes=10 * i)) is not None
    sender = Sender(notifier_for=lambda t, c: fake)
    assert sender.deliver_due(now=T0 + timedelta(days=1)).failed == 1
    assert row(mid).last_error == "gave up: interrupted while sending" and fake.sent == []


def test_greenlet_senders_never_send_twice(db):
    ids = set(queue(40))
    sent: list[int] = []

    class Slow:
        name, channel = "slow", "sms"

        def send(self, message: Message) -> DeliveryResult:
            gevent.sleep(0.002)  # let the other senders run mid-send
            sent.append(message.id)
            return DeliveryResult(True)

    senders = [Sender(notifier_for=lambda t, c: Slow(), batch=7) for _ in range(4)]

    def drain(sender: Sender) -> int:
        lost = 0
        for _ in range(50):
            report = sender.deliver_due()
            lost += report.lost
            if report.handled == 0 and report.lost == 0:
                break
        return lost

    jobs = [gevent.spawn(drain, s) for s in senders]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    assert sorted(sent) == sorted(ids)  # each exactly once
    with database().connection_context():
        assert OutboxMessage.select().where(OutboxMessage.status == "sent").count() == 40


WORKER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    from esl_app.db import init_db
    from esl_app.notify.base import DeliveryResult
    from esl_app.notify.sender import Sender

    url, out, go = sys.argv[1], sys.argv[2], sys.argv[3]
    init_db(url, create=False)

    class Record:
        name, channel = "record", "sms"

        def send(self, message):
            fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, f"{{os.getpid()}} {{message.id}}\\n".encode())
            os.close(fd)
            time.sleep(0.003)
            return DeliveryResult(True)

    sender = Sender(notifier_for=lambda t, c: Record(), batch=5)
    while not os.path.exists(go):
        time.sleep(0.01)
    idle = 0
    while idle < 3:
        report = sender.deliver_due()
        idle = idle + 1 if report.handled == 0 and report.lost == 0 else 0
""")


def test_two_processes_never_send_twice(db, tmp_path):
    """Two servers' workers (or hosts) draining one outbox: every message goes out once."""
    ids = set(queue(60))
    url = database().database
    if db == "sqlite":
        url = f"sqlite:///{url}"
    else:
        d = database()
        params = d.connect_params
        url = (f"postgresql://{params.get('user') or ''}@{params.get('host')}:"
               f"{params.get('port') or 5432}/{d.database}")
    script, out, go = tmp_path / "worker.py", tmp_path / "sent.txt", tmp_path / "go"
    script.write_text(WORKER.format(root=str(ROOT)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(script), url, str(out), str(go)], env=env)
             for _ in range(2)]
    time.sleep(1.0)  # both import and connect before the start signal
    go.write_text("go")
    for p in procs:
        assert p.wait(timeout=120) == 0
    lines = [line.split() for line in out.read_text().splitlines()]
    sent = [int(mid) for _pid, mid in lines]
    assert sorted(sent) == sorted(ids), "a message was sent twice or not at all"
    assert len({pid for pid, _ in lines}) == 2, "both processes took part"
    with database().connection_context():
        assert OutboxMessage.select().where(OutboxMessage.status == "sent").count() == 60


def test_background_sender_delivers_and_stops(db):
    fake = Fake()
    handle = start_sender(Sender(notifier_for=lambda t, c: fake), poll_seconds=0.02)
    try:
        (mid,) = queue(at=datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1))
        deadline = time.monotonic() + 10
        while row(mid).status != "sent" and time.monotonic() < deadline:
            gevent.sleep(0.02)
    finally:
        handle.stop(timeout=2)
    assert row(mid).status == "sent" and len(fake.sent) == 1
    assert handle.greenlet.dead


# ---------------------------------------------------------------------------- the CLI


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS)

    def _run(*args, ok=True):
        result = runner.invoke(cli, ["--db", db_url, "--tenants", str(tenants), *args],
                               catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result

    _run("db", "init")
    _run("tenants", "import")
    _run("slots", "generate", "--tenant", "alpha", "--days", "7")
    yield _run
    close_db()


def test_cli_list_masks_and_reveals_and_send_once(run):
    from moto import mock_aws
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns.models import sns_backends

    from esl_app.notify import registry
    from esl_app.scheduling.audit import list_audit

    assert "(none)" in run("outbox", "list").output
    slot = service.search_slots("alpha", limit=1)[0]
    view = service.book("alpha", slot.slot_id, patient_name="Pat", phone=PHONE, notify="sms")
    table = run("outbox", "list", "--tenant", "alpha").output
    header, line = table.splitlines()
    assert header.split()[:6] == ["ID", "CREATED_AT", "TENANT", "CODE", "EVENT", "CHANNEL"]
    assert view.confirmation in line and "queued" in line and "…44" in line
    assert PHONE not in table
    listed = json.loads(run("outbox", "list", "--json").output)
    assert listed[0]["to"] == "…44" and view.confirmation in listed[0]["body"]
    assert not [a for a in list_audit("alpha") if a["action"] == "reveal"]
    revealed = json.loads(run("outbox", "list", "--json", "--reveal").output)
    assert revealed[0]["to"] == PHONE
    assert [a["entity"] for a in list_audit("alpha") if a["action"] == "reveal"] == ["outbox"]

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    registry.clear_cache()
    try:
        with pytest.MonkeyPatch.context() as mp, mock_aws():
            for key, value in env.items():
                mp.setenv(key, value)
            mp.delenv("IVR_AWS_REGION", raising=False)
            mp.delenv("AWS_REGION", raising=False)
            out = run("outbox", "send-once").output
            texts = list(sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sms_messages.values())
    finally:
        registry.clear_cache()
    assert out.strip() == "sent 1, 0 to retry, 0 failed"
    assert texts == [(PHONE, listed[0]["body"])]
    assert json.loads(run("outbox", "list", "--json", "--status", "sent").output)[0]["id"] == \
        listed[0]["id"]
    assert run("outbox", "send-once").output.strip() == "sent 0, 0 to retry, 0 failed"


def test_cli_unknown_tenant_is_one_line(run):
    result = run("outbox", "list", "--tenant", "nope", ok=False)
    assert result.exit_code == 1 and result.output.strip() == "error: unknown tenant 'nope'"


def test_retention_and_tenant_removal(db):
    from esl_app.db.models import TenantRow
    from esl_app.notify.outbox import purge_outbox
    from esl_app.scheduling.provisioning import remove_tenant

    old, recent, pending = queue(3, at=T0 - timedelta(days=400))
    with write_txn():
        OutboxMessage.update(status="sent").where(OutboxMessage.id == old).execute()
        OutboxMessage.update(status="failed", created_at=T0).where(
            OutboxMessage.id == recent).execute()
    assert purge_outbox(now=T0) == 1  # retention_days defaults to 365; queued ones stay
    with database().connection_context():
        assert {m.id for m in OutboxMessage.select()} == {recent, pending}
    remove_tenant("alpha", force=True)
    with database().connection_context():
        assert TenantRow.select().count() == 0
        assert OutboxMessage.select().count() == 0  # a patient's address goes with the clinic
