"""Delivering the outbox: claim, send, record; retries with exponential backoff.

Exactly-once between senders rests on the database, as bookings do: a message is taken
with a conditional ``UPDATE … SET status = 'sending' WHERE id = ? AND (status = 'queued'
AND next_attempt_at <= now OR status = 'sending' AND lease_until < now)``; of two workers
or hosts racing for it, one changes the row and sends, the other changes nothing and
moves on. The claim is a lease (:data:`LEASE_SECONDS`): a sender that died mid-send leaves
the message to be retried once the lease ends (the one case where a patient could get a
message twice, since nobody can know whether the provider had it). Nothing is sent while
a database transaction is open, so a slow provider never holds SQLite's write lock.

A failed attempt is retried after ``backoff_base × 2^(attempt-1)`` seconds (capped), up to
``max_attempts`` attempts; a provider's permanent refusal (a number SNS rejects, a mailbox
the server refuses) fails at once. Logs carry ids, channels and error codes, never an
address or a text.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from esl_app.config.tenants import Tenant
from esl_app.db import database, write_txn
from esl_app.db.models import OutboxMessage, utcnow
from esl_app.notify.base import DeliveryResult, Message, Notifier
from esl_app.scheduling.errors import NotFound
from esl_app.support.logmask import mask_text

__all__ = [
    "BACKOFF_BASE_SECONDS",
    "BACKOFF_CAP_SECONDS",
    "BATCH",
    "LEASE_SECONDS",
    "MAX_ATTEMPTS",
    "POLL_SECONDS",
    "DeliveryReport",
    "Sender",
    "SenderHandle",
    "backoff_seconds",
    "start_sender",
]

log = logging.getLogger(__name__)

#: Attempts per message before it is ``failed`` (8: the last about an hour after the first).
MAX_ATTEMPTS = 8
#: The first retry's delay; each further one doubles it …
BACKOFF_BASE_SECONDS = 30.0
#: … up to this.
BACKOFF_CAP_SECONDS = 3600.0
#: How long a claim lasts: far longer than one send (SMTP and AWS time out in 10-20 s).
LEASE_SECONDS = 300.0
#: The background sender looks for due messages this often.
POLL_SECONDS = 2.0
#: Messages claimed per round, at most.
BATCH = 20
#: How often the background sender deletes finished messages past retention.
PURGE_EVERY_SECONDS = 24 * 3600.0

NotifierFor = Callable[[Tenant, str], Notifier | None]


class StopSignal(Protocol):
    """A threading.Event or gevent.event.Event."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def backoff_seconds(attempts: int, base: float = BACKOFF_BASE_SECONDS,
                    cap: float = BACKOFF_CAP_SECONDS) -> float:
    """The wait after the ``attempts``-th failed attempt: base, 2×base, 4×base … ≤ cap."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


@dataclass
class DeliveryReport:
    """What one round did."""

    sent: int = 0
    retry: int = 0  # failed, to be tried again later
    failed: int = 0  # gave up (permanent refusal or out of attempts)
    lost: int = 0  # due, but another sender claimed it first

    @property
    def handled(self) -> int:
        return self.sent + self.retry + self.failed


def _default_notifier_for(tenant: Tenant, channel: str) -> Notifier | None:
    from esl_app.notify.registry import notifier_for

    return notifier_for(tenant, channel)


def _clean_error(text: str) -> str:
    """One short line, with any number or address a provider echoed masked."""
    return mask_text(" ".join(str(text).split()))[:200]


class Sender:
    """Delivers due outbox messages; safe to run in several processes and hosts at once."""

    def __init__(self, *, notifier_for: NotifierFor | None = None, owner: str | None = None,
                 max_attempts: int = MAX_ATTEMPTS, backoff_base: float = BACKOFF_BASE_SECONDS,
                 backoff_cap: float = BACKOFF_CAP_SECONDS, lease_seconds: float = LEASE_SECONDS,
                 batch: int = BATCH, clock: Callable[[], datetime] = utcnow) -> None:
        """``notifier_for(tenant, channel)`` picks providers (tests inject fakes)."""
        self.notifier_for = notifier_for or _default_notifier_for
        self.owner = owner or (f"{socket.gethostname()[:60]}:{os.getpid()}:"
                               f"{uuid.uuid4().hex[:8]}")
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.lease = timedelta(seconds=lease_seconds)
        self.batch = batch
        self.clock = clock

    # ------------------------------------------------------------------ claiming
    def _due_ids(self, now: datetime) -> list[int]:
        q = OutboxMessage
        due = (((q.status == "queued") & (q.next_attempt_at <= now))
               | ((q.status == "sending") & (q.lease_until < now)))
        with database().connection_context():
            return [row.id for row in q.select(q.id).where(due)
                    .order_by(q.next_attempt_at, q.id).limit(self.batch)]

    def claim(self, message_id: int, now: datetime) -> OutboxMessage | None:
        """Take one due message for this sender, or None when it is not (or no longer) due."""
        q = OutboxMessage
        with write_txn():
            changed = (q.update(status="sending", claimed_by=self.owner,
                                lease_until=now + self.lease, attempts=q.attempts + 1,
                                updated_at=now)
                       .where((q.id == message_id)
                              & (((q.status == "queued") & (q.next_attempt_at <= now))
                                 | ((q.status == "sending") & (q.lease_until < now))))
                       .execute())
            if changed != 1:
                return None
            return q.get_by_id(message_id)

    def _finish(self, row: OutboxMessage, result: DeliveryResult, now: datetime) -> str:
        """Record the outcome if this sender still holds the claim; returns the new status."""
        q = OutboxMessage
        fields: dict[str, Any] = {"updated_at": now, "lease_until": None, "claimed_by": None}
        if result.ok:
            status = "sent"
            fields.update(sent_at=now, provider_id=result.provider_id[:200], last_error="")
        elif result.permanent or row.attempts >= self.max_attempts:
            status = "failed"
        else:
            status = "queued"
            fields["next_attempt_at"] = now + timedelta(seconds=backoff_seconds(
                row.attempts, self.backoff_base, self.backoff_cap))
        if not result.ok:
            fields["last_error"] = _clean_error(result.error or "failed")
        with write_txn():
            changed = (q.update(status=status, **fields)
                       .where((q.id == row.id) & (q.claimed_by == self.owner)
                              & (q.status == "sending"))
                       .execute())
        if changed != 1:  # the lease ran out and another sender took it over
            log.warning("outbox message %d: claim lost before its outcome was recorded", row.id)
        return status

    # ------------------------------------------------------------------ sending
    def _send(self, row: OutboxMessage) -> DeliveryResult:
        from esl_app.scheduling.service import get_tenant

        try:
            tenant = get_tenant(row.tenant_id)
        except NotFound:
            return DeliveryResult(False, error="the tenant no longer exists", permanent=True)
        try:
            notifier = self.notifier_for(tenant, row.channel)
        except Exception as exc:  # noqa: BLE001 - a missing SDK or bad setting: retry later
            return DeliveryResult(False, error=f"provider unavailable: {exc}")
        if notifier is None:  # the tenant switched this channel to the local outbox
            return DeliveryResult(False, error=f"the tenant's {row.channel} provider is now "
                                               "outbox", permanent=True)
        message = Message(id=row.id, tenant_id=row.tenant_id, channel=row.channel,
                          recipient=row.recipient, subject=row.subject, body=row.body)
        try:
            return notifier.send(message)
        except Exception as exc:  # noqa: BLE001 - a provider bug must not stop the sender
            return DeliveryResult(False, error=f"{notifier.name}: {type(exc).__name__}")

    def deliver_due(self, now: datetime | None = None) -> DeliveryReport:
        """One round: every due message (up to ``batch``) claimed, sent and recorded.

        ``now`` fixes the clock for the whole round (tests); otherwise the real clock is
        read for each step.
        """
        report = DeliveryReport()
        for message_id in self._due_ids(now or self.clock()):
            row = self.claim(message_id, now or self.clock())
            if row is None:
                report.lost += 1
                continue
            if row.attempts > self.max_attempts:  # a sender died mid-send, again and again
                result = DeliveryResult(False, error="gave up: interrupted while sending",
                                        permanent=True)
            else:
                result = self._send(row)
            status = self._finish(row, result, now or self.clock())
            if status == "sent":
                report.sent += 1
            elif status == "failed":
                report.failed += 1
                log.warning("outbox message %d (%s, %s) failed after %d attempt(s): %s",
                            row.id, row.channel, row.provider, row.attempts,
                            _clean_error(result.error))
            else:
                report.retry += 1
                log.info("outbox message %d (%s, %s) attempt %d failed, will retry: %s",
                         row.id, row.channel, row.provider, row.attempts,
                         _clean_error(result.error))
        if report.handled:
            log.info("outbox: %d sent, %d to retry, %d failed", report.sent, report.retry,
                     report.failed)
        return report

    def run(self, stop: StopSignal, poll_seconds: float = POLL_SECONDS) -> None:
        """Deliver until ``stop`` is set (a greenlet's body); never raises."""
        from esl_app.notify.outbox import purge_outbox

        next_purge = time.monotonic() + 60.0
        while not stop.is_set():
            try:
                self.deliver_due()
            except Exception as exc:  # noqa: BLE001 - the database may be away for a while
                log.warning("outbox delivery round failed: %s", _clean_error(
                    f"{type(exc).__name__}: {exc}"))
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + PURGE_EVERY_SECONDS
                try:
                    removed = purge_outbox()
                    if removed:
                        log.info("outbox: removed %d message(s) past retention", removed)
                except Exception as exc:  # noqa: BLE001
                    log.warning("outbox purge failed: %s", type(exc).__name__)
            stop.wait(poll_seconds)


class SenderHandle:
    """A background sender greenlet and the means to stop it between messages."""

    def __init__(self, sender: Sender, greenlet: Any, stop: StopSignal) -> None:
        self.sender = sender
        self.greenlet = greenlet
        self._stop = stop

    def stop(self, timeout: float = 5.0) -> None:
        """Let the message in hand finish (up to ``timeout``), then end the greenlet."""
        self._stop.set()
        self.greenlet.join(timeout)
        if not self.greenlet.dead:
            self.greenlet.kill(block=False)  # its claim's lease lets another sender retry


def start_sender(sender: Sender | None = None, poll_seconds: float = POLL_SECONDS, *,
                 warm: bool = False) -> SenderHandle:
    """Run a :class:`Sender` in a greenlet of the calling process (``ivr serve``).

    ``warm`` builds the stored tenants' providers first, before the caller accepts calls.
    """
    import gevent
    import gevent.event

    if warm:
        from esl_app.notify.registry import warm_notifiers
        from esl_app.scheduling.provisioning import load_tenant_set

        try:
            warm_notifiers(load_tenant_set())
        except Exception as exc:  # noqa: BLE001 - the sender builds them later, as needed
            log.warning("outbox: could not prepare the notifiers: %s", type(exc).__name__)
    sender = sender or Sender()
    stop = gevent.event.Event()
    return SenderHandle(sender, gevent.spawn(sender.run, stop, poll_seconds), stop)
