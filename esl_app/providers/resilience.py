"""No dead air: timeouts, fillers, one safe retry and a fallback around an agent.

A cloud agent can be slow (a tool call takes seconds), throttled or down. The
caller must never sit in silence wondering whether the line is dead, so
:class:`ResilientAgent` wraps the tenant's agent:

* the primary runs in its own greenlet; while it works, ``on_filler(call)`` is
  called after ``filler_after_s`` (default 1.2 s) and then every
  ``filler_every_s`` (2.5 s) — the call engine plays a cached "One moment while
  I check." — so no gap exceeds 3 s;
* an attempt taking longer than ``timeout_s`` is killed (its socket I/O is
  interrupted by ``GreenletExit``);
* an error is retried **once**, and only when the error says it is safe
  (``retry_safe`` and ``transient`` attributes, as :class:`BedrockAgentError`
  sets them): after a booking, cancel or reschedule may have run, asking again
  could do it twice, and a timeout never tells us whether it ran — so timeouts
  are not retried;
* then the fallback agent (the local agent, which reads ``call.state``) takes
  over *for the rest of the call*; with no fallback, or ``on_failure="transfer"``,
  or when the fallback fails too, the reply transfers the caller to the
  tenant's human line (or says goodbye when the tenant has none).

``respond``/``greet`` never raise: the call engine always gets something to say.

Streaming (``respond_stream``/``greet_stream``): the same protection around
the inner agent's stream. Text pieces pass through as they arrive; the filler
clock restarts with each piece (the engine is speaking it). A failure before
any text is handled as above; a failure *after* some text was passed on is
never retried (the caller heard part of the answer, and a retry could repeat
a tool), so the fallback answers at once and its text continues the stream;
the final reply's ``text`` is then everything the caller was given.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, Literal

import gevent
from gevent.queue import Empty, Queue

from esl_app.providers.agent.base import (
    Agent,
    AgentError,
    AgentReply,
    AgentStream,
    CallContext,
    Utterance,
    greet_stream,
    respond_stream,
)

__all__ = ["AgentTimeout", "ResilientAgent", "failure_reply"]

log = logging.getLogger(__name__)

TRANSFER_TEXT = ("I'm sorry, I'm having trouble with our system. "
                 "Let me connect you with someone at the clinic.")
GOODBYE_TEXT = ("I'm sorry, I'm having trouble with our system right now. "
                "Please call again a little later. Goodbye.")


class AgentTimeout(AgentError):
    """The agent did not answer within its timeout (it may still have run a tool)."""

    retry_safe = False
    transient = True


def failure_reply(call: CallContext) -> AgentReply:
    """The last resort: a human if the clinic has a line, else a polite goodbye."""
    if call.tenant.handoff:
        return AgentReply(text=TRANSFER_TEXT, action="transfer",
                          transfer_to=call.tenant.handoff, outcome="handoff")
    return AgentReply(text=GOODBYE_TEXT, action="hangup", outcome="error")


class ResilientAgent:
    """An :class:`~esl_app.providers.agent.base.Agent` that always answers in time.

    ``on_filler(call)`` runs on the greenlet that called ``respond`` (the call's
    controller) and must only queue the filler playback, not wait for it.
    """

    def __init__(
        self,
        primary: Agent,
        fallback: Agent | None = None,
        *,
        filler_after_s: float = 1.2,
        filler_every_s: float = 2.5,
        timeout_s: float = 8.0,
        max_turn_s: float = 12.0,
        on_filler: Callable[[CallContext], None] | None = None,
        on_failure: Literal["fallback", "transfer"] = "fallback",
        retry: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_turn_s`` bounds a turn including its retry; ``clock`` is for tests."""
        self.primary = primary
        self.fallback = fallback
        self.name = getattr(primary, "name", "agent")
        self.filler_after_s = filler_after_s
        self.filler_every_s = filler_every_s
        self.timeout_s = timeout_s
        self.max_turn_s = max_turn_s
        self.on_filler = on_filler
        self.on_failure = on_failure
        self.retry = retry
        self._clock = clock
        self._fell_back: dict[str, str] = {}  # call id -> why

    # -- Agent interface -------------------------------------------------

    def greet(self, call: CallContext) -> AgentReply:
        """The opening line, with the same protection as a turn."""
        return self._turn(call, lambda agent: agent.greet(call))

    def respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        """One caller turn; never raises, never leaves more than ~3 s of silence."""
        return self._turn(call, lambda agent: agent.respond(call, utterance))

    def greet_stream(self, call: CallContext) -> AgentStream:
        """The opening line, streamed, with the same protection as a turn."""
        return self._turn_stream(call, lambda agent: greet_stream(agent, call))

    def respond_stream(self, call: CallContext, utterance: Utterance) -> AgentStream:
        """One caller turn, streamed; never raises (see the module docstring)."""
        return self._turn_stream(call, lambda agent: respond_stream(agent, call, utterance))

    def end(self, call: CallContext) -> None:
        """Release both agents' sessions (never raises)."""
        for agent in (self.primary, self.fallback):
            if agent is None:
                continue
            try:
                agent.end(call)
            except Exception as exc:  # noqa: BLE001 - end() must never raise
                log.debug("agent %s end failed: %s", getattr(agent, "name", "?"),
                          type(exc).__name__)
        self._fell_back.pop(call.call_id, None)

    def fell_back(self, call: CallContext) -> str | None:
        """Why this call left the primary agent, or None while it still uses it."""
        return self._fell_back.get(call.call_id)

    # -- internals ---------------------------------------------------------

    def _turn(self, call: CallContext, fn: Callable[[Agent], AgentReply]) -> AgentReply:
        start = self._clock()
        fillers = _Fillers(self, call, start)
        if call.call_id not in self._fell_back:
            try:
                return self._attempt(self.primary, fn, call, fillers,
                                     start + self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - every failure has a way out
                error = exc
            if (self.retry and getattr(error, "retry_safe", False)
                    and getattr(error, "transient", False)
                    and self._clock() - start < self.max_turn_s - 1.0):
                log.info("agent %s failed (%s), retrying once", self.name, _why(error))
                try:
                    deadline = min(self._clock() + self.timeout_s, start + self.max_turn_s)
                    return self._attempt(self.primary, fn, call, fillers, deadline)
                except Exception as exc:  # noqa: BLE001
                    error = exc
            reason = _why(error)
            log.warning("agent %s failed for call %s (%s); %s", self.name, call.call_id,
                        reason, "falling back" if self._can_fall_back() else "giving up")
            self._fell_back[call.call_id] = reason
            call.state.setdefault("resilience", {})["fallback"] = reason
        if not self._can_fall_back():
            return failure_reply(call)
        try:
            return self._attempt(self.fallback, fn, call, fillers,  # type: ignore[arg-type]
                                 self._clock() + self.timeout_s)
        except Exception as exc:  # noqa: BLE001
            log.error("fallback agent failed for call %s (%s)", call.call_id, _why(exc))
            return failure_reply(call)

    def _turn_stream(self, call: CallContext,
                     make: Callable[[Agent], Iterator[str | AgentReply]]) -> AgentStream:
        """:meth:`_turn` for streams: the text pieces, then the reply."""
        reply = yield from self._turn_pieces(call, make)
        yield reply

    def _turn_pieces(self, call: CallContext,
                     make: Callable[[Agent], Iterator[str | AgentReply]]
                     ) -> Generator[str, None, AgentReply]:
        """Yield the turn's text; return its reply (``given``: text passed on so far)."""
        start = self._clock()
        fillers = _Fillers(self, call, start)
        given: list[str] = []
        if call.call_id not in self._fell_back:
            try:
                return (yield from self._attempt_stream(
                    self.primary, make, call, fillers, start + self.timeout_s, given))
            except Exception as exc:  # noqa: BLE001 - every failure has a way out
                error = exc
            if (not given and self.retry and getattr(error, "retry_safe", False)
                    and getattr(error, "transient", False)
                    and self._clock() - start < self.max_turn_s - 1.0):
                log.info("agent %s failed (%s), retrying once", self.name, _why(error))
                try:
                    deadline = min(self._clock() + self.timeout_s, start + self.max_turn_s)
                    return (yield from self._attempt_stream(
                        self.primary, make, call, fillers, deadline, given))
                except Exception as exc:  # noqa: BLE001
                    error = exc
            reason = _why(error)
            log.warning("agent %s failed for call %s (%s%s); %s", self.name, call.call_id,
                        reason, ", mid-answer" if given else "",
                        "falling back" if self._can_fall_back() else "giving up")
            self._fell_back[call.call_id] = reason
            call.state.setdefault("resilience", {})["fallback"] = reason
        if given:
            yield " "  # the fallback's words start a new sentence, not the cut one
            given.append(" ")
        if self._can_fall_back():
            try:
                reply = yield from self._attempt_stream(
                    self.fallback, make, call, fillers,  # type: ignore[arg-type]
                    self._clock() + self.timeout_s, given)
                return _joined(reply, given)
            except Exception as exc:  # noqa: BLE001
                log.error("fallback agent failed for call %s (%s)", call.call_id, _why(exc))
        reply = failure_reply(call)
        yield reply.text
        given.append(reply.text)
        return _joined(reply, given)

    def _attempt_stream(self, agent: Agent,
                        make: Callable[[Agent], Iterator[str | AgentReply]],
                        call: CallContext, fillers: _Fillers, deadline: float,
                        given: list[str]) -> Generator[str, None, AgentReply]:
        """Relay ``make(agent)`` from a child greenlet, with fillers; returns its reply.

        Yields the text pieces (also appended to ``given``); raises like :meth:`_attempt`.
        """
        box: Queue = Queue()
        worker = gevent.spawn(_pump, make, agent, box)
        try:
            while True:
                now = self._clock()
                if now >= deadline:
                    raise AgentTimeout(f"no answer within {self.timeout_s:g}s")
                try:
                    kind, value = box.get(timeout=max(min(deadline, fillers.next_at) - now,
                                                      0.0))
                except Empty:
                    fillers.maybe_play()
                    continue
                if kind == "text":
                    if value:
                        given.append(value)
                        fillers.next_at = self._clock() + self.filler_after_s
                        yield value
                elif kind == "reply":
                    return value
                else:
                    raise value
        finally:
            if not worker.ready():
                worker.kill(block=False)

    def _can_fall_back(self) -> bool:
        return self.fallback is not None and self.on_failure == "fallback"

    def _attempt(self, agent: Agent, fn: Callable[[Agent], AgentReply], call: CallContext,
                 fillers: _Fillers, deadline: float) -> AgentReply:
        """Run ``fn(agent)`` in a child greenlet, playing fillers until it answers."""
        worker = gevent.spawn(_capture, fn, agent)
        try:
            while True:
                now = self._clock()
                if now >= deadline:
                    raise AgentTimeout(f"no answer within {self.timeout_s:g}s")
                wait = min(deadline, fillers.next_at) - now
                worker.join(timeout=max(wait, 0.0))
                if worker.ready():
                    ok, value = worker.value if worker.successful() else (
                        False, AgentError("the agent greenlet was killed"))
                    if not ok:
                        raise value
                    if not isinstance(value, AgentReply):
                        raise AgentError("the agent returned no reply")
                    return value
                fillers.maybe_play()
        finally:
            if not worker.ready():
                worker.kill(block=False)


class _Fillers:
    """When the next "one moment" is due within one turn (across attempts)."""

    def __init__(self, owner: ResilientAgent, call: CallContext, start: float) -> None:
        self.owner = owner
        self.call = call
        self.next_at = start + owner.filler_after_s
        self.played = 0

    def maybe_play(self) -> None:
        if self.owner._clock() < self.next_at:
            return
        self.next_at = self.owner._clock() + self.owner.filler_every_s
        self.played += 1
        if self.owner.on_filler is None:
            return
        try:
            self.owner.on_filler(self.call)
        except Exception as exc:  # noqa: BLE001 - a failed filler must not fail the turn
            log.warning("filler failed: %s", type(exc).__name__)


def _pump(make: Callable[[Agent], Iterator[str | AgentReply]], agent: Agent,
          box: Queue) -> None:
    """Run one agent stream, posting ("text", str), then ("reply", r) or ("error", exc)."""
    try:
        for item in make(agent):
            if isinstance(item, AgentReply):
                box.put(("reply", item))
                return
            box.put(("text", str(item)))
        box.put(("error", AgentError("the agent's stream ended without a reply")))
    except Exception as exc:  # noqa: BLE001 - handed to the waiting turn
        box.put(("error", exc))


def _joined(reply: AgentReply, given: list[str]) -> AgentReply:
    """The reply whose text is all the caller was given this turn (for the record)."""
    text = "".join(given).strip()
    return reply if not text or text == reply.text else dataclasses.replace(reply, text=text)


def _capture(fn: Callable[[Agent], AgentReply], agent: Agent) -> tuple[bool, Any]:
    """Run the agent, returning its failure as a value (no greenlet error report)."""
    try:
        return True, fn(agent)
    except Exception as exc:  # noqa: BLE001 - handed to the waiting turn
        return False, exc


def _why(exc: BaseException | Any) -> str:
    code = getattr(exc, "code", "")
    return f"{type(exc).__name__}{f' {code}' if code else ''}"
