"""Amazon SNS as the SMS provider (``notifications.sms: sns``).

``sns.publish(PhoneNumber=…, Message=…)`` with the message type ``Transactional`` (SNS
delivers those with priority and to numbers on do-not-disturb lists, which is right for a
confirmation the patient asked for). Numbers must be E.164: a stored 10-digit number is
taken as North American (``+1``). Credentials and region come from the standard AWS chain;
only error codes are ever recorded.
"""

from __future__ import annotations

import re
from typing import Any

from esl_app.notify.base import DeliveryResult, Message

__all__ = ["SnsNotifier", "e164", "new_client"]

# SNS refuses these for good: retrying the same number and text cannot help
_PERMANENT = {"InvalidParameter", "InvalidParameterValue", "ValidationError",
              "OptedOutException"}


def e164(number: str) -> str | None:
    """``+15550101234`` from ``+1 555 010 1234`` / ``5550101234``; None if it cannot be one."""
    text = (number or "").strip()
    digits = re.sub(r"[^0-9]", "", text)
    if text.startswith("+"):
        return "+" + digits if 8 <= len(digits) <= 15 and digits[0] != "0" else None
    if len(digits) == 10 and digits[0] not in "01":  # North American, without the 1
        return "+1" + digits
    if len(digits) == 11 and digits[0] == "1":
        return "+" + digits
    return None


def new_client(region: str, timeout_s: float = 10.0) -> Any:
    """An SNS client with short timeouts; the sender retries, so the SDK tries twice only."""
    import boto3
    from botocore.config import Config

    return boto3.client("sns", region_name=region,
                        config=Config(read_timeout=timeout_s, connect_timeout=5.0,
                                      retries={"total_max_attempts": 2, "mode": "standard"}))


class SnsNotifier:
    """Text messages through SNS (implements ``Notifier``)."""

    name = "sns"
    channel = "sms"

    def __init__(self, region: str | None = None, *, client: Any = None,
                 sms_type: str = "Transactional") -> None:
        """``client`` overrides the boto3 client (tests inject a moto or stubbed one)."""
        from esl_app.providers.registry import aws_region

        self.region = region or aws_region()
        self._client = client
        self.sms_type = sms_type

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = new_client(self.region)
        return self._client

    def send(self, message: Message) -> DeliveryResult:
        """Publish one SMS; an unusable number is a permanent failure."""
        from botocore.exceptions import BotoCoreError, ClientError

        number = e164(message.recipient)
        if number is None:
            return DeliveryResult(False, error="sns: not an E.164 phone number", permanent=True)
        try:
            answer = self._get_client().publish(
                PhoneNumber=number, Message=message.body,
                MessageAttributes={"AWS.SNS.SMS.SMSType": {
                    "DataType": "String", "StringValue": self.sms_type}})
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "ClientError"))[:60]
            return DeliveryResult(False, error=f"sns: {code}", permanent=code in _PERMANENT)
        except BotoCoreError as exc:  # no connection, timeout, no credentials
            return DeliveryResult(False, error=f"sns: {type(exc).__name__}")
        return DeliveryResult(True, provider_id=str(answer.get("MessageId", "")))
