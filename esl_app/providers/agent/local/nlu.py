"""Understanding callers' words as a speech recogniser hands them over.

Transcripts arrive lower-cased, mostly without punctuation and with numbers
either as digits or as words, so every parser here works on word tokens and
reads numbers both ways. All functions are pure: the reference date or time
is an argument (never the real clock), which keeps the dialogue testable and
replayable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from esl_app.config.tenants import Doctor, VisitType

__all__ = [
    "ANY_DOCTOR",
    "DateRange",
    "Option",
    "TimePref",
    "choose",
    "intent",
    "is_correction",
    "match_doctor",
    "match_visit_type",
    "normalize",
    "parse_code",
    "parse_date",
    "parse_email",
    "parse_name",
    "parse_phone",
    "parse_relative",
    "parse_time",
    "tokens",
    "visit_kind",
    "yes_no",
]

ANY_DOCTOR = "any"

# ---------------------------------------------------------------- tokens

_CONTRACTIONS = {
    "it's": "it is", "that's": "that is", "i'm": "i am", "don't": "do not",
    "doesn't": "does not", "can't": "can not", "cannot": "can not", "won't": "will not",
    "what's": "what is", "name's": "name is", "i'd": "i would", "let's": "let us",
    "isn't": "is not", "wasn't": "was not", "you're": "you are", "where's": "where is",
    "there's": "there is", "didn't": "did not", "i've": "i have", "couldn't": "could not",
    "haven't": "have not", "hasn't": "has not", "hadn't": "had not", "aren't": "are not",
    "weren't": "were not", "we're": "we are", "we've": "we have",
}


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
        words.append(_CONTRACTIONS.get(w, w))
    t = " ".join(words)
    if not clock:
        return t
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


def _has(t: str, *phrases: str) -> bool:
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


# ---------------------------------------------------------------- intents

_INTENT_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("operator", ("operator", "real person", "a person", "human", "receptionist",
                  "front desk", "press zero", "representative", "someone", "somebody",
                  "live person", "live agent", "the office staff", "talk to staff",
                  "speak to staff", "a nurse")),
    ("reschedule", ("reschedule", "re schedule", "move my appointment", "change my appointment",
                    "move the appointment", "change the appointment", "change my booking",
                    "move my booking", "push my appointment", "push back my appointment",
                    "different time for my appointment")),
    ("cancel", ("cancel", "call off", "can not make it", "will not make it",
                "not going to make it", "can not come", "delete my appointment",
                "remove my appointment")),
    ("book", ("book", "appointment", "schedule", "make an", "see a doctor", "see the doctor",
              "see doctor", "see dr", "need to see", "want to see", "like to see", "come in",
              "get in", "checkup", "check up", "visit", "consultation", "slot",
              "available", "availability", "openings")),
    ("hours", ("hours", "what time do you", "when do you open", "when do you close",
               "when are you open", "are you open", "opening time", "closing time",
               "open on", "open today", "open tomorrow", "close today")),
    ("address", ("address", "where are you", "where is the clinic", "where is your",
                 "located", "location", "directions", "how do i get", "how to get there",
                 "parking")),
    ("goodbye", ("bye", "goodbye", "good bye", "that is all", "that is it", "nothing else",
                 "hang up", "have a good day", "have a nice day", "i am done", "i am good",
                 "i am all set", "all set", "that will be all", "no more")),
)
_NAV_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("earliest", ("earliest", "soonest", "as soon as possible", "asap", "first available",
                  "next available", "first thing", "as early as possible")),
    ("later", ("anything later", "something later", "later", "after that", "any later",
               "later times", "later one")),
    ("earlier", ("anything earlier", "something earlier", "earlier", "sooner",
                 "anything before that")),
)


def intent(text: str | None) -> str | None:
    """The caller's main goal in this turn, or None.

    One of: emergency, operator, reschedule, cancel, book, hours, address,
    goodbye, earliest, later, earlier, yes, no. Ordered by priority: a
    request for a person wins over anything else said in the same breath;
    "cancel and rebook" style turns count as reschedule.
    """
    t = normalize(text)
    if not t:
        return None
    from esl_app.safety import detect_emergency  # one red-flag list for every agent

    if detect_emergency(t) is not None:
        return "emergency"
    if _has(t, "zero") and len(t.split()) <= 2:
        return "operator"
    found = [name for name, phrases in _INTENT_PATTERNS if _has(t, *phrases)]
    if "operator" in found and not _operator_really(t):
        found.remove("operator")
    if "cancel" in found and _has(t, "rebook", "book another", "new time", "another time",
                                  "different day", "different time"):
        return "reschedule"
    if "goodbye" in found and len(found) > 1 and _has(t, "no more") and not _has(t, "bye"):
        found.remove("goodbye")
    for name in ("emergency", "operator", "reschedule", "cancel"):
        if name in found:
            return name
    if "book" in found and not _has(t, "hours", "address", "where are you"):
        return "book"
    for name in ("hours", "address"):
        if name in found:
            return name
    yn = yes_no(t)
    if "goodbye" in found:
        return "goodbye"
    for name, phrases in _NAV_PATTERNS:
        if _has(t, *phrases):
            return name
    if yn is not None:
        return "yes" if yn else "no"
    return None


def _operator_really(t: str) -> bool:
    """'someone'/'a person' only mean a human when the caller asks to talk to them."""
    strong = ("operator", "real person", "human", "receptionist", "front desk", "press zero",
              "representative", "live person", "live agent", "a nurse")
    if _has(t, *strong):
        return True
    return bool(re.search(r"\b(talk|speak|speaking|talking|connect me|put me through|transfer)"
                          r"\b.*\b(someone|somebody|a person|staff)\b", t))


# ---------------------------------------------------------------- yes / no

_YES = ("yes", "yeah", "yea", "yep", "yup", "sure", "ok", "okay", "correct", "right",
        "that is right", "that works", "sounds good", "perfect", "please do", "go ahead",
        "absolutely", "definitely", "of course", "uh huh", "mm hmm", "fine", "great",
        "alright", "all right", "that is correct", "do it", "book it", "exactly", "yes please",
        "works for me", "good", "affirmative", "please", "i do", "it is", "that one")
_NO = ("no", "nope", "nah", "not really", "no thanks", "no thank you", "do not", "negative",
       "wrong", "incorrect", "that is not right", "that is wrong", "not that", "none",
       "neither", "does not work", "will not work", "not good", "i do not", "not quite",
       "never mind", "nevermind", "not at all", "i can not", "none of those", "none of them")


def yes_no(text: str | None) -> bool | None:
    """True for an agreement, False for a refusal, None when neither is clear."""
    t = normalize(text)
    if not t:
        return None
    if _has(t, "not sure", "i do not know", "maybe", "i guess not sure"):
        return None
    words = t.split()
    if words[0] in ("no", "nope", "nah", "negative") or _has(t, *_NO):
        return False
    if _has(t, *_YES):
        return True
    return None


_CORRECTION = ("i said", "i meant", "i mean", "actually", "make it", "change it to",
               "change that to", "instead", "rather", "not that", "scratch that", "sorry",
               "correction", "no wait", "wait")


def is_correction(text: str | None) -> bool:
    """Whether the caller is correcting something they said before."""
    t = normalize(text)
    return _has(t, *_CORRECTION) or bool(re.match(r"no\b", t) and len(t.split()) > 1
                                          and not _has(t, "no thank", "no thanks"))


# ---------------------------------------------------------------- doctors

_SPECIALTY_WORDS = {
    "pediatrics": ("pediatrician", "pediatrics", "children", "child", "kids", "kid",
                   "baby", "paediatrician"),
    "family medicine": ("family doctor", "family medicine", "family physician", "gp",
                        "general practitioner"),
    "internal medicine": ("internist", "internal medicine"),
    "dermatology": ("dermatologist", "dermatology", "skin"),
    "cardiology": ("cardiologist", "cardiology", "heart doctor"),
}
_ANY_DOCTOR = ("any doctor", "anyone", "any one", "anybody", "does not matter",
               "do not care", "no preference", "whoever", "either", "any of them",
               "whichever", "first available doctor", "any available")


def match_doctor(text: str | None, doctors: Sequence[Doctor]) -> Doctor | str | None:
    """The doctor named in ``text``, :data:`ANY_DOCTOR`, or None.

    Tolerant of "doctor smith", "dr smith", "sarah smith", "smith", first
    names, and specialties ("the pediatrician").
    """
    t = normalize(text).replace("dr.", "dr")
    if not t:
        return None
    padded = f" {t} "
    scores: dict[str, int] = {}
    for d in doctors:
        parts = [p for p in re.sub(r"[^a-z' -]", " ", d.name.lower().replace("dr.", "")).split()
                 if p not in ("dr", "doctor", "md")]
        if not parts:
            continue
        last, first = parts[-1], parts[0]
        score = 0
        if f" {' '.join(parts)} " in padded:
            score = 4
        elif f" {last} " in padded or f" {last}s " in padded or f" {last}'s " in padded:
            score = 3
        elif len(parts) > 1 and f" {first} " in padded:
            score = 2
        elif f" {d.id} " in padded:
            score = 3
        else:
            spec = d.specialty.lower()
            words = _SPECIALTY_WORDS.get(spec, ()) + ((spec,) if spec else ())
            if any(_has(t, w) for w in words):
                score = 1
        if score:
            scores[d.id] = score
    if scores:
        best = max(scores.values())
        winners = [d for d in doctors if scores.get(d.id) == best]
        if len(winners) == 1:
            return winners[0]
    if _has(t, *_ANY_DOCTOR):
        return ANY_DOCTOR
    return None


# ---------------------------------------------------------------- visit types

# How callers describe the two kinds of visit most clinics distinguish; a tenant's
# own types are mapped onto these kinds by the words in their id and name.
_NEW_PHRASES = (
    "new patient", "first time", "first visit", "first appointment", "first consultation",
    "never been", "never seen", "never visited", "never had an appointment", "have not been",
    "has not been", "not been there", "not been here", "not been before", "not been seen",
    "i am new", "we are new", "new here", "new to", "brand new", "not a patient",
    "not registered", "initial", "intake", "new client", "just moved",
)
_NOT_NEW_PHRASES = ("not new", "not a new", "not my first", "not the first", "not first",
                    "no longer new", "not for the first")
_FOLLOW_PHRASES = (
    "follow up", "follow", "check up after", "checkup after", "after my surgery",
    "after surgery", "after the surgery", "after my operation", "after the operation",
    "after my procedure", "post op", "post surgery", "return visit", "returning",
    "existing patient", "been there before", "been here before", "been before",
    "seen before", "been seen", "already a patient", "already seen", "regular patient",
    "current patient", "come back", "coming back", "second visit", "review", "results",
    "recheck", "re check", "been seeing", "see how", "checking on", "check on",
)
# Outside the visit-type question only unmistakable phrases count ("I'm returning
# your call" is not a follow-up visit).
_STRONG_PHRASES = {
    "new": ("new patient", "first time", "first visit", "first appointment", "never been",
            "never seen", "have not been", "not been there", "not been here", "i am new",
            "we are new", "new here"),
    "follow": ("follow up", "check up after", "after my surgery", "after surgery",
               "after my operation", "after my procedure", "post op", "return visit",
               "returning patient", "existing patient", "been there before",
               "been here before", "seen before", "already a patient", "regular patient",
               "current patient", "go over my results", "go over the results"),
}
_KIND_WORDS = {"new": ("new", "first", "initial", "intake"),
               "follow": ("follow", "followup", "return", "returning", "review", "existing",
                          "recheck")}
_VISIT_GENERIC = {"visit", "appointment", "consultation", "patient", "a", "an", "the", "of",
                  "for", "and", "with", "exam", "minute", "minutes", "session"}
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


def _canon(text: str) -> str:
    """Hyphens and run-together forms unified: "follow-up", "followup" -> "follow up"."""
    t = re.sub(r"[-_/]", " ", text.lower())
    t = re.sub(r"\bfollowup\b", "follow up", t)
    t = re.sub(r"\bcheckup\b", "check up", t)
    return " ".join(t.split())


def visit_kind(visit: VisitType) -> str | None:
    """``"new"`` or ``"follow"`` when the type's id or name says so, else None."""
    words = set(_canon(f"{visit.id} {visit.name}").split())
    for kind, keys in _KIND_WORDS.items():
        if words & set(keys):
            return kind
    return None


def _negated(toks: Sequence[str], at: int) -> bool:
    return any(w in ("not", "never", "neither") for w in toks[max(0, at - 2):at])


def _phrase_at(toks: Sequence[str], phrase: str) -> list[int]:
    words = phrase.split()
    n = len(words)
    return [i for i in range(len(toks) - n + 1) if list(toks[i:i + n]) == words]


def match_visit_type(text: str | None, visit_types: Sequence[VisitType], *,
                     answer: bool = False) -> VisitType | None:
    """The visit type the caller means, or None when unclear.

    Understands the types' names ("a follow-up"), descriptions of a first or a
    returning visit ("I've never been there", "a check-up after my surgery") and,
    when ``answer`` (the caller is answering "new patient or follow-up?"), also
    ids, single distinctive words and positions ("1", "the second one").
    """
    if not visit_types:
        return None
    toks = _canon(normalize(text)).split()
    t = " ".join(toks)
    if not t:
        return None
    by_kind: dict[str, VisitType] = {}
    for v in visit_types:
        kind = visit_kind(v)
        if kind and kind not in by_kind:
            by_kind[kind] = v
    score: dict[str, int] = {}
    refused: set[str] = set()

    def phrases_of(v: VisitType) -> set[str]:
        name = _canon(v.name)
        out = {name}
        core = [w for w in name.split() if w not in ("visit", "appointment", "consultation",
                                                      "exam", "session")]
        if core:
            out.add(" ".join(core))
        if answer:
            out.add(_canon(v.id))
        return out

    for v in visit_types:
        for phrase in phrases_of(v):
            for at in _phrase_at(toks, phrase):
                if _negated(toks, at):
                    refused.add(v.id)
                else:
                    score[v.id] = max(score.get(v.id, 0), 10 + len(phrase.split()))
    new_phrases = _NEW_PHRASES if answer else _STRONG_PHRASES["new"]
    follow_phrases = _FOLLOW_PHRASES if answer else _STRONG_PHRASES["follow"]
    if not score:
        if "follow" in by_kind and _has(t, *_NOT_NEW_PHRASES):
            score[by_kind["follow"].id] = 3
        elif "new" in by_kind and _has(t, *new_phrases):
            score[by_kind["new"].id] = 2
        elif "follow" in by_kind and any(
                not _negated(toks, at) for p in follow_phrases for at in _phrase_at(toks, p)):
            score[by_kind["follow"].id] = 1
    if score:
        best = max(score.values())
        winners = [v for v in visit_types if score.get(v.id) == best]
        return winners[0] if len(winners) == 1 else None
    if refused and len(visit_types) == 2:
        rest = [v for v in visit_types if v.id not in refused]
        return rest[0] if len(rest) == 1 else None
    if not answer:
        return None
    return _visit_by_position(toks, visit_types) or _visit_by_word(toks, visit_types)


def _visit_by_position(toks: Sequence[str], visit_types: Sequence[VisitType]
                       ) -> VisitType | None:
    """A position in the list the caller heard: "1", "option two", "the second one"."""
    pos: int | None = None
    words = [w for w in toks if w not in ("the", "um", "uh", "please", "one", "it", "is")]
    if len(toks) == 1 and toks[0].isdigit():
        pos = int(toks[0]) - 1
    elif len(toks) == 1 and toks[0] in _NUMBER_WORDS:
        pos = _NUMBER_WORDS[toks[0]] - 1
    elif _has(" ".join(toks), "the last one", "the last", "the latter", "last one"):
        pos = len(visit_types) - 1
    elif _has(" ".join(toks), "the former"):
        pos = 0
    else:
        for i, w in enumerate(toks):
            if w in ("option", "number", "press", "choice") and (got := _cardinal(toks, i + 1)):
                pos = got[0] - 1
                break
            if w in _CHOICE_ORDINALS and len(words) <= 2:
                pos = _CHOICE_ORDINALS[w]
                break
    if pos is not None and 0 <= pos < len(visit_types):
        return visit_types[pos]
    return None


def _visit_by_word(toks: Sequence[str], visit_types: Sequence[VisitType]) -> VisitType | None:
    """A word only one type's name has ("the physical"), when nothing clearer was said."""
    said = set(toks)
    hits = []
    for v in visit_types:
        own = set(_canon(v.name).split()) - _VISIT_GENERIC
        others = set().union(*(set(_canon(o.name).split()) for o in visit_types if o is not v))
        if (own - others) & said:
            hits.append(v)
    return hits[0] if len(hits) == 1 else None


# ---------------------------------------------------------------- dates

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_MONTH_ALIASES = {m[:3]: i + 1 for i, m in enumerate(_MONTHS)} | {
    m: i + 1 for i, m in enumerate(_MONTHS)} | {"sept": 9}
del _MONTH_ALIASES["may"]
_MONTH_ALIASES["may"] = 5


@dataclass(frozen=True)
class DateRange:
    """The days a caller asked about: one day (``first == last``) or a span ("next week")."""

    first: date
    last: date

    @property
    def single(self) -> date | None:
        """The day, when the range is one day."""
        return self.first if self.first == self.last else None


def _weekday_index(w: str) -> int | None:
    w = w.removesuffix("'s").removesuffix("s") if w not in _WEEKDAYS else w
    for i, name in enumerate(_WEEKDAYS):
        if w == name or (len(w) >= 3 and name.startswith(w) and w in (name[:3], name[:4])):
            return i
    return None


def _month_day(today: date, month: int, day: int) -> date | None:
    """The next date (today or later) with this month and day."""
    for year in (today.year, today.year + 1):
        try:
            d = date(year, month, day)
        except ValueError:
            continue
        if d >= today:
            return d
    return None


def _day_of_month(today: date, day: int) -> date | None:
    """The next date (today or later) on this day of a month."""
    y, m = today.year, today.month
    for _ in range(3):
        try:
            d = date(y, m, day)
            if d >= today:
                return d
        except ValueError:
            pass
        m += 1
        if m > 12:
            y, m = y + 1, 1
    return None


def parse_date(text: str | None, today: date) -> DateRange | None:
    """The day(s) meant in ``text`` relative to ``today``, or None.

    "next <weekday>" is the first such day after today; "this/on <weekday>"
    may be today. Day-only dates ("the 5th") are the next such day.
    """
    found = _find_date(tokens(text), today)
    return found[0] if found else None


def _find_date(toks: list[str], today: date) -> tuple[DateRange, set[int]] | None:
    """The date in ``toks`` and the token indexes it used (so times skip them)."""
    n = len(toks)

    def one(d: date | None, used: set[int]) -> tuple[DateRange, set[int]] | None:
        return (DateRange(d, d), used) if d else None

    for i, w in enumerate(toks):
        # 11/30 or 11/30/2026
        m = re.fullmatch(r"(\d{1,2})/(\d{1,2})(?:/(\d{2,4}))?", w)
        if m:
            mo, dd = int(m.group(1)), int(m.group(2))
            if m.group(3):
                y = int(m.group(3))
                y = y + 2000 if y < 100 else y
                try:
                    return one(date(y, mo, dd), {i})
                except ValueError:
                    return None
            if 1 <= mo <= 12:
                return one(_month_day(today, mo, dd), {i})
        m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", w)
        if m:
            try:
                return one(date(int(m.group(1)), int(m.group(2)), int(m.group(3))), {i})
            except ValueError:
                return None
        if w == "day" and toks[i + 1:i + 3] == ["after", "tomorrow"]:
            return one(today + timedelta(days=2), {i, i + 1, i + 2})
        if w in ("today", "tonight"):
            return one(today, {i})
        if w in ("tomorrow", "tomorrows", "tomorrow's"):
            return one(today + timedelta(days=1), {i})
        # month + day: "december 3rd", "dec third", "december 3"
        if w in _MONTH_ALIASES and not (w == "may" and not _next_is_day(toks, i + 1)):
            got = _ordinal(toks, i + 1) or _cardinal(toks, i + 1)
            if got and 1 <= got[0] <= 31:
                used = {i} | set(range(i + 1, i + 1 + got[1]))
                return one(_month_day(today, _MONTH_ALIASES[w], got[0]), used)
        # "the third of december", "3rd of dec"
        got = _ordinal(toks, i)
        if got and i + got[1] < n and toks[i + got[1]] == "of" \
                and i + got[1] + 1 < n and toks[i + got[1] + 1] in _MONTH_ALIASES:
            mi = i + got[1] + 1
            return one(_month_day(today, _MONTH_ALIASES[toks[mi]], got[0]),
                       set(range(i, mi + 1)))
        # "in two days", "in a week"
        if w == "in" and i + 2 < n + 1:
            amount = _cardinal(toks, i + 1)
            if amount is None and i + 1 < n and toks[i + 1] in ("a", "one"):
                amount = (1, 1)
            if amount and i + 1 + amount[1] < n:
                unit = toks[i + 1 + amount[1]]
                used = set(range(i, i + 2 + amount[1]))
                if unit in ("day", "days"):
                    return one(today + timedelta(days=amount[0]), used)
                if unit in ("week", "weeks"):
                    start = today + timedelta(weeks=amount[0])
                    return (DateRange(start, start), used)
        if w in ("week", "weekend") and i > 0 and toks[i - 1] in ("next", "this", "following"):
            used = {i - 1, i}
            if w == "weekend":
                sat = today + timedelta(days=(5 - today.weekday()) % 7)
                if toks[i - 1] in ("next", "following") and today.weekday() < 5:
                    sat += timedelta(days=7)
                return (DateRange(sat, sat + timedelta(days=1)), used)
            monday = today - timedelta(days=today.weekday())
            if toks[i - 1] == "this":
                return (DateRange(today, monday + timedelta(days=6)), used)
            start = monday + timedelta(days=7)
            return (DateRange(start, start + timedelta(days=6)), used)
        if w == "week" and i > 1 and toks[i - 2:i] == ["later", "this"]:
            monday = today - timedelta(days=today.weekday())
            return (DateRange(today + timedelta(days=1), monday + timedelta(days=6)), {i})
        holiday = _holiday(toks, i, today)
        if holiday and holiday[0]:
            day, used = holiday
            if i >= 2 and toks[i - 2:i] in (["day", "after"], ["day", "before"]):
                day += timedelta(days=1 if toks[i - 1] == "after" else -1)
                used |= {i - 2, i - 1}
            return one(day, used)
        wd = _weekday_index(w)
        if wd is not None:
            prev = toks[i - 1] if i > 0 else ""
            delta = (wd - today.weekday()) % 7
            used = {i}
            if prev in ("next", "following"):
                delta = delta or 7
                used.add(i - 1)
                if i > 1 and toks[i - 2] == "the" and prev == "following":
                    delta += 7
            elif prev == "this":
                used.add(i - 1)
            return one(today + timedelta(days=delta), used)
        # "on the 5th", "the 5th", "the fifth"
        if w in ("the", "on") and (got := _ordinal(toks, i + 1)) and 1 <= got[0] <= 31:
            after = i + 1 + got[1]
            if after < n and toks[after] in _NOT_DATE_NOUNS:
                continue
            if w == "the" and after >= n and got[0] <= 3 and not (i > 0 and toks[i - 1] == "on"):
                # "the first", "the second" alone are choices, not dates
                continue
            return one(_day_of_month(today, got[0]), set(range(i, after)))
    return None


def _holiday(toks: Sequence[str], i: int, today: date) -> tuple[date | None, set[int]] | None:
    """Holidays callers name instead of dates ("on christmas"): clinics close on them."""
    w = toks[i]
    nxt = toks[i + 1] if i + 1 < len(toks) else ""
    if w == "christmas":
        if nxt == "eve":
            return _month_day(today, 12, 24), {i, i + 1}
        return _month_day(today, 12, 25), {i} | ({i + 1} if nxt == "day" else set())
    if w == "new" and nxt in ("year", "years", "year's"):
        after = toks[i + 2] if i + 2 < len(toks) else ""
        if after == "eve":
            return _month_day(today, 12, 31), {i, i + 1, i + 2}
        return _month_day(today, 1, 1), {i, i + 1} | ({i + 2} if after == "day" else set())
    if w == "boxing" and nxt == "day":
        return _month_day(today, 12, 26), {i, i + 1}
    if w == "independence" and nxt == "day":
        return _month_day(today, 7, 4), {i, i + 1}
    if w == "halloween":
        return _month_day(today, 10, 31), {i}
    if w == "thanksgiving":
        for year in (today.year, today.year + 1):
            first = date(year, 11, 1)
            day = first + timedelta(days=(3 - first.weekday()) % 7 + 21)  # 4th Thursday
            if day >= today:
                return day, {i} | ({i + 1} if nxt == "day" else set())
    return None


_NOT_DATE_NOUNS = {"one", "ones", "option", "choice", "slot", "available", "availability",
                   "opening", "time", "appointment", "thing", "doctor", "person", "name",
                   "number", "digit", "letter", "two", "three"}


def _next_is_day(toks: Sequence[str], i: int) -> bool:
    got = _ordinal(toks, i) or _cardinal(toks, i)
    return bool(got and 1 <= got[0] <= 31)


# ---------------------------------------------------------------- times

PARTS = ("morning", "afternoon", "evening")


@dataclass(frozen=True)
class TimePref:
    """When in the day the caller wants to come.

    ``part`` is morning/afternoon/evening; ``at`` a clock time asked for;
    ``after``/``before`` bounds; ``earliest`` the soonest possible.
    """

    part: str | None = None
    at: time | None = None
    after: time | None = None
    before: time | None = None
    earliest: bool = False


def _clinic_hour(h: int, meridiem: str | None) -> int:
    """A bare hour as a clinic caller means it: 1-6 in the afternoon, 7-11 in the morning."""
    if meridiem == "pm" and h < 12:
        return h + 12
    if meridiem == "am":
        return 0 if h == 12 else h
    if 1 <= h <= 6:
        return h + 12
    return h


def parse_time(text: str | None, *, skip: set[int] | None = None) -> TimePref | None:
    """The time preference in ``text`` ("3 pm", "nine thirty", "after lunch"), or None."""
    toks = tokens(text)
    return _find_time(toks, skip or set())


def _find_time(toks: list[str], skip: set[int]) -> TimePref | None:
    t = " ".join(toks)
    part = after = before = at = None
    earliest = _has(t, "earliest", "soonest", "as soon as possible", "asap", "first available",
                    "first thing", "as early as possible", "next available")
    spoken_am = _has(re.sub(r"\bi am\b", "", t), "am")  # "i am free" is not "a.m."
    if spoken_am or _has(t, "morning", "before lunch", "first thing"):
        part = "morning"
    if _has(t, "afternoon", "after lunch", "lunchtime", "lunch time"):
        part = "afternoon"
    if _has(t, "evening", "tonight", "after work", "after five", "after 5"):
        part = "evening"
    if _has(t, "late afternoon"):
        after = time(15, 0)
    if _has(t, "early afternoon"):
        before = time(15, 0)
    if _has(t, "late morning"):
        after = time(10, 0)
    if _has(t, "early morning"):
        before = time(10, 0)
    if _has(t, "noon", "midday") and not _has(t, "afternoon", "before noon", "after noon"):
        at = time(12, 0)
        part = part or "afternoon"
    if _has(t, "before noon"):
        part = "morning"
    if _has(t, "after noon"):
        part = "afternoon"
    clock = _find_clock(toks, skip)
    if clock:
        kind, value = clock
        if kind == "after":
            after = value
        elif kind == "before":
            before = value
        else:
            at = value
        if part is None and kind == "at":
            part = "morning" if value.hour < 12 else ("afternoon" if value.hour < 17 else "evening")
        if kind == "after" and part is None and value.hour >= 12:
            part = None
    if not (part or after or before or at or earliest):
        return None
    return TimePref(part=part, at=at, after=after, before=before, earliest=earliest)


def parse_relative(text: str | None) -> timedelta | None:
    """How soon the caller wants to come ("in an hour", "in 30 minutes", "right now").

    Only hours and minutes: "in two days" is a date. The dialogue turns the
    answer into a clock time and checks it against the clinic's minimum notice.
    """
    toks = tokens(text)
    t = " ".join(toks)
    if not t:
        return None
    if _has(t, "right now", "right away", "immediately", "straight away", "come in now",
            "in now", "see someone now", "see a doctor now", "as we speak"):
        return timedelta(0)
    if _has(t, "within the hour", "within an hour", "in an hour and a half",
            "in half an hour", "in a half hour"):
        if _has(t, "in half an hour", "in a half hour"):
            return timedelta(minutes=30)
        if _has(t, "in an hour and a half"):
            return timedelta(minutes=90)
        return timedelta(hours=1)
    if _has(t, "in a couple of hours", "in a couple hours"):
        return timedelta(hours=2)
    if _has(t, "in a few hours"):
        return timedelta(hours=3)
    for i, w in enumerate(toks):
        if w != "in":
            continue
        amount = _cardinal(toks, i + 1)
        if amount is None and i + 1 < len(toks) and toks[i + 1] in ("a", "an"):
            amount = (1, 1)
        if amount is None:
            continue
        j = i + 1 + amount[1]
        unit = toks[j] if j < len(toks) else ""
        if unit in ("hour", "hours", "hr", "hrs"):
            return timedelta(hours=amount[0])
        if unit in ("minute", "minutes", "min", "mins"):
            return timedelta(minutes=amount[0])
    return None


_TIME_LEAD = ("at", "around", "about", "after", "before", "by", "say", "like", "the", "for")
# "the first one", "that one": "one" stands for an offered option, not one o'clock
_ONE_AS_OPTION = ("first", "second", "third", "last", "that", "this", "either", "which",
                  "another", "other", "same", "earlier", "later", "next", "any")


def _find_clock(toks: list[str], skip: set[int]) -> tuple[str, time] | None:
    """A clock time in ``toks`` with its kind: at, after or before."""
    n = len(toks)
    for i in range(n):
        if i in skip:
            continue
        w = toks[i]
        if w in ("half", "quarter") and i + 2 < n and toks[i + 1] in ("past", "after", "to"):
            got = _cardinal(toks, i + 2)
            if got and 1 <= got[0] <= 12:
                mins = 30 if w == "half" else 15
                h = _clinic_hour(got[0], _meridiem(toks, i + 2 + got[1]))
                value = (datetime(2000, 1, 1, h) + (timedelta(minutes=mins)
                         if toks[i + 1] != "to" else -timedelta(minutes=mins))).time()
                return _kind(toks, i), value
        got = _cardinal(toks, i)
        if not got:
            continue
        hour, used = got
        if not 1 <= hour <= 12 and not (13 <= hour <= 23 and w.isdigit()):
            continue
        if w == "one" and i > 0 and toks[i - 1] in _ONE_AS_OPTION:
            continue
        j = i + used
        minute = 0
        explicit = False
        if j < n and j not in skip:
            if toks[j] in ("oh", "o") and (m2 := _cardinal(toks, j + 1)) and m2[0] < 10:
                minute, j = m2[0], j + 1 + m2[1]
                explicit = True
            elif (m2 := _cardinal(toks, j)) and 10 <= m2[0] <= 59 and \
                    not (j + m2[1] < n and toks[j + m2[1]] in ("day", "days", "minutes")):
                minute, j = m2[0], j + m2[1]
                explicit = True
            elif toks[j] == "00":
                j += 1
                explicit = True
        mer = _meridiem(toks, j)
        if mer:
            explicit = True
        if j < n and toks[j] in ("o'clock", "oclock", "clock"):
            explicit = True
        lead = toks[i - 1] if i > 0 else ""
        alone = len([x for x in toks if x not in ("um", "uh", "the", "one", "please")]) <= 1
        if not (explicit or lead in _TIME_LEAD or alone):
            continue
        if j < n and toks[j] in ("day", "days", "week", "weeks", "th", "st", "nd", "rd"):
            continue
        if hour >= 13:
            h = hour
        else:
            h = _clinic_hour(hour, mer)
        return _kind(toks, i), time(h % 24, minute)
    return None


def _meridiem(toks: Sequence[str], j: int) -> str | None:
    if j < len(toks):
        if toks[j] in ("am", "pm"):
            return toks[j]
        rest = toks[j:j + 3]
        if rest[:3] == ["in", "the", "morning"]:
            return "am"
        if rest[:3] in (["in", "the", "afternoon"], ["in", "the", "evening"]):
            return "pm"
    return None


def _kind(toks: Sequence[str], i: int) -> str:
    before = toks[max(0, i - 2):i]
    if "after" in before or "later than" in " ".join(before):
        return "after"
    if "before" in before or "by" in before:
        return "before"
    return "at"


# ---------------------------------------------------------------- choosing offered slots


@dataclass(frozen=True)
class Option:
    """One slot as offered to the caller (local time)."""

    start: datetime
    doctor: str
    doctor_name: str = ""


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
    if _has(t, "last one", "the last", "last", "latest one", "the latter", "later one",
            "latter"):
        return n - 1
    if _has(t, "middle", "middle one"):
        return n // 2 if n == 3 else None
    if _has(t, "earlier one", "the former", "earliest one"):
        return 0
    for i, w in enumerate(toks):
        if w in _CHOICE_ORDINALS:
            return _CHOICE_ORDINALS[w]
        if w in ("option", "number", "choice") and (got := _cardinal(toks, i + 1)):
            return got[0] - 1
    return None


def choose(text: str | None, options: Sequence[Option], doctors: Sequence[Doctor] = ()
           ) -> int | None:
    """The index of the offered option the caller picked, or None when unclear.

    Understands positions ("the first one", "the last one", "option two"),
    clock times ("the 10 o'clock"), doctors ("the one with dr patel") and
    days ("tuesday's"); combined cues narrow down together.
    """
    if not options:
        return None
    toks = tokens(text)
    t = " ".join(toks)
    if not t:
        return None
    candidates = set(range(len(options)))
    narrowed = False
    pos = _position(toks, t, len(options))
    if pos is not None:
        if 0 <= pos < len(options):
            return pos
        return None
    # doctor
    if doctors:
        doc = match_doctor(t, doctors)
        if isinstance(doc, Doctor):
            keep = {i for i, o in enumerate(options) if o.doctor == doc.id}
            if keep:
                candidates &= keep
                narrowed = True
    # weekday / date
    days = {o.start.date() for o in options}
    for w in toks:
        wd = _weekday_index(w)
        if wd is not None:
            keep = {i for i, o in enumerate(options) if o.start.weekday() == wd}
            if keep:
                candidates &= keep
                narrowed = True
            break
    if not narrowed or len(candidates) > 1:
        ref = min(days)
        found = _find_date(toks, ref)
        if found and found[0].single:
            keep = {i for i, o in enumerate(options) if o.start.date() == found[0].single}
            if keep and keep & candidates:
                candidates &= keep
                narrowed = True
    # clock time
    clock = _find_clock(toks, set()) or _bare_hour(toks)
    if clock:
        _, at = clock
        keep = {i for i, o in enumerate(options)
                if (o.start.hour, o.start.minute) == (at.hour, at.minute)}
        if not keep:  # "the 9" when it is 9:30: match the hour
            keep = {i for i, o in enumerate(options) if o.start.hour == at.hour}
        if not keep and at.hour >= 12:  # "the 10" read as PM by the clinic rule
            keep = {i for i, o in enumerate(options) if o.start.hour == at.hour - 12}
        if keep:
            candidates &= keep
            narrowed = True
    if _has(t, "morning") and not _has(t, "afternoon"):
        keep = {i for i, o in enumerate(options) if o.start.hour < 12}
        if keep and keep & candidates:
            candidates &= keep
            narrowed = True
    elif _has(t, "afternoon"):
        keep = {i for i, o in enumerate(options) if 12 <= o.start.hour < 17}
        if keep and keep & candidates:
            candidates &= keep
            narrowed = True
    if narrowed and len(candidates) == 1:
        return next(iter(candidates))
    if len(options) == 1 and (_has(t, "that one", "that", "it", "this one")
                              or yes_no(t) is True):
        return 0
    return None


def _bare_hour(toks: Sequence[str]) -> tuple[str, time] | None:
    """'the ten' / 'ten o'clock' in a choice: any number 7..12 or 1..6 read as a clinic hour."""
    for i in range(len(toks)):
        got = _cardinal(toks, i)
        if got and 1 <= got[0] <= 12:
            nxt = toks[i + got[1]] if i + got[1] < len(toks) else ""
            if nxt in ("one", "o'clock", "oclock", "slot", "appointment", "") or \
                    (i > 0 and toks[i - 1] == "the"):
                return "at", time(_clinic_hour(got[0], None), 0)
    return None


# ---------------------------------------------------------------- names

_NAME_LEADS = (
    r"my name is", r"name is", r"the name is", r"this is", r"it is", r"i am", r"i'm",
    r"call me", r"it would be", r"under", r"under the name", r"for", r"the patient is",
    r"patient name is", r"the appointment is for", r"it is for", r"yes it is", r"sure it is",
    r"yeah it is", r"yes", r"yeah", r"sure", r"okay", r"ok", r"um", r"uh", r"hi",
)
_NOT_NAME = {
    "yes", "no", "yeah", "okay", "ok", "sure", "the", "a", "an", "and", "appointment",
    "doctor", "dr", "book", "cancel", "morning", "afternoon", "please", "thanks", "thank",
    "you", "is", "my", "name", "not", "what", "why", "who", "how", "i", "me", "hello",
    "sorry", "again", "repeat", "operator", "person", "human", "bye", "goodbye", "do",
    "can", "could", "would", "want", "need", "have", "it", "that", "this", "of", "to",
    "today", "tomorrow", "tonight", "noon", "evening", "later", "earlier", "earliest",
    "week", "next", "first", "last", "second", "any", "anyone", "none", "nothing",
    "hours", "address", "help", "hi", "hey", "good", "fine", "great", "wait", "um", "uh",
} | set(_WEEKDAYS) | set(_UNITS) | set(_TENS) | set(_MONTHS) | set(_ORDINALS)
_NAME_TAIL = ("please", "thanks", "thank you", "thank", "you", "that is me", "speaking")


def parse_name(text: str | None) -> str | None:
    """A person's name from "my name is john smith", "it's mary o'brien", "j o h n"."""
    t = normalize(text, clock=False)
    if not t:
        return None
    # strip leads repeatedly ("yes my name is ...")
    changed = True
    while changed:
        changed = False
        for lead in _NAME_LEADS:
            if t.startswith(lead + " "):
                t = t[len(lead) + 1:]
                changed = True
    for tail in _NAME_TAIL:
        t = re.sub(rf"\s+{tail}$", "", t)
    t = re.sub(r"\b(spelled|spelt|that is)\b.*$", "", t).strip()
    words = t.split()
    if not words:
        return None
    # spelled out: "j o h n smith" -> "john smith"
    merged: list[str] = []
    letters: list[str] = []
    for w in words + [""]:
        if len(w) == 1 and w.isalpha():
            letters.append(w)
            continue
        if letters:
            merged.append("".join(letters) if len(letters) > 1 else letters[0])
            letters = []
        if w:
            merged.append(w)
    words = merged
    if len(words) > 4 or not words:
        return None
    if any(not re.fullmatch(r"[a-z][a-z'-]*", w) for w in words):
        return None
    if any(w in _NOT_NAME for w in words):
        return None
    if len(words) == 1 and len(words[0]) < 2:
        return None
    return " ".join(_cap(w) for w in words)


def _cap(word: str) -> str:
    out = "-".join("'".join(p[:1].upper() + p[1:] for p in part.split("'"))
                   for part in word.split("-"))
    if re.match(r"^Mc[a-z]", out):
        out = "Mc" + out[2:].capitalize()
    return out


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

_LETTER_NAMES = {
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
_CODE_SKIP = {"dash", "hyphen", "minus", "my", "code", "is", "it", "the", "confirmation",
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
        c = _code_char(w)
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
