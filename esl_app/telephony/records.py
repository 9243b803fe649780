"""Call records: the stored form of a call's transcript, and its read-back.

The call engine writes through here only, so the engine does not depend on
the model's column layout and a storage hiccup never fails a call (the
caller is gone by then; we log and move on).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from esl_app.telephony.transcript import Transcript

__all__ = ["get_call", "list_calls", "masked_call", "save_call"]

log = logging.getLogger(__name__)


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


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


def save_call(transcript: Transcript) -> None:
    """Insert or update the call's record (idempotent per call id)."""
    from esl_app.db import write_txn
    from esl_app.db.models import CallRecord

    if not transcript.call_id:
        return
    usage = dict(transcript.usage)
    if transcript.appointment:
        usage["appointment"] = transcript.appointment
    row: dict[str, Any] = {
        "tenant_id": transcript.tenant,
        "did": (transcript.did or "")[:32] or None,
        "caller": (transcript.caller or "")[:32] or None,
        "started_at": _naive_utc(transcript.started_at),
        "ended_at": _naive_utc(transcript.ended_at),
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
        updated = (CallRecord.update(**row)
                   .where(CallRecord.call_id == transcript.call_id).execute())
        if not updated:
            CallRecord.create(call_id=transcript.call_id, **row)


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
    from esl_app.logmask import mask_text
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
        return _to_dict(rec, turns=True) if rec is not None else None
