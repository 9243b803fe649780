"""Booking: what the caller wants, the clinic's rules, the search, and the booking stages."""


from __future__ import annotations

import logging
import re
from datetime import date, datetime, time, timedelta
from typing import Any

from esl_app.config.tenants import WEEKDAYS, Doctor
from esl_app.providers.agent.base import AgentReply, CallContext
from esl_app.providers.agent.local import nlu, turns
from esl_app.providers.agent.local.names import NameAnswer, corrected_name, spell
from esl_app.providers.agent.local.wording import (
    _PART_ENDS,
    _YES_NO_HINTS,
    _article,
    _noted,
    _notice_words,
    _plural,
    _same_number,
    _spoken_day,
    _wants_other_number,
)
from esl_app.providers.agent.state import REFUSED_TIME_KEYS, WHEN_KEYS
from esl_app.providers.markup import say_characters
from esl_app.scheduling.service import PARTS_OF_DAY

log = logging.getLogger(__name__)


class BookingStages:
    """The LocalAgent stages that find a time and book it.

    A mixin of :class:`~esl_app.providers.agent.local.dialogue.LocalAgent`: it uses the
    core's helpers (``_say``, ``_ask``, ``_track``) and keeps everything in ``call.state``.
    """

    # ------------------------------------------------------------ understanding criteria

    def _absorb(self, call: CallContext, t: str, *, allow_doctor: bool = True) -> bool:
        """Take doctor, day and time preferences from ``t`` into the state; True if any.

        Only what the caller says now changes: a constraint given earlier (the
        afternoon, a doctor, "the earliest") stays until it is replaced, so "as
        soon as possible" after "an appointment in the afternoon" is the earliest
        afternoon, not the earliest slot of the day.
        """
        st = call.state
        today = self._now(call).date()
        got = False
        if allow_doctor:
            doc = nlu.match_doctor(t, call.tenant.doctors)
            if isinstance(doc, Doctor):
                st["doctor"] = doc.id
                st.pop("doctor_guess", None)
                got = True
            elif doc == nlu.ANY_DOCTOR and st.get("stage") in ("doctor", "start", "offer",
                                                                "date", "change"):
                st["doctor"] = nlu.ANY_DOCTOR
                got = True
            elif doc is None and (guess := nlu.guess_doctor(
                    t, call.tenant.doctors, bare=st.get("stage") == "doctor")):
                st["doctor_guess"] = guess.id  # asked about before it is used
                got = True
        toks = nlu.tokens(t)
        found = nlu.find_date(toks, today, ordinals=st.get("stage") == "date")
        skip: set[int] = set()
        if found:
            rng, skip = found
            st["date_first"] = rng.first.isoformat()
            st["date_last"] = rng.last.isoformat()
            st["date_by_weekday"] = any(nlu.is_weekday(toks[i]) for i in skip)
            st["earliest"] = False
            st.pop("after", None)
            got = True
        pref = nlu.find_time(toks, skip)
        if pref:
            if pref.part or pref.at or pref.after or pref.before:
                # a new time of day replaces the old one as a whole ("at 10" after
                # "the afternoon"); "the earliest" alone leaves it as it was
                st.pop("after", None)
                st["part"] = pref.part
                st["at"] = pref.at.strftime("%H:%M") if pref.at else None
                st["after_time"] = pref.after.strftime("%H:%M") if pref.after else None
                st["before_time"] = pref.before.strftime("%H:%M") if pref.before else None
            elif found:
                st.pop("after", None)
            if pref.earliest:
                st["earliest"] = True
                st.pop("after", None)
                if not found:
                    st["date_first"] = st["date_last"] = None
            got = True
        elif found:
            # a new day keeps the part of day asked before, but not a clock time
            st["at"] = None
        if not found and (rel := nlu.parse_relative(t)) is not None:
            self._absorb_relative(call, rel)
            got = True
        if call.tenant.visit_types and st.get("intent") == "book":
            vt = nlu.match_visit_type(t, call.tenant.visit_types)
            if vt is not None:
                st["visit_type"] = vt.id
                got = True
        return got

    def _absorb_relative(self, call: CallContext, delta: timedelta) -> None:
        """Read "in an hour" as the first slot boundary at or after that moment."""
        st = call.state
        wanted = self._now(call) + delta
        step = call.tenant.slot_minutes
        minutes = wanted.hour * 60 + wanted.minute + (1 if wanted.second or
                                                      wanted.microsecond else 0)
        minutes = -(-minutes // step) * step
        day = wanted.date() + timedelta(days=minutes // 1440)
        minutes %= 1440
        st["date_first"] = st["date_last"] = day.isoformat()
        st["at"] = f"{minutes // 60:02d}:{minutes % 60:02d}"
        st["part"] = st["after_time"] = st["before_time"] = None
        st["earliest"] = False
        st.pop("after", None)

    def _start_booking(self, call: CallContext, t: str) -> AgentReply:
        st = call.state
        st["intent"] = "book"
        for key in (*WHEN_KEYS, "offered", "chosen", "visit_type"):
            st.pop(key, None)
        if len(call.tenant.visit_types) == 1:
            st["visit_type"] = call.tenant.visit_types[0].id
        if len(call.tenant.doctors) == 1:
            st["doctor"] = call.tenant.doctors[0].id
        else:
            st.pop("doctor", None)
        st["stage"] = "start"
        self._absorb(call, t)
        return self._book_next(call)

    def _book_next(self, call: CallContext, lead: str = "") -> AgentReply:
        """Ask for the next missing criterion, or search and offer times.

        "The earliest" with no doctor named means the earliest with any doctor; a
        doctor's name that was only guessed is confirmed first.
        """
        st = call.state
        if st.get("doctor_guess"):
            return self._ask(call, "doctor_check", lead)
        if call.tenant.visit_types and st.get("intent") == "book" and not st.get("visit_type"):
            return self._ask(call, "visit_type", lead)
        if not st.get("doctor") and len(call.tenant.doctors) > 1 and st.get("earliest"):
            st["doctor"] = nlu.ANY_DOCTOR
        if not st.get("doctor") and len(call.tenant.doctors) > 1:
            return self._ask(call, "doctor", lead)
        if not st.get("doctor") and call.tenant.doctors:
            st["doctor"] = call.tenant.doctors[0].id
        if not st.get("date_first") and not st.get("earliest") and not st.get("after"):
            return self._ask(call, "date", lead)
        refusal = self._policy_refusal(call)
        if refusal:
            why, instead = refusal
            st.update(instead)
            return self._search_and_offer(call, f"{lead} {why}".strip())
        # A day with no time of day: times across it are offered at once (morning, midday,
        # afternoon) rather than asking "morning or afternoon?" first: one turn fewer,
        # and a caller who wants another time says so ("anything around 10?").
        return self._search_and_offer(call, lead)

    # ------------------------------------------------------------ clinic policy

    def _policy_refusal(self, call: CallContext) -> tuple[str, dict[str, Any]] | None:
        """Why the day or time asked for breaks the clinic's rules, and what to search instead.

        Checked before searching so the caller hears the reason in one sentence
        ("the clinic is closed on …") with real alternatives, rather than a bare
        "nothing open"; the scheduling core enforces the same rules regardless.
        """
        st = call.state
        if not st.get("date_first"):
            return None
        tenant = call.tenant
        policy = tenant.policy
        tz = tenant.tz
        now = self._now(call)
        first = date.fromisoformat(st["date_first"])
        last = date.fromisoformat(st.get("date_last") or st["date_first"])
        clear: dict[str, Any] = {"date_first": None, "date_last": None, "at": None,
                                 "after_time": None, "before_time": None, "earliest": False}
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        if policy.closed_dates and all(d in policy.closed_dates for d in days):
            when = f"on {_spoken_day(first)}" if len(days) == 1 else "on those days"
            after = datetime.combine(last + timedelta(days=1), time(0), tz)
            return (f"Sorry, the clinic is closed {when}.",
                    {**clear, "after": after.isoformat()})
        upper = now + timedelta(days=policy.booking_window_days)
        if datetime.combine(first, time(0), tz) >= upper:
            why = (f"Sorry, appointments can be booked at most "
                   f"{_plural(policy.booking_window_days, 'day')} ahead.")
            # the nearest alternative is the last day of the window that has times
            day = upper.astimezone(tz).date()
            while day >= now.date() and day > upper.date() - timedelta(days=14):
                instead = {**clear, "date_first": day.isoformat(),
                           "date_last": day.isoformat(), "after": None}
                if self._search(call, **instead):
                    return why, instead
                day -= timedelta(days=1)
            return why, {**clear, "part": None, "after": None, "earliest": True}
        if policy.min_notice_minutes:
            lower = now + timedelta(minutes=policy.min_notice_minutes)
            if self._latest_asked(call, last) < lower:
                return (f"Sorry, appointments need at least "
                        f"{_notice_words(policy.min_notice_minutes)} notice.",
                        {**clear, "part": None, "after": None, "earliest": True})
        return None

    def _latest_asked(self, call: CallContext, last: date) -> datetime:
        """The latest start the caller's day and time of day allow (for the notice rule)."""
        st = call.state
        tenant = call.tenant
        tz = tenant.tz
        single = st.get("date_first") == st.get("date_last")
        if single and st.get("at"):
            return datetime.combine(last, time.fromisoformat(st["at"]), tz)
        end = datetime.combine(last + timedelta(days=1), time(0), tz)
        if single and st.get("before_time"):
            end = min(end, datetime.combine(last, time.fromisoformat(st["before_time"]), tz))
        if single and st.get("part") in _PART_ENDS:
            end = min(end, datetime.combine(last, _PART_ENDS[st["part"]], tz))
        ranges = tenant.hours.get(WEEKDAYS[last.weekday()], ())
        if ranges:
            end = min(end, datetime.combine(last, max(b for _, b in ranges), tz))
        return end - timedelta(minutes=tenant.slot_minutes)

    def _too_late_to_change(self, call: CallContext, appt: dict[str, Any]) -> bool:
        """Inside the cancellation window: only the front desk may change it."""
        hours = call.tenant.policy.cancel_window_hours
        if not hours or not appt.get("start"):
            return False
        return self._local(call, appt["start"]) - self._now(call) < timedelta(hours=hours)

    def _late_change(self, call: CallContext, lead: str = "",
                     message: str | None = None) -> AgentReply:
        """Explain the cancellation window and offer the front desk instead."""
        st = call.state
        hours = call.tenant.policy.cancel_window_hours
        why = (f"Changes within {_plural(hours, 'hour')} of the appointment need to be made "
               "with our front desk.") if hours else (message or "That change needs to be "
                                                      "made with our front desk.")
        if call.tenant.handoff:
            st["stage"] = "late_handoff"
            return self._say(call, f"{lead} {why} Would you like me to transfer you?".strip(),
                             hints=_YES_NO_HINTS)
        self._finish_task(call)
        return self._ask(call, "anything_else", f"{lead} {why}".strip())

    def _on_late_handoff(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        yn = nlu.yes_no(t)
        if yn is True:
            self._understood(call)
            return self._handoff(call, "change inside the cancellation window")
        if yn is False:
            self._understood(call)
            return self._keep_appointment(call)
        return self._miss(call, "Sorry, please say yes or no.")

    # ------------------------------------------------------------ searching

    def _search(self, call: CallContext, **overrides: Any) -> list[dict[str, Any]]:
        st = {**call.state, **overrides}
        tz = call.tenant.tz
        now = self._now(call)
        doctor = st.get("doctor")
        doctor = None if doctor in (None, nlu.ANY_DOCTOR) else doctor
        first = date.fromisoformat(st["date_first"]) if st.get("date_first") else None
        last = date.fromisoformat(st["date_last"]) if st.get("date_last") else None
        after: datetime | None = None
        if st.get("after"):
            after = datetime.fromisoformat(st["after"])
        day: date | None = None
        if first and first == last:
            day = first
        elif first:
            start = datetime.combine(first, time(0), tz)
            after = max(after, start) if after else start
        if st.get("after_time") and day:
            lower = datetime.combine(day, time.fromisoformat(st["after_time"]), tz)
            after = max(after, lower) if after else lower
        at = time.fromisoformat(st["at"]) if st.get("at") else None
        if at and day:
            # start an hour early so the times around the wished one fit in one page
            near = datetime.combine(day, at, tz) - timedelta(hours=1)
            after = max(after, near) if after else near
        spread = bool(day and not (at or st.get("part") or st.get("after_time")
                                   or st.get("before_time") or st.get("earliest")))
        limit = 12 if (at or st.get("before_time")) else 40 if spread else 3
        result = self.tools.search_slots(call.tenant, doctor=doctor, date=day,
                                         part_of_day=st.get("part"), after=after,
                                         limit=limit, now=now, **self._visit_kw(call))
        if not result.get("ok"):
            log.warning("slot search failed: %s", result.get("error"))
            return []
        found = list(result["slots"])
        if spread and day and len(found) >= limit:
            # many doctors: the first page ends before the afternoon; look there too
            for bound in (time(12), time(15)):
                lower = datetime.combine(day, bound, tz)
                more = self.tools.search_slots(
                    call.tenant, doctor=doctor, date=day, part_of_day=None,
                    after=max(after, lower) if after else lower, limit=1, now=now,
                    **self._visit_kw(call))
                seen = {f["slot_id"] for f in found}
                found += [s for s in more.get("slots", []) if s["slot_id"] not in seen]
            found.sort(key=lambda s: s["start"])
        slots = [{k: s[k] for k in ("slot_id", "doctor", "doctor_name", "start")}
                 for s in found]
        if st.get("before_time"):
            bound = time.fromisoformat(st["before_time"])
            kept = [s for s in slots if self._local(call, s["start"]).time() < bound]
            slots = kept or slots
        if at:
            def distance(s: dict[str, Any]) -> float:
                local = self._local(call, s["start"])
                wanted = datetime.combine(local.date(), at, tz)
                return abs((local - wanted).total_seconds())

            exact = [s for s in slots if distance(s) == 0]
            if exact:
                return exact[:1]
            slots = sorted(sorted(slots, key=distance)[:3], key=lambda s: s["start"])
        if spread and len(slots) > 3:
            slots = self._spread(call, slots)
        return slots[:3]

    def _spread(self, call: CallContext, slots: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Three times across a day, so one offer covers the morning and the afternoon.

        The first, the first from noon, the first from 3 PM (or the last).
        """
        hours = [self._local(call, s["start"]).hour for s in slots]
        picked = [0]
        for bound in (12, 15):
            nxt = next((i for i, h in enumerate(hours) if h >= bound and i > picked[-1]), None)
            if nxt is not None:
                picked.append(nxt)
        if len(picked) < 3:
            for i in (len(slots) - 1, len(slots) // 2, 1):
                if i not in picked and len(picked) < 3:
                    picked.append(i)
        return [slots[i] for i in sorted(picked)]

    def _visit_kw(self, call: CallContext) -> dict[str, Any]:
        """``visit_type=`` for the tools, only when one applies (older tool sets lack it)."""
        vt = call.state.get("visit_type")
        return {"visit_type": vt} if vt and call.tenant.visit_type(vt) else {}

    def _part_over(self, call: CallContext) -> bool | None:
        """Whether the part of the day asked for is over; None unless that day is today."""
        st = call.state
        band = PARTS_OF_DAY.get(st.get("part") or "")
        if band is None or st.get("at") or not st.get("date_first") \
                or st.get("date_first") != st.get("date_last"):
            return None
        now = self._now(call)
        if st["date_first"] != now.date().isoformat():
            return None
        return now.time() >= band[1]

    def _asked_for_today(self, call: CallContext) -> bool:
        """Whether the caller's date is the single day that is today."""
        st = call.state
        return bool(st.get("date_first")) and st.get("date_first") == st.get("date_last") \
            == self._now(call).date().isoformat()

    def _search_and_offer(self, call: CallContext, lead: str = "") -> AgentReply:
        """Search with the caller's criteria, relaxing them step by step when nothing fits."""
        st = call.state
        slots = self._search(call)
        note = ""
        if slots and st.get("date_last") and st.get("date_first") != st.get("date_last"):
            last = date.fromisoformat(st["date_last"])
            if self._local(call, slots[0]["start"]).date() > last:
                note = "I have nothing open in that week."
        over = self._part_over(call) if not slots else None
        if over is not None and (over or st.get("date_by_weekday")):
            # the one day asked for is today, with nothing left in that part of it:
            # "Monday" said on a Monday means the next Monday then, "today" the next
            # such part of a day once this one is over
            day = date.fromisoformat(st["date_first"])
            if st.get("date_by_weekday"):
                nxt = (day + timedelta(days=7)).isoformat()
                slots = self._search(call, date_first=nxt, date_last=nxt)
                if slots:
                    st["date_first"] = st["date_last"] = nxt
            else:
                after = datetime.combine(day + timedelta(days=1), time(0), call.tenant.tz)
                slots = self._search(call, date_first=None, date_last=None,
                                     after=after.isoformat())
            if slots:
                note = (f"This {st['part']} is already over." if over
                        else f"There's nothing left this {st['part']}.")
        if not slots and st.get("date_by_weekday") and self._asked_for_today(call):
            # the same for the whole day: "Monday" said on a Monday evening means the next
            # Monday, not "nothing open on that day" followed by Tuesday
            nxt = (date.fromisoformat(st["date_first"]) + timedelta(days=7)).isoformat()
            slots = self._search(call, date_first=nxt, date_last=nxt)
            if slots:
                st["date_first"] = st["date_last"] = nxt
                note = "There's nothing left today."
        if not slots and (st.get("part") or st.get("at") or st.get("after_time")
                          or st.get("before_time")) and st.get("date_first"):
            slots = self._search(call, part=None, at=None, after_time=None, before_time=None)
            if slots:
                note = "That time of day is fully booked."
        if not slots and st.get("date_first"):
            last = date.fromisoformat(st["date_last"])
            after = datetime.combine(last + timedelta(days=1), time(0), call.tenant.tz)
            slots = self._search(call, date_first=None, date_last=None, after=after.isoformat(),
                                 at=None, before_time=None, after_time=None)
            if slots:
                note = "There's nothing open on that day. The next available times are:"
        if not slots and st.get("doctor") not in (None, nlu.ANY_DOCTOR):
            slots = self._search(call, doctor=None, date_first=None, date_last=None,
                                 at=None, before_time=None, after_time=None)
            if slots:
                note = "That doctor has no open times soon, but other doctors do."
        if not slots:
            st["offered"] = []
            if call.tenant.handoff:
                return self._offer_person(call, "date", f"{lead} I'm sorry, I don't see any "
                                          "open times. Would you like me to connect you with "
                                          "the front desk?".strip())
            return self._ask(call, "date", f"{lead} I'm sorry, I don't see any open times "
                             "then.".strip())
        st["offered"] = slots
        st["stage"] = "offer"
        text, hints = self._offer_text(call, slots, lead=f"{lead} {note}".strip())
        return self._say(call, text, hints=hints)

    # ------------------------------------------------------------ stages: booking

    def _on_visit_type(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        st = call.state
        types = call.tenant.visit_types
        vt = nlu.match_visit_type(t, types, answer=True)
        # "a follow-up with dr smith tomorrow": keep the rest too (not for "1" alone,
        # which would read as one o'clock)
        got = len(t.split()) > 1 and self._absorb(call, t)
        if vt is not None:
            st["visit_type"] = vt.id
            self._understood(call)
            return self._book_next(call)
        if got:
            self._understood(call)
            return self._book_next(call, "Okay.")
        kinds = {nlu.visit_kind(v): v for v in reversed(types)}
        if "new" in kinds and nlu.has_any(t, "not sure", "do not know", "no idea", "difference",
                                       "which one", "what is"):
            new = kinds["new"]
            return self._miss(call, f"If you haven't been seen here before, it's "
                              f"{_article(new.name)} {new.name}.")
        return self._miss(call, "Sorry.")

    def _on_doctor(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        if self._absorb(call, t) and (call.state.get("doctor") or call.state.get("doctor_guess")):
            self._understood(call)
            return self._book_next(call)
        if goal == "earliest":
            call.state["doctor"] = nlu.ANY_DOCTOR
            call.state["earliest"] = True
            return self._book_next(call)
        doctors = call.tenant.doctors
        pos = nlu.position(t, len(doctors))  # "the first one": as the question lists them
        if pos is not None:
            call.state["doctor"] = doctors[pos].id
            self._understood(call)
            return self._book_next(call)
        return self._miss(call, "Sorry, which doctor was that?")

    def _on_doctor_check(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        """Answer to "Did you mean Dr. Okafor?": yes takes the guess, no asks again."""
        st = call.state
        yn = nlu.yes_no(t)
        guess = st.get("doctor_guess")
        before = turns.progress_signature(st)
        when_before = {k: st.get(k) for k in WHEN_KEYS}
        if self._absorb(call, t) and st.get("doctor") and not st.get("doctor_guess"):
            self._understood(call)
            return self._book_next(call)  # named a doctor outright
        st["doctor_guess"] = guess
        if yn is True and guess:
            st["doctor"] = st.pop("doctor_guess")
            self._understood(call)
            return self._book_next(call, "Great.")
        if yn is False:
            st.pop("doctor_guess", None)
            st.pop("doctor", None)
            self._understood(call)
            return self._ask(call, "doctor", "Sorry about that.")
        if before != turns.progress_signature(st):
            # answered with a day or a time instead: kept, and nothing to apologise for
            self._understood(call)
            return self._ask(call, "doctor_check",
                             _noted(st, when_before, self._now(call).date()))
        return self._miss(call, "Sorry.")

    def _on_date(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        st = call.state
        if goal == "earliest" or nlu.has_any(t, "any day", "whenever", "does not matter"):
            st["earliest"] = True
            st["date_first"] = st["date_last"] = None
            self._absorb(call, t)
            self._understood(call)
            return self._book_next(call)
        if self._absorb(call, t) and (st.get("date_first") or st.get("earliest")):
            self._understood(call)
            return self._book_next(call)
        if st.get("intent") == "reschedule" and goal == "no":
            return self._keep_appointment(call)
        return self._miss(call, "Sorry, I didn't catch the day.")

    def _on_offer(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        st = call.state
        offered: list[dict[str, Any]] = st.get("offered", [])
        options = [nlu.Option(self._local(call, s["start"]), s["doctor"],
                              s.get("doctor_name", "")) for s in offered]
        correction = nlu.is_correction(t)
        idx = None if correction and not nlu.has_any(t, "first", "second", "last", "third") \
            else nlu.choose(t, options, call.tenant.doctors)
        if idx is not None:
            self._understood(call)
            return self._chosen(call, offered[idx])
        if goal == "later" and offered:
            last = self._local(call, offered[-1]["start"]) + timedelta(minutes=1)
            st["after"] = last.isoformat()
            st["at"] = None
            if st.get("date_first") != st.get("date_last"):
                st["date_first"] = st["date_last"] = None
            self._understood(call)
            return self._search_and_offer(call)
        if goal == "earlier":
            st.pop("after", None)
            st["at"] = st["after_time"] = None
            slots = self._search(call)
            if slots and slots[0]["slot_id"] == offered[0]["slot_id"]:
                st["offered"] = slots
                return self._say(call, "Those are the earliest times I have. " +
                                 self._offer_text(call, slots, "")[0],
                                 hints=self._offer_text(call, slots, "")[1])
            return self._search_and_offer(call)
        if goal == "earliest":
            # the earliest day, in the part of the day already asked for
            st["earliest"] = True
            st["date_first"] = st["date_last"] = st["at"] = None
            st.pop("after", None)
            self._understood(call)
            return self._search_and_offer(call)
        if self._absorb(call, t):
            self._understood(call)
            return self._book_next(call)
        yn = nlu.yes_no(t)
        if yn is True:
            if len(offered) == 1:
                self._understood(call)
                return self._chosen(call, offered[0])
            return self._say(call, "Which one: the first, the second or the last?",
                             hints=("the first one", "the second one", "the last one"))
        if yn is False:
            # those times are refused, not the doctor, the visit or the part of the day
            self._understood(call)
            for key in REFUSED_TIME_KEYS:
                st.pop(key, None)
            st["stage"] = "date"
            return self._say(call, "No problem. What other day or time would suit you?",
                             hints=("tomorrow", "next week", "morning", "afternoon"))
        return self._miss(call, "Sorry, which time would you like?")

    def _chosen(self, call: CallContext, slot: dict[str, Any]) -> AgentReply:
        st = call.state
        if st.get("intent") != "reschedule" and hasattr(self.tools, "hold_slot"):
            # Hold the picked time while name and contact are taken, so another caller
            # cannot book it meanwhile; the booking consumes the hold.
            self.tools.release_holds(call.call_id)
            held = self.tools.hold_slot(call.tenant, slot_id=slot["slot_id"],
                                        call_id=call.call_id, now=self._now(call),
                                        **self._visit_kw(call))
            if not held.get("ok"):
                st.pop("chosen", None)
                lead = ("I'm sorry, that time was just taken." if held.get("error") == "slot_taken"
                        else held.get("message") or "I'm sorry, that time is not available.")
                return self._search_and_offer(call, lead)
        st["chosen"] = slot
        if st.get("intent") == "reschedule":
            return self._ask(call, "resched_confirm")
        if not st.get("name"):
            return self._ask(call, "name", "Great.")
        return self._contact_next(call, "Great.")

    def _on_name(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        """The answer to the name question is a name first (said, spelled or both).

        Only an explicit change ("actually, make it Monday") goes back to the
        times; a name that sounds like other words ("monday good") is read back
        for the caller to confirm or spell.
        """
        st = call.state
        heard = nlu.parse_name_answer(t)
        if heard and not (nlu.is_correction(t) and self._criteria_in(call, t)):
            self._understood(call)
            if heard.doubtful and not heard.spelled and st.get("intent") == "book":
                st["name_pending"] = {"name": heard.name, "spelled": heard.spelled}
                return self._ask(call, "name_check")
            return self._take_name(call, heard.name, heard.spelled)
        # a day or a time here counts only as an explicit change: "w at eight" is a
        # misheard spelling, not a wish for 8 o'clock
        if st.get("intent") == "book" and nlu.is_correction(t) and self._absorb(call, t):
            self._understood(call)
            return self._book_next(call)
        return self._miss(call, "Sorry, could you say your name again? You can also spell it.")


    def _take_name(self, call: CallContext, name: str, spelled: str | None,
                   lead: str = "") -> AgentReply:
        """Keep the name and go on, reading it back (spelled, when it was spelled)."""
        st = call.state
        st["name"] = name
        st.pop("name_pending", None)
        if spelled:
            st["name_spelled"] = spelled
        else:
            st.pop("name_spelled", None)
        if st.get("intent") in ("cancel", "reschedule"):
            return self._after_identify_name(call)
        readback = f"I have {name}, spelled {spell(spelled)}." if spelled else \
            f"Thank you, {name}."
        return self._contact_next(call, f"{lead} {readback}".strip())

    def _on_name_check(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        """Answer to "I heard Monday Good. Is that your name?": yes keeps it; a spelling fixes it.

        Only names that sound like other words get here, so the check costs one turn rarely.
        """
        st = call.state
        pending = st.get("name_pending") or {}
        heard = nlu.parse_name_answer(_after_no(t))
        yn = nlu.yes_no(t)
        if heard and (heard.spelled or (yn is None and not heard.doubtful)):
            # "no, the last name is G U D E": the part spelled changes, the rest is kept
            self._understood(call)
            name = corrected_name(pending.get("name") or "", heard)
            return self._take_name(call, name, heard.spelled)
        if yn is True and pending.get("name"):
            self._understood(call)
            return self._take_name(call, pending["name"], pending.get("spelled"))
        if yn is False:
            self._understood(call)
            st.pop("name_pending", None)
            return self._ask(call, "name_spell", "Sorry about that.")
        return self._miss(call, "Sorry.")

    def _name_fix(self, call: CallContext, t: str) -> NameAnswer | None:
        """A correction of the name said at a later question ("no, it's J O N"), or None.

        Without a word about the name, only a spelling counts, or a whole name said
        again that resembles the one kept ("no, it's Jon Nott" for Joan Knot): "no,
        friday" must stay a change of day.
        """
        if not nlu.has_any(nlu.normalize(t), "name", "spelled", "spelt", "spell", "my name",
                        "not my name"):
            heard = nlu.parse_name_answer(_after_no(t), strict=True)
            if heard and not heard.spelled and not (
                    len(heard.name.split()) > 1 and self._changes_name(call, heard)
                    and _resembles(heard.name, call.state.get("name") or "")):
                return None
            return heard
        cleaned = re.sub(r"\b(?:that is not my name|not my name|the name is wrong|wrong name)\b",
                         " ", _after_no(t))
        heard = nlu.parse_name_answer(cleaned)
        return heard if heard and (heard.spelled or not heard.doubtful) else None

    def _changes_name(self, call: CallContext, heard: NameAnswer | None) -> bool:
        """Whether ``heard`` makes the name kept another one ("N O T T" for Joan Knot)."""
        return bool(heard) and corrected_name(call.state.get("name") or "", heard).lower() \
            != (call.state.get("name") or "").lower()

    def _criteria_in(self, call: CallContext, t: str) -> bool:
        today = self._now(call).date()
        return bool(nlu.parse_date(t, today) or nlu.parse_time(t)
                    or isinstance(nlu.match_doctor(t, call.tenant.doctors), Doctor)
                    or (call.state.get("intent") == "book"
                        and nlu.match_visit_type(t, call.tenant.visit_types)))

    def _contact_next(self, call: CallContext, lead: str = "") -> AgentReply:
        st = call.state
        if st.get("phone") or st.get("email"):
            return self._to_confirm(call, lead)
        caller = re.sub(r"\D", "", call.caller or "")
        if len(caller) >= 7:
            # the number they call from, named in the confirmation rather than asked for
            # in a turn of its own ("…, at the number ending in 0 1 0 0?"); a "no" there,
            # or another number, changes it
            st["phone"] = call.caller
            st["phone_spoken"] = False
            st["phone_from_callerid"] = True
            return self._to_confirm(call, lead)
        return self._ask(call, "phone", lead)

    def _to_confirm(self, call: CallContext, lead: str = "") -> AgentReply:
        """The confirmation, after asking once for a text-message confirmation.

        Asked where the clinic sends texts (``notifications.sms`` other than ``outbox``)
        and a number is known; the answer goes with the booking as the patient's consent.
        """
        st = call.state
        sends = getattr(getattr(call.tenant, "notifications", None), "sms", "outbox")
        if sends != "outbox" and st.get("phone") and "notify" not in st:
            return self._ask(call, "notify", lead)
        return self._ask(call, "confirm", lead)

    def _on_notify(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        st = call.state
        yn = nlu.yes_no(t)
        if yn is None and nlu.has_any(t, "text me", "send me a text", "text please"):
            yn = True
        if yn is None:
            return self._miss(call, "Sorry, please say yes or no.")
        self._understood(call)
        st["notify"] = "sms" if yn else "none"
        return self._ask(call, "confirm", "Okay." if not yn else "I'll send it.")

    def _renamed(self, call: CallContext, heard: NameAnswer) -> AgentReply:
        """The caller corrected their name at a later question: keep it, ask that again.

        Only the part corrected changes (:func:`names.corrected_name`): "no, it's
        spelled j o n" makes John Smith Jon Smith, "the last name is N O T T" makes
        Joan Knot Joan Nott.
        """
        self._understood(call)
        name = corrected_name(call.state.get("name") or "", heard)
        call.state["name"] = name
        prompt, hints = self._prompt(call)
        return self._say(call, f"Thanks, I've changed the name to {name}. {prompt}", hints=hints)

    def _on_phone(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        st = call.state
        if st.get("name") and nlu.has_any(t, "name", "spelled") and \
                (fixed := self._name_fix(call, t)):
            return self._renamed(call, fixed)
        email = nlu.parse_email(t)
        if email:
            st["email"] = email
            st.pop("phone_from_callerid", None)
            self._understood(call)
            return self._ask(call, "confirm")
        number = nlu.parse_phone(t)
        if number:
            st["phone"] = number
            st["phone_spoken"] = True
            st.pop("phone_from_callerid", None)
            self._understood(call)
            return self._to_confirm(call)
        return self._miss(call, "Sorry, I didn't get the whole number. You can also key it in.")

    def _on_confirm(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        st = call.state
        number = nlu.parse_phone(t)
        if number and not _same_number(number, st.get("phone")):
            st["phone"], st["phone_spoken"] = number, True  # "yes, but call me on …"
            st.pop("phone_from_callerid", None)
            self._understood(call)
            return self._ask(call, "confirm", "Thanks.")
        if st.get("phone") and not number and _wants_other_number(t):
            st.pop("phone", None)
            st.pop("phone_from_callerid", None)
            self._understood(call)
            return self._ask(call, "phone", "Okay.")
        yn = nlu.yes_no(t)
        fix = self._name_fix(call, t)
        # "it's N-O-T-T" reads as "it is …", a yes: a spelling that changes the name is
        # a correction, whatever else it sounds like ("yes, N O T T" for Joan Nott is a yes)
        spelled_fix = bool(fix and fix.spelled and self._changes_name(call, fix))
        if yn is True and not nlu.is_correction(t) and not spelled_fix:
            self._understood(call)
            return self._book(call)
        if nlu.has_any(t, "name", "my name", "name is", "spelled", "spelt", "spell") or \
                (yn is not True or spelled_fix) and fix:
            # checked before times and doctors: "john smith" must not pick Dr. Smith
            self._understood(call)
            if fix:  # "no, it's spelled j o n": John Smith becomes Jon Smith
                return self._renamed(call, fix)
            return self._ask(call, "name")
        if self._criteria_in(call, t) and (yn is False or nlu.is_correction(t)
                                           or yn is None):
            self._absorb(call, t)
            self._understood(call)
            return self._book_next(call, "Okay.")
        if yn is False:
            self._understood(call)
            return self._ask(call, "change")
        return self._miss(call, "Sorry, please say yes or no.")

    def _on_change(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        st = call.state
        self._understood(call)
        if self._criteria_in(call, t):
            self._absorb(call, t)
            return self._book_next(call)
        if nlu.has_any(t, "time", "day", "date", "doctor", "appointment"):
            for key in WHEN_KEYS:
                st.pop(key, None)
            if nlu.has_any(t, "doctor"):
                st.pop("doctor", None)
            return self._book_next(call)
        if call.tenant.visit_types and nlu.has_any(t, "visit", "type", "kind"):
            st.pop("visit_type", None)
            return self._book_next(call)
        if nlu.has_any(t, "name"):
            st.pop("name", None)
            return self._ask(call, "name")
        if nlu.has_any(t, "phone", "number", "contact", "email"):
            for key in ("phone", "email", "phone_from_callerid"):
                st.pop(key, None)
            return self._ask(call, "phone")
        if nlu.yes_no(t) is not None or nlu.has_any(t, "nothing"):
            # "no" to the booking, then nothing to change: once may be a slip, so the
            # booking is read back; the second time they do not want it (else "no",
            # "nothing", "no" … would go round for ever)
            unchanged = st.get("confirm_unchanged", 0) + 1
            st["confirm_unchanged"] = unchanged
            if unchanged >= 2:
                return self._not_booked(call)
            return self._ask(call, "confirm")
        return self._miss(call, "Sorry.")

    def _not_booked(self, call: CallContext) -> AgentReply:
        """The caller turned the booking down and wants nothing changed: let the time go."""
        if hasattr(self.tools, "release_holds"):
            self.tools.release_holds(call.call_id)
        log.info("call %s: booking declined at the confirmation", call.call_id)
        self._finish_task(call)
        call.state.pop("confirm_unchanged", None)
        return self._ask(call, "anything_else", "Okay, I won't book it.")

    def _book(self, call: CallContext) -> AgentReply:
        """Book the chosen slot; only an ``ok`` from the tool makes it "booked"."""
        st = call.state
        chosen = st["chosen"]
        consent = {"notify": st["notify"]} if st.get("notify") == "sms" else {}
        result = self.tools.confirm_appointment(
            call.tenant, slot_id=chosen["slot_id"], patient_name=st["name"],
            email=st.get("email"), phone=st.get("phone"), call_id=call.call_id,
            caller=call.caller, did=call.did, now=self._now(call), **self._visit_kw(call),
            **consent)
        if result.get("ok"):
            code = result["confirmation"]
            st["confirmation"] = code
            st.setdefault("booked", []).append(code)
            st["outcome"] = "booked"
            st["appointment"] = {"doctor": result["doctor"], "start": result["start"]}
            what = self._visit_phrase(call)
            self._finish_task(call)
            when = self._when(call, {"start": result["start"], "doctor": result["doctor"],
                                     "doctor_name": result.get("doctor_name")})
            log.info("call %s: appointment booked", call.call_id)
            return self._say(call, f"You're booked for {what}{when}. Your confirmation code is "
                             f"{say_characters(code)}. Is there anything else I can help you "
                             "with?", hints=_YES_NO_HINTS, outcome="booked", confirmation=code,
                             appointment={"doctor": result["doctor"], "start": result["start"]})
        if result.get("error") == "slot_taken":
            st.pop("chosen", None)
            return self._search_and_offer(call, "I'm sorry, that time was just taken.")
        if result.get("error") == "not_allowed" and result.get("message"):
            # a clinic rule caught up with the call (e.g. the notice ran out): other times
            st.pop("chosen", None)
            return self._search_and_offer(call, result["message"])
        log.warning("booking failed: %s", result.get("error"))
        return self._failed(call, result)

    def _failed(self, call: CallContext, result: dict[str, Any]) -> AgentReply:
        msg = result.get("message") or "Sorry, something went wrong."
        if call.tenant.handoff:
            return self._offer_person(call, "anything_else", f"{msg} Would you like me to "
                                      "connect you with the front desk?")
        return self._ask(call, "anything_else", msg)

    def _announce(self, call: CallContext, done: dict[str, Any]) -> AgentReply:
        """Tell the caller what was already done for them (a booking, cancel, move)."""
        st = call.state
        outcome = done.get("outcome")
        code = done.get("confirmation")
        when = done.get("spoken") or "your appointment"
        appointment = ({"doctor": done["doctor"], "start": done["start"]}
                       if done.get("start") else None)
        self._finish_task(call)
        if outcome == "booked" and code:
            st.setdefault("booked", []).append(code)
            st["confirmation"] = code
            text = (f"You're booked for {when}. Your confirmation code is "
                    f"{say_characters(code)}. Is there anything else I can help you with?")
        elif outcome == "cancelled":
            text = f"Your appointment for {when} is cancelled. Is there anything else?"
        else:
            text = f"Your appointment is now {when}. Is there anything else?"
        st["outcome"] = outcome
        return self._say(call, text, hints=_YES_NO_HINTS, outcome=outcome, confirmation=code,
                         appointment=appointment)

    def _finish_task(self, call: CallContext) -> None:
        """Forget the finished task's criteria; keep who the caller is."""
        st = call.state
        for key in ("intent", "doctor", *WHEN_KEYS, "offered", "chosen", "candidates", "code",
                    "resume_stage", "visit_type"):
            st.pop(key, None)
        st["stage"] = "anything_else"


def _after_no(t: str) -> str:
    """``t`` without the "no, it's" in front of a correction ("no, it's N O T T")."""
    return re.sub(r"^(?:(?:no|nope|actually|sorry|wait|that is|it is)\s+)+", "", t)


def _resembles(said: str, kept: str) -> bool:
    """Whether a name said again is the kept one, corrected: a word of each alike."""
    from difflib import SequenceMatcher

    return any(SequenceMatcher(None, a.lower(), b.lower()).ratio() >= 0.6
               for a in said.split() for b in kept.split())
