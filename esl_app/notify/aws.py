"""What the AWS notifiers (SNS for texts, SES for e-mail) share.

The boto3 client (short timeouts; the outbox sender retries, so the SDK tries twice
only), created on first use in the region given or :func:`aws_region`'s, and the one
mapping of SDK errors to a :class:`DeliveryResult` that records only the error code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from esl_app.notify.base import DeliveryResult

__all__ = ["AwsNotifier", "new_client"]


def new_client(service: str, region: str, timeout_s: float = 10.0) -> Any:
    """A boto3 client for ``service`` with short timeouts and two attempts."""
    import boto3
    from botocore.config import Config

    return boto3.client(service, region_name=region,
                        config=Config(read_timeout=timeout_s, connect_timeout=5.0,
                                      retries={"total_max_attempts": 2, "mode": "standard"}))


class AwsNotifier:
    """Base of the AWS notifiers: ``service`` is the boto3 name, ``name`` the error prefix."""

    name = "aws"
    service = ""
    #: error codes the service gives for good: retrying the same message cannot help
    permanent: frozenset[str] = frozenset()

    def __init__(self, region: str | None = None, *, client: Any = None) -> None:
        """``client`` overrides the boto3 client (tests inject a moto or stubbed one)."""
        from esl_app.providers.registry import aws_region

        self.region = region or aws_region()
        self._client = client

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = new_client(self.service, self.region)
        return self._client

    def _deliver(self, call: Callable[[Any], dict[str, Any]]) -> DeliveryResult:
        """``call(client)`` as a delivery result; only the SDK's error code is kept."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = call(self._get_client())
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "ClientError"))[:60]
            return DeliveryResult(False, error=f"{self.name}: {code}",
                                  permanent=code in self.permanent)
        except BotoCoreError as exc:  # no connection, timeout, no credentials
            return DeliveryResult(False, error=f"{self.name}: {type(exc).__name__}")
        return DeliveryResult(True, provider_id=str(answer.get("MessageId", "")))
