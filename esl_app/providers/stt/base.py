"""The speech-to-text interface: one streaming recogniser per call.

Providers call ``on_event`` on the gevent hub (never from a foreign thread):
a provider that works in an OS thread or an asyncio loop hands its results
back through :mod:`esl_app.support.bridge`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["SttCapabilities", "SttError", "SttProvider", "SttStream", "TranscriptEvent"]


class SttError(RuntimeError):
    """The recogniser failed (service error, throttling, closed stream)."""


@dataclass(frozen=True)
class TranscriptEvent:
    """A recogniser event; ``final`` ends one caller turn."""

    kind: Literal["partial", "final", "speech_start", "speech_end", "error"]
    text: str = ""
    confidence: float | None = None


@dataclass(frozen=True)
class SttCapabilities:
    """What a provider can do, so the call engine can adapt."""

    streaming: bool = True
    partials: bool = False
    sample_rates: tuple[int, ...] = (8000, 16000)
    hints: bool = False


class SttStream(Protocol):
    """One call's recognition stream."""

    def feed(self, pcm: bytes) -> None:
        """Add L16 mono audio at the stream's sample rate (non-blocking)."""
        ...

    def finalize(self) -> None:
        """Our VAD saw the end of the utterance: emit the final result now."""
        ...

    def set_hints(self, hints: Sequence[str]) -> None:
        """Phrases expected next (may be ignored)."""
        ...

    def close(self) -> None:
        """Release everything; idempotent, never raises."""
        ...


class SttProvider(Protocol):
    """A factory of streams."""

    name: str
    capabilities: SttCapabilities

    def open_stream(
        self,
        call_id: str,
        sample_rate: int,
        language: str,
        on_event: Callable[[TranscriptEvent], None],
        hints: Sequence[str] = (),
    ) -> SttStream:
        """Start recognising one call's audio."""
        ...
