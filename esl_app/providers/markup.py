"""The tiny markup agents may put in reply text, and its renderings.

Only ``<say-as interpret-as="characters">…</say-as>`` is understood: it
marks a confirmation code that must be read character by character.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

__all__ = ["say_characters", "split_sentences", "to_plain", "to_spoken", "to_ssml"]

_SAY_AS = re.compile(r'<say-as interpret-as="characters">([^<]*)</say-as>')
_NAMES = {"-": "dash", "0": "zero"}


def say_characters(code: str) -> str:
    """Mark ``code`` to be spelt out."""
    return f'<say-as interpret-as="characters">{escape(code)}</say-as>'


def to_plain(text: str) -> str:
    """Text for transcripts and logs: markup removed, the code kept as is."""
    return _SAY_AS.sub(lambda m: m.group(1), text)


def to_spoken(text: str) -> str:
    """Text for engines without SSML: codes spelt with pauses (``K, 7, M, dash…``)."""
    def spell(m: re.Match[str]) -> str:
        chars = [_NAMES.get(c, c) for c in m.group(1) if not c.isspace()]
        return ", ".join(chars)

    return _SAY_AS.sub(spell, text)


def to_ssml(text: str) -> str:
    """A ``<speak>`` document for engines with SSML (Polly)."""
    parts: list[str] = []
    last = 0
    for m in _SAY_AS.finditer(text):
        parts.append(escape(text[last:m.start()]))
        parts.append(f'<say-as interpret-as="characters">{m.group(1)}</say-as>')
        last = m.end()
    parts.append(escape(text[last:]))
    return "<speak>" + "".join(parts) + "</speak>"


_ABBREV = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Prof|St|Jr|Sr|No|Ave|Rd|vs|etc|a\.m|p\.m)\.$", re.I)


def split_sentences(text: str) -> list[str]:
    """Split a reply at sentence ends so the first can play while the rest synthesises.

    Never after a title or abbreviation ("Dr. Smith", "9 a.m. Tuesday" stay in one piece).
    """
    pieces = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9<\"'])", text.strip())
    out: list[str] = []
    for piece in (p.strip() for p in pieces):
        if not piece:
            continue
        if out and _ABBREV.search(out[-1]):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out
