"""TranscribeStt: the real amazon-transcribe SDK against a local fake endpoint.

The SDK serialises, signs and frames the audio; the fake endpoint
(aws_fixtures/transcribe_endpoint.py) decodes it and answers with recorded
TranscriptEvent frames that the SDK's own decoder, parser and handler read.
All of it runs on the shared asyncio loop thread; results reach the test's
greenlet through the bridge, as they reach a call.
"""

from __future__ import annotations

import gevent
import gevent.event
import pytest
from aws_fixtures.eventstream import load
from aws_fixtures.transcribe_endpoint import FakeTranscribeEndpoint, result

from esl_app.providers.stt.transcribe import TranscribeStt
from esl_app.support.bridge import AsyncioLoopThread

FRAME = b"\x01\x00" * 160  # 20 ms of L16 at 8 kHz
FINAL_TEXT = "I'd like to book with Doctor Smith tomorrow morning."


@pytest.fixture(scope="module")
def loop():
    thread = AsyncioLoopThread(name="test-transcribe").start()
    yield thread
    thread.stop()


class Collector:
    def __init__(self):
        self.events = []
        self.changed = gevent.event.Event()

    def __call__(self, event):
        self.events.append(event)
        self.changed.set()

    def wait_for(self, pred, timeout=10.0):
        with gevent.Timeout(timeout, AssertionError(f"timed out; got {self.events}")):
            while not pred(self.events):
                self.changed.clear()
                self.changed.wait()

    def kinds(self, kind):
        return [e.text for e in self.events if e.kind == kind]


def feed(stream, ms):
    for _ in range(ms // 20):
        stream.feed(FRAME)
    gevent.sleep(0)


def provider(loop, endpoint, **kw):
    return TranscribeStt("us-east-1", loop=loop, client_factory=endpoint.client, **kw)


def test_partials_then_final(loop):
    endpoint = FakeTranscribeEndpoint(load("transcribe_booking.json")["script"])
    stt = provider(loop, endpoint, vocabulary_name="ivr-sunrise")
    got = Collector()
    stream = stt.open_stream("call-1", 8000, "en-US", got)
    feed(stream, 2600)
    got.wait_for(lambda ev: any(e.kind == "final" for e in ev))
    assert got.kinds("partial") == ["I'd like", "I'd like to book",
                                    "I'd like to book with Doctor Smith"]
    assert got.kinds("final") == [FINAL_TEXT]
    stream.close()
    with gevent.Timeout(5):
        while not endpoint.ended:
            gevent.sleep(0.01)
    headers = {k.lower(): v for k, v in endpoint.requests[0]["headers"].items()}
    assert endpoint.requests[0]["url"].startswith(
        "https://transcribestreaming.us-east-1.amazonaws.com")
    assert headers["x-amzn-transcribe-language-code"] == "en-US"
    assert headers["x-amzn-transcribe-sample-rate"] == "8000"
    assert headers["x-amzn-transcribe-media-encoding"] == "pcm"
    assert headers["x-amzn-transcribe-vocabulary-name"] == "ivr-sunrise"
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert bytes(endpoint.audio) == FRAME * 130
    assert stream.audio_seconds == pytest.approx(2.6)
    # batched: ~100 ms audio events, not one per 20 ms frame
    assert endpoint.audio_events <= 27


def test_finalize_promotes_the_latest_partial(loop):
    endpoint = FakeTranscribeEndpoint(load("transcribe_booking.json")["script"] + [
        {"after_ms": 3000, "results": [result("r2", "yes please", True)]},
        {"after_ms": 3400, "results": [result("r2", "yes please", False)]},
    ])
    got = Collector()
    stream = provider(loop, endpoint).open_stream("call-2", 8000, "en-US", got)
    feed(stream, 1600)
    got.wait_for(lambda ev: "I'd like to book with Doctor Smith" in [e.text for e in ev])
    stream.finalize()  # our VAD heard the end of the turn
    got.wait_for(lambda ev: any(e.kind == "final" for e in ev))
    assert got.kinds("final") == ["I'd like to book with Doctor Smith"]
    feed(stream, 2000)  # the service's own final for that result is dropped
    got.wait_for(lambda ev: len([e for e in ev if e.kind == "final"]) == 2)
    assert got.kinds("final") == ["I'd like to book with Doctor Smith", "yes please"]
    stream.close()


def test_finalize_with_nothing_heard(loop):
    endpoint = FakeTranscribeEndpoint([])
    got = Collector()
    stream = provider(loop, endpoint, finalize_grace_s=0.05).open_stream(
        "call-3", 8000, "en-US", got)
    feed(stream, 400)
    stream.finalize()
    got.wait_for(lambda ev: ev)
    assert [(e.kind, e.text) for e in got.events] == [("final", "")]
    stream.close()


def test_finalize_grace_takes_the_next_result(loop):
    endpoint = FakeTranscribeEndpoint([
        {"after_ms": 500, "results": [result("r1", "tomorrow", True)]},
        {"after_ms": 700, "results": [result("r1", "tomorrow", False)]},
    ])
    got = Collector()
    stream = provider(loop, endpoint, finalize_grace_s=5).open_stream(
        "call-4", 8000, "en-US", got)
    feed(stream, 300)
    stream.finalize()
    gevent.sleep(0.05)
    feed(stream, 600)
    got.wait_for(lambda ev: any(e.kind == "final" for e in ev))
    gevent.sleep(0.1)
    assert [(e.kind, e.text) for e in got.events] == [("final", "tomorrow")]
    stream.close()


@pytest.mark.parametrize("status,error", [(429, "LimitExceededException"),
                                          (400, "BadRequestException"),
                                          (503, "ServiceUnavailableException")])
def test_http_errors_become_one_error_event(loop, status, error):
    endpoint = FakeTranscribeEndpoint([], status=status, error_type=error)
    got = Collector()
    stream = provider(loop, endpoint).open_stream("call-5", 8000, "en-US", got)
    feed(stream, 200)
    got.wait_for(lambda ev: ev)
    assert [e.kind for e in got.events] == ["error"]
    assert error in got.events[0].text
    feed(stream, 200)  # a dead stream swallows audio quietly
    stream.finalize()
    stream.close()


def test_throttling_mid_stream(loop):
    endpoint = FakeTranscribeEndpoint([
        {"after_ms": 300, "results": [result("r1", "I need", True)]},
        {"after_ms": 500, "exception": "LimitExceededException",
         "message": "You have reached your limit of concurrent streams."},
    ])
    got = Collector()
    stream = provider(loop, endpoint).open_stream("call-6", 8000, "en-US", got)
    feed(stream, 800)
    got.wait_for(lambda ev: any(e.kind == "error" for e in ev))
    assert [e.kind for e in got.events] == ["partial", "error"]
    assert "LimitExceededException" in got.events[-1].text
    stream.close()


def test_malformed_stream(loop):
    endpoint = FakeTranscribeEndpoint([
        {"after_ms": 200, "raw": "0000000a000000ff00000000deadbeef"},
    ])
    got = Collector()
    stream = provider(loop, endpoint).open_stream("call-7", 8000, "en-US", got)
    feed(stream, 400)
    got.wait_for(lambda ev: ev)
    assert [e.kind for e in got.events] == ["error"]
    stream.close()


def test_hang_up_mid_stream(loop):
    endpoint = FakeTranscribeEndpoint(load("transcribe_booking.json")["script"])
    got = Collector()
    stream = provider(loop, endpoint).open_stream("call-8", 8000, "en-US", got)
    feed(stream, 700)
    got.wait_for(lambda ev: ev)
    stream.close()
    stream.close()  # idempotent
    feed(stream, 2000)  # late frames after hang-up are ignored
    with gevent.Timeout(5):
        while not endpoint.ended:
            gevent.sleep(0.01)
    gevent.sleep(0.05)
    assert [e.kind for e in got.events] == ["partial"]  # nothing after close
    assert stream._channel._closed  # the bridge channel was released


def test_service_ending_the_stream_is_an_error(loop):
    class Ending(FakeTranscribeEndpoint):
        pass

    endpoint = Ending([{"after_ms": 100, "results": [result("r1", "hi", False)]}])
    got = Collector()
    stream = provider(loop, endpoint).open_stream("call-9", 8000, "en-US", got)
    feed(stream, 200)
    got.wait_for(lambda ev: ev)
    endpoint.ended = True  # the service closes its side without our asking
    got.wait_for(lambda ev: any(e.kind == "error" for e in ev))
    assert [e.kind for e in got.events] == ["final", "error"]
    stream.close()
