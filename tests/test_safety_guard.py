"""GuardedAgent: an emergency mid-booking stops the inner agent at once, whatever it is."""

from __future__ import annotations

from dataclasses import replace

from esl_app.config.tenants import Tenant
from esl_app.providers.agent.base import Agent, AgentReply, CallContext, Utterance
from esl_app.providers.agent.guard import GuardedAgent
from esl_app.providers.agent.message import start_message


class ScriptedAgent:
    """A real (tiny) booking agent: asks doctor, day, name in turn, and records what it heard."""

    name = "scripted"

    def __init__(self) -> None:
        self.heard: list[str] = []
        self.ended = False

    def greet(self, call: CallContext) -> AgentReply:
        call.state["stage"] = "start"
        return AgentReply("How can I help you today?")

    def respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        self.heard.append(utterance.text or "")
        order = {"start": ("doctor", "Which doctor would you like to see?"),
                 "doctor": ("date", "What day works for you?"),
                 "date": ("phone", "What's the best number to reach you?"),
                 "phone": ("done", "You're booked.")}
        stage, text = order[call.state["stage"]]
        call.state["stage"] = stage
        return AgentReply(text, outcome="booked" if stage == "done" else None)

    def end(self, call: CallContext) -> None:
        self.ended = True


def _tenant(**kw: object) -> Tenant:
    base = Tenant(id="sunrise", name="Sunrise Family Clinic", dids=("1001",),
                  timezone="America/New_York", handoff="user/1000")
    return replace(base, **kw)  # type: ignore[arg-type]


def _call(tenant: Tenant) -> CallContext:
    return CallContext(call_id="c-1", tenant=tenant, caller="+15550101234", did="1001")


def _booking_until_emergency(tenant: Tenant) -> tuple[ScriptedAgent, GuardedAgent,
                                                        CallContext, AgentReply]:
    inner = ScriptedAgent()
    agent: Agent = GuardedAgent(inner)
    call = _call(tenant)
    assert agent.greet(call).text == "How can I help you today?"
    assert agent.respond(call, Utterance("i'd like to book an appointment")).text.startswith(
        "Which doctor")
    assert agent.respond(call, Utterance("doctor smith")).text.startswith("What day")
    reply = agent.respond(call, Utterance("actually my chest hurts really bad right now"))
    return inner, agent, call, reply  # type: ignore[return-value]


def test_emergency_mid_booking_hangs_up_with_emergency_number() -> None:
    inner, agent, call, reply = _booking_until_emergency(_tenant())
    assert inner.heard == ["i'd like to book an appointment", "doctor smith"]
    assert reply.action == "hangup"
    assert reply.outcome == "emergency"
    assert "hang up and call 911 now" in reply.text
    assert call.state["emergency"]["category"] == "chest_pain"
    assert call.state["emergency"]["interrupted"] == "date"
    # the booking flow never resumes, even if the engine asked again
    again = agent.respond(call, Utterance("tuesday morning"))
    assert again.outcome == "emergency"
    assert len(inner.heard) == 2
    agent.end(call)
    assert inner.ended


def test_emergency_transfers_to_urgent_line_when_configured() -> None:
    inner, _agent, call, reply = _booking_until_emergency(_tenant(urgent_line="user/2000"))
    assert reply.action == "transfer"
    assert reply.transfer_to == "user/2000"
    assert reply.outcome == "emergency"
    assert len(inner.heard) == 2
    # the urgent line did not answer: never a message, always the emergency number
    after = start_message(call, "NO_ANSWER")
    assert after.action == "hangup"
    assert after.outcome == "emergency"
    assert "call 911 now" in after.text
    assert call.state.get("mode") != "message"


def test_ordinary_turns_and_negations_reach_the_inner_agent() -> None:
    inner = ScriptedAgent()
    agent = GuardedAgent(inner)
    call = _call(_tenant())
    agent.greet(call)
    agent.respond(call, Utterance("i need my chest x-ray appointment"))
    agent.respond(call, Utterance("no chest pain, just a check up with doctor smith"))
    assert len(inner.heard) == 2
    assert "emergency" not in call.state
    assert agent.name == "scripted"


def test_call_me_back_while_the_agent_collects_a_number_is_an_answer() -> None:
    inner = ScriptedAgent()
    agent = GuardedAgent(inner)
    call = _call(_tenant())
    agent.greet(call)
    call.state["stage"] = "phone"
    reply = agent.respond(call, Utterance("you can call me back at 555 010 1234"))
    assert reply.text == "You're booked."
    assert call.state.get("mode") != "message"


def test_message_request_starts_taking_a_message() -> None:
    inner = ScriptedAgent()
    agent = GuardedAgent(inner)
    call = _call(_tenant())
    agent.greet(call)
    reply = agent.respond(call, Utterance("can i just leave a message for the nurse"))
    assert call.state["mode"] == "message"
    assert reply.text == "Sure, I can take a message for the clinic. May I have your name, please?"
    assert inner.heard == []


def test_urgent_goes_to_a_person_once() -> None:
    inner = ScriptedAgent()
    agent = GuardedAgent(inner)
    call = _call(_tenant(urgent_line="user/2000"))
    agent.greet(call)
    reply = agent.respond(call, Utterance("it's urgent, i need to talk to someone"))
    assert (reply.action, reply.transfer_to) == ("transfer", "user/2000")
    assert call.state["urgent"] is True
    # without urgent line the front desk; without either, an urgent message
    call2 = _call(_tenant())
    assert GuardedAgent(ScriptedAgent()).respond(call2, Utterance("this is urgent")).transfer_to \
        == "user/1000"
    call3 = _call(_tenant(handoff=""))
    reply3 = GuardedAgent(ScriptedAgent()).respond(call3, Utterance("this is urgent"))
    assert reply3.action == "continue"
    assert call3.state["mode"] == "message"
    assert call3.state["message"]["urgent"] is True
    assert "urgent message" in reply3.text
