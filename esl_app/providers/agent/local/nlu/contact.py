"""Names, phone numbers, e-mail addresses and confirmation codes."""

from __future__ import annotations

import re

from esl_app.providers.agent.local import names
from esl_app.providers.agent.local.nlu.words import _DIGIT_WORDS, _TENS, _UNITS, normalize

# ---------------------------------------------------------------- names


def parse_name(text: str | None) -> str | None:
    """A person's name from "my name is john smith", "it's mary o'brien", "j o h n".

    Strict: words that are rarely names ("friday", "good") refuse the whole answer,
    because outside the name question they are far likelier something else.
    """
    got = names.parse_name_answer(normalize(text, clock=False), strict=True)
    return got.name if got else None


def parse_name_answer(text: str | None, *, strict: bool = False) -> names.NameAnswer | None:
    """The name in an answer to the name question: said, spelled or both (see :mod:`.names`)."""
    return names.parse_name_answer(normalize(names.mark_spelling_breaks(text or ""),
                                             clock=False), strict=strict)


# ---------------------------------------------------------------- phone numbers


def parse_phone(text: str | None) -> str | None:
    """Digits of a phone number spoken as digits or words ("five five five one two…")."""
    t = normalize(text)
    if not t:
        return None
    toks = t.replace("-", " ").replace("(", " ").replace(")", " ").split()
    digits: list[str] = []
    i = 0
    plus = False
    while i < len(toks):
        w = toks[i]
        if w.startswith("+") and w[1:].isdigit():
            plus = not digits
            digits.append(w[1:])
        elif w == "plus" and not digits:
            plus = True
        elif w.isdigit():
            digits.append(w)
        elif w in ("double", "triple") and i + 1 < len(toks) and \
                (d := _DIGIT_WORDS.get(toks[i + 1])):
            digits.append(d * (2 if w == "double" else 3))
            i += 1
        elif w in _TENS and i + 1 < len(toks) and toks[i + 1] in _UNITS and \
                0 < _UNITS[toks[i + 1]] < 10 and toks[i + 1] != "oh":
            digits.append(str(_TENS[w] + _UNITS[toks[i + 1]]))
            i += 1
        elif w in _TENS:
            digits.append(str(_TENS[w]))
        elif w in ("hundred",) and digits:
            digits.append("00")
        elif w in _DIGIT_WORDS and w not in ("to", "too", "for", "o") or \
                (w in ("o", "for", "to", "too") and digits):
            digits.append(_DIGIT_WORDS[w])
        elif w in _UNITS:
            digits.append(str(_UNITS[w]))
        i += 1
    number = "".join(digits)
    if not 7 <= len(number) <= 15:
        return None
    return ("+" if plus else "") + number


# ---------------------------------------------------------------- e-mail

_EMAIL_WORDS = {"dot": ".", "period": ".", "point": ".", "underscore": "_", "dash": "-",
                "hyphen": "-", "minus": "-", "plus": "+"}


def parse_email(text: str | None) -> str | None:
    """An e-mail address spoken as "john dot smith at gmail dot com"."""
    t = normalize(text, clock=False)
    if not t:
        return None
    m = re.search(r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}", t)
    if m:
        return m.group(0)
    t = re.sub(r"^(my )?(e ?mail|email address|e-mail)( address)?( is)? ", "", t)
    t = re.sub(r"^(it is|that is|sure|yes|yeah|okay|ok) ", "", t)
    t = t.replace("at sign", "at").replace("at symbol", "at")
    toks = t.split()
    if "at" not in toks:
        return None
    out: list[str] = []
    for w in toks:
        if w == "at":
            out.append("@")
        elif w in _EMAIL_WORDS:
            out.append(_EMAIL_WORDS[w])
        elif w in _DIGIT_WORDS and w not in ("to", "too", "for", "o", "oh"):
            out.append(_DIGIT_WORDS[w])
        else:
            out.append(w)
    addr = "".join(out)
    if addr.count("@") != 1:
        return None
    local, domain = addr.split("@")
    if not local or "." not in domain or domain.endswith(".") or domain.startswith("."):
        return None
    if not re.fullmatch(r"[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}", addr):
        return None
    return addr


# ---------------------------------------------------------------- confirmation codes

_LETTER_NAMES = names.LETTER_NAMES
_CODE_SKIP = {"starts", "start", "starting", "begins", "with", "i", "think", "guess",
              "believe", "ends", "letter", "capital", "after", "comma",
              "dash", "hyphen", "minus", "my", "code", "is", "it", "the", "confirmation",
              "number", "uh", "um", "yes", "yeah", "sure", "ok", "okay", "that", "its",
              "as", "in", "like", "then", "and", "sorry", "so"}


def parse_code(text: str | None) -> str | None:
    """A confirmation code read character by character ("k seven m four q two" -> "K7M-4Q2")."""
    t = normalize(text, clock=False)
    if not t:
        return None
    compact = re.sub(r"[^a-z0-9]", "", t)
    m = re.search(r"\b([a-z0-9]{3})(-?)([a-z0-9]{3})\b", t)
    if m and (m.group(2) or re.search(r"\d", m.group(0)) and re.search(r"[a-z]", m.group(0))):
        return (m.group(1) + "-" + m.group(3)).upper()
    toks = t.replace("-", " ").split()
    chars: list[str] = []
    i = 0
    while i < len(toks):
        w = toks[i]
        # "k as in kilo": keep the letter, skip the example word
        if w == "as" and toks[i + 1:i + 2] == ["in"]:
            i += 3
            continue
        if w == "double" and i + 1 < len(toks):
            nxt = _code_char(toks[i + 1])
            if nxt:
                chars.extend(nxt * 2)
                i += 2
                continue
        c = None if w == "i" else _code_char(w)  # no I in codes: "…, i think"
        if c:
            chars.append(c)
        elif w in ("am", "pm"):  # "p m" merged by clock normalisation upstream
            chars.extend(w)
        elif w.isalnum() and w not in _CODE_SKIP and len(w) <= 6 and re.search(r"\d", w):
            chars.extend(w)
        elif w not in _CODE_SKIP:
            return None
        i += 1
    code = "".join(chars)
    if len(code) != 6:
        if len(compact) == 6 and re.search(r"\d", compact) and compact.isalnum() and \
                len(toks) == 1:
            code = compact
        else:
            return None
    return (code[:3] + "-" + code[3:]).upper()


def _code_char(w: str) -> str | None:
    if len(w) == 1 and w.isalnum():
        return w
    if w in _LETTER_NAMES:
        return _LETTER_NAMES[w]
    if w in _DIGIT_WORDS and w not in ("o", "oh"):
        return _DIGIT_WORDS[w]
    return None


