"""SNS (SMS) and SES (e-mail) delivery: end to end through the outbox against moto, and the
request shapes and error classes with botocore's Stubber."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from moto.sns.models import sns_backends

from esl_app.db import close_db, database
from esl_app.db.models import OutboxMessage
from esl_app.notify import registry
from esl_app.notify.base import Message
from esl_app.notify.sender import Sender
from esl_app.notify.ses import SesNotifier
from esl_app.notify.sns import SnsNotifier, e164
from esl_app.scheduling import service
from esl_app.sim.testing import make_db

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
REGION = "eu-west-1"
TENANTS = f"""
tenants:
  - id: alpha
    name: Alpha Clinic
    dids: ["3001"]
    timezone: America/New_York
    address: 1 Alpha Road
    hours: {{mon-fri: "08:00-17:00"}}
    doctors: [{{id: smith, name: Dr. Sarah Smith}}]
    notifications: {{sms: sns, email: ses, from_email: desk@alpha.example, region: {REGION}}}
"""


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    registry.clear_cache()  # never reuse a client made under another test's mock
    yield
    registry.clear_cache()


@pytest.fixture
def db(tmp_path):
    make_db(tmp_path, TENANTS, days=7, now=NOW)
    yield
    close_db()


def book(**kw) -> service.AppointmentView:
    slot = service.search_slots("alpha", now=NOW, limit=1)[0]
    return service.book("alpha", slot.slot_id, patient_name="Pat Doe", now=NOW, **kw)


def outbox() -> list[OutboxMessage]:
    with database().connection_context():
        return list(OutboxMessage.select().order_by(OutboxMessage.id))


def test_sms_and_email_through_sns_and_ses(db):
    with mock_aws():
        boto3.client("sesv2", region_name=REGION).create_email_identity(
            EmailIdentity="desk@alpha.example")
        view = book(phone="555-010-4444", email="pat@example.org", notify="both")
        report = Sender().deliver_due()
        assert (report.sent, report.retry, report.failed) == (2, 0, 0)
        sms = sns_backends[DEFAULT_ACCOUNT_ID][REGION].sms_messages
        mails = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
        assert len(sms) == 1 and len(mails) == 1
        (sms_id, (number, text)), = sms.items()
        mail = mails[0]
        assert Sender().deliver_due().handled == 0  # nothing twice
    assert number == "+15550104444"
    assert text == (f"Alpha Clinic: your appointment with Dr. Sarah Smith is booked for "
                    f"Tuesday, November 24, 2026 at 10:30 AM EST. Confirmation code: "
                    f"{view.confirmation}. Address: 1 Alpha Road.")
    assert mail.source == "desk@alpha.example"
    assert mail.destinations == {"ToAddresses": ["pat@example.org"]}
    assert mail.subject == "Alpha Clinic: appointment confirmed"
    assert mail.body == text
    rows = outbox()
    assert [(r.channel, r.status, r.attempts, r.last_error) for r in rows] == [
        ("sms", "sent", 1, ""), ("email", "sent", 1, "")]
    assert rows[0].provider_id == sms_id and rows[1].provider_id == mail.id
    assert all(r.sent_at is not None and r.claimed_by is None for r in rows)


def test_cancellation_goes_out_too(db):
    with mock_aws():
        view = book(phone="+15550104444", notify="sms")
        service.cancel("alpha", view.confirmation, now=NOW)
        assert Sender().deliver_due().sent == 2
        texts = [t for _n, t in sns_backends[DEFAULT_ACCOUNT_ID][REGION].sms_messages.values()]
    assert "is booked for" in texts[0] and "is cancelled" in texts[1]
    assert all(view.confirmation in t for t in texts)


def test_unverified_sender_fails_for_good(db):
    with mock_aws():  # no SES identity: SES rejects the message
        book(email="pat@example.org", notify="email")
        report = Sender().deliver_due()
    assert (report.sent, report.failed) == (0, 1)
    (row,) = outbox()
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "ses: MessageRejected")


def test_unusable_number_fails_for_good(db):
    with mock_aws():
        book(phone="12345", notify="sms")
        assert Sender().deliver_due().failed == 1
    (row,) = outbox()
    assert (row.status, row.last_error) == ("failed", "sns: not an E.164 phone number")
    assert "12345" not in row.last_error


@pytest.mark.parametrize(("raw", "expected"), [
    ("+1 (555) 010-4444", "+15550104444"), ("5550104444", "+15550104444"),
    ("15550104444", "+15550104444"), ("+49 30 1234567", "+49301234567"),
    ("12345", None), ("0301234567", None), ("+0123456789", None), ("", None),
])
def test_e164(raw, expected):
    assert e164(raw) == expected


def message(channel: str, to: str) -> Message:
    return Message(id=1, tenant_id="alpha", channel=channel, recipient=to,
                   subject="Alpha Clinic: appointment confirmed", body="Hello K7M-4Q2.")


def test_sns_request_shape_and_error_classes():
    client = boto3.client("sns", region_name="us-east-1")
    notifier = SnsNotifier("us-east-1", client=client)
    with Stubber(client) as stub:
        stub.add_response("publish", {"MessageId": "m-1"}, {
            "PhoneNumber": "+15550104444", "Message": "Hello K7M-4Q2.",
            "MessageAttributes": {"AWS.SNS.SMS.SMSType": {
                "DataType": "String", "StringValue": "Transactional"}}})
        stub.add_client_error("publish", "Throttling", "Rate exceeded for +15550104444")
        stub.add_client_error("publish", "InvalidParameter", "Invalid parameter: PhoneNumber")
        ok = notifier.send(message("sms", "5550104444"))
        throttled = notifier.send(message("sms", "5550104444"))
        refused = notifier.send(message("sms", "5550104444"))
    assert ok.ok and ok.provider_id == "m-1"
    assert (throttled.ok, throttled.permanent, throttled.error) == (False, False,
                                                                    "sns: Throttling")
    assert (refused.permanent, refused.error) == (True, "sns: InvalidParameter")


def test_ses_request_shape_and_error_classes():
    client = boto3.client("sesv2", region_name="us-east-1")
    notifier = SesNotifier("us-east-1", from_email="desk@alpha.example", client=client)
    with Stubber(client) as stub:
        stub.add_response("send_email", {"MessageId": "e-1"}, {
            "FromEmailAddress": "desk@alpha.example",
            "Destination": {"ToAddresses": ["pat@example.org"]},
            "Content": {"Simple": {
                "Subject": {"Data": "Alpha Clinic: appointment confirmed", "Charset": "UTF-8"},
                "Body": {"Text": {"Data": "Hello K7M-4Q2.", "Charset": "UTF-8"}}}}})
        stub.add_client_error("send_email", "TooManyRequestsException", "slow down")
        stub.add_client_error("send_email", "MessageRejected", "pat@example.org is bad")
        ok = notifier.send(message("email", "pat@example.org"))
        busy = notifier.send(message("email", "pat@example.org"))
        rejected = notifier.send(message("email", "pat@example.org"))
    assert ok.ok and ok.provider_id == "e-1"
    assert (busy.permanent, busy.error) == (False, "ses: TooManyRequestsException")
    assert (rejected.permanent, rejected.error) == (True, "ses: MessageRejected")
    assert "pat@" not in rejected.error


def test_no_connection_is_worth_a_retry():
    from botocore.config import Config

    client = boto3.client("sns", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                          config=Config(retries={"total_max_attempts": 1},
                                        connect_timeout=1, read_timeout=1))
    result = SnsNotifier("us-east-1", client=client).send(message("sms", "+15550104444"))
    assert (result.ok, result.permanent) == (False, False)
    assert result.error == "sns: EndpointConnectionError"


def test_notifiers_are_built_once_per_configuration(db):
    from esl_app.scheduling.provisioning import load_tenant_set

    tenants = load_tenant_set()
    assert registry.warm_notifiers(tenants) == 2
    alpha = tenants.get("alpha")
    sms = registry.notifier_for(alpha, "sms")
    assert isinstance(sms, SnsNotifier) and sms.region == REGION and sms._client is not None
    assert registry.notifier_for(alpha, "sms") is sms
    assert isinstance(registry.notifier_for(alpha, "email"), SesNotifier)
    local = make_tenant_local(alpha)
    assert registry.notifier_for(local, "sms") is None
    assert registry.warm_notifiers([local]) == 0


def make_tenant_local(tenant):
    import dataclasses

    from esl_app.config.notifications import NotificationConfig

    return dataclasses.replace(tenant, notifications=NotificationConfig())


def test_the_call_record_shows_the_confirmations_delivery(db, tmp_path):
    """A booking call's record lists what it queued and how delivery went (SNS through
    moto here): event, channel, status, attempts; never the number or the text."""
    from click.testing import CliRunner

    from esl_app.cli import cli
    from esl_app.db import write_txn
    from esl_app.db.models import CallRecord
    from esl_app.telephony.records import get_call

    start = datetime(2026, 11, 24, 14, 59)  # naive UTC, as stored; NOW is the booking
    with mock_aws():
        view = book(phone="+15550104444", email="pat@example.org", notify="sms")
        with write_txn():
            CallRecord.create(call_id="call-with-a-text", tenant_id="alpha", started_at=start,
                              ended_at=datetime(2026, 11, 24, 15, 1), outcome="booked",
                              confirmation=view.confirmation)
            CallRecord.create(call_id="earlier-call", tenant_id="alpha",
                              started_at=datetime(2026, 11, 24, 14), ended_at=start,
                              outcome="booked", confirmation=view.confirmation)
        before = get_call("call-with-a-text")["confirmations"]
        assert Sender().deliver_due(now=NOW).sent == 1
    rec = get_call("call-with-a-text")
    assert before == [{"event": "booked", "channel": "sms", "provider": "sns",
                       "status": "queued", "attempts": 0, "sent_at": None}]
    (told,) = rec["confirmations"]
    assert (told["status"], told["attempts"]) == ("sent", 1) and told["sent_at"]
    assert "+15550104444" not in str(rec["confirmations"])
    assert get_call("earlier-call")["confirmations"] == []  # not this call's message
    shown = CliRunner().invoke(cli, ["--db", f"sqlite:///{tmp_path / 'ivr-test.db'}",
                                     "calls", "show", "call-with-a-text"])
    assert "confirmations: booked by sms sent" in shown.output, shown.output
