"""The outbox table: consent per appointment, enqueueing, listing and retention.

Enqueueing happens inside the booking's own write transaction (the scheduling service
calls :func:`after_change`), so a committed booking always has its confirmation queued and
a rolled-back one never has; a failure to enqueue is logged and swallowed in a savepoint,
because a confirmation must never cost a patient their appointment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from esl_app.config.notifications import NOTIFY_EVENTS, NotificationConfig
from esl_app.config.tenants import Tenant
from esl_app.db import database, write_txn
from esl_app.db.models import NotifyConsent, OutboxMessage, utcnow
from esl_app.notify.templates import render
from esl_app.scheduling.errors import InvalidRequest
from esl_app.support.bridge import cooperate

__all__ = [
    "CONSENTS",
    "STATUSES",
    "OutboxEntry",
    "after_change",
    "config_of",
    "consent_for",
    "enqueue",
    "list_messages",
    "normalize_consent",
    "purge_outbox",
]

log = logging.getLogger(__name__)

#: What a patient may agree to at booking (``notify``).
CONSENTS = ("none", "sms", "email", "both")
#: Delivery states of a message (see :class:`esl_app.db.models.OutboxMessage`).
STATUSES = ("kept", "queued", "sending", "sent", "failed")


def config_of(tenant: Tenant) -> NotificationConfig:
    """The tenant's notification settings (defaults: everything stays in the outbox)."""
    return getattr(tenant, "notifications", None) or NotificationConfig()


def normalize_consent(value: str | None) -> str:
    """``None``/empty → ``none``; anything but none|sms|email|both is refused."""
    if value is None:
        return "none"
    text = value.strip().lower() if isinstance(value, str) else None
    if text == "":
        return "none"
    if text is None or text not in CONSENTS:
        raise InvalidRequest("notify must be none, sms, email or both")
    return text


def consent_for(appointment_id: int) -> str:
    """What the patient of an appointment agreed to (``none`` when nothing)."""
    row = NotifyConsent.get_or_none(NotifyConsent.appointment == appointment_id)
    return row.channels if row is not None else "none"


def enqueue(tenant: Tenant, event: str, consent: str, *, code: str, phone: str | None,
            email: str | None, doctor: str, start: datetime, now: datetime | None = None
            ) -> int:
    """Queue the ``event`` message on each channel agreed to that has an address.

    Call inside the caller's transaction. A channel whose provider is ``outbox`` gets a
    ``kept`` row: it is shown by ``ivr outbox list`` and never sent anywhere.
    """
    if event not in NOTIFY_EVENTS:
        raise ValueError(f"unknown event {event!r}")
    channels: list[tuple[str, str]] = []
    if consent in ("sms", "both") and phone:
        channels.append(("sms", phone))
    if consent in ("email", "both") and email:
        channels.append(("email", email))
    if not channels:
        return 0
    subject, body = render(tenant, event, code=code, doctor=doctor, start=start)
    config = config_of(tenant)
    at = now or utcnow()
    for channel, recipient in channels:
        provider = config.provider(channel)
        OutboxMessage.create(
            tenant=tenant.id, code=code, event=event, channel=channel, provider=provider,
            recipient=recipient, subject=subject if channel == "email" else "", body=body,
            status="kept" if provider == "outbox" else "queued", next_attempt_at=at,
            created_at=at, updated_at=at)
    return len(channels)


def after_change(tenant: Tenant, appointment_id: int, event: str, view: Any, *,
                 consent: str | None = None, now: datetime | None = None) -> int:
    """The scheduling service's hook, inside its write transaction; never raises.

    ``consent`` is given at booking (and stored); cancel and reschedule read it back.
    ``view`` is the :class:`~esl_app.scheduling.service.AppointmentView` after the change.
    """
    db = database()
    try:
        with db.atomic():  # a savepoint: whatever fails here leaves the booking whole
            if consent is not None:
                if consent == "none":
                    return 0
                NotifyConsent.create(appointment=appointment_id, channels=consent)
            else:
                consent = consent_for(appointment_id)
            return enqueue(tenant, event, consent, code=view.confirmation, phone=view.phone,
                           email=view.email, doctor=view.doctor_name, start=view.start,
                           now=now)
    except Exception as exc:  # noqa: BLE001 - a confirmation must never undo a booking
        log.warning("confirmation for %s %s not queued: %s", event, view.confirmation,
                    type(exc).__name__)
        return 0


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox row as ``ivr outbox list`` shows it."""

    id: int
    tenant: str
    code: str
    event: str
    channel: str
    provider: str
    recipient: str
    subject: str
    body: str
    status: str
    attempts: int
    created_at: str
    next_attempt_at: str | None
    sent_at: str | None
    last_error: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def list_messages(tenant_id: str | None = None, *, status: str | None = None,
                  limit: int = 100) -> list[OutboxEntry]:
    """Newest first; every tenant when ``tenant_id`` is None."""
    query = OutboxMessage.select()
    if tenant_id:
        query = query.where(OutboxMessage.tenant == tenant_id)
    if status:
        query = query.where(OutboxMessage.status == status)
    with database().connection_context():
        rows = list(query.order_by(OutboxMessage.id.desc()).limit(limit))
    return [OutboxEntry(
        id=r.id, tenant=r.tenant_id, code=r.code, event=r.event, channel=r.channel,
        provider=r.provider, recipient=r.recipient, subject=r.subject, body=r.body,
        status=r.status, attempts=r.attempts, created_at=_iso(r.created_at) or "",
        next_attempt_at=_iso(r.next_attempt_at) if r.status == "queued" else None,
        sent_at=_iso(r.sent_at), last_error=r.last_error) for r in rows]


def purge_outbox(*, now: datetime | None = None) -> int:
    """Delete finished messages older than each tenant's ``data.retention_days``.

    They hold a patient's number or address; queued ones are kept until they finish.
    One transaction per tenant, the worker's other calls served between two.
    """
    from esl_app.scheduling.provisioning import load_tenant_set

    now_utc = now or utcnow()
    removed = 0
    for tenant in load_tenant_set():
        cooperate()
        cutoff = now_utc - timedelta(days=tenant.data.retention_days)
        with write_txn():
            removed += (OutboxMessage.delete()
                        .where((OutboxMessage.tenant == tenant.id)
                               & OutboxMessage.status.in_(("kept", "sent", "failed"))
                               & (OutboxMessage.created_at < cutoff))
                        .execute())
    return removed
