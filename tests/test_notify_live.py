"""Opt-in live test: one real SMS through SNS and one real e-mail through SES.

Run with ``IVR_LIVE_AWS=1 pytest -m aws tests/test_notify_live.py`` and AWS credentials in
the standard chain, plus ``IVR_LIVE_SMS_TO`` (an E.164 number that may receive a text;
SNS sandbox accounts need it verified) and/or ``IVR_LIVE_EMAIL_FROM`` (a verified SES
identity) with ``IVR_LIVE_EMAIL_TO``. Each part is skipped without its settings; never
runs in CI.
"""

from __future__ import annotations

import os

import pytest

from esl_app.notify.base import Message
from esl_app.providers.registry import aws_region

pytestmark = pytest.mark.aws


def _live() -> None:
    if os.environ.get("IVR_LIVE_AWS") != "1":
        pytest.skip("live AWS tests need IVR_LIVE_AWS=1")
    import boto3

    if boto3.Session().get_credentials() is None:
        pytest.skip("no AWS credentials")


def _message(channel: str, to: str) -> Message:
    return Message(id=0, tenant_id="live", channel=channel, recipient=to,
                   subject="ivr live test: appointment confirmed",
                   body="ivr live test: your appointment is booked. Confirmation code: K7M-4Q2.")


def test_sms_through_sns():
    _live()
    to = os.environ.get("IVR_LIVE_SMS_TO")
    if not to:
        pytest.skip("set IVR_LIVE_SMS_TO to an E.164 number")
    from esl_app.notify.sns import SnsNotifier

    result = SnsNotifier(aws_region()).send(_message("sms", to))
    assert result.ok, result.error
    assert result.provider_id


def test_email_through_ses():
    _live()
    sender, to = os.environ.get("IVR_LIVE_EMAIL_FROM"), os.environ.get("IVR_LIVE_EMAIL_TO")
    if not (sender and to):
        pytest.skip("set IVR_LIVE_EMAIL_FROM (a verified SES identity) and IVR_LIVE_EMAIL_TO")
    from esl_app.notify.ses import SesNotifier

    result = SesNotifier(aws_region(), from_email=sender).send(_message("email", to))
    assert result.ok, result.error
    assert result.provider_id
