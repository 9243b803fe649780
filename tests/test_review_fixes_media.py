"""A fork whose FreeSWITCH side stops reading must cost only its own stream.

The streams share one reader greenlet (and one watchdog): if anything on them waited
for a stuck socket, every other call would lose its audio and be closed as "stalled".
Over real TCP: the stuck peer's socket buffer is filled with ``send_json`` frames.
"""

from __future__ import annotations

import time

import gevent
import pytest
from test_media_frames import Sink, frame, pcm, started, wait_audio

from esl_app.media.server import MediaRegistry, MediaServer


@pytest.fixture
def media():
    registry = MediaRegistry()
    server = MediaServer("127.0.0.1", 0, registry, stall_ms=600, max_message=100_000).start()
    yield server, registry
    server.stop()


def _stuck(server: MediaServer, uuid: str, quiet: float = 0.1
           ) -> tuple[gevent.Greenlet, list[int]]:
    """Fill the stream's socket with JSON frames until a write blocks (peer not reading)."""
    sent = [0]
    pad = "x" * 65536

    def fill() -> bool:
        while server.send_json(uuid, {"type": "noise", "pad": pad}):
            sent[0] += 1
        return False

    filler = gevent.spawn(fill)
    last = -1
    with gevent.Timeout(20):
        while sent[0] != last or sent[0] == 0:  # no progress for a while: the writer waits
            last = sent[0]
            gevent.sleep(quiet)
    assert not filler.dead
    return filler, sent


class _Streamer:
    """Streams 20 ms frames at real-time pace in a greenlet; notes each frame's delay."""

    def __init__(self, client, sink: Sink) -> None:
        self.client = client
        self.sink = sink
        self.worst = 0.0
        self.frames = 0
        self._stop = False
        self.glet = gevent.spawn(self._run)

    def _run(self) -> None:
        base = len(self.sink.audio)
        while not self._stop:
            t0 = time.monotonic()
            self.client.send(frame(0x2, pcm(self.frames)))
            self.frames += 1
            try:
                wait_audio(self.sink, base + self.frames * 320, timeout=1.0)
            except gevent.Timeout:
                self.worst = float("inf")
                return
            delay = time.monotonic() - t0
            self.worst = max(self.worst, delay)
            gevent.sleep(max(0.0, 0.02 - delay))

    def stop(self) -> float:
        self._stop = True
        self.glet.join(2)
        return self.worst


def test_a_stuck_peer_breaking_the_protocol_does_not_block_the_reader(media):
    """The reader closes the stuck stream (protocol error) without waiting for its socket."""
    server, _ = media
    a, sink_a = started(media, "a")
    b, sink_b = started(media, "b")
    streamer = _Streamer(b, sink_b)
    try:
        a.send(frame(0x2, pcm(1)))
        wait_audio(sink_a, 320)
        filler, _ = _stuck(server, "a")
        a.send(frame(0x2, b"\0" * 4, mask=False))  # unmasked: the reader must close "a"
        gevent.sleep(1.2)  # twice the stall limit
        worst = streamer.stop()
        assert worst < 0.25, f"another stream's frames were held up {worst:.3f} s"
        assert streamer.frames > 40
        assert not sink_b.reasons  # "b" was never taken for stalled
        assert sink_a.ended.wait(2) and sink_a.reasons == ["closed:1002"]
        filler.join(3)  # the stuck write was released when "a" was dropped
        assert filler.dead and filler.value is False
        # "b" still takes commands (barge-in: killAudio) and audio
        assert server.send_json("b", {"type": "killAudio"})
        assert b.read_frame() == (0x1, b'{"type":"killAudio"}')
        assert server.active_streams == 1
    finally:
        streamer.stop()
        a.sock.close()
        b.sock.close()


def test_a_stuck_peer_that_also_goes_silent_does_not_block_the_watchdog(media):
    """The watchdog closes the silent stuck stream without waiting; the others stay up."""
    server, _ = media
    a, sink_a = started(media, "a")  # first in the watchdog's scan
    b, sink_b = started(media, "b")
    c, sink_c = started(media, "c")  # silent too: the watchdog must reach it after "a"
    streamer = _Streamer(b, sink_b)
    try:
        filler, _ = _stuck(server, "a")  # stuck well before the stall limit
        gevent.sleep(1.2)
        worst = streamer.stop()
        assert worst < 0.25, f"another stream's frames were held up {worst:.3f} s"
        assert sink_a.ended.wait(2) and sink_a.reasons[0] in ("stalled", "disconnected")
        assert sink_c.ended.wait(2) and sink_c.reasons == ["stalled"]
        assert not sink_b.reasons
        filler.join(3)
        assert filler.dead and filler.value is False
    finally:
        streamer.stop()
        for client in (a, b, c):
            client.sock.close()


def test_a_write_to_a_peer_that_never_reads_is_bounded():
    """send_json gives up (False) instead of holding the caller's greenlet for ever."""
    registry = MediaRegistry()
    server = MediaServer("127.0.0.1", 0, registry, stall_ms=10_000, send_timeout=0.5).start()
    media = server, registry
    a, sink_a = started(media, "a")
    b, sink_b = started(media, "b")
    try:
        t0 = time.monotonic()
        sent = 0
        with gevent.Timeout(10):
            while server.send_json("a", {"type": "noise", "pad": "x" * 65536}):
                sent += 1
                b.send(frame(0x2, pcm(sent)))  # "b" keeps streaming meanwhile
        assert sent > 0
        assert time.monotonic() - t0 < 10
        assert sink_a.ended.wait(2) and sink_a.reasons == ["disconnected"]
        assert not server.send_json("a", {"type": "killAudio"})  # dropped, not half-written
        assert not sink_b.reasons
        assert server.send_json("b", {"type": "killAudio"})
    finally:
        a.sock.close()
        b.sock.close()
        server.stop()
