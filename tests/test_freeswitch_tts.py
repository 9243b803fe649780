"""FreeSWITCH's own TTS: every ``speak`` names a voice mod_flite has, or FreeSWITCH says nothing.

mod_flite knows awb, kal, rms and slt only; given a Polly name (tenants.yaml's ``voice``)
it logs "Valid voice names are awb, rms, slt or kal" and plays nothing. The calls here go
over the wire to the real call engine, with a hand-driven FreeSWITCH side.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fakes.telephony import (
    TENANTS_YAML,
    ScriptedAgent,
    WirePeer,
    make_services,
    start_server,
    wait_until,
)

from esl_app.config.tenants import parse_tenants
from esl_app.providers.tts.freeswitch import FLITE_VOICES, POLLY_TO_FLITE, FreeswitchTts
from esl_app.runtime.wiring import ProviderCache
from esl_app.telephony.call import REJECT_TEXT, CallServices

ROOT = Path(__file__).resolve().parent.parent
MODULES_CONF = ROOT / "dialplan" / "freeswitch" / "autoload_configs" / "modules.conf.xml"


def _speak_voice(tts, voice: str) -> str:
    ins = tts.synthesize("Hello there.", voice=voice, sample_rate=8000)
    assert ins.app == "speak"
    engine, fs_voice, text = ins.arg.split("|")
    assert (engine, text) == ("flite", "Hello there.")
    return fs_voice


@pytest.mark.parametrize("voice", [*POLLY_TO_FLITE, "Joanna", "Nicole", "joanna", "", "slt",
                                   "KAL", "awb", "rms"])
def test_every_voice_name_becomes_one_flite_has(voice):
    assert _speak_voice(FreeswitchTts(), voice) in FLITE_VOICES


def test_polly_voices_keep_their_sex_and_flite_names_pass():
    assert [_speak_voice(FreeswitchTts(), v) for v in ("Joanna", "Matthew", "Brian", "kal")] \
        == ["slt", "rms", "awb", "kal"]


def test_the_call_engine_and_the_provider_registry_share_one_speaker():
    # `tts: freeswitch` through the registry and the call engine's fallback speak alike
    assert FreeswitchTts is FreeswitchTts


def test_another_engine_gets_the_voice_unchanged():
    ins = FreeswitchTts("tts_commandline").synthesize("Hi.", voice="Joanna", sample_rate=8000)
    assert ins.arg == "tts_commandline|Joanna|Hi."


def _spoken(peer: WirePeer) -> list[str]:
    """The ``speak`` arguments of the call until the bot hangs up."""
    args = []
    while True:
        cmd = peer.next_app()
        assert cmd is not None, "the bot closed the connection without hanging up"
        if cmd.header("call-command") == "hangup":
            return args
        if cmd.header("execute-app-name") == "speak":
            args.append(cmd.header("execute-app-arg"))
        peer.complete(cmd)


def test_unknown_number_apology_is_spoken_in_a_flite_voice():
    server = start_server(make_services())
    peer = WirePeer(server.address, did="9999")
    try:
        peer.handshake()
        said = _spoken(peer)
        assert said and all(a.startswith("flite|slt|") for a in said), said
        assert " ".join(a.split("|", 2)[2] for a in said) == REJECT_TEXT
        peer.ok()
        peer.hangup()
        wait_until(lambda: server.active_calls == 0 and server.connections == 0)
    finally:
        peer.close()
        server.stop(timeout=2)
    assert server.last_transcripts[-1].to_dict()["outcome"] == "rejected"


def test_tenant_with_freeswitch_tts_speaks_its_voice_in_flite():
    tenants = parse_tenants(TENANTS_YAML.replace(
        "    greeting: Welcome to Lakeside Dental.",
        "    voice: Matthew\n    greeting: Welcome to Lakeside Dental."))
    services = CallServices(tenants=lambda: tenants, agent_for=lambda t: ScriptedAgent(),
                            tts_for=ProviderCache().tts_for)  # production's provider wiring
    server = start_server(services)
    peer = WirePeer(server.address, did="2002")
    try:
        peer.handshake()
        greet = peer.next_app()
        assert greet.header("execute-app-arg") == "flite|rms|Welcome to Lakeside Dental."
        peer.hangup()
        wait_until(lambda: server.active_calls == 0 and server.connections == 0)
    finally:
        peer.close()
        server.stop(timeout=2)


def test_shipped_modules_conf_loads_mod_flite():
    loaded = [e.get("module") for e in ET.parse(MODULES_CONF).getroot().iter("load")]
    assert "mod_flite" in loaded
    assert "mod_pocketsphinx" not in loaded  # still only for tenants with stt: freeswitch
