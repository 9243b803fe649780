"""Shared helpers for the call-engine tests: a scripted agent and a raw wire peer."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import gevent

from esl_app.config.tenants import TenantSet, parse_tenants
from esl_app.providers.agent.base import AgentReply, CallContext, Utterance
from esl_app.providers.tts.freeswitch import FreeswitchTts
from esl_app.sim.emulator.wire import (
    CommandParser,
    api_response,
    command_reply,
    event_frame,
    linger_notice,
    serialize_event,
)
from esl_app.telephony.call import CallServices
from esl_app.telephony.server import EslServer

TENANTS_YAML = """
tenants:
  - id: sunrise
    name: Sunrise Family Clinic
    dids: ["1001", "+15550101001"]
    timezone: America/New_York
    greeting: Thank you for calling Sunrise Family Clinic.
    hours: {mon-fri: "08:00-17:00"}
    handoff: user/1000
    stt: freeswitch
    tts: freeswitch
    no_input_seconds: 1
    doctors: [{id: smith, name: Dr. Sarah Smith}]
  - id: lakeside
    name: Lakeside Dental
    dids: ["2002"]
    timezone: America/Chicago
    greeting: Welcome to Lakeside Dental.
    hours: {mon-fri: "09:00-17:00"}
    handoff: user/2000
    stt: freeswitch
    tts: freeswitch
    no_input_seconds: 1
    no_input_action: goodbye
    doctors: [{id: jones, name: Dr. Amy Jones}]
"""


def tenant_set() -> TenantSet:
    return parse_tenants(TENANTS_YAML)


class ScriptedAgent:
    """A fake at the agent boundary: keyword rules, no NLU."""

    name = "scripted"

    def __init__(self) -> None:
        self.ended: list[str] = []

    def greet(self, call: CallContext) -> AgentReply:
        return AgentReply("How can I help you?")

    def respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        text = (utterance.text or "").lower()
        if "slow" in text:
            gevent.sleep(5)
        if "book" in text:
            return AgentReply("I have Tuesday at 9 AM with Dr. Smith. Shall I book it?")
        if text.startswith("yes"):
            return AgentReply(
                'You are booked. Your code is <say-as interpret-as="characters">K7M-4Q2'
                '</say-as>. Anything else?', outcome="booked", confirmation="K7M-4Q2",
                appointment={"doctor": "smith", "start": "2026-11-24T09:00:00-05:00"})
        if "bye" in text or text.startswith("no"):
            return AgentReply("Goodbye.", action="hangup")
        return AgentReply("Sorry, could you say that again?")

    def end(self, call: CallContext) -> None:
        self.ended.append(call.call_id)


def make_services(agent=None, **kw) -> CallServices:
    agent = agent or ScriptedAgent()
    tenants = kw.pop("tenants", None) or tenant_set()
    return CallServices(tenants=lambda: tenants, agent_for=lambda t: agent,
                        tts_for=lambda t, name: FreeswitchTts(), **kw)


def start_server(services: CallServices) -> EslServer:
    server = EslServer(services, "127.0.0.1", 0)
    server.keep_transcripts = 100
    return server.start()


class WirePeer:
    """A hand-driven FreeSWITCH side: read the bot's commands, write exact frames."""

    def __init__(self, address, did: str = "1001", caller: str = "5551234567") -> None:
        self.uuid = str(uuid.uuid4())
        self.sock = socket.create_connection(address)
        self.parser = CommandParser()
        self.queue: list = []
        self.did = did
        self.caller = caller
        self.settings: list[str] = []
        self.detects: list[str] = []
        self.setvars: dict[str, str] = {}

    def command(self, timeout: float = 5.0):
        """The bot's next command; ``api uuid_setvar`` is answered and logged on the way."""
        while True:
            with gevent.Timeout(timeout):
                while not self.queue:
                    data = self.sock.recv(65536)
                    if not data:
                        return None
                    self.queue.extend(self.parser.feed(data))
            cmd = self.queue.pop(0)
            if cmd.line.startswith("api uuid_setvar "):
                _, _, _uuid, name, value = cmd.line.split(" ", 4)
                self.setvars[name] = value
                self.api_ok()
                continue
            return cmd

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def channel_data(self) -> bytes:
        headers = [
            ("Event-Name", "CHANNEL_DATA"), ("Content-Type", "command/reply"),
            ("Reply-Text", "+OK\n"), ("Socket-Mode", "async"), ("Control", "full"),
            ("Unique-ID", self.uuid), ("Channel-Name", f"sofia/internal/{self.caller}@x"),
            ("Caller-Caller-ID-Number", self.caller),
            ("Caller-Destination-Number", self.did), ("Channel-State", "CS_EXECUTE"),
            ("variable_uuid", self.uuid),
        ]
        return serialize_event(headers)

    def event(self, name: str, headers=(), body: str | None = None) -> None:
        base = [("Event-Name", name), ("Unique-ID", self.uuid)]
        self.send(event_frame(serialize_event(base + list(headers), body)))

    def started(self, cmd) -> None:
        """CHANNEL_EXECUTE: the channel thread began the app (it was not still queued)."""
        self.event("CHANNEL_EXECUTE", [
            ("Application", cmd.header("execute-app-name") or ""),
            ("Application-Data", cmd.header("execute-app-arg") or ""),
            ("Application-UUID", cmd.header("Event-UUID") or ""),
        ])

    def complete(self, cmd, response: str = "FILE PLAYED") -> None:
        self.event("CHANNEL_EXECUTE_COMPLETE", [
            ("Application", cmd.header("execute-app-name") or ""),
            ("Application-Data", cmd.header("execute-app-arg") or ""),
            ("Application-Response", response),
            ("Application-UUID", cmd.header("Event-UUID") or ""),
        ])

    def handshake(self) -> None:
        """connect, myevents, linger, answer."""
        assert self.command().name == "connect"
        self.send(self.channel_data())
        assert self.command().name == "myevents"
        self.send(command_reply("+OK Events Enabled"))
        assert self.command().name == "linger"
        self.send(command_reply("+OK will linger"))
        answer = self.command()
        assert answer.header("execute-app-name") == "answer"
        self.send(command_reply("+OK"))
        self.event("CHANNEL_ANSWER")
        self.complete(answer, "_none_")

    def next_app(self, timeout: float = 5.0):
        """The next sendmsg/api command, replied to; detect_speech is completed and logged."""
        while True:
            cmd = self.command(timeout)
            if cmd is None:
                return None
            if cmd.name == "api":
                return cmd
            self.ok()
            if cmd.header("execute-app-name") == "detect_speech":
                self.detects.append(cmd.header("execute-app-arg"))
                self.complete(cmd, "_none_")
                continue
            if cmd.header("execute-app-name") == "multiset":  # channel settings before bridge
                self.settings.append(cmd.header("execute-app-arg"))
                self.complete(cmd, "_none_")
                continue
            return cmd

    def ok(self) -> None:
        self.send(command_reply("+OK"))

    def api_ok(self) -> None:
        self.send(api_response("+OK\n"))

    def hangup(self) -> None:
        self.event("CHANNEL_HANGUP", [("Hangup-Cause", "NORMAL_CLEARING")])
        self.event("CHANNEL_HANGUP_COMPLETE", [("Hangup-Cause", "NORMAL_CLEARING")])
        self.send(linger_notice(self.uuid, "sofia/internal/x", 0))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def speech(peer: WirePeer, text: str) -> None:
    peer.event("DETECTED_SPEECH", [("Speech-Type", "begin-speaking")])
    nlsml = ('<?xml version="1.0"?><result grammar="ivr"><interpretation grammar="ivr" '
             f'confidence="90"><input mode="speech">{text}</input></interpretation></result>')
    peer.event("DETECTED_SPEECH", [("Speech-Type", "detected-speech")], nlsml)


def wait_until(pred, timeout: float = 10.0) -> None:
    with gevent.Timeout(timeout):
        while not pred():
            gevent.sleep(0.01)


def local_bot(tmp_path: Path, *, audio: bool = False) -> Iterator:
    """A local bot over TENANTS_YAML's clinics (for a ``bot`` fixture to yield from).

    ``audio``: the clinics hear through our media path (VAD and the local recogniser)
    instead of FreeSWITCH's ``detect_speech``.
    """
    from esl_app.sim.simulate import start_local_bot
    from esl_app.sim.testing import make_db

    yaml_text = TENANTS_YAML.replace("stt: freeswitch", "stt: local") if audio else TENANTS_YAML
    bot = start_local_bot(make_db(tmp_path, yaml_text), audio=audio)
    yield bot
    bot.stop()
