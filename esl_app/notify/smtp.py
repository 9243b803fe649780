"""A clinic's own mail server as the e-mail provider (``notifications.email: smtp``).

One connection per message (confirmations are few; a held connection would time out
between them). With ``starttls`` (the default) the session is upgraded with certificate
checks before anything else is said, and a server that does not offer STARTTLS gets no
message and no password. The user name and password are read from the environment
variables the tenant names, at send time, so they can rotate without a restart.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from esl_app.config.notifications import SmtpConfig
from esl_app.notify.base import DeliveryResult, Message

__all__ = ["SmtpNotifier"]


class SmtpNotifier:
    """E-mail through SMTP (implements ``Notifier``)."""

    name = "smtp"
    channel = "email"

    def __init__(self, config: SmtpConfig, *, from_email: str, timeout_s: float = 20.0,
                 environ: Mapping[str, str] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``environ`` and ``ssl_context`` are for tests (a loopback server, its own CA)."""
        self.config = config
        self.from_email = from_email
        self.timeout_s = timeout_s
        self._environ = environ
        self._ssl_context = ssl_context

    def _credentials(self) -> tuple[str, str] | None:
        if not self.config.user_env:
            return None
        env = self._environ if self._environ is not None else os.environ
        user, password = env.get(self.config.user_env), env.get(self.config.password_env)
        if not user or password is None:
            raise LookupError(self.config.user_env if not user else self.config.password_env)
        return user, password

    def _compose(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.from_email
        mail["To"] = message.recipient
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(usegmt=True)
        mail["Message-ID"] = make_msgid(domain=self.from_email.rpartition("@")[2] or None)
        mail.set_content(message.body)
        return mail

    def send(self, message: Message) -> DeliveryResult:
        """Deliver one plain-text e-mail; a recipient the server refuses (5xx) is permanent."""
        try:
            credentials = self._credentials()
        except LookupError as exc:
            return DeliveryResult(False, error=f"smtp: environment variable {exc.args[0]} "
                                               "is not set")
        try:
            mail = self._compose(message)
        except (ValueError, TypeError):  # an address or subject the e-mail format refuses
            return DeliveryResult(False, error="smtp: the message cannot be composed",
                                  permanent=True)
        try:
            # EHLO with the host name, not getfqdn(): a reverse lookup can hang for seconds
            with smtplib.SMTP(self.config.host, self.config.port, timeout=self.timeout_s,
                              local_hostname=socket.gethostname() or "localhost") as server:
                server.ehlo()
                if self.config.starttls:
                    if self._ssl_context is None:  # loading the CA store costs ~10 ms: once
                        self._ssl_context = ssl.create_default_context()
                    server.starttls(context=self._ssl_context)
                    server.ehlo()
                if credentials is not None:
                    server.login(*credentials)
                server.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _text in exc.recipients.values()]
            code = codes[0] if codes else 0
            return DeliveryResult(False, error=f"smtp: recipient refused ({code})",
                                  permanent=500 <= code < 600)
        except smtplib.SMTPNotSupportedError:
            return DeliveryResult(False, error="smtp: the server does not offer STARTTLS")
        except smtplib.SMTPAuthenticationError as exc:
            return DeliveryResult(False, error=f"smtp: authentication failed ({exc.smtp_code})")
        except smtplib.SMTPDataError as exc:  # the server refused this message
            return DeliveryResult(False, error=f"smtp: message refused ({exc.smtp_code})",
                                  permanent=500 <= exc.smtp_code < 600)
        except smtplib.SMTPResponseException as exc:  # sender refused, HELO refused, …
            return DeliveryResult(False, error=f"smtp: {type(exc).__name__} ({exc.smtp_code})")
        except (OSError, smtplib.SMTPException) as exc:  # connection, TLS, timeout
            return DeliveryResult(False, error=f"smtp: {type(exc).__name__}")
        return DeliveryResult(True, provider_id=str(mail["Message-ID"]))
