"""STT fallback (issue #27): a recogniser that fails mid-call is replaced by the local one.

Unit tests drive :class:`ResilientSttStream` with fakes and a fake clock; the call tests
place real audio calls through the emulator (espeak-ng speaks the caller) whose "cloud"
recogniser (the emulated Transcribe, which hears registered lines bit-exact) fails on
the second turn: raising in ``feed``, reporting an error at ``finalize``, or never
answering. The local recogniser (pocketsphinx) must take over and hear that same turn.
"""

from __future__ import annotations

import shutil
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import gevent
import pytest
from fakes.telephony import wait_until

from esl_app.providers.stt.base import SttCapabilities, SttError, TranscriptEvent
from esl_app.providers.stt.resilience import ResilientSttStream

RATE = 8000
FRAME = RATE // 50 * 2  # 20 ms of L16


def voiced(ms: int = 20) -> bytes:
    n = RATE * ms // 1000
    return struct.pack(f"<{n}h", *((2000 if i % 8 < 4 else -2000) for i in range(n)))


def quiet(ms: int = 20) -> bytes:
    return bytes(2 * RATE * ms // 1000)


# ----------------------------------------------------------------- fakes


class FakeStream:
    """Records what it is given; ``answers`` decides what a finalize brings."""

    def __init__(self, provider: FakeStt, on_event: Callable[[TranscriptEvent], None]) -> None:
        self.provider = provider
        self.on_event = on_event
        self.fed: list[bytes] = []
        self.turns: list[bytes] = []  # the audio of each finalised turn
        self.closed = False
        self.hints: tuple[str, ...] = ()

    def feed(self, pcm: bytes) -> None:
        if self.provider.fail == "feed" and len(self.turns) >= self.provider.fail_turn:
            raise SttError("boom")
        self.fed.append(pcm)

    def finalize(self) -> None:
        self.turns.append(b"".join(self.fed))
        self.fed.clear()
        if self.provider.fail == "finalize":
            raise SttError("boom")
        if self.provider.fail == "error":
            self.on_event(TranscriptEvent("error", "cloud: ConnectionError"))
        elif self.provider.fail != "silent":
            self.on_event(TranscriptEvent("final", f"{self.provider.name} {len(self.turns)}"))

    def set_hints(self, hints: Sequence[str]) -> None:
        self.hints = tuple(hints)

    def close(self) -> None:
        self.closed = True


class FakeStt:
    capabilities = SttCapabilities()

    def __init__(self, name: str, fail: str = "", fail_turn: int = 0) -> None:
        self.name = name
        self.fail = fail
        self.fail_turn = fail_turn
        self.streams: list[FakeStream] = []

    def open_stream(self, call_id: str, sample_rate: int, language: str,
                    on_event: Callable[[TranscriptEvent], None],
                    hints: Sequence[str] = ()) -> FakeStream:
        if self.fail == "open":
            raise SttError("no credentials")
        s = FakeStream(self, on_event)
        s.hints = tuple(hints)
        self.streams.append(s)
        return s


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(primary: FakeStt, fallback: FakeStt | None = None, **kw):
    events: list[TranscriptEvent] = []
    switches: list[tuple[str, str, str | None]] = []
    clock = Clock()
    s = ResilientSttStream(primary, (lambda: fallback), "call-1", RATE, "en-US", events.append,
                           ("yes", "no"), clock=clock,
                           on_fallback=lambda *a: switches.append(a), **kw)
    return s, events, switches, clock


def say(s: ResilientSttStream, clock: Clock, ms: int, pcm: Callable[[int], bytes] = voiced
        ) -> None:
    for _ in range(ms // 20):
        s.feed(pcm(20))
        clock.t += 0.02


# ----------------------------------------------------------------- unit tests


def test_silent_recogniser_is_replaced_after_the_deadline():
    cloud, local = FakeStt("cloud", fail="silent"), FakeStt("local")
    s, events, switches, clock = make(cloud, local)
    say(s, clock, 400, quiet)
    s.note_speech()
    say(s, clock, 800)
    s.finalize()
    say(s, clock, 1900, quiet)  # within the deadline: the cloud may still answer
    assert not switches and not local.streams
    say(s, clock, 200, quiet)
    assert switches == [("cloud", "silent: no result 2 s after the turn", "local")]
    assert cloud.streams[0].closed and s.fell_back and s.replayed == 1
    # the turn was replayed, whole, and finalised: the caller's words are not lost
    replayed = local.streams[0].turns[0]
    assert voiced(800) in replayed and replayed.startswith(quiet(400))
    assert [e.text for e in events if e.kind == "final"] == ["local 1"]
    assert local.streams[0].hints == ("yes", "no")
    s.feed(voiced(20))  # the rest of the call goes to the fallback
    # after the turn: its preroll (a new turn may have begun in it), then the live audio
    fed = local.streams[0].fed
    assert fed[:50] == [quiet(20)] * 50 and fed[-1] == voiced(20)


def test_the_deadline_counts_only_while_audio_flows():
    cloud, local = FakeStt("cloud", fail="silent"), FakeStt("local")
    s, _events, switches, clock = make(cloud, local)
    s.note_speech()
    say(s, clock, 600)
    s.finalize()
    clock.t += 30.0  # no frames: the media path, not the recogniser, is stalled
    say(s, clock, 1000, quiet)
    assert not switches
    say(s, clock, 600, quiet)  # 1.5 s of audio since the end of the turn, and late
    assert switches and switches[0][1].startswith("silent")


def test_a_recogniser_that_answers_is_kept():
    cloud, local = FakeStt("cloud"), FakeStt("local")
    s, events, switches, clock = make(cloud, local)
    for _ in range(3):
        s.note_speech()
        say(s, clock, 600)
        s.finalize()
        say(s, clock, 5000, quiet)
    assert not switches and not local.streams and s.fell_back is None
    assert [e.text for e in events] == ["cloud 1", "cloud 2", "cloud 3"]


def test_an_answer_before_the_end_of_the_turn_needs_no_other():
    # Transcribe's own end-pointing: a final mid-turn, no partial since; its finalize then
    # brings nothing more, and that is not silence
    cloud, local = FakeStt("cloud", fail="silent"), FakeStt("local")
    s, events, switches, clock = make(cloud, local)
    s.note_speech()
    say(s, clock, 600)
    cloud.streams[0].on_event(TranscriptEvent("final", "early"))
    say(s, clock, 600, quiet)
    s.finalize()
    say(s, clock, 5000, quiet)
    assert not switches and [e.text for e in events] == ["early"]
    # a partial after it means the finalize owes a result again
    s.note_speech()
    say(s, clock, 600)
    cloud.streams[0].on_event(TranscriptEvent("final", "half"))
    cloud.streams[0].on_event(TranscriptEvent("partial", "and the rest"))
    s.finalize()
    say(s, clock, 2100, quiet)
    assert switches and s.replayed == 1


@pytest.mark.parametrize(("fail", "reason"), [
    ("feed", "feed: SttError"),
    ("finalize", "finalize: SttError"),
    ("error", "error: cloud: ConnectionError"),
])
def test_failures_switch_at_once_and_replay_the_turn(fail, reason):
    cloud, local = FakeStt("cloud"), FakeStt("local")
    s, events, switches, clock = make(cloud, local)
    s.note_speech()
    say(s, clock, 400)
    s.finalize()
    assert [e.text for e in events] == ["cloud 1"]
    cloud.fail = fail  # the first turn worked; the second breaks
    say(s, clock, 300, quiet)
    s.note_speech()
    say(s, clock, 500)  # "feed": it breaks while the caller talks
    if fail != "feed":
        s.finalize()
    assert switches == [("cloud", reason, "local")]
    got = local.streams[0]
    heard = got.turns[0] if got.turns else b"".join(got.fed)
    assert voiced(500) in heard  # the interrupted turn, from before its onset
    assert voiced(400) + quiet(20) not in heard  # not the turn the cloud had answered
    if fail != "feed":
        assert [e.text for e in events] == ["cloud 1", "local 1"]
    # late words of the failed recogniser are dropped: no turn is answered twice
    cloud.streams[0].on_event(TranscriptEvent("final", "late"))
    assert "late" not in [e.text for e in events]


def test_a_recogniser_that_cannot_start_is_replaced_from_the_start():
    cloud, local = FakeStt("cloud", fail="open"), FakeStt("local")
    s, events, switches, clock = make(cloud, local)
    assert switches == [("cloud", "open: SttError", "local")]
    say(s, clock, 200)
    s.finalize()
    assert [e.text for e in events] == ["local 1"]


def test_no_fallback_is_reported_and_the_stream_goes_quiet():
    cloud, local = FakeStt("cloud", fail="error"), FakeStt("local", fail="open")
    s, events, switches, clock = make(cloud, local)
    say(s, clock, 200)
    s.finalize()
    assert switches == [("cloud", "error: cloud: ConnectionError", None)]
    say(s, clock, 200)
    s.finalize()
    s.close()
    assert events == []


def test_kept_audio_is_bounded():
    cloud = FakeStt("cloud", fail="silent")
    s, _e, _sw, clock = make(cloud, FakeStt("local"), max_turn_s=3.0)
    s.note_speech()  # the owner's VAD tells us of speech: between turns only the preroll
    s.finalize()
    say(s, clock, 10_000, quiet)  # a long prompt: the caller is quiet
    assert s._turn_bytes <= int(s.PREROLL_S * 2 * RATE)
    s.note_speech()
    say(s, clock, 10_000)  # a caller who does not stop
    assert s._turn_bytes <= 3 * 2 * RATE
    s.close()
    assert s._turn_bytes == 0 or not s._turn


# ----------------------------------------------------------------- real audio calls

needs_voice = pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("sox"),
                                 reason="espeak-ng and sox are needed to speak as the caller")


class FlakyCloud:
    """The emulated Transcribe, failing from the caller's second turn as ``mode`` says.

    ``feed``: raises once the caller has spoken 0.4 s of that turn; ``finalize``: reports
    an error event at its end (from the provider's greenlet, as Transcribe does); ``silent``:
    never answers again.
    """

    name = "transcribe"
    capabilities = SttCapabilities(partials=False, hints=False)

    def __init__(self, inner, mode: str) -> None:
        self.inner = inner
        self.mode = mode
        self.failed_at: float | None = None

    def open_stream(self, call_id, sample_rate, language, on_event, hints=()):
        return _FlakyStream(self, self.inner.open_stream(call_id, sample_rate, language,
                                                         on_event, hints), on_event)


class _FlakyStream:
    def __init__(self, owner: FlakyCloud, inner, on_event) -> None:
        self.owner, self.inner, self.on_event = owner, inner, on_event
        self.turns = 0
        self.spoken = 0  # non-silent bytes this turn

    def _failing(self) -> bool:
        return self.turns >= 1

    def feed(self, pcm: bytes) -> None:
        if self.owner.mode == "feed" and self._failing():
            if pcm.strip(b"\0"):
                self.spoken += len(pcm)
            if self.spoken >= 2 * 8000 * 0.4:
                self.owner.failed_at = self.owner.failed_at or time.monotonic()
                raise SttError("stream closed")
        self.inner.feed(pcm)

    def finalize(self) -> None:
        failing = self._failing()
        self.turns += 1
        if failing and self.owner.mode == "finalize":
            self.owner.failed_at = time.monotonic()
            gevent.spawn(self.on_event, TranscriptEvent("error", "transcribe: BadRequest"))
            return
        if failing and self.owner.mode == "silent":
            self.owner.failed_at = self.owner.failed_at or time.monotonic()
            return
        self.inner.finalize()

    def set_hints(self, hints) -> None:
        self.inner.set_hints(hints)

    def close(self) -> None:
        self.inner.close()


def _tenants_yaml() -> str:
    text = (Path(__file__).resolve().parent.parent / "tenants.yaml").read_text()
    # sunrise (the first clinic): its cloud recogniser; prompts spoken by the switch (fast)
    return text.replace("    agent: local\n", "    agent: local\n    stt: transcribe\n"
                        "    tts: freeswitch\n", 1)


def _metric(tenant: str, source: str) -> float:
    from esl_app.http.metrics import REGISTRY

    return REGISTRY.get_sample_value("ivr_stt_fallbacks_total",
                                     {"tenant": tenant, "from": source}) or 0.0


def _call_with_failing_cloud(tmp_path, mode: str):
    """Book-line call: the first turn heard by the cloud, the second after it failed."""
    from esl_app.runtime.wiring import build_services, start_media_for_calls
    from esl_app.sim.emulated_stt import EmulatedTranscribe, LineTable
    from esl_app.sim.emulator.audio import AudioFork
    from esl_app.sim.simulate import SimCall
    from esl_app.sim.testing import make_db
    from esl_app.telephony.records import get_call
    from esl_app.telephony.server import EslServer

    tenants = make_db(tmp_path, _tenants_yaml())
    table = LineTable(tmp_path / "lines")
    cloud = FlakyCloud(EmulatedTranscribe(table, lambda: 0.1), mode)

    class Fork(AudioFork):
        def _line_ready(self, text: str, pcm: bytes) -> None:
            table.register(text, pcm)  # what the cloud can hear, as in the load test

    media, sources = start_media_for_calls(stt_for=lambda tenant: cloud)
    ended: dict[str, dict] = {}
    services = build_services(lambda: tenants, on_event=lambda name, data: ended.update(
        {data["call_id"]: data}) if name == "call_ended" else None,
        audio_source_for=sources)
    server = EslServer(services, "127.0.0.1", 0).start()
    sources.warm(tenants.by_did("1001"))
    before = _metric("sunrise", "transcribe")
    try:
        sim = SimCall(server.address, "1001", audio=True, time_scale=0.2,
                      audio_fork=Fork).start()
        assert sim.call.wait_until_listening(20)
        sim.call.say("Hi, I'd like to book an appointment")
        assert sim.call.wait_until_listening(20)
        sim.call.say("Dr. Smith, please")
        assert sim.call.wait_until_listening(20)
        sim.call.hang_up()
        assert sim.call.wait_ended(20)
        wait_until(lambda: sim.call.uuid in ended, 10)
        t = ended[sim.call.uuid]
        wait_until(lambda: (get_call(sim.call.uuid) or {}).get("outcome")
                   not in (None, "in_progress"), 10)
        record = get_call(sim.call.uuid)
    finally:
        server.stop(timeout=5)
        media.stop()
    return t, record, cloud, _metric("sunrise", "transcribe") - before


@needs_voice
@pytest.mark.parametrize("mode", ["feed", "finalize", "silent"])
def test_a_call_goes_on_with_the_local_recogniser(tmp_path, mode):
    t, record, cloud, counted = _call_with_failing_cloud(tmp_path, mode)
    caller = [x["text"] for x in t["turns"] if x["speaker"] == "caller"]
    bot = [x["text"] for x in t["turns"] if x["speaker"] == "bot"]
    assert len(caller) == 2, t["turns"]
    assert caller[0] == "Hi, I'd like to book an appointment"  # the cloud's words, exact
    # the failed turn, heard by the local recogniser (lower case, no punctuation): not lost
    assert "smith" in caller[1] and caller[1] != "Dr. Smith, please", caller
    # the booking goes on: the bot asks about the day, with no apology at all
    assert not any("sorry" in line.lower() for line in bot), bot
    assert any(w in bot[-1].lower() for w in ("day", "when", "date")), bot
    fallback = record["usage"]["stt_fallback"]
    assert fallback["from"] == "transcribe" and fallback["to"] == "local"
    assert fallback["reason"].startswith({"feed": "feed: SttError",
                                          "finalize": "error: transcribe: BadRequest",
                                          "silent": "silent"}[mode]), fallback
    assert fallback["result_ms"] is not None and fallback["local_s"] > 0
    assert counted == 1
    assert cloud.failed_at is not None


# ----------------------------------------------------------------- the call's audio source


class _Registry:
    def register(self, uuid: str, sink: object) -> str:
        return "token"

    def unregister(self, uuid: str) -> None:
        pass


class _Session:
    uuid = "5f0c1d2e-0000-4000-8000-000000000001"
    channel_up = False


class _Call:
    def __init__(self) -> None:
        self.posted: list = []

    def post(self, msg) -> None:
        self.posted.append(msg)


def _source(cloud: FakeStt, local: FakeStt):
    from fakes.telephony import tenant_set

    from esl_app.telephony.audio import AudioListenSource

    tenant = tenant_set().by_did("1001")
    call = _Call()
    src = AudioListenSource(call, tenant, _Session(), registry=_Registry(),
                            media_url="ws://127.0.0.1:1", stt=cloud, fallback_stt=lambda: local)
    src.on_stream_start({})
    return src, call


def test_the_source_records_and_counts_the_switch():
    """What the call record and the metric get, and the cloud's audio (billed) stops."""
    cloud, local = FakeStt("cloud-x", fail="error"), FakeStt("local")
    before = _metric("sunrise", "cloud-x")
    src, call = _source(cloud, local)
    for _ in range(50):
        src.on_audio(quiet(20))
    assert src.stt_fallback is None and src.stt_seconds == 1.0
    src.stream.finalize()  # the cloud reports an error: the local recogniser answers
    assert [m.text for m in call.posted if m.kind == "transcript"] == ["local 1"]
    for _ in range(25):
        src.on_audio(quiet(20))
    assert src.stt_seconds == 1.0  # the tenant's (paid) recogniser heard no more
    record = src.stt_fallback
    assert record["from"] == "cloud-x" and record["to"] == "local"
    assert record["reason"] == "error: cloud: ConnectionError" and record["local_s"] == 0.5
    assert record["replayed"] == 1 and record["result_ms"] is not None
    assert _metric("sunrise", "cloud-x") - before == 1
    src.close()


def test_with_no_fallback_the_caller_is_handed_over():
    src, call = _source(FakeStt("cloud-y", fail="open"), FakeStt("local", fail="open"))
    assert [m.key for m in call.posted if m.kind == "media_lost"] == ["stt_failed"]
    assert src.stt_fallback["to"] is None
    src.close()


def test_the_local_recogniser_is_not_wrapped():
    local = FakeStt("local")
    src, _call = _source(local, FakeStt("other"))
    assert isinstance(src.stream, FakeStream)
    src.close()
