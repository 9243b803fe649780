"""Callback tickets: the message a caller leaves when the human line did not answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esl_app.db import database, write_txn
from esl_app.db.models import CallbackTicket, TenantRow, utcnow
from esl_app.scheduling import audit
from esl_app.scheduling.errors import InvalidRequest, NotFound
from esl_app.scheduling.text import clean_text

__all__ = ["Ticket", "create_ticket", "list_tickets", "mark_done"]


@dataclass(frozen=True)
class Ticket:
    """A callback request as the front desk sees it."""

    id: int
    tenant_id: str
    name: str
    phone: str
    reason: str
    status: str
    created_at: str
    call_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ticket(row: CallbackTicket) -> Ticket:
    return Ticket(row.id, row.tenant_id, row.name, row.phone, row.reason, row.status,
                  row.created_at.isoformat() + "Z", row.call_id)


def create_ticket(tenant_id: str, *, name: str, phone: str, reason: str = "",
                  call_id: str | None = None, actor: str = "system") -> Ticket:
    """Store a callback request; the phone number is required, the rest best effort."""
    digits = "".join(c for c in str(phone or "") if c.isdigit() or c == "+")
    if len(digits.lstrip("+")) < 3:
        raise InvalidRequest("a callback number is required")
    # a caller's own words: cut to length rather than refused (control characters are)
    name = clean_text(name, "name", max_len=1 << 20)[:200]
    reason = clean_text(reason, "reason", max_len=1 << 20)[:2000]
    with write_txn():
        if TenantRow.get_or_none(TenantRow.id == tenant_id) is None:
            raise NotFound(f"unknown tenant '{tenant_id}'")
        row = CallbackTicket.create(tenant=tenant_id, name=name, phone=digits[:32],
                                    reason=reason, call_id=call_id)
        audit.record(tenant_id, actor, "create", "callback", str(row.id))
    return _ticket(row)


def list_tickets(tenant_id: str, *, status: str | None = "open", actor: str = "system"
                 ) -> list[Ticket]:
    """Tickets of a tenant, oldest first."""
    query = CallbackTicket.select().where(CallbackTicket.tenant == tenant_id)
    if status:
        query = query.where(CallbackTicket.status == status)
    with database().connection_context():
        out = [_ticket(r) for r in query.order_by(CallbackTicket.id)]
    with write_txn():
        audit.record(tenant_id, actor, "list", "callback", "", count=len(out))
    return out


def mark_done(tenant_id: str, ticket_id: int, *, actor: str = "system") -> Ticket:
    """Close a ticket once the clinic has called back."""
    with write_txn():
        changed = (CallbackTicket.update(status="done", done_at=utcnow())
                   .where((CallbackTicket.id == ticket_id) & (CallbackTicket.tenant == tenant_id)
                          & (CallbackTicket.status == "open")).execute())
        row = CallbackTicket.get_or_none((CallbackTicket.id == ticket_id)
                                         & (CallbackTicket.tenant == tenant_id))
        if row is None:
            raise NotFound(f"no callback ticket {ticket_id}")
        if changed:
            audit.record(tenant_id, actor, "done", "callback", str(ticket_id))
    return _ticket(row)
