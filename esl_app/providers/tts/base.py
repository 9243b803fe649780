"""The text-to-speech interface: text in, something FreeSWITCH can play out.

A provider returns a :class:`PlayInstruction`: the dialplan application and
argument that make FreeSWITCH play the speech (``playback <file>`` for audio we
synthesised, ``speak <engine>|<voice>|<text>`` for FreeSWITCH's own TTS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["PlayInstruction", "TtsCapabilities", "TtsError", "TtsProvider"]


class TtsError(RuntimeError):
    """Synthesis failed."""


@dataclass(frozen=True)
class PlayInstruction:
    """How to play one piece of speech."""

    app: str  # "playback" or "speak"
    arg: str  # file path, or "engine|voice|text"
    text: str  # the plain text spoken (for transcripts)
    duration_ms: int | None = None
    cached: bool = False


@dataclass(frozen=True)
class TtsCapabilities:
    """What a provider can do."""

    ssml: bool = False
    sample_rates: tuple[int, ...] = (8000, 16000)


class TtsProvider(Protocol):
    """A speech synthesiser; blocking is fine, CPU-heavy work goes to a thread."""

    name: str
    capabilities: TtsCapabilities

    def synthesize(self, text: str, *, voice: str, sample_rate: int,
                   language: str = "en-US") -> PlayInstruction:
        """Synthesise one sentence (text may hold say-as markup)."""
        ...

    # Optional: ``instant(text, *, voice, sample_rate, language) -> PlayInstruction | None``
    # gives the instruction only when it needs no wait at all (a prompt already cached,
    # or nothing to make), else None; it must never synthesise. The call speaks such a
    # sentence from its own greenlet, without a hand-off to its synthesis greenlet.
