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
    "append_wav_text",
    "wav_bytes",
    "wav_duration_ms",
    "wav_text",
    "wav_with_text",
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


# -- the text of a prompt, inside its WAV ---------------------------------------------------
#
# Why inside: a prompt's plain text travels with its audio (the emulator reports what the bot
# said from it) as a standard RIFF ``LIST``/``INFO`` chunk with an ``ICMT`` (comment) entry,
# after the audio. WAV readers (libsndfile in FreeSWITCH, sox, Python's ``wave``) skip it.
# One file per prompt, not a WAV and a text file beside it: creating a file is the costly
# part of storing a prompt (0.7 ms of kernel CPU per create on our ext4 test machine).

_MAX_TEXT_CHUNK = 1 << 16  # a prompt's text is a sentence or a few: anything bigger is not ours


def _text_chunk(text: str) -> bytes:
    body = text.encode("utf-8") + b"\0"
    sub = b"ICMT" + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b"")
    return b"LIST" + struct.pack("<I", 4 + len(sub)) + b"INFO" + sub


def _is_riff_wave(head: bytes) -> bool:
    return len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def wav_with_text(wav: bytes, text: str) -> bytes:
    """``wav`` with ``text`` appended as an INFO comment chunk (not a WAV: returned as is)."""
    if not _is_riff_wave(wav):
        return wav
    out = bytearray(wav)
    if len(out) & 1:  # RIFF chunks start on even offsets
        out += b"\0"
    out += _text_chunk(text)
    out[4:8] = struct.pack("<I", len(out) - 8)
    return bytes(out)


def append_wav_text(path: str | Path, text: str) -> bool:
    """Append ``text`` to the WAV file at ``path`` as :func:`wav_with_text` does.

    False if the file is not a RIFF WAVE (then it is left untouched).
    """
    with open(path, "r+b") as f:
        if not _is_riff_wave(f.read(12)):
            return False
        end = f.seek(0, 2)
        tail = (b"\0" if end & 1 else b"") + _text_chunk(text)
        f.write(tail)
        f.seek(4)
        f.write(struct.pack("<I", end + len(tail) - 8))
    return True


def wav_text(path: str | Path) -> str | None:
    """The text stored by :func:`wav_with_text` in the WAV at ``path``, or None.

    Walks the chunk headers only (the audio is skipped by seeking); a truncated or
    foreign file gives None, never an exception other than the file's own OSError.
    """
    with open(path, "rb") as f:
        if not _is_riff_wave(f.read(12)):
            return None
        size = f.seek(0, 2)
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(8)
            if len(head) < 8:
                return None
            cid, n = head[:4], struct.unpack("<I", head[4:])[0]
            if cid == b"LIST" and 4 < n <= _MAX_TEXT_CHUNK and pos + 8 + n <= size:
                body = f.read(n)
                if body[:4] == b"INFO":
                    text = _info_comment(body[4:])
                    if text is not None:
                        return text
            pos += 8 + n + (n & 1)
    return None


def _info_comment(info: bytes) -> str | None:
    pos = 0
    while pos + 8 <= len(info):
        cid, n = info[pos:pos + 4], struct.unpack("<I", info[pos + 4:pos + 8])[0]
        if cid == b"ICMT":
            raw = info[pos + 8:pos + 8 + n].split(b"\0", 1)[0]
            return raw.decode("utf-8", "replace")
        pos += 8 + n + (n & 1)
    return None
