import gevent
import gevent.event
import gevent.queue

from esl_app.media.endpoint import TurnDetector
from esl_app.media.server import MediaRegistry, MediaServer, fork_metadata
from esl_app.sim.emulator.audio import AudioFork, parse_rate


class FakeCall:
    def __init__(self):
        self.lines = gevent.queue.Queue()
        self.hung_up = False
        self.custom = []

    def next_utterance(self, timeout=None):
        try:
            return self.lines.get(timeout=timeout) or None
        except gevent.queue.Empty:
            return None

    def fire_custom(self, subclass, headers=(), body=None):
        self.custom.append(subclass)


class VadSink:
    def __init__(self):
        self.det = TurnDetector(8000, 2, 120, 600)
        self.events = []
        self.meta = None
        self.bytes = 0
        self.ended = gevent.event.Event()
        self.turn_done = gevent.event.Event()

    def on_stream_start(self, metadata):
        self.meta = metadata

    def on_audio(self, pcm):
        self.bytes += len(pcm)
        for ev in self.det.feed(pcm):
            self.events.append(ev)
            if ev.kind == "speech_end":
                self.turn_done.set()

    def on_stream_end(self, reason):
        self.reason = reason
        self.ended.set()


def test_emulated_fork_streams_speech_that_the_vad_finds():
    registry = MediaRegistry()
    server = MediaServer("127.0.0.1", 0, registry, stall_ms=2000).start()
    try:
        sink = VadSink()
        token = registry.register("emu-1", sink)
        call = FakeCall()
        fork = AudioFork(voice="Joanna", lead_ms=200)
        host, port = server.address
        fork.start(f"ws://{host}:{port}/fork/emu-1", "mono", "8k", fork_metadata(token), call)
        assert fork.connected.wait(5)
        call.lines.put("yes please")
        assert sink.turn_done.wait(10)
        fork.stop()
        assert sink.ended.wait(5) and fork.ended.wait(5)
        assert sink.reason == "closed"
        assert sink.meta == {"token": token}
        assert call.custom[0] == "mod_audio_fork::connect"
        assert sink.bytes == fork.frames_sent * 320
        rec = fork.records[0]
        start = sink.events[0]
        assert start.kind == "speech_start"
        # the detector's onset is the first audible frame the emulator sent (stream ms)
        assert abs(start.at_ms - rec.speech_stream_ms) <= 40
    finally:
        server.stop()


def test_parse_rate():
    assert parse_rate("8k") == 8000 and parse_rate("16k") == 16000 and parse_rate("8000") == 8000


class CountSink:
    def __init__(self):
        self.bytes = 0
        self.ended = gevent.event.Event()
        self.reason = None

    def on_stream_start(self, metadata):
        pass

    def on_audio(self, pcm):
        self.bytes += len(pcm)

    def on_stream_end(self, reason):
        self.reason = reason
        self.ended.set()


def test_one_pacer_keeps_many_forks_at_real_time():
    import time

    registry = MediaRegistry()
    server = MediaServer("127.0.0.1", 0, registry, stall_ms=2000).start()
    host, port = server.address
    try:
        forks, sinks = [], []
        for i in range(20):
            sink = CountSink()
            token = registry.register(f"rt-{i}", sink)
            fork = AudioFork(lead_ms=0)
            fork.start(f"ws://{host}:{port}/fork/rt-{i}", "mono", "8k", fork_metadata(token),
                       FakeCall())
            forks.append(fork)
            sinks.append(sink)
        for f in forks:
            assert f.connected.wait(5)
        t0 = time.monotonic()
        counts0 = [f.frames_sent for f in forks]
        gevent.sleep(1.0)
        elapsed = time.monotonic() - t0
        for f, c0 in zip(forks, counts0, strict=True):
            assert abs((f.frames_sent - c0) - elapsed / 0.02) <= 3  # 50 frames a second
        for f in forks:
            f.stop()
        for f, sink in zip(forks, sinks, strict=True):
            assert f.ended.wait(5) and sink.ended.wait(5)
            assert sink.reason == "closed" and f.close_code == 1000
            assert sink.bytes == f.frames_sent * 320  # every frame counted as sent arrived
            assert f.late == 0
    finally:
        server.stop()


def test_a_close_from_the_server_ends_the_fork():
    registry = MediaRegistry()
    server = MediaServer("127.0.0.1", 0, registry, stall_ms=2000).start()
    host, port = server.address
    try:
        call = FakeCall()
        token = registry.register("sc-1", CountSink())
        fork = AudioFork(lead_ms=0)
        fork.start(f"ws://{host}:{port}/fork/sc-1", "mono", "8k", fork_metadata(token), call)
        assert fork.connected.wait(5)
        gevent.sleep(0.1)
        registry.unregister("sc-1")  # hang-up on the bot's side closes the stream (1000)
        assert fork.ended.wait(5)
        assert fork.close_code == 1000
        assert call.custom == ["mod_audio_fork::connect", "mod_audio_fork::disconnect"]
    finally:
        server.stop()


def test_frames_on_the_wire_are_masked_l16_after_the_metadata():
    """What mod_audio_fork sends: a text frame with the metadata, then masked 320-byte
    binary frames, each with its own mask key."""
    import socket
    import struct

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    fork = AudioFork(lead_ms=0)
    fork.start(f"ws://127.0.0.1:{port}/fork/w-1", "mono", "8k", '{"token":"t"}', FakeCall())
    conn, _ = lsock.accept()
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += conn.recv(4096)
    head, _, buf = buf.partition(b"\r\n\r\n")
    assert b"GET /fork/w-1 HTTP/1.1" in head and b"audio.drachtio.org" in head
    import base64
    import hashlib

    key = [ln.split(b": ")[1] for ln in head.split(b"\r\n")
           if ln.lower().startswith(b"sec-websocket-key")][0]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                              .digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Protocol: audio.drachtio.org\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    frames = []
    while len(frames) < 12:
        buf += conn.recv(65536)
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            hdr = 2 + (2 if n == 126 else 0)
            if n == 126 and len(buf) >= 4:
                n = struct.unpack("!H", buf[2:4])[0]
            if len(buf) < hdr + 4 + n:
                break
            frames.append((buf[0], buf[1] & 0x80, buf[hdr:hdr + 4],
                           bytes(b ^ buf[hdr + i % 4] for i, b in
                                 enumerate(buf[hdr + 4:hdr + 4 + n]))))
            buf = buf[hdr + 4 + n:]
    fork.stop()
    conn.close()
    lsock.close()
    assert frames[0][0] == 0x81 and frames[0][3] == b'{"token":"t"}'
    binary = frames[1:]
    assert all(b0 == 0x82 and masked and len(p) == 320 and p == bytes(320)
               for b0, masked, _k, p in binary)
    assert len({k for _b, _m, k, _p in binary}) > 1  # mask keys vary


def test_a_caller_line_survives_the_first_asker_hanging_up(monkeypatch):
    """Two emulated callers ask for the same line; the first is killed mid-synthesis
    (its call ended). The second must get the PCM, not the first's GreenletExit."""
    from esl_app.sim.emulator import audio as emu_audio

    made: list[str] = []

    def slow_pcm(text, voice, rate, speed):
        made.append(text)
        gevent.sleep(0.05)  # espeak-ng in a subprocess
        return b"\x01\x00" * 160

    monkeypatch.setattr(emu_audio, "synthesize_pcm", slow_pcm)
    line = "a line nobody said before in this process"
    first = gevent.spawn(emu_audio.synthesize_cached, line, "en-us", 8000, 160)
    second = gevent.spawn(emu_audio.synthesize_cached, line, "en-us", 8000, 160)
    gevent.sleep(0.01)
    first.kill()
    assert second.get(timeout=5) == b"\x01\x00" * 160
    assert made == [line, line]
    third = emu_audio.synthesize_cached(line, "en-us", 8000, 160)  # cached now
    assert third == b"\x01\x00" * 160 and made == [line, line]


def test_prepared_lines_need_no_synthesis_at_first_use(monkeypatch):
    """prepare_lines() leaves each line where a fork's first use finds it: the PCM in
    the synthesis cache and its masked frames in the line cache."""
    from esl_app.sim.emulator import audio as emu_audio

    made: list[str] = []

    def pcm_of(text, voice, rate, speed):
        made.append(text)
        return b"\x10\x27" * 800  # 100 ms of audible level at 8 kHz

    monkeypatch.setattr(emu_audio, "synthesize_pcm", pcm_of)
    lines = ["prepared line one", "prepared line two", "prepared line one"]
    out = emu_audio.prepare_lines(lines, lead_ms=200)
    assert sorted(made) == ["prepared line one", "prepared line two"]  # once per text
    assert out == {t: b"\x10\x27" * 800 for t in lines}
    monkeypatch.setattr(emu_audio, "synthesize_pcm", None)  # any synthesis now would fail
    voice = emu_audio.espeak_voice("en-us")
    assert emu_audio.synthesize_cached("prepared line two", voice, 8000, 160) == out[
        "prepared line two"]
    key = (out["prepared line two"], 200, 0, 8000)
    line = emu_audio._lines[key]
    assert line.speech_idx == 10  # 200 ms of lead silence, then the line
    assert len(line.frames) == 15 and all(f[0] == 0x82 for f in line.frames)


class _HeavyFork:
    """A fork whose every frame costs 2 ms of CPU: 12 of them overrun each 5 ms tick."""

    def __init__(self, pacer, forks, until: float) -> None:
        self.pacer, self.forks, self.until = pacer, forks, until

    def _pace(self, slot, now):
        import time

        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass
        if time.monotonic() > self.until:  # the test ends itself even if nothing else runs
            for f in self.forks:
                self.pacer.remove(f)

    def _abort(self):
        pass


def test_a_pacer_behind_schedule_leaves_the_loop_to_the_calls_between_ticks():
    """Near the generator's capacity the pacer is behind for long stretches. Catching up
    without yielding held every emulated call's ESL (and timer) for that long: the bot's
    set-up looked hundreds of ms slow. Now each late tick first gives the loop a turn."""
    import time

    from esl_app.sim.emulator.audio import _Pacer

    pacer = _Pacer()
    forks: list[_HeavyFork] = []
    forks.extend(_HeavyFork(pacer, forks, time.monotonic() + 0.5) for _ in range(12))
    late: list[float] = []

    def sleeper():  # stands for the emulated switch's ESL work: it waits on the loop too
        while any(pacer.phases):
            t = time.monotonic()
            gevent.sleep(0.005)
            late.append(time.monotonic() - t - 0.005)

    g = gevent.spawn(sleeper)
    for f in forks:
        pacer.add(f)
    assert pacer._glet.join(timeout=5) is None or pacer._glet.dead
    g.join(timeout=5)
    assert len(late) >= 10  # it kept running while the pacer was behind
    assert max(late) < 0.05, max(late)  # about one tick's work (12 x 2 ms), not all of it
