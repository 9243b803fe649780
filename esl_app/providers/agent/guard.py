"""The clinic-safety wrapper every agent runs inside.

Safety must not depend on which agent serves a tenant (or on a Bedrock prompt
being obeyed), so the checks sit in front of it: every caller turn is
screened for red flags before the inner agent sees it, and the
message-taking sub-dialogue (:mod:`esl_app.providers.agent.message`) is
handled here too. Order of a turn:

1. an emergency already flagged → the emergency reply again (the flow never resumes);
2. a red flag (:func:`esl_app.providers.agent.safety.detect_emergency`) → flag
   ``call.state["emergency"]`` and reply with :func:`.safety.emergency_reply`;
3. ``call.state["mode"] == "message"`` → :func:`message.take_message`;
4. "can I leave a message" / "call me back at …" → start taking a message,
   unless the inner agent is itself collecting a name or number
   (``call.state["stage"]`` in :data:`CONTACT_STAGES`), or is reading back a
   booking with its number, where "yes, but call me on …" changes that number
   (:data:`NUMBER_STAGES`);
5. "it's urgent" → transfer to the urgent line, else the front desk (once per
   call); with neither, take an urgent message;
6. otherwise the inner agent.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from esl_app.providers.agent import message
from esl_app.providers.agent.base import (
    Agent,
    AgentReply,
    AgentStream,
    CallContext,
    Utterance,
    greet_stream,
    respond_stream,
)
from esl_app.providers.agent.local import nlu
from esl_app.providers.agent.safety import EmergencyMatch, detect_emergency, emergency_reply

__all__ = ["CONTACT_STAGES", "NUMBER_STAGES", "GuardedAgent"]

log = logging.getLogger(__name__)

# stages of the local agent in which "call me back at …" is an answer, not a request
CONTACT_STAGES = frozenset({"name", "phone", "lookup_name", "lookup_phone",
                            "verify_name", "code", "name_check", "name_spell"})
# stages in which the local agent reads back the number it will book with: "call me on
# <number>" or "call me on my cell" there is about that number, not a message
NUMBER_STAGES = frozenset({"confirm"})
_CALL_ME_ON = re.compile(r"\b(?:call|ring|phone|reach|text) (?:me|us) (?:back )?(?:on|at)\b")


class GuardedAgent:
    """An :class:`Agent` that screens each turn for emergencies and handles messages."""

    def __init__(self, inner: Agent) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "agent")

    @property
    def in_process(self) -> bool:
        """As the inner agent: the screening and message taking wait on nothing remote."""
        return bool(getattr(self.inner, "in_process", False))

    def greet(self, call: CallContext) -> AgentReply:
        """The inner agent's greeting (nothing has been said yet)."""
        return self.inner.greet(call)

    def respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        """One caller turn, screened (see the module docstring for the order)."""
        own = self._screen(call, utterance)
        return own if own is not None else self.inner.respond(call, utterance)

    def greet_stream(self, call: CallContext) -> AgentStream:
        """The inner agent's greeting, streamed when it streams."""
        return greet_stream(self.inner, call)

    def respond_stream(self, call: CallContext, utterance: Utterance) -> AgentStream:
        """Screened like :meth:`respond`; the inner agent's turn is streamed when it streams."""
        own = self._screen(call, utterance)
        if own is None:
            yield from respond_stream(self.inner, call, utterance)
            return
        if own.text:
            yield own.text
        yield own

    def _screen(self, call: CallContext, utterance: Utterance) -> AgentReply | None:
        """The guard's own reply to this turn, or None to let the inner agent answer."""
        st = call.state
        if st.get("emergency"):
            return emergency_reply(call.tenant)
        match = detect_emergency(utterance.text)
        if match is not None:
            return self._emergency(call, match)
        if st.get("mode") == "message":
            return message.take_message(call, utterance)
        text = utterance.text or ""
        if text and st.get("stage") not in CONTACT_STAGES and message.wants_message(text) \
                and not self._number_for_booking(st, text):
            return message.start_message(call, "requested", text=text)
        if text and not st.get("urgent_routed") and message.is_urgent(text):
            return self._urgent(call, text)
        return None

    @staticmethod
    def _number_for_booking(st: dict, text: str) -> bool:
        """At a read-back with a number, "call me on …" gives the number to book with."""
        if st.get("stage") not in NUMBER_STAGES:
            return False
        t = nlu.normalize(text, clock=False)
        return bool(message.parse_phone(text) or _CALL_ME_ON.search(t))

    def end(self, call: CallContext) -> None:
        """Release the inner agent's session (never raises)."""
        try:
            self.inner.end(call)
        except Exception:  # noqa: BLE001 - end() must never raise
            log.exception("call %s: agent end failed", call.call_id)

    def _emergency(self, call: CallContext, match: EmergencyMatch) -> AgentReply:
        now = call.now or datetime.now(UTC)
        call.state["emergency"] = {"category": match.category, "phrase": match.phrase,
                                   "at": now.isoformat(),
                                   "interrupted": call.state.get("stage")}
        call.state["outcome"] = "emergency"
        log.warning("call %s: emergency detected (%s)", call.call_id, match.category)
        return emergency_reply(call.tenant, match)

    def _urgent(self, call: CallContext, text: str) -> AgentReply:
        st = call.state
        st["urgent"] = True
        st["urgent_routed"] = True
        target = call.tenant.urgent_line or call.tenant.handoff
        if target:
            log.info("call %s: caller says it is urgent; transferring", call.call_id)
            st["outcome"] = "handoff"
            return AgentReply("I understand it's urgent. I'm putting you through to someone "
                              "now.", action="transfer", transfer_to=target, outcome="handoff")
        return message.start_message(call, "unavailable", text=text, urgent=True)
