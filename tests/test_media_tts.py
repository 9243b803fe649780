import os
import time
import wave

from esl_app.providers.stt.freeswitch import parse_detected_speech
from esl_app.providers.tts.cache import PromptCache
from esl_app.providers.tts.freeswitch import FreeswitchTts
from esl_app.providers.tts.local import LocalTts, espeak_voice
from esl_app.speech_markup import say_characters


def test_local_tts_writes_wav_and_text_then_hits(tmp_path):
    tts = LocalTts(cache_dir=tmp_path)
    text = "Your code is " + say_characters("K7M-4Q2") + "."
    first = tts.synthesize(text, voice="Joanna", sample_rate=8000)
    assert first.app == "playback" and not first.cached
    path = first.arg
    assert os.path.isabs(path) and path.endswith(".wav")
    with wave.open(path) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    assert open(path + ".txt").read().strip() == "Your code is K7M-4Q2."
    assert first.text == "Your code is K7M-4Q2."
    assert first.duration_ms and first.duration_ms > 1000
    # no temp files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [os.path.basename(path), os.path.basename(path) + ".txt"])
    second = tts.synthesize(text, voice="Joanna", sample_rate=8000)
    assert second.cached and second.arg == path
    assert tts.cache.stats()["hits"] == 1 and tts.cache.stats()["misses"] == 1
    wide = tts.synthesize(text, voice="Joanna", sample_rate=16000)
    assert not wide.cached and wide.arg != path
    with wave.open(wide.arg) as w:
        assert w.getframerate() == 16000


def test_prune_by_age_and_size(tmp_path):
    cache = PromptCache(tmp_path)

    def writer(data):
        return lambda p: p.write_bytes(data)

    paths = []
    for i in range(4):
        paths.append(cache.get_or_create("t", "v", 8000, f"text {i}", f"text {i}",
                                         writer(b"x" * 1000)).path)
    old = time.time() - 7200
    os.utime(paths[0], (old, old))
    assert cache.prune(max_age_s=3600) == 1
    assert not paths[0].exists() and not os.path.exists(str(paths[0]) + ".txt")
    os.utime(paths[1], (old + 10, old + 10))  # least recently used now
    assert cache.prune(max_bytes=2000) == 1
    assert not paths[1].exists() and paths[2].exists() and paths[3].exists()
    assert cache.stats()["files"] == 2


def test_failed_synthesis_leaves_no_wav(tmp_path):
    cache = PromptCache(tmp_path)

    def boom(p):
        p.write_bytes(b"partial")
        raise RuntimeError("espeak died")

    try:
        cache.get_or_create("t", "v", 8000, "x", "x", boom)
    except RuntimeError:
        pass
    assert not list(tmp_path.glob("*.wav")) and not list(tmp_path.glob(".tmp-*"))


def test_two_workers_share_a_cache_directory_and_it_comes_back(tmp_path):
    """Workers write into one directory; temp names must never collide, modes stay 0644."""
    a, b = PromptCache(tmp_path / "prompts"), PromptCache(tmp_path / "prompts")
    seen = []

    def synth(p):
        seen.append(p.name)
        p.write_bytes(b"RIFF" + p.name.encode())

    for i in range(3):
        a.get_or_create("t", "v", 8000, f"a{i}", f"a{i}", synth)
        b.get_or_create("t", "v", 8000, f"b{i}", f"b{i}", synth)
    assert len(set(seen)) == 6 and all(n.startswith(f".tmp-{os.getpid()}-") for n in seen)
    wavs = list((tmp_path / "prompts").glob("*.wav"))
    assert len(wavs) == 6 and not list((tmp_path / "prompts").glob(".tmp-*"))
    assert all(w.stat().st_mode & 0o777 == 0o644 for w in wavs)
    # each file holds what was written under its own temp name: no two writes met
    assert len({w.read_bytes() for w in wavs}) == 6
    for f in (tmp_path / "prompts").iterdir():
        f.unlink()
    (tmp_path / "prompts").rmdir()
    try:
        a.get_or_create("t", "v", 8000, "gone", "gone", synth)
    except FileNotFoundError:
        pass  # the first miss after the directory vanished fails; the next one makes it
    assert a.get_or_create("t", "v", 8000, "back", "back", synth).path.exists()


def test_voice_maps():
    assert espeak_voice("Joanna") == "en-us+f3"
    assert espeak_voice("Matthew") == "en-us+m3"
    assert espeak_voice("en-gb+m2") == "en-gb+m2"
    assert espeak_voice("Unknown", "en-GB") == "en-gb"


def test_freeswitch_tts_and_stt_marker():
    ins = FreeswitchTts().synthesize("Code " + say_characters("AB1") + " | ok",
                                     voice="Matthew", sample_rate=8000)
    assert ins.app == "speak" and ins.arg == "flite|rms|Code A, B, 1 ok"
    body = ('<?xml version="1.0"?><result grammar="ivr"><interpretation grammar="ivr" '
            'confidence="90"><input mode="speech">book an appointment</input>'
            '</interpretation></result>')
    ev = parse_detected_speech("detected-speech", body)
    assert ev.kind == "final" and ev.text == "book an appointment" and ev.confidence == 0.9
    assert parse_detected_speech("begin-speaking").kind == "speech_start"
