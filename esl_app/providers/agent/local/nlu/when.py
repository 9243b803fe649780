"""Dates and times as callers say them ("next Tuesday", "half past two", "after lunch")."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from esl_app.providers.agent.local.nlu.words import _cardinal, _ordinal, has_any, tokens

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


def is_weekday(word: str) -> bool:
    """``word`` names a day of the week ("monday", "tues", "fridays")."""
    return _weekday_index(word) is not None


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
    found = find_date(tokens(text), today, ordinals=ordinals)
    return found[0] if found else None


_DATE_CORRECTIONS = (("actually",), ("make", "it"), ("no", "wait"), ("or", "rather"),
                     ("rather",), ("i", "mean"), ("i", "meant"), ("instead",),
                     ("scratch", "that"), ("change", "it", "to"), ("change", "that", "to"),
                     ("correction",))


def _correction_at(toks: Sequence[str], i: int) -> bool:
    """A correction of what the caller just said starts at token ``i``."""
    return any(tuple(toks[i:i + len(p)]) == p for p in _DATE_CORRECTIONS)


_NEGATORS = ("not", "instead of", "rather than", "other than", "except", "but not")


def find_date(toks: list[str], today: date, *, ordinals: bool = False,
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
    return find_time(toks, skip or set())


def find_time(toks: list[str], skip: set[int]) -> TimePref | None:
    """The time preference in ``toks`` (words at indexes in ``skip`` are a date's)."""
    t = " ".join(toks)
    part = after = before = at = None
    earliest = has_any(t, "earliest", "soonest", "as soon as possible", "asap", "first available",
                    "first thing", "as early as possible", "next available", "see me first",
                    "see me soonest", "first opening", "next opening")
    spoken_am = has_any(re.sub(r"\bi am\b", "", t), "am")  # "i am free" is not "a.m."
    if spoken_am or has_any(t, "morning", "mornings", "before lunch", "first thing",
                         "earlier in the day", "early in the day"):
        part = "morning"
    if has_any(t, "afternoon", "afternoons", "after lunch", "lunchtime", "lunch time",
            "later in the day", "late in the day", "as late as"):
        part = "afternoon"
    if has_any(t, "evening", "evenings", "tonight", "after work", "after five", "after 5"):
        part = "evening"
    # "not in the morning": the other half of the day
    if part in ("morning", "afternoon") and re.search(
            rf"\bnot (?:in )?(?:the )?{part}s?\b", t):
        part = "afternoon" if part == "morning" else "morning"
    if has_any(t, "late afternoon"):
        after = time(15, 0)
    if has_any(t, "early afternoon"):
        before = time(15, 0)
    if has_any(t, "late morning"):
        after = time(10, 0)
    if has_any(t, "early morning"):
        before = time(10, 0)
    if has_any(t, "noon", "midday") and not has_any(t, "afternoon", "before noon", "after noon",
                                              "until noon", "till noon", "and noon",
                                              "to noon"):
        at = time(12, 0)
        part = part or "afternoon"
    if has_any(t, "before noon"):
        part = "morning"
    if has_any(t, "after noon"):
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
    if has_any(t, "right now", "right away", "immediately", "straight away", "come in now",
            "in now", "see someone now", "see a doctor now", "as we speak"):
        return timedelta(0)
    if has_any(t, "within the hour", "within an hour", "in an hour and a half",
            "in half an hour", "in a half hour"):
        if has_any(t, "in half an hour", "in a half hour"):
            return timedelta(minutes=30)
        if has_any(t, "in an hour and a half"):
            return timedelta(minutes=90)
        return timedelta(hours=1)
    if has_any(t, "in a couple of hours", "in a couple hours"):
        return timedelta(hours=2)
    if has_any(t, "in a few hours"):
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


