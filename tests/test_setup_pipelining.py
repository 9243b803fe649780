"""Call set-up and per-turn commands are pipelined on the ESL socket, and every reply is
still checked: a hand-driven FreeSWITCH side over TCP sees the commands arrive before it
has answered the earlier ones, and a refusal still ends the call."""

from __future__ import annotations

import socket

import gevent
import pytest
from fakes.telephony import (
    ScriptedAgent,
    WirePeer,
    make_services,
    speech,
    start_server,
    wait_until,
)

from esl_app.sim.emulator.wire import api_response, command_reply
from esl_app.telephony.esl import EslError, EslSession, parse_headers


@pytest.fixture
def server():
    srv = start_server(make_services())
    yield srv
    srv.stop(timeout=2)


def _unanswered(peer: WirePeer, n: int, timeout: float = 5.0) -> list:
    """Read ``n`` commands without replying to any of them."""
    with gevent.Timeout(timeout):
        while len(peer.queue) < n:
            data = peer.sock.recv(65536)
            assert data, "the bot closed the connection"
            peer.queue.extend(peer.parser.feed(data))
    out, peer.queue = peer.queue[:n], peer.queue[n:]
    return out


def _play_out(peer: WirePeer, first) -> None:
    """Complete the prompt's sentences until the bot waits for the caller."""
    cmd = first
    while cmd is not None:
        peer.complete(cmd)
        try:
            cmd = peer.next_app(timeout=0.5)
        except gevent.Timeout:
            return


def _first_flight(peer: WirePeer) -> object:
    """connect, myevents, linger and answer arrive before FreeSWITCH said a word."""
    cmds = _unanswered(peer, 4)
    assert [c.name for c in cmds] == ["connect", "myevents", "linger", "sendmsg"]
    answer = cmds[3]
    assert answer.header("execute-app-name") == "answer"
    assert answer.header("Event-UUID")
    gevent.sleep(0.1)
    assert not peer.queue and not _readable(peer.sock)  # and then nothing, unanswered
    return answer


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def test_setup_costs_one_round_trip(server):
    peer = WirePeer(server.address)
    try:
        answer = _first_flight(peer)
        peer.send(peer.channel_data())
        peer.send(command_reply("+OK Events Enabled"))
        peer.send(command_reply("+OK will linger"))
        peer.ok()  # the answer's reply
        # the CDR variable needs the channel data; it does not wait for the answer
        setvar = _unanswered(peer, 1)[0]
        assert setvar.line == f"api uuid_setvar {peer.uuid} ivr_tenant sunrise"
        peer.api_ok()
        peer.event("CHANNEL_ANSWER")
        peer.complete(answer, "_none_")
        greeting = peer.next_app()
        assert greeting.header("execute-app-name") == "speak"
        peer.hangup()
        wait_until(lambda: server.active_calls == 0)
    finally:
        peer.close()
    assert server.last_transcripts[-1].outcome == "caller_hangup"


def _sum(hist) -> float:
    return next(s.value for m in hist.collect() for s in m.samples if s.name.endswith("_sum"))


def test_setup_own_share_leaves_out_the_switchs_reply(server):
    """ivr_call_setup_own_seconds is the set-up less the wait for connect's reply."""
    from esl_app.http.metrics import CALL_SETUP, CALL_SETUP_OWN

    total0, own0 = _sum(CALL_SETUP), _sum(CALL_SETUP_OWN)
    peer = WirePeer(server.address)
    try:
        _first_flight(peer)
        gevent.sleep(0.3)  # FreeSWITCH slow to give the channel data
        peer.send(peer.channel_data())
        peer.send(command_reply("+OK Events Enabled"))
        peer.send(command_reply("+OK will linger"))
        _unanswered(peer, 1)  # the CDR variable
        wait_until(lambda: _sum(CALL_SETUP) > total0)
        total, own = _sum(CALL_SETUP) - total0, _sum(CALL_SETUP_OWN) - own0
        assert total >= 0.3
        assert 0 < own < 0.1  # ours: the accept, the first write, the tenant
        peer.hangup()
        wait_until(lambda: server.active_calls == 0)
    finally:
        peer.close()


def test_refused_myevents_still_ends_the_call(server):
    """A pipelined reply is checked: without events the bot cannot run the call."""
    peer = WirePeer(server.address)
    try:
        _unanswered(peer, 3)
        peer.send(peer.channel_data())
        peer.send(command_reply("-ERR aready enabled."))
        peer.send(command_reply("+OK will linger"))
        names = []
        while True:
            cmd = peer.command(timeout=5)
            if cmd is None:
                break
            names.append(cmd.header("execute-app-name") or cmd.name)
            if cmd.name == "exit":
                peer.send(command_reply("+OK bye"))
            elif cmd.name == "sendmsg":
                peer.ok()
        assert "speak" not in names and "playback" not in names
        wait_until(lambda: server.active_calls == 0)
    finally:
        peer.close()
    assert server.last_transcripts[-1].outcome == "error"


class _InProcessAgent(ScriptedAgent):
    """The scripted agent, answering on the call's greenlet as the local agent does."""

    in_process = True


def test_turn_sends_resume_and_prompt_in_one_flight_and_sets_cdr_vars():
    """The reply is recorded before it is spoken: its variables lead the flight.

    (A helper-greenlet agent's first sentence may play before its whole reply is in:
    the variables then follow the prompt.)
    """
    server = start_server(make_services(_InProcessAgent()))
    peer = WirePeer(server.address)
    try:
        peer.handshake()
        greeting = peer.next_app()
        assert greeting.header("execute-app-name") == "speak"
        assert peer.detects == ["pocketsphinx ivr ivr"]
        _play_out(peer, greeting)  # heard to the end: no barge-in
        speech(peer, "yes please")  # the scripted agent books
        # three variables, the recogniser's resume and the prompt: none waits for a reply
        flight = _unanswered(peer, 5)
        assert [c.name for c in flight[:3]] == ["api"] * 3
        assert {c.line.split(" ")[3] for c in flight[:3]} == {
            "ivr_outcome", "ivr_confirmation", "ivr_appointment"}
        assert flight[3].header("execute-app-arg") == "resume"
        assert flight[4].header("execute-app-name") == "speak"
        for _ in range(3):
            peer.api_ok()
        peer.ok()
        peer.ok()
        peer.complete(flight[4])
        peer.hangup()
        wait_until(lambda: server.active_calls == 0)
    finally:
        peer.close()
        server.stop(timeout=2)
    assert server.last_transcripts[-1].outcome == "booked"


def test_refused_resume_is_raised_by_the_prompt_and_ends_the_call(server):
    peer = WirePeer(server.address)
    try:
        peer.handshake()
        _play_out(peer, peer.next_app())
        speech(peer, "book please")
        resume, prompt = _unanswered(peer, 2)
        assert resume.header("execute-app-arg") == "resume"
        peer.send(command_reply("-ERR no recogniser"))
        peer.ok()
        seen = []
        while True:
            cmd = peer.command(timeout=5)
            if cmd is None:
                break
            seen.append(cmd.header("execute-app-name") or cmd.name)
            if cmd.name == "exit":
                peer.send(command_reply("+OK bye"))
            else:
                peer.ok()
        wait_until(lambda: server.active_calls == 0)
    finally:
        peer.close()
    assert "speak" not in seen  # nothing more was said after the failure
    assert server.last_transcripts[-1].outcome == "error"


def _session_pair():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    peer = socket.create_connection(listener.getsockname())
    ours, addr = listener.accept()
    listener.close()
    events: list = []
    return EslSession(ours, addr, sink=events.append, command_timeout=2.0), peer


def _read_commands(peer: socket.socket, n: int) -> list[str]:
    buf = b""
    with gevent.Timeout(5):
        while buf.count(b"\n\n") < n:
            buf += peer.recv(65536)
    return [c for c in buf.decode().split("\n\n") if c][:n]


def test_post_reply_is_checked_by_the_next_send():
    session, peer = _session_pair()
    try:
        session.post("api uuid_setvar x a 1", check=None)
        session.post("sendmsg\ncall-command: execute\nexecute-app-name: detect_speech",
                     label="detect_speech")
        job = gevent.spawn(session.send, "api status")
        assert len(_read_commands(peer, 3)) == 3  # all three before any reply
        assert session.outstanding == 2
        peer.sendall(api_response("-ERR no such channel\n"))  # not fatal: check=None
        peer.sendall(command_reply("-ERR refused"))
        peer.sendall(api_response("UP\n"))
        job.join(5)
        with pytest.raises(EslError, match="detect_speech: -ERR refused"):
            job.get()
        assert session.outstanding == 0
        session.flush()  # the failure was raised once
    finally:
        session.stop()
        peer.close()


def test_flush_waits_for_posted_replies_and_fails_on_a_dead_socket():
    session, peer = _session_pair()
    try:
        session.post("linger")
        waiter = gevent.spawn(session.flush)
        gevent.sleep(0.05)
        assert not waiter.dead
        peer.sendall(command_reply("+OK will linger"))
        waiter.join(5)
        assert waiter.successful()
        session.post("myevents")
        peer.close()
        with pytest.raises(EslError):
            session.flush(timeout=5)
    finally:
        session.stop()


def test_parse_headers_fast_path_matches_the_standard_decoding():
    raw = ("A: %2B1555%40host\nB: caf%C3%A9 %zz\nC: 100%\nD: x%0Ay\r\nE:%41\r\r\n"
           "no colon\n F : v \nG: %e2%82%ac")
    h = parse_headers(raw)
    assert h == {"A": "+1555@host", "B": "café %zz", "C": "100%", "D": "x\ny",
                 "E": "A", "F": "v ", "G": "€"}


def test_tenant_source_reloads_only_when_the_stored_set_changed(tmp_path):
    from fakes.telephony import TENANTS_YAML

    from esl_app.config.tenants import parse_tenants
    from esl_app.scheduling.provisioning import (
        import_tenants,
        load_tenant_set,
        tenant_set_version,
    )
    from esl_app.sim.testing import make_db
    from esl_app.telephony.server import TenantSource

    make_db(tmp_path, TENANTS_YAML)
    source = TenantSource(loader=load_tenant_set, max_age=0.0, version=tenant_set_version)
    assert not source.refresh() and source.reloads == 0  # unchanged: nothing parsed
    changed = TENANTS_YAML.replace("Welcome to Lakeside Dental.", "Hello from Lakeside.")
    import_tenants(parse_tenants(changed))
    assert source.refresh() and source.reloads == 1
    assert source.current().get("lakeside").greeting == "Hello from Lakeside."
    assert not source.refresh() and source.reloads == 1


@pytest.mark.parametrize("block", [
    "Event-Name: CHANNEL_EXECUTE\nUnique-ID: u1\nApplication: speak\n\n",
    "Unique-ID: u1\nEvent-Name: DETECTED_SPEECH\nSpeech-Type: detected-speech\n"
    "Content-Length: 5\n\nhello and more",
    "Event-Name: A\nEvent-Name: B\n\n",  # duplicate: the last one wins, like a dict
    "Event-Name: CUSTOM%20X\n\n",  # encoded: decoded like every value
    "X-Event-Name: fake\nEvent-Name: REAL\n\n",
    "Event-Name: CRLF\r\nUnique-ID: u2\r\n\r\n",
])
def test_lazy_event_matches_a_fully_parsed_one(block):
    from esl_app.telephony.esl import EslEvent

    lazy = EslEvent.from_block("text/event-plain", block)
    inner, _, rest = block.partition("\n\n")
    headers = {**parse_headers(inner), "Content-Type": "text/event-plain"}
    assert lazy.content_type == "text/event-plain"
    assert lazy.name == headers.get("Event-Name", "")
    assert lazy.headers == headers
    length = headers.get("Content-Length")
    assert lazy.body == (rest[:int(length)] if length else rest)


@pytest.mark.parametrize("key", ["Event-Name", "Application-UUID", "Application-Response",
                                 "Speech-Type", "Missing-Header", "Unique-ID", "Content-Type",
                                 "Content-Length"])
@pytest.mark.parametrize("block", [
    "Event-Name: CHANNEL_EXECUTE_COMPLETE\nApplication-UUID: a1\n"
    "Application-Response: FILE%20PLAYED\nUnique-ID: u\n\n",
    "Event-Name: X\nOther-Application-UUID: b\nApplication-UUID: a2\n\n",  # ambiguous
    "Event-Name: X\nApplication-UUID:a3\n\n",  # no space: decoded the slow way
    "Event-Name: X\r\nApplication-UUID: a4\r\nUnique-ID: u%0Aforged\r\n\r\n",
    "Event-Name: DETECTED_SPEECH\nSpeech-Type: detected-speech\nContent-Length: 3\n\n"
    "abcdef",
])
def test_lazy_header_lookup_equals_full_decoding(block, key):
    from esl_app.telephony.esl import EslEvent

    lazy = EslEvent.from_block("text/event-plain", block)
    value = lazy.get(key, "dflt")
    full = EslEvent.from_block("text/event-plain", block)
    assert value == full.headers.get(key, "dflt")
    assert lazy.body == full.body


class _Outbound:
    """A call the bot placed that wants mod_audio_fork's events (as a reminder call)."""

    events = "CUSTOM mod_audio_fork::connect_failed"

    def agent_for(self, tenant):
        return None

    def opening(self, call, agent) -> bool:
        call.hang_up()
        return False

    def finish(self, transcript) -> None:
        pass


def test_an_outbound_calls_event_subscription_rides_along_with_the_answer():
    """A reminder call subscribes to ``mod_audio_fork::connect_failed`` without an extra
    round trip: the ``event`` command follows the answer before FreeSWITCH replied to it,
    and an inbound call sends none (test_setup_costs_one_round_trip)."""
    srv = start_server(make_services(outbound_for=lambda channel: _Outbound()))
    peer = WirePeer(srv.address)
    try:
        answer = _first_flight(peer)
        peer.send(peer.channel_data())
        peer.send(command_reply("+OK Events Enabled"))
        peer.send(command_reply("+OK will linger"))
        event, setvar = _unanswered(peer, 2)
        assert event.line == "event plain CUSTOM mod_audio_fork::connect_failed"
        assert setvar.line.startswith(f"api uuid_setvar {peer.uuid} ivr_tenant")
        peer.ok()
        peer.send(command_reply("+OK event listener enabled plain"))
        peer.api_ok()
        peer.event("CHANNEL_ANSWER")
        peer.complete(answer, "_none_")
        hangup = _unanswered(peer, 1)[0]
        assert hangup.header("call-command") == "hangup"
        peer.ok()
        peer.hangup()
        wait_until(lambda: srv.active_calls == 0)
    finally:
        peer.close()
        srv.stop(timeout=2)
