import os
import time
import wave

import pytest
from fakes.memory import freed_without_the_collector

from esl_app.media.pcm import wav_text
from esl_app.providers.markup import say_characters
from esl_app.providers.stt.freeswitch import parse_detected_speech
from esl_app.providers.tts.cache import PromptCache
from esl_app.providers.tts.freeswitch import FreeswitchTts
from esl_app.providers.tts.local import LocalTts, espeak_voice


def test_local_tts_writes_wav_with_its_text_then_hits(tmp_path):
    tts = LocalTts(cache_dir=tmp_path)
    text = "Your code is " + say_characters("K7M-4Q2") + "."
    first = tts.synthesize(text, voice="Joanna", sample_rate=8000)
    assert first.app == "playback" and not first.cached
    path = first.arg
    assert os.path.isabs(path) and path.endswith(".wav")
    with wave.open(path) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    assert wav_text(path) == "Your code is K7M-4Q2."  # in the WAV: one file per prompt
    assert first.text == "Your code is K7M-4Q2."
    assert first.duration_ms and first.duration_ms > 1000
    # no temp files left behind
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(path)]
    second = tts.synthesize(text, voice="Joanna", sample_rate=8000)
    assert second.cached and second.arg == path
    assert tts.cache.stats()["hits"] == 1 and tts.cache.stats()["misses"] == 1
    wide = tts.synthesize(text, voice="Joanna", sample_rate=16000)
    assert not wide.cached and wide.arg != path
    with wave.open(wide.arg) as w:
        assert w.getframerate() == 16000
    # the call's no-wait path: the same prompt, never espeak
    ready = tts.instant(text, voice="Joanna", sample_rate=8000)
    assert ready is not None and ready.cached and ready.arg == path
    assert (ready.text, ready.duration_ms) == (first.text, first.duration_ms)
    assert tts.instant("Not made yet.", voice="Joanna", sample_rate=8000) is None
    assert tts.instant(text, voice="Matthew", sample_rate=8000) is None


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
    assert not paths[0].exists()
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


# -- the cache's file work stays off the hub ---------------------------------------------


def _wav(pcm: bytes = bytes(1600), rate: int = 8000) -> bytes:
    from esl_app.media.pcm import wav_bytes

    return wav_bytes(pcm, rate)


def test_wav_bytes_is_what_the_wave_module_writes(tmp_path):
    from esl_app.media.pcm import write_wav

    pcm = bytes(range(256)) * 7
    write_wav(tmp_path / "a.wav", pcm, 16000)
    assert (tmp_path / "a.wav").read_bytes() == _wav(pcm, 16000)


def test_a_slow_disk_does_not_stop_the_hub(tmp_path, monkeypatch):
    """Creating the files of a miss runs in a real thread: other greenlets go on meanwhile."""
    import gevent
    from gevent import monkey

    from esl_app.providers.tts import cache as cache_mod

    real_sleep = monkey.get_original("time", "sleep")
    real_ident = monkey.get_original("threading", "get_ident")
    store = cache_mod._store
    seen = {}

    def slow_store(*args):
        seen["thread"] = real_ident()
        real_sleep(0.3)  # a journal commit stuck behind other writers
        return store(*args)

    monkeypatch.setattr(cache_mod, "_store", slow_store)
    monkeypatch.setattr(cache_mod, "on_memory_fs", lambda _p: False)  # a disk, wherever /tmp is
    ticks = []

    def ticker():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    t = gevent.spawn(ticker)
    gevent.sleep(0)
    try:
        got = PromptCache(tmp_path).get_or_create("t", "v", 8000, "slow", "slow",
                                                  lambda _p: _wav())
    finally:
        t.kill()
    assert not got.cached and got.path.read_bytes()[:len(_wav())][8:] == _wav()[8:]
    assert wav_text(got.path) == "slow"
    assert seen["thread"] != real_ident()
    assert len(ticks) > 10  # ~30 ticks in the 0.3 s; a blocked hub gives 1 or 2


def test_memory_file_systems_are_told_from_the_mount_table(tmp_path):
    from esl_app.providers.tts.cache import on_memory_fs

    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw,relatime 0 0\n"
        "tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0\n"
        "tmpfs /srv/ivr/var/prompts tmpfs rw 0 0\n"
        "/dev/vdb /srv/ivr/var/prompts/old ext4 rw 0 0\n"
        "tmpfs /mnt/with\\040space tmpfs rw 0 0\n"
        "/dev/vdc /mnt/shm-like ext4 rw 0 0\n"
        "garbage\n")
    m = str(mounts)
    assert on_memory_fs("/dev/shm/ivr-prompts", m)
    assert on_memory_fs("/srv/ivr/var/prompts", m)
    assert on_memory_fs("/srv/ivr/var/prompts/a.wav", m)
    assert not on_memory_fs("/srv/ivr/var/prompts/old/a.wav", m)  # the mount inside decides
    assert not on_memory_fs("/srv/ivr/var/prompts2", m)  # a prefix of the name is not a parent
    assert not on_memory_fs("/mnt/shm-like/x", m)
    assert on_memory_fs("/mnt/with space/x", m)
    assert not on_memory_fs("/work/var/prompts", m)
    assert not on_memory_fs("/dev/shm/x", str(tmp_path / "no-such-table"))


def test_on_a_memory_file_system_a_miss_is_stored_on_the_hub(tmp_path, monkeypatch):
    """No thread hop: on tmpfs the write (~0.1 ms) is cheaper than two wake-ups."""
    from gevent import monkey

    from esl_app.providers.tts import cache as cache_mod

    real_ident = monkey.get_original("threading", "get_ident")
    store = cache_mod._store
    seen = []

    def watched_store(*args):
        seen.append(real_ident())
        return store(*args)

    monkeypatch.setattr(cache_mod, "_store", watched_store)
    monkeypatch.setattr(cache_mod, "on_memory_fs", lambda _p: True)
    cache = PromptCache(tmp_path / "p")
    got = cache.get_or_create("t", "v", 8000, "hello", "hello", lambda _p: _wav())
    assert not got.cached and wav_text(got.path) == "hello"
    assert seen == [real_ident()]
    assert [p.name for p in (tmp_path / "p").iterdir()] == [got.path.name]
    assert cache.get_or_create("t", "v", 8000, "hello", "hello", lambda _p: _wav()).cached
    assert seen == [real_ident()]


def test_dev_shm_is_seen_as_memory(tmp_path):
    from esl_app.providers.tts.cache import on_memory_fs

    if not os.path.isdir("/dev/shm") or not on_memory_fs("/dev/shm"):
        pytest.skip("no tmpfs at /dev/shm here")
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        link = tmp_path / "prompts"
        link.symlink_to(d)  # var/prompts pointing into tmpfs counts as tmpfs
        cache = PromptCache(link)
        assert cache._inline
        got = cache.get_or_create("t", "v", 8000, "shm", "shm", lambda _p: _wav())
        assert wav_text(got.path) == "shm" and str(got.path).startswith(os.path.realpath(d))
    assert not PromptCache(tmp_path / "disk")._inline or on_memory_fs(tmp_path)


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    import pytest

    cache = PromptCache(tmp_path / "p")
    cache.get_or_create("t", "v", 8000, "first", "first", lambda _p: _wav())

    def gone(_p):
        for f in (tmp_path / "p").iterdir():
            f.unlink()
        (tmp_path / "p").rmdir()
        (tmp_path / "p").write_text("a file where the directory was")
        return _wav()

    with pytest.raises(OSError):
        cache.get_or_create("t", "v", 8000, "second", "second", gone)
    (tmp_path / "p").unlink()
    assert not list(tmp_path.iterdir())
    # the next miss makes the directory again
    assert cache.get_or_create("t", "v", 8000, "third", "third", lambda _p: _wav()).path.exists()


def test_a_hit_refreshes_the_last_use_time_at_most_every_ten_minutes(tmp_path):
    from esl_app.providers.tts import cache as cache_mod

    cache = PromptCache(tmp_path)
    path = cache.get_or_create("t", "v", 8000, "greeting", "greeting", lambda _p: _wav()).path
    old = time.time() - 7200
    os.utime(path, (old, old))
    assert cache.get_or_create("t", "v", 8000, "greeting", "greeting", lambda _p: b"").cached
    assert path.stat().st_mtime == old  # touched at creation a moment ago: not again
    key = next(iter(cache._touched))
    cache._touched[key] -= cache_mod._TOUCH_EVERY_S + 1
    cache.get_or_create("t", "v", 8000, "greeting", "greeting", lambda _p: b"")
    assert path.stat().st_mtime > old + 7000
    # so a prompt in use survives age pruning, and one unused for hours does not
    assert cache.prune(max_age_s=3600) == 0


def test_the_duration_is_read_once_then_remembered(tmp_path):
    cache = PromptCache(tmp_path)
    got = cache.get_or_create("t", "v", 8000, "two", "two", lambda _p: _wav(bytes(32000)))
    assert cache.duration_ms(got.path) == 2000  # from the bytes written: no file read
    written = cache.get_or_create("t", "v", 8000, "own", "own",
                                  lambda p: p.write_bytes(_wav(bytes(8000))))
    assert cache.duration_ms(written.path) == 500  # the header, read off the hub
    written.path.write_bytes(b"not a wav any more")
    assert cache.duration_ms(written.path) == 500  # remembered
    fresh = PromptCache(tmp_path)
    fresh.get_or_create("t", "v", 8000, "two", "two", lambda _p: b"")
    assert fresh.duration_ms(got.path) == 2000  # another worker: a hit, read once


def _slow_synth(calls: list[str], name: str, data: bytes = b"RIFF"):
    import gevent

    def synth(tmp):
        calls.append(name)
        gevent.sleep(0.05)  # a request to Polly
        return data
    return synth


def test_concurrent_misses_synthesise_a_prompt_once(tmp_path):
    import gevent

    cache = PromptCache(tmp_path)
    calls: list[str] = []
    jobs = [gevent.spawn(cache.get_or_create, "t", "v", 8000, "hello", "hello",
                         _slow_synth(calls, f"g{i}")) for i in range(3)]
    gevent.joinall(jobs, raise_error=True)
    assert calls == ["g0"]
    assert [j.value.cached for j in jobs] == [False, True, True]
    assert (cache.misses, cache.hits) == (1, 2)


def test_a_waiter_synthesises_itself_when_the_first_call_hangs_up_meanwhile(tmp_path):
    """The owner's greenlet is killed mid-synthesis (its caller hung up): a call waiting
    for the same prompt must still get it, not the other call's GreenletExit."""
    import gevent

    cache = PromptCache(tmp_path)
    calls: list[str] = []
    owner = gevent.spawn(cache.get_or_create, "t", "v", 8000, "hi", "hi",
                         _slow_synth(calls, "owner"))
    waiter = gevent.spawn(cache.get_or_create, "t", "v", 8000, "hi", "hi",
                          _slow_synth(calls, "waiter"))
    gevent.sleep(0.01)
    owner.kill()
    got = waiter.get(timeout=5)
    assert calls == ["owner", "waiter"] and not got.cached and got.path.exists()
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("how", ["killed", "failed"])
def test_a_miss_cut_short_leaves_no_cycle_for_the_collector(tmp_path, how):
    """A kill (the caller hung up) or a provider failure mid-synthesis must not tie
    the caller's frames into a reference cycle: at 1000 calls those wait for full
    collections that stop the hub."""
    import gevent

    cache = PromptCache(tmp_path)

    def broken(tmp):
        gevent.sleep(0.02)
        raise RuntimeError("Polly said no")

    synth = _slow_synth([], "x") if how == "killed" else broken

    def ask(verb):  # verb: the Speak verb whose greenlet asked for the prompt
        cache.get_or_create("t", "v", 8000, "bye", "bye", synth)

    def end(g):
        gevent.sleep(0.01)
        if how == "killed":
            g.kill()
        else:
            g.join()
            assert isinstance(g.exception, RuntimeError)

    assert freed_without_the_collector(ask, end), "the miss's frames wait for the cyclic GC"


def test_ivr_maintenance_prompts_prunes_by_age_then_size(tmp_path):
    """The cron job an operator runs, above all with the cache on tmpfs (RAM)."""
    from click.testing import CliRunner

    from esl_app.cli import cli

    cache = PromptCache(tmp_path / "prompts")
    paths = [cache.get_or_create("t", "v", 8000, f"line {i}", f"line {i}",
                                 lambda _p: _wav()).path for i in range(4)]
    now = time.time()
    for age_days, path in zip((30, 3, 2, 1), paths, strict=True):
        os.utime(path, (now - age_days * 86400, now - age_days * 86400))
    size = paths[0].stat().st_size
    runner = CliRunner()
    result = runner.invoke(cli, ["maintenance", "prompts", "--dir", str(tmp_path / "prompts"),
                                 "--max-age-days", "7", "--max-mb", str(2.5 * size / 1048576)])
    assert result.exit_code == 0, result.output
    assert "removed 2 prompt(s); 2 left" in result.output
    # the month-old one by age, then the least recently used of the rest by size
    assert [p.exists() for p in paths] == [False, False, True, True]
    bad = runner.invoke(cli, ["maintenance", "prompts", "--max-mb", "-1"])
    assert bad.exit_code != 0
