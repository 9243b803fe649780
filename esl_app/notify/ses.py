"""Amazon SES as the e-mail provider (``notifications.email: ses``).

``sesv2.send_email`` with simple (text) content from the tenant's ``from_email``, which
must be a verified SES identity. Credentials and region come from the standard AWS chain;
only error codes are ever recorded.
"""

from __future__ import annotations

from typing import Any

from esl_app.notify.base import DeliveryResult, Message

__all__ = ["SesNotifier", "new_client"]

# SES refuses these for good (a rejected or malformed message); throttling, a paused
# account or an unverified sender are worth retrying: the operator may fix them meanwhile
_PERMANENT = {"MessageRejected", "BadRequestException", "InvalidParameterValue"}


def new_client(region: str, timeout_s: float = 10.0) -> Any:
    """An SES v2 client with short timeouts; the sender retries, so the SDK tries twice only."""
    import boto3
    from botocore.config import Config

    return boto3.client("sesv2", region_name=region,
                        config=Config(read_timeout=timeout_s, connect_timeout=5.0,
                                      retries={"total_max_attempts": 2, "mode": "standard"}))


class SesNotifier:
    """E-mail through SES (implements ``Notifier``)."""

    name = "ses"
    channel = "email"

    def __init__(self, region: str | None = None, *, from_email: str, client: Any = None
                 ) -> None:
        """``client`` overrides the boto3 client (tests inject a moto or stubbed one)."""
        from esl_app.providers.registry import aws_region

        self.region = region or aws_region()
        self.from_email = from_email
        self._client = client

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = new_client(self.region)
        return self._client

    def send(self, message: Message) -> DeliveryResult:
        """Send one plain-text e-mail."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._get_client().send_email(
                FromEmailAddress=self.from_email,
                Destination={"ToAddresses": [message.recipient]},
                Content={"Simple": {
                    "Subject": {"Data": message.subject, "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": message.body, "Charset": "UTF-8"}},
                }})
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "ClientError"))[:60]
            return DeliveryResult(False, error=f"ses: {code}", permanent=code in _PERMANENT)
        except BotoCoreError as exc:  # no connection, timeout, no credentials
            return DeliveryResult(False, error=f"ses: {type(exc).__name__}")
        return DeliveryResult(True, provider_id=str(answer.get("MessageId", "")))
