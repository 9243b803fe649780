import math
import random
import struct

import pytest

from esl_app.media.endpoint import EchoGuard, TurnDetector
from esl_app.media.pcm import rms, silence
from esl_app.media.vad import FrameSplitter, VoiceDetector
from esl_app.providers.tts.local import synthesize_pcm


@pytest.fixture(scope="module")
def speech8k():
    return synthesize_pcm("I would like to book an appointment", "en-us", 8000)


def click(ms, rate=8000):
    n = rate * ms // 1000
    rnd = random.Random(1)
    return struct.pack(f"<{n}h", *(rnd.randint(-20000, 20000) for _ in range(n)))


def feed_chunked(det, pcm, sizes=(7, 320, 1000, 2, 161)):
    events, i, k = [], 0, 0
    while i < len(pcm):
        n = sizes[k % len(sizes)]
        events += det.feed(pcm[i:i + n])
        i += n
        k += 1
    return events


def test_splitter_handles_any_chunking():
    s = FrameSplitter(320)
    data = bytes(range(256)) * 10
    out = []
    for i in range(0, len(data), 77):
        out += list(s.push(data[i:i + 77]))
    assert b"".join(out) == data[:len(data) // 320 * 320] and s.pending == len(data) % 320


def test_voice_detector_speech_vs_silence(speech8k):
    v = VoiceDetector(8000, 2)
    assert not any(f.voiced for f in v.process(silence(8000, 1000)))
    frames = v.process(speech8k)
    assert sum(f.voiced for f in frames) > len(frames) // 2
    assert frames[0].start_ms == 1000


def test_turn_start_and_end_in_stream_ms(speech8k):
    det = TurnDetector(8000, vad_mode=2, min_speech_ms=120, end_silence_ms=600)
    pcm = silence(8000, 500) + speech8k + silence(8000, 1500)
    events = feed_chunked(det, pcm)
    kinds = [e.kind for e in events]
    assert kinds == ["speech_start", "speech_end"]
    start, end = events
    loud = [i for i in range(0, len(speech8k), 320) if rms(speech8k[i:i + 320]) >= 100]
    first_ms, last_ms = loud[0] // 16, loud[-1] // 16 + 20  # true speech bounds
    assert abs(start.at_ms - (500 + first_ms)) <= 40   # the onset, in stream ms
    assert start.detected_ms - start.at_ms >= 120
    assert start.detected_ms - start.at_ms <= 200
    assert end.detected_ms - end.at_ms == 600  # exactly the trailing silence
    assert abs(end.at_ms - (500 + last_ms)) <= 60


def test_click_does_not_barge_in():
    det = TurnDetector(8000, vad_mode=2, min_speech_ms=120, end_silence_ms=600)
    pcm = silence(8000, 400) + click(60) + silence(8000, 1000)
    assert det.feed(pcm) == []


def test_echo_guard_ignores_quiet_echo_but_not_the_caller(speech8k):
    quiet = bytes(speech8k)  # the bot's own voice leaking back at -26 dB
    samples = struct.unpack(f"<{len(quiet) // 2}h", quiet)
    quiet = struct.pack(f"<{len(samples)}h", *(s // 20 for s in samples))
    det = TurnDetector(8000, vad_mode=2, min_speech_ms=120, end_silence_ms=600)
    det.set_bot_speaking(True)
    assert det.feed(silence(8000, 200) + quiet + silence(8000, 200)) == []
    events = det.feed(speech8k)
    assert events and events[0].kind == "speech_start"
    # without the guard the leaked echo would have barged in
    plain = TurnDetector(8000, vad_mode=2, min_speech_ms=120, end_silence_ms=600)
    assert [e.kind for e in plain.feed(quiet)][:1] == ["speech_start"]


def _noise(ms: int, level: float, rnd: random.Random, rate: int = 8000) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(max(-32768, min(32767, int(rnd.gauss(0, 1) * level)))
                                   for _ in range(n)))


def _conversation(speech: bytes, level: float, seed: int) -> bytes:
    """Caller lines at three loudnesses, gaps of noise at ``level`` (0: digital silence), clicks."""
    rnd = random.Random(seed)
    samples = struct.unpack(f"<{len(speech) // 2}h", speech)
    parts = []
    for i in range(5):
        scale = (0.3, 0.6, 1.0)[i % 3]
        line = struct.pack(f"<{len(samples)}h", *(int(s * scale) for s in samples))
        parts.append(_noise(rnd.randrange(200, 1500), level, rnd))
        parts.append(line)
        if i % 2:
            parts.append(click(40))
    return b"".join(parts)


@pytest.mark.parametrize("level", [0, 1, 3, 40])
@pytest.mark.parametrize("bot_speaking", [False, True])
def test_skipping_digital_silence_changes_no_turn_boundary(speech8k, level, bot_speaking):
    pcm = _conversation(speech8k, level, seed=level * 7 + bot_speaking)
    runs = []
    for skip in (True, False):
        det = TurnDetector(8000, 2, 100, 600, skip_silence=skip)
        det.set_bot_speaking(bot_speaking)
        runs.append((feed_chunked(det, pcm), det.vad_frames))
    (skipped, n_skip), (full, n_full) = runs
    assert skipped == full and len(full) >= 4
    frames = len(pcm) // 320
    assert n_full == frames
    zero = sum(pcm[i:i + 320] == bytes(320) for i in range(0, frames * 320, 320))
    assert frames - zero <= n_skip < frames  # only exact zeros are ever skipped
    if level == 0:  # digital-silence gaps: the VAD sees their first frame only
        assert n_skip < frames * 0.8


def test_barge_in_pending_spans_the_voiced_run_before_speech_start(speech8k):
    """While the bot talks, the frames between a run's onset and its confirmation are the
    ones the media reader fetches early; outside that window nothing is pending."""
    det = TurnDetector(8000, vad_mode=2, min_speech_ms=120, end_silence_ms=600)
    det.feed(silence(8000, 300))
    assert not det.barge_in_pending
    det.set_bot_speaking(True)
    assert not det.barge_in_pending  # silence: no run under way
    pending_frames, fired = 0, False
    for i in range(0, len(speech8k), 320):
        events = det.feed(speech8k[i:i + 320])
        if any(e.kind == "speech_start" for e in events):
            fired = True
            break
        pending_frames += det.barge_in_pending
    assert fired and pending_frames >= 3  # 120 ms of run: several frames before it fires
    assert not det.barge_in_pending  # confirmed: nothing left to decide
    quiet = TurnDetector(8000, vad_mode=2, min_speech_ms=120, end_silence_ms=600)
    quiet.feed(speech8k[:1600])  # the same run with the bot silent is not a barge-in
    assert quiet.onset_pending and not quiet.barge_in_pending


def test_the_calls_audio_sink_asks_for_early_reads_only_mid_barge_in(speech8k):
    """AudioListenSource.on_audio returns its detector's barge_in_pending to the reader."""
    from esl_app.config.tenants import Tenant
    from esl_app.media.server import MediaRegistry
    from esl_app.telephony.audio import AudioListenSource

    class Call:
        def __init__(self):
            self.posted = []

        def post(self, msg):
            self.posted.append(msg.kind)

    class Session:
        uuid = "u-1"
        channel_up = False

    call = Call()
    src = AudioListenSource(call, Tenant(id="t", name="T", dids=("1001",), timezone="UTC"),
                            Session(), registry=MediaRegistry(), media_url="ws://x", stt=None)
    assert src.on_audio(silence(8000, 200)) is False
    src.speaking(True)
    answers, fired_at = [], None
    for i in range(0, len(speech8k), 320):
        answers.append(src.on_audio(speech8k[i:i + 320]))
        if fired_at is None and call.posted:
            fired_at = len(answers) - 1  # speech_start posted: the barge-in is confirmed
    assert fired_at is not None and call.posted[0] == "speech_start"
    assert any(answers[:fired_at]) and not answers[fired_at]
    src.close()
    assert src.on_audio(speech8k[:320]) is False


def test_the_end_of_a_turn_is_pending_for_its_last_100_ms(speech8k):
    """The frames that complete end_silence_ms start the reply: the last END_LEAD_MS of
    the caller's silence count as deciding, so the reader fetches them early."""
    from esl_app.media.endpoint import END_LEAD_MS

    det = TurnDetector(8000, vad_mode=2, min_speech_ms=120, end_silence_ms=600)
    assert [e.kind for e in det.feed(silence(8000, 200) + speech8k)] == ["speech_start"]
    assert det.in_speech and not det.deciding
    quiet_ms, pending_from, ended_at = 0, None, None
    for _ in range(40):  # 800 ms of silence, frame by frame
        events = det.feed(silence(8000, 20))
        quiet_ms += 20
        if any(e.kind == "speech_end" for e in events):
            ended_at = quiet_ms
            break
        assert det.deciding == det.turn_end_pending
        if det.turn_end_pending and pending_from is None:
            pending_from = quiet_ms
    # the trailing frames of speech may already be quiet, so count from the end
    assert ended_at is not None and ended_at - pending_from == END_LEAD_MS
    assert not det.deciding and not det.turn_end_pending  # the turn ended: nothing pending


# -- the voiced-onset rule (barge_in.voiced_speech_ms) ------------------------------------


def _tone_burst(ms, lo, hi, rate=8000):
    n = rate * ms // 1000
    w = 2 * math.pi / rate
    return struct.pack(f"<{n}h", *(int(6000 * (math.sin(w * lo * i) + math.sin(w * hi * i)))
                                   for i in range(n)))


def _noise_burst(ms, rate=8000):
    rnd = random.Random(3)
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(max(-32768, min(32767, rnd.gauss(0, 5000)
                                                       * math.sin(math.pi * i / n))))
                                   for i in range(n)))


def _barge_start(det, pcm):
    det.set_bot_speaking(True)
    for i in range(0, len(pcm), 320):
        for ev in det.feed(pcm[i:i + 320]):
            if ev.kind == "speech_start":
                return ev
    return None


@pytest.mark.parametrize("compiled", [True, False])
def test_a_voice_barges_in_after_voiced_speech_ms(speech8k, compiled):
    audio = silence(8000, 300) + speech8k
    guard = EchoGuard(echo_min_speech_ms=100)  # as for_tenant makes it: = min_speech_ms
    plain = _barge_start(TurnDetector(8000, 2, 100, 600, compiled=compiled,
                                      echo_guard=guard), audio)
    early = _barge_start(TurnDetector(8000, 2, 100, 600, compiled=compiled, echo_guard=guard,
                                      voiced_speech_ms=80), audio)
    assert plain is not None and early is not None and early.at_ms == plain.at_ms
    assert early.detected_ms - early.at_ms == 80 < plain.detected_ms - plain.at_ms
    # a stricter echo rule than min_speech_ms turns it off
    strict = TurnDetector(8000, 2, 100, 600, compiled=compiled, voiced_speech_ms=80,
                          echo_guard=EchoGuard(echo_min_speech_ms=160))
    assert _barge_start(strict, audio).detected_ms - plain.at_ms >= 160


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("sound", ["dtmf", "noise"])
def test_keypad_tones_and_noise_still_need_min_speech_ms(compiled, sound):
    burst = _tone_burst(70, 852, 1477) if sound == "dtmf" else _noise_burst(70)
    audio = silence(8000, 300) + burst + silence(8000, 600)
    det = TurnDetector(8000, 2, 100, 600, compiled=compiled, voiced_speech_ms=80,
                       echo_guard=EchoGuard(echo_min_speech_ms=100))
    assert _barge_start(det, audio) is None  # a run of 80 ms (4 frames), short of 100
    assert det._core.toned if sound == "dtmf" else det._core.periodic < 2


@pytest.mark.parametrize("compiled", [True, False])
def test_the_voiced_onset_rule_stops_testing_once_it_has_two_periodic_frames(
        speech8k, compiled, monkeypatch):
    from esl_app.media import endpoint

    calls = [0]
    real = endpoint._is_periodic

    def counted(x, rate):
        calls[0] += 1
        return real(x, rate)

    monkeypatch.setattr(endpoint, "_is_periodic", counted)
    # a voice that needs 200 ms: the rule has its two periodic frames long before
    det = TurnDetector(8000, 2, 300, 600, compiled=compiled, voiced_speech_ms=200,
                       echo_guard=EchoGuard(echo_min_speech_ms=300))
    start = _barge_start(det, silence(8000, 300) + speech8k)
    assert start is not None and start.detected_ms - start.at_ms == 200
    assert det._core.periodic == 2
    if not compiled:
        assert calls[0] < 200 // 20 - 2  # not every frame of the run
