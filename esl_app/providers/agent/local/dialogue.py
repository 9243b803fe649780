"""The embedded dialogue agent: deterministic, offline, and honest about the calendar.

It drives one conversation per call as a small state machine whose whole
memory lives in ``call.state`` (JSON-able values only), so another agent can
pick up where it stopped. It never invents a time or a booking: every slot it
offers came from :func:`esl_app.providers.agent.tools.search_slots`, and it only says
"booked" after :func:`esl_app.providers.agent.tools.confirm_appointment` returned ``ok``.
Replies are short and ask one thing at a time, because they are spoken.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any

from esl_app.config.tenants import WEEKDAYS, Doctor, Tenant, VisitType
from esl_app.providers.agent import message, tools
from esl_app.providers.agent.base import AgentError, AgentReply, CallContext, Utterance
from esl_app.providers.agent.local import nlu, turns
from esl_app.providers.agent.local.names import spell
from esl_app.providers.agent.state import REFUSED_TIME_KEYS, WHEN_KEYS
from esl_app.providers.markup import say_characters

__all__ = ["LocalAgent", "format_hours"]

log = logging.getLogger(__name__)

MAX_MISSES = 3
# stages whose answer is a name: the text keeps spelled letters ("a m" is not "am")
_NAME_STAGES = ("name", "verify_name", "lookup_name", "name_spell")
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


class LocalAgent:
    """The deterministic local agent (``agent: local`` in tenants.yaml).

    Stateless itself (one instance serves every call); per-call memory is
    ``call.state``. ``tool_set`` is the module of agent tools, replaceable
    only so a test or an operator can wrap it (e.g. to count calls).
    """

    name = "local"

    def __init__(self, tool_set: Any = tools) -> None:
        self.tools = tool_set

    # ------------------------------------------------------------ protocol

    def greet(self, call: CallContext) -> AgentReply:
        """Open the conversation: ask what the caller wants."""
        st = call.state
        st.setdefault("agent", self.name)
        st.setdefault("stage", "start")
        st.setdefault("misses", 0)
        return self._say(call, "How can I help you today? You can book, change or cancel "
                         "an appointment.", hints=("book an appointment", "cancel",
                                                   "reschedule", "operator")
                         + tuple(d.name for d in call.tenant.doctors))

    def respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        """One caller turn in, one reply out; a broken calendar becomes :class:`AgentError`.

        The engine answers an ``AgentError`` with its own fallback (a transfer),
        so a database outage never leaves the caller in silence.
        """
        try:
            return self._respond(call, utterance)
        except AgentError:
            raise
        except Exception as exc:
            log.exception("call %s: local agent failed", call.call_id)
            raise AgentError(f"local agent failed: {type(exc).__name__}") from exc

    def _respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        st = call.state
        st.setdefault("stage", "start")
        st.setdefault("misses", 0)
        pending = st.pop("unannounced", None)
        if pending:  # another agent committed it, then failed before the caller heard it
            return self._announce(call, pending)
        if st.get("mode") == "message":  # normally the guard's; here when run bare
            return message.take_message(call, utterance)
        text = utterance.text or ""
        if utterance.dtmf:
            keys = utterance.dtmf.strip()
            if keys == "0":
                return self._handoff(call, "caller pressed zero")
            text = self._dtmf_text(call, keys) or text
        t = nlu.normalize(text)
        if not t:
            return self._track(call, self._miss(call, "Sorry, I didn't catch that."))
        stage = st["stage"]
        goal = self._understand(call, text).intent
        if goal == "emergency":
            st["outcome"] = "emergency"
            number = call.tenant.emergency_number or "911"
            return AgentReply(f"If this is a medical emergency, please hang up and call "
                              f"{number} now.", action="hangup", outcome="emergency")
        if goal == "operator":
            return self._handoff(call, "caller asked for a person")
        if goal == "repeat" and st.get("last_text"):
            return self._track(call, self._repeat(call), repeat=True)
        if goal in ("hours", "address"):
            return self._answer_question(call, goal)
        if goal in ("greeting", "smalltalk"):
            return self._small_talk(call, goal, t)
        if goal == "wait":
            return AgentReply("Sure, take your time. I'm here when you're ready.",
                              hints=tuple(st.get("last_hints", ())))
        if goal == "goodbye" and stage not in ("phone",):
            return self._goodbye(call)
        if goal in ("message", "urgent", "repeat"):
            goal = None  # the guard's business (or nothing said before to repeat)
        said = nlu.normalize(text, clock=False) if stage in _NAME_STAGES else t
        said = nlu.strip_opener(said)[0] or said
        handler = _STAGE_HANDLERS.get(stage, LocalAgent._on_start)
        return self._track(call, handler(self, call, said, goal))

    def end(self, call: CallContext) -> None:
        """Nothing to release: the session is ``call.state``, which stays for the record."""
        try:
            call.state["ended"] = True
        except Exception:  # noqa: BLE001 - end() must never raise
            pass

    # ------------------------------------------------------------ helpers

    def _now(self, call: CallContext) -> datetime:
        tz = call.tenant.tz
        return (call.now or datetime.now(tz)).astimezone(tz)

    def _say(self, call: CallContext, text: str, *, hints: tuple[str, ...] = (),
             **kw: Any) -> AgentReply:
        st = call.state
        st["last_text"] = text
        st["last_hints"] = list(hints)
        return AgentReply(text, hints=hints, **kw)

    def _understood(self, call: CallContext) -> None:
        call.state["misses"] = 0

    def _understand(self, call: CallContext, text: str) -> nlu.Understanding:
        """The turn read in the light of the current stage's question."""
        st = call.state
        stage = st.get("stage", "start")
        offered: tuple[nlu.Option, ...] = ()
        if stage == "offer":
            offered = tuple(nlu.Option(self._local(call, s["start"]), s["doctor"],
                                       s.get("doctor_name", "")) for s in st.get("offered", []))
        return nlu.understand(text, today=self._now(call).date(), doctors=call.tenant.doctors,
                              visit_types=call.tenant.visit_types,
                              expecting=turns.EXPECTING.get(stage), offered=offered)

    # ------------------------------------------------------------ not going round in circles

    def _track(self, call: CallContext, reply: AgentReply, *, repeat: bool = False,
               lead: str | None = None) -> AgentReply:
        """Rephrase a question asked again without progress; the third time, offer a way out.

        Progress is anything new the caller told us (:func:`turns.progress_signature`)
        or a new question. A caller who asked to hear it again gets the content again
        the second time; a caller who was not understood gets it shorter, with an
        example. The third time the front desk is offered (or, with no front desk,
        the keypad, then a message).
        """
        st = call.state
        stage = st.get("stage", "start")
        if reply.action != "continue" or st.get("mode") == "message" or stage in (
                "offer_handoff", "transferred", "done"):
            st.pop("ask", None)
            return reply
        sig = turns.progress_signature(st)
        prev = st.get("ask") or {}
        same = prev.get("stage") == stage and prev.get("sig") == sig
        count = prev.get("count", 0) + 1 if same else 1
        st["ask"] = {"stage": stage, "sig": sig, "count": count}
        if count == 1 or (count == 2 and repeat):
            return reply
        if count == 2:
            prompt, hints = self._prompt(call)
            if lead is None:
                lead = turns.informative_lead(reply.text, prompt)
            return self._say(call, f"{lead} {self._short_prompt(call)}".strip(), hints=hints)
        return self._escalate(call, count)

    def _escalate(self, call: CallContext, count: int) -> AgentReply:
        """The same question a third time: the front desk, else the keypad, else a message."""
        st = call.state
        stage = st.get("stage", "start")
        if call.tenant.handoff:
            st.pop("ask", None)
            log.info("call %s: question asked %d times without progress", call.call_id, count)
            return self._offer_person(call, stage, "I'm sorry, this doesn't seem to be "
                                      "working. Would you like me to connect you with someone "
                                      "at the front desk?")
        if count >= 5:
            st.pop("ask", None)
            return message.start_message(call, "unavailable")
        hint = turns.keypad_hint(stage, self._n_options(call))
        suggest = "If you'd rather, I can take a message for the clinic: just say " \
                  "\"leave a message\"."
        extra = hint if hint and count == 3 else suggest
        return self._say(call, f"{self._short_prompt(call)} {extra}",
                         hints=self._prompt(call)[1])

    def _n_options(self, call: CallContext) -> int:
        """How many choices the current question read out (for keypad answers)."""
        stage = call.state.get("stage")
        if stage == "offer":
            return len(call.state.get("offered", []))
        if stage == "doctor":
            return len(call.tenant.doctors)
        if stage == "visit_type":
            return len(call.tenant.visit_types)
        return 0

    def _repeat(self, call: CallContext) -> AgentReply:
        """What the bot last said, without "Thank you." or "Great." in front of it.

        Offered the front desk, a caller who keeps asking to hear it again is put
        through: they are clearly not getting on with the bot.
        """
        st = call.state
        if st.get("stage") == "offer_handoff":
            unclear = st.get("handoff_unclear", 0) + 1
            if unclear >= HANDOFF_UNCLEAR:
                return self._handoff(call, "caller could not be understood")
            st["handoff_unclear"] = unclear
        return self._say(call, turns.content(st["last_text"]),
                         hints=tuple(st.get("last_hints", ())))

    def _small_talk(self, call: CallContext, kind: str, t: str) -> AgentReply:
        """A friendly answer to "hi" or "are you a robot?", then the menu or the open question."""
        st = call.state
        stage = st.get("stage", "start")
        mid = stage not in ("start", "anything_else", "done", "transferred")
        lead = turns.small_talk_lead(kind, t, call.tenant, mid_call=mid)
        if mid:
            prompt, hints = self._prompt(call)
            reply = self._say(call, f"{lead} {prompt}".strip(), hints=hints)
        elif stage == "anything_else":
            reply = self._say(call, f"{lead} Is there anything else I can help you with?"
                              .strip(), hints=_YES_NO_HINTS + ("book an appointment",))
        else:
            st["stage"] = "start"
            reply = self._say(call, f"{lead} {turns.menu(call.tenant)} What would you like to "
                              "do?".strip(), hints=("book an appointment", "cancel",
                                                    "reschedule", "operator"))
        return self._track(call, reply, lead=lead)  # small talk is no progress either

    def _miss(self, call: CallContext, rephrase: str) -> AgentReply:
        """A turn we could not use: rephrase, and after repeated failures offer a person."""
        st = call.state
        st["misses"] = st.get("misses", 0) + 1
        if st["misses"] >= MAX_MISSES and call.tenant.handoff and st["stage"] != "offer_handoff":
            return self._offer_person(call, st["stage"], "I'm sorry, I'm having trouble "
                                      "understanding. Would you like me to connect you with "
                                      "someone at the front desk?")
        prompt, hints = self._prompt(call)
        return self._say(call, f"{rephrase} {prompt}".strip(), hints=hints)

    def _offer_person(self, call: CallContext, resume_stage: str, text: str) -> AgentReply:
        """Ask whether to connect the caller with the front desk ("no" resumes ``resume_stage``)."""
        st = call.state
        st["resume_stage"] = resume_stage
        st["stage"] = "offer_handoff"
        st.pop("handoff_unclear", None)  # each offer counts its own unclear answers
        return self._say(call, text, hints=_YES_NO_HINTS)

    def _dtmf_text(self, call: CallContext, keys: str) -> str | None:
        """Keys as words the stage understands: digits for numbers, 1/2 for yes/no."""
        stage = call.state.get("stage")
        if stage in ("phone", "confirm") and len(keys) >= 7:
            return keys  # at the confirmation: another number than the one named
        if stage in ("offer", "visit_type", "doctor") and keys.isdigit() and len(keys) == 1:
            return f"option {keys}"
        if stage in ("confirm", "cancel_confirm", "resched_confirm", "anything_else",
                     "offer_handoff", "late_handoff", "doctor_check",
                     "name_check") and keys in _DTMF_YES_NO:
            return _DTMF_YES_NO[keys]
        return keys

    def _handoff(self, call: CallContext, reason: str) -> AgentReply:
        result = self.tools.handoff_to_human(call.tenant, reason=reason)
        if not result.get("ok"):
            call.state["misses"] = 0
            if call.state.get("stage") == "offer_handoff":  # not the offer again: go back
                call.state["stage"] = call.state.pop("resume_stage", None) or "start"
            prompt, hints = self._prompt(call)
            return self._say(call, f"{result.get('message', 'Sorry, nobody is available.')} "
                             f"{prompt}", hints=hints)
        call.state["outcome"] = "handoff"
        call.state["stage"] = "transferred"
        return AgentReply("Sure, I'll connect you with the front desk now. Please hold.",
                          action="transfer", transfer_to=result["to"], outcome="handoff")

    def _goodbye(self, call: CallContext) -> AgentReply:
        call.state["stage"] = "done"
        return AgentReply(f"Thank you for calling {call.tenant.name}. Goodbye!",
                          action="hangup")

    def _answer_question(self, call: CallContext, goal: str) -> AgentReply:
        tenant = call.tenant
        if goal == "hours":
            answer = format_hours(tenant)
        elif tenant.address:
            answer = f"We're at {tenant.address}."
        else:
            answer = "I don't have the address at hand, but the front desk can help."
        self._understood(call)
        stage = call.state.get("stage", "start")
        if stage in ("start", "anything_else", "done"):
            call.state["stage"] = "anything_else"
            return self._say(call, f"{answer} Is there anything else I can help you with?",
                             hints=_YES_NO_HINTS + ("book an appointment",))
        prompt, hints = self._prompt(call)
        return self._say(call, f"{answer} {prompt}", hints=hints)

    def _prompt(self, call: CallContext) -> tuple[str, tuple[str, ...]]:
        """The question of the current stage (asked again after a miss or a side question)."""
        st = call.state
        stage = st.get("stage", "start")
        tenant = call.tenant
        if stage == "visit_type":
            return (_visit_question(tenant.visit_types),
                    tuple(v.name for v in tenant.visit_types) + ("first time", "follow up"))
        if stage == "doctor":
            names = [_short_doctor(d.name) for d in tenant.doctors]
            listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
            return (f"Which doctor would you like to see: {listed}? Or any doctor.",
                    tuple(names) + tuple(d.name for d in tenant.doctors) + ("any doctor",))
        if stage == "date":
            if st.get("intent") == "reschedule":
                return ("What day would you like instead?", ("tomorrow", "next week"))
            return ("What day would you like to come in?",
                    ("today", "tomorrow", "next week", "the earliest") + tuple(
                        n.lower() for n in _DAY_NAMES.values()))
        if stage == "offer":
            return self._offer_text(call, st.get("offered", []), lead="")
        if stage == "name":
            return "May I have your first and last name?", ()
        if stage == "phone":
            return ("What's the best phone number to reach you? Please say it digit by digit.",
                    _DIGIT_HINTS)
        if stage == "notify":
            return ("Would you like a text message with the details of your appointment?",
                    _YES_NO_HINTS)
        if stage == "confirm":
            return self._confirm_text(call), _YES_NO_HINTS
        if stage == "change":
            return ("What would you like to change: the time, the name, or the phone number?",
                    ("the time", "the name", "the phone number", "nothing"))
        if stage == "code":
            return ("What's your confirmation code? Please say it one character at a time, "
                    "or say you don't have it.", _DIGIT_HINTS + ("I don't have it",))
        if stage in ("verify_name", "lookup_name"):
            return "What name is the appointment under?", ()
        if stage == "lookup_phone":
            return "What phone number did you book with?", _DIGIT_HINTS
        if stage == "pick_appt":
            return self._appts_text(call), ("the first one", "the second one")
        if stage == "cancel_confirm":
            appt = st.get("appointment") or {}
            return (f"Shall I cancel your appointment on {appt.get('spoken_short', '')}?",
                    _YES_NO_HINTS)
        if stage == "resched_confirm":
            chosen = st.get("chosen") or {}
            return (f"Shall I move your appointment to {self._when(call, chosen)}?",
                    _YES_NO_HINTS)
        if stage == "doctor_check":
            doc = call.tenant.doctor(st.get("doctor_guess") or "")
            who = _short_doctor(doc.name) if doc else "that doctor"
            return (f"Did you mean {who}?",
                    _YES_NO_HINTS + tuple(d.name for d in tenant.doctors))
        if stage == "name_check":
            pending = st.get("name_pending") or {}
            return (f"I heard {pending.get('name', '')}. Is that your name? You can also "
                    "spell it.", _YES_NO_HINTS)
        if stage == "name_spell":
            return "Could you spell your first and last name for me, letter by letter?", ()
        if stage == "offer_handoff":
            return "Would you like me to connect you with the front desk?", _YES_NO_HINTS
        if stage == "late_handoff":
            return "Would you like me to transfer you to the front desk?", _YES_NO_HINTS
        if stage == "anything_else":
            return "Is there anything else I can help you with?", _YES_NO_HINTS
        return ("You can book, change or cancel an appointment. What would you like to do?",
                ("book an appointment", "cancel", "reschedule", "operator"))

    def _short_prompt(self, call: CallContext) -> str:
        """The current question again, shorter, with an example of an answer."""
        st = call.state
        stage = st.get("stage", "start")
        tenant = call.tenant
        if stage == "visit_type":
            names = " or ".join(f"\"{v.name}\"" for v in tenant.visit_types[:2])
            return f"Just say {names}."
        if stage == "doctor":
            first = _short_doctor(tenant.doctors[0].name) if tenant.doctors else "a doctor"
            return f"Which doctor? Like \"{first}\", or \"any doctor\"."
        if stage == "date":
            return "Which day? Like \"tomorrow\"."
        if stage == "offer":
            slots = st.get("offered", [])
            if not slots:
                return "Which other day? Like \"tomorrow\"."
            starts = [self._local(call, x["start"]) for x in slots]
            clocks = [tools.spoken_time(x, with_day=False) for x in starts]
            listed = clocks[0] if len(clocks) == 1 else \
                ", ".join(clocks[:-1]) + f" or {clocks[-1]}"
            day = tools.spoken_time(starts[0]).split(" at ")[0]
            same_day = len({x.date() for x in starts}) == 1
            when = f"{listed} on {day}" if same_day else \
                ", ".join(tools.spoken_time(x) for x in starts)
            if len(slots) == 1:
                return f"I have {when}. Yes or no?"
            return f"I have {when}. Which one? Like \"the first one\"."
        if stage in ("name", "verify_name", "lookup_name"):
            return "Your name, like \"Jane Smith\"? You can spell it."
        if stage == "name_spell":
            return "Spell your name letter by letter, like \"J, O, H, N\"."
        if stage in ("phone", "lookup_phone"):
            return "Your number, digit by digit, like \"5 5 5, 1 2 3, 4 5 6 7\". Or key it in."
        if stage == "code":
            return "Your six-character code, like \"K 7 M 4 Q 2\", or \"I don't have it\"."
        if stage == "pick_appt":
            return "Which one? Like \"the first one\"."
        if stage == "change":
            return "Change what? \"The time\", \"the name\" or \"the phone number\"?"
        short_yes_no = {
            "confirm": "Shall I book it?", "cancel_confirm": "Shall I cancel it?",
            "resched_confirm": "Shall I move it?", "anything_else": "Anything else?",
            "late_handoff": "Transfer you to the front desk?",
            "offer_handoff": "Connect you with the front desk?",
        }
        if stage in short_yes_no:
            return f"{short_yes_no[stage]} Yes or no?"
        if stage == "doctor_check":
            return f"{self._prompt(call)[0]} Yes or no?"
        if stage == "name_check":
            pending = (st.get("name_pending") or {}).get("name", "")
            return f"Is your name {pending}? Yes or no? Or spell it."
        return "Say, for example, \"book an appointment\" or \"cancel my appointment\"."

    def _ask(self, call: CallContext, stage: str, lead: str = "") -> AgentReply:
        call.state["stage"] = stage
        prompt, hints = self._prompt(call)
        return self._say(call, f"{lead} {prompt}".strip(), hints=hints)

    # ------------------------------------------------------------ slot wording

    def _local(self, call: CallContext, iso: str) -> datetime:
        return datetime.fromisoformat(iso).astimezone(call.tenant.tz)

    def _when(self, call: CallContext, slot: dict[str, Any], *, doctor: bool = True) -> str:
        start = self._local(call, slot["start"])
        text = tools.spoken_time(start)
        if doctor:
            text += f" with {_short_doctor(slot.get('doctor_name') or slot['doctor'])}"
        return text

    def _offer_text(self, call: CallContext, slots: list[dict[str, Any]], lead: str
                    ) -> tuple[str, tuple[str, ...]]:
        if not slots:
            return "What other day would suit you?", ()
        starts = [self._local(call, s["start"]) for s in slots]
        clocks = [tools.spoken_time(s, with_day=False) for s in starts]
        hints = ("the first one", "the second one", "the last one", "anything later",
                 *clocks)
        if len(slots) == 1:
            return f"{lead} I have {self._when(call, slots[0])}. Would that work?".strip(), \
                hints + _YES_NO_HINTS
        doctors = {s["doctor"] for s in slots}
        days = {s.date() for s in starts}

        def join(items: list[str]) -> str:
            return ", ".join(items[:-1]) + f" or {items[-1]}"

        if len(days) == 1:
            day = tools.spoken_time(starts[0]).split(" at ")[0]
            if len(doctors) == 1:
                who = _short_doctor(slots[0].get("doctor_name") or slots[0]["doctor"])
                body = f"On {day} I have {join(clocks)} with {who}."
            else:
                items = [f"{c} with {_short_doctor(s.get('doctor_name') or s['doctor'])}"
                         for c, s in zip(clocks, slots, strict=True)]
                body = f"On {day} I have {join(items)}."
        elif len(doctors) == 1:
            who = _short_doctor(slots[0].get("doctor_name") or slots[0]["doctor"])
            body = f"With {who} I have {join([tools.spoken_time(s) for s in starts])}."
        else:
            body = f"I have {join([self._when(call, s) for s in slots])}."
        return f"{lead} {body} Which would you like?".strip(), hints

    def _confirm_text(self, call: CallContext) -> str:
        st = call.state
        chosen = st.get("chosen") or {}
        contact = ""
        if st.get("phone") and st.get("phone_spoken"):
            contact = f", phone number {_digits_spoken(st['phone'])}"
        elif st.get("phone") and st.get("phone_from_callerid"):
            last4 = _digits_spoken(re.sub(r"\D", "", st["phone"])[-4:])
            contact = f", at the number you're calling from, ending in {last4}"
        what = self._visit_phrase(call)
        return f"Shall I book {what}{self._when(call, chosen)} for {st.get('name', '')}{contact}?"

    def _visit_phrase(self, call: CallContext) -> str:
        """With a chosen visit type, "a 40-minute new patient visit on " (else empty)."""
        vt = call.tenant.visit_type(call.state.get("visit_type"))
        if vt is None:
            return ""
        length = f"{vt.minutes}-minute"
        return f"{_article(length)} {length} {vt.name} on "

    def _appts_text(self, call: CallContext) -> str:
        appts = call.state.get("candidates", [])
        items = [a["spoken_short"] for a in appts]
        listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" or {items[-1]}"
        return f"I found appointments on {listed}. Which one do you mean?"

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

    def _search_and_offer(self, call: CallContext, lead: str = "") -> AgentReply:
        """Search with the caller's criteria, relaxing them step by step when nothing fits."""
        st = call.state
        slots = self._search(call)
        note = ""
        if slots and st.get("date_last") and st.get("date_first") != st.get("date_last"):
            last = date.fromisoformat(st["date_last"])
            if self._local(call, slots[0]["start"]).date() > last:
                note = "I have nothing open in that week."
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

    # ------------------------------------------------------------ stages: start

    def _on_start(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        if goal == "book":
            self._understood(call)
            return self._start_booking(call, t)
        if goal in ("cancel", "reschedule"):
            self._understood(call)
            return self._start_identify(call, t, goal)
        if goal == "yes":
            return self._ask(call, "start", "Sure.")
        if goal == "goodbye" or (goal == "no" and call.state.get("start_no")):
            return self._goodbye(call)
        if goal == "no" and call.state.get("stage") == "start":
            # a bare "no" as the first answer is more often a misheard "hello?" than a
            # caller who called to say nothing: ask once more before hanging up
            call.state["start_no"] = True
            return self._ask(call, "start", "Sorry, I didn't catch that.")
        if goal == "no":
            return self._goodbye(call)
        today = self._now(call).date()
        if nlu.match_doctor(t, call.tenant.doctors) or nlu.parse_date(t, today) or \
                goal in ("earliest",) or nlu.parse_time(t) or \
                nlu.match_visit_type(t, call.tenant.visit_types) or \
                nlu.guess_doctor(t, call.tenant.doctors):
            self._understood(call)
            return self._start_booking(call, t)
        return self._miss(call, "Sorry, I didn't get that.")

    def _on_anything_else(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        if goal in ("no", "goodbye"):
            return self._goodbye(call)
        if goal == "yes" and not nlu.match_doctor(t, call.tenant.doctors):
            self._understood(call)
            return self._ask(call, "start", "Sure.")
        return self._on_start(call, t, goal)

    def _on_offer_handoff(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        st = call.state
        yn = nlu.yes_no(t)
        if yn is None and (answered := self._answers_the_question(call, t, goal)):
            return answered
        unclear = st.pop("handoff_unclear", 0)
        if yn is True:
            return self._handoff(call, "caller could not be understood")
        if yn is False:
            st["misses"] = 0
            return self._ask(call, st.pop("resume_stage", "start") or "start",
                             "Okay, let's try again.")
        if unclear + 1 >= HANDOFF_UNCLEAR:
            # neither yes nor no, again: a person can sort out what we cannot (asking the
            # same question on and on would keep the caller in a loop until they hang up)
            return self._handoff(call, "caller could not be understood")
        st["handoff_unclear"] = unclear + 1
        return self._miss(call, "Please say yes or no.")

    def _answers_the_question(self, call: CallContext, t: str, goal: str | None
                              ) -> AgentReply | None:
        """Offered the front desk, the caller answered the question before it instead.

        Taken when it moves the conversation on; otherwise the state is left exactly
        as it was and the offer stands.
        """
        st = call.state
        resume = st.get("resume_stage")
        if not resume or resume in _NAME_STAGES or resume in ("start", "offer_handoff"):
            return None
        saved = json.loads(json.dumps(st))
        st["stage"] = resume
        st.pop("ask", None)
        before = turns.progress_signature(st)
        handler = _STAGE_HANDLERS.get(resume)
        reply = handler(self, call, t, goal) if handler else None
        if reply is not None and reply.action == "continue" and st.get("stage") not in (
                "offer_handoff",) and (turns.progress_signature(st) != before
                                      or st.get("stage") != resume):
            st.pop("resume_stage", None)
            st.pop("handoff_unclear", None)
            st["misses"] = 0
            return reply
        st.clear()
        st.update(saved)
        return None

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
        heard = nlu.parse_name_answer(nlu.normalize(t, clock=False))
        yn = nlu.yes_no(t)
        if heard and (heard.spelled or (yn is None and not heard.doubtful)):
            self._understood(call)
            return self._take_name(call, heard.name, heard.spelled)
        if yn is True and pending.get("name"):
            self._understood(call)
            return self._take_name(call, pending["name"], pending.get("spelled"))
        if yn is False:
            self._understood(call)
            st.pop("name_pending", None)
            return self._ask(call, "name_spell", "Sorry about that.")
        return self._miss(call, "Sorry.")

    def _name_fix(self, call: CallContext, t: str) -> str | None:
        """A correction of the name said at a later question ("no, it's J O N"), or None."""
        if not nlu.has_any(nlu.normalize(t), "name", "spelled", "spelt", "spell", "my name",
                        "not my name"):
            heard = nlu.parse_name_answer(re.sub(r"^(?:no|nope|actually|sorry|wait)\s+", "", t))
            return heard.name if heard and heard.spelled else None
        cleaned = re.sub(r"^(?:(?:no|nope|actually|sorry|wait|that is|it is)\s+)+", "", t)
        cleaned = re.sub(r"\b(?:that is not my name|not my name|the name is wrong|wrong name)\b",
                         " ", cleaned)
        heard = nlu.parse_name_answer(cleaned)
        return heard.name if heard and (heard.spelled or not heard.doubtful) else None

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

    def _renamed(self, call: CallContext, name: str) -> AgentReply:
        """The caller corrected their name at a later question: keep it, ask that again.

        A single word corrects the word of the name it resembles ("no, it's spelled
        j o n" makes John Smith Jon Smith), so the rest of the name is kept.
        """
        self._understood(call)
        old = (call.state.get("name") or "").split()
        if len(name.split()) == 1 and len(old) > 1:
            from difflib import SequenceMatcher

            likeness = [SequenceMatcher(None, w.lower(), name.lower()).ratio() for w in old]
            best = max(range(len(old)), key=lambda i: likeness[i])
            if likeness[best] >= 0.5:
                old[best] = name
                name = " ".join(old)
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
        if yn is True and not nlu.is_correction(t):
            self._understood(call)
            return self._book(call)
        if nlu.has_any(t, "name", "my name", "name is", "spelled", "spelt", "spell") or \
                (yn is not True and self._name_fix(call, t)):
            # checked before times and doctors: "john smith" must not pick Dr. Smith
            self._understood(call)
            name = self._name_fix(call, t)
            if name:  # "no, it's spelled j o n": John Smith becomes Jon Smith
                return self._renamed(call, name)
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
            return self._ask(call, "confirm")
        return self._miss(call, "Sorry.")

    def _book(self, call: CallContext) -> AgentReply:
        """Book the chosen slot; only an ``ok`` from the tool makes it "booked"."""
        st = call.state
        chosen = st["chosen"]
        consent = {"notify": st["notify"]} if st.get("notify") == "sms" else {}
        result = self.tools.confirm_appointment(
            call.tenant, slot_id=chosen["slot_id"], patient_name=st["name"],
            email=st.get("email"), phone=st.get("phone"), call_id=call.call_id,
            now=self._now(call), **self._visit_kw(call), **consent)
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

    # ------------------------------------------------------------ cancel / reschedule

    def _start_identify(self, call: CallContext, t: str, goal: str) -> AgentReply:
        st = call.state
        st["intent"] = goal
        for key in ("code", "appointment", "candidates", "chosen", "offered", "date_first",
                    "date_last", "part", "at", "after_time", "before_time", "after",
                    "earliest", "visit_type"):
            st.pop(key, None)
        st["id_failures"] = 0
        code = nlu.parse_code(t)
        if code:
            st["code"] = code
            if st.get("name"):
                return self._after_identify_name(call)
            return self._ask(call, "verify_name", "Thanks.")
        return self._ask(call, "code", "Sure.")

    def _on_code(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        st = call.state
        code = nlu.parse_code(t)
        if code:
            st["code"] = code
            self._understood(call)
            if st.get("name"):
                return self._after_identify_name(call)
            return self._ask(call, "verify_name", "Thanks.")
        if nlu.yes_no(t) is False or nlu.has_any(t, "do not have", "lost", "can not find",
                                              "do not know", "forgot", "no code"):
            self._understood(call)
            st.pop("code", None)
            if not re.sub(r"\D", "", call.caller or "") and not st.get("phone"):
                return self._ask(call, "lookup_phone", "No problem.")
            if st.get("name"):
                return self._after_identify_name(call)
            return self._ask(call, "lookup_name", "No problem.")
        return self._miss(call, "Sorry, I didn't get the code.")

    def _on_lookup_phone(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        number = nlu.parse_phone(t)
        if not number:
            return self._miss(call, "Sorry, I didn't get the number.")
        call.state["lookup_phone"] = number
        self._understood(call)
        if call.state.get("name"):
            return self._after_identify_name(call)
        return self._ask(call, "lookup_name")


    def _after_identify_name(self, call: CallContext) -> AgentReply:
        """With a name (and a code or a phone number), find the appointment to act on."""
        st = call.state
        name = st["name"]
        code = st.get("code")
        phone = st.get("lookup_phone") or call.caller
        if code:
            result = self.tools.find_appointments(call.tenant, name=name, now=self._now(call))
            appts = [a for a in result.get("appointments", []) if a["confirmation"] == code]
        elif phone and re.sub(r"\D", "", phone):
            result = self.tools.find_appointments(call.tenant, phone=phone, name=name,
                                                  now=self._now(call))
            appts = result.get("appointments", [])
        else:
            appts = []
        appts = [self._appt_record(call, a) for a in appts][:3]
        if not appts:
            st["id_failures"] = st.get("id_failures", 0) + 1
            st.pop("code", None)
            if st["id_failures"] >= 2:
                return self._failed(call, {"message": "I'm sorry, I couldn't find that "
                                           "appointment."})
            if code:
                return self._ask(call, "code", "I couldn't find an appointment with that code "
                                 "and name. Let's try the code again.")
            return self._ask(call, "code", "I couldn't find an upcoming appointment under "
                             "that name for this number.")
        if len(appts) == 1:
            return self._identified(call, appts[0])
        st["candidates"] = appts
        st["stage"] = "pick_appt"
        return self._say(call, self._appts_text(call), hints=("the first one", "the last one"))

    def _appt_record(self, call: CallContext, a: dict[str, Any]) -> dict[str, Any]:
        rec = {k: a.get(k) for k in ("confirmation", "doctor", "doctor_name", "start", "end",
                                     "visit_type")}
        rec["spoken_short"] = self._when(call, rec)
        return rec

    def _on_pick_appt(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        cands = call.state.get("candidates", [])
        options = [nlu.Option(self._local(call, a["start"]), a["doctor"],
                              a.get("doctor_name") or "") for a in cands]
        idx = nlu.choose(t, options, call.tenant.doctors)
        if idx is None:
            return self._miss(call, "Sorry, which appointment?")
        self._understood(call)
        return self._identified(call, cands[idx])

    def _identified(self, call: CallContext, appt: dict[str, Any]) -> AgentReply:
        st = call.state
        st["appointment"] = appt
        st["code"] = appt["confirmation"]
        if self._too_late_to_change(call, appt):
            return self._late_change(call, f"Your appointment is on {appt['spoken_short']}.")
        if st.get("intent") == "cancel":
            return self._ask(call, "cancel_confirm")
        st["doctor"] = appt["doctor"]
        visit = self._visit_of(call, appt)
        if visit:
            st["visit_type"] = visit
        return self._ask(call, "date", f"Your appointment is on {appt['spoken_short']}.")

    def _visit_of(self, call: CallContext, appt: dict[str, Any]) -> str | None:
        """The appointment's visit type, so the new time fits it: as stored, else by length.

        Types needing the same number of slots are interchangeable for the search,
        and the scheduling core moves the booking with its stored type anyway.
        """
        tenant = call.tenant
        if tenant.visit_type(appt.get("visit_type")):
            return appt["visit_type"]
        if not tenant.visit_types or not appt.get("end") or not appt.get("start"):
            return None
        length = datetime.fromisoformat(appt["end"]) - datetime.fromisoformat(appt["start"])
        step = tenant.slot_minutes
        for vt in tenant.visit_types:
            need = max(1, -(-(vt.minutes + tenant.policy.buffer_minutes) // step))
            if timedelta(minutes=need * step) == length:
                return vt.id
        return None

    def _on_cancel_confirm(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        st = call.state
        yn = nlu.yes_no(t)
        if yn is None:
            return self._miss(call, "Sorry, please say yes or no.")
        self._understood(call)
        if yn is False:
            return self._keep_appointment(call)
        appt = st["appointment"]
        result = self.tools.cancel_appointment(call.tenant, code=st["code"],
                                               verify=st.get("name"), now=self._now(call))
        if result.get("error") == "too_late":
            return self._late_change(call, message=result.get("message"))
        if not result.get("ok"):
            return self._failed(call, result)
        st["outcome"] = "cancelled"
        st["confirmation"] = st["code"]
        self._finish_task(call)
        log.info("call %s: appointment cancelled", call.call_id)
        return self._say(call, f"Your appointment on {appt['spoken_short']} is cancelled. "
                         "Is there anything else I can help you with?", hints=_YES_NO_HINTS,
                         outcome="cancelled", confirmation=result.get("confirmation"),
                         appointment={"doctor": appt["doctor"], "start": appt["start"]})

    def _keep_appointment(self, call: CallContext) -> AgentReply:
        self._finish_task(call)
        return self._ask(call, "anything_else", "Okay, I'll leave your appointment as it is.")

    def _on_resched_confirm(self, call: CallContext, t: str, goal: str | None) -> AgentReply:
        st = call.state
        yn = nlu.yes_no(t)
        if self._criteria_in(call, t) and yn is not True:
            self._absorb(call, t)
            self._understood(call)
            return self._book_next(call, "Okay.")
        if yn is None:
            return self._miss(call, "Sorry, please say yes or no.")
        self._understood(call)
        if yn is False:
            return self._ask(call, "date", "Okay.")
        chosen = st["chosen"]
        result = self.tools.reschedule_appointment(
            call.tenant, code=st["code"], slot_id=chosen["slot_id"], verify=st.get("name"),
            now=self._now(call))
        if result.get("ok"):
            code = result.get("confirmation") or st["code"]
            st["outcome"] = "rescheduled"
            st["confirmation"] = code
            st["appointment"] = {"doctor": result["doctor"], "start": result["start"]}
            self._finish_task(call)
            when = self._when(call, {"start": result["start"], "doctor": result["doctor"],
                                     "doctor_name": result.get("doctor_name")})
            log.info("call %s: appointment rescheduled", call.call_id)
            return self._say(call, f"Done. Your appointment is now {when}. Your confirmation "
                             f"code stays {say_characters(code)}. Is there anything else I "
                             "can help you with?", hints=_YES_NO_HINTS, outcome="rescheduled",
                             confirmation=code,
                             appointment={"doctor": result["doctor"], "start": result["start"]})
        if result.get("error") == "slot_taken":
            st.pop("chosen", None)
            return self._search_and_offer(call, "I'm sorry, that time was just taken.")
        if result.get("error") == "too_late":
            return self._late_change(call, message=result.get("message"))
        return self._failed(call, result)


_Handler = Callable[[LocalAgent, CallContext, str, "str | None"], AgentReply]
#: What the caller's words mean depends on what was asked: each stage's handler.
_STAGE_HANDLERS: dict[str, _Handler] = {
    "start": LocalAgent._on_start, "done": LocalAgent._on_start,
    "transferred": LocalAgent._on_start,
    "visit_type": LocalAgent._on_visit_type, "doctor": LocalAgent._on_doctor,
    "doctor_check": LocalAgent._on_doctor_check, "date": LocalAgent._on_date,
    "offer": LocalAgent._on_offer,
    "name": LocalAgent._on_name, "name_spell": LocalAgent._on_name,
    "verify_name": LocalAgent._on_name, "lookup_name": LocalAgent._on_name,
    "name_check": LocalAgent._on_name_check, "notify": LocalAgent._on_notify,
    "phone": LocalAgent._on_phone, "confirm": LocalAgent._on_confirm,
    "anything_else": LocalAgent._on_anything_else,
    "offer_handoff": LocalAgent._on_offer_handoff, "late_handoff": LocalAgent._on_late_handoff,
    "change": LocalAgent._on_change, "code": LocalAgent._on_code,
    "lookup_phone": LocalAgent._on_lookup_phone, "pick_appt": LocalAgent._on_pick_appt,
    "cancel_confirm": LocalAgent._on_cancel_confirm,
    "resched_confirm": LocalAgent._on_resched_confirm,
}
