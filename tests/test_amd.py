"""Answering-machine detection (esl_app/media/amd.py, issue #28).

The corpus tests run the labelled synthetic answers of bench/amd_corpus.py (made with
espeak-ng and sox once per session into a temp dir) through the detector as the
reminder-call flow will; the unit tests drive the beep detector with generated tones
and noise, and the settings with good and bad mappings.
"""

import importlib.util
import math
import random
import shutil
import struct
import sys
from pathlib import Path

import pytest

from esl_app.media import amd as amd_mod
from esl_app.media.amd import AmdResult, AmdSettings, AnsweringMachineDetector, BeepDetector
from esl_app.media.pcm import silence

ROOT = Path(__file__).resolve().parent.parent
TOOLS = bool(shutil.which("espeak-ng") and shutil.which("sox"))
needs_tools = pytest.mark.skipif(not TOOLS, reason="espeak-ng and sox make the AMD corpus")


@pytest.fixture(scope="session")
def corpus():
    spec = importlib.util.spec_from_file_location("amd_corpus", ROOT / "bench" / "amd_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("amd_corpus", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return sys.modules["amd_corpus"]


@pytest.fixture(scope="session")
def answers(corpus, tmp_path_factory):
    if not TOOLS:
        pytest.skip("espeak-ng and sox make the AMD corpus")
    return corpus.build(tmp_path_factory.mktemp("amd-corpus"), workers=2)


@pytest.fixture(scope="session")
def outcomes(corpus, answers):
    return [corpus.run_case(c, *answers[c.name]) for c in corpus.CASES]


# -- signals ----------------------------------------------------------------------------


def pcm(samples):
    return struct.pack(f"<{len(samples)}h", *(max(-32768, min(32767, round(s)))
                                             for s in samples))


def tone(hz, ms, rate=8000, dbfs=-12.0, phase=0.0):
    amp = 32768 * 10 ** (dbfs / 20) * math.sqrt(2)
    return [amp * math.sin(2 * math.pi * hz * i / rate + phase)
            for i in range(rate * ms // 1000)]


def gap(ms, rate=8000):
    return [0.0] * (rate * ms // 1000)


def noise(ms, rate=8000, dbfs=-40.0, seed=1):
    rnd = random.Random(seed)
    sd = 32768 * 10 ** (dbfs / 20)
    return [rnd.gauss(0, sd) for _ in range(rate * ms // 1000)]


def mix(a, b):
    return [x + y for x, y in zip(a, b, strict=True)]


def beeps_in(samples, rate=8000, settings=None, chunk=None):
    """[(end ms, Hz, ms)] of every beep a fresh detector reports over ``samples``."""
    det = BeepDetector(rate, settings)
    data = pcm(samples)
    size = chunk or det.size
    out = []
    for i in range(0, len(data), size):
        if det.feed(data[i:i + size]):
            out.append((det.beep_end_ms, det.beep_hz, det.beep_ms))
    return out


# -- the labelled corpus ----------------------------------------------------------------


@needs_tools
def test_corpus_is_varied(corpus):
    labels = [c.label for c in corpus.CASES]
    assert len(corpus.CASES) >= 40
    assert len({c.name for c in corpus.CASES}) == len(corpus.CASES)
    assert min(labels.count(x) for x in ("human", "machine", "silence")) >= 8
    assert {c.rate for c in corpus.CASES} == {8000, 16000}
    assert any(c.noise for c in corpus.CASES if c.label == "human")
    assert any(c.noise for c in corpus.CASES if c.label == "machine")
    machines = [c for c in corpus.CASES if c.label == "machine"]
    beep_hz = {p.hz for c in machines for p in c.parts
               if isinstance(p, corpus.Tone) and p.beep}
    assert len(beep_hz) >= 8 and min(beep_hz) == 350 and max(beep_hz) == 2000
    assert any(not any(isinstance(p, corpus.Tone) for p in c.parts) for c in machines)
    assert any(isinstance(p, corpus.Tone) and not p.beep for c in machines for p in c.parts)


@needs_tools
def test_corpus_accuracy_and_decision_time(outcomes):
    correct = [o for o in outcomes if o.correct]
    misses = [(o.case.name, o.result) for o in outcomes if not o.correct]
    assert len(correct) / len(outcomes) >= 0.95, misses
    times = sorted(o.result.at for o in outcomes)
    assert times[len(times) // 2] <= 2.5, times
    assert times[-1] <= 3.0  # every verdict within 3 s of answer


@needs_tools
def test_corpus_beep_ends(outcomes):
    """Every beep after a machine greeting is found; its end to within a frame."""
    for o in outcomes:
        if o.beep_truth is None:
            assert o.beep_end is None, o.case.name
            continue
        assert o.result.decision == "machine", o.case.name
        assert o.beep_end is not None, o.case.name
        assert abs(o.beep_end - o.beep_truth) <= 0.03, (o.case.name, o.beep_end, o.beep_truth)
        # learnt once the quiet after it lasted beep_settle_ms (one frame to spare)
        assert 0.4 <= o.beep_heard_at - o.beep_truth <= 0.45, o.case.name


@needs_tools
def test_corpus_no_false_beep_from_answer(corpus, answers):
    """A beep detector fed each whole answer (speech, music, noise) finds only real beeps."""
    for case in corpus.CASES:
        audio, truth = answers[case.name]
        det = BeepDetector(case.rate)
        for f in corpus.frames(audio, case.rate):
            if det.feed(f):
                assert truth is not None, (case.name, det.beep_end_ms, det.beep_hz)
                assert abs(det.beep_end_ms / 1000 - truth) <= 0.03, case.name


@needs_tools
def test_corpus_any_chunking_same_verdict(corpus, answers):
    """Chunks of odd sizes (with ``t`` at each chunk's end) give the frame-by-frame verdict."""
    for name in ("h03", "m01", "s03"):
        case = next(c for c in corpus.CASES if c.name == name)
        audio, truth = answers[name]
        expected = corpus.run_case(case, audio, truth).result
        det = AnsweringMachineDetector(case.rate)
        got, pos, sizes, k = None, 0, (7, 640, 1000, 320, 2, 961), 0
        while got is None and pos < len(audio):
            chunk = audio[pos:pos + sizes[k % len(sizes)]]
            pos += len(chunk)
            k += 1
            got = det.feed(chunk, pos // 2 // (case.rate // 1000) / 1000)
        assert got is not None
        assert (got.decision, got.reason) == (expected.decision, expected.reason)
        assert abs(got.at - expected.at) <= 0.021


# -- the beep detector on generated signals --------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("hz", [350, 440, 850, 1000, 1400, 2000])
@pytest.mark.parametrize("ms", [150, 400, 1500])
def test_pure_tone_is_a_beep(rate, hz, ms):
    lead = 300 + (hz % 17)  # the tone starts anywhere in a frame
    found = beeps_in(gap(lead, rate) + tone(hz, ms, rate) + gap(800, rate), rate)
    assert len(found) == 1
    end_ms, got_hz, got_ms = found[0]
    assert abs(end_ms - (lead + ms)) <= 20
    assert abs(got_hz - hz) <= 0.01 * hz
    assert abs(got_ms - ms) <= 20


def test_beep_is_reported_once_the_quiet_after_it_lasted():
    det = BeepDetector()
    s = det.settings
    data = pcm(gap(200) + tone(1000, 500) + gap(1000))
    hits = []
    for i in range(len(data) // det.size):
        if det.feed(data[i * det.size:(i + 1) * det.size]):
            hits.append(((i + 1) * det.frame_ms, det.since_end_ms))
    assert len(hits) == 1 and det.beeps == 1
    heard_ms, since_end = hits[0]
    assert s.beep_settle_ms <= heard_ms - 700 <= s.beep_settle_ms + 2 * det.frame_ms
    assert since_end == heard_ms - det.beep_end_ms


@pytest.mark.parametrize("hz,ms", [(1000, 100), (440, 80), (250, 500), (2600, 500),
                                   (1000, 6000)])
def test_not_a_beep_too_short_out_of_band_or_endless(hz, ms):
    assert beeps_in(gap(300) + tone(hz, ms) + gap(800)) == []


def test_beep_in_line_noise_and_in_odd_chunks():
    clean = gap(300) + tone(700, 400, dbfs=-15) + gap(800)
    noisy = mix(clean, noise(len(clean) // 8, dbfs=-40))
    for chunk in (None, 7, 333, 1000):
        found = beeps_in(noisy, chunk=chunk)
        assert len(found) == 1 and abs(found[0][0] - 700) <= 20, chunk


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("hz", [350, 1000, 2000])
def test_beep_at_20_db_snr(rate, hz):
    clean = gap(300, rate) + tone(hz, 300, rate, dbfs=-15) + gap(800, rate)
    found = beeps_in(mix(clean, noise(1400, rate, dbfs=-35, seed=hz)), rate)
    assert len(found) == 1 and abs(found[0][1] - hz) <= 0.02 * hz


def test_double_beep_reports_the_second():
    found = beeps_in(gap(300) + tone(1000, 200) + gap(100) + tone(1000, 200) + gap(800))
    assert [round(end, -1) for end, _, _ in found] == [800]


def test_no_beep_in_noise_dial_tone_or_melody():
    assert beeps_in(noise(3000, dbfs=-20)) == []
    assert beeps_in(noise(3000, dbfs=-40, seed=2)) == []
    for a, b in ((350, 440), (480, 620), (440, 480)):  # dial, busy, ringback tones
        two = mix(tone(a, 2000, dbfs=-15), tone(b, 2000, dbfs=-15))
        assert beeps_in(gap(200) + two + gap(800)) == [], (a, b)
    melody = []
    for hz in (523, 659, 784, 659, 523):  # note after note: none is followed by quiet
        melody += tone(hz, 250)
    assert beeps_in(gap(200) + melody + tone(1047, 200, dbfs=-8) + noise(800, dbfs=-10)) == []


def test_tone_measure_same_without_audioop(monkeypatch):
    frames = [pcm(tone(hz, 20, rate, phase=0.3)) for hz, rate in
              ((350, 8000), (1000, 8000), (1999, 8000), (700, 16000))]
    frames += [pcm(mix(tone(600, 20), noise(20, dbfs=-30))), pcm(noise(20, dbfs=-20))]
    rates = [8000, 8000, 8000, 16000, 8000, 8000]
    with_c = [BeepDetector(r).tone(f) for f, r in zip(frames, rates, strict=True)]
    monkeypatch.setattr(amd_mod, "_audioop", None)
    pure = [BeepDetector(r).tone(f) for f, r in zip(frames, rates, strict=True)]
    for (l1, f1, i1, s1), (l2, f2, i2, s2) in zip(with_c, pure, strict=True):
        assert abs(l1 - l2) <= 1 and abs(f1 - f2) <= 0.5 and abs(i1 - i2) <= 0.01
        assert abs(s1 - s2) <= 0.01
    assert len(beeps_in(gap(300) + tone(1000, 300) + gap(800))) == 1


def test_tone_measure_rejects_a_partial_frame():
    with pytest.raises(ValueError, match="320 bytes"):
        BeepDetector().tone(b"\0" * 100)


# -- the detector's rules and results -----------------------------------------------------


def feed_all(det, data, t0=0.0):
    size = det.beep.size
    for i in range(0, len(data) - size + 1, size):
        res = det.feed(data[i:i + size], t0 + (i + size) / 2 / det.sample_rate)
        if res is not None:
            return res
    return None


def test_silence_is_decided_at_initial_silence_and_only_once():
    det = AnsweringMachineDetector()
    res = feed_all(det, silence(8000, 4000))
    assert res == AmdResult("silence", 2.5, "no_speech")
    assert det.feed(silence(8000, 20), 2.52) is None and det.result is res


def test_deadlines_count_from_answer_when_the_fork_starts_late():
    det = AnsweringMachineDetector()
    res = feed_all(det, silence(8000, 3000), t0=1.2)
    assert res.decision == "silence" and res.at == 2.5  # 1.3 s of audio after a 1.2 s delay


def test_a_beep_during_the_analysis_decides_machine_with_its_end():
    det = AnsweringMachineDetector(settings=AmdSettings(initial_silence_ms=2900))
    res = feed_all(det, pcm(gap(200) + tone(1000, 500) + gap(2000)))
    assert res.decision == "machine" and res.reason == "beep"
    assert abs(res.beep_end - 0.7) <= 0.02 and 1.1 <= res.at <= 1.15
    assert res.as_dict()["beep_end"] == res.beep_end


@needs_tools
def test_result_holds_numbers_and_codes_only(outcomes):
    for o in outcomes:
        d = o.result.as_dict()
        assert set(d) == {"decision", "at", "reason", "greeting_ms", "silence_ms", "words",
                          "beep_end"}
        assert all(isinstance(v, int | float | type(None)) for k, v in d.items()
                   if k not in ("decision", "reason"))
        assert d["reason"] in ("short_greeting", "long_greeting", "many_words", "beep",
                               "no_speech", "timeout")


# -- settings ----------------------------------------------------------------------------


def test_settings_defaults_and_from_dict():
    s = AmdSettings()
    assert (s.initial_silence_ms, s.greeting_max_ms, s.after_greeting_silence_ms,
            s.total_analysis_ms) == (2500, 1500, 800, 3000)
    assert AmdSettings.from_dict(None) == s == AmdSettings.from_dict({})
    t = AmdSettings.from_dict({"greeting_max_ms": 2000.0, "min_rms": 80, "beep_min_hz": 400})
    assert t.greeting_max_ms == 2000 and isinstance(t.greeting_max_ms, int)
    assert t.min_rms == 80.0 and t.beep_min_hz == 400
    assert AmdSettings.from_dict(t.as_dict()) == t
    with pytest.raises(AttributeError):
        t.greeting_max_ms = 1  # frozen


@pytest.mark.parametrize("data,message", [
    ({"greeting_max": 2000}, "unknown setting.*greeting_max;.*greeting_max_ms"),
    ({"greeting_max_ms": "2s"}, r"amd.greeting_max_ms: expected int, got '2s'"),
    ({"greeting_max_ms": 1500.5}, "amd.greeting_max_ms: expected int"),
    ({"min_rms": True}, "amd.min_rms: expected float, got True"),
    ({"after_greeting_silence_ms": -5}, "must not be negative"),
    ({"min_word_ms": 0}, "amd.min_word_ms: must be positive"),
    ({"beep_wait_ms": 0}, "amd.beep_wait_ms: must be positive"),
    ({"vad_mode": 4}, "amd.vad_mode: must be 0, 1, 2 or 3"),
    ({"initial_silence_ms": 4000}, "must not exceed total_analysis_ms"),
    ({"greeting_max_ms": 3000}, "must be below total_analysis_ms"),
    ({"beep_min_hz": 2500}, "need min < max"),
    ({"beep_max_ms": 100}, "must be at least beep_min_ms"),
    ({"beep_max_impurity": 3.0}, "must be in 0..2"),
    ({"beep_min_share": 1.5}, "amd.beep_min_share: must be in 0..1"),
    ({"total_analysis_ms": float("nan")}, "expected int"),
])
def test_settings_errors_name_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        AmdSettings.from_dict(data)


def test_settings_must_be_a_mapping():
    with pytest.raises(ValueError, match="amd: expected a mapping of settings, got list"):
        AmdSettings.from_dict([("greeting_max_ms", 2000)])


def test_for_tenant_reads_rate_and_the_reminders_amd_tuning():
    """The tuning a clinic writes under ``reminders.amd`` in tenants.yaml is the one the
    reminder call's detector uses (the detector once looked for ``tenant.amd``, which a
    tenant does not have, and silently kept the defaults)."""
    from esl_app.config.tenants import parse_tenants

    tenants = parse_tenants("""
tenants:
  - id: tuned
    name: Tuned Clinic
    dids: ["1001"]
    timezone: UTC
    hours: {mon-sun: "08:00-18:00"}
    sample_rate: 16000
    doctors: [{id: lee, name: Dr. Lee}]
    reminders: {dial: "sofia/gateway/x/{number}",
                amd: {greeting_max_ms: 1800, after_greeting_silence_ms: 600}}
  - id: plain
    name: Plain Clinic
    dids: ["1002"]
    timezone: UTC
    hours: {mon-sun: "08:00-18:00"}
    doctors: [{id: lee, name: Dr. Lee}]
""")
    det = AnsweringMachineDetector.for_tenant(tenants.get("tuned"))
    assert det.sample_rate == 16000 and det.beep.size == 640
    assert (det.settings.greeting_max_ms, det.settings.after_greeting_silence_ms) == (1800, 600)
    plain = AnsweringMachineDetector.for_tenant(tenants.get("plain"))
    assert plain.settings == AmdSettings() and plain.sample_rate == 8000
