"""The reminder loop: plan, pick what is due, claim each once, dial it.

Runs inside ``ivr serve`` (worker 0 of each host: with two hosts on one Postgres the
claims keep every reminder to one call) and as ``ivr reminders run-once``. A dial that
reaches the patient is handed to the bot, whose call records the outcome; one that
does not (busy, no answer, FreeSWITCH unreachable) is retried or finished here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from esl_app.config.tenants import TenantSet
from esl_app.reminders import store
from esl_app.reminders.dialer import Dialer, DialResult

__all__ = ["INTERVAL_S", "ReminderScheduler"]

log = logging.getLogger(__name__)

INTERVAL_S = 30.0
MAX_PARALLEL_DIALS = 8


class ReminderScheduler:
    """Plans and places reminder calls; ``dial`` is injectable (the emulator, tests)."""

    def __init__(self, tenants: Callable[[], TenantSet], dialer: Dialer | None,
                 who: str, *, dial: Callable[..., DialResult] | None = None) -> None:
        self.tenants = tenants
        self.dialer = dialer
        self.who = who
        self._dial = dial or (dialer.dial if dialer is not None else None)

    def run_once(self, now: datetime | None = None, *, tenant_id: str | None = None,
                 dry_run: bool = False) -> list[dict[str, Any]]:
        """One round; returns what was (or, with ``dry_run``, would be) dialled.

        A dry run plans nothing and claims nothing: it lists the reminders due now
        and those that planning would add, by their confirmation code and time only.
        """
        import gevent
        from gevent.pool import Pool

        now = now or datetime.now(UTC)
        tset = self.tenants()
        if tenant_id is not None:
            tset = TenantSet(tuple(t for t in tset if t.id == tenant_id), tset.source)
        if dry_run:
            return store.preview(tset, now)
        store.sweep_stale(now)
        store.plan(tset, now)
        report: list[dict[str, Any]] = []
        pool = Pool(MAX_PARALLEL_DIALS)
        for due in store.due_reminders(tset, now):
            tenant = tset.get(due.tenant_id)
            if tenant is None or tenant.reminders is None:
                continue
            if not store.claim(due.id, self.who, now):
                continue  # another worker or host has it
            entry = {"id": due.id, "tenant": due.tenant_id, "code": due.code,
                     "attempt": due.attempts + 1}
            report.append(entry)
            pool.spawn(self._place, due, tenant, entry, now)
        pool.join()
        gevent.sleep(0)
        return report

    def _place(self, due: store.Due, tenant: Any, entry: dict[str, Any],
               now: datetime) -> None:
        if self._dial is None:
            entry["result"] = store.record_attempt(due.id, tenant, "reminder_failed", now=now)
            return
        try:
            result = self._dial(tenant.reminders, number=due.phone, reminder_id=due.id,
                                tenant_id=due.tenant_id, attempt=due.attempts + 1)
        except Exception:  # noqa: BLE001 - one failed dial must not stop the round
            log.exception("reminder %d: dial failed", due.id)
            result = DialResult(False, outcome="reminder_failed", cause="ERROR")
        if result.answered:
            entry["result"] = "answered"
            entry["call_id"] = result.uuid
            return  # the bot's call records the outcome (store.finish)
        # the attempt's own call record (no channel reached the bot to write one)
        call_id = f"reminder-{due.id}-{due.attempts + 1}"
        entry["result"] = store.record_attempt(due.id, tenant, result.outcome, now=now,
                                               call_id=call_id, cause=result.cause)
        entry["outcome"] = result.outcome
        entry["call_id"] = call_id
        # busy / no answer are a patient's doing; anything else the operator should see
        level = logging.WARNING if result.outcome == "reminder_failed" else logging.INFO
        log.log(level, "reminder %d (%s): %s (%s), attempt %d", due.id, due.tenant_id,
                result.outcome, result.cause, due.attempts + 1)

    def run_forever(self, interval: float = INTERVAL_S) -> None:
        """Rounds every ``interval`` seconds until the greenlet is killed; never raises."""
        import gevent

        while True:
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a database hiccup: next round
                log.exception("reminder round failed")
            gevent.sleep(interval)
