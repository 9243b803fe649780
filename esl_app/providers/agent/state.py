"""What a call remembers: every key of ``CallContext.state``, typed and explained.

One dict per call, shared by the agents that may serve it in turn (the local
agent, Bedrock, the guard, message taking, the resilient fallback) and read by the
call engine and the call record. It stays a plain JSON-able dict — a fallback agent
picks up what a failed one had gathered, and the record stores it as it is — but
its keys are declared here, once: ``tests/test_call_state.py`` fails on a key used
anywhere that is not.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["ASKED_KEYS", "CallState", "REFUSED_TIME_KEYS", "STAGES", "WHEN_KEYS"]


class CallState(TypedDict, total=False):
    """``CallContext.state``. Every key is optional: a new call's state is ``{}``."""

    # -- where the conversation is (local agent)
    stage: str  # one of STAGES: what the last question asked
    resume_stage: str | None  # where to go back to after the front-desk offer is declined
    ask: dict[str, Any]  # the last question: {"stage", "sig", "count"} (repeats escalate)
    misses: int  # answers in a row not understood
    handoff_unclear: int  # answers to "connect you with the front desk?" neither yes nor no
    handoff_declined: int  # "no" to that offer so far: at MAX_DECLINED_OFFERS, a way out
    confirm_unchanged: int  # "no" to the booking, then nothing to change: twice lets it go
    start_no: bool  # a bare "no" as the first answer was asked about once
    last_text: str  # the last thing said, for "could you repeat that?"
    last_hints: list[str]  # and its recogniser hints
    ended: bool  # the agent's end() ran
    # -- what the caller wants (the search criteria)
    intent: str | None  # book, cancel, reschedule
    doctor: str | None  # doctor id
    doctor_guess: str | None  # a doctor id heard uncertainly, asked about before use
    visit_type: str | None
    date_first: str | None  # ISO dates of the days asked for
    date_last: str | None
    date_by_weekday: bool  # that day was named by its weekday ("Monday", "this Friday")
    part: str | None  # morning, afternoon, evening
    at: str | None  # "HH:MM" asked for
    after_time: str | None  # "HH:MM" bounds
    before_time: str | None
    after: str | None  # ISO datetime: "anything later" than the last offer
    earliest: bool  # "the earliest you have"
    offered: list[dict[str, Any]]  # the slots offered last
    chosen: dict[str, Any] | None  # the slot picked (held for the call)
    # -- who the caller is
    name: str | None
    name_pending: dict[str, Any] | None  # a name heard, to be confirmed: {"name", "spelled"}
    name_spelled: bool
    phone: str | None
    phone_spoken: bool  # the caller said a number (not the caller ID)
    phone_from_callerid: bool
    email: str | None
    notify: str  # "sms" or "none": the caller's answer to "shall we text you?"
    # -- an existing appointment (cancel, reschedule)
    code: str | None  # confirmation code said by the caller
    lookup_phone: str | None
    id_failures: int
    candidates: list[dict[str, Any]]  # appointments found for the caller
    appointment: dict[str, Any] | None  # the one being changed, or just booked
    confirmation: str | None  # the code read back
    booked: list[str]  # the confirmation codes booked in this call
    # -- how the call ends
    outcome: str | None  # booked, cancelled, rescheduled, handoff, emergency, ...
    mode: str  # "message" while a message is being taken
    message: dict[str, Any]  # the message being taken (esl_app.providers.agent.message)
    emergency: dict[str, Any]  # {"category", "phrase", ...}: a red flag was heard (guard)
    urgent: bool  # the caller said it is urgent (guard)
    urgent_routed: bool
    # -- other agents
    unannounced: dict[str, Any]  # committed by a failed cloud agent, not yet told the caller
    bedrock: dict[str, Any]  # the Bedrock session: id, invocations
    resilience: dict[str, Any]  # the resilient wrapper's bookkeeping
    agent: str  # the agent that first served the call


#: The conversation stages of the local agent (``state["stage"]``).
STAGES = ("start", "visit_type", "doctor", "doctor_check", "date", "offer", "name",
          "name_check", "name_spell", "verify_name", "lookup_name", "notify", "phone",
          "confirm", "anything_else", "offer_handoff", "late_handoff", "change", "code",
          "lookup_phone", "pick_appt", "cancel_confirm", "resched_confirm", "done",
          "transferred")

#: When the caller wants the visit: cleared together when the caller starts over.
WHEN_KEYS = ("date_first", "date_last", "part", "at", "after_time", "before_time", "after",
             "earliest")
#: Cleared when the offered times are refused: the day and the time, not the part of day.
REFUSED_TIME_KEYS = ("date_first", "date_last", "at", "after", "earliest")
#: What the caller has told us; a question asked again with all of these unchanged is
#: asked "without progress" (esl_app.providers.agent.local.turns).
ASKED_KEYS = ("intent", "doctor", "doctor_guess", *WHEN_KEYS, "visit_type", "name",
              "name_pending", "phone", "email", "code", "chosen", "offered", "candidates",
              "lookup_phone", "appointment", "confirmation")
