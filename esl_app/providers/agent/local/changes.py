"""Cancelling and rescheduling: finding the caller's appointment, then changing it."""


from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from esl_app.providers.agent.base import AgentReply, CallContext
from esl_app.providers.agent.local import nlu
from esl_app.providers.agent.local.wording import _YES_NO_HINTS
from esl_app.providers.markup import say_characters

log = logging.getLogger(__name__)


class ChangeStages:
    """The LocalAgent stages that find an appointment and cancel or move it (a mixin)."""

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


