"""The emulated cloud recogniser: words only for complete, bit-exact registered lines."""

from __future__ import annotations

import json
import random
import struct

import gevent

from esl_app.sim.emulated_stt import (
    HEAD_BYTES,
    EmulatedTranscribe,
    LineTable,
    fingerprint,
)
from esl_app.sim.latency import SlowStt, make_stt_factory


def voice(seed: int, ms: int = 900) -> bytes:
    """Speech-like PCM: non-zero samples with a short exact-zero pause inside."""
    rnd = random.Random(seed)
    n = 8 * ms
    samples = [rnd.randint(-3000, 3000) or 1 for _ in range(n)]
    samples[n // 2:n // 2 + 40] = [0] * 40  # a pause inside the line
    return struct.pack(f"<{n}h", *samples)


def quiet(ms: int) -> bytes:
    return bytes(16 * ms)


def feed_chunked(stream, data: bytes, rnd: random.Random) -> None:
    i = 0
    while i < len(data):
        k = rnd.choice((1, 3, 320, 333, 640, 1601))
        stream.feed(data[i:i + k])
        i += k


def run_turn(table, audio: bytes, seed: int = 0):
    got = []
    stt = EmulatedTranscribe(table, lambda: 0.01)
    s = stt.open_stream("c", 8000, "en-US", got.append)
    feed_chunked(s, audio, random.Random(seed))
    s.finalize()
    assert got == []  # the final waits for the drawn latency
    gevent.sleep(0.05)
    assert len(got) == 1 and got[0].kind == "final"
    return got[0]


def test_registered_line_is_heard_whatever_the_chunking(tmp_path):
    table = LineTable(tmp_path)
    line = voice(1)
    assert table.register("next tuesday morning", line)
    for seed in range(5):
        ev = run_turn(table, quiet(300) + line + quiet(700), seed)
        assert ev.text == "next tuesday morning" and ev.confidence == 0.95


def test_unregistered_audio_gives_an_empty_final(tmp_path):
    table = LineTable(tmp_path)
    table.register("yes", voice(1))
    ev = run_turn(table, quiet(300) + voice(2) + quiet(700))
    assert ev.text == "" and ev.confidence == 0.0


def test_a_corrupted_or_truncated_line_is_not_heard(tmp_path):
    table = LineTable(tmp_path)
    line = voice(3)
    table.register("the first one", line)
    bad = bytearray(line)
    bad[len(bad) * 3 // 4] ^= 0x01  # one bit, well after the lookup head
    assert run_turn(table, quiet(300) + bytes(bad) + quiet(700)).text == ""
    assert run_turn(table, quiet(300) + line[:len(line) // 2]).text == ""  # ended early
    lost = line[:HEAD_BYTES * 2] + line[HEAD_BYTES * 2 + 320:]  # one frame missing
    assert run_turn(table, quiet(300) + lost + quiet(700)).text == ""


def test_two_lines_in_one_turn_and_shared_heads(tmp_path):
    table = LineTable(tmp_path)
    a, b = voice(4, 600), voice(5, 600)
    table.register("book with Dr. Smith", a)
    table.register("book with Dr. Smith on Friday", a + voice(6, 300))  # same first bytes
    table.register("please", b)
    ev = run_turn(table, quiet(200) + a + quiet(100) + b + quiet(700))
    assert ev.text == "book with Dr. Smith please"
    longer = a + voice(6, 300)
    assert run_turn(table, quiet(200) + longer + quiet(700)).text == \
        "book with Dr. Smith on Friday"


def test_odd_alignment_of_the_first_sample(tmp_path):
    table = LineTable(tmp_path)
    line = b"\x00\x01" + voice(7)[2:]  # first non-zero byte is a sample's high byte
    table.register("odd", line)
    assert run_turn(table, quiet(100) + line + quiet(700)).text == "odd"


def test_lines_registered_by_another_process_are_found(tmp_path):
    line = voice(8)
    h, n, c = fingerprint(line)
    (tmp_path / "12345.jsonl").write_text(json.dumps({"h": h, "n": n, "c": c, "t": "hi"})
                                          + "\n" + '{"h": 1, "n"')  # a line being written
    reader = LineTable(tmp_path)
    assert run_turn(reader, quiet(100) + line + quiet(700)).text == "hi"
    assert len(reader) == 1


def test_close_drops_a_pending_final(tmp_path):
    got = []
    s = EmulatedTranscribe(LineTable(tmp_path), lambda: 0.02).open_stream(
        "c", 8000, "en-US", got.append)
    s.feed(quiet(200))
    s.finalize()
    s.close()
    gevent.sleep(0.05)
    assert got == []


def test_finals_keep_their_order(tmp_path):
    delays = iter([0.05, 0.0])
    got = []
    table = LineTable(tmp_path)
    table.register("one", voice(9))
    s = EmulatedTranscribe(table, lambda: next(delays)).open_stream("c", 8000, "en", got.append)
    s.feed(quiet(100) + voice(9) + quiet(100))
    s.finalize()
    s.finalize()
    gevent.sleep(0.1)
    assert [e.text for e in got] == ["one", ""]


def test_cloud_profile_uses_it_only_with_a_table(tmp_path, monkeypatch):
    monkeypatch.delenv("IVR_EMULATED_STT_TABLE", raising=False)
    assert make_stt_factory("local") is None

    class T:
        stt = "local"
        id = "t"

    with_table = make_stt_factory("cloud", seed=1, table=str(tmp_path))
    stt = with_table(T())
    assert isinstance(stt, EmulatedTranscribe) and with_table(T()) is stt
    monkeypatch.setenv("IVR_EMULATED_STT_TABLE", str(tmp_path))
    assert isinstance(make_stt_factory("cloud")(T()), EmulatedTranscribe)
    monkeypatch.delenv("IVR_EMULATED_STT_TABLE")
    assert isinstance(make_stt_factory("cloud", base=lambda t: object())(T()), SlowStt)
