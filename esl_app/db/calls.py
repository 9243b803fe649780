"""A call record's first row: the call as ``in_progress``, written if it is missing.

Written twice on purpose (issue #31): in the background when a call starts
(:func:`esl_app.telephony.records.start_call`), and again inside the transaction of
any booking the call makes (:func:`esl_app.scheduling.service.book`), so that a
booking never points at a call with no record, even when the start write failed
and the process then died. Both are insert-if-missing: whichever comes second,
and the completed record written at the call's end, are never overwritten by it.
Here, below both, because the scheduling layer may not import the call engine.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from typing import Any

from esl_app.db.models import CallRecord, naive_utc

__all__ = ["IN_PROGRESS", "insert_start", "start_row", "worker_tag"]

IN_PROGRESS = "in_progress"


def worker_tag(pid: int | None = None) -> str:
    """``host:pid`` of the process running a call (how a sweep knows whose it was)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def start_row(call_id: str, *, tenant_id: str | None, did: str | None = None,
              caller: str | None = None, started_at: datetime | None = None
              ) -> dict[str, Any]:
    """The record of a call this process runs, as it stands while the call goes on."""
    return {
        "call_id": call_id,
        "tenant_id": tenant_id,
        "did": (did or "")[:32] or None,
        "caller": (caller or "")[:32] or None,
        "started_at": naive_utc(started_at),
        "outcome": IN_PROGRESS,
        "usage": json.dumps({"worker": worker_tag()}),
    }


def insert_start(row: dict[str, Any]) -> None:
    """Insert ``row`` unless the call already has a record (in the caller's transaction)."""
    CallRecord.insert(**row).on_conflict_ignore().execute()
