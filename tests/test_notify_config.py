"""The tenants.yaml ``notifications`` key: validation, one-line errors, export round trip."""

from __future__ import annotations

import pytest
import yaml

from esl_app.config.notifications import (
    MAX_TEMPLATE_CHARS,
    NotificationConfig,
    SmtpConfig,
    template_fields,
)
from esl_app.config.tenants import ConfigError, parse_tenants

BASE = """
tenants:
  - id: a
    name: A Clinic
    dids: ["1001"]
    timezone: America/New_York
    hours: {mon-fri: "08:00-17:00"}
    doctors: [{id: smith, name: Dr. Smith}]
"""


def tenant_with(notifications: object):
    data = yaml.safe_load(BASE)
    data["tenants"][0]["notifications"] = notifications
    return parse_tenants(yaml.safe_dump(data)).tenants[0]


def error_of(notifications: object) -> str:
    with pytest.raises(ConfigError) as info:
        tenant_with(notifications)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    return message


def test_absent_means_everything_stays_local():
    tenant = parse_tenants(BASE).tenants[0]
    assert tenant.notifications == NotificationConfig()
    assert tenant.notifications.provider("sms") == "outbox"
    assert tenant.notifications.provider("email") == "outbox"
    assert "notifications" not in tenant.to_dict()


def test_full_configuration_and_export_round_trip():
    given = {
        "sms": "sns", "email": "smtp", "from_email": "desk@a.example", "region": "eu-west-1",
        "smtp": {"host": "mail.a.example", "port": 2525, "starttls": False,
                 "user_env": "A_SMTP_USER", "password_env": "A_SMTP_PASSWORD"},
        "templates": {"booked": "{clinic}: {time} with {doctor}, code {code}. {address}",
                      "cancelled": "Cancelled {code}."},
    }
    tenant = tenant_with(given)
    n = tenant.notifications
    assert (n.sms, n.email, n.from_email, n.region) == ("sns", "smtp", "desk@a.example",
                                                        "eu-west-1")
    assert n.smtp == SmtpConfig("mail.a.example", 2525, False, "A_SMTP_USER", "A_SMTP_PASSWORD")
    assert n.templates["cancelled"] == "Cancelled {code}."
    exported = tenant.to_dict()["notifications"]
    assert exported == given
    again = parse_tenants(yaml.safe_dump({"tenants": [tenant.to_dict()]})).tenants[0]
    assert again == tenant


def test_smtp_defaults():
    n = tenant_with({"email": "smtp", "from_email": "x@a.example",
                     "smtp": {"host": "127.0.0.1"}}).notifications
    assert n.smtp == SmtpConfig("127.0.0.1", 587, True, "", "")


@pytest.mark.parametrize(("value", "expected"), [
    ("sns", "key 'notifications' must be a mapping"),
    ({"fax": "yes"}, "key 'notifications.fax' is unknown"),
    ({"sms": "twilio"}, "key 'notifications.sms' must be outbox or sns, not 'twilio'"),
    ({"email": "ses"}, "key 'notifications.from_email' is required when email is 'ses'"),
    ({"email": "smtp", "from_email": "x@a.example"},
     "key 'notifications.smtp' is required when email is 'smtp'"),
    ({"from_email": "not an address"}, "key 'notifications.from_email': 'not an address' is "
                                       "not an e-mail address"),
    ({"region": "mars-1"}, "key 'notifications.region': 'mars-1' is not an AWS region"),
    ({"smtp": {"host": "h", "tls": True}}, "key 'notifications.smtp.tls' is unknown"),
    ({"smtp": {"port": 25}}, "key 'notifications.smtp.host' must be a host name or address"),
    ({"smtp": {"host": "h", "port": 0}}, "key 'notifications.smtp.port' must be a whole "
                                         "number between 1 and 65535"),
    ({"smtp": {"host": "h", "starttls": "yes"}}, "key 'notifications.smtp.starttls' must be "
                                                 "true or false"),
    ({"smtp": {"host": "h", "user_env": "U"}}, "key 'notifications.smtp' needs user_env and "
                                               "password_env together"),
    ({"smtp": {"host": "h", "user_env": "U S", "password_env": "P"}},
     "key 'notifications.smtp.user_env': 'U S' is not an environment variable name"),
    ({"templates": {"reminder": "x"}}, "key 'notifications.templates.reminder' is unknown"),
    ({"templates": {"booked": ""}}, "key 'notifications.templates.booked' must not be empty"),
    ({"templates": {"booked": "{patient}"}},
     "key 'notifications.templates.booked': placeholder '{patient}' is not one of {code}, "
     "{time}, {doctor}, {clinic}, {address}"),
    ({"templates": {"booked": "{code.__class__}"}}, "placeholder '{code.__class__}'"),
    ({"templates": {"booked": "{code!r}"}}, "placeholder '{code!r}'"),
    ({"templates": {"booked": "{time:>99999}"}}, "placeholder '{time:>99999}'"),
    ({"templates": {"booked": "{0}"}}, "placeholder '{0}'"),
    ({"templates": {"booked": "Code {code"}}, "unbalanced braces"),
    ({"templates": {"booked": "x" * (MAX_TEMPLATE_CHARS + 1)}},
     f"is too long: {MAX_TEMPLATE_CHARS + 1} characters (at most {MAX_TEMPLATE_CHARS})"),
    ({"templates": "booked"}, "key 'notifications.templates' must be a mapping"),
])
def test_errors_name_tenant_and_key_on_one_line(value, expected):
    message = error_of(value)
    assert "tenant 'a': key 'notifications" in message, message
    assert expected in message, message


def test_hostile_values_are_quoted_short():
    message = error_of({"sms": "x" * 100_000})
    assert len(message) < 200


def test_literal_braces_and_fields():
    assert template_fields("{{not}} {code} at {time}") == ["code", "time"]
    tenant_with({"templates": {"booked": "Braces {{like this}}: {code}"}})
