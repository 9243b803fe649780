"""Callers' names as a recogniser hands them over: said, spelled, or both.

A recogniser mangles unfamiliar names, so callers spell them ("J O H N",
"j-o-h-n smith", "M as in Mary, A, R, Y") or say and spell them ("smith,
s m i t h"). :func:`parse_name_answer` turns any of these into the name and the
letters that were spelled, so the bot can read the spelling back and the caller
can correct it. It works on text already normalised by ``nlu.normalize(...,
clock=False)`` so that "a m" stays two letters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["LETTER_NAMES", "NameAnswer", "corrected_name", "mark_spelling_breaks",
           "parse_name_answer", "spell"]

#: Letters as they are said or transcribed ("bee", "kay", NATO words).
LETTER_NAMES = {
    "ay": "a", "bee": "b", "be": "b", "see": "c", "sea": "c", "cee": "c", "dee": "d",
    "ef": "f", "eff": "f", "gee": "g", "jee": "g", "aitch": "h", "jay": "j", "kay": "k",
    "el": "l", "em": "m", "en": "n", "pee": "p", "queue": "q", "cue": "q", "are": "r",
    "ar": "r", "ess": "s", "tee": "t", "tea": "t", "you": "u", "vee": "v", "ex": "x",
    "why": "y", "zee": "z", "zed": "z",
    # NATO alphabet
    "alpha": "a", "bravo": "b", "charlie": "c", "delta": "d", "echo": "e", "foxtrot": "f",
    "golf": "g", "hotel": "h", "juliet": "j", "kilo": "k", "lima": "l", "mike": "m",
    "november": "n", "papa": "p", "quebec": "q", "romeo": "r", "sierra": "s",
    "tango": "t", "uniform": "u", "victor": "v", "whiskey": "w", "xray": "x", "x-ray": "x",
    "yankee": "y", "zulu": "z",
}
_SAID_LETTERS = {k: v for k, v in LETTER_NAMES.items() if len(k) <= 5 and k not in (
    "you", "are", "see", "be", "why", "sea", "tea", "queue", "cue")}

_LEADS = (
    "my name is", "my name's", "name is", "the name is", "his name is", "her name is",
    "their name is", "the patient is", "the patient's name is", "patient name is",
    "the appointment is for", "the appointment would be for", "appointment is for",
    "it would be", "it should be", "it is for", "it is", "that is", "this is", "i am",
    "call me", "under", "under the name", "for", "yes it is", "sure it is", "yeah it is",
    "yes", "yeah", "yep", "sure", "okay", "ok", "oh", "well", "so", "hi", "hello",
    "my first name is", "my last name is", "my surname is", "my first name", "my last name",
    "first name is", "first name", "the first name is", "last name is", "last name",
    "the last name is", "surname is", "and", "its", "under the name of", "the name of",
    "under the name", "name of",
)
_RELATIONS = ("son", "daughter", "mother", "mom", "mum", "father", "dad", "wife", "husband",
              "child", "kid", "baby", "boy", "girl", "grandmother", "grandma", "grandfather",
              "grandpa", "partner", "brother", "sister", "friend", "aunt", "uncle")
_FILLERS = {"um", "uh", "er", "erm", "ah", "hmm", "mm", "like", "capital", "lowercase",
            "small", "letter", "comma", "period", "dot"}
_TAILS = ("please", "thanks", "thank you", "speaking", "here", "that is me", "that is right",
          "is my name", "is the name", "and that is it", "that is it")
_MARKERS = {"spelled", "spelt", "spelling", "spell", "that is", "which is", "so", "and",
            "then", "last", "first", "name", "is", "surname"}

# Words that are not names at all: the answer is something else.
_NOT_NAME = {
    "yes", "no", "yeah", "okay", "ok", "sure", "the", "a", "an", "and", "or", "but",
    "appointment", "doctor", "dr", "book", "booking", "cancel", "reschedule", "please",
    "thanks", "thank", "you", "your", "is", "are", "was", "my", "not", "what", "why", "who",
    "how", "when", "where", "i", "me", "we", "hello", "hi", "hey", "sorry", "again",
    "repeat", "operator", "person", "human", "bye", "goodbye", "do", "does", "did", "can",
    "could", "would", "should", "want", "need", "have", "has", "it", "that", "this", "these",
    "those", "of", "to", "in", "on", "at", "by", "with", "from", "about", "today",
    "tomorrow", "tonight", "yesterday", "noon", "morning", "afternoon", "evening", "later",
    "earlier", "earliest", "week", "next", "first", "last", "second", "third", "one", "any",
    "anyone", "none", "nothing", "hours", "address", "help", "wait", "hold", "moment",
    "minute", "sec", "name", "number", "phone", "question", "know", "understand", "hear",
    "say", "said", "mean", "meant", "time", "day", "date", "o'clock", "am", "pm", "nope",
    "yep", "uh", "um", "hmm", "huh", "if", "then", "so", "just", "really", "very", "there",
    "be", "been", "get", "got", "go", "going", "let", "us", "he", "she", "they", "his", "her",
    "their", "them", "him", "some", "all", "also", "only", "still", "because", "call",
    "calling", "slot", "option", "available", "whatever", "code",
    "zero", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "twenty", "thirty", "forty", "fifty", "hundred", "oh",
}
# Words that are names only sometimes: accepted when the caller answers the name
# question, but worth a check ("monday good" is more likely a misheard name).
_DOUBTFUL = {
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december", "good", "fine", "great", "okay", "right", "left",
    "well", "best", "new", "free", "busy", "open", "soon", "nice", "happy", "sure",
}


@dataclass(frozen=True)
class NameAnswer:
    """A name as heard: ``spelled`` holds the letters the caller spelled ("JOHN"), if any.

    ``doubtful`` marks names made of words that are rarely names ("Monday Good"):
    the dialogue reads those back before using them.
    """

    name: str
    spelled: str | None = None
    doubtful: bool = False
    #: for each word of ``name``, the part the caller said it was ("first", "last") or ""
    parts: tuple[str, ...] = ()


# "J O N, N O T T": a comma between two runs of letters ends a word ("M, A, R, Y" does not)
_SPELLING_BREAK = re.compile(r"(\b[a-z] [a-z]) ?[,;] ?(?=[a-z] [a-z]\b)", re.I)


def mark_spelling_breaks(text: str) -> str:
    """``text`` with "and" where a comma separates two spelled words ("J O N and N O T T").

    Normalising drops punctuation, and with it the only sign that "J O N, N O T T"
    is two words; run before it, for text that may spell a name.
    """
    return _SPELLING_BREAK.sub(r"\1 and ", text)


def spell(letters: str) -> str:
    """Letters as read back to a caller: "J, O, H, N"."""
    return ", ".join(ch.upper() for ch in letters if ch.isalpha())


def _strip(t: str) -> str:
    changed = True
    while changed:
        changed = False
        for lead in _LEADS:
            if t.startswith(lead + " "):
                t = t[len(lead) + 1:]
                changed = True
        m = re.match(rf"(?:(?:it is |this is |that is )?for )?(?:my|our|his|her) "
                     rf"(?:{'|'.join(_RELATIONS)})(?:'s)?(?: name is| who is)? ", t)
        if m:
            t = t[m.end():]
            changed = True
    for tail in _TAILS:
        t = re.sub(rf"\s+{tail}$", "", t)
    return t.strip()


def _letters(toks: list[str]) -> list[tuple[str, str]]:
    """Tokens as ("letter", c) or ("word", w); "M as in Mary" is the letter m."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(toks):
        w = toks[i]
        if len(w) == 1 and w.isalpha() and toks[i + 1:i + 3] in (["as", "in"], ["like", "in"]):
            out.append(("letter", w))
            i += 4  # the example word goes too
            continue
        if len(w) == 1 and w.isalpha() and i + 2 < len(toks) and toks[i + 1] == "for" \
                and len(toks[i + 2]) > 2:
            out.append(("letter", w))  # "m for mary"
            i += 3
            continue
        if w == "double" and i + 1 < len(toks) and len(toks[i + 1]) == 1:
            out.extend([("letter", toks[i + 1])] * 2)
            i += 2
            continue
        if len(w) == 1 and w.isalpha():
            out.append(("letter", w))
        else:
            out.append(("word", w))
        i += 1
    # letter names in a run with letters ("dee a en"), or three in a row ("dee ay en"), are
    # letters too; one or two alone may be a name ("Kay", "Kay Dee")
    j = 0
    while j < len(out):
        k = j
        while k < len(out) and (out[k][0] == "letter" or out[k][1] in _SAID_LETTERS):
            k += 1
        run = out[j:k]
        if run and (any(kind == "letter" for kind, _ in run) or len(run) >= 3):
            out[j:k] = [("letter", w if kind == "letter" else _SAID_LETTERS[w])
                        for kind, w in run]
        j = max(k, j + 1)
    return out


# "the first name is", "my last name", "surname": which part of the name comes next
_PART_LABEL = re.compile(r"\b(?:(?:the|my|his|her|their) )?(first|given|christian|middle|last"
                         r"|sur|family) ?name(?:s)?(?: is| would be| will be| should be)?\b")
_PART_TOKENS = {"<first>": "first", "<last>": "last", "<middle>": ""}
_PART_OF_LABEL = {"first": "<first>", "given": "<first>", "christian": "<first>",
                  "middle": "<middle>", "last": "<last>", "sur": "<last>", "family": "<last>"}
_PART_ORDER = {"first": 0, "": 1, "last": 2}


def _alike(word: str, letters: str) -> bool:
    """The spelling is of this word (or corrects it: "john, j o n")."""
    if word == letters:
        return True
    from difflib import SequenceMatcher

    return word[:1] == letters[:1] and SequenceMatcher(None, word, letters).ratio() >= 0.75


# "it's not N O T, it's N O T T": a spelling denied, then the right one; the denied one
# goes (only where a word or a comma marks where it ends, else the runs are one word)
_NOT_THAT_SPELLING = re.compile(r"\bnot (?:[a-z] )+(?:(?:and|but|it is|that is|rather) )+"
                                r"(?=[a-z] [a-z]\b)")


def parse_name_answer(t: str, *, strict: bool = False) -> NameAnswer | None:
    """The name in normalised text ``t`` (an answer to "may I have your name?"), or None.

    ``strict`` refuses doubtful words outright (for text that was not an answer to
    the name question, where "friday" is far likelier a day than a name).
    """
    t = re.sub(r"\b([a-z])-(?=[a-z]\b)", r"\1 ", t)  # j-o-h-n
    t = re.sub(r"\b(?:with|without) (?:a|an|no|one|two|double) [a-z](?: [a-z])?s?\b", " ", t)
    t = re.sub(r"\b(?:no|not) [a-z]\b$", " ", t)  # "ann, no e"
    t = _NOT_THAT_SPELLING.sub(" ", t)  # "not N O T, it's N O T T": the last spelling wins
    t = " ".join(w for w in t.split() if w not in _FILLERS)
    # "joan nguyen, that's n g u y e n": the words that lead into a spelling are not
    # part of the name ("that" would otherwise refuse the whole answer)
    t = re.sub(r"\b(?:and )?(?:that|which|this|it) is(?= (?:spelled |spelt )?[a-z] [a-z]\b)",
               " ", t)
    t = re.sub(r"^(?:the |my |his |her )?name (?:would be|will be|should be|is) ", "", t)
    # "the last name is n o t t": the word that follows is that part of the name
    t = _PART_LABEL.sub(lambda m: f" {_PART_OF_LABEL[m.group(1)]} ", t).strip()
    t = _strip(t)
    t = re.sub(r"^(?:mister|mr|mrs|ms|miss|missus|misses|mx) ", "", t)
    toks = [w for w in t.split() if w not in ("spelled", "spelt", "spelling", "is")]
    if not toks:
        return None
    items = _letters(toks)
    parts: list[tuple[str, str]] = []  # ("word", w), ("spelled", letters) or ("part", label)
    open_run = False  # letters go on the spelling before them; a label or "and" ends it
    for kind, w in items:
        if kind == "letter" and open_run:
            parts[-1] = ("spelled", parts[-1][1] + w)
        elif kind == "letter":
            parts.append(("spelled", w))
            open_run = True
        elif w in _PART_TOKENS:
            parts.append(("part", _PART_TOKENS[w]))
            open_run = False
        elif w in _MARKERS and parts:
            open_run = open_run and w not in ("and", "then")
        else:
            parts.append(("word", w))
            open_run = False
    words: list[str] = []
    labels: list[str] = []  # beside words: the part each was said to be ("first", "last", "")
    label = ""
    spelled: list[str] = []
    skip_next = False
    for j, (kind, w) in enumerate(parts):
        if skip_next:
            skip_next = False
            continue
        if kind == "part":
            label = w
            continue
        if kind == "word":
            nxt = parts[j + 1] if j + 1 < len(parts) else None
            if nxt and nxt[0] == "spelled" and len(nxt[1]) > 1 and _alike(w, nxt[1]):
                words.append(nxt[1])  # "smith, s m i t h": the spelling wins
                labels.append(label)
                spelled.append(nxt[1])
                skip_next = True
                continue
            if words and words[-1] == w:
                continue  # "ahmed, ahmed khan"
            if len(words) == 1 and w != words[0] and any(
                    k == "word" and x == words[0] for k, x in parts[j + 1:]):
                words, labels = [], []  # "thompson, greg thompson": the full name follows
            words.append(w)
            labels.append(label)
            continue
        if len(w) == 1:
            words.append(w)  # an initial
            labels.append(label)
            continue
        spelled.append(w)
        nxt = parts[j + 1] if j + 1 < len(parts) else None
        if nxt and nxt[0] == "word" and _alike(nxt[1], w):
            skip_next = True  # "t o m, tom hanks"
        if words and _alike(words[-1], w):
            words[-1] = w
            labels[-1] = label or labels[-1]
            continue
        words.append(w)
        labels.append(label)
    if not words or len(words) > 4:
        return None
    if any(not re.fullmatch(r"[a-z][a-z'-]*", w) for w in words):
        return None
    if any(w in _NOT_NAME for w in words if w not in spelled):
        return None
    if len(words) == 1 and len(words[0]) < 2:
        return None
    doubtful = any(w in _DOUBTFUL for w in words if w not in spelled)
    if strict and doubtful:
        return None
    # "the last name is nott and the first name is joan": first names first
    order = sorted(range(len(words)), key=lambda i: _PART_ORDER[labels[i]])
    spelled_in_order = [words[i] for i in order if words[i] in spelled]
    return NameAnswer(" ".join(_cap(words[i]) for i in order),
                      " ".join(s.upper() for s in spelled_in_order) or None, doubtful,
                      tuple(labels[i] for i in order))


def corrected_name(old: str, heard: NameAnswer) -> str:
    """``old`` as the caller corrected it: only the part they spelled or said changes.

    Why: read back "Joan Nott", callers fix the part that is wrong, not the whole
    name. What they say, and what it changes:

    - two words or more ("no, it's Jon Nott", "J O N, N O T T", "the first name
      is J O N and the last name N O T T"): the whole name, said again;
    - one word named as a part ("the last name is spelled N O T T", "my first
      name is J O A N"): that part;
    - one word run together from both parts ("J O N N O T T", said without a
      pause the recogniser would mark): split where both halves resemble the old
      first and last names;
    - one word alone: the part it clearly resembles ("spelled J O N" fixes John
      Smith's first name, "N O T T" Joan Knot's surname);
    - one word resembling neither (Joan Knot, "no, K A T Z"): the surname. A
      recogniser mangles an unfamiliar surname far more often than a first name,
      and the spelling the bot invites is of the hard part, so that is where a
      caller starts; replacing the whole name would lose a first name the caller
      has no reason to repeat, and one they wanted changed is one "the first name
      is …" away.

    A one-word old name grows a second word when the caller names the other part
    ("Joan", then "the last name is N O T T": Joan Nott).
    """
    from difflib import SequenceMatcher

    def like(a: str, b: str) -> float:
        return SequenceMatcher(None, a.lower(), b.lower()).ratio()

    new = heard.name.split()
    was = old.split()
    if not was or len(new) != 1:
        return heard.name
    word = new[0]
    part = heard.parts[0] if heard.parts else ""
    if len(was) == 1:
        if not part or like(was[0], word) >= 0.5:
            return word
        return f"{word} {was[0]}" if part == "first" else f"{was[0]} {word}"
    if part == "first":
        return " ".join([word, *was[1:]])
    if part == "last":
        return " ".join([*was[:-1], word])
    likeness = [like(w, word) for w in was]
    if heard.spelled and len(word) >= 4:
        # "J O N N O T T": both parts spelled in one breath
        best = max(range(2, len(word) - 1),
                   key=lambda i: like(was[0], word[:i]) + like(was[-1], word[i:]))
        first, last = word[:best], word[best:]
        split_fit = min(like(was[0], first), like(was[-1], last))
        if split_fit >= 0.6 and split_fit > max(likeness):
            return " ".join([_cap(first.lower()), *was[1:-1], _cap(last.lower())])
    best = max(range(len(was)), key=lambda i: likeness[i])
    clear = likeness[best] >= 0.5 and likeness.count(likeness[best]) == 1
    at = best if clear else len(was) - 1
    return " ".join([*was[:at], word, *was[at + 1:]])


def _cap(word: str) -> str:
    out = "-".join("'".join(p[:1].upper() + p[1:] for p in part.split("'"))
                   for part in word.split("-"))
    if re.match(r"^Mc[a-z]", out):
        out = "Mc" + out[2:].capitalize()
    return out
