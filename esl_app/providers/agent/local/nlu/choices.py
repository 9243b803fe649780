"""Which of the offered slots the caller picked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time

from esl_app.config.tenants import Doctor
from esl_app.providers.agent.local.nlu.doctors import match_doctor
from esl_app.providers.agent.local.nlu.intents import yes_no
from esl_app.providers.agent.local.nlu.when import (
    _clinic_hour,
    _find_clock,
    _weekday_index,
    find_date,
)
from esl_app.providers.agent.local.nlu.words import _cardinal, _position, has_any, tokens

# ---------------------------------------------------------------- choosing offered slots


@dataclass(frozen=True)
class Option:
    """One slot as offered to the caller (local time)."""

    start: datetime
    doctor: str
    doctor_name: str = ""


# ---------------------------------------------------------------- choosing, continued
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
        found = find_date(toks, ref)
        if found and found[0].single:
            keep = {i for i, o in enumerate(options) if o.start.date() == found[0].single}
            if keep and keep & candidates:
                candidates &= keep
                narrowed = True
    # clock time
    noon = ("at", time(12, 0)) if has_any(t, "noon", "midday") else None  # "noon works for me"
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
    if has_any(t, "morning") and not has_any(t, "afternoon"):
        keep = {i for i, o in enumerate(options) if o.start.hour < 12}
        if keep and keep & candidates:
            candidates &= keep
            narrowed = True
    elif has_any(t, "afternoon"):
        keep = {i for i, o in enumerate(options) if 12 <= o.start.hour < 17}
        if keep and keep & candidates:
            candidates &= keep
            narrowed = True
    if narrowed and len(candidates) == 1:
        return next(iter(candidates))
    if len(options) == 1 and (has_any(t, "that one", "that", "it", "this one")
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


