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
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from esl_app.config.tenants import Doctor, VisitType
from esl_app.providers.agent.contractions import expand
from esl_app.providers.agent.local import names, phonetic

__all__ = [
    "ANY_DOCTOR",
    "Understanding",
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
    "understand",
    "visit_kind",
    "yes_no",
]

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
                  "speak to staff", "a nurse", "the nurse", "an agent", "transfer me",
                  "manager", "office manager")),
    ("reschedule", ("reschedule", "re schedule", "move my appointment", "change my appointment",
                    "move the appointment", "change the appointment", "change my booking",
                    "move my booking", "push my appointment", "push back my appointment",
                    "different time for my appointment", "different day for my appointment",
                    "postpone", "bring my appointment", "switch my appointment",
                    "rearrange", "move it to another", "rebook")),
    ("cancel", ("cancel", "call off", "can not make it", "will not make it",
                "not going to make it", "can not come", "delete my appointment",
                "remove my appointment", "can not make my", "can not make the",
                "will not be able to come", "will not be able to make", "not be able to come",
                "not be able to make", "not going to make my")),
    ("book", ("book", "appointment", "appointments", "schedule", "make an", "see a doctor",
              "see the doctor", "see doctor", "see dr", "need to see", "want to see",
              "like to see", "needs to see", "come in", "get in", "checkup", "check up",
              "visit", "consultation", "slot", "slots", "available", "availability",
              "openings", "opening", "see someone", "see somebody", "fit me in",
              "squeeze me in", "walk in", "walk ins", "walk-in", "walk-ins", "bring him in",
              "bring her in", "bring them in", "get seen", "be seen", "checked",
              "looked at", "look at it", "taken out", "which doctors", "what doctors",
              "anything open", "something open", "have open", "same day")),
    ("hours", ("hours", "what time do you", "when do you open", "when do you close",
               "when are you open", "are you open", "opening time", "closing time",
               "open on", "open today", "open tomorrow", "close today", "how late",
               "how early", "until what time", "till what time", "open until", "open till",
               "office open", "office close", "clinic open", "clinic close", "office hours",
               "close for lunch", "closed for lunch", "lunch break")),
    ("address", ("address", "where are you", "where is the clinic", "where is your",
                 "located", "location", "directions", "how do i get", "how to get there",
                 "parking", "where do i park", "where can i park", "place to park",
                 "what street", "which street", "where exactly", "where is the office",
                 "where do i go", "find you", "find the clinic", "find the office")),
    ("goodbye", ("bye", "goodbye", "good bye", "that is all", "that is it", "nothing else",
                 "hang up", "have a good day", "have a nice day", "i am done", "i am good",
                 "i am all set", "all set", "that will be all", "no more",
                 "that is everything", "call back later", "i will call back",
                 "i will call you back", "try again later")),
)
_NAV_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("earliest", ("earliest", "soonest", "as soon as possible", "asap", "first available",
                  "next available", "first thing", "as early as possible")),
    ("later", ("anything later", "something later", "later", "after that", "any later",
               "later times", "later one")),
    ("earlier", ("anything earlier", "something earlier", "earlier", "sooner",
                 "anything before that")),
)
# Openers said before (or instead of) the request.
_GREETINGS = ("hi there", "hello there", "hey there", "hi", "hello", "hey", "hiya", "howdy",
              "good morning", "good afternoon", "good evening", "greetings")
_PRESENCE = ("is anybody there", "is anyone there", "anybody there", "anyone there",
             "are you there", "can you hear me", "is this working", "hello hello")
_OPENER_FILLERS = ("yes", "yeah", "oh", "um", "uh", "ok", "okay", "well", "so", "hey")
_SMALLTALK = re.compile(
    r"\b(?:how are you|how is it going|how are things|how do you do"
    r"|are you (?:a |an )?(?:real|human|person|robot|machine|computer|bot|recording"
    r"|automated|ai|artificial)"
    r"|am i (?:talking|speaking) (?:to|with) (?:a |an )?(?:real|human|person|robot|machine"
    r"|computer|bot|recording|automated|ai)"
    r"|is this (?:a |an )?(?:real person|human|person|robot|machine|computer|recording"
    r"|answering machine|automated|bot|the doctor|the clinic|the office|the practice"
    r"|an emergency (?:number|line))"
    r"|who is this|who am i (?:speaking|talking) (?:to|with)|who are you|what is your name"
    r"|who is speaking|what can you do|what are my options|how does this work"
    r"|what do you do|what can i do|automated (?:system|service|assistant|line)"
    r"|is this automated|it is a (?:machine|robot|recording))\b")
_REPEAT = ("repeat", "say that again", "say again", "say it again", "say those again",
           "come again", "pardon", "what was that", "one more time", "what did you say",
           "did not catch", "did not hear", "did not get that", "slow down", "speak up",
           "say that slower", "can not hear you", "what were the", "what was the question",
           "repeat the question", "sorry what", "what sorry", "excuse me", "say the times again",
           "say them again", "say the options again", "the times again", "what did you just say")
_REPEAT_ALONE = ("what", "huh", "sorry", "eh", "hmm what", "what is that", "what was it")
_WAIT = ("hold on", "hang on", "one moment", "one second", "one sec", "a second", "a sec",
         "just a sec", "just a second", "give me a sec", "give me a second", "give me a minute",
         "just a minute", "just a moment", "let me check", "let me think", "let me see",
         "let me find", "let me look", "bear with me", "wait a second", "wait a minute",
         "let me get", "hold please")


_RETURNING = ("returning a call", "returning your call", "return your call", "got a call from",
              "missed a call", "you called me", "someone called me", "had a missed call",
              "calling back", "call from your office")


def strip_opener(t: str) -> tuple[str, bool]:
    """Normalised ``t`` without the greeting it starts with, and whether there was one.

    "good morning, I need an appointment" must not ask for a morning slot, and
    "hello? can you hear me?" is only a greeting.
    """
    greeted = False
    changed = True
    while changed and t:
        changed = False
        for g in _PRESENCE + _GREETINGS:
            if t == g or t.startswith(g + " "):
                t = t[len(g):].strip()
                greeted = changed = True
                break
        else:
            first, _, rest = t.partition(" ")
            if first in _OPENER_FILLERS and any(rest == g or rest.startswith(g + " ")
                                                for g in _PRESENCE + _GREETINGS):
                t = rest
                changed = True
    return t, greeted


def intent(text: str | None) -> str | None:
    """The caller's main goal in this turn, or None.

    One of: emergency, operator, reschedule, cancel, book, hours, address,
    goodbye, earliest, later, earlier, repeat, wait, yes, no, smalltalk,
    greeting. Ordered by priority: a request for a person wins over anything
    else said in the same breath; "cancel and rebook" style turns count as
    reschedule; a question about the bot itself ("are you a real person?") is
    small talk, not a request for one.
    """
    t = normalize(text)
    if not t:
        return None
    from esl_app.providers.agent.safety import detect_emergency  # one red-flag list for every agent

    if detect_emergency(t) is not None:
        return "emergency"
    core, greeted = strip_opener(t)
    if not core:
        return "greeting"
    t = core
    if (_has(t, "zero") or t == "agent") and len(t.split()) <= 2:
        return "operator"
    smalltalk = bool(_SMALLTALK.search(t))
    found = [name for name, phrases in _INTENT_PATTERNS if _has(t, *phrases)]
    if re.search(r"\bbring (?:my|our|him|her|them)(?: [a-z]+)? in\b", t):
        found.append("book")
    if "operator" in found and (smalltalk or not _operator_really(t)):
        found.remove("operator")
    if "cancel" in found and _has(t, "rebook", "book another", "new time", "another time",
                                  "different day", "different time"):
        return "reschedule"
    if not found and re.search(r"\b(?:booked|my appointment|an appointment)\b.*\b(?:another|a "
                               r"different|a new) (?:day|time|date)\b", t):
        return "reschedule"
    if re.search(r"\b(?:move|moving|shift|switch)\b.*\bappointment\b"
                 r"|\bappointment\b.*\b(?:changed|moved|rescheduled|pushed back|shifted)\b", t) \
            and "cancel" not in found:
        return "reschedule"
    if "reschedule" in found and not _has(t, "appointment", "booking", "visit", "reschedule",
                                          "re schedule", "postpone", "rebook", "rearrange"):
        found.remove("reschedule")
    if _has(t, "change the time", "change the day", "change the date") and \
            _has(t, "appointment", "booking"):
        return "reschedule"
    if "goodbye" in found and len(found) > 1 and _has(t, "no more") and not _has(t, "bye"):
        found.remove("goodbye")
    for name in ("emergency", "operator", "reschedule", "cancel"):
        if name in found:
            return name
    if "book" in found and not _has(t, "hours", "address", "where are you", "where do i go",
                                    "where is", "how do i get") and \
            not (smalltalk and not _has(t, "appointment", "book", "schedule")):
        return "book"
    for name in ("hours", "address"):
        if name in found:
            return name
    if smalltalk:
        return "smalltalk"
    yn = yes_no(t)
    if "goodbye" in found:
        return "goodbye"
    for name, phrases in _NAV_PATTERNS:
        if _has(t, *phrases):
            return name
    if _has(t, *_REPEAT) or t in _REPEAT_ALONE:
        return "repeat"
    if _has(t, *_WAIT) or t == "wait":
        return "wait"
    if yn is not None:
        return "yes" if yn else "no"
    if greeted:
        return "greeting"
    return None


_PERSON = re.compile(
    r"\b(operator|receptionist|representative|real person|human being|"
    r"(talk|speak) (to|with) (a |an |the )?(person|human|someone|somebody|staff|agent))\b",
    re.I)


def asks_for_person(text: str | None) -> bool:
    """An explicit request for a human ("operator", "talk to a person").

    The call engine acts on it before any agent (every tenant's callers can always
    reach the front desk); the local agent's "operator" intent includes it.
    """
    return bool(text and _PERSON.search(text))


def _operator_really(t: str) -> bool:
    """'someone'/'a person' only mean a human when the caller asks to talk to them."""
    if asks_for_person(t):
        return True
    strong = ("operator", "real person", "human", "receptionist", "front desk", "press zero",
              "representative", "live person", "live agent", "a nurse", "an agent",
              "transfer me")
    if _has(t, *strong):
        return True
    return bool(re.search(r"\b(talk|speak|speaking|talking|connect me|put me through|transfer)"
                          r"\b.*\b(someone|somebody|a person|staff|nurse|manager|the office"
                          r"|billing)\b", t))


# ---------------------------------------------------------------- yes / no

_YES = ("yes", "yeah", "yea", "yep", "yup", "sure", "ok", "okay", "correct", "right",
        "that is right", "that works", "sounds good", "perfect", "please do", "go ahead",
        "absolutely", "definitely", "of course", "uh huh", "mm hmm", "fine", "great",
        "alright", "all right", "that is correct", "do it", "book it", "exactly", "yes please",
        "works for me", "good", "affirmative", "i do", "it is", "that one", "mhm",
        "mm hm", "mhmm", "you bet", "confirm", "confirmed", "go for it", "sure thing",
        "that is it", "that is me", "let us do it", "let us do that", "yes ma'am", "yes sir",
        "i guess so", "i think so", "guess so", "i suppose", "why not", "that will work")
_NO = ("nope", "nah", "not really", "no thanks", "no thank you", "do not", "negative",
       "wrong", "incorrect", "that is not right", "that is wrong", "not that", "none",
       "neither", "does not work", "will not work", "not good", "i do not", "not quite",
       "never mind", "nevermind", "not at all", "i can not", "none of those", "none of them",
       "that is not", "is not my", "not my", "not me", "no way", "i do not think so")


# what follows a refusing "no" ("no thanks", "no, that's wrong"); "no chest pain" is no refusal
_NO_GOES_ON = {"thanks", "thank", "i", "that", "it", "not", "sorry", "no", "way", "please",
               "the", "we", "this", "actually", "wait", "she", "he", "they", "you", "none",
               "nope", "nothing", "a", "an", "different", "another", "other", "there", "do",
               "does", "ma'am", "sir", "never", "need", "just", "is", "what", "can", "could",
               "let", "make", "change", "in", "on", "at", "for", "with", "doctor", "dr", "my",
               "then", "so", "but", "and", "neither", "too", "definitely", "absolutely",
               "maybe", "later", "earlier", "tomorrow", "today", "one", "two"}


def yes_no(text: str | None) -> bool | None:
    """True for an agreement, False for a refusal, None when neither is clear."""
    t = normalize(text)
    if not t:
        return None
    if _has(t, "not sure", "i do not know", "maybe", "i guess not sure"):
        return None
    words = [w for w in t.split() if w not in ("uh", "um", "oh", "well", "hmm")] or t.split()
    lead = words[0] in ("nope", "nah", "negative") or (
        words[0] == "no" and (len(words) == 1 or words[1] in _NO_GOES_ON))
    if lead or _has(t, *_NO) or (words[-1] == "no" and len(words) <= 3):
        return False
    if _has(t, *_YES) or t == "please":
        return True
    return None


_CORRECTION = ("i said", "i meant", "i mean", "actually", "change it to",
               "change that to", "instead", "rather", "not that", "scratch that", "sorry",
               "correction", "no wait", "wait", "make that", "switch to", "switch it",
               "change the", "oops", "my mistake", "i misspoke")


_NOT_CORRECTION = ("no thank", "no thanks", "no preference", "no problem", "no worries",
                   "no rush", "no later", "no earlier", "no idea")


def is_correction(text: str | None) -> bool:
    """Whether the caller is correcting something they said before."""
    t = normalize(text)
    if re.search(r"(?<!not )\bmake it\b", t):
        return True
    return _has(t, *_CORRECTION) or bool(re.match(r"no\b", t) and len(t.split()) > 1
                                          and not _has(t, *_NOT_CORRECTION))


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
        if "follow" in by_kind and _has(t, *_NOT_NEW_PHRASES):
            score[by_kind["follow"].id] = 3
        elif "new" in by_kind and _has(t, *new_phrases):
            score[by_kind["new"].id] = 2
        elif "follow" in by_kind and any(
                not _negated(toks, at) for p in follow_phrases for at in _phrase_at(toks, p)):
            score[by_kind["follow"].id] = 1
    if not score and "follow" in by_kind and _has(t, "results", "result") and \
            _has(t, "go over", "discuss", "talk about", "review"):
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


def parse_date(text: str | None, today: date, *, ordinals: bool = False) -> DateRange | None:
    """The day(s) meant in ``text`` relative to ``today``, or None.

    "next <weekday>" is the first such day after today; "this/on <weekday>"
    may be today. Day-only dates ("the 5th") are the next such day. With
    ``ordinals`` (the caller is answering "what day?") "the third" is a date
    too; elsewhere it is more likely a choice among options.
    """
    found = _find_date(tokens(text), today, ordinals=ordinals)
    return found[0] if found else None


_DATE_CORRECTIONS = (("actually",), ("make", "it"), ("no", "wait"), ("or", "rather"),
                     ("rather",), ("i", "mean"), ("i", "meant"), ("instead",),
                     ("scratch", "that"), ("change", "it", "to"), ("change", "that", "to"),
                     ("correction",))


def _correction_at(toks: Sequence[str], i: int) -> bool:
    """A correction of what the caller just said starts at token ``i``."""
    return any(tuple(toks[i:i + len(p)]) == p for p in _DATE_CORRECTIONS)


_NEGATORS = ("not", "instead of", "rather than", "other than", "except", "but not")


def _find_date(toks: list[str], today: date, *, ordinals: bool = False,
               ruled_out: list[DateRange] | None = None) -> tuple[DateRange, set[int]] | None:
    """The date in ``toks`` and the token indexes it used (so times skip them).

    "Monday, actually no, make it Wednesday": a date after the caller's last
    correction wins over any before it (the earlier one is ruled out).
    """
    marks = [i for i in range(1, len(toks)) if _correction_at(toks, i)]
    if marks:
        later = _mentions_date(toks[marks[-1]:], today, ordinals=ordinals, ruled_out=ruled_out)
        if later is not None:
            earlier = _mentions_date(toks[:marks[-1]], today, ordinals=ordinals)
            if earlier is not None and ruled_out is not None:
                ruled_out.append(earlier[0])
            return later[0], {marks[-1] + i for i in later[1]}
    return _mentions_date(toks, today, ordinals=ordinals, ruled_out=ruled_out)


def _mentions_date(toks: list[str], today: date, *, ordinals: bool = False,
                   ruled_out: list[DateRange] | None = None
                   ) -> tuple[DateRange, set[int]] | None:
    """The date in ``toks`` and the token indexes it used (so times skip them).

    Every mention is found first, then one is chosen: mentions the caller
    ruled out ("not tuesday", "instead of thursday") are dropped, a weekday
    right before its date ("wednesday, december 2nd") yields to the date,
    "monday or tuesday" spans both, and "the day after" counts from the
    mention before it. Otherwise the first mention wins. ``ruled_out``, when
    given, collects the mentions the caller ruled out ("not X, Y" corrects X).
    """
    mentions: list[tuple[int, DateRange, set[int]]] = []
    covered: set[int] = set()
    for i in range(len(toks)):
        if i in covered:
            continue
        got = _date_at(toks, i, today, ordinals=ordinals)
        if got:
            rng, used = got
            mentions.append((i, rng, used))
            covered |= used
    # "the day after" / "the day before" on their own: from the mention before
    for i in range(len(toks) - 1):
        if toks[i] == "day" and toks[i + 1] in ("after", "before") and i not in covered \
                and not (i + 2 < len(toks) and (i + 2) in covered):
            earlier = [m for m in mentions if m[0] < i]
            if earlier:
                base = earlier[-1][1].first
                day = base + timedelta(days=1 if toks[i + 1] == "after" else -1)
                used = {i, i + 1} | ({i - 1} if i and toks[i - 1] == "the" else set())
                mentions.append((i, DateRange(day, day), used))
    if not mentions:
        return None
    mentions.sort(key=lambda m: m[0])

    def negated(m: tuple[int, DateRange, set[int]]) -> bool:
        start = min(m[2])
        before = " ".join(w for w in toks[max(0, start - 3):start] if w not in ("the", "on"))
        after = " ".join(toks[max(m[2]) + 1:max(m[2]) + 5])
        word = toks[max(m[2])]
        if word.endswith("'s") or word.endswith("s"):
            after = "is " + after
        return any(before.endswith(n) for n in _NEGATORS) or bool(re.match(
            r"(?:is |are )?(?:no good|not good|not great|out|bad|not possible|not an option"
            r"|does not work|do not work|will not work|is not going to work|is not)\b", after))

    live = [m for m in mentions if not negated(m)]
    if not live:
        return None
    if ruled_out is not None:
        ruled_out.extend(m[1] for m in mentions if negated(m))
    # a weekday next to its explicit date: the date decides
    for a, b in zip(live, live[1:], strict=False):
        if _weekday_index(toks[a[0]]) is not None and b[0] - max(a[2]) <= 2 \
                and _weekday_index(toks[b[0]]) is None and b[1].single:
            live.remove(a)
            break
    first = live[0]
    if len(live) > 1 and first[1].single and live[1][1].single:
        second = live[1]
        between = toks[max(first[2]) + 1:min(second[2])]
        if between in (["or"], ["and"], ["or", "on"], ["or", "maybe"]):
            lo, hi = first[1].first, second[1].first
            if _weekday_index(toks[second[0]]) is not None and toks[min(second[2])] not in (
                    "next", "following"):
                hi = lo + timedelta(days=(hi.weekday() - lo.weekday()) % 7)  # the one after
            if hi > lo:
                return DateRange(lo, hi), first[2] | second[2]
    return first[1], first[2]


def _date_at(toks: list[str], i: int, today: date, *, ordinals: bool = False
             ) -> tuple[DateRange, set[int]] | None:
    """A date mention that starts (or ends, for "next friday") at ``toks[i]``."""
    n = len(toks)
    w = toks[i]

    def one(d: date | None, used: set[int]) -> tuple[DateRange, set[int]] | None:
        return (DateRange(d, d), used) if d else None

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
    if w == "this" and i + 1 < n and toks[i + 1] in ("morning", "afternoon", "evening"):
        return one(today, {i})
    if w in ("tomorrow", "tomorrows", "tomorrow's"):
        return one(today + timedelta(days=1), {i})
    if w in ("a", "one") and toks[i + 1:i + 3] in (["week", "tomorrow"], ["week", "today"]):
        base = today + timedelta(days=1 if toks[i + 2] == "tomorrow" else 0)
        return one(base + timedelta(weeks=1), {i, i + 1, i + 2})  # "a week tomorrow"
    # "early december", "in january", "late next month"
    if w in _MONTH_ALIASES and w != "may" and not _next_is_day(toks, i + 1) and \
            not (i + 1 < n and toks[i + 1] == "the") and (
            i > 0 and toks[i - 1] in ("in", "early", "mid", "late", "of", "during")):
        month = _MONTH_ALIASES[w]
        year = today.year if month >= today.month else today.year + 1
        start = date(year, month, 1)
        last = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
        prev = toks[i - 1]
        if prev == "early":
            last = date(year, month, 10)
        elif prev == "mid":
            start, last = date(year, month, 10), date(year, month, 20)
        elif prev == "late":
            start = date(year, month, 20)
        start = max(start, today)
        if start <= last:
            return DateRange(start, last), {i - 1, i}
    # "a week from thursday", "two weeks from today"
    if w in ("a", "one", "two", "three") or w.isdigit():
        count = {"a": 1, "one": 1, "two": 2, "three": 3}.get(w) or (int(w) if w.isdigit() else 0)
        if toks[i + 1:i + 3] in (["week", "from"], ["weeks", "from"]) and 0 < count < 9:
            base_at = i + 3
            if base_at < n and toks[base_at] in ("now", "today"):
                return one(today + timedelta(weeks=count), set(range(i, base_at + 1)))
            base = _date_at(toks, base_at, today) if base_at < n else None
            if base and base[0].single:
                return one(base[0].single + timedelta(weeks=count),
                           set(range(i, base_at)) | base[1])
    # month + day: "december 3rd", "dec third", "december the first"
    if w in _MONTH_ALIASES and not (w == "may" and not _next_is_day(toks, i + 1)):
        at = i + 2 if i + 1 < n and toks[i + 1] == "the" else i + 1
        got = _ordinal(toks, at) or _cardinal(toks, at)
        if got and 1 <= got[0] <= 31:
            used = set(range(i, at + got[1]))
            return one(_month_day(today, _MONTH_ALIASES[w], got[0]), used)
    # "the third of december", "3rd of dec"
    got = _ordinal(toks, i)
    if got and i + got[1] < n and toks[i + got[1]] == "of" \
            and i + got[1] + 1 < n and toks[i + got[1] + 1] in _MONTH_ALIASES:
        mi = i + got[1] + 1
        return one(_month_day(today, _MONTH_ALIASES[toks[mi]], got[0]), set(range(i, mi + 1)))
    # "in two days", "in a week", "in a couple of days"
    if w == "in" and i + 1 < n:
        amount = _cardinal(toks, i + 1)
        if amount is None and toks[i + 1] in ("a", "one"):
            amount = (1, 1)
        if toks[i + 1:i + 4] == ["a", "couple", "of"] or toks[i + 1:i + 3] == ["a", "couple"]:
            amount = (2, 3 if toks[i + 3:i + 4] == ["of"] else 2)
        elif toks[i + 1:i + 3] == ["a", "few"]:
            amount = (3, 2)
        if amount and i + 1 + amount[1] < n:
            unit = toks[i + 1 + amount[1]]
            used = set(range(i, i + 2 + amount[1]))
            if unit in ("day", "days"):
                return one(today + timedelta(days=amount[0]), used)
            if unit in ("week", "weeks"):
                return one(today + timedelta(weeks=amount[0]), used)
    # "in the next couple of weeks", "within the next few days"
    if w == "next" and i + 1 < n:
        j = i + 1
        count = {"couple": 2, "few": 3, "two": 2, "three": 3, "four": 4, "several": 5}.get(
            toks[j])
        if count:
            j += 2 if toks[j + 1:j + 2] == ["of"] else 1
            if j < n and toks[j] in ("days", "weeks"):
                span = timedelta(days=count) if toks[j] == "days" else timedelta(weeks=count)
                return DateRange(today, today + span), set(range(i, j + 1))
    if w == "same" and toks[i + 1:i + 2] == ["day"]:
        return one(today, {i, i + 1})
    if w == "week" and i > 1 and toks[i - 2:i] == ["later", "this"]:
        monday = today - timedelta(days=today.weekday())
        return (DateRange(today + timedelta(days=1), monday + timedelta(days=6)), {i})
    if w in ("week", "weekend") and i > 0 and toks[i - 1] in ("next", "this", "following"):
        used = {i - 1, i}
        if w == "weekend":
            return _weekend(today, toks[i - 1] in ("next", "following")), used
        monday = today - timedelta(days=today.weekday())
        if toks[i - 1] == "this":
            return (DateRange(today, monday + timedelta(days=6)), used)
        start = monday + timedelta(days=7)
        prev2 = toks[i - 2] if i > 1 else ""
        if prev2 == "early":
            return DateRange(start, start + timedelta(days=2)), used | {i - 2}
        if prev2 in ("late", "later") or toks[max(0, i - 4):i - 1] == ["end", "of"]:
            return DateRange(start + timedelta(days=3), start + timedelta(days=6)), used
        return (DateRange(start, start + timedelta(days=6)), used)
    if w in ("weekend", "weekends") and (i == 0 or toks[i - 1] in ("the", "a", "on")):
        return _weekend(today, False), {i}
    if w == "month" and i > 0 and toks[i - 1] in ("next", "this"):
        first = date(today.year + today.month // 12, today.month % 12 + 1, 1)
        if toks[i - 1] == "this":
            return DateRange(today, first - timedelta(days=1)), {i - 1, i}
        after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return DateRange(first, after - timedelta(days=1)), {i - 1, i}
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
        elif prev in ("this", "coming"):
            used.add(i - 1)
        rest = toks[i + 1:i + 4]
        if rest[:2] == ["next", "week"] or rest[:3] == ["of", "next", "week"]:
            monday = today - timedelta(days=today.weekday()) + timedelta(days=7)
            k = 2 if rest[0] == "next" else 3
            return one(monday + timedelta(days=wd), used | set(range(i + 1, i + 1 + k)))
        # "friday the 27th": the date, when it is one
        if i + 1 < n and toks[i + 1] == "the" and (got := _ordinal(toks, i + 2)) \
                and 1 <= got[0] <= 31:
            day = _day_of_month(today, got[0])
            if day:
                return one(day, used | set(range(i + 1, i + 2 + got[1])))
        return one(today + timedelta(days=delta), used)
    # "on the 5th", "the 5th", "the fifth"
    if w in ("the", "on") and (got := _ordinal(toks, i + 1)) and 1 <= got[0] <= 31:
        after = i + 1 + got[1]
        if after < n and toks[after] in _NOT_DATE_NOUNS:
            return None
        if w == "the" and after >= n and got[0] <= 3 and not ordinals \
                and not (i > 0 and toks[i - 1] == "on"):
            # "the first", "the second" alone are choices, not dates
            return None
        return one(_day_of_month(today, got[0]), set(range(i, after)))
    return None


def _weekend(today: date, following: bool) -> DateRange:
    """The weekend ahead (or under way, on a Saturday or Sunday), or the one after it."""
    sat = today + timedelta(days=(5 - today.weekday()) % 7)
    if today.weekday() == 6:
        sat = today - timedelta(days=1)
    if following and today.weekday() < 5:
        sat += timedelta(days=7)
    return DateRange(max(sat, today), sat + timedelta(days=1))


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
                    "first thing", "as early as possible", "next available", "see me first",
                    "see me soonest", "first opening", "next opening")
    spoken_am = _has(re.sub(r"\bi am\b", "", t), "am")  # "i am free" is not "a.m."
    if spoken_am or _has(t, "morning", "mornings", "before lunch", "first thing",
                         "earlier in the day", "early in the day"):
        part = "morning"
    if _has(t, "afternoon", "afternoons", "after lunch", "lunchtime", "lunch time",
            "later in the day", "late in the day", "as late as"):
        part = "afternoon"
    if _has(t, "evening", "evenings", "tonight", "after work", "after five", "after 5"):
        part = "evening"
    # "not in the morning": the other half of the day
    if part in ("morning", "afternoon") and re.search(
            rf"\bnot (?:in )?(?:the )?{part}s?\b", t):
        part = "afternoon" if part == "morning" else "morning"
    if _has(t, "late afternoon"):
        after = time(15, 0)
    if _has(t, "early afternoon"):
        before = time(15, 0)
    if _has(t, "late morning"):
        after = time(10, 0)
    if _has(t, "early morning"):
        before = time(10, 0)
    if _has(t, "noon", "midday") and not _has(t, "afternoon", "before noon", "after noon",
                                              "until noon", "till noon", "and noon",
                                              "to noon"):
        at = time(12, 0)
        part = part or "afternoon"
    if _has(t, "before noon"):
        part = "morning"
    if _has(t, "after noon"):
        part = "afternoon"
    span = _between(toks, skip)
    clock = None if span else _find_clock(toks, skip)
    if span:
        after, before = span
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
    if not (part or after or before or at or earliest):
        return None
    return TimePref(part=part, at=at, after=after, before=before, earliest=earliest)


def _between(toks: list[str], skip: set[int]) -> tuple[time, time] | None:
    """The bounds of "between 1 and 3" as clinic hours, or None."""
    for i, w in enumerate(toks):
        if w != "between" or i + 1 in skip:
            continue
        a = _cardinal(toks, i + 1)
        if not a or not 1 <= a[0] <= 12:
            continue
        j = i + 1 + a[1]
        mer_a = _meridiem(toks, j)
        if j < len(toks) and toks[j] in ("am", "pm"):
            j += 1
        if j >= len(toks) or toks[j] not in ("and", "to"):
            continue
        b = _cardinal(toks, j + 1)
        if j + 1 < len(toks) and toks[j + 1] in ("noon", "midday"):
            b = (12, 1)
        if not b or not 1 <= b[0] <= 12:
            continue
        mer_b = _meridiem(toks, j + 1 + b[1])
        hb = _clinic_hour(b[0], mer_b)
        ha = _clinic_hour(a[0], mer_a or (mer_b if a[0] < b[0] else None))
        if ha < hb:
            return time(ha, 0), time(hb, 0)
    return None


def parse_relative(text: str | None) -> timedelta | None:
    """How soon the caller wants to come ("in an hour", "in 30 minutes", "right now").

    Only hours and minutes: "in two days" is a date. The dialogue turns the
    answer into a clock time and checks it against the clinic's minimum notice.
    """
    toks = [w for w in tokens(text) if w not in ("about", "around", "roughly", "maybe", "like",
                                                 "approximately", "just")]
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


_TIME_LEAD = ("at", "around", "about", "after", "before", "by", "say", "like", "the", "for",
              "than", "till", "until", "maybe", "do", "is", "make", "that", "with")
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
        if j < n and toks[j] in ("day", "days", "week", "weeks", "th", "st", "nd", "rd",
                                 "moment", "second", "sec", "minute", "more", "thing", "of"):
            continue
        if w == "one" and lead in ("the", "that", "this") and not explicit:
            continue  # "that's the one"
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
    """Whether the clock time at ``toks[i]`` is a wish ("at"), a lower or an upper bound."""
    before = " ".join(toks[max(0, i - 3):i])
    if re.search(r"\b(?:no|not) later than$|\bnot after$|\b(?:until|till|by)$", before):
        return "before"
    if re.search(r"\b(?:no|not) earlier than$|\bnot before$", before):
        return "after"
    near = toks[max(0, i - 2):i]
    if "after" in near or before.endswith("later than"):
        return "after"
    if "before" in near or "by" in near or before.endswith("earlier than"):
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
    t = re.sub(r"\b(?:last|first|next) (?:time|week|month|year|visit|appointment|thing)\b",
               " ", t)
    toks = t.split()
    if _has(t, "last one", "the last", "last", "latest one", "the latter", "later one",
            "latter"):
        return n - 1
    if _has(t, "middle", "middle one"):
        return n // 2 if n == 3 else None
    if _has(t, "earlier one", "the former", "earliest one", "whichever is earliest",
            "whichever is first", "whichever is soonest"):
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
    noon = ("at", time(12, 0)) if _has(t, "noon", "midday") else None  # "noon works for me"
    clock = _find_clock(toks, set()) or noon or _bare_hour(toks)
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


def parse_name(text: str | None) -> str | None:
    """A person's name from "my name is john smith", "it's mary o'brien", "j o h n".

    Strict: words that are rarely names ("friday", "good") refuse the whole answer,
    because outside the name question they are far likelier something else.
    """
    got = names.parse_name_answer(normalize(text, clock=False), strict=True)
    return got.name if got else None


def parse_name_answer(text: str | None) -> names.NameAnswer | None:
    """The name in an answer to the name question: said, spelled or both (see :mod:`.names`)."""
    return names.parse_name_answer(normalize(text, clock=False))


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


# ---------------------------------------------------------------- one turn, understood


@dataclass(frozen=True)
class Understanding:
    """Everything the NLU takes from one caller turn: the goal and the slots it fills.

    ``pick`` is a 0-based index into the options read out; ``name`` keeps how the
    name was heard (spelled letters, doubtful words) so the bot can read it back.
    """

    intent: str | None = None
    date: DateRange | None = None
    time: TimePref | None = None
    any_time: bool = False
    in_minutes: int | None = None
    doctor: str | None = None
    doctor_guess: str | None = None
    visit: str | None = None
    pick: int | None = None
    name: names.NameAnswer | None = None
    phone: str | None = None
    email: str | None = None
    code: str | None = None
    correction: bool = False

    @property
    def criteria(self) -> bool:
        """Whether the turn says something about when, with whom or what kind of visit."""
        return bool(self.date or self.time or self.any_time or self.in_minutes is not None
                    or self.doctor or self.doctor_guess or self.visit)

    def slots(self) -> dict[str, Any]:
        """The filled slots as plain values (the shape of tests/data/utterances.yaml).

        A part of day implied by a clock time ("3 pm": afternoon) is left out.
        """
        out: dict[str, Any] = {}
        if self.date:
            d = self.date
            out["date"] = d.first.isoformat() if d.single else f"{d.first}..{d.last}"
        if self.time:
            tp = self.time
            implied = _part_of(tp.at) if tp.at else (
                "morning" if tp.before and tp.before <= time(12, 0) and not tp.after else None)
            if tp.part and tp.part != implied:
                out["part"] = tp.part
            for key in ("at", "after", "before"):
                value = getattr(tp, key)
                if value:
                    out[key] = value.strftime("%H:%M")
            if tp.earliest:
                out["earliest"] = True
        if self.any_time:
            out["any_time"] = True
        if self.in_minutes is not None:
            out["in_minutes"] = self.in_minutes
        for key in ("doctor", "doctor_guess", "visit", "phone", "email", "code"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.pick is not None:
            out["pick"] = self.pick + 1
        if self.name:
            out["name"] = self.name.name
            if self.name.spelled:
                out["spelled"] = self.name.spelled
        if self.correction:
            out["correction"] = True
        return out


def _part_of(at: time) -> str:
    return "morning" if at.hour < 12 else ("afternoon" if at.hour < 17 else "evening")


_BOOKING_QUESTIONS = ("date", "part", "doctor", "offer", "visit_type")
_ANY_TIME = ("any time", "anytime", "all day", "any part of the day", "any time of day")
_ANY_TIME_ANSWERS = ("does not matter", "do not mind", "either", "whatever", "whenever",
                     "do not care", "no preference", "either one", "both", "flexible")
_ANY_DAY = ("whenever", "any day", "does not matter", "do not mind", "do not care",
            "no preference", "whatever works", "whatever you have", "any time is fine",
            "flexible")
_GENERIC_ANY = ("does not matter", "do not care", "no preference", "either", "whichever",
                "any of them", "any one", "do not have a preference", "no particular preference")
# goals that still stand when the turn also fills the slot asked for
_OVER_ANSWERS = ("emergency", "operator", "cancel", "reschedule", "message", "urgent")


def understand(text: str | None, *, today: date, doctors: Sequence[Doctor] = (),
               visit_types: Sequence[VisitType] = (), expecting: str | None = None,
               offered: Sequence[Option] = ()) -> Understanding:
    """One caller turn read in the light of the question just asked (``expecting``).

    ``expecting`` is what the bot asked: None (an opening or free turn), name,
    phone, code, yes_no, date, part, doctor, offer or visit_type. At a
    slot-filling question (name, phone, code) the answer is read as that slot
    first; at a choice (offer, part, doctor, visit type) positions pick from the
    list read out. Greetings said before a request are dropped before reading it.
    """
    t = normalize(text)
    if not t:
        return Understanding()
    goal = intent(t)
    if goal == "emergency":
        return Understanding("emergency")
    core, greeted = strip_opener(t)
    from esl_app.providers.agent import message  # the guard's own phrase lists

    if expecting not in ("name", "phone", "code") and message.wants_message(core):
        return Understanding("message")
    if message.is_urgent(core):
        return Understanding("urgent")
    if goal == "smalltalk" or (goal == "greeting" and not core):
        return Understanding(goal)
    if expecting == "yes_no" and goal in ("goodbye", "wait", "book", "greeting"):
        # "yes, that's all" confirms; "no, that's all" stays a goodbye
        yn = yes_no(core)
        if yn is True or (yn is False and goal != "goodbye"):
            goal = "yes" if yn else "no"
    correction = is_correction(core)
    if expecting == "name":
        spoken, _ = strip_opener(normalize(text, clock=False))
        got = _answer_as_name(spoken, goal, correction, today, doctors)
        if got is not None:
            return got
        if not correction and goal not in ("operator", "cancel", "reschedule", "repeat",
                                           "goodbye", "wait", "message"):
            # a misheard name ("w at eight", "monday good") is not a new day or time:
            # only an explicit change ("actually, make it Monday") reopens the search
            return Understanding()
    elif expecting == "phone":
        spoken, _ = strip_opener(normalize(text, clock=False))
        email = parse_email(spoken)
        phone = None if email else parse_phone(core)
        if email or phone:
            keep = goal if goal in _OVER_ANSWERS else None
            return Understanding(keep, email=email, phone=phone)
    elif expecting == "code":
        spoken, _ = strip_opener(normalize(text, clock=False))
        code = parse_code(spoken)
        if code:
            return Understanding(goal if goal in _OVER_ANSWERS else None, code=code)
    if expecting == "doctor" and _has(core, "which doctors", "what doctors", "who are the doctors",
                                      "which doctors are there", "who do you have"):
        return Understanding("repeat")
    if goal in ("repeat", "goodbye"):
        return Understanding(goal)
    if expecting == "yes_no" and (phone := parse_phone(core)):
        return Understanding(goal if goal in _OVER_ANSWERS else None, phone=phone)
    u = _criteria(core, today, doctors, visit_types, expecting, offered, correction)
    if goal == "greeting":
        goal = None
    return _settle(u, goal, core, expecting, doctors, today)


def _answer_as_name(spoken: str, goal: str | None, correction: bool, today: date,
                    doctors: Sequence[Doctor]) -> Understanding | None:
    """The name question: a name first, unless the caller changes the booking instead.

    ``spoken`` is normalised without clock forms, so spelled "a m" stays two letters.
    """
    if goal in ("repeat", "wait", "operator", "cancel", "reschedule", "goodbye"):
        return Understanding(goal)
    got = names.parse_name_answer(spoken)
    core = normalize(spoken)
    toks = core.split()
    changes = correction and (_find_date(toks, today) or _find_time(toks, set())
                              or isinstance(match_doctor(core, doctors), Doctor))
    if got and not changes:
        return Understanding(None, name=got)
    return None


def _criteria(core: str, today: date, doctors: Sequence[Doctor],
              visit_types: Sequence[VisitType], expecting: str | None,
              offered: Sequence[Option], correction: bool) -> Understanding:
    """Day, time, doctor, visit type and choice from ``core`` (the turn without its opener)."""
    toks = core.split()
    ruled_out: list[DateRange] = []
    found = _find_date(toks, today, ordinals=expecting == "date", ruled_out=ruled_out)
    rng, skip = found if found else (None, set())
    pref = _find_time(toks, skip)
    relative = None if rng else parse_relative(core)
    any_time = _has(core, *_ANY_TIME) and not (pref and (pref.part or pref.at or pref.after
                                                         or pref.before))
    if expecting == "part" and not pref and _has(core, *_ANY_TIME_ANSWERS):
        any_time = True
    if expecting == "date" and not rng and _has(core, *_ANY_DAY) and not any_time:
        pref = TimePref(part=pref.part if pref else None, earliest=True)
    if expecting == "part" and not (pref and pref.part) and not any_time:
        pos = position(core, len(PARTS) - 1)
        if pos is not None:
            pref = TimePref(part=PARTS[pos])
    doctor: str | None = None
    guess: str | None = None
    doc = match_doctor(core, doctors)
    if isinstance(doc, Doctor):
        doctor = doc.id
    elif doc == ANY_DOCTOR:
        generic = _has(core, *_GENERIC_ANY) and not _has(
            core, *(p for p in _ANY_DOCTOR if p not in _GENERIC_ANY))
        if not generic or expecting in (None, "doctor"):
            doctor = ANY_DOCTOR
    elif doctors:
        g = guess_doctor(core, doctors, bare=expecting == "doctor")
        guess = g.id if g else None
    if expecting == "doctor" and doctor is None and guess is None and doctors:
        pos = position(core, len(doctors))
        if pos is not None:
            doctor = doctors[pos].id
    vt = match_visit_type(core, visit_types, answer=expecting == "visit_type") \
        if visit_types else None
    if ruled_out and rng:
        correction = True
    pick = None
    if expecting == "offer" and offered and not (correction and not _has(
            core, "first", "second", "third", "last")):
        pick = choose(core, offered, doctors)
    u = Understanding(
        None, date=rng, time=pref, any_time=any_time,
        in_minutes=int(relative.total_seconds() // 60) if relative is not None else None,
        doctor=doctor, doctor_guess=guess, visit=vt.id if vt else None, pick=pick)
    if pick is not None:
        return Understanding(None, pick=pick)
    if correction and u.criteria:
        u = replace(u, correction=True)
    return u


def _settle(u: Understanding, goal: str | None, core: str, expecting: str | None,
            doctors: Sequence[Doctor], today: date) -> Understanding:
    """The turn's goal given what it filled.

    An answer is not a "yes", an opener with a day and time is a booking, and a
    question about hours keeps only the day.
    """
    filled = u.criteria or u.pick is not None
    if _has(core, *_RETURNING) and goal in (None, "book", "greeting"):
        return replace(u, intent=None)
    if goal in ("cancel", "reschedule") and u.doctor and u.doctor != ANY_DOCTOR and \
            not isinstance(match_doctor(core, doctors, specialties=False), Doctor):
        u = replace(u, doctor=None)  # "my kid is sick" names no doctor to cancel with
    if goal in ("hours", "address"):
        return Understanding(goal, date=u.date if goal == "hours" else None)
    if expecting == "offer" and _has(core, "none of those", "neither of those", "none of them",
                                     "neither of them", "neither one", "neither"):
        return Understanding("no")
    if goal == "reschedule" and u.date and " to " in f" {core} ":
        # "move thursday's appointment to next week": the day it moves to
        target = _find_date(core.rsplit(" to ", 1)[1].split(), today)
        if target:
            u = replace(u, date=target[0])
    if goal in ("later", "earlier"):
        bounded = u.date or (u.time and (u.time.at or u.time.after or u.time.before))
        if expecting == "offer" and not bounded:
            return Understanding(goal)
        if u.date or u.time:
            goal = None
    if goal == "earliest" and (u.date or (u.time and (u.time.part or u.time.at))):
        goal = None
    if goal == "book" and expecting in _BOOKING_QUESTIONS:
        goal = None
    if expecting == "yes_no" and not filled and goal in (None, "book", "goodbye", "wait"):
        yn = yes_no(core)
        if yn is not None:
            goal = "yes" if yn else "no"
    if goal in ("yes", "no", "wait") and filled:
        goal = None
    if u.pick is not None and goal not in _OVER_ANSWERS:
        goal = None
    if goal in (None, "earliest") and expecting is None and filled:
        goal = "book"
    return replace(u, intent=goal)
