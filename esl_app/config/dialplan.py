"""FreeSWITCH XML dialplan rendered from tenants.yaml.

The dialplan is generated, never hand-edited, so that the DIDs FreeSWITCH routes
to the bot are exactly the DIDs the bot resolves to tenants. Each tenant gets
one extension that:

1. matches every form of its DIDs (E.164, 1+national, national, extension) with
   one anchored regular expression over ``destination_number``;
2. sets the channel variables the bot reads from the channel data
   (``ivr_tenant``, ``ivr_did``) and the bridge behaviour of the fallback;
3. unless the global ``ivr_drain`` is true, runs ``socket <addr> async full``
   for each bot address in order: mod_event_socket's socket application returns
   to the dialplan when it cannot connect, so the next address is tried;
4. ends on the tenant's human line (``bridge <handoff>``), reached when drain is
   on, when no bot accepted the call, or when a bot left the call without
   hanging up or transferring it - a dead bot never means a dead phone line.

The output is deterministic (same tenants and addresses give the same bytes)
so that a re-render can be diffed and checked in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import click

from esl_app.config.settings import tenants_path
from esl_app.config.tenants import ConfigError, Tenant, TenantSet, did_forms, load_tenants

__all__ = [
    "DEFAULT_BOT_ADDRESS",
    "DRAIN_VARIABLE",
    "did_expression",
    "dialplan",
    "parse_bot_address",
    "render_dialplan",
    "write_dialplan",
]

DEFAULT_BOT_ADDRESS = "127.0.0.1:8084"
DRAIN_VARIABLE = "ivr_drain"
#: What FreeSWITCH's switch_true() also accepts, so ``global_setvar ivr_drain=on`` works too.
DRAIN_EXPRESSION = "^(?:true|yes|on|1)$"
_HOST = re.compile(r"^[A-Za-z0-9._-]+$")


def parse_bot_address(address: str) -> tuple[str, int]:
    """Split and validate ``host:port``; the socket app wants IPv4 or a host name."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not _HOST.match(host) or not port.isdigit():
        raise ConfigError(f"bot address '{address}' is not HOST:PORT")
    number = int(port)
    if not 0 < number < 65536:
        raise ConfigError(f"bot address '{address}': port must be 1..65535")
    return host, number


def did_expression(tenant: Tenant) -> str:
    """One anchored alternation of every dialled form of the tenant's DIDs."""
    forms = sorted({form for did in tenant.dids for form in did_forms(did)},
                   key=lambda f: (len(f), f))
    return "^(?:" + "|".join(re.escape(f) for f in forms) + ")$"


def _attr(value: str) -> str:
    """Escape text for a double-quoted XML attribute (newlines kept as references)."""
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;")
            .replace("\t", "&#9;"))


def _comment(text: str) -> str:
    """XML comments may not contain ``--``; tenant names are free text."""
    return "<!-- " + re.sub(r"-{2,}", "-", text).replace("\n", " ").strip("- ") + " -->"


def _action(tag: str, app: str, data: str = "") -> str:
    data_attr = f' data="{_attr(data)}"' if data else ""
    return f'      <{tag} application="{_attr(app)}"{data_attr}/>'


def _extension(tenant: Tenant, bots: Sequence[str]) -> list[str]:
    human = tenant.handoff
    lines = [
        f"  {_comment(f'{tenant.id}: {tenant.name}')}",
        f'  <extension name="ivr_{_attr(tenant.id)}">',
        f'    <condition field="destination_number" expression="{_attr(did_expression(tenant))}">',
        _action("action", "set", f"ivr_tenant={tenant.id}"),
        _action("action", "set", "ivr_did=${destination_number}"),
        _action("action", "set", "hangup_after_bridge=true"),
        _action("action", "set", "continue_on_fail=true"),
        "    </condition>",
        f'    <condition field="${{{DRAIN_VARIABLE}}}" expression="{_attr(DRAIN_EXPRESSION)}"'
        ' break="never">',
        _action("action", "log",
                f"NOTICE ivr {tenant.id}: drain is on, the call goes to the human line"),
    ]
    lines += [_action("anti-action", "socket", f"{bot} async full") for bot in bots]
    lines.append("    </condition>")
    lines.append("    <condition>")
    if human:
        lines.append(_action("action", "log",
                             f"WARNING ivr {tenant.id}: no bot handled the call, bridging "
                             f"to {human}"))
        lines.append(_action("action", "bridge", human))
    else:
        lines.append(_action("action", "log",
                             f"ERR ivr {tenant.id}: no bot handled the call and the tenant "
                             "has no handoff line"))
    lines.append(_action("action", "hangup", "NORMAL_TEMPORARY_FAILURE"))
    lines += ["    </condition>", "  </extension>"]
    return lines


def render_dialplan(tenants: TenantSet, bot_addresses: Sequence[str] = (DEFAULT_BOT_ADDRESS,),
                    context: str = "public") -> str:
    """The FreeSWITCH ``<include>`` file routing every tenant's DIDs to the bot.

    No XML declaration: FreeSWITCH's pre-processor splices included files into
    one document, where a second declaration does not belong. The file goes
    inside ``<context name="{context}">`` (stock FreeSWITCH includes
    ``dialplan/public/*.xml`` there). Raises ConfigError on a bad bot address or
    when no bot address is given.
    """
    bots = [f"{h}:{p}" for h, p in (parse_bot_address(a) for a in bot_addresses)]
    if not bots:
        raise ConfigError("at least one bot address is needed")
    if not re.match(r"^[A-Za-z0-9_.-]+$", context):
        raise ConfigError(f"context '{context}' is not a FreeSWITCH context name")
    lines = [
        "<!-- Generated by `ivr dialplan render`: do not edit, re-render from tenants.yaml.",
        f"     Include inside <context name=\"{context}\">; bots: {', '.join(bots)}.",
        f"     Drain: `global_setvar {DRAIN_VARIABLE}=true` sends new calls to the human"
        " lines. -->",
        "<include>",
    ]
    for tenant in tenants:
        lines += _extension(tenant, bots)
    lines.append("</include>")
    return "\n".join(lines) + "\n"


def write_dialplan(path: str | Path, text: str) -> None:
    """Write atomically so FreeSWITCH's ``reloadxml`` never reads a half-written file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def _tenants_path(explicit: str | None) -> str:
    """``--tenants`` here, else root ``ivr --tenants``, else IVR_TENANTS, else ./tenants.yaml."""
    if explicit:
        return explicit
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        obj = ctx.find_root().obj
        if isinstance(obj, dict) and obj.get("tenants_path"):
            return str(obj["tenants_path"])
        root_value = ctx.find_root().params.get("tenants")
        if root_value:
            return str(root_value)
    return tenants_path()


@click.group("dialplan")
def dialplan() -> None:
    """FreeSWITCH dialplan generated from tenants.yaml."""


@dialplan.command("render")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write here (atomically) instead of stdout.")
@click.option("--bot", "bots", multiple=True, metavar="HOST:PORT",
              help=f"Bot ESL address, repeat for failover in order [{DEFAULT_BOT_ADDRESS}].")
@click.option("--context", default="public", show_default=True,
              help="Dialplan context the file is included in.")
@click.option("--tenants", "tenants_file", type=click.Path(dir_okay=False), default=None,
              help="tenants.yaml [root --tenants, $IVR_TENANTS, ./tenants.yaml].")
def render(out: str | None, bots: tuple[str, ...], context: str,
           tenants_file: str | None) -> None:
    """Render the dialplan XML for every tenant."""
    from esl_app.cli import fail

    try:
        tenants = load_tenants(_tenants_path(tenants_file))
        text = render_dialplan(tenants, list(bots) or [DEFAULT_BOT_ADDRESS], context)
        if out:
            write_dialplan(out, text)
        else:
            click.echo(text, nl=False)
    except ConfigError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
