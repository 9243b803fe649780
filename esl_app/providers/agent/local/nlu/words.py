"""Word tokens, numbers said as digits or words, and positions ("the second one")."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from esl_app.providers.agent.contractions import expand

ANY_DOCTOR = "any"


# ---------------------------------------------------------------- tokens


def normalize(text: str | None, *, clock: bool = True) -> str:
    """Lower-case, expand contractions, drop punctuation (keeping name apostrophes and slashes).

    With ``clock`` (the default) clock forms are unified ("3pm", "p m", "9:30");
    spelled input (codes, names, e-mails) turns it off so "a m" stays two letters.
    With it on, "a m" beside another single letter is a spelling too ("A M Y").

    Memoised: one turn normalises the same utterance a dozen times (intent, yes/no,
    correction, doctor, message checks), a third of the local agent's work on the
    event loop. The cache is small, so a caller's words do not stay long after
    their turn; its values are immutable strings.
    """
    return _normalize(text or "", clock)


_PUNCT = re.compile(r"[,;!?\"()\[\]]")
_SENTENCE_DOT = re.compile(r"\.(\s|$)")
_DOTTED_LETTERS = re.compile(r"(?:[a-z]\.){2,}[a-z]\.?")
_NUM_ISH = re.compile(r"\b(\d{1,2})-?ish\b")
_WORD_ISH = re.compile(r"\b([a-z]+)-ish\b")
_CODE = re.compile(r"[a-z0-9]{3}-[a-z0-9]{3}")
_INNER_HYPHEN = re.compile(r"(?<=[a-z])-(?=[a-z])")
_AM = re.compile(r"\ba\.?m\.?(?=\s|$)")
_PM = re.compile(r"\bp\.?m\.?(?=\s|$)")
_HH_MM = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_HH_AMPM = re.compile(r"\b(\d{1,2})(am|pm)\b")


@lru_cache(maxsize=1024)
def _normalize(text: str, clock: bool) -> str:
    t = text.lower().replace("\u2019", "'")
    t = _PUNCT.sub(" ", t)
    # a dot ends a sentence unless it sits inside a token (e-mail, "a.m.")
    t = _SENTENCE_DOT.sub(r" \1", t)
    words = []
    for w in t.split():
        w = w.strip("'-")
        if not w:
            continue
        if _DOTTED_LETTERS.fullmatch(w):
            words.extend(w.replace(".", " ").split())  # "A.M.Y.": spelled, not "a.m."
            continue
        words.append(expand(w))
    t = " ".join(words)
    if not clock:
        return t
    t = _NUM_ISH.sub(r"\1", t)  # "2-ish"
    t = _WORD_ISH.sub(r"\1", t)
    # "nine-thirty", "walk-in" (not a code: "xfm-fmf")
    t = " ".join(w if "-" not in w or _CODE.fullmatch(w) else _INNER_HYPHEN.sub(" ", w)
                 for w in t.split())
    t = _AM.sub("am", t)
    t = _PM.sub("pm", t)
    t = _HH_MM.sub(r"\1 \2", t)  # 9:30 -> 9 30
    t = _HH_AMPM.sub(r"\1 \2", t)  # 3pm -> 3 pm
    return _clock_letters(t)


def _clock_letters(t: str) -> str:
    """``t`` with "a m" and "p m" said as the clock's "am" and "pm" joined up.

    Not where they are letters of a spelled word: "no, it's A M Y" and the surname
    "P A M" keep their letters, or the name heard would be "am y". Two letters are
    spelling when a single letter stands beside them ("A M Y", "P A M"), unless a
    number comes just before ("10 a m i think") or the letter beside them is the
    pronoun "i" ("i a m free", "a m i guess").
    """
    toks = t.split()
    out: list[str] = []
    i = 0
    while i < len(toks):
        if toks[i] in ("a", "p") and toks[i + 1:i + 2] == ["m"] and \
                not _spelled_pair(toks, i):
            out.append(toks[i] + "m")
            i += 2
            continue
        out.append(toks[i])
        i += 1
    return " ".join(out)


def _letter(w: str | None) -> bool:
    return w is not None and len(w) == 1 and w.isalpha()


def _spelled_pair(toks: Sequence[str], i: int) -> bool:
    """Whether ``toks[i:i + 2]`` ("a m", "p m") are letters of a spelled word."""
    before = toks[i - 1] if i else None
    if before is not None and (before.isdigit() or before in _CLOCK_NUMBERS):
        return False  # "10 a m", "ten a m": a time, whatever follows
    if before == "i" and not _letter(toks[i - 2] if i >= 2 else None):
        before = None  # "i a m": a pronoun, unless it is itself spelled ("k i a m")
    after = toks[i + 2] if i + 2 < len(toks) else None
    if after == "i" and i + 3 < len(toks) and len(toks[i + 3]) > 1:
        after = None  # "a m i think": the pronoun, not a letter
    return _letter(before) or _letter(after)


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
#: words a clock's "a m" follows ("ten a m", "nine thirty a m", "ten o'clock a m")
_CLOCK_NUMBERS = {*(w for w in _UNITS if w != "oh"), *_TENS, "o'clock", "oclock"}
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


