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
from datetime import datetime
from typing import Any

from esl_app.providers.agent import message, tools
from esl_app.providers.agent.base import AgentError, AgentReply, CallContext, Utterance
from esl_app.providers.agent.local import nlu, turns
from esl_app.providers.agent.local.booking import BookingStages
from esl_app.providers.agent.local.changes import ChangeStages
from esl_app.providers.agent.local.names import mark_spelling_breaks
from esl_app.providers.agent.local.wording import (
    _DAY_NAMES,
    _DIGIT_HINTS,
    _DTMF_YES_NO,
    _NAME_STAGES,
    _YES_NO_HINTS,
    HANDOFF_UNCLEAR,
    MAX_DECLINED_OFFERS,
    MAX_MISSES,
    _article,
    _digits_spoken,
    _short_doctor,
    _visit_question,
    format_hours,
)
from esl_app.support.bridge import SLICE_S, cooperate

__all__ = ["LocalAgent", "format_hours"]

log = logging.getLogger(__name__)


class LocalAgent(BookingStages, ChangeStages):
    """The deterministic local agent (``agent: local`` in tenants.yaml).

    Stateless itself (one instance serves every call); per-call memory is
    ``call.state``. ``tool_set`` is the module of agent tools, replaceable
    only so a test or an operator can wrap it (e.g. to count calls).
    """

    name = "local"
    #: its turns are this process's own work (CPU and the clinic's database, no model
    #: service to wait on): the call engine runs them on the call's own greenlet
    in_process = True

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
        # the understanding was one step; the stage's work is the next, unless the two
        # fit one slice since the call woke for this turn
        cooperate(SLICE_S)
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
        # "I heard Monday Good. Is that your name?" is answered with letters too ("A M Y");
        # where a name may be spelled, "J O N, N O T T" keeps its two words
        marked = mark_spelling_breaks(text) if stage in (
            *_NAME_STAGES, "name_check", "confirm", "phone") else text
        if stage in (*_NAME_STAGES, "name_check"):
            said = nlu.normalize(marked, clock=False)
        else:
            said = nlu.normalize(marked) if marked != text else t
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
            declined = st.get("handoff_declined", 0) + 1
            st["handoff_declined"] = declined
            if declined >= MAX_DECLINED_OFFERS:
                return self._way_out(call)
            return self._ask(call, st.pop("resume_stage", "start") or "start",
                             "Okay, let's try again.")
        if unclear + 1 >= HANDOFF_UNCLEAR:
            # neither yes nor no, again: a person can sort out what we cannot (asking the
            # same question on and on would keep the caller in a loop until they hang up)
            return self._handoff(call, "caller could not be understood")
        st["handoff_unclear"] = unclear + 1
        return self._miss(call, "Please say yes or no.")

    def _way_out(self, call: CallContext) -> AgentReply:
        """The front desk declined again: no third round of "let's try again".

        Each round (not understood, rephrased, offered the front desk, declined) costs
        the caller three turns and nothing bounds it: a caller who keeps saying "no"
        would go round until they hang up. The second refusal means the bot cannot
        help over the phone and a person now is not wanted: the caller hears when the
        clinic is open and is offered a message for a call back; declined too, the
        call ends with a goodbye (``message_declined``).
        """
        st = call.state
        log.info("call %s: front desk declined %d times: message offered",
                 call.call_id, st.get("handoff_declined", 0))
        for key in ("resume_stage", "ask", "handoff_unclear"):
            st.pop(key, None)
        st["stage"] = "done"
        lead = f"All right. I'm sorry I couldn't help you this time. {format_hours(call.tenant)}"
        return message.start_message(call, "declined", lead=lead)

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
