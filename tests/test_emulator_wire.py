import pytest

from esl_app.sim.emulator import wire

# Shapes as FreeSWITCH 1.10 puts them on the wire (mod_event_socket.c / switch_event.c;
# the connect reply lines follow a capture of a real outbound session).
CONNECT_REPLY = (
    b"Event-Name: CHANNEL_DATA\n"
    b"Core-UUID: 6cd7d004-e3c9-11e7-b0f3-73bec77e82ec\n"
    b"FreeSWITCH-Hostname: localhost.localdomain\n"
    b"FreeSWITCH-IPv6: %3A%3A1\n"
    b"Event-Date-Local: 2017-12-20%2010%3A36%3A29\n"
    b"Event-Date-GMT: Wed,%2020%20Dec%202017%2009%3A36%3A29%20GMT\n"
    b"Event-Calling-File: mod_event_socket.c\n"
    b"Channel-Name: sofia/internal/1000%40192.168.1.146%3A5060\n"
    b"variable_sip_full_to: %22222%22%20%3Csip%3A222%40192.168.1.146%3Buser%3Dphone%3E\n"
    b"variable_current_application_data: 192.168.1.208%3A5555%20async%20full\n"
    b"Content-Type: command/reply\n"
    b"Reply-Text: %2BOK%0A\n"
    b"Socket-Mode: async\n"
    b"Control: full\n"
    b"\n"
)
COMMAND_REPLY = b"Content-Type: command/reply\nReply-Text: +OK Events Enabled\n\n"
API_RESPONSE = b"Content-Type: api/response\nContent-Length: 4\n\n+OK\n"
DISCONNECT = (
    b"Content-Type: text/disconnect-notice\n"
    b"Controlled-Session-UUID: 4192e98c-e569-11e7-b747-73bec77e82ec\n"
    b"Content-Disposition: disconnect\n"
    b"Content-Length: 67\n\n"
    b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
)


def test_connect_reply_round_trip():
    headers = wire.parse_header_block(CONNECT_REPLY.decode(), decode=True)
    assert dict(headers)["Reply-Text"] == "+OK\n"
    assert dict(headers)["variable_sip_full_to"] == '"222" <sip:222@192.168.1.146;user=phone>'
    assert wire.serialize_event(headers) == CONNECT_REPLY


def test_reply_frames_byte_exact():
    assert wire.command_reply("+OK Events Enabled") == COMMAND_REPLY
    assert wire.api_response("+OK\n") == API_RESPONSE
    assert wire.disconnect_notice("4192e98c-e569-11e7-b747-73bec77e82ec") == DISCONNECT
    assert wire.api_response("") == (
        b"Content-Type: api/response\nContent-Length: 14\n\n-ERR no reply\n")
    assert wire.bgapi_reply("j1") == (
        b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: j1\nJob-UUID: j1\n\n")
    assert wire.rude_rejection() == (
        b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n")
    frames = wire.FrameParser().feed(COMMAND_REPLY + API_RESPONSE + DISCONNECT)
    assert [f.raw for f in frames] == [COMMAND_REPLY, API_RESPONSE, DISCONNECT]


def test_event_plain_with_nested_body_round_trip():
    hdrs = [("Event-Name", "DETECTED_SPEECH"), ("Speech-Type", "detected-speech"),
            ("Unique-ID", "u1"), ("Channel-Name", "sofia/external/+1555@127.0.0.1")]
    body = '<?xml version="1.0"?><result grammar="ivr"><input>héllo</input></result>'
    ser = wire.serialize_event(hdrs, body)
    assert b"Channel-Name: sofia/external/%2B1555%40127.0.0.1\n" in ser
    assert ser.endswith(f"Content-Length: {len(body.encode())}\n\n".encode() + body.encode())
    frame = wire.event_frame(ser)
    assert frame.startswith(
        f"Content-Length: {len(ser)}\nContent-Type: text/event-plain\n\n".encode())
    (fr,) = wire.FrameParser().feed(frame)
    got, got_body = fr.event()
    assert got["Channel-Name"] == "sofia/external/+1555@127.0.0.1"
    assert got_body == body
    assert wire.serialize_event(hdrs, body) == ser


def test_url_encoding_matches_switch_url_encode():
    assert wire.url_encode("a b:c+d\n%é") == "a%20b%3Ac%2Bd%0A%25%C3%A9"
    assert wire.url_encode("x/y.z,-_~") == "x/y.z,-_~"
    assert wire.serialize_event([("Empty", "")]) == b"Empty: _undef_\n\n"
    assert wire.url_decode("100%") == "100%"


def test_command_parser_incremental_with_body_and_noise():
    p = wire.CommandParser()
    data = (b"\r\n\nsendmsg\r\ncall-command: execute\nexecute-app-name: speak\n"
            b"content-type: text/plain\ncontent-length: 5\n\nhello"
            b"api status\n\nlinger 30\n\n")
    got = []
    for i in range(len(data)):  # byte by byte
        got += p.feed(data[i:i + 1])
    assert [c.line for c in got] == ["sendmsg", "api status", "linger 30"]
    assert got[0].header("Execute-App-Name") == "speak"
    assert got[0].body == b"hello"
    assert got[1].name == "api" and got[1].args == "status"


def test_command_parser_limits():
    p = wire.CommandParser(max_header=64, max_body=10)
    with pytest.raises(wire.ProtocolError):
        p.feed(b"x" * 100)
    p = wire.CommandParser(max_header=64, max_body=10)
    with pytest.raises(wire.ProtocolError):
        p.feed(b"sendmsg\ncontent-length: 99999999\n\n")


def test_url_encoding_of_every_byte_matches_the_c_loop():
    unsafe = b" \"#%&+:;<=>?@[\\]^`{|}"

    def switch_url_encode(raw: bytes) -> str:  # switch_utils.c, byte by byte
        return "".join(f"%{b:02X}" if b < 0x20 or b > 0x7E or b in unsafe else chr(b)
                       for b in raw)

    text = "".join(chr(c) for c in range(1, 0x250)) + "\u20ac\U0001F600 end"
    assert wire.url_encode(text) == switch_url_encode(text.encode("utf-8"))
    assert wire.url_encode("") == ""


def test_cached_header_lines_serialize_exactly_as_encoding_each_time(monkeypatch):
    """The per-(name, value) line cache changes no byte, also across its clearing."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    def reference(headers, body=None):
        text = "".join(f"{n}: {wire.url_encode(v) or '_undef_'}\n" for n, v in headers)
        if body:
            text += f"Content-Length: {len(body.encode())}\n\n{body}"
        else:
            text += "\n"
        return text.encode()

    monkeypatch.setattr(wire, "_LINES", {})
    monkeypatch.setattr(wire, "_LINES_MAX", 8)  # clear often
    names = st.sampled_from(["Event-Name", "Unique-ID", "variable_x", "Caller-ANI", "A"])
    pairs = st.lists(st.tuples(names, st.text(max_size=12)), max_size=12)

    @settings(max_examples=300, deadline=None)
    @given(pairs, st.one_of(st.none(), st.text(max_size=20)))
    def check(headers, body):
        assert wire.serialize_event(headers, body) == reference(headers, body)
        assert wire.serialize_event(headers, body) == reference(headers, body)  # cached
        assert len(wire._LINES) <= 8

    check()
    assert wire.serialize_event([("A", "b c")], encode=False) == b"A: [b c]\n\n"
