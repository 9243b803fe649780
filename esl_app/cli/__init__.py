"""The ``ivr`` command: provisioning, serving, simulating, operating.

Subcommand groups live in their own modules and are imported lazily (so
``ivr tenants list`` does not load the call engine). Every error ends with one line
on stderr, ``error: …`` naming the thing at fault, and one exit code per kind:

- 1 (:data:`EXIT_INPUT`): refused or bad input: an unknown tenant or code, a bad value,
  a malformed tenants.yaml, a missing file or database, a failed load test;
- 2 (:data:`EXIT_USAGE`): click's usage error (unknown option, missing argument);
- 3 (:data:`EXIT_UNAVAILABLE`): something needed cannot be reached or used: the database
  server, a bot (``--server``), a listen address already in use.

A closed output pipe (``ivr simulate … | head``) ends the command quietly (exit 1, click's
convention; the call is hung up first).
"""

from __future__ import annotations

import importlib
import json
import sys
from datetime import date
from typing import Any, NoReturn

import click

from esl_app.config.settings import DEFAULT_DATABASE_URL, DEFAULT_TENANTS
from esl_app.config.tenants import ConfigError, load_tenants

__all__ = [
    "EXIT_INPUT",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "cli",
    "fail",
    "open_db",
    "open_tenant",
    "require_tenant",
]

# libraries whose DEBUG lines hold request bodies (personal data): capped at INFO
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "awscrt",
                   "amazon_transcribe", "websockets", "hpack")

# loggers whose INFO lines an operator needs without -v: a tenant reload (its counts)
ALWAYS_INFO = ("esl_app.telephony.server.reload",)

EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

# name → "module:attribute" of commands implemented elsewhere (lazy).
LAZY_COMMANDS: dict[str, str] = {
    "serve": "esl_app.cli.calls:serve",
    "simulate": "esl_app.cli.calls:simulate",
    "demo": "esl_app.cli.calls:demo",
    "calls": "esl_app.cli.calls:calls",
    "loadtest": "esl_app.sim.loadtest:loadtest",
    "dialplan": "esl_app.config.dialplan:dialplan",
    "outbox": "esl_app.notify.cli:outbox",
    "emulator": "esl_app.sim.emulator.cli:emulator",
    "reminders": "esl_app.reminders.cli:reminders",
    "dnc": "esl_app.reminders.cli:dnc",
    "users": "esl_app.web.cli:users",
}


def fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    """Print one clear line on stderr and exit non-zero (codes: see the module docstring)."""
    first = " ".join(str(message).split("\n")[0].split()) if message else "failed"
    click.echo(f"error: {first}", err=True)
    sys.exit(code)


class LazyGroup(click.Group):
    """A click group that imports subcommands only when they are used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module, attr = LAZY_COMMANDS[cmd_name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)


def _version() -> str:
    from esl_app import __version__

    return __version__


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "-V", "--version", prog_name="ivr",
                      message="%(prog)s %(version)s")
@click.option("--db", "db_url", envvar="IVR_DATABASE_URL", default=DEFAULT_DATABASE_URL,
              show_default=True, help="Database URL (sqlite:///file.db or postgresql://…).")
@click.option("--tenants", "tenants_path", envvar="IVR_TENANTS", default=DEFAULT_TENANTS,
              show_default=True, help="tenants.yaml path.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, db_url: str, tenants_path: str, verbose: int) -> None:
    """Multi-tenant AI voice appointment bot for clinics (ivr)."""
    import logging

    from esl_app.support.logmask import install

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install()  # phones, e-mails and SQL parameters are kept out of every record
    # The AWS SDKs' debug lines carry request bodies (a caller's words to Bedrock, audio
    # to Transcribe): never below INFO, whatever -v says.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    for name in ALWAYS_INFO:
        logging.getLogger(name).setLevel(min(level, logging.INFO))
    ctx.ensure_object(dict)
    ctx.obj["db_url"] = db_url
    ctx.obj["tenants_path"] = tenants_path


def open_db(ctx: click.Context, *, new: bool = False) -> None:
    """Open the database named by ``--db`` / IVR_DATABASE_URL or exit with a clear error.

    Only ``ivr db init`` passes ``new``: every other command refuses a database that does
    not exist, so a mistyped path is an error rather than a fresh empty database.
    """
    from esl_app.db import DatabaseError, DatabaseUnavailable, init_db

    try:
        init_db(ctx.find_root().obj["db_url"], must_exist=not new, make_dirs=False)
    except DatabaseUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except DatabaseError as exc:
        fail(str(exc))


def require_tenant(tenant_id: str) -> None:
    """Refuse an unknown tenant id (the database must be open).

    Every command taking a tenant goes through here, so a typo is an error rather than an
    empty listing (or an audit row written for a tenant that does not exist).
    """
    from esl_app.db import database
    from esl_app.db.models import TenantRow

    with database().connection_context():
        known = TenantRow.select().where(TenantRow.id == tenant_id).exists()
    if not known:
        fail(f"unknown tenant '{tenant_id}'")


def open_tenant(ctx: click.Context, tenant_id: str) -> None:
    """:func:`open_db`, then :func:`require_tenant`."""
    open_db(ctx)
    require_tenant(tenant_id)


def print_rows(rows: list[dict[str, Any]], columns: list[str], *, as_json: bool) -> None:
    """A list command's output: the rows as JSON (every field), or a table of ``columns``."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        print_table(rows, columns)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Columns padded to fit; stored text is escaped, never sent raw to the terminal."""
    from esl_app.scheduling.text import printable

    if not rows:
        click.echo("(none)")
        return
    rows = [{c: printable(r.get(c, "") or "") for c in columns} for r in rows]
    widths = {c: max(len(c), *(len(str(r.get(c, "") or "")) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        click.echo("  ".join(str(r.get(c, "") or "").ljust(widths[c]) for c in columns).rstrip())


def _scheduling_errors():
    from esl_app.scheduling.errors import SchedulingError

    return SchedulingError


# --------------------------------------------------------------------------- db
@cli.group()
def db() -> None:
    """Database schema."""


@db.command("init")
@click.pass_context
def db_init(ctx: click.Context) -> None:
    """Create the database and its tables (idempotent; the only command that creates one)."""
    open_db(ctx, new=True)
    click.echo(f"database ready: {ctx.find_root().obj['db_url']}")


# ---------------------------------------------------------------------- tenants
@cli.group()
def tenants() -> None:
    """Clinics: import, list, show, export, remove, tokens."""


@tenants.command("import")
@click.argument("file", required=False)
@click.option("--force", is_flag=True,
              help="Import even when it takes every DID from a clinic with upcoming "
                   "appointments.")
@click.pass_context
def tenants_import(ctx: click.Context, file: str | None, force: bool) -> None:
    """Upsert the tenants of FILE (default: --tenants) into the database."""
    from esl_app.scheduling.provisioning import import_tenants

    path = file or ctx.find_root().obj["tenants_path"]
    try:
        tset = load_tenants(path)
    except ConfigError as exc:
        fail(str(exc))
    open_db(ctx)
    try:
        report = import_tenants(tset, force=force)
    except (ConfigError, _scheduling_errors()) as exc:
        fail(str(exc))
    for line in report.lines():
        click.echo(line)
    click.echo(f"imported {len(tset)} tenant(s) from {path}: "
               f"{len(report.added)} added, {len(report.updated)} updated, "
               f"{len(report.unchanged)} unchanged")


def _stored_tenants(ctx: click.Context):
    from esl_app.scheduling.provisioning import load_tenant_set

    open_db(ctx)
    try:
        return load_tenant_set()
    except ConfigError as exc:
        fail(str(exc))


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def tenants_list(ctx: click.Context, as_json: bool) -> None:
    """List the tenants stored in the database."""
    rows = [{"id": t.id, "name": t.name, "dids": list(t.dids), "timezone": t.timezone,
             "agent": t.agent, "doctors": len(t.doctors)} for t in _stored_tenants(ctx)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        print_table([{**r, "dids": ",".join(r["dids"])} for r in rows],
                     ["id", "name", "dids", "timezone", "agent", "doctors"])


@tenants.command("show")
@click.argument("tenant_id")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def tenants_show(ctx: click.Context, tenant_id: str, as_json: bool) -> None:
    """Show one tenant's configuration."""
    import yaml

    tenant = _stored_tenants(ctx).get(tenant_id)
    if tenant is None:
        fail(f"unknown tenant '{tenant_id}'")
    if as_json:
        click.echo(json.dumps(tenant.to_dict(), indent=2))
    else:
        click.echo(yaml.safe_dump(tenant.to_dict(), sort_keys=False, allow_unicode=True), nl=False)


@tenants.command("export")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
@click.pass_context
def tenants_export(ctx: click.Context, as_json: bool) -> None:
    """Print every stored tenant as tenants.yaml (importable again as it is)."""
    import yaml

    data = {"tenants": [t.to_dict() for t in _stored_tenants(ctx)]}
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


@tenants.command("remove")
@click.argument("tenant_id")
@click.option("--force", is_flag=True, help="Remove even with upcoming appointments.")
@click.pass_context
def tenants_remove(ctx: click.Context, tenant_id: str, force: bool) -> None:
    """Delete a tenant and its data."""
    from esl_app.scheduling.provisioning import remove_tenant

    open_tenant(ctx, tenant_id)
    try:
        remove_tenant(tenant_id, force=force)
    except _scheduling_errors() as exc:
        fail(str(exc))
    from esl_app.db import database
    from esl_app.scheduling.audit import record

    with database().connection_context():  # the trail outlives the tenant
        record(tenant_id, "cli", "remove", "tenant", tenant_id, force=force)
    click.echo(f"removed tenant {tenant_id}")


@tenants.command("token")
@click.argument("tenant_id")
@click.option("--revoke", is_flag=True, help="Revoke every token of the tenant instead.")
@click.pass_context
def tenants_token(ctx: click.Context, tenant_id: str, revoke: bool) -> None:
    """Issue a new API token (printed once) or revoke the tenant's tokens."""
    from esl_app.scheduling.tokens import issue_token, revoke_tokens

    open_tenant(ctx, tenant_id)
    if revoke:
        click.echo(f"revoked {revoke_tokens(tenant_id)} token(s) of {tenant_id}")
        return
    try:
        token = issue_token(tenant_id)
    except _scheduling_errors() as exc:
        fail(str(exc))
    click.echo(token)
    click.echo("store it now: it is not kept in readable form", err=True)


# ------------------------------------------------------------------------ slots
@cli.group()
def slots() -> None:
    """Bookable slots."""


@slots.command("generate")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--days", type=click.IntRange(1, 800), default=30, show_default=True)
@click.pass_context
def slots_generate(ctx: click.Context, tenant_id: str, days: int) -> None:
    """Create the missing slots from the clinic hours (idempotent)."""
    from esl_app.scheduling.slots import generate_slots

    open_tenant(ctx, tenant_id)
    try:
        created = generate_slots(tenant_id, days)
    except _scheduling_errors() as exc:
        fail(str(exc))
    click.echo(f"created {created} slot(s) for {tenant_id} over {days} day(s)")


# ----------------------------------------------------------------- appointments
@cli.group()
def appointments() -> None:
    """Appointments of a clinic."""


@appointments.command("list")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--date", "day", default=None, help="Only this local day (YYYY-MM-DD).")
@click.option("--all", "include_cancelled", is_flag=True, help="Include cancelled ones.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def appointments_list(ctx: click.Context, tenant_id: str, day: str | None,
                      include_cancelled: bool, as_json: bool) -> None:
    """List appointments (patient names are shown: this is the clinic's own tool)."""
    from esl_app.scheduling.service import list_appointments

    parsed: date | None = None
    if day:
        try:
            parsed = date.fromisoformat(day)
        except ValueError:
            fail(f"--date '{day}' is not YYYY-MM-DD")
    open_tenant(ctx, tenant_id)
    try:
        views = list_appointments(tenant_id, day=parsed, include_cancelled=include_cancelled,
                                  actor="cli")
    except _scheduling_errors() as exc:
        fail(str(exc))
    rows = [v.to_dict() for v in views]
    print_rows(rows, ["confirmation", "start", "doctor", "patient_name", "status"], as_json=as_json)


@appointments.command("cancel")
@click.argument("code")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.pass_context
def appointments_cancel(ctx: click.Context, code: str, tenant_id: str) -> None:
    """Cancel an appointment by its confirmation code."""
    from esl_app.scheduling.service import cancel

    open_tenant(ctx, tenant_id)
    try:
        view = cancel(tenant_id, code, actor="cli", enforce_window=False)
    except _scheduling_errors() as exc:
        fail(str(exc))
    click.echo(f"cancelled {view.confirmation} ({view.start.isoformat()}, {view.doctor})")


# -------------------------------------------------------------------- callbacks
@cli.group()
def callbacks() -> None:
    """Callback tickets left by callers when nobody could take the call."""


@callbacks.command("list")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--all", "show_all", is_flag=True, help="Include tickets already done.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def callbacks_list(ctx: click.Context, tenant_id: str, show_all: bool, as_json: bool) -> None:
    """List open callback tickets (phone numbers shown: this is the clinic's own tool)."""
    from esl_app.scheduling.callbacks import list_tickets

    open_tenant(ctx, tenant_id)
    rows = [t.to_dict() for t in list_tickets(tenant_id, status=None if show_all else "open",
                                              actor="cli")]
    print_rows(rows, ["id", "created_at", "name", "phone", "reason", "status"], as_json=as_json)


@callbacks.command("done")
@click.argument("ticket_id", type=int)
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.pass_context
def callbacks_done(ctx: click.Context, ticket_id: int, tenant_id: str) -> None:
    """Mark a ticket done once the patient has been called back."""
    from esl_app.scheduling.callbacks import mark_done

    open_tenant(ctx, tenant_id)
    try:
        ticket = mark_done(tenant_id, ticket_id, actor="cli")
    except _scheduling_errors() as exc:
        fail(str(exc))
    click.echo(f"callback {ticket.id} is {ticket.status}")


# ------------------------------------------------------------------------ audit
@cli.group()
def audit() -> None:
    """The append-only audit log of appointment reads and changes."""


@audit.command("list")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--code", default=None, help="Only entries about this confirmation code.")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def audit_list(ctx: click.Context, tenant_id: str, code: str | None, limit: int,
               as_json: bool) -> None:
    """Newest entries first."""
    from esl_app.scheduling.audit import list_audit
    from esl_app.scheduling.codes import normalize_code

    open_db(ctx)
    # a removed tenant's trail outlives it (the table is append-only): still readable
    if not list_audit(tenant_id, limit=1):
        require_tenant(tenant_id)
    rows = list_audit(tenant_id, limit=limit,
                      entity_id=(normalize_code(code) or code) if code else None)
    print_rows(rows, ["id", "at", "actor", "action", "entity", "entity_id"], as_json=as_json)


# ------------------------------------------------------------------ maintenance
@cli.group()
def maintenance() -> None:
    """Housekeeping."""


@maintenance.command("purge")
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@click.pass_context
def maintenance_purge(ctx: click.Context, dry_run: bool) -> None:
    """Remove call records and closed tickets past each tenant's retention period."""
    from esl_app.scheduling.retention import purge

    open_db(ctx)
    report = purge(dry_run=dry_run, actor="cli")
    verb = "would remove" if dry_run else "removed"
    for tenant_id in sorted(report.calls):
        click.echo(f"{tenant_id}: {verb} {report.calls[tenant_id]} call record(s), "
                   f"{report.callbacks[tenant_id]} callback ticket(s)")
    click.echo(f"{verb} {report.total} row(s) in all")


@maintenance.command("prompts")
@click.option("--dir", "directory", default=None,
              help="The prompt cache  [default: var/prompts under the working directory].")
@click.option("--max-age-days", type=click.FloatRange(min=0), default=None,
              help="Remove prompts unused for longer than this.")
@click.option("--max-mb", type=click.FloatRange(min=0), default=None,
              help="Then remove the least recently used until the rest fit in this.")
def maintenance_prompts(directory: str | None, max_age_days: float | None,
                        max_mb: float | None) -> None:
    """Prune the synthesised-prompt cache (run it from cron; vital when it is on tmpfs)."""
    from pathlib import Path

    from esl_app.providers.tts.cache import DEFAULT_DIR, PromptCache

    path = Path(directory or DEFAULT_DIR)
    if path.exists() and not path.is_dir():
        fail(f"prompt cache '{path}' is not a directory")
    if directory is not None and not path.exists():  # the default one may not exist yet
        fail(f"prompt cache directory '{path}' does not exist")
    cache = PromptCache(path)
    removed = cache.prune(max_bytes=None if max_mb is None else int(max_mb * 1024 * 1024),
                          max_age_s=None if max_age_days is None else max_age_days * 86400)
    left = cache.stats()
    click.echo(f"removed {removed} prompt(s); {left['files']} left, "
               f"{left['bytes'] / 1048576:.1f} MB in {cache.directory}")
