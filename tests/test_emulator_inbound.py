import json

import gevent
import pytest
from fakes.emulator import FakeBot
from gevent import socket
from greenswitch.esl import InboundESL

from esl_app.sim.emulator.core import Switch
from esl_app.sim.emulator.inbound import InboundServer
from esl_app.sim.emulator.outbound import EmulatedCall
from esl_app.sim.emulator.wire import FrameParser


@pytest.fixture
def server():
    sw = Switch(time_scale=0.02)
    srv = InboundServer(sw, port=0).start()
    yield srv
    srv.stop()


class Client:
    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=5)
        self.parser = FrameParser()
        self.frames = []

    def frame(self):
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.frames.extend(self.parser.feed(data))
        return self.frames.pop(0)

    def cmd(self, text):
        self.sock.sendall(text.encode())
        return self.frame()


def test_auth_good_and_api(server):
    c = Client(server.address)
    assert c.frame().raw == b"Content-Type: auth/request\n\n"
    assert c.cmd("api status\n\n").header("Reply-Text") == "-ERR command not found"
    assert c.cmd("auth ClueCon\n\n").raw == (
        b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
    fr = c.cmd("api status\n\n")
    assert fr.content_type == "api/response"
    assert fr.body.startswith(b"UP 0 years, ")
    assert int(fr.header("Content-Length")) == len(fr.body)
    fr = c.cmd("api show channels as json\n\n")
    assert json.loads(fr.body) == {"row_count": 0}
    assert c.cmd("event plain ALL\n\n").header("Reply-Text") == (
        "+OK event listener enabled plain")
    fr = c.cmd("bgapi global_getvar hostname\n\n")
    job = fr.header("Job-UUID")
    ev = c.frame()
    hdrs, body = ev.event()
    assert hdrs["Event-Name"] == "BACKGROUND_JOB" and hdrs["Job-UUID"] == job
    assert body == "ivr-emulator"
    assert c.cmd("exit\n\n").header("Reply-Text") == "+OK bye"
    fr = c.frame()
    assert fr.raw.startswith(b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n")


def test_auth_bad_disconnects(server):
    c = Client(server.address)
    c.frame()
    assert c.cmd("auth wrong\n\n").header("Reply-Text") == "-ERR invalid"
    assert c.frame().content_type == "text/disconnect-notice"
    with pytest.raises(EOFError):
        c.frame()


def test_acl_rude_rejection():
    srv = InboundServer(Switch(), port=0, acl=["10.0.0.0/8"]).start()
    try:
        c = Client(srv.address)
        fr = c.frame()
        assert fr.content_type == "text/rude-rejection"
        assert fr.body == b"Access Denied, go away.\n"
    finally:
        srv.stop()


def test_greenswitch_inbound_login(server):
    host, port = server.address
    esl = InboundESL(host=host, port=port, password="ClueCon")
    esl.connect()
    try:
        res = esl.send("api status")
        assert "UP 0 years" in res.data
    finally:
        esl.stop()


def test_show_channels_lists_outbound_calls_and_kill(server):
    bot = FakeBot()
    try:
        call = EmulatedCall(bot.address, did="1001", switch=server.switch, time_scale=0.02,
                            variables={"ivr_tenant": "sunrise"}).start()
        bot.accept()
        c = Client(server.address)
        c.frame()
        c.cmd("auth ClueCon\n\n")
        rows = json.loads(c.cmd("api show channels as json\n\n").body)
        assert rows["row_count"] == 1
        assert rows["rows"][0]["uuid"] == call.uuid and rows["rows"][0]["dest"] == "1001"
        fr = c.cmd(f"api uuid_getvar {call.uuid} ivr_tenant\n\n")
        assert fr.body == b"sunrise"
        assert c.cmd(f"api uuid_kill {call.uuid}\n\n").body == b"+OK\n"
        assert call.wait_ended(2)
        gevent.sleep(0)
        assert json.loads(c.cmd("api show channels as json\n\n").body) == {"row_count": 0}
    finally:
        bot.stop()


def test_originate_loopback_places_call_into_bot(server):
    bot = FakeBot()
    try:
        server.switch.bot_address = bot.address
        c = Client(server.address)
        c.frame()
        c.cmd("auth ClueCon\n\n")
        fr = c.cmd("api originate loopback/1001/default &park\n\n")
        assert fr.body.startswith(b"+OK ")
        a_leg = fr.body[4:].strip().decode()
        # as mod_loopback: the answer is the parked a-leg; the b-leg is the call in the bot
        b_leg = c.cmd(f"api uuid_getvar {a_leg} other_loopback_leg_uuid\n\n").body.decode()
        assert b_leg != a_leg and b_leg in server.switch.channels
        assert c.cmd(f"api uuid_getvar {a_leg} loopback_leg\n\n").body == b"A"
        assert c.cmd(f"api uuid_getvar {a_leg} current_application\n\n").body == b"park"
        bot.accept()
        bot.send("connect\n\n")
        raw = bot.read_raw_until_blank().decode()
        assert f"Unique-ID: {b_leg}\n" in raw
        assert "Caller-Destination-Number: 1001\n" in raw
        assert f"variable_other_loopback_leg_uuid: {a_leg}\n" in raw
        assert "variable_loopback_leg: B\n" in raw
        assert c.cmd(f"api uuid_kill {a_leg}\n\n").body == b"+OK\n"
        with gevent.Timeout(5):
            while server.switch.channels:  # the b-leg hangs up with its a-leg
                gevent.sleep(0.01)
    finally:
        bot.stop()
