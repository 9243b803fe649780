"""Append-only audit trail: who read or changed an appointment, from where.

Actors are short strings naming the channel, never a patient:
``cli``, ``api:token``, ``lambda``, ``call:<call id>``, ``system``.
The table is protected by database triggers against UPDATE and DELETE.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from esl_app.db import database
from esl_app.db.models import AuditLog

__all__ = ["list_audit", "record"]


def record(tenant_id: str, actor: str, action: str, entity: str, entity_id: str = "",
           **detail: Any) -> None:
    """Append one entry (inside the caller's transaction when there is one)."""
    AuditLog.create(tenant_id=tenant_id, actor=(actor or "system")[:128], action=action,
                    entity=entity, entity_id=str(entity_id)[:64],
                    detail=json.dumps(detail, default=str, sort_keys=True))


def list_audit(tenant_id: str, *, limit: int = 100, entity_id: str | None = None,
               since: datetime | None = None) -> list[dict[str, Any]]:
    """Newest entries first."""
    query = AuditLog.select().where(AuditLog.tenant_id == tenant_id)
    if entity_id:
        query = query.where(AuditLog.entity_id == entity_id)
    if since:
        query = query.where(AuditLog.at >= since)
    with database().connection_context():
        return [{"id": a.id, "at": a.at.isoformat() + "Z", "actor": a.actor, "action": a.action,
                 "entity": a.entity, "entity_id": a.entity_id, "detail": json.loads(a.detail)}
                for a in query.order_by(AuditLog.id.desc()).limit(limit)]
