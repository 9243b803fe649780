"""The rendered dialplan, checked by evaluating it the way FreeSWITCH would.

The evaluator below follows mod_dialplan_xml's parse_exten/dialplan_hunt
(conditions in order, anti-actions on a failed regex, break on-false/on-true/
always/never, absolute conditions, extension ``continue``, ``$N`` substitution
when the expression has a group, ``${var}`` expansion from channel variables
then globals) and the run-time behaviour of the applications we emit:
``socket`` returns to the dialplan when it cannot connect (mod_event_socket's
socket_function logs "Socket Error!" and returns), ``bridge`` goes on only with
``continue_on_fail`` and ends the call after a bridge with ``hangup_after_bridge``.
PyPI ``frslint`` 0.1.0 was considered: it installs top-level packages named
``debug``/``log``/``lint`` and looks ``${var}`` fields up literally, so it does not fit.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest
from click.testing import CliRunner

from esl_app.config.dialplan import dialplan, parse_bot_address, render_dialplan
from esl_app.config.tenants import ConfigError, did_forms, load_tenants, parse_tenants

BOT = "127.0.0.1:8084"
BOT2 = "10.0.0.2:8084"

# ---------------------------------------------------------------- evaluator

_VAR = re.compile(r"\$\{([^}]+)\}")
_PROFILE_FIELDS = ("destination_number", "caller_id_number", "caller_id_name", "context",
                   "network_addr", "ani", "rdnis", "uuid", "source", "dialplan")


def expand(text: str, channel: dict[str, str], globals_: dict[str, str]) -> str:
    """switch_channel_expand_variables: channel variable, else global, else empty."""
    return _VAR.sub(lambda m: channel.get(m.group(1), globals_.get(m.group(1), "")), text)


def substitute(data: str, match: re.Match[str]) -> str:
    """switch_perform_substitution: $0..$9 from the condition's captures."""
    def group(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return (match.group(n) or "") if n <= (match.re.groups or 0) else ""
    return re.sub(r"\$(\d)", group, data)


def hunt(root: ET.Element, profile: dict[str, str], globals_: dict[str, str]
         ) -> tuple[str | None, list[tuple[str, str]]]:
    """dialplan_hunt over one context: (first extension name, applications to run)."""
    channel = {k: v for k, v in profile.items()}
    apps: list[tuple[str, str]] = []
    first: str | None = None
    for ext in root.iter("extension"):
        proceed = False
        before = len(apps)
        for cond in ext.findall("condition"):
            fld = cond.get("field")
            expression = expand(cond.get("expression", ""), channel, globals_)
            brk = cond.get("break", "on-false")
            match = None
            if fld is None:
                matched = True  # absolute condition
            else:
                value = (expand(fld, channel, globals_) if "$" in fld
                         else profile.get(fld, ""))
                match = re.search(expression, value)  # PCRE: unanchored unless ^...$
                matched = match is not None
            proceed = matched
            if not matched:
                for anti in cond.findall("anti-action"):
                    apps.append((anti.get("application", ""), anti.get("data", "")))
                    proceed = True
            else:
                for act in cond.findall("action"):
                    data = act.get("data", "")
                    if match is not None and "(" in expression:
                        data = substitute(data, match)
                    apps.append((act.get("application", ""), data))
            if ((matched and brk == "on-true") or (not matched and brk == "on-false")
                    or brk == "always"):
                break
        if len(apps) > before and first is None:
            first = ext.get("name")
        if proceed and ext.get("continue", "false").lower() not in ("true", "yes", "on", "1"):
            break
    return first, apps


@dataclass
class Call:
    """What happened to one call: the extension, the applications run, the end."""

    extension: str | None
    ran: list[tuple[str, str]] = field(default_factory=list)
    channel: dict[str, str] = field(default_factory=dict)
    ended_by: str = "dialplan-end"


def place_call(xml: str, destination: str, *, globals_: dict[str, str] | None = None,
               reachable: tuple[str, ...] = (BOT,), human_answers: bool = True,
               context: str = "public") -> Call:
    """Hunt then execute, as FreeSWITCH would for a call into ``context``."""
    globals_ = globals_ or {}
    root = ET.fromstring(xml)
    profile = {"destination_number": destination, "caller_id_number": "+15551234567",
               "context": context}
    name, apps = hunt(root, profile, globals_)
    call = Call(name, channel=dict(profile))
    if name is None:
        call.ended_by = "no-route"
        return call
    for app, raw in apps:
        data = expand(raw, call.channel, globals_)
        call.ran.append((app, data))
        if app == "set":
            key, _, value = data.partition("=")
            call.channel[key] = value
        elif app == "socket":
            if data.split()[0] in reachable:
                call.ended_by = f"bot {data.split()[0]}"
                return call
        elif app == "bridge":
            if human_answers:
                if call.channel.get("hangup_after_bridge") == "true":
                    call.ended_by = f"human {data}"
                    return call
            elif call.channel.get("continue_on_fail") != "true":
                call.ended_by = "bridge-failed"
                return call
        elif app in ("hangup", "transfer"):
            call.ended_by = f"{app} {data}".strip()
            return call
    return call


def apps_of(call: Call) -> list[str]:
    return [app for app, _ in call.ran]


# ---------------------------------------------------------------- the evaluator itself

def test_evaluator_follows_freeswitch_break_and_continue_semantics():
    xml = """<include>
      <extension name="a" continue="true">
        <condition field="destination_number" expression="^(\\d+)$">
          <action application="set" data="n=$1"/>
        </condition>
      </extension>
      <extension name="b">
        <condition field="${flag}" expression="^on$" break="on-true">
          <action application="log" data="flag"/>
          <anti-action application="log" data="noflag"/>
        </condition>
        <condition field="destination_number" expression="^9" break="never">
          <anti-action application="log" data="not9"/>
        </condition>
        <condition><action application="hangup" data="${n}"/></condition>
      </extension>
      <extension name="never"><condition><action application="log" data="x"/></condition>
      </extension>
    </include>"""
    call = place_call(xml, "123")
    assert call.extension == "a"
    assert call.ran == [("set", "n=123"), ("log", "noflag"), ("log", "not9"),
                        ("hangup", "123")]
    flagged = place_call(xml, "123", globals_={"flag": "on"})
    assert flagged.ran == [("set", "n=123"), ("log", "flag")]  # on-true stops extension b
    assert flagged.ended_by == "dialplan-end"
    assert place_call(xml, "abc").extension == "b"


# ---------------------------------------------------------------- the rendered dialplan

@pytest.fixture(scope="module")
def tenants(request):
    return load_tenants(request.config.rootpath / "tenants.yaml")


@pytest.fixture(scope="module")
def xml(tenants) -> str:
    return render_dialplan(tenants)


def test_rendered_xml_is_well_formed_include(xml):
    root = ET.fromstring(xml)
    assert root.tag == "include"
    assert not xml.startswith("<?xml")  # spliced into public.xml by the pre-processor
    assert [e.get("name") for e in root.iter("extension")] == ["ivr_sunrise", "ivr_lakeside"]


def test_every_did_form_reaches_its_tenant_and_the_bot(tenants, xml):
    assert len(tenants) >= 2
    for tenant in tenants:
        forms = {f for did in tenant.dids for f in did_forms(did)}
        assert len(forms) >= 4  # extension + E.164, 1+national, national
        for number in sorted(forms):
            call = place_call(xml, number)
            assert call.extension == f"ivr_{tenant.id}", number
            assert call.channel["ivr_tenant"] == tenant.id
            assert call.channel["ivr_did"] == number
            assert call.ran[-1] == ("socket", f"{BOT} async full")
            assert call.ended_by == f"bot {BOT}"
            assert tenants.by_did(number) is tenant  # the bot agrees on the tenant


@pytest.mark.parametrize("number", ["1003", "91001", "10011", "01001", "+5550101001",
                                    "25550101001", "555010100", "", "+1555010100"])
def test_unknown_numbers_match_nothing(xml, number):
    call = place_call(xml, number)
    assert call.extension is None
    assert call.ran == []


def test_failover_tries_each_bot_in_order_then_the_human_line(tenants):
    xml = render_dialplan(tenants, [BOT, BOT2])
    second = place_call(xml, "+15550101002", reachable=(BOT2,))
    assert apps_of(second)[-2:] == ["socket", "socket"]
    assert [d for a, d in second.ran if a == "socket"] == [f"{BOT} async full",
                                                            f"{BOT2} async full"]
    assert second.ended_by == f"bot {BOT2}"

    down = place_call(xml, "1001", reachable=())
    assert apps_of(down) == ["set", "set", "set", "set", "socket", "socket", "log", "bridge"]
    assert down.ended_by == "human user/1000"
    assert down.ran[-2][1].startswith("WARNING ")

    unanswered = place_call(xml, "1002", reachable=(), human_answers=False)
    assert unanswered.ran[-2:] == [("bridge", "user/1001"),
                                   ("hangup", "NORMAL_TEMPORARY_FAILURE")]


@pytest.mark.parametrize("value", ["true", "on", "yes", "1"])
def test_drain_sends_new_calls_straight_to_the_human_line(xml, value):
    call = place_call(xml, "5550101001", globals_={"ivr_drain": value})
    assert "socket" not in apps_of(call)
    assert apps_of(call) == ["set", "set", "set", "set", "log", "log", "bridge"]
    assert call.ended_by == "human user/1000"


@pytest.mark.parametrize("value", ["false", "", "off", "0", "truely"])
def test_drain_off_keeps_the_bot(xml, value):
    call = place_call(xml, "1001", globals_={"ivr_drain": value})
    assert call.ended_by == f"bot {BOT}"


def test_rendering_is_deterministic_and_checked_in_copy_is_fresh(tenants, xml, request):
    again = render_dialplan(load_tenants(request.config.rootpath / "tenants.yaml"))
    assert again.encode() == xml.encode()
    checked_in = (request.config.rootpath / "dialplan" / "ivr_public.xml").read_bytes()
    assert checked_in == xml.encode(), "run: ivr dialplan render --out dialplan/ivr_public.xml"


TENANT = """
  - id: {id}
    name: {name}
    dids: {dids}
    timezone: UTC
    hours: {{mon-fri: "09:00-17:00"}}
    handoff: {handoff}
    doctors: [{{id: d, name: Dr. D}}]
"""


def _yaml(*tenants: dict) -> str:
    return "tenants:\n" + "".join(TENANT.format(**t) for t in tenants)


def test_colliding_dids_are_rejected(tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text(_yaml(
        {"id": "a", "name": "A", "dids": '["+15550101001"]', "handoff": "user/1"},
        {"id": "b", "name": "B", "dids": '["5550101001"]', "handoff": "user/2"}))
    with pytest.raises(ConfigError, match="already used by tenant 'a'"):
        load_tenants(path)
    result = CliRunner().invoke(dialplan, ["render", "--tenants", str(path)])
    assert result.exit_code != 0
    assert "already used" in result.output


def test_xml_special_characters_survive_escaping():
    handoff = 'sofia/gateway/carrier/+15550009999|{sip_h_X-Note="a&b<c>"}user/1000'
    tenants = parse_tenants(_yaml(
        {"id": "odd", "name": json.dumps('"Quotes" & <Angles> -- clinic'),
         "dids": '["2001"]', "handoff": json.dumps(handoff)}))
    xml = render_dialplan(tenants)
    call = place_call(xml, "2001", reachable=())
    assert call.ran[-1] == ("bridge", handoff)
    assert "-- clinic" not in xml  # would end the XML comment early


def test_tenant_without_handoff_hangs_up_when_no_bot(tmp_path):
    tenants = parse_tenants(_yaml({"id": "solo", "name": "Solo", "dids": '["3001"]',
                                   "handoff": '""'}))
    xml = render_dialplan(tenants)
    call = place_call(xml, "3001", reachable=())
    assert "bridge" not in apps_of(call)
    assert call.ended_by == "hangup NORMAL_TEMPORARY_FAILURE"
    assert call.ran[-2][1].startswith("ERR ")


@pytest.mark.parametrize("bad", ["127.0.0.1", ":8084", "host:0", "host:99999", "a b:1",
                                 "127.0.0.1:80x"])
def test_bad_bot_addresses_are_rejected(tenants, bad):
    with pytest.raises(ConfigError, match="bot address"):
        render_dialplan(tenants, [bad])


def test_parse_bot_address():
    assert parse_bot_address(" bot.local:9000 ") == ("bot.local", 9000)


def test_cli_render_writes_file_with_failover_bots(tmp_path, monkeypatch, request):
    monkeypatch.setenv("IVR_TENANTS", str(request.config.rootpath / "tenants.yaml"))
    out = tmp_path / "sub" / "ivr.xml"
    result = CliRunner().invoke(dialplan, ["render", "--out", str(out), "--bot", BOT,
                                           "--bot", BOT2])
    assert result.exit_code == 0, result.output
    call = place_call(out.read_text(), "1001", reachable=(BOT2,))
    assert call.ended_by == f"bot {BOT2}"
    stdout = CliRunner().invoke(dialplan, ["render"])
    assert stdout.exit_code == 0
    assert stdout.output == render_dialplan(load_tenants(
        request.config.rootpath / "tenants.yaml"))


def test_cli_render_reports_missing_tenants_file(tmp_path):
    result = CliRunner().invoke(dialplan, ["render", "--tenants", str(tmp_path / "no.yaml")])
    assert result.exit_code != 0
    assert "file not found" in result.output


def test_cli_render_takes_tenants_from_the_root_command(tmp_path):
    import click

    path = tmp_path / "t.yaml"
    path.write_text(_yaml({"id": "solo", "name": "Solo", "dids": '["3001"]',
                           "handoff": "user/7"}))

    @click.group()
    @click.pass_context
    def root(ctx):
        ctx.obj = {"tenants_path": str(path)}

    root.add_command(dialplan)
    result = CliRunner().invoke(root, ["dialplan", "render"], env={"IVR_TENANTS": None})
    assert result.exit_code == 0, result.output
    assert place_call(result.output, "3001").channel["ivr_tenant"] == "solo"
