"""SMTP delivery against a small SMTP server this test runs on loopback.

The server speaks enough of RFC 5321 for smtplib: EHLO, STARTTLS (with a certificate made
here), AUTH PLAIN, MAIL, RCPT, DATA, QUIT; it records what it received.
"""

from __future__ import annotations

import base64
import email
import socket
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest

from esl_app.config.notifications import SmtpConfig
from esl_app.db import close_db, database
from esl_app.db.models import OutboxMessage
from esl_app.notify import registry
from esl_app.notify.base import Message
from esl_app.notify.sender import Sender
from esl_app.notify.smtp import SmtpNotifier
from esl_app.scheduling import service
from esl_app.sim.testing import make_db

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


@dataclass
class Received:
    mail_from: str
    rcpt: list[str]
    data: bytes
    auth: str | None
    tls: bool


@dataclass
class FakeSmtp:
    """One listening socket; each connection served in its own thread (greenlet in tests)."""

    starttls_context: ssl.SSLContext | None = None
    credentials: tuple[str, str] | None = None
    refuse: set[str] = field(default_factory=set)  # recipients answered 550
    busy_connections: int = 0  # the first N connections get "421 try later"
    received: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    port: int = 0

    def start(self) -> FakeSmtp:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")

        def say(line: str) -> None:
            conn.sendall(line.encode() + b"\r\n")

        if self.busy_connections > 0:
            self.busy_connections -= 1
            say("421 busy, try later")
            conn.close()
            return
        say("220 fake ESMTP")
        mail_from, rcpt, auth, tls = "", [], None, False
        try:
            while True:
                line = reader.readline().decode().rstrip("\r\n")
                if not line:
                    return
                verb = line.split(" ", 1)[0].upper()
                self.commands.append(verb)
                if verb == "EHLO":
                    caps = ["fake"]
                    if self.starttls_context is not None and not tls:
                        caps.append("STARTTLS")
                    if self.credentials is not None:
                        caps.append("AUTH PLAIN")
                    for cap in caps[:-1]:
                        say(f"250-{cap}")
                    say(f"250 {caps[-1]}")
                elif verb == "STARTTLS" and self.starttls_context is not None:
                    say("220 go ahead")
                    conn = self.starttls_context.wrap_socket(conn, server_side=True)
                    reader, tls = conn.makefile("rb"), True
                elif verb == "AUTH":
                    _, _, blob = line.split(" ", 2)
                    _, user, password = base64.b64decode(blob).decode().split("\0")
                    if (user, password) == self.credentials:
                        auth = user
                        say("235 ok")
                    else:
                        say("535 bad credentials")
                elif verb == "MAIL":
                    mail_from, rcpt = line.split(":", 1)[1].strip(" <>").split(">")[0], []
                    say("250 ok")
                elif verb == "RCPT":
                    to = line.split(":", 1)[1].strip(" <>")
                    if to in self.refuse:
                        say("550 no such mailbox")
                    else:
                        rcpt.append(to)
                        say("250 ok")
                elif verb == "DATA":
                    say("354 end with .")
                    chunks = []
                    while (chunk := reader.readline()) not in (b".\r\n", b""):
                        chunks.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    self.received.append(Received(mail_from, rcpt, b"".join(chunks), auth, tls))
                    say("250 queued as 42")
                elif verb == "QUIT":
                    say("221 bye")
                    return
                else:
                    say("502 not implemented")
        finally:
            conn.close()


def make_tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A certificate for 127.0.0.1: the server's context and a client context trusting it."""
    pytest.importorskip("cryptography")
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


@pytest.fixture
def smtp_server():
    server = FakeSmtp().start()
    yield server
    server.stop()


MESSAGE = Message(id=7, tenant_id="alpha", channel="email", recipient="pat@example.org",
                  subject="Alpha Clinic: appointment confirmed",
                  body="Alpha Clinic: your appointment is booked. Confirmation code: K7M-4Q2.")


def parse(received: Received) -> email.message.EmailMessage:
    return email.message_from_bytes(received.data, policy=policy.default)  # type: ignore


def test_starttls_and_login_then_the_message(tmp_path):
    server_ctx, client_ctx = make_tls(tmp_path)
    server = FakeSmtp(starttls_context=server_ctx, credentials=("desk", "s3cret")).start()
    try:
        notifier = SmtpNotifier(
            SmtpConfig("127.0.0.1", server.port, True, "A_USER", "A_PASSWORD"),
            from_email="desk@alpha.example", ssl_context=client_ctx,
            environ={"A_USER": "desk", "A_PASSWORD": "s3cret"})
        result = notifier.send(MESSAGE)
    finally:
        server.stop()
    assert result.ok and result.provider_id.endswith("@alpha.example>")
    (got,) = server.received
    assert (got.mail_from, got.rcpt, got.auth, got.tls) == (
        "desk@alpha.example", ["pat@example.org"], "desk", True)
    mail = parse(got)
    assert mail["From"] == "desk@alpha.example" and mail["To"] == "pat@example.org"
    assert mail["Subject"] == "Alpha Clinic: appointment confirmed"
    assert mail["Message-ID"] == result.provider_id
    assert mail.get_content().strip() == MESSAGE.body
    assert server.commands.index("STARTTLS") < server.commands.index("AUTH")


def test_no_starttls_offered_means_nothing_said(smtp_server: FakeSmtp):
    notifier = SmtpNotifier(SmtpConfig("127.0.0.1", smtp_server.port, True, "U", "P"),
                            from_email="desk@alpha.example", environ={"U": "desk", "P": "pw"})
    result = notifier.send(MESSAGE)
    assert (result.ok, result.permanent) == (False, False)
    assert result.error == "smtp: the server does not offer STARTTLS"
    assert "AUTH" not in smtp_server.commands and "MAIL" not in smtp_server.commands


def test_refused_recipient_is_permanent(smtp_server: FakeSmtp):
    smtp_server.refuse.add("pat@example.org")
    notifier = SmtpNotifier(SmtpConfig("127.0.0.1", smtp_server.port, False),
                            from_email="desk@alpha.example")
    result = notifier.send(MESSAGE)
    assert (result.ok, result.permanent, result.error) == (
        False, True, "smtp: recipient refused (550)")
    assert smtp_server.received == []


def test_bad_password_and_missing_environment(tmp_path):
    server = FakeSmtp(credentials=("desk", "right")).start()
    try:
        config = SmtpConfig("127.0.0.1", server.port, False, "U", "P")
        wrong = SmtpNotifier(config, from_email="d@alpha.example",
                             environ={"U": "desk", "P": "wrong"}).send(MESSAGE)
        unset = SmtpNotifier(config, from_email="d@alpha.example", environ={}).send(MESSAGE)
    finally:
        server.stop()
    assert (wrong.ok, wrong.permanent, wrong.error) == (
        False, False, "smtp: authentication failed (535)")
    assert unset.error == "smtp: environment variable U is not set" and not unset.permanent
    assert server.received == []


def test_nobody_listening_is_worth_a_retry():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    result = SmtpNotifier(SmtpConfig("127.0.0.1", port, False), from_email="d@a.example",
                          timeout_s=2).send(MESSAGE)
    assert (result.ok, result.permanent, result.error) == (
        False, False, "smtp: ConnectionRefusedError")


def test_booking_to_inbox_with_a_retry(tmp_path, smtp_server: FakeSmtp):
    """The whole path: consent at booking → outbox → sender → SMTP, the first try refused."""
    make_db(tmp_path, f"""
tenants:
  - id: alpha
    name: Alpha Clinic
    dids: ["3001"]
    timezone: America/New_York
    hours: {{mon-fri: "08:00-17:00"}}
    doctors: [{{id: smith, name: Dr. Sarah Smith}}]
    notifications:
      email: smtp
      from_email: desk@alpha.example
      smtp: {{host: 127.0.0.1, port: {smtp_server.port}, starttls: false}}
      templates: {{booked: "See you {{time}} ({{doctor}}, {{clinic}}). Code {{code}}."}}
""", days=7, now=NOW)
    registry.clear_cache()
    try:
        slot = service.search_slots("alpha", now=NOW, limit=1)[0]
        view = service.book("alpha", slot.slot_id, patient_name="Pat", email="pat@example.org",
                            notify="email", now=NOW)
        smtp_server.busy_connections = 1
        sender = Sender(backoff_base=10)
        t0 = datetime(2026, 11, 24, 15, 1)
        first = sender.deliver_due(now=t0)
        assert (first.sent, first.retry) == (0, 1)
        with database().connection_context():
            row = OutboxMessage.get()
        assert (row.status, row.attempts) == ("queued", 1)
        assert row.last_error == "smtp: SMTPConnectError (421)"
        assert row.next_attempt_at == t0 + timedelta(seconds=10)
        assert sender.deliver_due(now=t0 + timedelta(seconds=9)).handled == 0
        assert sender.deliver_due(now=t0 + timedelta(seconds=10)).sent == 1
    finally:
        registry.clear_cache()
        close_db()
    (got,) = smtp_server.received
    assert parse(got).get_content().strip() == (
        f"See you Tuesday, November 24, 2026 at 10:30 AM EST (Dr. Sarah Smith, Alpha Clinic)."
        f" Code {view.confirmation}.")
