"""The compiled per-frame path (esl_app/media/_fastpath.c) equals its Python twin.

Both run in production: the compiled one wherever the install had a C compiler,
the Python one elsewhere. Same events, same state after every read, whatever the
audio (speech, noise, clicks, digital silence), the chunking, the echo guard and
the turn ends forced between reads; and the same WebSocket payloads and positions.
"""

from __future__ import annotations

import math
import random
import shutil
import struct

import pytest

from esl_app.media import endpoint
from esl_app.media.endpoint import EchoGuard, TurnDetector
from esl_app.media.pcm import silence
from esl_app.media.server import _unmask_py, _ws_audio_py
from esl_app.providers.tts.local import synthesize_pcm

fast = pytest.importorskip("esl_app.media._fastpath", reason="the C path was not built")

STATE = ("position_ms", "vad_frames", "vad_idle", "bot_speaking", "in_speech", "echo_level",
         "run_ms", "onset", "gap", "silence_ms", "silence_start", "pending", "periodic",
         "toned")


def test_every_install_with_a_compiler_builds_it():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    assert endpoint._CCore is not None and TurnDetector().compiled


@pytest.fixture(scope="module")
def speech() -> bytes:
    return b"".join(synthesize_pcm(t, "en-us", 8000) for t in
                    ("I would like to book an appointment", "yes", "next Tuesday at ten"))


def _noise(rnd: random.Random, ms: int, amp: int) -> bytes:
    n = 8 * ms
    return struct.pack(f"<{n}h", *(rnd.randint(-amp, amp) for _ in range(n)))


def _audio(rnd: random.Random, speech: bytes) -> bytes:
    parts = []
    for _ in range(rnd.randint(4, 12)):
        kind = rnd.choice(("speech", "silence", "noise", "click", "hum", "speech", "dtmf"))
        if kind == "speech":
            a = rnd.randrange(0, len(speech) // 2) * 2
            parts.append(speech[a:a + rnd.randint(40, 2000) * 16])
        elif kind == "silence":
            parts.append(silence(8000, rnd.choice((20, 60, 200, 700, 1500))))
        elif kind == "noise":
            parts.append(_noise(rnd, rnd.choice((20, 80, 300)), rnd.choice((3, 60, 400))))
        elif kind == "click":
            parts.append(_noise(rnd, rnd.choice((20, 40, 60)), 20000))
        elif kind == "dtmf":
            n = 8 * rnd.choice((50, 70, 200))
            lo, hi = rnd.choice(((697, 1209), (852, 1477), (941, 1336)))
            w = 2 * math.pi / 8000
            parts.append(struct.pack(f"<{n}h", *(int(6000 * (math.sin(w * lo * i)
                                                             + math.sin(w * hi * i)))
                                                  for i in range(n))))
        else:
            n = 8 * rnd.choice((100, 400))
            parts.append(struct.pack(f"<{n}h", *(int(900 * ((i % 40) - 20) / 20)
                                                  for i in range(n))))
    return b"".join(parts)


def _pair(rnd: random.Random) -> tuple[TurnDetector, TurnDetector]:
    kw = dict(sample_rate=8000, vad_mode=rnd.randint(0, 3),
              min_speech_ms=rnd.choice((60, 100, 120, 200)),
              end_silence_ms=rnd.choice((200, 600, 900)),
              echo_guard=EchoGuard(echo_min_rms=rnd.choice((150.0, 300.0)),
                                   echo_ratio=rnd.choice((1.5, 2.0)),
                                   echo_min_speech_ms=rnd.choice((100, 200))),
              min_rms=rnd.choice((0.0, 100.0)), skip_silence=rnd.random() < 0.8,
              voiced_speech_ms=rnd.choice((0, 40, 60, 60, 80)))
    c, p = TurnDetector(**kw), TurnDetector(**kw, compiled=False)
    assert c.compiled and not p.compiled
    return c, p


def _state(det: TurnDetector) -> tuple:
    return tuple(getattr(det._core, k) for k in STATE)


@pytest.mark.parametrize("seed", range(40))
def test_the_compiled_detector_equals_the_python_one(seed, speech):
    rnd = random.Random(seed)
    c, p = _pair(rnd)
    pcm = _audio(rnd, speech)
    i = 0
    while i < len(pcm):
        n = rnd.choice((320, 320, 320, 640, 960, 1, 7, 161, 319, 321, 2000))
        chunk = pcm[i:i + n]
        i += n
        if rnd.random() < 0.05:
            on = rnd.random() < 0.7
            c.set_bot_speaking(on)
            p.set_bot_speaking(on)
        if rnd.random() < 0.01:
            assert c.end_turn() == p.end_turn()
        assert c.feed(chunk) == p.feed(chunk), f"at byte {i}"
        assert _state(c) == _state(p), f"at byte {i}"
        assert (c.deciding, c.onset_pending, c.in_speech) == \
               (p.deciding, p.onset_pending, p.in_speech)
    assert c.vad_frames > 0


def test_a_read_of_one_frame_is_not_copied_and_a_bytearray_is_accepted(speech):
    c, p = TurnDetector(8000, 2, 100, 600), TurnDetector(8000, 2, 100, 600, compiled=False)
    for i in range(0, 16000, 320):
        frame = speech[i:i + 320]
        assert c.feed(bytearray(frame)) == p.feed(frame)
    assert _state(c) == _state(p)


# -- WebSocket ----------------------------------------------------------------------------


def _ws_frame(rnd: random.Random, payload: bytes, first: int = 0x82) -> bytes:
    key = bytes(rnd.randrange(256) for _ in range(4))
    body = _unmask_py(payload, key)
    return bytes((first, 0xFE)) + struct.pack("!H", len(payload)) + key + body


@pytest.mark.parametrize("seed", range(60))
def test_ws_audio_equals_the_python_fast_path(seed):
    rnd = random.Random(seed)
    frames = []
    for _ in range(rnd.randint(0, 5)):
        payload = bytes(rnd.randrange(256) for _ in range(rnd.choice((126, 320, 640, 1000))))
        frames.append(_ws_frame(rnd, payload, first=0x82 if rnd.random() < 0.9 else 0x02))
    if rnd.random() < 0.3:
        frames.append(bytes((0x81, 0x85)) + b"\x00" * 9)  # a masked text frame
    data = b"".join(frames)
    if rnd.random() < 0.4:
        data = data[:rnd.randint(0, len(data))]  # a read that ends inside a frame
    pos = rnd.choice((0, 0, min(3, len(data))))
    limit = rnd.choice((65536, 640, 320))
    assert fast.ws_audio(data, pos, limit) == _ws_audio_py(data, pos, limit)


def test_ws_audio_refuses_bad_arguments():
    with pytest.raises(TypeError):
        fast.ws_audio(bytearray(b"\x82"), 0, 10)
    with pytest.raises(ValueError):
        fast.ws_audio(b"\x82\xfe", 5, 10)
