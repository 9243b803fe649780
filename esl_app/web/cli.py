"""``ivr users add|remove|list``: who may sign in to the dashboard (``/ui/``).

Passwords never appear on a command line (where ``ps`` and shell history would keep
them): they are typed at a prompt, twice, or read as one line from stdin with
``--password-stdin`` (scripts: ``printf '%s' "$PW" | ivr users add …``).
"""

from __future__ import annotations

import sys

import click

__all__ = ["users"]


@click.group()
def users() -> None:
    """Dashboard users: clinic staff, and operators who see every clinic."""


def _errors() -> tuple[type[Exception], ...]:
    from esl_app.scheduling.errors import SchedulingError

    return (SchedulingError,)


@users.command("add")
@click.argument("username")
@click.option("--tenant", "tenant_id", required=True, help="The clinic the user belongs to.")
@click.option("--operator", is_flag=True,
              help="An operator: every clinic and the live page, not only --tenant.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password as one line from stdin instead of prompting.")
@click.pass_context
def users_add(ctx: click.Context, username: str, tenant_id: str, operator: bool,
              password_stdin: bool) -> None:
    """Add a user who signs in with USERNAME and a password (at least 10 characters)."""
    from esl_app.cli import fail, open_tenant
    from esl_app.web import auth

    open_tenant(ctx, tenant_id)
    try:
        name = auth.normalize_username(username)
    except _errors() as exc:
        fail(str(exc))
    if password_stdin:
        line = sys.stdin.readline(auth.MAX_PASSWORD + 2)
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                err=True)
    try:
        user = auth.add_user(tenant_id, name, password, operator=operator)
    except _errors() as exc:
        fail(str(exc))
    from esl_app.db import write_txn
    from esl_app.scheduling.audit import record

    with write_txn():
        record(tenant_id, "cli", "create", "user", user.username, role=user.role)
    click.echo(f"added {user.role} {user.username} to {tenant_id}")


@users.command("remove")
@click.argument("username")
@click.option("--tenant", "tenant_id", required=True, help="The clinic the user belongs to.")
@click.pass_context
def users_remove(ctx: click.Context, username: str, tenant_id: str) -> None:
    """Remove a user; their open sessions end at once."""
    from esl_app.cli import fail, open_tenant
    from esl_app.web import auth

    open_tenant(ctx, tenant_id)
    try:
        auth.remove_user(tenant_id, username)
    except _errors() as exc:
        fail(str(exc))
    from esl_app.db import write_txn
    from esl_app.scheduling.audit import record

    name = username.strip().lower()
    with write_txn():
        record(tenant_id, "cli", "remove", "user", name)
    click.echo(f"removed {name} from {tenant_id}")


@users.command("list")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def users_list(ctx: click.Context, tenant_id: str, as_json: bool) -> None:
    """The clinic's users and their roles."""
    from esl_app.cli import open_tenant, print_rows
    from esl_app.web import auth

    open_tenant(ctx, tenant_id)
    rows = auth.list_users(tenant_id)
    print_rows(rows, ["username", "role", "created"], as_json=as_json)
