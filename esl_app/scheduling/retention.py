"""Patient-data retention: purge call records, transcripts and tickets past their time.

Each tenant sets ``data.retention_days``. Appointments are the clinic's
calendar and are not purged here; the call records around them (who called,
what was said) are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from esl_app.db import write_txn
from esl_app.db.models import CallbackTicket, CallRecord, utcnow
from esl_app.scheduling import audit
from esl_app.scheduling.provisioning import load_tenant_set
from esl_app.support.bridge import cooperate

__all__ = ["PurgeReport", "purge"]


@dataclass
class PurgeReport:
    """How many rows each tenant lost (or would lose, on a dry run)."""

    calls: dict[str, int] = field(default_factory=dict)
    callbacks: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.calls.values()) + sum(self.callbacks.values())


def purge(*, now: datetime | None = None, dry_run: bool = False, actor: str = "system"
          ) -> PurgeReport:
    """Delete every tenant's call records and closed tickets older than its retention.

    One transaction per tenant, and between two the event loop runs
    (:func:`~esl_app.support.bridge.cooperate`): a worker purges while it takes calls,
    and 50 clinics in one go held its loop for ~80 ms, every call's audio with it.
    """
    now_utc = now or utcnow()
    report = PurgeReport()
    for tenant in load_tenant_set():
        cooperate()
        cutoff = now_utc - timedelta(days=tenant.data.retention_days)
        calls = CallRecord.select().where((CallRecord.tenant_id == tenant.id)
                                          & (CallRecord.started_at < cutoff))
        tickets = CallbackTicket.select().where((CallbackTicket.tenant == tenant.id)
                                                & (CallbackTicket.status == "done")
                                                & (CallbackTicket.created_at < cutoff))
        with write_txn():
            n_calls, n_tickets = calls.count(), tickets.count()
            if not dry_run and (n_calls or n_tickets):
                CallRecord.delete().where(CallRecord.id.in_(calls.select(CallRecord.id))
                                          ).execute()
                CallbackTicket.delete().where(
                    CallbackTicket.id.in_(tickets.select(CallbackTicket.id))).execute()
                audit.record(tenant.id, actor, "purge", "call_record", "",
                             calls=n_calls, callbacks=n_tickets, before=cutoff.isoformat())
        report.calls[tenant.id] = n_calls
        report.callbacks[tenant.id] = n_tickets
    return report
