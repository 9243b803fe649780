"""``ivr reminders`` and ``ivr dnc``: the operator's view of reminder calls."""

from __future__ import annotations

import json

import click

__all__ = ["dnc", "reminders"]


def _tenants(ctx: click.Context):
    from esl_app.cli import fail
    from esl_app.config.tenants import ConfigError
    from esl_app.scheduling.provisioning import load_tenant_set

    try:
        return load_tenant_set()
    except ConfigError as exc:
        fail(str(exc))


@click.group()
def reminders() -> None:
    """Reminder calls before appointments: list, run, pause, resume."""


@reminders.command("list")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--limit", type=click.IntRange(1, 10000), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def reminders_list(ctx: click.Context, tenant_id: str, limit: int, as_json: bool) -> None:
    """Planned, in-progress and finished reminders, newest first (clinic time)."""
    from esl_app.cli import open_tenant, print_table
    from esl_app.reminders.store import list_reminders, paused

    open_tenant(ctx, tenant_id)
    rows = list_reminders(tenant_id, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if tenant_id in paused():
        click.echo(f"reminder calls of {tenant_id} are paused")
    print_table(rows, ["id", "code", "appointment", "hours_before", "next", "state",
                        "attempts", "outcome"])


@reminders.command("run-once")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant.")
@click.option("--dry-run", is_flag=True, help="Print who would be called; change nothing.")
@click.option("--bot", default="127.0.0.1:8084", show_default=True,
              help="The bot's ESL address FreeSWITCH sends answered calls to.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def reminders_run_once(ctx: click.Context, tenant_id: str | None, dry_run: bool, bot: str,
                       as_json: bool) -> None:
    """Plan and place the reminder calls due now (FreeSWITCH: FS_ESL_HOST/PORT/PASSWORD)."""
    from esl_app.cli import fail, open_db, open_tenant, print_table
    from esl_app.config.settings import parse_hostport
    from esl_app.reminders.dialer import Dialer
    from esl_app.reminders.scheduler import ReminderScheduler
    from esl_app.telephony.records import worker_tag

    if tenant_id:
        open_tenant(ctx, tenant_id)
    else:
        open_db(ctx)
    try:
        address = parse_hostport(bot)
    except ValueError:
        fail(f"--bot must look like HOST:PORT, got '{bot}'")
    tset = _tenants(ctx)
    sched = ReminderScheduler(lambda: tset, Dialer(address),
                              f"cli:{worker_tag()}")
    rows = sched.run_once(tenant_id=tenant_id, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if dry_run:
        print_table(rows, ["tenant", "code", "appointment", "hours_before", "phone",
                            "would_call", "why_not"])
        return
    print_table(rows, ["id", "tenant", "code", "attempt", "result", "outcome"])
    click.echo(f"{len(rows)} reminder call(s) placed")


@reminders.command("pause")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.pass_context
def reminders_pause(ctx: click.Context, tenant_id: str) -> None:
    """Stop placing the tenant's reminder calls (planned ones wait)."""
    from esl_app.cli import open_tenant
    from esl_app.reminders.store import pause

    open_tenant(ctx, tenant_id)
    pause(tenant_id)
    click.echo(f"reminder calls of {tenant_id} paused")


@reminders.command("resume")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.pass_context
def reminders_resume(ctx: click.Context, tenant_id: str) -> None:
    """Place the tenant's reminder calls again."""
    from esl_app.cli import open_tenant
    from esl_app.reminders.store import resume

    open_tenant(ctx, tenant_id)
    resume(tenant_id)
    click.echo(f"reminder calls of {tenant_id} resumed")


@click.group()
def dnc() -> None:
    """The do-not-call list: numbers a clinic never calls with reminders."""


@dnc.command("add")
@click.argument("number")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.pass_context
def dnc_add(ctx: click.Context, number: str, tenant_id: str) -> None:
    """Never call NUMBER again (planned reminders to it are skipped)."""
    from esl_app.cli import fail, open_tenant
    from esl_app.reminders.store import add_do_not_call

    open_tenant(ctx, tenant_id)
    try:
        added = add_do_not_call(tenant_id, number, source="cli")
    except ValueError:
        fail(f"'{number}' is not a phone number")
    click.echo("added" if added else "already on the list")


@dnc.command("remove")
@click.argument("number")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.pass_context
def dnc_remove(ctx: click.Context, number: str, tenant_id: str) -> None:
    """Allow reminder calls to NUMBER again."""
    from esl_app.cli import fail, open_tenant
    from esl_app.reminders.store import remove_do_not_call

    open_tenant(ctx, tenant_id)
    if not remove_do_not_call(tenant_id, number):
        fail(f"'{number}' is not on {tenant_id}'s do-not-call list")
    click.echo("removed")


@dnc.command("list")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def dnc_list(ctx: click.Context, tenant_id: str, as_json: bool) -> None:
    """The tenant's do-not-call numbers (this is the clinic's own tool)."""
    from esl_app.cli import open_tenant, print_rows
    from esl_app.reminders.store import list_do_not_call

    open_tenant(ctx, tenant_id)
    rows = list_do_not_call(tenant_id)
    print_rows(rows, ["phone", "source", "added"], as_json=as_json)
