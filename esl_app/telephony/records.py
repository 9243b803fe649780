"""Call records: the stored form of a call's transcript, and its read-back.

The call engine writes through here only, so the engine does not depend on
the model's column layout and a storage hiccup never fails a call.

A record is written when the call starts (outcome ``in_progress``, with the worker
that runs it) and completed when it ends; a booking the call makes writes the start
row too if it is missing, in the booking's own transaction (:mod:`esl_app.db.calls`),
so a booking's ``call_id`` always finds its call, even when the start write failed and
the process then died: such a record is marked ``interrupted`` by
:func:`sweep_interrupted` once its worker is known to be gone. A completion the
database refused (Postgres down) is kept in memory and retried (:class:`PendingRecords`)
rather than dropped.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from esl_app.db import database_proxy
from esl_app.db.calls import IN_PROGRESS, insert_start, start_row, worker_tag
from esl_app.telephony.transcript import Transcript

__all__ = [
    "IN_PROGRESS",
    "INTERRUPTED",
    "PendingRecords",
    "get_call",
    "list_calls",
    "masked_call",
    "save_call",
    "start_call",
    "sweep_interrupted",
    "worker_tag",
]

INTERRUPTED = "interrupted"
# no call lasts this long (a tenant's max_call_seconds is far less): an older
# in-progress record, on any host, belongs to a process that died
STALE_AFTER = timedelta(hours=12)

log = logging.getLogger(__name__)


def _turns_to_store(transcript: Transcript) -> list[dict[str, Any]]:
    """The turns, or only their timing when the clinic does not keep transcripts."""
    turns = [t.to_dict() for t in transcript.turns]
    keep = True
    if transcript.tenant:
        try:
            from esl_app.scheduling.service import get_tenant

            keep = get_tenant(transcript.tenant).data.store_transcripts
        except Exception:  # noqa: BLE001 - unknown tenant: nothing sensitive to drop
            keep = True
    if not keep:
        for t in turns:
            t["text"] = ""
    return turns


def start_call(transcript: Transcript) -> None:
    """Store the call as ``in_progress`` (a no-op when its record already exists)."""
    from esl_app.db import write_txn

    if not transcript.call_id:
        return
    row = start_row(transcript.call_id, tenant_id=transcript.tenant, did=transcript.did,
                    caller=transcript.caller, started_at=transcript.started_at)
    with write_txn():
        insert_start(row)


def save_call(transcript: Transcript) -> None:
    """Insert or complete the call's record (one upsert: idempotent per call id)."""
    from esl_app.db import write_txn
    from esl_app.db.models import CallRecord, naive_utc

    if not transcript.call_id:
        return
    usage = dict(transcript.usage)
    if transcript.appointment:
        usage["appointment"] = transcript.appointment
    row: dict[str, Any] = {
        "tenant_id": transcript.tenant,
        "did": (transcript.did or "")[:32] or None,
        "caller": (transcript.caller or "")[:32] or None,
        "started_at": naive_utc(transcript.started_at),
        "ended_at": naive_utc(transcript.ended_at) if transcript.ended_at else None,
        "outcome": transcript.outcome,
        "confirmation": transcript.confirmation,
        "transfer_to": transcript.transfer_to,
        "turns": json.dumps(_turns_to_store(transcript)),
        "usage": json.dumps(usage, default=str),
        "emergency": transcript.emergency,
    }
    if hasattr(CallRecord, "appointment"):
        row["appointment"] = json.dumps(transcript.appointment)
    with write_txn():
        (CallRecord.insert(call_id=transcript.call_id, **row)
         .on_conflict(conflict_target=[CallRecord.call_id], update=row).execute())


def sweep_interrupted(*, now: datetime | None = None, alive: Any = None) -> int:
    """Mark ``interrupted`` the in-progress records whose process is gone; how many.

    A record of this host whose worker pid is not running, or any record older than
    :data:`STALE_AFTER`. ``alive(pid)`` defaults to a /proc check; run at every worker
    start (a restarted worker sweeps what its predecessor left).

    Every live call has an in-progress record, so a busy server has thousands: they
    are read outside any transaction, each worker pid is checked once, the event loop
    runs between batches, and each batch of updates is its own short transaction.
    The update still requires ``in_progress``: a call that completed meanwhile keeps
    its outcome.
    """
    from esl_app.db import write_txn
    from esl_app.db.models import CallRecord, naive_utc
    from esl_app.support.bridge import cooperate

    check = alive or _pid_alive
    known: dict[int, bool] = {}
    now_utc = naive_utc(now)
    host = socket.gethostname() + ":"
    dead: list[int] = []
    rows = (CallRecord.select(CallRecord.id, CallRecord.usage, CallRecord.started_at)
            .where(CallRecord.outcome == IN_PROGRESS).tuples())
    for n, (rec_id, usage, started_at) in enumerate(list(rows), 1):
        if not n % _SWEEP_BATCH:
            cooperate()
        try:
            tag = str(json.loads(usage or "{}").get("worker") or "")
        except ValueError:
            tag = ""
        pid = tag[len(host):] if tag.startswith(host) else ""
        stale = started_at is not None and now_utc - started_at > STALE_AFTER
        if not stale and pid.isdigit():
            number = int(pid)
            if number not in known:
                known[number] = bool(check(number))
            stale = not known[number]
        if stale:
            dead.append(rec_id)
    for i in range(0, len(dead), _SWEEP_BATCH):
        cooperate()
        with write_txn():
            (CallRecord.update(outcome=INTERRUPTED)
             .where(CallRecord.id.in_(dead[i:i + _SWEEP_BATCH]),
                    CallRecord.outcome == IN_PROGRESS).execute())
    if dead:
        log.warning("%d call record(s) left by a process that died marked interrupted",
                    len(dead))
    return len(dead)


_SWEEP_BATCH = 500  # records read, or updated in one transaction, between two yields


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs an ivr process.

    A reused pid running something else is not our worker.
    """
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True  # no /proc: alive, but cannot tell whose
    return b"esl_app" in cmdline or b"ivr" in cmdline


class PendingRecords:
    """Call completions the database refused, retried until it takes them.

    Bounded (oldest dropped first, with an ERROR) so that a long outage cannot grow
    the worker without limit; one retry greenlet per process. A record is retried
    only into the database that refused it: once :func:`esl_app.db.init_db` has
    bound another one (a test's fresh database, an operator's CLI pointing
    elsewhere), what was kept for the old one is dropped with a WARNING, never
    written into the new one.
    """

    def __init__(self, save: Any = None, *, limit: int = 10000, interval: float = 5.0
                 ) -> None:
        self._save = save or save_call
        self.limit = limit
        self.interval = interval
        self._queue: collections.OrderedDict[str, tuple[Transcript, Any]] = \
            collections.OrderedDict()
        self._retrier: Any = None
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    def save(self, transcript: Transcript) -> None:
        """Store now, or keep for a retry; never raises."""
        try:
            self._save(transcript)
        except Exception as exc:  # noqa: BLE001 - a hiccup must not lose the record
            self.keep(transcript, exc)

    def keep(self, transcript: Transcript, exc: BaseException) -> None:
        self._queue[transcript.call_id] = (transcript, database_proxy.obj)
        self._queue.move_to_end(transcript.call_id)
        while len(self._queue) > self.limit:
            self._queue.popitem(last=False)
            self.dropped += 1
            log.error("call record retry queue full (%d): oldest record dropped", self.limit)
        log.warning("call record not stored (%s): %d waiting for a retry",
                    type(exc).__name__, len(self._queue))
        self._ensure_retrier()

    def close(self) -> None:
        """Stop retrying and forget what waits (shutdown; a test's end)."""
        retrier, self._retrier = self._retrier, None
        if retrier is not None:
            retrier.kill(block=False)
        self._queue.clear()

    def _ensure_retrier(self) -> None:
        import gevent

        if self._retrier is None or self._retrier.dead:
            self._retrier = gevent.spawn(self._retry_forever)

    def _retry_forever(self) -> None:
        import gevent

        while self._queue:
            gevent.sleep(self.interval)
            self.flush()

    def flush(self) -> int:
        """Try every waiting record once, oldest first; how many were stored."""
        stored = 0
        current = database_proxy.obj
        for call_id in list(self._queue):
            kept = self._queue.get(call_id)
            if kept is None:
                continue
            transcript, db = kept
            if db is not current:
                self._queue.pop(call_id, None)
                self.dropped += 1
                log.warning("call record %s dropped: kept for a database that has been "
                            "replaced since", call_id)
                continue
            try:
                self._save(transcript)
            except Exception:  # noqa: BLE001 - still down: try again later
                break
            self._queue.pop(call_id, None)
            stored += 1
        if stored:
            log.info("stored %d call record(s) after a retry; %d waiting", stored,
                     len(self._queue))
        return stored


def _to_dict(rec: Any, *, turns: bool) -> dict[str, Any]:
    usage = json.loads(rec.usage or "{}")
    out: dict[str, Any] = {
        "call_id": rec.call_id,
        "tenant": rec.tenant_id,
        "did": rec.did,
        "caller": rec.caller,
        "started_at": rec.started_at.replace(tzinfo=UTC).isoformat() if rec.started_at else None,
        "ended_at": rec.ended_at.replace(tzinfo=UTC).isoformat() if rec.ended_at else None,
        "duration_ms": usage.get("duration_ms"),
        "outcome": rec.outcome,
        "confirmation": rec.confirmation,
        "appointment": usage.get("appointment"),
        "transfer_to": rec.transfer_to,
        "emergency": bool(rec.emergency),
    }
    if turns:
        out["turns"] = json.loads(rec.turns or "[]")
        out["usage"] = usage
    return out


def masked_call(rec: dict[str, Any]) -> dict[str, Any]:
    """A copy of :func:`get_call`'s record with numbers and e-mails masked.

    The caller's number and any phone number or e-mail address in the turns: what
    ``calls show`` prints unless asked to reveal them.
    """
    from esl_app.support.logmask import mask_text
    from esl_app.telephony.transcript import mask_number

    out = dict(rec)
    out["caller"] = mask_number(rec["caller"]) if rec.get("caller") else None
    out["turns"] = [{**t, "text": mask_text(t["text"])} if isinstance(t.get("text"), str)
                    else t for t in rec.get("turns") or []]
    return out


def list_calls(tenant_id: str | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
    """Most recent calls first, optionally of one tenant."""
    from esl_app.db import database
    from esl_app.db.models import CallRecord

    with database().connection_context():
        q = CallRecord.select().order_by(CallRecord.started_at.desc(), CallRecord.id.desc())
        if tenant_id:
            q = q.where(CallRecord.tenant_id == tenant_id)
        return [_to_dict(r, turns=False) for r in q.limit(limit)]


def get_call(call_id: str) -> dict[str, Any] | None:
    """One call with its turns, or None (a unique prefix of the id is enough)."""
    from esl_app.db import database
    from esl_app.db.models import CallRecord

    with database().connection_context():
        rec = CallRecord.get_or_none(CallRecord.call_id == call_id)
        if rec is None and len(call_id) >= 4:
            found = list(CallRecord.select().where(CallRecord.call_id.startswith(call_id))
                         .limit(2))
            rec = found[0] if len(found) == 1 else None
        if rec is None:
            return None
        out = _to_dict(rec, turns=True)
        out["confirmations"] = call_confirmations(rec)
        return out


def call_confirmations(rec: Any) -> list[dict[str, Any]]:
    """The texts and e-mails this call's booking, cancellation or move queued.

    Their delivery as the outbox knows it (``kept`` when they stay local, ``queued``,
    ``sending``, ``sent``, ``failed``): the call record shows whether the patient was
    told. Event, channel and status only, never the address or the text.
    """
    from esl_app.db.models import OutboxMessage

    if not rec.confirmation or not rec.tenant_id:
        return []
    q = (OutboxMessage.select().where(
        (OutboxMessage.tenant == rec.tenant_id) & (OutboxMessage.code == rec.confirmation)
        & (OutboxMessage.created_at >= rec.started_at))
        .order_by(OutboxMessage.id))
    if rec.ended_at is not None:
        q = q.where(OutboxMessage.created_at <= rec.ended_at)
    return [{"event": m.event, "channel": m.channel, "provider": m.provider,
             "status": m.status, "attempts": m.attempts,
             "sent_at": m.sent_at.replace(tzinfo=UTC).isoformat() if m.sent_at else None}
            for m in q]
