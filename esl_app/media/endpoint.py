"""Turn detection: when the caller starts talking (barge-in) and stops (end of turn).

Positions are stream milliseconds (audio received so far), so results do not
depend on wall-clock scheduling and tests are exact.

Rules:

- ``speech_start`` fires once ``min_speech_ms`` of voiced frames have run
  (one unvoiced frame inside the run is tolerated: webrtcvad flickers inside
  words). Its ``at_ms`` is the onset, the first voiced frame of the run; its
  ``detected_ms`` the position when it fired. Shorter blips (a click, a cough,
  line noise) never fire.
- webrtcvad keeps saying "speech" for a few frames after a loud burst (its
  hangover), which would stretch a 60 ms click past ``min_speech_ms``; a frame
  therefore only counts as voiced if its level is at least ``min_rms`` too.
- ``speech_end`` fires after ``end_silence_ms`` of unvoiced frames; ``at_ms`` is
  where the silence began, ``detected_ms`` when it fired.

Voiced onset (``voiced_speech_ms``, while the bot talks): a barge-in also fires
once ``voiced_speech_ms`` (less than ``min_speech_ms``) of the run have gone by if at
least two of its frames are periodic like a voice (normalised autocorrelation of at
least 0.5 at a pitch of 80–400 Hz) and none is a keypad tone (60 % of the frame's
energy at one DTMF row and one column frequency). Noise bursts, breaths and clicks
are not periodic and in-band DTMF is a tone: they still need ``min_speech_ms``
(bench/bench_bargein_floor.py measures both sides). It is off when the tenant asks
for a stricter rule against echo (``echo_min_speech_ms`` over ``min_speech_ms``).

Echo guard (``set_bot_speaking(True)`` while our prompt plays): with a mono fork
we only hear the caller leg, but on analogue/speakerphone lines the bot's own
voice leaks back. While the bot talks a frame only counts as voiced if its level
is also at least ``echo_min_rms`` and ``echo_ratio`` times the running level of
the leaked audio (an exponential average over frames the VAD did not accept),
and the run must last ``echo_min_speech_ms`` (longer than normal). Real
barge-in is louder and longer than echo; echo attenuated by the network (about
-20 dB or more) does not pass. A reference-based canceller would need the
``stereo`` fork (channel 1 = what FreeSWITCH plays); this guard works without it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Literal

from esl_app.media.pcm import frame_bytes, rms, silence
from esl_app.media.vad import FrameSplitter, VoiceDetector

__all__ = ["END_LEAD_MS", "EchoGuard", "TurnDetector", "TurnEvent"]

END_LEAD_MS = 100  # how close to the end of a turn a stream counts as deciding


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """A caller-turn boundary in stream milliseconds."""

    kind: Literal["speech_start", "speech_end"]
    at_ms: int
    detected_ms: int


@dataclass(frozen=True)
class EchoGuard:
    """Stricter speech rules while the bot is playing (see module docstring)."""

    echo_min_rms: float = 300.0
    echo_ratio: float = 2.0
    echo_min_speech_ms: int = 200


try:  # the compiled per-frame path (setup.py); absent where nothing could compile it
    from esl_app.media._fastpath import TurnCore as _CCore  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - built by every install with a C compiler
    _CCore = None


_DTMF_HZ = (697, 770, 852, 941, 1209, 1336, 1477, 1633)
_PERIODIC_NUM, _PERIODIC_DEN = 1, 2  # normalised autocorrelation >= 1/2
_TONE_SHARE = 0.6  # a keypad tone's share of the frame's energy


def _samples(frame: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(frame) >> 1}h", frame)


def _is_periodic(x: tuple[int, ...], rate: int) -> bool:
    """A voice's pitch period (80-400 Hz) in the frame: exact integer arithmetic.

    The same test as ``_fastpath.c``: some lag L with r(L) > 0 and
    r(L)^2 * DEN^2 >= NUM^2 * e(head) * e(tail).
    """
    n = len(x)
    sq = [v * v for v in x]
    total = sum(sq)
    if not total:
        return False
    lo, hi = rate // 400, rate // 80
    head = total  # energy of x[:n-L]
    tail = total  # energy of x[L:]
    for lag in range(1, min(hi, n - 1) + 1):
        head -= sq[n - lag]
        tail -= sq[lag - 1]
        if lag < lo:
            continue
        r = 0
        for i in range(n - lag):
            r += x[i] * x[i + lag]
        if r > 0 and r * r * _PERIODIC_DEN * _PERIODIC_DEN \
                >= _PERIODIC_NUM * _PERIODIC_NUM * head * tail:
            return True
    return False


def _is_tone(x: tuple[int, ...], rate: int, coeffs: tuple[float, ...]) -> bool:
    """A DTMF key in the frame: one row and one column frequency hold most of its energy."""
    n = len(x)
    energy = 0.0
    for v in x:
        energy += float(v) * float(v)
    if energy == 0.0:
        return False
    powers = []
    for k in coeffs:  # Goertzel at each DTMF frequency
        s1 = s2 = 0.0
        for v in x:
            s0 = float(v) + k * s1 - s2
            s2 = s1
            s1 = s0
        powers.append((s1 * s1 + s2 * s2 - k * s1 * s2) * 2.0 / n)
    return max(powers[:4]) + max(powers[4:]) >= _TONE_SHARE * energy


def _dtmf_coeffs(rate: int) -> tuple[float, ...]:
    return tuple(2.0 * math.cos(2.0 * math.pi * f / rate) for f in _DTMF_HZ)


class _PyCore:
    """The per-frame state machine in Python: the reference the compiled core equals.

    ``esl_app/media/_fastpath.c`` (``TurnCore``) does the same, frame for frame, with
    the same attribute names; tests/test_media_fastpath.py holds the two equal.
    """

    def __init__(self, process: Any, handle: Any, sample_rate: int, frame_ms: int,
                 min_speech_ms: int, end_silence_ms: int, echo_min_rms: float,
                 echo_ratio: float, echo_min_speech_ms: int, min_rms: float,
                 skip_silence: bool, voiced_speech_ms: int = 0) -> None:
        self._process = process
        self._handle = handle
        self._rate = sample_rate
        self.frame_ms = frame_ms
        self.min_speech_ms = min_speech_ms
        self.end_silence_ms = end_silence_ms
        self.echo_min_rms = echo_min_rms
        self.echo_ratio = echo_ratio
        self.echo_min_speech_ms = echo_min_speech_ms
        self.min_rms = min_rms
        self.skip_silence = skip_silence
        self.voiced_speech_ms = voiced_speech_ms
        self._coeffs = _dtmf_coeffs(sample_rate)
        self.size = frame_bytes(sample_rate, frame_ms)
        self._silent = silence(sample_rate, frame_ms)
        self._split = FrameSplitter(self.size)
        self.position_ms = 0
        self.vad_frames = 0  # frames the VAD analysed (digital silence after silence is not)
        self.vad_idle = False  # the VAD's last frame was digital silence, and not speech
        self.bot_speaking = False
        self.echo_level = 0.0
        self.in_speech = False
        self.run_ms = 0
        self.onset = 0
        self.gap = 0
        self.silence_ms = 0
        self.silence_start = 0
        self.periodic = 0  # frames of the run that look voiced, up to 2 (the voiced-onset rule)
        self.toned = False  # a frame of the run was a keypad tone

    @property
    def pending(self) -> int:
        return self._split.pending

    def feed(self, pcm: bytes) -> list[tuple[str, int, int]]:
        events: list[tuple[str, int, int]] = []
        split = self._split
        size = self.size
        if not split.pending and len(pcm) == size:  # the common case: no re-framing
            self._frame(pcm, events)
        else:
            for frame in split.push(pcm):
                self._frame(frame, events)
        return events

    def _frame(self, frame: bytes, events: list[tuple[str, int, int]]) -> None:
        start = self.position_ms
        fm = self.frame_ms
        self.position_ms = start + fm
        if self.vad_idle and frame == self._silent:
            # Digital silence after digital silence the VAD called "no speech": its verdict
            # would be "no speech" again and its models would not update (no energy, no
            # hangover held; only its filters' memory, already near zero, decays further),
            # so it is skipped, as is the level.
            # Only exact zeros: any noise, however faint, feeds its noise model
            # (tests/test_media_vad.py compares both ways on speech in noise).
            level = 0.0
            voiced = False
        else:
            level = rms(frame)
            said = bool(self._process(self._handle, self._rate, frame, len(frame) >> 1))
            self.vad_frames += 1
            self.vad_idle = self.skip_silence and not said and not level \
                and frame == self._silent
            voiced = said and level >= self.min_rms
        if self.bot_speaking:
            guard = True
            floor = max(self.echo_min_rms, self.echo_ratio * self.echo_level)
            loud = level >= floor
            if not (voiced and loud):
                # What we hear while talking and do not accept: track it as echo.
                self.echo_level = 0.9 * self.echo_level + 0.1 * level
            voiced = voiced and loud
        else:
            guard = False
        end = start + fm
        if not self.in_speech:
            if voiced:
                if self.run_ms == 0:
                    self.onset = start
                    self.periodic = 0
                    self.toned = False
                self.run_ms += fm + self.gap
                self.gap = 0
                need = max(self.min_speech_ms, self.echo_min_speech_ms) if guard \
                    else self.min_speech_ms
                early = self.voiced_speech_ms
                if guard and early and early < need \
                        and self.echo_min_speech_ms <= self.min_speech_ms:
                    # the voiced-onset rule: a voice's frames may end the run sooner
                    x = _samples(frame)
                    if not self.toned and _is_tone(x, self._rate, self._coeffs):
                        self.toned = True
                    # two periodic frames are all the rule asks: no autocorrelation after
                    if not self.toned and self.periodic < 2 and _is_periodic(x, self._rate):
                        self.periodic += 1
                    if self.run_ms >= early and self.periodic >= 2 and not self.toned:
                        need = self.run_ms
                if self.run_ms >= need:
                    self.in_speech = True
                    self.silence_ms = 0
                    events.append(("speech_start", self.onset, end))
            elif self.run_ms and self.gap == 0:
                self.gap = fm  # tolerate one unvoiced frame inside a run
            else:
                self.run_ms = 0
                self.gap = 0
        elif voiced:
            self.silence_ms = 0
        else:
            if self.silence_ms == 0:
                self.silence_start = start
            self.silence_ms += fm
            if self.silence_ms >= self.end_silence_ms:
                self.in_speech = False
                self.run_ms = 0
                self.gap = 0
                events.append(("speech_end", self.silence_start, end))


class TurnDetector:
    """Streaming speech start/end detector over one call's caller audio.

    The per-frame work runs in a core: the compiled one where it was built (the
    media path's hot loop), else :class:`_PyCore`; ``compiled=False`` asks for the
    Python one (tests compare the two).
    """

    def __init__(self, sample_rate: int = 8000, vad_mode: int = 2, min_speech_ms: int = 120,
                 end_silence_ms: int = 600, frame_ms: int = 20,
                 echo_guard: EchoGuard | None = None, min_rms: float = 100.0,
                 skip_silence: bool = True, compiled: bool = True,
                 voiced_speech_ms: int = 0) -> None:
        self.sample_rate = sample_rate
        self.echo = echo_guard or EchoGuard()
        self._vad = VoiceDetector(sample_rate, vad_mode, frame_ms)
        process, handle = _vad_entry(self._vad)
        core = _CCore if compiled and _CCore is not None and process is not None else _PyCore
        if process is None:  # pragma: no cover - webrtcvad without its C entry point
            process, handle = (lambda _h, _r, frame, _n: self._vad.is_speech(frame)), None
        self._core = core(process, handle, sample_rate, frame_ms, min_speech_ms,
                          end_silence_ms, float(self.echo.echo_min_rms),
                          float(self.echo.echo_ratio), self.echo.echo_min_speech_ms,
                          float(min_rms), skip_silence, voiced_speech_ms)
        self.compiled = core is not _PyCore

    @classmethod
    def for_tenant(cls, tenant: object) -> TurnDetector:
        """Build from a Tenant (its ``sample_rate`` and ``barge_in`` settings)."""
        b = tenant.barge_in  # type: ignore[attr-defined]
        guard = EchoGuard(echo_min_speech_ms=getattr(b, "echo_min_speech_ms", 0)
                          or b.min_speech_ms)
        return cls(tenant.sample_rate, b.vad_mode, b.min_speech_ms,  # type: ignore[attr-defined]
                   b.end_silence_ms, echo_guard=guard,
                   voiced_speech_ms=getattr(b, "voiced_speech_ms", 0))

    @property
    def in_speech(self) -> bool:
        """The caller is in a turn (after ``speech_start``, before ``speech_end``)."""
        return self._core.in_speech

    @property
    def vad_frames(self) -> int:
        """Frames the VAD analysed (digital silence after silence is not)."""
        return self._core.vad_frames

    @property
    def position_ms(self) -> int:
        """Milliseconds of audio analysed so far."""
        return self._core.position_ms

    @property
    def deciding(self) -> bool:
        """A turn boundary waits on the next frames: the sink asks for them early.

        Either a barge-in may be starting (the bot talks and a voiced run has begun,
        not yet ``speech_start``) or the turn may be ending (the caller has been quiet
        for all but ``END_LEAD_MS`` of ``end_silence_ms``). The media reader then reads
        the stream sooner than its batch cadence. The one test the sink makes per read.
        """
        c = self._core
        if c.in_speech:
            return c.silence_ms >= c.end_silence_ms - END_LEAD_MS
        return c.bot_speaking and c.run_ms > 0

    @property
    def barge_in_pending(self) -> bool:
        """:attr:`deciding` about a barge-in (the caller not yet in speech)."""
        return not self.in_speech and self.deciding

    @property
    def turn_end_pending(self) -> bool:
        """:attr:`deciding` about the end of the caller's turn."""
        return self.in_speech and self.deciding

    @property
    def onset_pending(self) -> bool:
        """A voiced run has begun that ``min_speech_ms`` more may make a ``speech_start``.

        Whether or not the bot talks: a listen about to give up on a silent caller
        waits for the verdict rather than cut off someone who just began.
        """
        c = self._core
        return not c.in_speech and c.run_ms > 0

    def end_turn(self) -> TurnEvent | None:
        """End the caller's turn now, without waiting for ``end_silence_ms`` of silence.

        For a turn too long to wait for (a listen's limit on one utterance): returns its
        ``speech_end`` (``None`` when the caller was not in speech). Speech that goes on
        becomes a new turn, after ``min_speech_ms`` as always.
        """
        c = self._core
        if not c.in_speech:
            return None
        end = c.position_ms
        at = c.silence_start if c.silence_ms else end
        c.in_speech = False
        c.run_ms = c.gap = c.silence_ms = 0
        return TurnEvent("speech_end", at, end)

    def set_bot_speaking(self, speaking: bool) -> None:
        """Turn the echo guard on while a prompt plays, off when it ends."""
        c = self._core
        c.bot_speaking = bool(speaking)
        if not speaking:
            c.echo_level = 0.0

    def feed(self, pcm: bytes) -> list[TurnEvent]:
        """Analyse more audio (any chunking); return the boundaries it completes.

        Per 20 ms frame: one level, one webrtcvad call and a few integer updates, in C
        where the core was compiled.
        """
        events = self._core.feed(pcm)
        if not events:
            return _NO_EVENTS
        return [TurnEvent(*ev) for ev in events]


_NO_EVENTS: list[TurnEvent] = []  # never appended to: feed's callers only iterate it


def _vad_entry(vad: VoiceDetector) -> tuple[Any, Any]:
    """The webrtcvad C entry point and this detector's handle (``None``: not available)."""
    from esl_app.media.vad import _c_process

    if _c_process is None:  # pragma: no cover - the wheel always ships it
        return None, None
    return _c_process, vad._vad._vad
