"""Deployment settings, read once from CDK context and validated into a frozen record.

Defaults live in ``cdk/cdk.json`` (one source of truth); ``cdk … -c key=value`` overrides
them. Values given with ``-c`` arrive as strings, so numbers are parsed here. Nothing
account-specific or secret is ever part of the code: the account comes from the CLI's
credentials and the tokens stay in Secrets Manager.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from aws_cdk import aws_logs as logs

__all__ = ["ConfigError", "IvrDeployConfig", "retention_for_days"]

#: The retention periods CloudWatch Logs accepts, in days.
_RETENTION_BY_DAYS: dict[int, logs.RetentionDays] = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}

_ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
# Secrets Manager names: letters, digits and /_+=.@- (up to 512 characters).
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_MODEL_ID = re.compile(r"^[a-z0-9-]+\.[A-Za-z0-9._:-]+$")


class ConfigError(ValueError):
    """A context value is missing or malformed; the message names the key."""


def retention_for_days(days: int) -> logs.RetentionDays:
    """Map a day count to the CloudWatch enum, rejecting periods CloudWatch refuses."""
    try:
        return _RETENTION_BY_DAYS[days]
    except KeyError:
        allowed = ", ".join(str(d) for d in _RETENTION_BY_DAYS)
        raise ConfigError(f"logRetentionDays: {days} is not one of {allowed}") from None


@dataclass(frozen=True)
class IvrDeployConfig:
    """Everything the two stacks need to know about the target environment."""

    env_name: str
    region: str
    model_id: str
    api_url: str
    tokens_secret: str
    log_retention_days: int
    idle_session_ttl_seconds: int

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> IvrDeployConfig:
        """Build from a context getter such as ``app.node.try_get_context``."""
        cfg = cls(
            env_name=_text(get, "envName"),
            region=_text(get, "region"),
            model_id=_text(get, "modelId"),
            api_url=_text(get, "apiUrl"),
            tokens_secret=_text(get, "tokensSecret"),
            log_retention_days=_integer(get, "logRetentionDays"),
            idle_session_ttl_seconds=_integer(get, "idleSessionTtlSeconds"),
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Fail at synth time, naming the key, rather than half-way through a deploy."""
        if not _ENV_NAME.match(self.env_name):
            raise ConfigError(
                f"envName: {self.env_name!r} must be lower-case letters, digits or '-', "
                "starting with a letter, at most 20 characters"
            )
        if not _REGION.match(self.region):
            raise ConfigError(f"region: {self.region!r} is not an AWS region name")
        if not _MODEL_ID.match(self.model_id):
            raise ConfigError(f"modelId: {self.model_id!r} is not a Bedrock model id")
        url = urlparse(self.api_url)
        # The Lambdas send bearer tokens to this URL: never in clear text.
        if url.scheme != "https" or not url.netloc:
            raise ConfigError(f"apiUrl: {self.api_url!r} must be an https:// URL")
        if not _SECRET_NAME.match(self.tokens_secret):
            raise ConfigError(f"tokensSecret: {self.tokens_secret!r} is not a secret name")
        retention_for_days(self.log_retention_days)
        # Bedrock accepts 60..3600 s; a phone call outlives a short idle timeout.
        if not 60 <= self.idle_session_ttl_seconds <= 3600:
            raise ConfigError(
                f"idleSessionTtlSeconds: {self.idle_session_ttl_seconds} must be 60..3600"
            )

    @property
    def log_retention(self) -> logs.RetentionDays:
        """CloudWatch retention enum for the Lambda log groups."""
        return retention_for_days(self.log_retention_days)


def _text(get: Callable[[str], Any], key: str) -> str:
    value = get(key)
    if value is None or str(value).strip() == "":
        raise ConfigError(f"{key}: missing (set it in cdk/cdk.json or with -c {key}=...)")
    return str(value).strip()


def _integer(get: Callable[[str], Any], key: str) -> int:
    raw = _text(get, key)
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{key}: {raw!r} is not a whole number") from None
