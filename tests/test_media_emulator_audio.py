import gevent
import gevent.event
import gevent.queue

from esl_app.emulator.audio import AudioFork, parse_rate
from esl_app.media.endpoint import TurnDetector
from esl_app.media.server import MediaRegistry, MediaServer, fork_metadata


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
