"""The ``notifications`` key of a tenant: how confirmations reach patients who agreed.

```yaml
notifications:
  sms: outbox                      # outbox (kept locally, nothing sent) | sns
  email: outbox                    # outbox | ses | smtp
  from_email: appointments@sunrise.example   # required for ses and smtp
  region: us-east-1                # SNS/SES region (default: IVR_AWS_REGION, AWS_REGION, us-east-1)
  smtp: {host: mail.sunrise.example, port: 587, starttls: true,
         user_env: SUNRISE_SMTP_USER, password_env: SUNRISE_SMTP_PASSWORD}
  templates:                       # optional: {code} {time} {doctor} {clinic} {address}
    booked: "{clinic}: see you {time} with {doctor}. Code {code}."
```

Why a module of its own: tenants.py stays the one table of keys, and credentials never
sit in the file (only the names of the environment variables holding them).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from esl_app.scheduling.text import is_email

__all__ = [
    "EMAIL_PROVIDERS",
    "MAX_TEMPLATE_CHARS",
    "NOTIFY_EVENTS",
    "SMS_PROVIDERS",
    "TEMPLATE_FIELDS",
    "NotificationConfig",
    "SmtpConfig",
    "notifications_to_yaml",
    "parse_notifications",
    "template_fields",
]

#: The longest confirmation template (characters): filled with the longest clinic, doctor
#: and address names a tenant may have, an SMS stays under SNS's 1600-byte limit.
MAX_TEMPLATE_CHARS = 600
#: The events a patient is told about (the ``templates`` keys).
NOTIFY_EVENTS = ("booked", "cancelled", "rescheduled")
#: The placeholders a template may use.
TEMPLATE_FIELDS = ("code", "time", "doctor", "clinic", "address")
SMS_PROVIDERS = ("outbox", "sns")
EMAIL_PROVIDERS = ("outbox", "ses", "smtp")
_KEYS = {"sms", "email", "from_email", "region", "smtp", "templates"}
_SMTP_KEYS = {"host", "port", "starttls", "user_env", "password_env"}
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,253}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")


@dataclass(frozen=True)
class SmtpConfig:
    """A clinic's own mail server; credentials come from the environment, never the file."""

    host: str
    port: int = 587
    starttls: bool = True
    user_env: str = ""
    password_env: str = ""


@dataclass(frozen=True)
class NotificationConfig:
    """Where each channel's messages go; ``outbox`` keeps them in the outbox table only."""

    sms: str = "outbox"
    email: str = "outbox"
    from_email: str = ""
    region: str = ""
    smtp: SmtpConfig | None = None
    # only the templates the tenant gave; esl_app.notify.templates holds the defaults
    templates: Mapping[str, str] = field(default_factory=dict)

    def provider(self, channel: str) -> str:
        """The provider name configured for ``sms`` or ``email``."""
        return self.sms if channel == "sms" else self.email


def template_fields(text: str) -> list[str]:
    """The placeholder names of a template; ValueError when it is not one.

    Only bare names are allowed (``{code}``): no attribute or index access, conversion or
    format spec, so a template can never reach beyond the values it is given.
    """
    from esl_app.config.tenants import _q

    names: list[str] = []
    allowed = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError:
        raise ValueError("unbalanced braces (write {{ and }} for literal ones)") from None
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if spec or conversion or name not in TEMPLATE_FIELDS:
            shown = "{" + name + ("!" + conversion if conversion else "")
            shown += (":" + spec if spec else "") + "}"
            raise ValueError(f"placeholder {_q(shown)} is not one of {allowed}")
        names.append(name)
    return names


def parse_notifications(raw: Any, where: str) -> NotificationConfig:
    """Validate a tenant's ``notifications`` mapping; absent means everything stays local."""
    from esl_app.config.tenants import MAX_SETTING_CHARS, ConfigError, _q, _text

    if raw is None:
        return NotificationConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: key 'notifications' must be a mapping")
    for key in raw:
        if key not in _KEYS:
            raise ConfigError(f"{where}: key 'notifications.{_q(key)[1:-1]}' is unknown")
    w = f"{where}: key 'notifications"
    sms = raw.get("sms", "outbox")
    if sms not in SMS_PROVIDERS:
        raise ConfigError(f"{w}.sms' must be outbox or sns, not {_q(sms)}")
    email = raw.get("email", "outbox")
    if email not in EMAIL_PROVIDERS:
        raise ConfigError(f"{w}.email' must be outbox, ses or smtp, not {_q(email)}")
    from_email = _text(raw.get("from_email", ""), f"{w}.from_email'", MAX_SETTING_CHARS)
    if from_email and not is_email(from_email):
        raise ConfigError(f"{w}.from_email': {_q(from_email)} is not an e-mail address")
    if email in ("ses", "smtp") and not from_email:
        raise ConfigError(f"{w}.from_email' is required when email is '{email}'")
    region = _text(raw.get("region", ""), f"{w}.region'", 32)
    if region and not _REGION.match(region):
        raise ConfigError(f"{w}.region': {_q(region)} is not an AWS region like us-east-1")
    smtp = _parse_smtp(raw.get("smtp"), w)
    if email == "smtp" and smtp is None:
        raise ConfigError(f"{w}.smtp' is required when email is 'smtp'")
    return NotificationConfig(sms=sms, email=email, from_email=from_email, region=region,
                              smtp=smtp, templates=_parse_templates(raw.get("templates"), w))


def _parse_smtp(raw: Any, w: str) -> SmtpConfig | None:
    from esl_app.config.tenants import ConfigError, _q, _text

    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{w}.smtp' must be a mapping of host, port, starttls, user_env, "
                          "password_env")
    for key in raw:
        if key not in _SMTP_KEYS:
            raise ConfigError(f"{w}.smtp.{_q(key)[1:-1]}' is unknown")
    host = _text(raw.get("host", ""), f"{w}.smtp.host'", 253)
    if not host or not _HOST.match(host):
        raise ConfigError(f"{w}.smtp.host' must be a host name or address")
    starttls = raw.get("starttls", True)
    if not isinstance(starttls, bool):
        raise ConfigError(f"{w}.smtp.starttls' must be true or false")
    names = {}
    for key in ("user_env", "password_env"):
        names[key] = _text(raw.get(key, ""), f"{w}.smtp.{key}'", 128)
        if names[key] and not _ENV.match(names[key]):
            raise ConfigError(f"{w}.smtp.{key}': {_q(names[key])} is not an environment "
                              "variable name")
    if bool(names["user_env"]) != bool(names["password_env"]):
        raise ConfigError(f"{w}.smtp' needs user_env and password_env together")
    port = raw.get("port", 587)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{w}.smtp.port' must be a whole number between 1 and 65535")
    return SmtpConfig(host=host, port=port, starttls=starttls, **names)


def _parse_templates(raw: Any, w: str) -> dict[str, str]:
    from esl_app.config.tenants import ConfigError, _q, _text

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{w}.templates' must be a mapping of booked, cancelled, "
                          "rescheduled")
    out: dict[str, str] = {}
    for event, text in raw.items():
        if event not in NOTIFY_EVENTS:
            raise ConfigError(f"{w}.templates.{_q(event)[1:-1]}' is unknown (booked, "
                              "cancelled, rescheduled)")
        text = _text(text, f"{w}.templates.{event}'", MAX_TEMPLATE_CHARS)
        if not text:
            raise ConfigError(f"{w}.templates.{event}' must not be empty")
        try:
            template_fields(text)
        except ValueError as exc:
            raise ConfigError(f"{w}.templates.{event}': {exc}") from None
        out[event] = text
    return out


def notifications_to_yaml(config: NotificationConfig) -> dict[str, Any]:
    """The configuration in tenants.yaml form (``ivr tenants export``), defaults left out."""
    out: dict[str, Any] = {"sms": config.sms, "email": config.email}
    if config.from_email:
        out["from_email"] = config.from_email
    if config.region:
        out["region"] = config.region
    if config.smtp is not None:
        smtp: dict[str, Any] = {"host": config.smtp.host, "port": config.smtp.port,
                                "starttls": config.smtp.starttls}
        if config.smtp.user_env:
            smtp["user_env"] = config.smtp.user_env
            smtp["password_env"] = config.smtp.password_env
        out["smtp"] = smtp
    if config.templates:
        out["templates"] = dict(config.templates)
    return out
