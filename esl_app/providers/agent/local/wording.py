"""How the local agent words things: hours, times, numbers, doctors, visit types.

Also the limits its stages share (misses before the front desk is offered, ...).
"""


from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, time, timedelta
from typing import Any

from esl_app.config.tenants import WEEKDAYS, Tenant, VisitType
from esl_app.providers.agent.local import nlu

MAX_MISSES = 3
# stages whose answer is a name: the text keeps spelled letters ("a m" is not "am")
_NAME_STAGES = ("name", "verify_name", "lookup_name", "name_spell")
MAX_DECLINED_OFFERS = 2  # "no" to the front desk this often: hours, a message, goodbye
HANDOFF_UNCLEAR = 2  # answers that are neither yes nor no to "connect you with the front desk?"
_YES_NO_HINTS = ("yes", "no")
_DIGIT_HINTS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine")
_DAY_NAMES = {d: n for d, n in zip(WEEKDAYS, ("Monday", "Tuesday", "Wednesday", "Thursday",
                                               "Friday", "Saturday", "Sunday"), strict=True)}
_DTMF_YES_NO = {"1": "yes", "2": "no"}
_PART_ENDS = {"morning": time(12, 0), "afternoon": time(17, 0)}


def format_hours(tenant: Tenant) -> str:
    """Opening hours as a sentence: "Monday to Friday from 8 AM to 5 PM, and Saturday …"."""
    groups: list[tuple[list[str], tuple]] = []
    for day in WEEKDAYS:
        ranges = tenant.hours.get(day)
        if not ranges:
            continue
        if groups and groups[-1][1] == ranges and \
                WEEKDAYS.index(groups[-1][0][-1]) == WEEKDAYS.index(day) - 1:
            groups[-1][0].append(day)
        else:
            groups.append(([day], ranges))
    parts = []
    for days, ranges in groups:
        label = _DAY_NAMES[days[0]] if len(days) == 1 else \
            f"{_DAY_NAMES[days[0]]} to {_DAY_NAMES[days[-1]]}"
        spans = " and ".join(f"from {_clock(a)} to {_clock(b)}" for a, b in ranges)
        parts.append(f"{label} {spans}")
    if not parts:
        return "I don't have our opening hours at hand."
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + ", and " + parts[-1]
    return f"We're open {text}."


def _clock(t: time) -> str:
    if t.hour == 12 and t.minute == 0:
        return "noon"
    hour = t.hour % 12 or 12
    clock = f"{hour}" if t.minute == 0 else f"{hour}:{t.minute:02d}"
    return clock + (" AM" if t.hour < 12 else " PM")


def _short_doctor(name: str) -> str:
    """'Dr. Sarah Smith' -> 'Dr. Smith': shorter to say, still unambiguous in one clinic."""
    words = name.replace("Dr.", "").replace("Dr ", "").split()
    if not words:
        return name
    return f"Dr. {words[-1]}"


def _digits_spoken(digits: str) -> str:
    return " ".join(digits)


def _article(phrase: str) -> str:
    """The article as the phrase is spoken: "an 18-minute", "a follow-up", "an annual"."""
    p = phrase.strip().lower()
    vowel = p[:1] in "aeio" or p[:1] == "8" or re.match(r"(11|18)\b|(11|18)-", p) is not None
    return "an" if vowel else "a"


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _notice_words(minutes: int) -> str:
    """The minimum notice as a caller hears it: "2 hours'", "30 minutes'", "1 day's"."""
    if minutes % 1440 == 0:
        n, unit = minutes // 1440, "day"
    elif minutes % 60 == 0:
        n, unit = minutes // 60, "hour"
    else:
        n, unit = minutes, "minute"
    return f"{n} {unit}'s" if n == 1 else f"{n} {unit}s'"


def _spoken_day(day: date) -> str:
    """A day as read aloud: "Friday, December 25"."""
    return f"{day:%A}, {day:%B} {day.day}"


def _same_number(said: str, known: str | None) -> bool:
    """Whether a number said is the one already kept ("555 123 4567" is "+15551234567")."""
    a, b = re.sub(r"\D", "", said), re.sub(r"\D", "", known or "")
    return bool(a and b) and (a.endswith(b) or b.endswith(a)) and min(len(a), len(b)) >= 7


# at a confirmation naming a number: the caller wants to be reached on another one
_OTHER_NUMBER = ("other number", "another number", "different number", "new number",
                 "not my number", "wrong number", "other phone", "another phone",
                 "different phone", "my cell", "my mobile", "call me on", "call me at",
                 "reach me on", "reach me at")
_THIS_NUMBER = re.compile(r"\b(?:(?:that|this|it) is (?:my|a) (?:cell|mobile)(?: phone)?"
                          r"|(?:this|that|the same) (?:number|phone))\b")


def _wants_other_number(t: str) -> bool:
    """Whether the caller wants another number ("call me on my cell"; not "that is my cell")."""
    if nlu.has_any(t, "not this number", "not that number", "number is wrong",
                "not the right number"):
        return True
    return nlu.has_any(_THIS_NUMBER.sub(" ", t), *_OTHER_NUMBER)


def _visit_question(types: tuple[VisitType, ...]) -> str:
    """Ask for the visit type with the clinic's own names ("a new patient visit or …")."""
    items = [f"{_article(v.name)} {v.name}" for v in types]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" or {items[-1]}"
    return f"Is this {listed}?"


def _noted(state: Mapping[str, Any], before: Mapping[str, Any], today: date) -> str:
    """A short acknowledgement of the day or time just said ("Got it, Monday morning.").

    For an answer that was not to the question but is kept all the same (a day
    said to "Did you mean Dr. Okafor?"): the caller did nothing wrong, so no
    "Sorry", and hearing the day back tells them it was not lost.
    """
    words: list[str] = []
    first, last = state.get("date_first"), state.get("date_last")
    if first and first == last and (first, last) != (before.get("date_first"),
                                                     before.get("date_last")):
        day = date.fromisoformat(first)
        if day == today:
            words.append("today")
        elif day == today + timedelta(days=1):
            words.append("tomorrow")
        elif today < day < today + timedelta(days=7):
            words.append(_DAY_NAMES[WEEKDAYS[day.weekday()]])
        else:
            words.append(_spoken_day(day))
    part, at = state.get("part"), state.get("at")
    if at and at != before.get("at"):
        words.append(f"at {_clock(time.fromisoformat(at))}")
    elif part and part != before.get("part"):
        if words == ["today"]:
            words = [f"this {part}"]
        elif words and words[0] in _DAY_NAMES.values() or words == ["tomorrow"]:
            words.append(part)  # "Monday morning"
        else:
            words.append(f"in the {part}" if words else f"the {part}")
    elif state.get("earliest") and not before.get("earliest"):
        words.append("the earliest time")
    return f"Got it, {' '.join(words)}." if words else "Got it."
