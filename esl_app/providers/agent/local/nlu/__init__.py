"""Understanding callers' words as a speech recogniser hands them over.

Transcripts arrive lower-cased, mostly without punctuation and with numbers
either as digits or as words, so every parser here works on word tokens and
reads numbers both ways. All functions are pure: the reference date or time
is an argument (never the real clock), which keeps the dialogue testable and
replayable.

The package is the local agent's understanding, one module per kind of thing heard:
words (tokens, numbers, positions), intents (goals, yes/no), doctors (doctors and visit
types), when (dates and times), choices (picking an offered slot), contact (names,
phones, e-mail, codes) and turn (one whole turn understood). Import from here.
"""

from __future__ import annotations

from esl_app.providers.agent.local.nlu.choices import Option, choose
from esl_app.providers.agent.local.nlu.contact import (
    parse_code,
    parse_email,
    parse_name,
    parse_name_answer,
    parse_phone,
)
from esl_app.providers.agent.local.nlu.doctors import (
    guess_doctor,
    match_doctor,
    match_visit_type,
    visit_kind,
)
from esl_app.providers.agent.local.nlu.intents import (
    asks_for_person,
    intent,
    is_correction,
    strip_opener,
    yes_no,
)
from esl_app.providers.agent.local.nlu.turn import Understanding, understand
from esl_app.providers.agent.local.nlu.when import (
    DateRange,
    TimePref,
    find_date,
    find_time,
    is_weekday,
    parse_date,
    parse_relative,
    parse_time,
)
from esl_app.providers.agent.local.nlu.words import ANY_DOCTOR, has_any, normalize, position, tokens

__all__ = [
    "ANY_DOCTOR",
    "DateRange",
    "Option",
    "TimePref",
    "Understanding",
    "asks_for_person",
    "choose",
    "find_date",
    "find_time",
    "guess_doctor",
    "is_weekday",
    "has_any",
    "intent",
    "is_correction",
    "match_doctor",
    "match_visit_type",
    "normalize",
    "parse_code",
    "parse_date",
    "parse_email",
    "parse_name",
    "parse_name_answer",
    "parse_phone",
    "parse_relative",
    "parse_time",
    "position",
    "strip_opener",
    "tokens",
    "understand",
    "visit_kind",
    "yes_no",
]
