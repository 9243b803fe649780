"""Word tokens, numbers said as digits or words, and positions ("the second one")."""

from __future__ import annotations

import re
from collections.abc import Sequence

from esl_app.providers.agent.contractions import expand

ANY_DOCTOR = "any"


# ---------------------------------------------------------------- tokens


def normalize(text: str | None, *, clock: bool = True) -> str:
    """Lower-case, expand contractions, drop punctuation (keeping name apostrophes and slashes).

    With ``clock`` (the default) clock forms are unified ("3pm", "p m", "9:30");
    spelled input (codes, names, e-mails) turns it off so "a m" stays two letters.
    """
    t = (text or "").lower().replace("\u2019", "'")
    t = re.sub(r"[,;!?\"()\[\]]", " ", t)
    # a dot ends a sentence unless it sits inside a token (e-mail, "a.m.")
    t = re.sub(r"\.(\s|$)", r" \1", t)
    words = []
    for w in t.split():
        w = w.strip("'-")
        if not w:
            continue
        words.append(expand(w))
    t = " ".join(words)
    if not clock:
        return t
    t = re.sub(r"\b(\d{1,2})-?ish\b", r"\1", t)  # "2-ish"
    t = re.sub(r"\b([a-z]+)-ish\b", r"\1", t)
    # "nine-thirty", "walk-in" (not a code: "xfm-fmf")
    t = " ".join(w if re.fullmatch(r"[a-z0-9]{3}-[a-z0-9]{3}", w)
                 else re.sub(r"(?<=[a-z])-(?=[a-z])", " ", w) for w in t.split())
    t = re.sub(r"\ba\.?m\.?(?=\s|$)", "am", t)
    t = re.sub(r"\bp\.?m\.?(?=\s|$)", "pm", t)
    t = re.sub(r"\b(\d{1,2}):(\d{2})\b", r"\1 \2", t)  # 9:30 -> 9 30
    t = re.sub(r"\b(\d{1,2})(am|pm)\b", r"\1 \2", t)  # 3pm -> 3 pm
    t = re.sub(r"\ba m\b", "am", t)
    t = re.sub(r"\bp m\b", "pm", t)
    return t


def tokens(text: str | None) -> list[str]:
    """The normalised words of an utterance."""
    return normalize(text).split()


def has_any(t: str, *phrases: str) -> bool:
    """Whether any phrase occurs in normalised text ``t`` on word boundaries."""
    padded = f" {t} "
    return any(f" {p} " in padded for p in phrases)


# ---------------------------------------------------------------- numbers

_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
    "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12,
    "thirteenth": 13, "fourteenth": 14, "fifteenth": 15, "sixteenth": 16,
    "seventeenth": 17, "eighteenth": 18, "nineteenth": 19, "twentieth": 20,
    "thirtieth": 30,
}
_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "to": "2", "too": "2",
    "three": "3", "four": "4", "for": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "niner": "9",
}


def _cardinal(toks: Sequence[str], i: int) -> tuple[int, int] | None:
    """A number at ``toks[i]`` as digits or words: (value, tokens used)."""
    if i >= len(toks):
        return None
    w = toks[i]
    if w.isdigit():
        return int(w), 1
    if w in _TENS:
        if i + 1 < len(toks) and toks[i + 1] in _UNITS and 0 < _UNITS[toks[i + 1]] < 10 \
                and toks[i + 1] != "oh":
            return _TENS[w] + _UNITS[toks[i + 1]], 2
        return _TENS[w], 1
    if w in _UNITS and w != "oh":
        return _UNITS[w], 1
    return None


def _ordinal(toks: Sequence[str], i: int) -> tuple[int, int] | None:
    """An ordinal at ``toks[i]`` ("5th", "fifth", "twenty third"): (value, tokens used)."""
    if i >= len(toks):
        return None
    w = toks[i]
    m = re.fullmatch(r"(\d{1,2})(st|nd|rd|th)", w)
    if m:
        return int(m.group(1)), 1
    if w in _ORDINALS:
        return _ORDINALS[w], 1
    if w in _TENS and i + 1 < len(toks) and toks[i + 1] in _ORDINALS \
            and _ORDINALS[toks[i + 1]] < 10:
        return _TENS[w] + _ORDINALS[toks[i + 1]], 2
    return None


# ---------------------------------------------------------------- positions
_CHOICE_ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2,
                    "fourth": 3, "4th": 3, "fifth": 4}


def position(text: str | None, n: int) -> int | None:
    """Which of ``n`` choices read out the caller picked by position, or None.

    "the first one", "the latter", "option two": for an either/or question such as
    "the morning or the afternoon?" as much as for a list of times.
    """
    toks = tokens(text)
    pos = _position(toks, " ".join(toks), n)
    return pos if pos is not None and 0 <= pos < n else None


def _position(toks: Sequence[str], t: str, n: int) -> int | None:
    """The position named in ``toks`` (may be out of range), or None."""
    t = re.sub(r"\b(?:last|first|next) (?:time|week|month|year|visit|appointment|thing)\b",
               " ", t)
    toks = t.split()
    if has_any(t, "last one", "the last", "last", "latest one", "the latter", "later one",
            "latter"):
        return n - 1
    if has_any(t, "middle", "middle one"):
        return n // 2 if n == 3 else None
    if has_any(t, "earlier one", "the former", "earliest one", "whichever is earliest",
            "whichever is first", "whichever is soonest"):
        return 0
    for i, w in enumerate(toks):
        if w in _CHOICE_ORDINALS:
            return _CHOICE_ORDINALS[w]
        if w in ("option", "number", "choice") and (got := _cardinal(toks, i + 1)):
            return got[0] - 1
    return None


