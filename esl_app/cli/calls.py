"""Click commands of the call engine: ``serve``, ``simulate``, ``demo``, ``calls``.

They are plain click command objects; :mod:`esl_app.cli` registers them.
Heavy imports happen inside the commands so ``ivr --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, NoReturn

import click

from esl_app.config.settings import database_url, tenants_path

__all__ = ["calls", "demo", "serve", "simulate"]

log = logging.getLogger(__name__)


def _root(ctx: click.Context) -> dict[str, Any]:
    return (ctx.find_root().obj or {}) if ctx else {}


def _fail(message: str, code: int = 1) -> NoReturn:
    from esl_app.cli import fail

    fail(message, code)


def _hostport(value: str, option: str) -> tuple[str, int]:
    from esl_app.config.settings import parse_hostport

    try:
        return parse_hostport(value)
    except ValueError:
        _fail(f"{option} must look like HOST:PORT, got '{value}'")


def _tenants(ctx: click.Context):
    from esl_app.config.tenants import ConfigError, load_tenants

    path = tenants_path(_root(ctx).get("tenants_path"))
    try:
        return load_tenants(path)
    except ConfigError as exc:
        _fail(str(exc))


def _open_db(ctx: click.Context) -> str:
    from esl_app.cli import open_db

    url = database_url(_root(ctx).get("db_url"))
    ctx.find_root().ensure_object(dict).setdefault("db_url", url)
    open_db(ctx)
    return url


# -- serve ---------------------------------------------------------------------------

@click.command()
@click.option("--esl", "esl_addr", default="127.0.0.1:8084", show_default=True,
              help="Outbound ESL server address (FreeSWITCH's socket app connects here).")
@click.option("--media", "media_addr", default="127.0.0.1:8085", show_default=True,
              help="Audio-fork WebSocket address; worker i listens on the i-th free port "
                   "from here, skipping the ESL and HTTP ports (8085, 8087, 8088, …).")
@click.option("--http", "http_addr", default="127.0.0.1:8086", show_default=True,
              help="Appointments API, /healthz and /metrics.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Worker processes sharing the ports  [default: CPU count].")
@click.option("--max-calls", type=click.IntRange(1, 100000), default=2000, show_default=True,
              help="Concurrent calls per worker.")
@click.option("--drain-timeout", type=float, default=30.0, show_default=True,
              help="Seconds live calls may take to finish on SIGTERM.")
@click.option("--profile", type=click.Choice(["local", "cloud", "cloud-stt"]),
              default=None,
              help="Provider latency profile for load tests  [env IVR_PROFILE; default: "
                   "local].")
@click.option("--profile-seed", type=int, default=None, help="Seed of the latency profile.")
@click.pass_context
def serve(ctx: click.Context, esl_addr: str, media_addr: str, http_addr: str,
          workers: int | None, max_calls: int, drain_timeout: float, profile: str | None,
          profile_seed: int | None) -> None:
    """Run the bot: ESL server, media server and HTTP API (SIGTERM drains, SIGHUP reloads)."""
    from esl_app.cli import EXIT_UNAVAILABLE
    from esl_app.db import DatabaseError, DatabaseUnavailable
    from esl_app.runtime.workers import WorkerConfig, run_workers

    root = _root(ctx)
    cfg = WorkerConfig(
        esl=_hostport(esl_addr, "--esl"), media=_hostport(media_addr, "--media"),
        http=_hostport(http_addr, "--http"), workers=workers or (os.cpu_count() or 1),
        db_url=database_url(root.get("db_url")),
        tenants_path=tenants_path(root.get("tenants_path")),
        max_calls=max_calls, drain_timeout=drain_timeout,
        **({"profile": profile} if profile else {}),
        **({"profile_seed": profile_seed} if profile_seed is not None else {}))
    try:
        code = run_workers(cfg, echo=lambda line: click.echo(line, err=True))
    except (OSError, DatabaseUnavailable) as exc:
        _fail(str(exc), EXIT_UNAVAILABLE)
    except (ValueError, DatabaseError) as exc:
        _fail(str(exc))
    sys.exit(code)


# -- simulate --------------------------------------------------------------------------

@click.command()
@click.option("--did", required=True, help="The number the caller dials.")
@click.option("--caller", default="+15550100100", show_default=True)
@click.option("--say", "says", multiple=True, help="A caller line (repeatable, in order).")
@click.option("--audio", is_flag=True, help="Speak the caller's lines as audio (VAD, STT).")
@click.option("--jsonl", is_flag=True, help="Drive over stdin/stdout, one JSON object a line.")
@click.option("--json", "as_json", is_flag=True, help="Print the transcript as JSON at the end.")
@click.option("--server", default=None, help="HOST:PORT of a running 'ivr serve' (ESL port).")
@click.option("--time-scale", type=float, default=0.25, show_default=True,
              help="Emulated media time factor (1.0 = prompts play in real time).")
@click.pass_context
def simulate(ctx: click.Context, did: str, caller: str, says: tuple[str, ...], audio: bool,
             jsonl: bool, as_json: bool, server: str | None, time_scale: float) -> None:
    """Place one emulated call into the bot (in-process unless --server)."""
    from esl_app.cli import EXIT_UNAVAILABLE
    from esl_app.db import DatabaseError, DatabaseUnavailable
    from esl_app.sim.simulate import (
        SimCall,
        prepare_database,
        run_interactive,
        run_lines,
        start_local_bot,
        stdin_lines,
        transcript_for,
    )

    bot = None
    if server:
        address = _hostport(server, "--server")
    else:
        tenants = _tenants(ctx)
        url = database_url(_root(ctx).get("db_url"))
        try:
            served = prepare_database(url, tenants, must_exist=True, keep_stored=True)
        except DatabaseUnavailable as exc:
            _fail(str(exc), EXIT_UNAVAILABLE)
        except DatabaseError as exc:
            _fail(str(exc))
        if served is not tenants and served.by_did(did) is None:
            click.echo(f"note: no clinic stored in the database answers {did}; the tenants "
                       "file reaches a database with clinics only through "
                       "'ivr tenants import'", err=True)
        tenants = served
        bot = start_local_bot(tenants, audio=audio)
        address = bot.address
    try:
        sim = SimCall(address, did, caller, audio=audio, time_scale=time_scale).start()
    except OSError as exc:
        _fail(f"cannot reach the bot at {address[0]}:{address[1]}: "
              f"{(exc.strerror or str(exc)).lower()}", EXIT_UNAVAILABLE)
    try:
        if jsonl:
            def emit(ev: dict[str, Any]) -> None:
                click.echo(json.dumps(ev))

            run_interactive(sim, says, sys.stdin, emit)
            click.echo(json.dumps({"event": "call_ended", **transcript_for(sim, bot)}))
            return
        interactive = not says and sys.stdin.isatty() and not as_json

        def show(ev: dict[str, Any]) -> None:
            if as_json:
                return
            if ev.get("event") == "bot_said":
                click.echo(f"BOT: {ev.get('text', '')}")
            elif ev.get("event") == "transfer":
                click.echo(f"--- transferred to {ev.get('to')}")
            elif ev.get("event") == "listening" and interactive:
                click.echo("you> ", nl=False)

        if interactive:
            click.echo("Chat with the bot: type what the caller says; #dtmf 1, #silence 6, "
                       "#hangup, or Ctrl-D to hang up.")
            lines: Any = stdin_lines()
        else:
            lines = says
        run_lines(sim, lines, show)
        transcript = transcript_for(sim, bot)
        if as_json:
            click.echo(json.dumps(transcript, indent=2))
        else:
            click.echo(f"--- call ended: {transcript.get('outcome')}"
                       + (f", confirmation {transcript['confirmation']}"
                          if transcript.get("confirmation") else ""))
    finally:
        if bot is not None:
            bot.stop()


# -- demo ------------------------------------------------------------------------------

@click.command()
@click.option("--audio", is_flag=True, help="Run the call through the audio path.")
@click.option("--var-dir", default="var", show_default=True, help="Where the demo database goes.")
@click.option("--time-scale", type=float, default=0.15, show_default=True,
              help="Emulated media time factor (1.0 = real time).")
@click.pass_context
def demo(ctx: click.Context, audio: bool, var_dir: str, time_scale: float) -> None:
    """One realistic booking call from nothing: database, slots, bot, caller, read-back.

    Without a tenants.yaml (none given, none in the working directory) it calls the
    example clinics shipped inside the package, so it runs from anywhere.
    """
    from esl_app.config.tenants import load_tenants
    from esl_app.sim.demo import EXAMPLE_TENANTS, run_demo

    root = ctx.find_root()
    given = (root.get_parameter_source("tenants_path") not in
             (None, click.core.ParameterSource.DEFAULT))
    path = _root(ctx).get("tenants_path") or "tenants.yaml"
    if not given and not os.path.exists(path):
        click.echo(f"clinics    the built-in examples (no {path} here)")
        tenants = load_tenants(EXAMPLE_TENANTS)
    else:
        tenants = _tenants(ctx)
    run_demo(tenants, var_dir=var_dir, audio=audio, time_scale=time_scale, echo=click.echo)


# -- calls -----------------------------------------------------------------------------

@click.group()
def calls() -> None:
    """Call records: what each call said and how it ended."""


@calls.command("list")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant's calls.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def calls_list(ctx: click.Context, tenant_id: str | None, limit: int, as_json: bool) -> None:
    """Most recent calls first."""
    from esl_app.cli import require_tenant
    from esl_app.telephony.records import list_calls
    from esl_app.telephony.transcript import mask_number

    _open_db(ctx)
    if tenant_id is not None:
        require_tenant(tenant_id)
    rows = list_calls(tenant_id, limit=limit)
    for r in rows:  # a listing never shows whole numbers: `calls show --reveal` does
        r["caller"] = mask_number(r["caller"]) if r["caller"] else None
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("(none)")
        return
    click.echo(f"{'CALL':36}  {'TENANT':10}  {'STARTED (UTC)':19}  {'CALLER':14}  "
               f"{'OUTCOME':13}  CONFIRMATION")
    for r in rows:
        started = (r["started_at"] or "")[:19].replace("T", " ")
        click.echo(f"{r['call_id']:36}  {r['tenant'] or '-':10}  {started:19}  "
                   f"{r['caller'] or '-':14}  {r['outcome'] or '-':13}  "
                   f"{r['confirmation'] or ''}".rstrip())


@calls.command("show")
@click.argument("call_id")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--reveal", is_flag=True,
              help="Show the caller's whole number and unmasked transcript (audited).")
@click.pass_context
def calls_show(ctx: click.Context, call_id: str, as_json: bool, reveal: bool) -> None:
    """One call with its transcript (a unique prefix of the id is enough).

    Numbers and e-mail addresses are masked, in the caller field and in what was said,
    unless ``--reveal`` asks for them; a reveal is written to the tenant's audit log.
    """
    from esl_app.scheduling.text import printable
    from esl_app.telephony.records import get_call, masked_call

    _open_db(ctx)
    rec = get_call(call_id)
    if rec is None:
        _fail(f"no call '{call_id}'")
    if reveal:
        if rec.get("tenant"):
            from esl_app.scheduling.audit import record

            record(rec["tenant"], "cli", "reveal", "call", rec["call_id"])
    else:
        rec = masked_call(rec)
    if as_json:
        click.echo(json.dumps(rec, indent=2))
        return
    for key in ("call_id", "tenant", "did", "caller", "started_at", "ended_at", "outcome",
                "confirmation", "appointment", "transfer_to"):
        value = rec.get(key)
        if isinstance(value, dict):
            value = json.dumps(value)
        click.echo(f"{key + ':':14} {printable(value) if value is not None else '-'}")
    told = ", ".join(f"{c['event']} by {c['channel']} {c['status']}"
                     for c in rec.get("confirmations") or [])
    if told:  # the texts / e-mails this call's change queued, and their delivery
        click.echo(f"{'confirmations:':14} {told}")
    usage = (rec.get("usage") or {}).get("usage") or {}
    cost = (rec.get("usage") or {}).get("cost") or {}
    if usage:
        click.echo(f"{'usage:':14} agent {usage.get('agent_provider') or '-'} "
                   f"x{usage.get('agent_invocations', 0)}, "
                   f"tts {usage.get('tts_chars', 0)} chars "
                   f"({usage.get('tts_chars_cached', 0)} cached), "
                   f"stt {usage.get('stt_seconds', 0):.1f} s")
    if cost:
        click.echo(f"{'cost:':14} {cost.get('total', 0):.4f} {cost.get('currency', 'USD')} "
                   f"(stt {cost.get('stt', 0):.4f}, tts {cost.get('tts', 0):.4f}, "
                   f"agent {cost.get('agent', 0):.4f}; estimate, prices from IVR_PRICES)")
    click.echo("turns:")
    for t in rec.get("turns", []):
        flag = " (interrupted)" if t.get("barged_in") else ""
        click.echo(f"  {t['at_ms'] / 1000:7.1f}s  {t['speaker'].upper():6} "
                   f"{printable(t['text'])}{flag}")
