"""Small L16 PCM helpers: energy, 8 kHz -> 16 kHz resampling, WAV files.

Why here: VAD, the local recogniser, the TTS cache and the emulator all need the
same few operations. ``audioop`` (C, fast) is used while Python still ships it
(deprecated in 3.11, removed in 3.13); otherwise a pure-Python fallback keeps
behaviour identical, only slower. No numpy dependency.
"""

from __future__ import annotations

import math
import struct
import sys
import warnings
import wave
from array import array
from pathlib import Path
from typing import Any

__all__ = [
    "Upsampler",
    "frame_bytes",
    "rms",
    "silence",
    "read_wav",
    "wav_bytes",
    "wav_duration_ms",
    "write_wav",
]

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop as _audioop  # type: ignore[import-not-found]
    except ImportError:  # Python >= 3.13
        _audioop = None

_BIG_ENDIAN = sys.byteorder == "big"


def frame_bytes(sample_rate: int, ms: int) -> int:
    """Bytes in ``ms`` milliseconds of 16-bit mono audio."""
    return sample_rate * ms // 1000 * 2


def silence(sample_rate: int, ms: int) -> bytes:
    """``ms`` of digital silence."""
    return bytes(frame_bytes(sample_rate, ms))


def _samples(pcm: bytes) -> array:
    a = array("h")
    a.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if _BIG_ENDIAN:
        a.byteswap()
    return a


def rms(pcm: bytes) -> float:
    """Root-mean-square level of L16 audio (0..32768)."""
    if not pcm:
        return 0.0
    if _audioop is not None:
        return float(_audioop.rms(pcm[: len(pcm) - len(pcm) % 2], 2))
    a = _samples(pcm)
    return math.sqrt(sum(s * s for s in a) / len(a)) if a else 0.0


class Upsampler:
    """Streaming 2x linear-interpolation upsampler (8 kHz -> 16 kHz), chunk-safe.

    pocketsphinx's bundled acoustic model is 16 kHz; telephone audio is 8 kHz.
    Linear interpolation adds no energy above 4 kHz, which the model tolerates
    (measured in bench/bench_media.py); state carries across chunks so arbitrary
    chunking gives identical output.
    """

    def __init__(self, in_rate: int = 8000, out_rate: int = 16000) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._state: Any = None
        self._last = 0

    def process(self, pcm: bytes) -> bytes:
        """Resample one chunk (any length of whole samples)."""
        if self.in_rate == self.out_rate or not pcm:
            return pcm
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        if _audioop is not None:
            out, self._state = _audioop.ratecv(pcm, 2, 1, self.in_rate, self.out_rate,
                                               self._state)
            return out
        if self.out_rate != 2 * self.in_rate:
            raise ValueError("pure-Python fallback only doubles the rate")
        src = _samples(pcm)
        out_a = array("h", bytes(4 * len(src)))
        prev = self._last
        for i, s in enumerate(src):
            out_a[2 * i] = (prev + s) // 2
            out_a[2 * i + 1] = s
            prev = s
        self._last = prev
        if _BIG_ENDIAN:
            out_a.byteswap()
        return out_a.tobytes()


def write_wav(path: str | Path, pcm: bytes, sample_rate: int) -> None:
    """Write mono 16-bit WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """A whole mono 16-bit WAV file in memory (the canonical 44-byte header + ``pcm``).

    For writers that hand the bytes to another thread: building them needs no file.
    """
    n = len(pcm)
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + n, b"WAVE", b"fmt ", 16, 1, 1,
                       sample_rate, 2 * sample_rate, 2, 16, b"data", n) + pcm


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Read a mono 16-bit WAV: (pcm, sample_rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: not mono 16-bit PCM")
        return w.readframes(w.getnframes()), w.getframerate()


def wav_duration_ms(path: str | Path) -> int:
    """Duration of a WAV file from its header."""
    with wave.open(str(path), "rb") as w:
        return int(w.getnframes() * 1000 / w.getframerate())
