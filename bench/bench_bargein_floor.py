"""Barge-in floor: how soon the VAD calls speech, and what else it calls speech.

Run: .venv/bin/python bench/bench_bargein_floor.py [--floors 60,80,100,120] [--voiced 0,80]
         [--json]

Why: a barge-in is decided once ``barge_in.min_speech_ms`` of voiced frames have run.
A lower floor stops the prompt sooner; it also lets shorter non-speech sounds through.
This prints both sides for each candidate floor (and, with ``--voiced``, each floor
with the voiced-onset rule of ``barge_in.voiced_speech_ms``), with the echo guard on (the bot is
talking, as in every barge-in), on the audio as the fork delivers it: 8 kHz L16 after
a mu-law round trip (the PCMU leg), in 20 ms frames.

- Speech onsets: espeak-ng phrases (several voices, speeds and loudnesses) behind
  0.3–0.7 s of silence or faint line noise, started at every 5 ms offset within a
  frame. Delay = the position at which ``speech_start`` fired − the true onset (the
  first 5 ms of the phrase above -40 dBFS). Printed: p50 / p99 / max, and misses.
- Non-speech events, each alone in 1 s of the same backgrounds: clicks and taps
  (10–60 ms), knocks, noise bursts (40–80 ms), breaths (low pink-ish noise, 300 ms) and
  in-band DTMF tones (50 and 70 ms). Printed: how many fired ``speech_start`` (a false
  barge-in), per kind.

Add the fork's 20 ms frame, the switch stopping the file at its next frame and the
event back to the switch's clock to the delay for the figure FreeSWITCH shows
(docs/benchmarks.md, "Barge-in on the real FreeSWITCH").
"""

from __future__ import annotations

import argparse
import audioop
import json
import math
import platform
import random
import struct
from collections import Counter

from esl_app.media.endpoint import EchoGuard, TurnDetector
from esl_app.media.pcm import silence
from esl_app.providers.tts.local import synthesize_pcm

RATE = 8000
PHRASES = ("yes", "no, wait", "hello?", "actually I need Monday", "sorry, what was that",
           "stop", "I want the afternoon", "operator please")
VOICES = (("en-us", 175), ("en-gb", 160), ("en-us+f3", 190), ("en-us+m3", 150))
GAINS_DB = (-12.0, -6.0, 0.0)


def _pcm(samples: list[float]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *(max(-32768, min(32767, int(s))) for s in samples))


def _telephone(pcm: bytes) -> bytes:
    """A mu-law round trip, as the PCMU leg gives the fork."""
    return audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)


def _gain(pcm: bytes, db: float) -> bytes:
    return audioop.mul(pcm, 2, 10 ** (db / 20))


def _line_noise(ms: int, level: float, rnd: random.Random) -> bytes:
    n = RATE * ms // 1000
    return _pcm([rnd.gauss(0, level) for _ in range(n)])


def _background(ms: int, kind: str, rnd: random.Random) -> bytes:
    return silence(RATE, ms) if kind == "silence" else _line_noise(ms, 60.0, rnd)


def _onset_ms(pcm: bytes) -> float:
    step = RATE * 5 // 1000 * 2
    for i in range(0, len(pcm) - step, step):
        if audioop.rms(pcm[i:i + step], 2) >= 327:  # -40 dBFS
            return i / 2 / RATE * 1000
    return 0.0


def _click(ms: int, amp: int, rnd: random.Random) -> bytes:
    n = RATE * ms // 1000
    return _pcm([rnd.randint(-amp, amp) * math.exp(-4 * i / n) for i in range(n)])


def _burst(ms: int, amp: float, rnd: random.Random) -> bytes:
    n = RATE * ms // 1000
    return _pcm([rnd.gauss(0, amp) * math.sin(math.pi * i / n) for i in range(n)])


def _breath(ms: int, amp: float, rnd: random.Random) -> bytes:
    n, y, out = RATE * ms // 1000, 0.0, []
    for i in range(n):
        y = 0.97 * y + rnd.gauss(0, amp)  # low-passed noise, swelling and fading
        out.append(y * math.sin(math.pi * i / n))
    return _pcm(out)


def _dtmf(ms: int, low: float, high: float) -> bytes:
    n = RATE * ms // 1000
    return _pcm([6000 * (math.sin(2 * math.pi * low * i / RATE)
                         + math.sin(2 * math.pi * high * i / RATE)) for i in range(n)])


def noises(rnd: random.Random) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for ms in (10, 20, 40, 60):
        for amp in (4000, 12000, 24000):
            out.append((f"click {ms} ms", _click(ms, amp, rnd)))
    for amp in (3000, 9000):
        knock = b"".join(_click(15, amp, rnd) + silence(RATE, 85) for _ in range(3))
        out.append(("knock x3", knock))
    for ms in (40, 60, 80):
        for amp in (1500, 5000):
            out.append((f"noise burst {ms} ms", _burst(ms, amp, rnd)))
    for amp in (40.0, 120.0):
        out.append(("breath 300 ms", _breath(300, amp, rnd)))
    for ms in (50, 70):
        for low, high in ((697, 1209), (852, 1477), (941, 1336)):
            out.append((f"dtmf {ms} ms", _dtmf(ms, low, high)))
    return out


def _detector(floor: int, voiced: int = 0) -> TurnDetector:
    det = TurnDetector(RATE, vad_mode=2, min_speech_ms=floor, end_silence_ms=600,
                       echo_guard=EchoGuard(echo_min_speech_ms=floor), voiced_speech_ms=voiced)
    det.set_bot_speaking(True)
    return det


def _first_start(det: TurnDetector, pcm: bytes) -> int | None:
    for i in range(0, len(pcm), 320):
        for ev in det.feed(pcm[i:i + 320]):
            if ev.kind == "speech_start":
                return ev.detected_ms
    return None


def speech_cases(rnd: random.Random) -> list[tuple[bytes, float]]:
    # One at a time: the synthesiser's slots are a gevent semaphore (no threads here).
    raw = [synthesize_pcm(t, v, RATE, s) for t in PHRASES for v, s in VOICES]
    cases: list[tuple[bytes, float]] = []
    for pcm in raw:
        for db in GAINS_DB:
            voiced = _gain(pcm, db)
            onset = _onset_ms(voiced)
            for offset_ms in (0, 5, 10, 15):
                lead = 300 + 20 * rnd.randrange(20) + offset_ms
                bg = rnd.choice(("silence", "noise"))
                audio = _telephone(_background(lead, bg, rnd) + voiced + silence(RATE, 200))
                cases.append((audio, lead + onset))
    return cases


def _pick(ordered: list[float], q: float) -> float | None:
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else None


def run(floors: list[int], voiced: tuple[int, ...] = (0,)) -> dict:
    rnd = random.Random(7)
    speech = speech_cases(rnd)
    events = noises(rnd)
    result: dict = {"machine": platform.processor() or platform.machine(),
                    "speech_cases": len(speech), "noise_cases": 2 * len(events), "floors": {}}
    for floor, early in [(f, v) for f in floors for v in voiced if v < f]:
        delays, missed = [], 0
        for audio, onset in speech:
            at = _first_start(_detector(floor, early), audio)
            if at is None:
                missed += 1
            else:
                delays.append(at - onset)
        false = Counter()
        for kind, sound in events:
            for bg in ("silence", "noise"):
                audio = _telephone(_background(400, bg, rnd) + sound + _background(600, bg, rnd))
                if _first_start(_detector(floor, early), audio) is not None:
                    false[kind] += 1
        delays.sort()
        result["floors"][f"{floor}/{early}" if early else str(floor)] = {
            "delay_ms_p50": _pick(delays, 0.5), "delay_ms_p99": _pick(delays, 0.99),
            "delay_ms_max": round(delays[-1], 1) if delays else None, "missed": missed,
            "false_starts": sum(false.values()), "false_by_kind": dict(false)}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--floors", default="60,80,100,120", help="min_speech_ms values to try")
    ap.add_argument("--voiced", default="0",
                    help="barge_in.voiced_speech_ms values to try with each floor (0: off)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    res = run([int(f) for f in args.floors.split(",")],
              tuple(int(v) for v in args.voiced.split(",")))
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['speech_cases']} speech onsets, {res['noise_cases']} non-speech events, "
          "echo guard on, 8 kHz after mu-law, 20 ms frames")
    print("min_speech_ms[/voiced_speech_ms] | delay p50 / p99 / max (ms) | missed | "
          "false barge-ins (by kind)")
    for floor, r in res["floors"].items():
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(r["false_by_kind"].items())) or "-"
        print(f"{floor:>31} | {r['delay_ms_p50']:>5} / {r['delay_ms_p99']:>5} / "
              f"{r['delay_ms_max']:>5} | {r['missed']:>6} | {r['false_starts']} ({kinds})")


if __name__ == "__main__":
    main()
