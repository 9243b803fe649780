"""The reminder conversation, once the patient's phone is answered by a person.

The bot says who it is and for whom (the first name only until the callee says they
are the patient or a parent), then when the appointment is; the callee confirms,
cancels or moves it (the same search and policy rules as inbound calls: the old slot is
released only when the new one is booked, in one transaction), asks for a person, or
asks never to be called again. Every ending carries a ``reminder_*`` outcome.

It is an :class:`~esl_app.providers.agent.base.Agent`, so the call engine plays it like
any other; the state it keeps is this call's only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from esl_app.providers.agent.base import AgentReply, CallContext, Utterance

__all__ = ["ReminderAgent", "ReminderInfo", "load_reminder", "voicemail_text"]

log = logging.getLogger(__name__)

_DONT_CALL = ("do not call", "don't call", "dont call", "stop calling", "never call",
              "take me off", "remove me from", "remove my number", "no more calls",
              "do not ring", "stop these calls", "unsubscribe")
_NOT_HERE = ("not here", "not home", "not available", "isn't here", "is not here",
             "is out", "not in", "can't come to the phone", "cannot come to the phone")
_WRONG = ("wrong number", "no one by that name", "nobody by that name", "don't know",
          "do not know any", "no such person")
_WHO = ("who is this", "who's this", "who is calling", "who's calling", "what is this about",
        "what's this about", "who are you", "sorry who")
_SELF = ("speaking", "this is", "that's me", "that is me", "it's me", "yes it is", "i am")
_NEGATION = re.compile(r"\bnot\b|n't\b|\bnope\b")
_PARENT = ("parent", "mother", "father", "mom", "dad", "mum", "guardian", "her husband",
           "his wife", "my son", "my daughter", "my child", "his mother", "her mother",
           "caregiver", "carer")


@dataclass(frozen=True)
class ReminderInfo:
    """The appointment a reminder is about, as the conversation needs it."""

    reminder_id: int
    tenant_id: str
    code: str
    first_name: str
    doctor: str
    doctor_name: str
    start: datetime  # aware, clinic time
    callback: str     # the number to call back (the clinic's)
    phone: str = ""   # the patient's number this call went to


def load_reminder(reminder_id: int, tenant: Any) -> ReminderInfo | None:
    """The reminder's appointment, or None when it no longer exists."""
    from esl_app.db import database
    from esl_app.db.models import Appointment, Doctor, ReminderCall, Slot

    with database().connection_context():
        row = (ReminderCall.select(ReminderCall, Appointment, Slot, Doctor)
               .join(Appointment).join(Slot).join(Doctor)
               .where(ReminderCall.id == reminder_id, ReminderCall.tenant == tenant.id)
               .first())
    if row is None:
        return None
    appt = row.appointment
    slot = appt.slot
    first = (appt.patient_name or "").split()[0] if appt.patient_name else "the patient"
    policy = tenant.reminders
    callback = (policy.caller_id if policy and policy.caller_id else
                (tenant.dids[0] if tenant.dids else ""))
    return ReminderInfo(
        reminder_id=reminder_id, tenant_id=tenant.id, code=appt.code, first_name=first,
        doctor=slot.doctor.slug, doctor_name=slot.doctor.name,
        start=slot.start.replace(tzinfo=UTC).astimezone(tenant.tz), callback=callback,
        phone=appt.phone or "")


def _spoken_number(number: str) -> str:
    from esl_app.providers.agent.tools import spoken_digits

    return spoken_digits(number)


def voicemail_text(tenant: Any, callback: str) -> str:
    """The message left on a machine: the clinic and a call-back number, nothing else."""
    number = f" Please call us back at {_spoken_number(callback)}." if callback else ""
    return (f"Hello, this is {tenant.name} calling with a reminder about an upcoming "
            f"appointment.{number} Thank you, goodbye.")


@dataclass
class _State:
    step: str = "identify"
    misses: int = 0
    options: list[Any] = field(default_factory=list)
    chosen: Any = None


class ReminderAgent:
    """The local reminder conversation (no cloud needed; Bedrock is not used here)."""

    name = "reminder"

    def __init__(self, info: ReminderInfo) -> None:
        self.info = info
        self._state: dict[str, _State] = {}

    # -- Agent -----------------------------------------------------------------------

    def greet(self, call: CallContext) -> AgentReply:
        self._state[call.call_id] = _State()
        return AgentReply(
            f"Hello, this is {call.tenant.name} calling with a reminder for "
            f"{self.info.first_name}. Am I speaking with {self.info.first_name}, or a "
            "parent or guardian?", hints=("yes", "no", "speaking", "this is her mother"))

    def end(self, call: CallContext) -> None:
        self._state.pop(call.call_id, None)

    def respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        from esl_app.providers.agent.local import nlu

        st = self._state.setdefault(call.call_id, _State())
        text = (utterance.text or "").strip()
        t = nlu.normalize(text)
        if utterance.dtmf == "0" or (t and nlu.intent(text) == "operator"):
            return self._handoff(call, "You asked for a person")
        if t and any(p in t.replace("’", "'") for p in _DONT_CALL):
            return self._do_not_call(call)
        if not t and not utterance.dtmf:
            return self._miss(call, st)
        handler = getattr(self, f"_on_{st.step}")
        return handler(call, st, text, t)

    # -- steps -----------------------------------------------------------------------

    def _on_identify(self, call: CallContext, st: _State, text: str, t: str) -> AgentReply:
        from esl_app.providers.agent.local import nlu

        if any(p in t for p in _WHO):
            return AgentReply(f"This is {call.tenant.name}. I'm calling with an appointment "
                              f"reminder for {self.info.first_name}. Is that you, or are you "
                              "a parent or guardian?")
        if any(p in t for p in _WRONG):
            return self._bye("Sorry to have bothered you. Goodbye.", "reminder_incomplete")
        if any(p in t for p in _NOT_HERE):
            return self._bye(
                f"No problem. Please ask {self.info.first_name} to call us back at "
                f"{_spoken_number(self.info.callback)}. Goodbye.", "reminder_incomplete")
        yes = nlu.yes_no(text)
        # "No, this is her sister" and "I'm not him" hold "this is" / "i am": a denial
        # outweighs those phrases, so the appointment is told only to the patient or a
        # parent ("No, this is her mother" is a parent, "I'm not her mother" is not).
        denied = _NEGATION.search(t) is not None
        parent = any(p in t for p in _PARENT) and not denied
        itself = yes is not False and not denied and (yes or any(p in t for p in _SELF))
        if parent or itself:
            st.step, st.misses = "confirm", 0
            return AgentReply(self._details() + " Can you make it? You can say yes, cancel "
                              "it, or change the time.",
                              hints=("yes", "cancel", "change", "reschedule"))
        if yes is False or denied:
            return self._bye(f"Sorry to have bothered you. Please ask "
                             f"{self.info.first_name} to call us back at "
                             f"{_spoken_number(self.info.callback)}. Goodbye.",
                             "reminder_incomplete")
        return self._miss(call, st)

    def _details(self) -> str:
        from esl_app.providers.agent.tools import spoken_time

        return (f"{self.info.first_name} has an appointment with {self.info.doctor_name} "
                f"on {spoken_time(self.info.start)}.")

    def _on_confirm(self, call: CallContext, st: _State, text: str, t: str) -> AgentReply:
        from esl_app.providers.agent.local import nlu

        goal = nlu.intent(text)
        if goal == "reschedule" or any(w in t for w in ("change", "move", "another day",
                                                         "different", "later", "earlier")):
            st.step, st.misses = "new_day", 0
            return AgentReply("Sure. What day would suit you better?",
                              hints=("tomorrow", "monday", "next week"))
        if goal == "cancel" or "cancel" in t:
            st.step, st.misses = "confirm_cancel", 0
            return AgentReply("Shall I cancel the appointment on "
                              f"{self._when()}?", hints=("yes", "no"))
        if goal in ("yes", "book") or nlu.yes_no(text):
            return self._bye(f"Thank you, we'll see {self.info.first_name} then. Goodbye.",
                             "reminder_confirmed")
        if nlu.yes_no(text) is False:
            st.step, st.misses = "cancel_or_move", 0
            return AgentReply("Would you like to cancel it, or move it to another time?",
                              hints=("cancel", "move it"))
        if any(w in t for w in ("repeat", "again", "what time", "when")):
            return AgentReply(self._details() + " Can you make it?")
        return self._miss(call, st)

    def _on_cancel_or_move(self, call: CallContext, st: _State, text: str, t: str
                           ) -> AgentReply:
        return self._on_confirm(call, st, text, t)

    def _when(self) -> str:
        from esl_app.providers.agent.tools import spoken_time

        return spoken_time(self.info.start)

    def _on_confirm_cancel(self, call: CallContext, st: _State, text: str, t: str
                           ) -> AgentReply:
        from esl_app.providers.agent.local import nlu
        from esl_app.scheduling import service
        from esl_app.scheduling.errors import NotAllowed, SchedulingError

        yes = nlu.yes_no(text)
        if yes is None and "cancel" in t:
            yes = True
        if yes is None:
            return self._miss(call, st)
        if not yes:
            st.step, st.misses = "confirm", 0
            return AgentReply("Okay, I won't cancel it. Can you make it on "
                              f"{self._when()}?", hints=("yes", "change"))
        try:
            service.cancel(self.info.tenant_id, self.info.code,
                           actor=f"call:{call.call_id}")
        except NotAllowed:
            return self._handoff(call, "It's too close to the appointment to cancel by phone")
        except SchedulingError as exc:
            log.info("reminder %d: cancel failed (%s)", self.info.reminder_id,
                     type(exc).__name__)
            return self._handoff(call, "I couldn't cancel it")
        return self._bye("Your appointment is cancelled. Thank you for letting us know. "
                         "Goodbye.", "reminder_cancelled")

    def _on_new_day(self, call: CallContext, st: _State, text: str, t: str) -> AgentReply:
        from esl_app.providers.agent.local import nlu
        from esl_app.providers.agent.tools import spoken_time
        from esl_app.scheduling import service

        today = (call.now or datetime.now(UTC)).astimezone(call.tenant.tz).date()
        wanted = nlu.parse_date(text, today)
        part = None
        pref = nlu.parse_time(text)
        if pref is not None:
            part = getattr(pref, "part", None)
        asap = any(w in t for w in ("soon", "earliest", "any day", "whenever", "next available"))
        if wanted is None and not asap:
            return self._miss(call, st, "What day would suit you better? For example, "
                                        "next Tuesday.")
        day: date | None = wanted.single if wanted is not None else None
        try:
            slots = service.search_slots(
                self.info.tenant_id, doctor=self.info.doctor,
                date=wanted.first if wanted is not None else None,
                date_to=wanted.last if wanted is not None and day is None else None,
                part_of_day=part if part in ("morning", "afternoon", "evening") else None,
                limit=3, now=call.now)
        except Exception as exc:  # noqa: BLE001 - a failed search: the front desk helps
            log.info("reminder %d: search failed (%s)", self.info.reminder_id,
                     type(exc).__name__)
            return self._handoff(call, "I couldn't look up the free times")
        slots = [s for s in slots if s.start != self.info.start]
        if not slots:
            return AgentReply("I'm sorry, I have nothing free then with "
                              f"{self.info.doctor_name}. Is there another day that suits you?")
        st.options, st.step, st.misses = slots, "pick", 0
        times = [spoken_time(s.start, with_day=(i == 0 or s.start.date() != slots[0].start.date()))
                 for i, s in enumerate(slots)]
        said = times[0] if len(times) == 1 else ", ".join(times[:-1]) + " or " + times[-1]
        return AgentReply(f"I have {said}. Which would you like?",
                          hints=("the first one", "the second one", "the last one"))

    def _on_pick(self, call: CallContext, st: _State, text: str, t: str) -> AgentReply:
        from esl_app.providers.agent.local import nlu

        options = [nlu.Option(start=s.start, doctor=s.doctor, doctor_name=s.doctor_name)
                   for s in st.options]
        index = nlu.choose(text, options)
        if index is None and len(options) == 1 and nlu.yes_no(text):
            index = 0
        if index is None:
            if nlu.parse_date(text, st.options[0].start.date()) is not None:
                st.step = "new_day"
                return self._on_new_day(call, st, text, t)
            return self._miss(call, st, "Which time would you like? For example, the "
                                        "first one.")
        st.chosen, st.step, st.misses = st.options[index], "confirm_move", 0
        from esl_app.providers.agent.tools import spoken_time

        return AgentReply(f"Shall I move the appointment to {spoken_time(st.chosen.start)}?",
                          hints=("yes", "no"))

    def _on_confirm_move(self, call: CallContext, st: _State, text: str, t: str
                         ) -> AgentReply:
        from esl_app.providers.agent.local import nlu
        from esl_app.providers.agent.tools import spoken_time
        from esl_app.scheduling import service
        from esl_app.scheduling.errors import NotAllowed, SchedulingError, SlotTaken

        yes = nlu.yes_no(text)
        if yes is None:
            return self._miss(call, st)
        if not yes:
            st.step, st.misses = "new_day", 0
            return AgentReply("Okay. What other day would suit you?")
        try:
            view = service.reschedule(self.info.tenant_id, self.info.code,
                                      st.chosen.slot_id, actor=f"call:{call.call_id}")
        except SlotTaken:
            st.step = "new_day"
            return AgentReply("I'm sorry, that time was just taken. What other day would "
                              "suit you?")
        except NotAllowed:
            return self._handoff(call, "It's too close to the appointment to change it by "
                                       "phone")
        except SchedulingError as exc:
            log.info("reminder %d: reschedule failed (%s)", self.info.reminder_id,
                     type(exc).__name__)
            return self._handoff(call, "I couldn't move it")
        return AgentReply(
            f"Done: the appointment is now on {spoken_time(view.start)} with "
            f"{view.doctor_name}. Thank you, goodbye.", action="hangup",
            outcome="reminder_rescheduled", confirmation=view.confirmation,
            appointment={"doctor": view.doctor, "start": view.start.isoformat()})

    # -- endings ---------------------------------------------------------------------

    def _miss(self, call: CallContext, st: _State, rephrase: str | None = None
              ) -> AgentReply:
        st.misses += 1
        if st.misses >= 3:
            return self._bye("I'm sorry, I'm having trouble understanding. Please call us "
                             f"back at {_spoken_number(self.info.callback)}. Goodbye.",
                             "reminder_incomplete")
        if st.misses == 2:
            return AgentReply("Sorry, I didn't get that. You can also press zero to speak "
                              "to the front desk. " + (rephrase or self._question(st)))
        return AgentReply("Sorry, I didn't get that. " + (rephrase or self._question(st)))

    def _question(self, st: _State) -> str:
        return {
            "identify": f"Am I speaking with {self.info.first_name}? Please say yes or no.",
            "confirm": f"Can {self.info.first_name} make it on {self._when()}? Say yes, "
                       "cancel, or change.",
            "cancel_or_move": "Would you like to cancel it, or move it?",
            "confirm_cancel": "Shall I cancel the appointment? Please say yes or no.",
            "new_day": "What day would suit you better?",
            "pick": "Which time would you like? For example, the first one.",
            "confirm_move": "Shall I move the appointment? Please say yes or no.",
        }.get(st.step, "Could you say that again?")

    def _bye(self, text: str, outcome: str) -> AgentReply:
        # the appointment a confirmed or cancelled reminder was about, in the call record
        # (as an inbound cancel has it): its confirmations are shown with the call
        code = self.info.code if outcome in ("reminder_confirmed", "reminder_cancelled") \
            else None
        return AgentReply(text, action="hangup", outcome=outcome, confirmation=code)

    def _handoff(self, call: CallContext, why: str) -> AgentReply:
        if not call.tenant.handoff:
            return self._bye(f"{why}. Please call us back at "
                             f"{_spoken_number(self.info.callback)}. Goodbye.",
                             "reminder_incomplete")
        return AgentReply(f"{why}. I'll connect you with the front desk now.",
                          action="transfer", transfer_to=call.tenant.handoff,
                          outcome="reminder_handoff")

    def _do_not_call(self, call: CallContext) -> AgentReply:
        from esl_app.reminders.store import add_do_not_call

        if self.info.phone:  # the number dialled (the call's "caller" is the clinic)
            try:
                add_do_not_call(self.info.tenant_id, self.info.phone, source="call")
            except ValueError:
                log.info("reminder %d: no number to add to do-not-call", self.info.reminder_id)
        return self._bye("Understood. We won't call this number with reminders again. "
                         "Goodbye.", "reminder_declined")
