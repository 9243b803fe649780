"""What the caller wants this turn (book, cancel, operator, ...), and yes or no."""

from __future__ import annotations

import re

from esl_app.providers.agent.local.nlu.words import has_any, normalize

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
    if (has_any(t, "zero") or t == "agent") and len(t.split()) <= 2:
        return "operator"
    smalltalk = bool(_SMALLTALK.search(t))
    found = [name for name, phrases in _INTENT_PATTERNS if has_any(t, *phrases)]
    if re.search(r"\bbring (?:my|our|him|her|them)(?: [a-z]+)? in\b", t):
        found.append("book")
    if "operator" in found and (smalltalk or not _operator_really(t)):
        found.remove("operator")
    if "cancel" in found and has_any(t, "rebook", "book another", "new time", "another time",
                                  "different day", "different time"):
        return "reschedule"
    if not found and re.search(r"\b(?:booked|my appointment|an appointment)\b.*\b(?:another|a "
                               r"different|a new) (?:day|time|date)\b", t):
        return "reschedule"
    if re.search(r"\b(?:move|moving|shift|switch)\b.*\bappointment\b"
                 r"|\bappointment\b.*\b(?:changed|moved|rescheduled|pushed back|shifted)\b", t) \
            and "cancel" not in found:
        return "reschedule"
    if "reschedule" in found and not has_any(t, "appointment", "booking", "visit", "reschedule",
                                          "re schedule", "postpone", "rebook", "rearrange"):
        found.remove("reschedule")
    if has_any(t, "change the time", "change the day", "change the date") and \
            has_any(t, "appointment", "booking"):
        return "reschedule"
    if "goodbye" in found and len(found) > 1 and has_any(t, "no more") and not has_any(t, "bye"):
        found.remove("goodbye")
    for name in ("emergency", "operator", "reschedule", "cancel"):
        if name in found:
            return name
    if "book" in found and not has_any(t, "hours", "address", "where are you", "where do i go",
                                    "where is", "how do i get") and \
            not (smalltalk and not has_any(t, "appointment", "book", "schedule")):
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
        if has_any(t, *phrases):
            return name
    if has_any(t, *_REPEAT) or t in _REPEAT_ALONE:
        return "repeat"
    if has_any(t, *_WAIT) or t == "wait":
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
    if has_any(t, *strong):
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
    if has_any(t, "not sure", "i do not know", "maybe", "i guess not sure"):
        return None
    words = [w for w in t.split() if w not in ("uh", "um", "oh", "well", "hmm")] or t.split()
    lead = words[0] in ("nope", "nah", "negative") or (
        words[0] == "no" and (len(words) == 1 or words[1] in _NO_GOES_ON))
    if lead or has_any(t, *_NO) or (words[-1] == "no" and len(words) <= 3):
        return False
    if has_any(t, *_YES) or t == "please":
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
    return has_any(t, *_CORRECTION) or bool(re.match(r"no\b", t) and len(t.split()) > 1
                                          and not has_any(t, *_NOT_CORRECTION))


