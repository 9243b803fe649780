"""Doctors (by name, misheard name or specialty) and visit types."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date

from esl_app.config.tenants import Doctor, VisitType
from esl_app.providers.agent.local import phonetic
from esl_app.providers.agent.local.nlu.when import _date_at
from esl_app.providers.agent.local.nlu.words import (
    _CHOICE_ORDINALS,
    ANY_DOCTOR,
    _cardinal,
    has_any,
    normalize,
)

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
               "whichever", "first available doctor", "any available",
               "do not have a preference", "no particular preference")


def match_doctor(text: str | None, doctors: Sequence[Doctor], *, specialties: bool = True
                 ) -> Doctor | str | None:
    """The doctor named in ``text``, :data:`ANY_DOCTOR`, or None.

    Tolerant of "doctor smith", "dr smith", "sarah smith", "smith", first
    names, and specialties ("the pediatrician"). A doctor the caller rules out
    ("patel, not smith") does not count.
    """
    t = normalize(text).replace("dr.", "dr")
    if not t:
        return None
    t = _drop_ruled_out(t, {p for d in doctors for p in _name_parts(d)})
    padded = f" {t} "
    scores: dict[str, int] = {}
    for d in doctors:
        parts = _name_parts(d)
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
        elif specialties:
            spec = d.specialty.lower()
            words = _SPECIALTY_WORDS.get(spec, ()) + ((spec,) if spec else ())
            if any(has_any(t, w) for w in words):
                score = 1
        if score:
            scores[d.id] = score
    if scores:
        best = max(scores.values())
        winners = [d for d in doctors if scores.get(d.id) == best]
        if len(winners) == 1:
            return winners[0]
    if has_any(t, *_ANY_DOCTOR):
        return ANY_DOCTOR
    return None


def _name_parts(d: Doctor) -> list[str]:
    """A doctor's name words without the title: "Dr. Sarah Smith" -> ["sarah", "smith"]."""
    return [p for p in re.sub(r"[^a-z' -]", " ", d.name.lower().replace("dr.", "")).split()
            if p not in ("dr", "doctor", "md")]


def _drop_ruled_out(t: str, words: set[str]) -> str:
    """Drop names the caller rules out: "doctor patel, not smith" -> "doctor patel"."""
    if not words:
        return t
    alts = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.sub(rf"\b(?:not|instead of|rather than|other than|except)(?: (?:doctor|dr|with))?"
                  rf" (?:{alts})(?:'s|s)?\b", " ", t)


# Words after "doctor" that are not a name ("see a doctor about my knee").
_GUESS_STOP = {
    "a", "an", "the", "and", "or", "about", "for", "to", "at", "on", "in", "with", "by", "of",
    "is", "as", "please", "thanks", "thank", "you", "today", "tomorrow", "tonight", "soon",
    "now", "again", "appointment", "visit", "office", "asap", "who", "that", "this", "any",
    "whoever", "because", "so", "if", "but", "then", "next", "first", "earliest", "i", "me",
    "my", "we", "it", "there", "here", "yes", "no", "okay", "ok", "sure", "um", "uh", "who's",
    "regarding", "concerning", "re", "instead", "not", "would", "could", "can", "will",
    "should", "when", "what", "where", "how", "why", "one", "two", "three", "four", "five",
    "six", "seven", "eight", "nine", "ten", "morning", "afternoon", "evening", "week",
    "checkup", "available", "preference", "either", "anyone", "anybody", "s", "said", "told",
    "wants", "want", "recommended", "referred",
}
_NOT_A_TITLE = {"a", "the", "any", "my", "your", "our", "his", "her", "their", "family",
                "heart", "skin", "kids", "children's", "regular", "same", "another",
                "different", "new", "primary", "woman", "female", "male", "man", "good",
                "other", "which", "what", "that", "this", "each", "every", "no", "old"}


def guess_doctor(text: str | None, doctors: Sequence[Doctor], *, bare: bool = False
                 ) -> Doctor | None:
    """The doctor a misheard name most likely means ("doctor october" -> Dr. Okafor), or None.

    Only words in a name's place count: after "doctor"/"dr" (not "a doctor"),
    or, with ``bare`` (the caller answers "which doctor?"), the whole short
    answer. The dialogue confirms a guess before using it.
    """
    toks = [w for w in normalize(text).replace("dr.", "dr").split() if w not in ("um", "uh")]
    if not toks or not doctors:
        return None
    heard: list[str] = []
    for i, w in enumerate(toks):
        if w in ("doctor", "dr", "doc") and (i == 0 or toks[i - 1] not in _NOT_A_TITLE):
            rest = toks[i + 1:i + 3]
            if rest and rest[0] not in _GUESS_STOP:
                heard.append(rest[0])
            if len(rest) > 1 and not _date_at(rest, 0, date(2000, 1, 1)) and (
                    not (rest[0] in _GUESS_STOP and rest[1] in _GUESS_STOP)
                    or len(phonetic.phonetic_key(rest[0] + rest[1])) >= 3):
                heard.append(rest[0] + rest[1])  # "ok for": one name heard as two words
    if bare and not heard and 1 <= len(toks) <= 2 and not any(w in _GUESS_STOP for w in toks):
        heard = ["".join(toks)] + (toks if len(toks) > 1 else [])
    if not heard:
        return None
    pairs: list[tuple[str, str]] = []
    for d in doctors:
        parts = _name_parts(d)
        pairs.extend((d.id, p) for p in parts)
        if len(parts) > 1:
            pairs.append((d.id, "".join(parts)))
    by_id = {d.id: d for d in doctors}
    votes = {got for h in heard if (got := phonetic.best_match(h, pairs))}
    return by_id[votes.pop()] if len(votes) == 1 else None


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
        if "follow" in by_kind and has_any(t, *_NOT_NEW_PHRASES):
            score[by_kind["follow"].id] = 3
        elif "new" in by_kind and has_any(t, *new_phrases):
            score[by_kind["new"].id] = 2
        elif "follow" in by_kind and any(
                not _negated(toks, at) for p in follow_phrases for at in _phrase_at(toks, p)):
            score[by_kind["follow"].id] = 1
    if not score and "follow" in by_kind and has_any(t, "results", "result") and \
            has_any(t, "go over", "discuss", "talk about", "review"):
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
    elif has_any(" ".join(toks), "the last one", "the last", "the latter", "last one"):
        pos = len(visit_types) - 1
    elif has_any(" ".join(toks), "the former"):
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


