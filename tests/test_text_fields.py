"""One e-mail check and one request-field check, whoever asks (API, dashboard, config, Lambda)."""

from __future__ import annotations

import pytest
from fakes.api import lambda_modules

from esl_app.scheduling import text
from esl_app.scheduling.text import BadText, field_text, is_email

_, _, confirm_appointment, _ = lambda_modules()

ADDRESSES = [
    ("ann@example.org", True), ("ann.lee+ivr@mail.example.co.uk", True),
    ("desk@sunrise.example", True), ("o'brien@example.ie", True),
    ("anne@müller.example", True),
    ("nope", False), ("ann at example.org", False), ("ann@example", False),
    ("ann@@example.org", False), ("ann@exa mple.org", False), ("ann@example.c", False),
    ("<ann@example.org>", False), ("ann@example.org, bob@example.org", False),
    ('"ann"@example.org', False), ("ann;x@example.org", False), ("ann@example.org\n", False),
    ("a" * 65 + "@example.org", False), ("ann@" + "d" * 250 + ".org", False),
]


@pytest.mark.parametrize("address, ok", ADDRESSES)
def test_is_email(address, ok):
    assert is_email(address) is ok


def test_the_lambda_checks_e_mail_as_the_api_does():
    # the Lambda bundle cannot import esl_app: its copy must be the same check
    assert confirm_appointment._EMAIL.pattern == text._EMAIL.pattern
    for address, _ok in ADDRESSES:
        lower = address.lower()
        same = (confirm_appointment._EMAIL.fullmatch(lower) is not None
                and len(lower) <= 254)
        assert same is is_email(lower), address


@pytest.mark.parametrize("value, kwargs, reason", [
    ("", {"required": True}, "required"),
    ("  ", {"required": True, "empty": "must not be empty"}, "must not be empty"),
    ("x" * 11, {}, "at most 10 characters"),
    ("Ann\x07", {}, "contains control characters"),
])
def test_field_text_refusals(value, kwargs, reason):
    with pytest.raises(BadText) as caught:
        field_text(value, "name", max_len=10, **kwargs)
    assert caught.value.field == "name" and caught.value.reason == reason


def test_field_text_cleans():
    assert field_text("  Ann\u200b  Lee\n", "name", max_len=10) == "Ann Lee"
    assert field_text("", "name", max_len=10) == ""
