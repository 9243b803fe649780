"""Call rules: time limit, agent failure, runtime tenant reloads, graceful drain."""

from __future__ import annotations

import dataclasses
import os

import gevent
from fakes.telephony import (
    TENANTS_YAML,
    ScriptedAgent,
    WirePeer,
    make_services,
    speech,
    start_server,
    tenant_set,
    wait_until,
)

from esl_app.config.tenants import TenantSet
from esl_app.providers.agent.base import AgentError
from esl_app.telephony.server import TenantSource


def _listen_ready(peer):
    """Complete the opening prompt (two sentences) so the bot listens."""
    peer.complete(peer.next_app())
    peer.complete(peer.next_app())


def test_max_call_seconds_hands_over():
    base = tenant_set()
    short = TenantSet(tuple(dataclasses.replace(t, max_call_seconds=1) for t in base))
    server = start_server(make_services(tenants=short))
    peer = WirePeer(server.address)
    try:
        peer.handshake()
        _listen_ready(peer)
        hold = peer.next_app(timeout=10)  # the time limit fires while the bot listens
        assert "transfer" in hold.header("execute-app-arg")
        peer.complete(hold)
        bridge = peer.next_app()
        assert bridge.header("execute-app-name") == "bridge"
        peer.hangup()
        wait_until(lambda: server.completed == 1)
        assert server.last_transcripts[-1].ended_at is not None
    finally:
        peer.close()
        server.stop(timeout=2)


class FailingAgent(ScriptedAgent):
    def respond(self, call, utterance):
        raise AgentError("model unavailable")


def test_agent_failure_apologises_and_transfers():
    agent = FailingAgent()
    server = start_server(make_services(agent=agent))
    peer = WirePeer(server.address)
    try:
        peer.handshake()
        _listen_ready(peer)
        speech(peer, "hello")
        sorry = peer.next_app()
        assert "trouble" in sorry.header("execute-app-arg")
        peer.complete(sorry)
        hold = peer.next_app()
        peer.complete(hold)
        bridge = peer.next_app()
        assert bridge.header("execute-app-arg") == "user/1000"
        peer.hangup()
        wait_until(lambda: server.completed == 1)
        t = server.last_transcripts[-1]
        assert t.outcome == "error" and t.transfer_to == "user/1000"
        assert agent.ended == [peer.uuid]  # the agent session is released
    finally:
        peer.close()
        server.stop(timeout=2)


def test_tenant_source_reloads_on_file_change_and_keeps_last_good(tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS_YAML)
    source = TenantSource(path=path)
    assert source.current().get("sunrise").greeting.startswith("Thank you")
    path.write_text(TENANTS_YAML.replace("Thank you for calling Sunrise", "Hello from Sunrise"))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert source.current().get("sunrise").greeting.startswith("Hello from Sunrise")
    path.write_text("tenants: [oops")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000))
    assert source.current().get("sunrise").greeting.startswith("Hello from Sunrise")
    assert source.reloads == 1


def test_new_calls_get_new_config_live_calls_keep_theirs(tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS_YAML)
    source = TenantSource(path=path)
    server = start_server(dataclasses.replace(make_services(), tenants=source))
    first = WirePeer(server.address)
    second = WirePeer(server.address)
    try:
        first.handshake()
        greet1 = first.next_app()
        assert "Thank you for calling Sunrise" in greet1.header("execute-app-arg")
        path.write_text(TENANTS_YAML.replace("Thank you for calling Sunrise",
                                             "Hello from Sunrise"))
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        second.handshake()
        greet2 = second.next_app()
        assert "Hello from Sunrise" in greet2.header("execute-app-arg")
        # the first call still runs on the tenant it started with (handoff unchanged too)
        first.complete(greet1)
        first.complete(first.next_app())
        first.event("DTMF", [("DTMF-Digit", "0")])
        hold = first.next_app()
        first.complete(hold)
        assert first.next_app().header("execute-app-arg") == "user/1000"
    finally:
        first.hangup()
        second.hangup()
        wait_until(lambda: server.active_calls == 0)
        first.close()
        second.close()
        server.stop(timeout=2)


def test_graceful_stop_drains_live_calls():
    server = start_server(make_services())
    peer = WirePeer(server.address)
    peer.handshake()
    peer.next_app()
    stopper = gevent.spawn(server.stop, 10)
    gevent.sleep(0.2)
    assert not stopper.dead  # waiting for the live call
    peer.hangup()
    stopper.join(timeout=10)
    assert stopper.dead and server.active_calls == 0
    peer.close()
