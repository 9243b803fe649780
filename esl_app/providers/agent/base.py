"""The dialogue-agent interface: one call in, one reply out, tools behind it.

Every agent (the embedded local one, Bedrock) implements :class:`Agent`. The
call engine never knows which one it talks to; it only acts on the
:class:`AgentReply` (speak, transfer, hang up) and records outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from esl_app.config.tenants import Tenant

__all__ = ["Agent", "AgentError", "AgentReply", "CallContext", "Utterance"]


class AgentError(RuntimeError):
    """The agent could not produce a reply (provider down, timeout, bad stream)."""


@dataclass
class CallContext:
    """What an agent may know about the call it serves.

    ``state`` is the per-call memory shared by agents: a fallback agent can
    read what the failed one had gathered (intent, chosen slot, name, contact).
    """

    call_id: str
    tenant: Tenant
    caller: str | None = None
    did: str | None = None
    now: datetime | None = None  # aware; None means "the real clock" (tests pin it)
    state: dict[str, Any] = field(default_factory=dict)
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
    spans (see :mod:`esl_app.speech_markup`); everything else is plain text.
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
