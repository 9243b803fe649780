#!/usr/bin/env python3
"""ivrctl: day-to-day operation of a live FreeSWITCH running the ivr bot.

Installed with the package as the ``ivrctl`` command; ``scripts/ivrctl.py`` runs from a
checkout too.

Talks to FreeSWITCH's inbound Event Socket (mod_event_socket, default
127.0.0.1:8021) with greenswitch's InboundESL. Every network wait is bounded by
``--timeout``: greenswitch itself waits forever for the auth request and for
replies, and an ops tool that hangs is worse than one that fails.

Exit status: 0 ok, 1 FreeSWITCH refused or a check failed, 2 bad usage,
3 cannot connect or authenticate.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

EXIT_FAILED = 1
EXIT_CONNECT = 3
WELL_KNOWN_PASSWORD = "ClueCon"
TEST_CALLER = "0000000000"
DEFAULT_DIALPLAN_OUT = "/etc/freeswitch/ivr/ivr_public.xml"
# How long test-call polls ``show channels`` when the a-leg does not name its b-leg:
# FreeSWITCH lists new channels there ~150 ms after originate has answered.
LISTING_WAIT = 2.0
# Arguments end up inside one ESL command line: no whitespace, no newlines (a newline
# would smuggle a second command onto the socket).
_UUID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{7,63}$")
_TOKEN = re.compile(r"^[^\s]{1,200}$")
_DID = re.compile(r"^\+?[0-9]{2,15}$")
_CAUSE = re.compile(r"^[A-Z_]{3,40}$")


class OpsError(Exception):
    """A failure to report on one stderr line, with the exit status to use."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class Switch:
    """One authenticated inbound ESL connection with bounded waits."""

    def __init__(self, host: str, port: int, password: str, timeout: float) -> None:
        self.host, self.port, self.password, self.timeout = host, port, password, timeout
        self._esl: Any = None
        self._authed = False

    @property
    def where(self) -> str:
        """``host:port`` for messages."""
        return f"{self.host}:{self.port}"

    def connect(self) -> None:
        """Connect and authenticate, or raise OpsError(EXIT_CONNECT) saying why."""
        import gevent
        from greenswitch.esl import InboundESL, NotConnectedError

        self._esl = esl = InboundESL(self.host, self.port, self.password, timeout=self.timeout)
        timer = gevent.Timeout(self.timeout)
        timer.start()
        try:
            esl.connect()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            if getattr(esl, "sock_file", None) is None:
                what = "did not accept a connection"
            elif esl.connected:
                what = "accepted the connection but did not complete the ESL handshake"
            else:  # greenswitch misses EOF before auth/request and would wait forever
                what = "closed the connection before the ESL handshake, or did not finish it"
            self.close()
            raise OpsError(f"FreeSWITCH at {self.where} {what} within {self.timeout:g}s",
                           EXIT_CONNECT) from None
        except ValueError:
            self.close()
            raise OpsError(f"FreeSWITCH at {self.where} rejected the ESL password (set "
                           "--password or FS_ESL_PASSWORD to event_socket.conf.xml's "
                           "password)", EXIT_CONNECT) from None
        except NotConnectedError as exc:
            self.close()
            detail = str(exc) or "connection closed"
            if "closed" in detail:
                detail = "it closed the connection (refused by its inbound ACL?)"
            raise OpsError(f"cannot use FreeSWITCH event socket at {self.where}: {detail}",
                           EXIT_CONNECT) from None
        except OSError as exc:
            self.close()
            raise OpsError(f"cannot reach FreeSWITCH event socket at {self.where}: "
                           f"{exc.strerror or exc} (is FreeSWITCH running, "
                           "mod_event_socket loaded?)", EXIT_CONNECT) from None
        finally:
            timer.close()
        self._authed = True

    def api(self, command: str, timeout: float | None = None) -> str:
        """Run ``api <command>`` and return the body FreeSWITCH answered with."""
        import gevent
        from greenswitch.esl import NotConnectedError

        wait = timeout or self.timeout
        late = OpsError(f"FreeSWITCH did not answer 'api {command.split()[0]}' within "
                        f"{wait:g}s")
        try:
            with gevent.Timeout(wait, late):
                reply = self._esl.send(f"api {command}")
        except (NotConnectedError, OSError):
            raise OpsError(f"FreeSWITCH at {self.where} closed the connection",
                           EXIT_CONNECT) from None
        return str(getattr(reply, "data", "") or "")

    def close(self) -> None:
        """Say goodbye if possible and release the socket and greenswitch's greenlets."""
        esl, self._esl = self._esl, None
        authed, self._authed = self._authed, False
        if esl is None:
            return
        import gevent

        if authed and getattr(esl, "connected", False):
            with gevent.Timeout(min(self.timeout, 1.0), False):
                try:
                    esl.send("exit")
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
        esl._run = False
        greenlets = [g for g in (getattr(esl, "_receive_events_greenlet", None),
                                 getattr(esl, "_process_events_greenlet", None)) if g]
        # Killed before the file is closed: closing it under a blocked readline() raises.
        gevent.killall(greenlets, block=True, timeout=1.0)
        for name in ("sock_file", "sock"):
            handle = getattr(esl, name, None)
            if handle is not None:
                try:
                    handle.close()
                except OSError:
                    pass


def checked(reply: str, what: str) -> str:
    """FreeSWITCH api replies start with -ERR (or -USAGE) on failure."""
    text = reply.strip()
    if text.startswith(("-ERR", "-USAGE")) or text.endswith("Command not found!"):
        raise OpsError(f"{what}: FreeSWITCH answered {text.splitlines()[0] if text else '?'}")
    return text


def mask(number: str | None) -> str:
    """Caller numbers never leave this tool unmasked."""
    try:
        from esl_app.telephony.transcript import mask_number
    except ImportError:  # running beside a FreeSWITCH without the full package
        n = number or ""
        return ("*" * (len(n) - 2) + n[-2:]) if len(n) > 4 else ("*" * len(n) or "-")
    return mask_number(number)


@contextmanager
def switch(ctx: click.Context) -> Iterator[Switch]:
    """The connection described by the group options, closed on the way out."""
    opts = ctx.find_root().obj
    password = opts["password"]
    if not password:
        click.echo("warning: no ESL password given (--password or FS_ESL_PASSWORD); trying "
                   f"FreeSWITCH's well-known default '{WELL_KNOWN_PASSWORD}', which must be "
                   "changed in event_socket.conf.xml", err=True)
        password = WELL_KNOWN_PASSWORD
    conn = Switch(opts["host"], opts["port"], password, opts["timeout"])
    conn.connect()
    try:
        yield conn
    finally:
        conn.close()


def channels(conn: Switch) -> list[dict[str, Any]]:
    """Rows of ``show channels as json`` (``{"row_count":0}`` has no rows)."""
    text = checked(conn.api("show channels as json"), "show channels")
    try:
        data = json.loads(text)
    except ValueError:
        raise OpsError("show channels: FreeSWITCH answered something that is not JSON") from None
    rows = (data.get("rows") or []) if isinstance(data, dict) else []
    return [r for r in rows if isinstance(r, dict)]


def uuid_var(conn: Switch, uuid: str, name: str) -> str:
    """``uuid_getvar``, with "" for an unset variable (``_undef_``) or a gone channel."""
    if not _UUID.match(uuid):
        return ""
    value = conn.api(f"uuid_getvar {uuid} {name}").strip()
    if not value or value == "_undef_" or value.startswith(("-ERR", "-USAGE")):
        return ""
    return value


def channel_var(conn: Switch, row: dict[str, Any], name: str) -> str:
    """A channel variable, from the row if present, else ``uuid_getvar``."""
    for key in (name, f"variable_{name}"):
        if row.get(key):
            return str(row[key])
    return uuid_var(conn, str(row.get("uuid", "")), name)


def bot_calls(conn: Switch) -> list[dict[str, Any]]:
    """Active calls our dialplan gave to the bot: the channels carrying ``ivr_tenant``."""
    now = time.time()
    out = []
    for row in channels(conn):
        tenant = channel_var(conn, row, "ivr_tenant")
        if not tenant:
            continue
        try:
            duration = max(0, int(now - float(row.get("created_epoch") or now)))
        except ValueError:
            duration = 0
        out.append({
            "uuid": row.get("uuid", ""),
            "tenant": tenant,
            "did": channel_var(conn, row, "ivr_did") or row.get("dest", ""),
            "caller": mask(str(row.get("cid_num") or "")),
            "duration": duration,
            "state": row.get("callstate") or row.get("state") or "",
            "app": row.get("application") or "",
            "app_data": row.get("application_data") or "",
        })
    return out


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(no calls)")
        return
    cells = [[_cell(c, r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(column: str, value: Any) -> str:
    if column == "duration":
        return f"{int(value) // 60}:{int(value) % 60:02d}"
    return str(value)


def _need(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise click.BadParameter(f"'{value}' is not a valid {what}")
    return value


def _run(fn: Any) -> Any:
    """Turn OpsError into one stderr line and the matching exit status."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OpsError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.code)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", envvar="FS_ESL_HOST", default="127.0.0.1", show_default=True,
              help="FreeSWITCH event socket host [env FS_ESL_HOST].")
@click.option("--port", envvar="FS_ESL_PORT", default=8021, type=click.IntRange(1, 65535),
              show_default=True, help="Event socket port [env FS_ESL_PORT].")
@click.option("--password", envvar="FS_ESL_PASSWORD", default=None,
              help="Event socket password [env FS_ESL_PASSWORD].")
@click.option("--timeout", default=5.0, type=click.FloatRange(0.1, 300), show_default=True,
              help="Seconds to wait for FreeSWITCH at each step.")
@click.pass_context
def cli(ctx: click.Context, host: str, port: int, password: str | None,
        timeout: float) -> None:
    """Operate the FreeSWITCH side of ivr over its inbound event socket."""
    ctx.obj = {"host": host, "port": port, "password": password, "timeout": timeout}


@cli.command("calls")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.pass_context
@_run
def calls_cmd(ctx: click.Context, as_json: bool) -> None:
    """Active calls handled by the bot (caller numbers masked)."""
    with switch(ctx) as conn:
        rows = bot_calls(conn)
    if as_json:
        click.echo(json.dumps(rows))
    else:
        _table(rows, ["uuid", "tenant", "did", "caller", "duration", "state", "app"])


@cli.command("hangup")
@click.argument("uuid")
@click.option("--cause", default="NORMAL_CLEARING", show_default=True,
              help="Q.850 hang-up cause name.")
@click.pass_context
@_run
def hangup_cmd(ctx: click.Context, uuid: str, cause: str) -> None:
    """Hang up one call (uuid_kill)."""
    _need(_UUID, uuid, "call UUID")
    _need(_CAUSE, cause, "hang-up cause")
    with switch(ctx) as conn:
        checked(conn.api(f"uuid_kill {uuid} {cause}"), f"hangup {uuid}")
    click.echo(f"hung up {uuid}")


@cli.command("transfer")
@click.argument("uuid")
@click.argument("target")
@click.option("--context", "dp_context", default="default", show_default=True,
              help="Dialplan context TARGET is looked up in.")
@click.pass_context
@_run
def transfer_cmd(ctx: click.Context, uuid: str, target: str, dp_context: str) -> None:
    """Send one call to TARGET, a dialplan extension (uuid_transfer … XML CONTEXT)."""
    _need(_UUID, uuid, "call UUID")
    _need(_TOKEN, target, "transfer target")
    _need(_TOKEN, dp_context, "dialplan context")
    with switch(ctx) as conn:
        checked(conn.api(f"uuid_transfer {uuid} {target} XML {dp_context}"),
                f"transfer {uuid}")
    click.echo(f"transferred {uuid} to {target} in context {dp_context}")


@cli.command("drain")
@click.argument("mode", type=click.Choice(["on", "off", "status"]))
@click.pass_context
@_run
def drain_cmd(ctx: click.Context, mode: str) -> None:
    """Stop (on) or resume (off) sending new calls to the bot; calls in progress finish.

    Sets the global variable ivr_drain, which the rendered dialplan checks for
    every new call. It does not survive a FreeSWITCH restart.
    """
    with switch(ctx) as conn:
        if mode != "status":
            checked(conn.api(f"global_setvar ivr_drain={'true' if mode == 'on' else 'false'}"),
                    f"drain {mode}")
        value = conn.api("global_getvar ivr_drain").strip()
        if value.startswith("-ERR"):  # api_exec's "-ERR no reply": the variable is unset
            value = ""
        active = len(bot_calls(conn))
    on = value.lower() in ("true", "yes", "on", "1")
    click.echo(f"drain: {'on' if on else 'off'} (ivr_drain={value or 'unset'}); "
               f"{active} call{'s' if active != 1 else ''} with the bot")
    if mode != "status" and on != (mode == "on"):
        raise OpsError(f"drain {mode}: FreeSWITCH still reports ivr_drain={value or 'unset'}")


@cli.command("reload")
@click.option("--out", default=lambda: os.environ.get("IVR_DIALPLAN_OUT", DEFAULT_DIALPLAN_OUT),
              show_default=f"$IVR_DIALPLAN_OUT or {DEFAULT_DIALPLAN_OUT}",
              type=click.Path(dir_okay=False), help="Where FreeSWITCH includes the dialplan.")
@click.option("--tenants", "tenants_file",
              default=lambda: os.environ.get("IVR_TENANTS", "tenants.yaml"),
              show_default="$IVR_TENANTS or ./tenants.yaml", type=click.Path(dir_okay=False))
@click.option("--bot", "bots", multiple=True, metavar="HOST:PORT",
              help="Bot ESL address, repeat for failover [127.0.0.1:8084].")
@click.pass_context
@_run
def reload_cmd(ctx: click.Context, out: str, tenants_file: str, bots: tuple[str, ...]) -> None:
    """Re-render the dialplan from tenants.yaml, then reloadxml."""
    from esl_app.config.dialplan import DEFAULT_BOT_ADDRESS, render_dialplan, write_dialplan
    from esl_app.config.tenants import ConfigError, load_tenants

    try:
        text = render_dialplan(load_tenants(tenants_file), list(bots) or [DEFAULT_BOT_ADDRESS])
    except ConfigError as exc:
        raise OpsError(str(exc), 2) from None
    with switch(ctx) as conn:
        try:
            write_dialplan(out, text)
        except OSError as exc:
            raise OpsError(f"cannot write {out}: {exc.strerror or exc}") from None
        reply = checked(conn.api("reloadxml", timeout=max(conn.timeout, 30.0)), "reloadxml")
    click.echo(f"wrote {out}; reloadxml: {reply.splitlines()[0] if reply else '+OK'}")


@cli.command("test-call")
@click.argument("did")
@click.option("--context", "dp_context", default="public", show_default=True,
              help="Context the DID is dialled in (where the rendered dialplan lives).")
@click.option("--wait", default=15, type=click.IntRange(1, 120), show_default=True,
              help="Seconds to wait for the call to be answered.")
@click.pass_context
@_run
def test_call_cmd(ctx: click.Context, did: str, dp_context: str, wait: int) -> None:
    """Call DID through a loopback channel and report who answered.

    Exits 0 only when the bot took the call; the test call is hung up afterwards.
    """
    _need(_DID, did, "DID")
    _need(_TOKEN, dp_context, "dialplan context")
    dial = (f"{{originate_timeout={wait},ignore_early_media=true,ivr_test_call=true,"
            f"origination_caller_id_name=ivrctl,origination_caller_id_number={TEST_CALLER}}}"
            f"loopback/{did}/{dp_context}")
    with switch(ctx) as conn:
        reply = conn.api(f"originate {dial} &park()", timeout=wait + conn.timeout).strip()
        if not reply.startswith("+OK"):
            cause = reply.removeprefix("-ERR").strip() or "no reply"
            hint = {"NO_ROUTE_DESTINATION": " (no extension matches: dialplan rendered and "
                                            "reloaded?)",
                    "NORMAL_TEMPORARY_FAILURE": " (bot unreachable and no human line?)"}
            raise OpsError(f"test call to {did} failed: {cause}{hint.get(cause, '')}")
        a_leg = reply.removeprefix("+OK").strip()
        try:
            call = _test_call_leg(conn, a_leg, did)
        finally:
            if _UUID.match(a_leg):  # mod_loopback hangs up the b-leg with it
                conn.api(f"uuid_kill {a_leg} NORMAL_CLEARING")
    if call is None:
        raise OpsError(f"test call to {did} was answered, but no channel carries ivr_tenant "
                       "(not routed by the ivr dialplan?)")
    if call["app"] == "bridge":
        raise OpsError(f"test call to {did} (tenant {call['tenant']}) went to the human line "
                       f"({call['app_data']}): drain on, or no bot reachable?")
    click.echo(f"ok: {did} answered by the bot; tenant {call['tenant']}, "
               f"ivr_did {call['did'] or '?'}, application {call['app'] or '?'}; "
               "test call hung up")


def _test_call_leg(conn: Switch, a_leg: str, did: str) -> dict[str, str] | None:
    """The test call's loopback b-leg, the one the dialplan routed, if it carries ivr_tenant.

    ``originate`` answers with the a-leg, which only parks. mod_loopback names the other
    leg in ``other_loopback_leg_uuid`` at once, whereas ``show channels`` reads the core's
    SQL table, written asynchronously: it lists neither leg for ~150 ms after originate.
    """
    b_leg = uuid_var(conn, a_leg, "other_loopback_leg_uuid")
    if not _UUID.match(b_leg):
        return _listed_test_call(conn, did)
    tenant = uuid_var(conn, b_leg, "ivr_tenant")
    if not tenant:
        return None
    return {"uuid": b_leg, "tenant": tenant, "did": uuid_var(conn, b_leg, "ivr_did"),
            "app": uuid_var(conn, b_leg, "current_application"),
            "app_data": uuid_var(conn, b_leg, "current_application_data")}


def _listed_test_call(conn: Switch, did: str) -> dict[str, str] | None:
    """Fallback without ``other_loopback_leg_uuid``: poll ``show channels`` for a while.

    Only our test caller's channels to DID count, so a real call to the same number is
    never taken for the test call.
    """
    import gevent

    deadline = time.monotonic() + LISTING_WAIT
    while True:
        for row in channels(conn):
            dest = str(row.get("dest") or "").lstrip("+")
            if str(row.get("cid_num") or "") != TEST_CALLER or dest != did.lstrip("+"):
                continue
            tenant = channel_var(conn, row, "ivr_tenant")
            if tenant:
                return {"uuid": str(row.get("uuid", "")), "tenant": tenant,
                        "did": channel_var(conn, row, "ivr_did") or dest,
                        "app": str(row.get("application") or ""),
                        "app_data": str(row.get("application_data") or "")}
        if time.monotonic() >= deadline:
            return None
        gevent.sleep(0.1)


def _bot_reachable(address: str, timeout: float) -> str | None:
    """None when a TCP connection to the bot's outbound-ESL port opens, else why not."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


@cli.command("health")
@click.option("--bot", "bots", multiple=True, metavar="HOST:PORT",
              help="Bot ESL address to probe, repeatable [127.0.0.1:8084].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.pass_context
@_run
def health_cmd(ctx: click.Context, bots: tuple[str, ...], as_json: bool) -> None:
    """FreeSWITCH status, SIP profiles and gateways, and whether the bot is reachable."""
    checks: list[dict[str, Any]] = []
    with switch(ctx) as conn:
        status = conn.api("status").strip()
        first = status.splitlines()[0] if status else ""
        checks.append({"check": "freeswitch", "ok": first.startswith("UP"), "detail": first})
        sofia = conn.api("sofia status")
        for name, kind, state in _sofia_rows(sofia):
            ok = (state.startswith("RUNNING") if kind == "profile"
                  else state not in ("FAILED", "FAIL_WAIT", "UNREGED", "EXPIRED", "DOWN"))
            checks.append({"check": f"sofia {kind} {name}", "ok": ok, "detail": state})
        if not any(c["check"].startswith("sofia profile") for c in checks):
            checks.append({"check": "sofia", "ok": False,
                           "detail": sofia.strip().splitlines()[0] if sofia.strip()
                           else "no SIP profile"})
    for address in bots or ("127.0.0.1:8084",):
        why = _bot_reachable(address, ctx.find_root().obj["timeout"])
        checks.append({"check": f"bot {address}", "ok": why is None,
                       "detail": "reachable" if why is None else why})
    healthy = all(c["ok"] for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": healthy, "checks": checks}))
    else:
        for c in checks:
            click.echo(f"{'OK  ' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}")
    if not healthy:
        sys.exit(EXIT_FAILED)


def _sofia_rows(text: str) -> list[tuple[str, str, str]]:
    """(name, profile|gateway|alias, state) from ``sofia status``'s tab-separated table."""
    rows = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) >= 4 and parts[1] in ("profile", "gateway", "alias"):
            rows.append((parts[0], parts[1], parts[-1]))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Entry point: gevent is patched here, before anything opens a socket."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    root = Path(__file__).resolve().parent.parent
    # Run from a checkout without `pip install -e .`; installed as the `ivrctl` command,
    # this file sits in site-packages next to esl_app and root is no checkout.
    if (root / "esl_app").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    cli.main(args=argv, prog_name="ivrctl")


if __name__ == "__main__":
    main()
