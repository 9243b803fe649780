"""Malformed or dying ESL connections end that call cleanly; the server keeps serving."""

from __future__ import annotations

import socket
import struct

import pytest
from fakes.telephony import (
    WirePeer,
    make_services,
    speech,
    start_server,
    tenant_set,
    wait_until,
)

from esl_app.sim.emulator.wire import command_reply, event_frame, serialize_event
from esl_app.telephony.esl import parse_headers


@pytest.fixture
def server():
    srv = start_server(make_services())
    yield srv
    srv.stop(timeout=2)


def _greeted(server) -> tuple[WirePeer, object]:
    peer = WirePeer(server.address)
    peer.handshake()
    cmd = peer.next_app()
    assert cmd.header("execute-app-name") == "speak"
    return peer, cmd


def _healthy_call(server) -> None:
    """A full short call works after the fault: the server was not hurt."""
    peer, greet = _greeted(server)
    try:
        peer.hangup()
        wait_until(lambda: server.active_calls == 0 and server.connections == 0)
    finally:
        peer.close()


def _no_leak(server) -> None:
    wait_until(lambda: server.active_calls == 0 and server.connections == 0)


def test_parse_headers_splits_lines_before_decoding():
    h = parse_headers("A: x%0AB: forged\nC: caf%C3%A9\nD: bad%FFbyte")
    assert h["A"] == "x\nB: forged"
    assert "B" not in h
    assert h["C"] == "café"
    assert h["D"] == "bad\ufffdbyte"


def test_frame_without_content_type_ends_the_call(server):
    """Not FreeSWITCH: we close our side, so FreeSWITCH goes on to the human line."""
    peer, _ = _greeted(server)
    try:
        peer.send(b"Foo: bar\nContent-Length: 3\n\nxyz")
        _no_leak(server)
    finally:
        peer.close()
    assert server.last_transcripts[-1].outcome == "error"
    _healthy_call(server)


def test_unsolicited_reply_ends_the_call(server):
    peer, _ = _greeted(server)
    try:
        peer.send(command_reply("+OK nobody asked"))
        peer.send(command_reply("+OK nobody asked either"))
        _no_leak(server)
    finally:
        peer.close()
    assert server.last_transcripts[-1].outcome == "error"
    _healthy_call(server)


def test_bad_utf8_is_tolerated(server):
    """SIP caller names and recognisers can send Latin-1: replace, never drop the caller."""
    peer, greet = _greeted(server)
    try:
        peer.complete(greet)
        peer.complete(peer.next_app())
        body = (b'<result><interpretation confidence="90"><input>caf\xff\xfe book</input>'
                b"</interpretation></result>")
        event = serialize_event([("Event-Name", "DETECTED_SPEECH"), ("Unique-ID", peer.uuid),
                                 ("Speech-Type", "detected-speech")])
        event = event + b""  # header block ends with a blank line already
        event = event[:-1] + f"Content-Length: {len(body)}\n\n".encode() + body
        peer.send(event_frame(event))
        reply = peer.next_app()
        assert reply.name == "sendmsg"
        peer.hangup()
        _no_leak(server)
    finally:
        peer.close()
    turns = server.last_transcripts[-1].turns
    assert any(t.speaker == "caller" and "\ufffd" in t.text for t in turns)
    _healthy_call(server)


def test_huge_content_length_ends_the_call(server):
    peer, _ = _greeted(server)
    try:
        peer.send(b"Content-Length: 99999999999\nContent-Type: text/event-plain\n\n")
        _no_leak(server)
    finally:
        peer.close()
    assert server.last_transcripts[-1].outcome == "error"
    _healthy_call(server)


def test_connection_reset_ends_the_call(server):
    peer, _ = _greeted(server)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # RST
    _no_leak(server)
    assert server.last_transcripts[-1].outcome in ("caller_hangup", "error")
    _healthy_call(server)


def test_silent_peer_times_out_instead_of_hanging():
    srv = start_server(make_services(command_timeout=0.5))
    try:
        peer = WirePeer(srv.address)
        assert peer.command().name == "connect"  # and never answer it
        _no_leak(srv)
        peer.close()
        _healthy_call(srv)
    finally:
        srv.stop(timeout=2)


def test_unknown_did_is_rejected_politely(server):
    peer = WirePeer(server.address, did="9999")
    try:
        peer.handshake()
        said = ""
        while True:
            cmd = peer.next_app()
            if cmd.header("call-command") == "hangup":
                break
            said += cmd.header("execute-app-arg")
            peer.complete(cmd)
        assert "not in service" in said
        peer.ok()
        peer.hangup()
        _no_leak(server)
    finally:
        peer.close()
    t = server.last_transcripts[-1].to_dict()
    assert t["outcome"] == "rejected" and t["tenant"] is None


def test_hangup_while_agent_thinks_ends_within_the_grace(server):
    peer, greet = _greeted(server)
    try:
        peer.complete(greet)
        peer.complete(peer.next_app())
        speech(peer, "please go slow")  # the scripted agent sleeps 5 s
        peer.hangup()
        _no_leak(server)  # well before the agent would have answered
    finally:
        peer.close()
    assert server.last_transcripts[-1].outcome == "caller_hangup"


def test_tenant_set_is_fixed_per_call():
    assert tenant_set().by_did("+15550101001").id == "sunrise"


def test_socket_closed_after_the_caller_hung_up_is_not_a_failure(server, caplog):
    """FreeSWITCH closes the socket after a hang-up while a command waits for its reply."""
    import logging

    peer, greet = _greeted(server)
    try:
        peer.complete(greet)
        speech(peer, "hello")
        while True:  # up to the reply's first prompt, which the bot waits to see accepted
            cmd = peer.command()
            assert cmd is not None
            if cmd.name == "api":
                peer.api_ok()
                continue
            if cmd.header("execute-app-name") in ("speak", "playback"):
                break
            peer.ok()
            peer.complete(cmd, "_none_")
        with caplog.at_level(logging.INFO, logger="esl_app.telephony.call"):
            peer.event("CHANNEL_HANGUP", [("Hangup-Cause", "NORMAL_CLEARING")])
            peer.close()  # no reply to the prompt: the socket just goes
            _no_leak(server)
    finally:
        peer.close()
    assert server.last_transcripts[-1].outcome == "caller_hangup"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and "ESL failure" in r.getMessage()]
    _healthy_call(server)
