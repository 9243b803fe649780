import json
import struct

import gevent
import gevent.event
import pytest
import websocket

from esl_app.media.server import MediaRegistry, MediaServer, fork_metadata


class Sink:
    def __init__(self):
        self.meta = None
        self.audio = bytearray()
        self.reasons = []
        self.ended = gevent.event.Event()
        self.got = gevent.event.Event()

    def on_stream_start(self, metadata):
        self.meta = metadata

    def on_audio(self, pcm):
        self.audio += pcm
        self.got.set()

    def on_stream_end(self, reason):
        self.reasons.append(reason)
        self.ended.set()


@pytest.fixture
def media():
    registry = MediaRegistry()
    server = MediaServer("127.0.0.1", 0, registry, stall_ms=300).start()
    yield server, registry
    server.stop()


def connect(server, uuid):
    host, port = server.address
    return websocket.create_connection(f"ws://{host}:{port}/fork/{uuid}",
                                       subprotocols=["audio.drachtio.org"], timeout=5)


def close_code(ws):
    while True:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", frame.data[:2])[0]


def test_valid_fork_delivers_metadata_and_exact_bytes(media):
    server, registry = media
    sink = Sink()
    token = registry.register("abc-123", sink)
    ws = connect(server, "abc-123")
    assert ws.getsubprotocol() == "audio.drachtio.org"
    ws.send(fork_metadata(token, did="1001"))
    frames = [bytes((i + j) % 256 for j in range(320)) for i in range(25)]
    frames.append(b"\x01\x02\x03")  # odd chunking is passed through as is
    for f in frames:
        ws.send_binary(f)
    # server -> FS JSON text frame
    assert sink.got.wait(5)
    while len(sink.audio) < sum(map(len, frames)):
        gevent.sleep(0.01)
    assert server.send_json("abc-123", {"type": "killAudio"})
    assert json.loads(ws.recv()) == {"type": "killAudio"}
    ws.close(1000)
    assert sink.ended.wait(5)
    assert sink.meta == {"token": token, "did": "1001"}
    assert bytes(sink.audio) == b"".join(frames)
    assert sink.reasons == ["closed"]


def test_unknown_uuid_is_refused(media):
    server, registry = media
    ws = connect(server, "nobody")
    assert close_code(ws) == 1008


def test_bad_token_is_refused(media):
    server, registry = media
    sink = Sink()
    registry.register("call-1", sink)
    ws = connect(server, "call-1")
    ws.send(json.dumps({"token": "wrong"}))
    assert close_code(ws) == 1008
    assert sink.meta is None and not sink.reasons
    assert not server.send_json("call-1", {"type": "killAudio"})


def test_audio_before_metadata_is_refused(media):
    server, registry = media
    registry.register("call-2", Sink())
    ws = connect(server, "call-2")
    ws.send_binary(b"\0" * 320)
    assert close_code(ws) == 1008


def test_stall_is_noticed(media):
    server, registry = media
    sink = Sink()
    token = registry.register("call-3", sink)
    ws = connect(server, "call-3")
    ws.send(fork_metadata(token))
    ws.send_binary(b"\0" * 320)
    assert sink.ended.wait(5)  # nothing more is sent: stall_ms=300 passes
    assert sink.reasons == ["stalled"]
    assert close_code(ws) == 1011


def test_unregister_closes_stream_and_reconnect_replaces(media):
    server, registry = media
    sink = Sink()
    token = registry.register("call-4", sink)
    ws1 = connect(server, "call-4")
    ws1.send(fork_metadata(token))
    ws2 = connect(server, "call-4")
    ws2.send(fork_metadata(token))
    assert sink.ended.wait(5)
    assert sink.reasons == ["replaced"]
    assert close_code(ws1) == 1000
    registry.unregister("call-4")
    assert close_code(ws2) == 1000
    assert sink.reasons == ["replaced"]  # unregister does not notify


def test_bad_path_is_rejected(media):
    server, _ = media
    host, port = server.address
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"ws://{host}:{port}/other", timeout=5)


def test_a_batch_of_many_streams_yields_to_the_hub_and_loses_nothing(monkeypatch):
    """Many ready streams in one batch: the reader yields every few streams (so set-up and
    barge-in commands are not held behind ~10 ms of reading) and every byte still lands
    with its own call, in order."""
    import esl_app.media.server as media_server

    monkeypatch.setattr(media_server, "_YIELD_EVERY", 8)
    yields = []
    real_cooperate = media_server.cooperate
    real_sleep = gevent.sleep

    def counting_cooperate():
        yields.append(1)
        return real_cooperate()

    monkeypatch.setattr(media_server, "cooperate", counting_cooperate)
    registry = MediaRegistry()
    server = MediaServer("127.0.0.1", 0, registry, batch_ms=40.0).start()
    try:
        sinks, socks = [], []
        for i in range(40):
            sink = Sink()
            token = registry.register(f"call-{i}", sink)
            ws = connect(server, f"call-{i}")
            ws.send(fork_metadata(token))
            sinks.append(sink)
            socks.append(ws)
        payloads = [[bytes((i * 7 + k + j) % 256 for j in range(320)) for k in range(6)]
                    for i in range(40)]
        for k in range(6):
            for ws, frames in zip(socks, payloads, strict=True):
                ws.send_binary(frames[k])
        for sink, frames in zip(sinks, payloads, strict=True):
            deadline = gevent.get_hub().loop.now() + 5
            while len(sink.audio) < 6 * 320 and gevent.get_hub().loop.now() < deadline:
                real_sleep(0.01)
            assert bytes(sink.audio) == b"".join(frames)
        assert yields, "a batch of 40 ready streams never yielded"
        for ws in socks:
            ws.close(1000)
    finally:
        server.stop()


def test_a_stopped_server_is_freed_without_the_cyclic_collector():
    """Stopping kills the reader's greenlets; their GreenletExit must not tie the reader
    (and every stream's entry and sink it reaches) into a cycle: workers run the cyclic
    collector every 10 minutes, and a test run later would find it among its garbage."""
    import gc
    import weakref

    registry = MediaRegistry()
    server = MediaServer("127.0.0.1", 0, registry, stall_ms=300).start()
    sink = Sink()
    token = registry.register("call-x", sink)
    ws = connect(server, "call-x")
    ws.send(fork_metadata(token))
    ws.send_binary(b"\x01\x02" * 160)
    assert sink.got.wait(5)
    reader = weakref.ref(server._reader)
    ws.close()
    gc.collect()
    gc.disable()
    try:
        server.stop()
        del server
        gevent.sleep(0.05)  # the kills run, the greenlets end
        assert reader() is None, "the stopped reader is left to the cyclic GC"
    finally:
        gc.enable()


SENDER = r"""
import sys, time, websocket
url, meta, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
ws = websocket.create_connection(url, subprotocols=["audio.drachtio.org"], timeout=5)
ws.send(meta)
t0 = time.monotonic(); n = 0
while time.monotonic() - t0 < seconds:
    ws.send_binary(b"\x01\x00" * 160); n += 1
    time.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))
ws.close()
"""


def test_a_held_up_hub_does_not_call_a_flowing_stream_stalled(media):
    """Frames kept coming while this process was stopped: the stream is late, not stalled.

    A worker's hub can be held up for longer than ``stall_ms`` (a blocking syscall, a
    page fault on a slow disk, a starved core: seen at 1000 calls, where 600 streams
    were then closed as stalled and their calls handed to a human). The frames wait
    in the socket; the watchdog must read them before it judges.
    """
    import subprocess
    import sys

    from gevent import monkey

    server, registry = media
    sink = Sink()
    token = registry.register("call-held", sink)
    host, port = server.address
    sender = subprocess.Popen([sys.executable, "-c", SENDER, f"ws://{host}:{port}/fork/call-held",
                               fork_metadata(token), "3"])
    try:
        assert sink.got.wait(10)
        monkey.get_original("time", "sleep")(1.0)  # the hub stops: 3 × stall_ms
        before = len(sink.audio)
        gevent.sleep(0.5)
        assert not sink.reasons, sink.reasons
        assert len(sink.audio) > before
        sender.wait(10)
        assert sink.ended.wait(5) and sink.reasons == ["closed"]
    finally:
        if sender.poll() is None:
            sender.kill()
