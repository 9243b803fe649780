"""Amazon SES as the e-mail provider (``notifications.email: ses``).

``sesv2.send_email`` with simple (text) content from the tenant's ``from_email``, which
must be a verified SES identity. Credentials and region come from the standard AWS chain;
only error codes are ever recorded.
"""

from __future__ import annotations

from typing import Any

from esl_app.notify import aws
from esl_app.notify.base import DeliveryResult, Message

__all__ = ["SesNotifier", "new_client"]

# SES refuses these for good (a rejected or malformed message); throttling, a paused
# account or an unverified sender are worth retrying: the operator may fix them meanwhile
_PERMANENT = frozenset({"MessageRejected", "BadRequestException", "InvalidParameterValue"})


def new_client(region: str, timeout_s: float = 10.0) -> Any:
    """An SES v2 client (:func:`esl_app.notify.aws.new_client`)."""
    return aws.new_client("sesv2", region, timeout_s)


class SesNotifier(aws.AwsNotifier):
    """E-mail through SES (implements ``Notifier``)."""

    name = "ses"
    service = "sesv2"
    channel = "email"
    permanent = _PERMANENT

    def __init__(self, region: str | None = None, *, from_email: str, client: Any = None
                 ) -> None:
        """``client`` overrides the boto3 client (tests inject a moto or stubbed one)."""
        super().__init__(region, client=client)
        self.from_email = from_email

    def send(self, message: Message) -> DeliveryResult:
        """Send one plain-text e-mail."""
        return self._deliver(lambda client: client.send_email(
            FromEmailAddress=self.from_email,
            Destination={"ToAddresses": [message.recipient]},
            Content={"Simple": {
                "Subject": {"Data": message.subject, "Charset": "UTF-8"},
                "Body": {"Text": {"Data": message.body, "Charset": "UTF-8"}},
            }}))
