"""``ivr outbox``: the confirmations queued, kept or sent, and a manual delivery round."""

from __future__ import annotations

import json

import click

from esl_app.cli import open_db, print_table, require_tenant
from esl_app.notify.outbox import STATUSES

__all__ = ["outbox"]


@click.group()
def outbox() -> None:
    """Confirmations by SMS and e-mail: list them, deliver the due ones."""


@outbox.command("list")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant's messages.")
@click.option("--status", type=click.Choice(STATUSES), default=None,
              help="Only messages in this state.")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--reveal", is_flag=True,
              help="Show whole numbers and addresses (written to the audit log).")
@click.option("--json", "as_json", is_flag=True, help="JSON output (with subject and text).")
@click.pass_context
def outbox_list(ctx: click.Context, tenant_id: str | None, status: str | None, limit: int,
                reveal: bool, as_json: bool) -> None:
    """Newest first: where each message goes and how delivering it went.

    Recipients are masked unless ``--reveal`` asks for them; a reveal is recorded in the
    audit log of each tenant whose messages were shown.
    """
    from esl_app.notify.outbox import list_messages
    from esl_app.support.logmask import mask_text

    open_db(ctx)
    if tenant_id:
        require_tenant(tenant_id)
    rows = [m.to_dict() for m in list_messages(tenant_id, status=status, limit=limit)]
    if reveal and rows:
        from esl_app.db import write_txn
        from esl_app.scheduling.audit import record

        with write_txn():
            for tid in sorted({r["tenant"] for r in rows}):
                record(tid, "cli", "reveal", "outbox", "",
                       count=sum(1 for r in rows if r["tenant"] == tid))
    for r in rows:
        r["to"] = r.pop("recipient") if reveal else mask_text(r.pop("recipient"))
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for r in rows:
        r["when"] = r["sent_at"] or r["next_attempt_at"] or ""
    print_table(rows, ["id", "created_at", "tenant", "code", "event", "channel", "to",
                        "provider", "status", "attempts", "when", "last_error"])


@outbox.command("send-once")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True,
              help="Messages to deliver at most.")
@click.pass_context
def outbox_send_once(ctx: click.Context, limit: int) -> None:
    """Deliver the messages due now (as ivr serve does every few seconds)."""
    from esl_app.notify.sender import Sender

    open_db(ctx)
    report = Sender(batch=limit).deliver_due()
    click.echo(f"sent {report.sent}, {report.retry} to retry, {report.failed} failed")
