"""webrtcvad on fixed frames, fed with arbitrarily chunked L16 audio.

Why a wrapper: WebSocket frames, test fixtures and resamplers deliver audio in
any chunk size, while webrtcvad only accepts exactly 10, 20 or 30 ms. The
:class:`FrameSplitter` re-frames the byte stream; :class:`VoiceDetector` labels
each frame voiced/unvoiced and keeps the stream position in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import webrtcvad

from esl_app.media.pcm import frame_bytes, rms

try:  # webrtcvad's C entry point: a frame's verdict without the wrapper's checks
    from _webrtcvad import process as _c_process  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - the wheel always ships it
    _c_process = None

__all__ = ["Frame", "FrameSplitter", "VoiceDetector"]


class FrameSplitter:
    """Re-chunk a byte stream into fixed-size frames, keeping the remainder."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % 2:
            raise ValueError("frame size must be a positive even number of bytes")
        self.size = size
        self._buf = bytearray()

    def push(self, data: bytes) -> Iterator[bytes]:
        """Yield every complete frame now available."""
        if not self._buf and len(data) == self.size:  # the common case: no copying
            yield bytes(data)
            return
        self._buf += data
        n = len(self._buf) // self.size * self.size
        if n:
            chunk = bytes(self._buf[:n])
            del self._buf[:n]
            for i in range(0, n, self.size):
                yield chunk[i:i + self.size]

    @property
    def pending(self) -> int:
        """Bytes waiting for the rest of their frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop any partial frame."""
        self._buf.clear()


@dataclass(frozen=True, slots=True)
class Frame:
    """One analysed frame: its start in stream ms, voicing and (if asked) level."""

    start_ms: int
    voiced: bool
    level: float | None = None


class VoiceDetector:
    """Label fixed frames of a stream as speech or not.

    ``mode`` 0 (least aggressive about filtering non-speech) .. 3 (most): a
    tenant's ``barge_in.vad_mode``.
    """

    def __init__(self, sample_rate: int = 8000, mode: int = 2, frame_ms: int = 20) -> None:
        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"webrtcvad does not support {sample_rate} Hz")
        if frame_ms not in (10, 20, 30):
            raise ValueError("frame_ms must be 10, 20 or 30")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self._vad = webrtcvad.Vad(mode)
        self._split = FrameSplitter(frame_bytes(sample_rate, frame_ms))
        self.position_ms = 0

    def set_mode(self, mode: int) -> None:
        """Change aggressiveness mid-stream."""
        self._vad.set_mode(mode)

    def frames(self, pcm: bytes) -> Iterable[bytes]:
        """The complete frames in ``pcm`` (plus any earlier remainder).

        Audio-fork reads are whole frames almost always: those are sliced directly,
        without the splitter's buffer or a generator (the per-frame hot path).
        """
        split = self._split
        size = split.size
        if not split.pending and len(pcm) % size == 0:
            if len(pcm) == size:
                return (pcm,)
            return [pcm[i:i + size] for i in range(0, len(pcm), size)]
        return split.push(pcm)

    def is_speech(self, frame: bytes) -> bool:
        """The VAD's verdict on one whole frame (webrtcvad's C entry point)."""
        if _c_process is not None:
            return _c_process(self._vad._vad, self.sample_rate, frame, len(frame) >> 1)
        return self._vad.is_speech(frame, self.sample_rate)  # pragma: no cover

    def process(self, pcm: bytes, with_level: bool = False) -> list[Frame]:
        """Analyse every complete frame in ``pcm`` (plus any earlier remainder)."""
        out: list[Frame] = []
        for frame in self.frames(pcm):
            voiced = self.is_speech(frame)
            level = rms(frame) if with_level else None
            out.append(Frame(self.position_ms, voiced, level))
            self.position_ms += self.frame_ms
        return out
