"""Taking a message after a failed transfer, end to end against a real SQLite database."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from esl_app.config.tenants import Tenant
from esl_app.providers.agent.base import AgentReply, CallContext, Utterance
from esl_app.providers.agent.guard import GuardedAgent
from esl_app.providers.agent.message import start_message
from esl_app.scheduling.callbacks import list_tickets
from esl_app.sim.testing import make_db


class NeverAgent:
    """An inner agent that must not be reached while a message is being taken."""

    name = "never"

    def greet(self, call: CallContext) -> AgentReply:
        return AgentReply("How can I help you today?")

    def respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        raise AssertionError(f"inner agent reached with {utterance!r}")

    def end(self, call: CallContext) -> None:
        pass


@pytest.fixture
def tenant(tmp_path: Path) -> Tenant:
    tenants = make_db(tmp_path, days=1)
    found = tenants.get("sunrise")
    assert found is not None
    return found


def _say(agent: GuardedAgent, call: CallContext, text: str | None = None,
         dtmf: str | None = None) -> AgentReply:
    return agent.respond(call, Utterance(text=text, dtmf=dtmf))


def test_full_message_after_no_answer_stores_one_ticket(tenant: Tenant) -> None:
    agent = GuardedAgent(NeverAgent())
    call = CallContext(call_id="call-42", tenant=tenant, caller="+15550101234", did="1001")
    reply = start_message(call, "NO_ANSWER")
    assert call.state["mode"] == "message"
    assert reply.action == "continue"
    assert reply.text == ("I'm sorry, nobody could answer right now. Would you like to leave "
                          "a message so the clinic can call you back?")
    reply = _say(agent, call, "yes please")
    assert reply.text.endswith("May I have your name, please?")
    reply = _say(agent, call, "my name is jane doe")
    assert reply.text == ("Thank you, Jane Doe. Should we call you back at "
                          "five five five, zero one zero, one two three four?")
    reply = _say(agent, call, "yes that's right")
    assert reply.text.endswith("what is your message for the clinic?")
    reply = _say(agent, call, "i need a refill of my blood pressure medication")
    assert "five five five, zero one zero, one two three four" in reply.text
    assert "from Jane Doe" in reply.text
    assert reply.text.endswith("Shall I send it?")
    reply = _say(agent, call, "yes")
    assert reply.action == "hangup"
    assert reply.outcome == "message_taken"
    assert "call you back" in reply.text
    tickets = list_tickets(tenant.id)
    assert len(tickets) == 1
    t = tickets[0]
    assert (t.name, t.phone, t.call_id, t.status) == ("Jane Doe", "+15550101234", "call-42",
                                                      "open")
    assert t.reason == "i need a refill of my blood pressure medication"
    assert call.state["message"]["ticket_id"] == t.id
    assert call.state["outcome"] == "message_taken"


def test_declining_says_goodbye_and_stores_nothing(tenant: Tenant) -> None:
    agent = GuardedAgent(NeverAgent())
    call = CallContext(call_id="call-43", tenant=tenant, caller="+15550101234")
    reply = start_message(call, "USER_BUSY")
    assert reply.text.startswith("I'm sorry, the line is busy")
    reply = _say(agent, call, "no thanks i'll call back later")
    assert reply.action == "hangup"
    assert reply.outcome == "message_declined"
    assert reply.text == "All right. Thank you for calling Sunrise Family Clinic. Goodbye!"
    assert list_tickets(tenant.id) == []


def test_re_entering_the_number(tenant: Tenant) -> None:
    agent = GuardedAgent(NeverAgent())
    call = CallContext(call_id="call-44", tenant=tenant, caller="+15550101234")
    start_message(call, "bridge failed")
    _say(agent, call, "sure")
    _say(agent, call, "it's bob o'neil")
    # a different number in the same breath as the "no"
    reply = _say(agent, call, "no call me at five five five zero one zero nine nine nine nine")
    assert reply.text == ("Thanks. Should we call you back at "
                          "five five five, zero one zero, nine nine nine nine?")
    # misheard: say no, then the number again on its own
    reply = _say(agent, call, "no")
    assert reply.text.startswith("Okay. What number should we call you back on?")
    reply = _say(agent, call, "five five five oh one oh eight eight eight eight")
    assert reply.text.endswith("five five five, zero one zero, eight eight eight eight?")
    reply = _say(agent, call, "yes")
    assert reply.text.endswith("what is your message for the clinic?")
    _say(agent, call, "question about my lab results")
    # at the confirmation the caller changes the number once more, by keypad
    reply = _say(agent, call, "no")
    assert reply.text == "Okay. What should I change: your name, the number, or the message?"
    reply = _say(agent, call, "the number")
    assert "What number" in reply.text
    reply = _say(agent, call, dtmf="5550107777")
    assert reply.text.endswith("five five five, zero one zero, seven seven seven seven?")
    reply = _say(agent, call, dtmf="1")
    assert reply.text.endswith("Shall I send it?")
    assert "from Bob O'Neil" in reply.text
    reply = _say(agent, call, "yes send it")
    assert reply.outcome == "message_taken"
    [ticket] = list_tickets(tenant.id)
    assert (ticket.name, ticket.phone, ticket.reason) == (
        "Bob O'Neil", "5550107777", "question about my lab results")


def test_caller_asks_without_caller_id_and_it_is_urgent(tenant: Tenant) -> None:
    agent = GuardedAgent(NeverAgent())
    call = CallContext(call_id="call-45", tenant=replace(tenant, handoff=""), caller="anonymous")
    agent.greet(call)
    reply = _say(agent, call, "can someone call me back at 555 010 1234")
    assert reply.text == "Sure, I can take a message for the clinic. May I have your name, please?"
    reply = _say(agent, call, "maria garcia and it's urgent")
    assert reply.text.endswith("five five five, zero one zero, one two three four?")
    _say(agent, call, "yes")
    _say(agent, call, "my son has a rash that is getting worse")
    reply = _say(agent, call, "yes")
    assert reply.outcome == "message_taken"
    [ticket] = list_tickets(tenant.id)
    assert ticket.phone == "5550101234"
    assert ticket.reason == "URGENT: my son has a rash that is getting worse"


def test_no_usable_number_ends_politely_without_a_ticket(tenant: Tenant) -> None:
    agent = GuardedAgent(NeverAgent())
    call = CallContext(call_id="call-46", tenant=tenant, caller=None)
    start_message(call, "NO_ANSWER")
    _say(agent, call, "yes")
    reply = _say(agent, call, "tom")
    assert "What number should we call you back on?" in reply.text
    _say(agent, call, "i don't know it")
    _say(agent, call, "hmm")
    reply = _say(agent, call, "what")
    assert reply.action == "hangup"
    assert reply.outcome == "message_failed"
    assert list_tickets(tenant.id) == []


def test_emergency_during_message_taking_still_wins(tenant: Tenant) -> None:
    agent = GuardedAgent(NeverAgent())
    call = CallContext(call_id="call-47", tenant=tenant, caller="+15550101234")
    start_message(call, "NO_ANSWER")
    _say(agent, call, "yes")
    reply = _say(agent, call, "my baby is turning blue")
    assert reply.outcome == "emergency"
    assert call.state["emergency"]["category"] == "not_breathing"
    assert list_tickets(tenant.id) == []


def test_storage_failure_is_an_ending_not_a_crash(tenant: Tenant) -> None:
    agent = GuardedAgent(NeverAgent())
    ghost = replace(tenant, id="ghost")  # not in the database
    call = CallContext(call_id="call-48", tenant=ghost, caller="+15550101234")
    start_message(call, "NO_ANSWER")
    for text in ("yes", "ann lee", "yes", "please call me"):
        _say(agent, call, text)
    reply = _say(agent, call, "yes")
    assert reply.action == "hangup"
    assert reply.outcome == "message_failed"
    assert "couldn't save your message" in reply.text
