"""The media server's hand-written WebSocket path, byte by byte over real TCP.

Frames are built here per RFC 6455 (not by a client library) so that the edge
cases the fast path must get right can be sent exactly: frames split across
reads, several per read, control frames between fragments, unmasked frames.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

import gevent
import gevent.event
import pytest

from esl_app.media.server import MediaRegistry, MediaServer, fork_metadata

# every test on both frame paths (the compiled loop and its Python twin)
pytestmark = pytest.mark.usefixtures("both_frame_paths")


class Sink:
    def __init__(self, fail_on_audio: bool = False) -> None:
        self.meta = None
        self.audio = bytearray()
        self.calls = 0
        self.reasons: list[str] = []
        self.ended = gevent.event.Event()
        self.fail = fail_on_audio

    def on_stream_start(self, metadata):
        self.meta = metadata

    def on_audio(self, pcm):
        if self.fail:
            raise RuntimeError("sink broke")
        self.calls += 1
        self.audio += pcm

    def on_stream_end(self, reason):
        self.reasons.append(reason)
        self.ended.set()


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
          rsv: int = 0) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Client:
    """A raw WebSocket client: handshake, then whatever bytes the test sends."""

    def __init__(self, server: MediaServer, path: str, headers: str | None = None) -> None:
        host, port = server.address
        self.sock = socket.create_connection((host, port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        hdrs = headers if headers is not None else (
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: audio.drachtio.org\r\n")
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{hdrs}\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                break
            self.buf += data
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1]) if head else 0
        self.head = head.decode("latin-1")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> tuple[int, bytes]:
        """Next server frame (opcode, payload); server frames must be unmasked."""
        while True:
            if len(self.buf) >= 2:
                assert not self.buf[1] & 0x80, "server frames are never masked"
                n = self.buf[1] & 0x7F
                hdr = 2
                if n == 126:
                    n, hdr = struct.unpack("!H", self.buf[2:4])[0], 4
                if len(self.buf) >= hdr + n:
                    op, payload = self.buf[0] & 0x0F, self.buf[hdr:hdr + n]
                    self.buf = self.buf[hdr + n:]
                    return op, payload
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    def close_code(self) -> int:
        while True:
            op, payload = self.read_frame()
            if op == 0x8:
                return struct.unpack("!H", payload[:2])[0]


@pytest.fixture
def media():
    registry = MediaRegistry()
    server = MediaServer("127.0.0.1", 0, registry, stall_ms=2000, max_message=100_000).start()
    yield server, registry
    server.stop()


def started(media, uuid="c1", sink=None):
    server, registry = media
    sink = sink or Sink()
    token = registry.register(uuid, sink)
    c = Client(server, f"/fork/{uuid}")
    assert c.status == 101 and "Sec-WebSocket-Protocol: audio.drachtio.org" in c.head
    c.send(frame(0x1, fork_metadata(token).encode()))
    return c, sink


def wait_audio(sink, n, timeout=5.0):
    with gevent.Timeout(timeout):
        while len(sink.audio) < n:
            gevent.sleep(0.005)


def pcm(i: int, n: int = 320) -> bytes:
    return bytes((i * 7 + j) % 251 for j in range(n))


def test_frames_split_across_reads_arrive_whole(media):
    c, sink = started(media)
    data = b"".join(frame(0x2, pcm(i)) for i in range(5))
    for k in range(0, len(data), 7):  # 7-byte pieces: headers and masks split too
        c.send(data[k:k + 7])
        gevent.sleep(0.001)
    wait_audio(sink, 5 * 320)
    assert bytes(sink.audio) == b"".join(pcm(i) for i in range(5))


def test_several_frames_in_one_read_keep_their_order(media):
    c, sink = started(media)
    c.send(b"".join(frame(0x2, pcm(i)) for i in range(20)))
    wait_audio(sink, 20 * 320)
    assert bytes(sink.audio) == b"".join(pcm(i) for i in range(20))


def test_ping_between_binary_frames_is_answered_and_audio_is_intact(media):
    c, sink = started(media)
    c.send(frame(0x2, pcm(1)) + frame(0x9, b"hello") + frame(0x2, pcm(2)))
    assert c.read_frame() == (0xA, b"hello")
    wait_audio(sink, 640)
    assert bytes(sink.audio) == pcm(1) + pcm(2)


def test_fragmented_audio_with_a_ping_inside_and_fragmented_metadata(media):
    server, registry = media
    sink = Sink()
    token = registry.register("frag", sink)
    c = Client(server, "/fork/frag")
    meta = fork_metadata(token, did="1001").encode()
    c.send(frame(0x1, meta[:10], fin=False) + frame(0x0, meta[10:]))
    c.send(frame(0x2, pcm(3)[:100], fin=False) + frame(0x9, b"p")
           + frame(0x0, pcm(3)[100:200], fin=False) + frame(0x0, pcm(3)[200:]))
    assert c.read_frame() == (0xA, b"p")
    wait_audio(sink, 320)
    assert sink.meta == {"token": token, "did": "1001"}
    assert bytes(sink.audio) == pcm(3)


def test_large_frames_with_16_and_64_bit_lengths(media):
    c, sink = started(media)
    big = os.urandom(70_000)  # 64-bit length field
    c.send(frame(0x2, pcm(4, 1000)) + frame(0x2, big))
    wait_audio(sink, 71_000)
    assert bytes(sink.audio) == pcm(4, 1000) + big


def test_odd_sized_frames_unmask_exactly(media):
    c, sink = started(media)
    chunks = [os.urandom(n) for n in (1, 2, 3, 5, 125, 126, 127, 321)]
    c.send(b"".join(frame(0x2, x) for x in chunks))
    wait_audio(sink, sum(map(len, chunks)))
    assert bytes(sink.audio) == b"".join(chunks)


@pytest.mark.parametrize("bad,code", [
    (frame(0x2, b"\0" * 320, mask=False), 1002),  # client frames must be masked
    (frame(0x2, b"\0" * 4, rsv=0x40), 1002),  # no extension negotiated
    (frame(0x3, b"x"), 1002),  # reserved opcode
    (frame(0x0, b"x"), 1002),  # continuation without a message
    (frame(0x9, b"x" * 126), 1002),  # control frames are at most 125 bytes
    (frame(0x9, b"x", fin=False), 1002),  # and never fragmented
    (frame(0x1, b"\xff\xfe"), 1007),  # text must be UTF-8
    (frame(0x2, b"\0" * 100_001), 1009),  # above max_message
    (frame(0x8, b"\x03"), 1002),  # a close payload of one byte
    (frame(0x8, struct.pack("!H", 1005)), 1002),  # a code that must never be sent
])
def test_protocol_violations_close_with_the_right_code(media, bad, code):
    c, sink = started(media)
    c.send(frame(0x2, pcm(5)) + bad)
    assert c.close_code() == code
    assert sink.ended.wait(5)
    assert bytes(sink.audio) == pcm(5)  # what came before the violation was delivered


def test_new_message_inside_a_fragmented_one_is_refused(media):
    c, sink = started(media)
    c.send(frame(0x2, b"ab", fin=False) + frame(0x2, b"cd"))
    assert c.close_code() == 1002


def test_close_handshake_is_answered_with_the_peer_code(media):
    c, sink = started(media)
    c.send(frame(0x2, pcm(6)) + frame(0x8, struct.pack("!H", 4001) + b"bye"))
    assert c.close_code() == 4001
    assert sink.ended.wait(5)
    assert sink.reasons == ["closed:4001"] and bytes(sink.audio) == pcm(6)
    assert c.sock.recv(10) == b""  # then the server drops the connection


def test_empty_close_is_a_normal_close(media):
    c, sink = started(media)
    c.send(frame(0x8, b""))
    assert c.close_code() == 1000
    assert sink.ended.wait(5) and sink.reasons == ["closed"]


def test_peer_vanishing_is_a_disconnect(media):
    c, sink = started(media)
    c.send(frame(0x2, pcm(7)))
    wait_audio(sink, 320)
    c.sock.close()
    assert sink.ended.wait(5) and sink.reasons == ["disconnected"]


def test_a_broken_sink_closes_only_its_own_stream(media):
    a, sink_a = started(media, "a", Sink(fail_on_audio=True))
    b, sink_b = started(media, "b")
    a.send(frame(0x2, pcm(8)))
    assert a.close_code() == 1011
    assert sink_a.ended.wait(5) and sink_a.reasons == ["disconnected"]
    b.send(frame(0x2, pcm(9)))
    wait_audio(sink_b, 320)
    assert not sink_b.reasons


def test_handshake_errors(media):
    server, registry = media
    registry.register("h1", Sink())
    assert Client(server, "/fork/h1", headers="Upgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n").status == 400
    key = base64.b64encode(os.urandom(16)).decode()
    assert Client(server, "/fork/h1", headers=f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 8\r\n").status == 426
    assert Client(server, "/other").status == 404


def test_many_streams_share_one_reader(media):
    server, _ = media
    clients = [started(media, f"s{i}") for i in range(30)]
    for k in range(10):
        for i, (c, _) in enumerate(clients):
            c.send(frame(0x2, pcm(i + k)))
        gevent.sleep(0.02)
    for i, (_, sink) in enumerate(clients):
        wait_audio(sink, 3200)
        assert bytes(sink.audio) == b"".join(pcm(i + k) for k in range(10))
    assert server.active_streams == 30
    stats = server.reader_stats
    assert stats["reads"] >= 30 and stats["batches"] < stats["reads"]  # reads are batched


def test_c_unmask_matches_the_big_int_xor_and_the_rfc_byte_loop():
    from esl_app.media import server as srv

    assert srv._unmask is not srv._unmask_py, "websockets' C apply_mask should be in use"
    for n in [*range(0, 70), 125, 126, 320, 321, 640, 4099]:
        data, key = os.urandom(n), os.urandom(4)
        want = bytes(b ^ key[i % 4] for i, b in enumerate(data))
        assert srv._unmask(data, key) == want
        assert srv._unmask_py(data, key) == want


def test_a_run_of_audio_frames_then_text_ping_and_a_partial_frame_in_one_read(media):
    c, sink = started(media)
    tail = frame(0x2, pcm(9))
    c.send(b"".join(frame(0x2, pcm(i)) for i in range(3)) + frame(0x1, b"note")
           + frame(0x2, pcm(3)) + frame(0x9, b"hi") + frame(0x2, pcm(4)) + tail[:100])
    assert c.read_frame() == (0xA, b"hi")
    wait_audio(sink, 5 * 320)
    c.send(tail[100:])
    wait_audio(sink, 6 * 320)
    assert bytes(sink.audio) == b"".join(pcm(i) for i in (0, 1, 2, 3, 4, 9))


def test_a_too_big_frame_after_a_run_of_audio_closes_1009_and_keeps_the_audio():
    registry = MediaRegistry()
    server = MediaServer("127.0.0.1", 0, registry, stall_ms=2000, max_message=1000).start()
    try:
        c, sink = started((server, registry))
        c.send(frame(0x2, pcm(1)) + frame(0x2, pcm(2)) + frame(0x2, bytes(2000)))
        assert c.close_code() == 1009
        assert sink.ended.wait(5)
        assert bytes(sink.audio) == pcm(1) + pcm(2)
    finally:
        server.stop()


class DecidingSink(Sink):
    """Returns ``urgent`` from ``on_audio``, as a call's VAD does mid barge-in."""

    def __init__(self, urgent: bool) -> None:
        super().__init__()
        self.urgent = urgent
        self.times: list[float] = []

    def on_audio(self, pcm):
        super().on_audio(pcm)
        self.times.append(time.monotonic())
        return self.urgent


@pytest.mark.parametrize("urgent", [True, False])
def test_a_stream_whose_sink_is_deciding_is_read_between_batches(urgent):
    registry = MediaRegistry()
    # batches 0.6 s apart: without the urgent lane a frame may wait for the whole pause
    server = MediaServer("127.0.0.1", 0, registry, batch_ms=600, max_batch_ms=600,
                         urgent_ms=5).start()
    try:
        c, sink = started((server, registry), "u1", DecidingSink(urgent))
        with gevent.Timeout(5):
            while sink.meta is None:
                gevent.sleep(0.005)
        gevent.sleep(0.05)  # handed to the reader, which now waits for data
        c.send(frame(0x2, pcm(0)))
        wait_audio(sink, 320)
        gevent.sleep(0.05)  # the reader is inside its 600 ms pause
        sent = time.monotonic()
        c.send(frame(0x2, pcm(1)))
        wait_audio(sink, 640)
        waited = sink.times[-1] - sent
        stats = server.reader_stats
    finally:
        server.stop()
    assert bytes(sink.audio) == pcm(0) + pcm(1)
    if urgent:
        assert waited < 0.3 and stats["urgent_reads"] >= 1
    else:
        assert waited > 0.3 and stats["urgent_reads"] == 0
