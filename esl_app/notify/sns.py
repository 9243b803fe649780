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

from esl_app.notify import aws
from esl_app.notify.base import DeliveryResult, Message

__all__ = ["SnsNotifier", "e164", "new_client"]

# SNS refuses these for good: retrying the same number and text cannot help
_PERMANENT = frozenset({"InvalidParameter", "InvalidParameterValue", "ValidationError",
                        "OptedOutException"})


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
    """An SNS client (:func:`esl_app.notify.aws.new_client`)."""
    return aws.new_client("sns", region, timeout_s)


class SnsNotifier(aws.AwsNotifier):
    """Text messages through SNS (implements ``Notifier``)."""

    name = "sns"
    service = "sns"
    channel = "sms"
    permanent = _PERMANENT

    def __init__(self, region: str | None = None, *, client: Any = None,
                 sms_type: str = "Transactional") -> None:
        """``client`` overrides the boto3 client (tests inject a moto or stubbed one)."""
        super().__init__(region, client=client)
        self.sms_type = sms_type

    def send(self, message: Message) -> DeliveryResult:
        """Publish one SMS; an unusable number is a permanent failure."""
        number = e164(message.recipient)
        if number is None:
            return DeliveryResult(False, error="sns: not an E.164 phone number", permanent=True)
        return self._deliver(lambda client: client.publish(
            PhoneNumber=number, Message=message.body,
            MessageAttributes={"AWS.SNS.SMS.SMSType": {
                "DataType": "String", "StringValue": self.sms_type}}))
