"""Sound-alike matching for names a speech recogniser got wrong ("doctor october" → Okafor).

A recogniser that has never heard a surname writes the nearest English words it
knows, so exact matching fails exactly where callers need help. The key here is a
small Metaphone-like code: consonants folded into classes that recognisers (and
phone lines) confuse — b/p/f/v, c/k/g/q, d/t/th, s/z, m/n — vowels and
semi-vowels dropped, runs collapsed. Two words sound alike when their keys (and,
as a second opinion, their spellings) are close by :class:`difflib.SequenceMatcher`.
A match is only ever a guess: the dialogue asks the caller to confirm it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import SequenceMatcher

__all__ = ["best_match", "phonetic_key", "similarity"]

_DIGRAPHS = (("tch", "j"), ("sch", "sk"), ("ph", "f"), ("gh", "g"), ("ck", "k"), ("ch", "j"),
             ("sh", "j"), ("th", "t"), ("wh", "w"), ("qu", "kw"), ("dg", "j"), ("x", "ks"))
_INITIAL = (("kn", "n"), ("gn", "n"), ("wr", "r"), ("ps", "s"), ("ng", "n"), ("mc", "mak"))
_CLASSES = {
    "b": "P", "p": "P", "f": "P", "v": "P",
    "c": "K", "k": "K", "g": "K", "q": "K",
    "d": "T", "t": "T",
    "s": "S", "z": "S",
    "j": "J",
    "l": "L", "r": "R",
    "m": "N", "n": "N",
}


def phonetic_key(word: str) -> str:
    """The consonant skeleton of ``word`` ("okafor" → "KPR", "october" → "KTPR")."""
    w = re.sub(r"[^a-z]", "", word.lower())
    for old, new in _INITIAL:
        if w.startswith(old):
            w = new + w[len(old):]
            break
    for old, new in _DIGRAPHS:
        w = w.replace(old, new)
    w = re.sub(r"c(?=[eiy])", "s", w)  # a soft c is an s
    out: list[str] = []
    for ch in w:
        code = _CLASSES.get(ch, "")
        if code and (not out or out[-1] != code):
            out.append(code)
    return "".join(out)


def similarity(heard: str, name: str) -> float:
    """How alike two words sound, 0..1: the better of their keys' and spellings' likeness."""
    a, b = heard.lower().replace(" ", ""), name.lower().replace(" ", "")
    if not a or not b:
        return 0.0
    ka, kb = phonetic_key(a), phonetic_key(b)
    by_key = SequenceMatcher(None, ka, kb).ratio() if ka and kb else 0.0
    if ka and kb and min(len(ka), len(kb)) <= 2:
        by_key = min(by_key, 0.8) if ka == kb else by_key * 0.5  # two consonants say little
    by_spelling = SequenceMatcher(None, a, b).ratio()
    return max(by_key, by_spelling)


def best_match(heard: str, names: Iterable[tuple[str, str]], *, threshold: float = 0.74,
               margin: float = 0.1) -> str | None:
    """The id whose name sounds most like ``heard``, when it clearly beats the others.

    ``names`` are (id, name) pairs; a doctor may appear once per name part.
    """
    best: dict[str, float] = {}
    for ident, name in names:
        score = similarity(heard, name)
        best[ident] = max(best.get(ident, 0.0), score)
    if not best:
        return None
    ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)
    top_id, top = ranked[0]
    if top < threshold:
        return None
    if len(ranked) > 1 and top - ranked[1][1] < margin:
        return None
    return top_id
