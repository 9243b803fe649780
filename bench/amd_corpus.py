"""Labelled synthetic call answers for answering-machine detection (issue #28).

Why synthetic: real answers carry people's voices and names; these are made on the fly
with espeak-ng (speech) and sox (resampling, telephone band, mu-law), plus tones and
noise generated here, so only this generator and its labels are committed, never audio.
Shared by tests/test_amd.py and bench/bench_amd.py.

Each :class:`Case` is an answer as the bot hears it from the moment of answer: parts in
order (speech, gaps, tones), padded with silence, optionally with line noise over all
of it and a mu-law round trip. ``label`` is what a detector should decide; a machine's
``beep_end_s`` (truth for the beep detector) follows from its parts.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from esl_app.media.amd import AmdResult, AmdSettings, AnsweringMachineDetector

__all__ = ["CASES", "Case", "Gap", "Noise", "Outcome", "Say", "Tone", "build", "frames",
           "render", "run_case", "tools_available"]

GENERATOR_VERSION = 2  # bump when rendering changes: cached audio is keyed on it
_ESPEAK_RATE = 22050


@dataclass(frozen=True)
class Say:
    """Speech by espeak-ng: voice (with variant), words per minute, pitch 0-99, gain."""

    text: str
    voice: str = "en-us"
    speed: int = 175
    pitch: int = 50
    gain_db: float = 0.0


@dataclass(frozen=True)
class Gap:
    """Silence between parts."""

    ms: int


@dataclass(frozen=True)
class Tone:
    """A tone: a voicemail beep (``beep=True``) or a note of music (``rich`` adds harmonics)."""

    hz: float
    ms: int
    dbfs: float = -12.0
    beep: bool = True
    rich: bool = False


@dataclass(frozen=True)
class Noise:
    """Line noise over the whole answer: white, pink, hum (60 Hz and harmonics), crackle."""

    kind: Literal["white", "pink", "hum", "crackle"]
    dbfs: float = -45.0


Part = Say | Gap | Tone


@dataclass(frozen=True)
class Case:
    """One labelled answer; ``parts`` start at the moment of answer."""

    name: str
    label: Literal["human", "machine", "silence"]
    parts: tuple[Part, ...]
    rate: int = 8000
    noise: Noise | None = None
    ulaw: bool = False
    tail_ms: int = 2500
    note: str = ""

    @property
    def key(self) -> str:
        """Cache key: changes with the case's content or the generator."""
        h = hashlib.sha1(f"{GENERATOR_VERSION}{self!r}".encode()).hexdigest()[:12]
        return f"{self.name}-{h}"


# -- the labelled set -----------------------------------------------------------------

_VM1 = ("Hi, you've reached the Johnson residence. We can't come to the phone right now, "
        "please leave a message after the tone.")
_VM2 = ("The person you are calling is not available. Please leave a message after the "
        "tone. When you have finished recording, you may hang up.")
_VM3 = ("Hello, you have reached the office of Doctor Smith. Our office is now closed. "
        "Please call again during business hours.")
_VM4 = ("Thank you for calling. Nobody is available to take your call. Please leave your "
        "name and number after the beep.")
_VM5 = "Hi, this is Dave and Lisa. We're not home, leave us a message and we'll call back."
_VM6 = "You have reached 5 5 5, 0 1 2 3. Please leave a message."
_VM_ES = "Hola, ha llamado a la familia García. Deje su mensaje después del tono."
_MELODY = (Tone(523, 220, -14, beep=False, rich=True), Tone(659, 220, -14, beep=False, rich=True),
           Tone(784, 320, -14, beep=False, rich=True))
_CHIME = (Tone(880, 250, -16, beep=False), Tone(660, 250, -16, beep=False),
          Tone(440, 400, -16, beep=False))

CASES: tuple[Case, ...] = (
    # humans: a short greeting, then they wait for the caller
    Case("h01", "human", (Gap(400), Say("Hello?"))),
    Case("h02", "human", (Gap(600), Say("Hello.", "en-us+f3", 160))),
    Case("h03", "human", (Gap(350), Say("Hi, this is Maria.", "en-us+f2", 170, 60))),
    Case("h04", "human", (Gap(500), Say("Yes?", "en-gb", 150))),
    Case("h05", "human", (Gap(300), Say("Hello, who's calling?", "en-us+m3", 190))),
    Case("h06", "human", (Gap(800), Say("Hi.", "en-us+f4", 140, 70))),
    Case("h07", "human", (Gap(450), Say("Good morning, Sarah speaking.", "en-gb+f3", 185))),
    Case("h08", "human", (Gap(700), Say("Hello?", "en-gb-scotland", 130)), rate=16000),
    Case("h09", "human", (Gap(500), Say("Speaking.", "en-029", 160))),
    Case("h10", "human", (Gap(400), Say("Hello?", "en-us+m1"), Gap(1200),
                          Say("Hello?", "en-us+m1")),
         note="says hello twice; the first pause decides"),
    Case("h11", "human", (Gap(250), Say("Hey, what's up?", "en-us+m2", 210))),
    Case("h12", "human", (Gap(500), Say("Hello.", "en-us+f1")), noise=Noise("white", -45)),
    Case("h13", "human", (Gap(400), Say("Hi, this is John.", "en-us", 165, 35)),
         noise=Noise("hum", -40)),
    Case("h14", "human", (Gap(400), Say("Hello, yes, this is Maria Gonzalez speaking.",
                                        "en-us+f3", 175)),
         note="a longer sentence (3 s): speech length alone says machine"),
    Case("h15", "human", (Gap(500), Say("Hola, dígame.", "es", 170))),
    Case("h16", "human", (Gap(600), Say("Hello?", "en-us+f2", 170, 50, -15)),
         note="quiet line"),
    Case("h17", "human", (Gap(500), Say("Johnson residence.", "en-us", 180))),
    Case("h18", "human", (Gap(300), Say("Hello, hello?", "en-us+m3", 220))),
    Case("h19", "human", (Gap(450), Say("Hi there.", "en-us+f2", 175)), rate=16000),
    Case("h20", "human", (Gap(1300), Say("Hello?", "en-gb+m2", 170)),
         note="slow to speak"),
    Case("h21", "human", (Gap(350), Say("Yeah, hello?", "en-us+f5", 200)), ulaw=True,
         noise=Noise("pink", -42)),
    Case("h22", "human", (Gap(550), Say("Doctor Patel's phone.", "en-gb-x-rp", 170)),
         rate=16000, noise=Noise("white", -48)),
    # machines: seconds of greeting, usually then a beep
    Case("m01", "machine", (Gap(300), Say(_VM1), Gap(500), Tone(1000, 500))),
    Case("m02", "machine", (Gap(200), Say(_VM2, "en-us+f3", 165), Gap(400), Tone(440, 300))),
    Case("m03", "machine", (Gap(500), Say(_VM3, "en-us+m3")), note="no beep"),
    Case("m04", "machine", (Gap(400), Say(_VM4, "en-gb+f3"), Gap(600), Tone(850, 250))),
    Case("m05", "machine", (Gap(300), Say(_VM1, "en-us+m3", 210), Gap(300), Tone(1400, 200))),
    Case("m06", "machine", (Gap(600), Say(_VM5, "en-us+f4", 140), Gap(500), Tone(2000, 400))),
    Case("m07", "machine", (Gap(300), Say(_VM4, "en-us+f2"), Gap(700), Tone(1800, 600)),
         rate=16000),
    Case("m08", "machine", (Gap(400), Say(_VM2, "en-gb"), Gap(500), Tone(350, 1000, -10))),
    Case("m09", "machine", (Gap(300), Say(_VM1, "en-us+f1"), Gap(400), Tone(600, 150))),
    Case("m10", "machine", (Gap(200), *_MELODY, Gap(300), Say(_VM5, "en-us+f3"), Gap(500),
                            Tone(1000, 400)), note="music-like intro (harmonics)"),
    Case("m11", "machine", (Gap(300), *_CHIME, Gap(200), Say(_VM3, "en-gb+m3")),
         note="pure-tone chime intro, no beep"),
    Case("m12", "machine", (Gap(300), Say(_VM1, "en-us+m2"), Gap(500), Tone(1000, 500)),
         noise=Noise("white", -40)),
    Case("m13", "machine", (Gap(400), Say(_VM4, "en-us"), Gap(500), Tone(700, 350)),
         noise=Noise("pink", -38)),
    Case("m14", "machine", (Gap(300), Say(_VM5, "en-us+f2", 175, 50, -12), Gap(500),
                            Tone(1000, 500, -24)), note="quiet line"),
    Case("m15", "machine", (Gap(1000), Say(_VM2, "en-us+m1"), Gap(500), Tone(1000, 500)),
         note="slow to start"),
    Case("m16", "machine", (Gap(300), Say("Hi, it's Tom. Leave a message.", "en-us+m3", 170),
                            Gap(400), Tone(1000, 500)), note="short greeting, then beep"),
    Case("m17", "machine", (Gap(400), Say(_VM5, "en-gb-scotland"), Gap(400), Tone(1000, 150),
                            Gap(100), Tone(1000, 150)), note="double beep"),
    Case("m18", "machine", (Gap(300), Say(_VM2, "en-029"), Gap(500), Tone(950, 400)),
         ulaw=True),
    Case("m19", "machine", (Gap(300), Say(_VM6, "en-us+f4"), Gap(400), Tone(1100, 300))),
    Case("m20", "machine", (Gap(300), Say("Please leave a message.", "en-us+f3"), Gap(300),
                            Tone(1000, 500)), note="very short greeting, then beep"),
    Case("m21", "machine", (Gap(300), Say(_VM4, "en-us+m1"), Gap(500), Tone(480, 300)),
         ulaw=True, noise=Noise("hum", -38)),
    Case("m22", "machine", (Gap(400), Say(_VM_ES, "es", 160), Gap(500), Tone(1000, 500))),
    Case("m23", "machine", (Gap(250), Say(_VM3, "en-us+f5", 190), Gap(600), Tone(1200, 250)),
         rate=16000, noise=Noise("crackle", -30)),
    Case("m24", "machine", (Gap(300), Say(_VM1, "en-gb-x-rp", 160), Gap(500),
                            Tone(1000, 500, -18)), ulaw=True, noise=Noise("white", -42)),
    # nobody speaks
    Case("s01", "silence", (), tail_ms=4000, note="digital silence"),
    Case("s02", "silence", (), tail_ms=4000, noise=Noise("white", -50)),
    Case("s03", "silence", (), tail_ms=4000, noise=Noise("white", -36), note="loud hiss"),
    Case("s04", "silence", (), tail_ms=4000, noise=Noise("hum", -32)),
    Case("s05", "silence", (), tail_ms=4000, noise=Noise("pink", -38)),
    Case("s06", "silence", (), tail_ms=4000, noise=Noise("crackle", -25)),
    Case("s07", "silence", (), tail_ms=4000, ulaw=True, noise=Noise("white", -46)),
    Case("s08", "silence", (), tail_ms=4000, rate=16000, noise=Noise("pink", -44)),
)


# -- rendering ----------------------------------------------------------------------------


def tools_available() -> bool:
    """espeak-ng and sox are on PATH (the corpus cannot be made without them)."""
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


def _run(cmd: list[str], data: bytes) -> bytes:
    return subprocess.run(cmd, input=data, capture_output=True, check=True, timeout=60).stdout


def _raw_args(rate: int, encoding: str = "signed-integer", bits: int = 16) -> list[str]:
    return ["-t", "raw", "-r", str(rate), "-c", "1", "-b", str(bits), "-e", encoding]


def _say(part: Say, rate: int) -> bytes:
    """Speech as a telephone passes it: 300-3400 Hz, peak at -6 dBFS plus ``gain_db``."""
    wav = _run(["espeak-ng", "-v", part.voice, "-s", str(part.speed), "-p", str(part.pitch),
                "--stdout"], part.text.encode("utf-8"))
    return _run(["sox", "-q", "-R", "-t", "wav", "-", *_raw_args(rate), "-",
                 "sinc", "300-3400", "norm", str(-6 + part.gain_db)], wav)


def _tone(part: Tone, rate: int) -> list[float]:
    """A tone with 5 ms raised-cosine edges, as beeps and notes have."""
    n = rate * part.ms // 1000
    amp = 32768 * 10 ** (part.dbfs / 20) * math.sqrt(2)  # dBFS as RMS
    harmonics = ((1, 1.0), (2, 0.5), (3, 0.3)) if part.rich else ((1, 1.0),)
    norm = math.sqrt(sum(a * a for _, a in harmonics))
    ramp = max(1, rate * 5 // 1000)
    w = 2 * math.pi * part.hz / rate
    out = []
    for i in range(n):
        env = 1.0
        if i < ramp:
            env = 0.5 - 0.5 * math.cos(math.pi * i / ramp)
        elif i >= n - ramp:
            env = 0.5 - 0.5 * math.cos(math.pi * (n - 1 - i) / ramp)
        s = sum(a * math.sin(k * w * i) for k, a in harmonics) / norm
        out.append(amp * env * s)
    return out


def _noise(noise: Noise, n: int, rate: int, seed: int) -> list[float]:
    """Line noise at ``noise.dbfs`` RMS (deterministic per case)."""
    rnd = random.Random(seed)
    target = 32768 * 10 ** (noise.dbfs / 20)
    if noise.kind == "white":
        xs = [rnd.gauss(0, 1) for _ in range(n)]
    elif noise.kind == "pink":  # Paul Kellet's economy pink filter
        b0 = b1 = b2 = 0.0
        xs = []
        for _ in range(n):
            w = rnd.gauss(0, 1)
            b0 = 0.99765 * b0 + w * 0.0990460
            b1 = 0.96300 * b1 + w * 0.2965164
            b2 = 0.57000 * b2 + w * 1.0526913
            xs.append(b0 + b1 + b2 + w * 0.1848)
    elif noise.kind == "hum":
        xs = [math.sin(2 * math.pi * 60 * i / rate) + 0.5 * math.sin(2 * math.pi * 180 * i / rate)
              + 0.05 * rnd.gauss(0, 1) for i in range(n)]
    else:  # crackle: sparse decaying clicks
        xs = [0.0] * n
        i = 0
        while i < n:
            i += rnd.randint(rate // 20, rate // 3)
            amp = rnd.uniform(0.3, 1.0) * rnd.choice((-1, 1))
            for j in range(i, min(n, i + rate // 200)):
                xs[j] = amp * rnd.gauss(0, 1) * math.exp(-(j - i) / (rate / 2000))
    level = math.sqrt(sum(x * x for x in xs) / n) or 1.0
    return [x * target / level for x in xs]


def _ulaw_round_trip(pcm: bytes, rate: int) -> bytes:
    enc = _run(["sox", "-q", "-R", *_raw_args(rate), "-", *_raw_args(rate, "u-law", 8), "-"], pcm)
    return _run(["sox", "-q", "-R", *_raw_args(rate, "u-law", 8), "-", *_raw_args(rate), "-"], enc)


def render(case: Case) -> tuple[bytes, float | None]:
    """The answer's L16 PCM and its true beep end in seconds (None without a beep)."""
    rate = case.rate
    samples: list[float] = []
    beep_end = None
    for p in case.parts:
        if isinstance(p, Gap):
            samples.extend([0.0] * (rate * p.ms // 1000))
        elif isinstance(p, Tone):
            samples.extend(_tone(p, rate))
            if p.beep:
                beep_end = len(samples) / rate
        else:
            pcm = _say(p, rate)
            samples.extend(struct.unpack(f"<{len(pcm) // 2}h", pcm))
    samples.extend([0.0] * (rate * case.tail_ms // 1000))
    if case.noise is not None:
        noise = _noise(case.noise, len(samples), rate, zlib.crc32(case.name.encode()))
        samples = [s + z for s, z in zip(samples, noise, strict=True)]
    out = struct.pack(f"<{len(samples)}h",
                      *(max(-32768, min(32767, round(s))) for s in samples))
    if case.ulaw:
        out = _ulaw_round_trip(out, rate)
    return out, beep_end


def _cached(case: Case, cache_dir: Path) -> tuple[bytes, float | None]:
    path = cache_dir / f"{case.key}.raw"
    meta = cache_dir / f"{case.key}.beep"
    if path.exists() and meta.exists():
        text = meta.read_text().strip()
        return path.read_bytes(), (float(text) if text else None)
    pcm, beep = render(case)
    fd, tmp = tempfile.mkstemp(dir=cache_dir)
    with os.fdopen(fd, "wb") as f:
        f.write(pcm)
    os.replace(tmp, path)
    meta.write_text("" if beep is None else repr(beep))
    return pcm, beep


def build(cache_dir: str | Path, cases: Iterable[Case] = CASES,
          workers: int = 2) -> dict[str, tuple[bytes, float | None]]:
    """Render (or reuse from ``cache_dir``) every case: name -> (pcm, beep end s).

    A small thread pool: the work is in espeak-ng and sox processes.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    cases = list(cases)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = list(pool.map(lambda c: _cached(c, cache), cases))
    return {c.name: r for c, r in zip(cases, done, strict=True)}


def frames(pcm: bytes, rate: int, ms: int = 20) -> Iterator[bytes]:
    """Whole ``ms`` frames of ``pcm``, as mod_audio_fork sends them (the tail is dropped)."""
    size = rate * ms // 1000 * 2
    for i in range(0, len(pcm) - size + 1, size):
        yield pcm[i:i + size]


# -- running the detector as a call would ---------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the detector made of one case, as the outbound call flow would see it."""

    case: Case
    result: AmdResult
    beep_truth: float | None      # seconds from answer to the true end of the beep
    beep_end: float | None        # where the flow learnt the beep ended
    beep_heard_at: float | None   # when it learnt it (the beep end plus the settle time)

    @property
    def correct(self) -> bool:
        """The decision matches the label."""
        return self.result.decision == self.case.label


def run_case(case: Case, pcm: bytes, beep_truth: float | None,
             settings: AmdSettings | None = None) -> Outcome:
    """Feed the answer frame by frame from answer, as the reminder-call flow will.

    Until the verdict, frames go to :class:`AnsweringMachineDetector`; after a
    ``machine`` verdict without ``beep_end``, to its ``beep`` detector until a beep ends.
    """
    amd = AnsweringMachineDetector(case.rate, settings)
    step = amd.frame_ms / 1000
    result: AmdResult | None = None
    beep_end = heard = None
    for i, frame in enumerate(frames(pcm, case.rate, amd.frame_ms)):
        t = round((i + 1) * step, 6)  # seconds since answer at the end of this frame
        if result is None:
            result = amd.feed(frame, t)
            if result is not None and result.beep_end is not None:
                beep_end, heard = result.beep_end, t
        elif result.decision == "machine" and beep_end is None:
            if amd.beep.feed(frame):
                beep_end, heard = t - (amd.beep.since_end_ms or 0) / 1000, t
        else:
            break
    if result is None:
        raise ValueError(f"{case.name}: audio ended before a verdict")
    return Outcome(case, result, beep_truth, beep_end, heard)
