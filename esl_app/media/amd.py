"""Answering-machine detection (AMD) from the caller audio the bot already receives.

Why in the bot: FreeSWITCH's own AMD needs a module not every build ships
(mod_avmd / mod_amd); the audio fork reaches us on any FreeSWITCH. Issue #28's
outbound reminder calls need to know, within 3 s of answer, whether a person or a
voicemail picked up, and when a voicemail's beep ends (when a message may start).

Heuristics (Asterisk's ``AMD()`` application decides the same way):

- a person answers with a short greeting ("Hello?", "Hi, this is Maria") and then
  waits: ``after_greeting_silence_ms`` of silence after at most ``greeting_max_ms``
  of speech means **human**;
- a machine talks on for seconds: more than ``greeting_max_ms`` of speech, or more
  than ``max_words`` words before a pause, means **machine**; so does a beep;
- nobody speaking for ``initial_silence_ms`` means **silence**; the analysis never
  runs past ``total_analysis_ms``: undecided then means **unknown**.

Speech is webrtcvad (:class:`~esl_app.media.vad.VoiceDetector`) gated by level, as in
:mod:`esl_app.media.endpoint`. The beep is a steady pure tone (350-2000 Hz, at
least 150 ms) followed by quiet; see :class:`BeepDetector`.

Everything is synchronous and in stream time, so results do not depend on
scheduling and tests are exact. Results hold numbers only (no audio, no words).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from operator import mul
from typing import Any, Literal

from esl_app.media.pcm import frame_bytes
from esl_app.media.vad import FrameSplitter, VoiceDetector

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop as _audioop  # type: ignore[import-not-found]
    except ImportError:  # Python >= 3.13: the pure-Python path below, same results
        _audioop = None

__all__ = ["AmdResult", "AmdSettings", "AnsweringMachineDetector", "BeepDetector",
           "Decision"]

Decision = Literal["human", "machine", "silence", "unknown"]

_FRAME_MS = 20


@dataclass(frozen=True, slots=True)
class AmdSettings:
    """Per-tenant AMD thresholds (milliseconds, Hz, linear RMS of 16-bit samples).

    The speech thresholds are Asterisk's AMD defaults (initial silence 2500, greeting
    1500, after-greeting silence 800) with the analysis capped at 3 s; a word is 120 ms
    as for barge-in (TurnDetector's min_speech_ms). Counting words is off by default: on
    bench/amd_corpus.py it does not tell humans from machines. Build from a tenants.yaml
    mapping with :meth:`from_dict`; invalid values raise ``ValueError`` naming the key.
    """

    initial_silence_ms: int = 2500     # nobody speaks this long after answer: silence
    greeting_max_ms: int = 1500        # more speech than this before a pause: machine
    after_greeting_silence_ms: int = 800  # this much silence after a greeting: human
    total_analysis_ms: int = 3000      # decide by then (undecided: unknown)
    min_word_ms: int = 120             # shorter voiced runs are clicks, hum, VAD warm-up
    between_words_ms: int = 60         # silence that separates two words
    max_words: int = 0                 # this many words before a pause: machine (0: off)
    vad_mode: int = 3                  # webrtcvad aggressiveness 0..3
    min_rms: float = 100.0             # quieter frames are never speech
    beep_min_hz: int = 350
    beep_max_hz: int = 2000
    beep_min_ms: int = 150             # shortest tone that is a beep
    beep_max_ms: int = 4000            # longer steady tones (ringback, modems) are not
    beep_settle_ms: int = 400          # quiet after the tone before it counts as ended
    beep_min_rms: float = 150.0        # quieter tones are ignored
    beep_max_impurity: float = 0.1     # 0 = pure sine; white noise = 2 (see BeepDetector)
    beep_min_share: float = 0.6        # least share of a frame's energy at the tone's pitch
    beep_wait_ms: int = 30000          # after a machine verdict: no beep by then, no message

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            kind = int if f.type in (int, "int") else float
            if isinstance(v, bool) or not isinstance(v, int | float) or \
                    (kind is int and not isinstance(v, int)) or not math.isfinite(v):
                raise ValueError(f"amd.{f.name}: expected {kind.__name__}, got {v!r}")
            if v < 0:
                raise ValueError(f"amd.{f.name}: must not be negative, got {v!r}")
        positive = ("greeting_max_ms", "after_greeting_silence_ms", "total_analysis_ms",
                    "min_word_ms", "beep_min_hz", "beep_min_ms", "beep_settle_ms",
                    "beep_wait_ms")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"amd.{name}: must be positive, got {getattr(self, name)!r}")
        if self.vad_mode not in (0, 1, 2, 3):
            raise ValueError(f"amd.vad_mode: must be 0, 1, 2 or 3, got {self.vad_mode!r}")
        if self.initial_silence_ms > self.total_analysis_ms:
            raise ValueError("amd.initial_silence_ms: must not exceed total_analysis_ms "
                             f"({self.initial_silence_ms} > {self.total_analysis_ms})")
        if self.greeting_max_ms >= self.total_analysis_ms:
            raise ValueError("amd.greeting_max_ms: must be below total_analysis_ms "
                             f"({self.greeting_max_ms} >= {self.total_analysis_ms})")
        if not self.beep_min_hz < self.beep_max_hz <= 3800:
            raise ValueError("amd.beep_min_hz/beep_max_hz: need min < max <= 3800 Hz "
                             f"(8 kHz audio), got {self.beep_min_hz}-{self.beep_max_hz}")
        if self.beep_max_ms < self.beep_min_ms:
            raise ValueError("amd.beep_max_ms: must be at least beep_min_ms "
                             f"({self.beep_max_ms} < {self.beep_min_ms})")
        if self.beep_max_impurity > 2:
            raise ValueError("amd.beep_max_impurity: must be in 0..2, got "
                             f"{self.beep_max_impurity!r}")
        if self.beep_min_share > 1:
            raise ValueError(f"amd.beep_min_share: must be in 0..1, got {self.beep_min_share!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AmdSettings:
        """Settings from a tenants.yaml ``amd:`` mapping (missing keys keep defaults).

        Unknown keys are errors (a typo must not silently keep a default); integral
        floats such as ``2500.0`` are accepted for millisecond fields.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"amd: expected a mapping of settings, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ValueError(f"amd: unknown setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(known)}")
        values: dict[str, Any] = {}
        for k, v in data.items():
            if known[k].type in (int, "int") and isinstance(v, float) and v.is_integer():
                v = int(v)
            elif known[k].type in (float, "float") and isinstance(v, int) \
                    and not isinstance(v, bool):
                v = float(v)
            values[k] = v
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for logs and the call record)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AmdResult:
    """One call's verdict: what, when (seconds since answer) and why.

    ``reason`` is a short code (``short_greeting``, ``long_greeting``, ``many_words``,
    ``beep``, ``no_speech``, ``timeout``); the numbers say how it was reached.
    ``beep_end`` is set when a beep already ended during the analysis (seconds since
    answer): a voicemail may start at once.
    """

    decision: Decision
    at: float
    reason: str
    greeting_ms: int = 0
    silence_ms: int = 0
    words: int = 0
    beep_end: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain values for the call record (numbers and codes only)."""
        return asdict(self)


class BeepDetector:
    """Find a voicemail beep: a steady pure tone, then quiet.

    Per 20 ms frame the tone test is a linear prediction with the pole pinned to the
    unit circle: a sine of angular frequency w obeys ``x[n] + x[n-2k] = c x[n-k]`` with
    ``c = 2 cos(kw)`` (lag k = 1 sample at 8 kHz, 2 at 16 kHz so both see the same band).
    ``c`` is fitted by least squares over the frame (exact for a sine, whatever its phase
    or the frame's edges) and ``impurity`` is the fit's error energy over the frame's
    energy: 0 for a pure tone, about 2 for white noise, above the limit for most speech.
    Noise shrinks ``c`` towards 0 (it adds to the energy, not to the correlation), which
    the residual measures, so ``c`` is corrected before it gives the frequency. At low
    frequencies the fit cannot tell one tone from two close ones (a 350 + 440 Hz dial
    tone fits as 397 Hz), so a frame that passes is checked by a Goertzel filter at the
    fitted frequency: at least ``beep_min_share`` of its energy must be there (rare
    outside beeps, so its Python loop costs little on average).
    A frame is tonal when loud enough, pure enough and in the band. A beep is a run of
    tonal frames at one frequency (within 4 %) and level (at most 6 dB under its peak) lasting
    ``beep_min_ms`` (to within a frame) to ``beep_max_ms``, then ``beep_settle_ms`` of
    frames at least 6 dB quieter and not tonal: a melody's note is followed by the next
    note, a voicemail's beep by the silence it records.

    The frame is copied into one preallocated buffer, read through views made once;
    with ``audioop`` (CPython <= 3.12) the sums are C calls on those views, otherwise
    ``sum(map(mul, ...))`` over the same views. No buffers are allocated per frame.
    """

    def __init__(self, sample_rate: int = 8000, settings: AmdSettings | None = None,
                 frame_ms: int = _FRAME_MS) -> None:
        if sample_rate not in (8000, 16000):
            raise ValueError(f"beep detection supports 8000 or 16000 Hz, not {sample_rate}")
        self.settings = s = settings or AmdSettings()
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.size = frame_bytes(sample_rate, frame_ms)
        self._buf = bytearray(self.size)
        mv = memoryview(self._buf)
        # Lag k: at 16 kHz speech is oversampled and too predictable at one sample.
        k = sample_rate // 8000
        n = self.size // 2
        # x0 = x[n], x1 = x[n-k], x2 = x[n-2k] over the frame: views made once
        self._b_all = mv
        self._b_x0, self._b_x1, self._b_x2 = mv[4 * k:], mv[2 * k:-2 * k], mv[:-4 * k]
        h = mv.cast("h")
        self._h = h
        self._h_x0, self._h_x1, self._h_x2 = h[2 * k:], h[k:-k], h[:-2 * k]
        self._h_dec = h[::k]  # every k-th sample: the Goertzel filter's input
        self._m = len(self._h_dec)
        self._n = n
        self._k = k
        self._split: FrameSplitter | None = None
        self._w_scale = sample_rate / (2 * math.pi * k)
        # the band with 3 % to spare: a 350 Hz beep may measure 349.99 Hz
        self._lo_hz, self._hi_hz = 0.97 * s.beep_min_hz, 1.03 * s.beep_max_hz
        self._settle_frames = max(1, math.ceil(s.beep_settle_ms / frame_ms))
        self.level = 0.0  # the last frame's RMS (shared with the AMD's speech gate)
        self.position_ms = 0
        self.beep_end_ms: int | None = None   # stream ms where the last beep ended
        self.beep_hz = 0.0
        self.beep_ms = 0
        self.beeps = 0
        self.reset()

    def reset(self) -> None:
        """Forget any tone in progress (the results of past beeps stay)."""
        self._run = 0          # tonal frames in the current run
        self._run_hz = 0.0     # their mean frequency
        self._run_level = 0.0  # their highest level (the tone's steady level)
        self._run_e = 0.0      # their summed energy (level squared)
        self._run_first_e = self._run_last_e = 0.0  # the first and last frame's energy
        self._run_end = 0      # stream ms at the end of the run's last tonal frame
        self._dropout = False  # one impure frame after the run, tolerated inside a tone
        self._pending = False  # a tone of beep length ended; waiting for the quiet
        self._quiet = 0
        self._cand = (0, 0.0, 0, 0.0)  # pending beep: end ms, Hz, ms, level

    @property
    def since_end_ms(self) -> int | None:
        """How long ago (stream ms) the last beep ended; None before any."""
        return None if self.beep_end_ms is None else self.position_ms - self.beep_end_ms

    def feed(self, frame: bytes) -> bool:
        """Analyse one frame; True on the frame that confirms a beep has ended.

        Any chunk size is accepted (whole frames are the fast path); a chunk holding
        several frames reports whether any of them confirmed a beep.
        """
        if len(frame) == self.size:
            return self._frame(frame)
        if self._split is None:
            self._split = FrameSplitter(self.size)
        hit = False
        for f in self._split.push(frame):
            hit = self._frame(f) or hit
        return hit

    def tone(self, frame: bytes) -> tuple[float, float, float, float]:
        """(level, frequency Hz, impurity, share) of one whole frame: the per-frame test."""
        if len(frame) != self.size:
            raise ValueError(f"expected one {self.frame_ms} ms frame ({self.size} bytes), "
                             f"got {len(frame)} bytes")
        self._buf[:] = frame
        level, hz, impurity, c = self._measure()
        return level, hz, impurity, (self._share(c) if level else 0.0)

    def _measure(self) -> tuple[float, float, float, float]:
        """(level, Hz, impurity, c = 2 cos(kw)) of the frame in the buffer."""
        h, n, k = self._h, self._n, self._k
        # energy at the edges, where the windows x0, x1, x2 differ (k is 1 or 2)
        lo_out, hi_out = h[0] * h[0], h[n - 1] * h[n - 1]
        lo_in, hi_in = h[k] * h[k], h[n - 1 - k] * h[n - 1 - k]
        if k == 2:
            lo_out += h[1] * h[1]
            hi_out += h[n - 2] * h[n - 2]
            lo_in += h[3] * h[3]
            hi_in += h[n - 4] * h[n - 4]
        if _audioop is not None:
            level = float(_audioop.rms(self._b_all, 2))
            if level < self.settings.beep_min_rms:
                return level, 0.0, 2.0, 0.0
            a = level * level * n - lo_out - hi_out  # sum of x1^2 (from a rounded rms)
            if a <= 0:
                return level, 0.0, 2.0, 0.0
            x0, x1, x2 = self._b_x0, self._b_x1, self._b_x2
            c = _audioop.findfactor(x0, x1) + _audioop.findfactor(x2, x1)
            f02 = _audioop.findfactor(x0, x2)
        else:
            level = math.sqrt(sum(map(mul, h, h)) / n)
            if level < self.settings.beep_min_rms:
                return level, 0.0, 2.0, 0.0
            x0, x1, x2 = self._h_x0, self._h_x1, self._h_x2
            a = sum(map(mul, x1, x1))
            if a <= 0:
                return level, 0.0, 2.0, 0.0
            c = (sum(map(mul, x0, x1)) + sum(map(mul, x2, x1))) / a
            e2 = a + lo_out - hi_in
            f02 = sum(map(mul, x0, x2)) / e2 if e2 > 0 else math.nan
        if c != c or f02 != f02:  # NaN: a window with no energy
            return level, 0.0, 2.0, 0.0
        b0 = a - lo_in + hi_out   # sum of x0^2
        b2 = a + lo_out - hi_in   # sum of x2^2
        # |x0 + x2 - c x1|^2 / |x1|^2 = (b0 + b2 + 2 <x0, x2>) / a - c^2
        impurity = (b0 + b2 + 2.0 * f02 * b2) / a - c * c
        # white noise of power q: c shrinks by P / (P + q), impurity = q (2 + c^2) / (P + q)
        shrink = 1.0 - impurity / (2.0 + c * c)
        if shrink > 0.5:
            c /= shrink
        if c > 2.0:
            c = 2.0
        elif c < -2.0:
            c = -2.0
        return level, math.acos(0.5 * c) * self._w_scale, impurity, c

    def _share(self, c: float) -> float:
        """Share of the frame's energy at ``c = 2 cos(kw)``: a Goertzel filter, 0..~1."""
        s1 = s2 = e = 0.0
        for x in self._h_dec:
            s0 = x + c * s1 - s2
            s2 = s1
            s1 = s0
            e += x * x
        if not e:
            return 0.0
        return 2.0 * (s1 * s1 + s2 * s2 - c * s1 * s2) / (self._m * e)

    def _frame(self, frame: bytes) -> bool:
        self._buf[:] = frame
        level, hz, impurity, c = self._measure()
        self.level = level
        s = self.settings
        self.position_ms += self.frame_ms
        tonal = impurity <= s.beep_max_impurity and self._lo_hz <= hz <= self._hi_hz \
            and self._share(c) >= s.beep_min_share
        if self._run:
            same = tonal and abs(hz - self._run_hz) <= 0.04 * self._run_hz
            if same and level >= 0.5 * self._run_level:
                self._run += 1
                self._run_hz += (hz - self._run_hz) / self._run
                self._run_e += level * level
                self._run_last_e = level * level
                if level > self._run_level:
                    self._run_level = level
                self._run_end = self.position_ms
                self._dropout = False
                return False
            if not tonal and not self._dropout and self._run > 1:
                self._dropout = True  # one impure frame inside a tone is tolerated
                return False
            # The frame after a tone holds its tail (quieter, impure or off pitch): it is
            # neither tone nor quiet. Unless an impure frame held it already.
            tail = not self._dropout and (not tonal or level < 0.5 * self._run_level)
            self._close_run()
            if tail:
                return False
        if tonal:  # a tone begins (maybe right after another, at another pitch)
            self._pending = False
            self._run, self._run_hz, self._run_level = 1, hz, level
            self._run_e = self._run_first_e = self._run_last_e = level * level
            self._run_end = self.position_ms
            return False
        if not self._pending:
            return False
        end_ms, beep_hz, beep_ms, beep_level = self._cand
        if level >= 0.5 * beep_level and level >= s.beep_min_rms:
            self._pending = False  # sound goes on after the tone: music or speech
            return False
        self._quiet += 1
        if self._quiet < self._settle_frames:
            return False
        self._pending = False
        self.beep_end_ms, self.beep_hz, self.beep_ms = end_ms, beep_hz, beep_ms
        self.beeps += 1
        return True

    def _close_run(self) -> None:
        """End the tone in progress; one of beep length waits for the quiet after it."""
        # Its length from its energy at its steady level (the mean of its inner frames):
        # the first and last frames, which it may only partly fill, count for their part.
        n = self._run
        steady = (self._run_e - self._run_first_e - self._run_last_e) / (n - 2) if n > 2 \
            else self._run_level * self._run_level
        ms = round(self.frame_ms * self._run_e / steady) if steady > 0 else 0
        self._run = 0
        self._dropout = False
        s = self.settings
        if s.beep_min_ms - self.frame_ms <= ms <= s.beep_max_ms:
            self._cand = (self._run_end, self._run_hz, ms, self._run_level)
            self._pending = True
            self._quiet = 0
        else:
            self._pending = False


class AnsweringMachineDetector:
    """Decide human / machine / silence / unknown from the first seconds after answer.

    Feed every frame of the caller's audio from answer with the time since answer;
    :meth:`feed` returns an :class:`AmdResult` once, then None. After a ``machine``
    verdict keep feeding :attr:`beep` (``amd.beep.feed(frame)``) to learn when the
    beep ends, unless the result already carries ``beep_end``.
    """

    def __init__(self, sample_rate: int = 8000, settings: AmdSettings | None = None,
                 frame_ms: int = _FRAME_MS) -> None:
        self.settings = s = settings or AmdSettings()
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self._vad = VoiceDetector(sample_rate, s.vad_mode, frame_ms)
        self.beep = BeepDetector(sample_rate, s, frame_ms)
        self._silent = bytes(frame_bytes(sample_rate, frame_ms))
        self._vad_idle = False
        self.result: AmdResult | None = None
        self.position_ms = 0
        self._run_ms = 0        # the voiced run in progress (one flicker frame tolerated)
        self._gap = 0           # unvoiced frames inside that run
        self._started = False   # a first word has been heard
        self._greeting_ms = 0   # speech since the first word
        self._silence_ms = 0    # unvoiced time since the last voiced frame
        self._words = 0
        self._in_word = False

    @classmethod
    def for_tenant(cls, tenant: object) -> AnsweringMachineDetector:
        """Build from a tenant: its ``sample_rate`` and ``reminders.amd`` (tenants.yaml).

        The tuning lives under the tenant's ``reminders`` key (the only calls that need
        AMD); no reminders, or no ``amd`` there, means the defaults.
        """
        amd = getattr(getattr(tenant, "reminders", None), "amd", None)
        settings = amd if isinstance(amd, AmdSettings) else AmdSettings.from_dict(amd)
        return cls(getattr(tenant, "sample_rate", 8000), settings)

    def feed(self, pcm: bytes, t: float | None = None) -> AmdResult | None:
        """Analyse audio; return the verdict on the frame that reaches it, once.

        ``t`` is the time since answer (seconds) at the end of ``pcm``: deadlines count
        from answer even when the fork starts late. Without it, stream time is used
        (the first frame fed starts at answer). Any chunking; 20 ms frames are the
        fast path.
        """
        if self.result is not None:
            return None
        frames = self._vad.frames(pcm)
        n = len(frames) if isinstance(frames, tuple | list) else 0
        if n == 0:
            frames = list(frames)
            n = len(frames)
        step = self.frame_ms / 1000
        for i, frame in enumerate(frames):
            now = None if t is None else t - (n - 1 - i) * step
            res = self._frame(frame, now)
            if res is not None:
                self.result = res
                return res
        return None

    def _frame(self, frame: bytes, t: float | None) -> AmdResult | None:
        s = self.settings
        fm = self.frame_ms
        self.position_ms += fm
        now = self.position_ms / 1000 if t is None else t
        beep_done = self.beep.feed(frame)
        level = self.beep.level
        if self._vad_idle and frame == self._silent:
            voiced = False  # digital silence again: the VAD would only say so (see endpoint)
        else:
            said = self._vad.is_speech(frame)
            self._vad_idle = not said and frame == self._silent
            voiced = said and level >= s.min_rms
        if beep_done:
            end = now - (self.beep.since_end_ms or 0) / 1000
            return self._result("machine", now, "beep", beep_end=round(end, 3))
        if voiced:
            self._run_ms += fm * (1 + self._gap)
            self._gap = 0
            self._silence_ms = 0
            if self._started:
                self._greeting_ms += fm
            if not self._in_word and self._run_ms >= s.min_word_ms:
                self._in_word = True
                self._words += 1
                if not self._started:
                    self._started = True
                    self._greeting_ms = self._run_ms
        else:
            if self._run_ms and not self._gap and not self._in_word:
                self._gap = 1  # webrtcvad flickers inside a word's onset: one frame is kept
            else:
                self._run_ms = self._gap = 0
            self._silence_ms += fm
            if self._in_word and self._silence_ms >= s.between_words_ms:
                self._in_word = False
        if self._started:
            if self._greeting_ms > s.greeting_max_ms:
                return self._result("machine", now, "long_greeting")
            if s.max_words and self._words >= s.max_words:
                return self._result("machine", now, "many_words")
            if self._silence_ms >= s.after_greeting_silence_ms:
                return self._result("human", now, "short_greeting")
        elif now * 1000 >= s.initial_silence_ms - 1e-6 and self._run_ms == 0:
            return self._result("silence", now, "no_speech")
        if now * 1000 >= s.total_analysis_ms - 1e-6:
            if not self._started:
                return self._result("silence", now, "no_speech")
            return self._result("unknown", now, "timeout")
        return None

    def _result(self, decision: Decision, now: float, reason: str,
                beep_end: float | None = None) -> AmdResult:
        return AmdResult(decision, round(now, 3), reason, self._greeting_ms,
                         self._silence_ms if self._started else 0, self._words, beep_end)
