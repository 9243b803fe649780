"""One whole turn understood at once: intent, criteria, corrections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, time
from typing import Any

from esl_app.config.tenants import Doctor, VisitType
from esl_app.providers.agent.local import names
from esl_app.providers.agent.local.nlu.choices import Option, choose
from esl_app.providers.agent.local.nlu.contact import (
    parse_code,
    parse_email,
    parse_phone,
)
from esl_app.providers.agent.local.nlu.doctors import (
    _ANY_DOCTOR,
    guess_doctor,
    match_doctor,
    match_visit_type,
)
from esl_app.providers.agent.local.nlu.intents import (
    _RETURNING,
    intent,
    is_correction,
    strip_opener,
    yes_no,
)
from esl_app.providers.agent.local.nlu.when import (
    PARTS,
    DateRange,
    TimePref,
    find_date,
    find_time,
    parse_relative,
)
from esl_app.providers.agent.local.nlu.words import ANY_DOCTOR, has_any, normalize, position

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
        # "J O N, N O T T": the comma between two spelled words is kept as their break
        spoken, _ = strip_opener(normalize(names.mark_spelling_breaks(text or ""), clock=False))
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
    if expecting == "doctor" and has_any(core, "which doctors", "what doctors",
                                         "who are the doctors", "which doctors are there",
                                         "who do you have"):
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
    changes = correction and (find_date(toks, today) or find_time(toks, set())
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
    found = find_date(toks, today, ordinals=expecting == "date", ruled_out=ruled_out)
    rng, skip = found if found else (None, set())
    pref = find_time(toks, skip)
    relative = None if rng else parse_relative(core)
    any_time = has_any(core, *_ANY_TIME) and not (pref and (pref.part or pref.at or pref.after
                                                         or pref.before))
    if expecting == "part" and not pref and has_any(core, *_ANY_TIME_ANSWERS):
        any_time = True
    if expecting == "date" and not rng and has_any(core, *_ANY_DAY) and not any_time:
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
        generic = has_any(core, *_GENERIC_ANY) and not has_any(
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
    if expecting == "offer" and offered and not (correction and not has_any(
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
    if has_any(core, *_RETURNING) and goal in (None, "book", "greeting"):
        return replace(u, intent=None)
    if goal in ("cancel", "reschedule") and u.doctor and u.doctor != ANY_DOCTOR and \
            not isinstance(match_doctor(core, doctors, specialties=False), Doctor):
        u = replace(u, doctor=None)  # "my kid is sick" names no doctor to cancel with
    if goal in ("hours", "address"):
        return Understanding(goal, date=u.date if goal == "hours" else None)
    if expecting == "offer" and has_any(core, "none of those", "neither of those", "none of them",
                                     "neither of them", "neither one", "neither"):
        return Understanding("no")
    if goal == "reschedule" and u.date and " to " in f" {core} ":
        # "move thursday's appointment to next week": the day it moves to
        target = find_date(core.rsplit(" to ", 1)[1].split(), today)
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
