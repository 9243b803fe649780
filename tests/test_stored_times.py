"""One conversion to the stored time form (naive UTC): scheduling, reminders, call records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from esl_app.db.models import naive_utc


def test_naive_utc():
    eastern = timezone(timedelta(hours=-5))
    assert naive_utc(datetime(2026, 11, 24, 9, 0, tzinfo=eastern)) == datetime(2026, 11, 24, 14)
    assert naive_utc(datetime(2026, 11, 24, 14, 0)) == datetime(2026, 11, 24, 14)  # already
    before = datetime.now(UTC).replace(tzinfo=None)
    now = naive_utc()
    assert now.tzinfo is None and before <= now <= datetime.now(UTC).replace(tzinfo=None)
