"""The dialogue-agent interface: one call in, one reply out, tools behind it.

Every agent (the embedded local one, Bedrock) implements :class:`Agent`. The
call engine never knows which one it talks to; it only acts on the
:class:`AgentReply` (speak, transfer, hang up) and records outcomes.

Streaming (optional): an agent may also offer ``respond_stream``/``greet_stream``,
generators that yield the reply's text in pieces as it is generated and end
with the complete :class:`AgentReply` (action, outcome, hints…), so the call
engine can synthesise and play the first sentence while the rest is still being
written. :func:`respond_stream` and :func:`greet_stream` call them when present
and otherwise wrap ``respond``/``greet`` (one piece, then the reply), so every
agent works with the streaming engine. The contract of a stream:

* every ``str`` it yields is committed: the caller will hear it (unless they
  barge in), so an agent yields only text it will not take back;
* the last item is the :class:`AgentReply`; its ``text`` is the whole reply for
  the record (the streamed pieces joined); when nothing was streamed the engine
  speaks ``reply.text``, and when ``reply.text`` extends the streamed text the
  engine speaks the rest;
* a failure raises :class:`AgentError` like ``respond`` does, possibly after
  some text was yielded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from esl_app.config.tenants import Tenant
from esl_app.providers.agent.state import CallState

__all__ = [
    "Agent",
    "AgentError",
    "AgentReply",
    "AgentStream",
    "CallContext",
    "Utterance",
    "complete_sentences",
    "greet_stream",
    "respond_stream",
]


class AgentError(RuntimeError):
    """The agent could not produce a reply (provider down, timeout, bad stream)."""


@dataclass
class CallContext:
    """What an agent may know about the call it serves.

    ``state`` is the per-call memory shared by agents: a fallback agent can
    read what the failed one had gathered (intent, chosen slot, name, contact).
    Its keys are declared in :class:`esl_app.providers.agent.state.CallState`.
    """

    call_id: str
    tenant: Tenant
    caller: str | None = None
    did: str | None = None
    now: datetime | None = None  # aware; None means "the real clock" (tests pin it)
    state: CallState = field(default_factory=lambda: CallState())
    # Lets an agent ask the call engine for something while it works (``"filler"``:
    # play "One moment while I check." now); set by the call engine, may be None.
    signal: Callable[[str], None] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Utterance:
    """One caller turn: what they said (final transcript) or the keys they pressed."""

    text: str | None = None
    dtmf: str | None = None
    confidence: float | None = None


@dataclass
class AgentReply:
    """What the call engine does next.

    ``text`` may hold ``<say-as interpret-as="characters">K7M4Q2</say-as>``
    spans (see :mod:`esl_app.providers.markup`); everything else is plain text.
    ``hints`` are phrases the agent expects next (doctor names, yes/no…) for
    speech recognisers that accept a bias.
    """

    text: str
    action: Literal["continue", "transfer", "hangup"] = "continue"
    transfer_to: str | None = None
    outcome: str | None = None  # booked, cancelled, rescheduled, handoff, emergency, …
    confirmation: str | None = None
    appointment: dict[str, Any] | None = None
    hints: tuple[str, ...] = ()


class Agent(Protocol):
    """A dialogue agent. Blocking calls are fine (gevent makes I/O cooperative)."""

    name: str

    def greet(self, call: CallContext) -> AgentReply:
        """The opening line after the tenant's greeting (e.g. "How can I help you?")."""
        ...

    def respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        """The reply to one caller turn; raises :class:`AgentError` on failure."""
        ...

    def end(self, call: CallContext) -> None:
        """The call is over: release the session (never raises)."""
        ...

    # Optional: ``in_process = True`` says a turn is this process's own work (CPU and
    # the clinic's database), never a wait on a remote model: the call engine then runs
    # it on the call's own greenlet, not a helper, and speaks the reply with no hand-off.


#: What a streaming agent yields: text pieces, then exactly one AgentReply.
AgentStream = Iterator["str | AgentReply"]


def respond_stream(agent: Agent, call: CallContext, utterance: Utterance) -> AgentStream:
    """``agent.respond_stream`` when it has one, else ``respond`` as a one-piece stream."""
    stream = getattr(agent, "respond_stream", None)
    if stream is not None:
        return stream(call, utterance)
    return _whole(lambda: agent.respond(call, utterance))


def greet_stream(agent: Agent, call: CallContext) -> AgentStream:
    """``agent.greet_stream`` when it has one, else ``greet`` as a one-piece stream."""
    stream = getattr(agent, "greet_stream", None)
    if stream is not None:
        return stream(call)
    return _whole(lambda: agent.greet(call))


def _whole(fn: Callable[[], AgentReply]) -> AgentStream:
    reply = fn()
    if reply.text:
        yield reply.text
    yield reply


def complete_sentences(text: str) -> tuple[list[str], str]:
    """The complete sentences at the start of streamed ``text``, and the unfinished rest.

    A sentence is complete once the next one has begun, or once its end mark is
    followed by a space (models stream "…Smith. " before "Shall…"), unless it
    ends in a title or abbreviation ("with Dr. " goes on). The splitter never
    cuts after those either, so a sentence found complete never changes later.
    The rest keeps its trailing space, so the next piece joins it correctly.
    """
    from esl_app.providers.markup import _ABBREV, split_sentences

    parts = split_sentences(text)
    if not parts:
        return [], text
    last = parts[-1]
    if text[-1:].isspace() and last[-1:] in ".!?" and not _ABBREV.search(last):
        return parts, ""
    return parts[:-1], last + text[len(text.rstrip()):]
