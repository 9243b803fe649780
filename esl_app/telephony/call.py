"""The per-call controller: one greenlet owns one phone call from connect to hang-up.

Flow: ``connect``/``myevents``/``linger``/``answer`` (one write) → channel data →
tenant (from the dialled number, or ``variable_ivr_tenant`` set by the dialplan) →
the answer's completion → greeting → loop {listen → agent → speak} →
transfer, goodbye or the caller's hang-up. Every input (ESL events, speech,
synthesis and agent results, timers) arrives on the call's queue and only
this greenlet changes call state; helper greenlets only compute and post.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import gevent
from gevent.queue import Empty, Queue

from esl_app.config.tenants import Tenant, TenantSet
from esl_app.http import metrics
from esl_app.providers.agent.base import (
    Agent,
    AgentError,
    AgentReply,
    AgentStream,
    CallContext,
    Utterance,
    complete_sentences,
    greet_stream,
    respond_stream,
)
from esl_app.providers.markup import split_sentences, to_plain
from esl_app.providers.tts.base import PlayInstruction, TtsProvider
from esl_app.providers.tts.cache import WARMER
from esl_app.providers.tts.freeswitch import FreeswitchTts
from esl_app.providers.usage import CallUsage
from esl_app.support.bridge import resumed
from esl_app.telephony import lines
from esl_app.telephony.esl import EslError, EslEvent, EslSession
from esl_app.telephony.events import Kind, Msg, from_esl
from esl_app.telephony.lines import FILLER_TEXT, REJECT_TEXT, TROUBLE_TEXT
from esl_app.telephony.transcript import Transcript, mask_number
from esl_app.telephony.verbs import Bridge, Listen, ListenSource, Speak, TextListenSource

__all__ = ["CallController", "CallEnded", "CallServices"]

log = logging.getLogger(__name__)

AGENT_TIMEOUT = 30.0
HANGUP_GRACE = 0.5  # how long a pending agent reply may finish after the caller hangs up
# a closed or dropped audio fork: how long a hang-up event may lag behind it (_await_hangup)
_CLOSED_GRACE_S = 1.0
# No tenant, hence no tenant voice: the apology is FreeSWITCH's own TTS in a flite voice.
REJECT_VOICE = "slt"


class OutboundCall(Protocol):
    """A call the bot placed (a reminder): what differs from an inbound call.

    ``agent_for`` gives its own agent (None: nothing left to say, ``opening`` then ends
    the call); ``opening`` runs after the answer, before the agent speaks (who answered:
    a person, or a machine that gets a message) and says whether the conversation goes
    on; ``finish`` is told how the call ended.
    """

    def agent_for(self, tenant: Tenant) -> Agent | None:
        """The call's own agent, or None when there is nothing left to call about."""
        ...

    def opening(self, call: CallController, agent: Agent | None) -> bool:
        """Run the opening; False when the call is over."""
        ...

    def finish(self, transcript: Transcript) -> None:
        """The call ended (``transcript.outcome`` says how)."""
        ...

    #: more events for the call's socket (``event plain <these>``, pipelined behind the
    #: answer: no extra wait), e.g. ``CUSTOM mod_audio_fork::connect_failed``; "" for none
    events: str


class CallEnded(Exception):
    """The call is over (caller hang-up, connection lost, or time limit)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class CallServices:
    """Everything a call needs from the process, injected (fakes in tests).

    ``listen_mode`` forces "text" (FreeSWITCH ASR) or "audio" (our media path) for
    every call; ``None`` follows the tenant's ``stt`` setting or the channel's
    ``variable_ivr_stt`` (set by the dialplan).
    """

    tenants: Callable[[], TenantSet]
    agent_for: Callable[[Tenant], Agent]
    tts_for: Callable[[Tenant, str], TtsProvider]
    audio_source_for: Callable[[Any, Tenant, EslSession], ListenSource] | None = None
    recorder: Callable[[Transcript], None] | None = None
    # stores the call as in progress once its tenant is known (off the set-up path)
    record_start: Callable[[Transcript], None] | None = None
    on_event: Callable[[str, dict[str, Any]], None] | None = None
    listen_mode: str | None = None
    now: Callable[[], datetime | None] = lambda: None
    command_timeout: float = 5.0
    reject_text: str = REJECT_TEXT
    reject_transfer: str | None = None  # unknown DID: bridge here after the apology
    # the call is over: free what it held (the scheduling core's slot holds, by call id)
    release_holds: Callable[[str], Any] | None = None
    # a transfer nobody answered: the agent side's "may I take a message?" (None: goodbye)
    take_message: Callable[[CallContext, str], AgentReply] | None = None
    # a call the bot placed itself (the channel says which): its agent, opening and end
    outbound_for: Callable[[Mapping[str, str]], OutboundCall | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CallController:
    """Runs one call; create it with the call's queue, then call :meth:`run`."""

    def __init__(self, session: EslSession, queue: Queue, services: CallServices) -> None:
        self.session = session
        self.queue = queue
        self.services = services
        self.transcript = Transcript(call_id="")
        self.tenant: Tenant | None = None
        self.ctx: CallContext | None = None
        self.usage = CallUsage()
        self.agent: Agent | None = None
        self.tts: TtsProvider | None = None
        self.listener: ListenSource | None = None
        self.gone = False
        self.left = False  # the call was moved away from the bot (it must not hang up)
        self.probe = False  # the peer closed before any channel data: not a call
        self.outbound: OutboundCall | None = None  # a call the bot placed (a reminder)
        self.accepted_at = 0.0  # time.monotonic() of the ESL accept (the server sets it)
        self.ended_reason = ""
        self._helpers: set[gevent.Greenlet] = set()
        self._timers: list[gevent.Greenlet] = []
        self._pending: list[Msg] = []
        # Application-UUID of the last app FreeSWITCH started (CHANNEL_EXECUTE): a
        # playback never started when uuid_break came was dropped, and never completes
        self.app_started = ""
        self._agent_seq = 0
        self._agent_job: gevent.Greenlet | None = None
        self._current_verb: Any = None
        self.channel: dict[str, str] = {}
        self._published: dict[str, str] = {}
        self._counted_active = False
        self._turn_t0: float | None = None
        self._response_t0: float | None = None  # the turn's final transcript arrived
        self._last_ack: str | None = None
        self._reply_heard = True  # the last streamed reply's text reached the caller

    # -- the CallControl surface used by verbs ------------------------------------

    def next(self, timeout: float | None = None) -> Msg | None:
        """The next meaningful message; raises :class:`CallEnded` when the call is gone.

        ``timeout`` bounds the whole wait: events that mean nothing to the call (a
        channel's SESSION_HEARTBEAT every second, say) must not keep restarting it, or a
        caller's silence would never time out.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            waits = self.queue.empty()
            try:
                raw = self.queue.get(timeout=wait)
            except Empty:
                return None
            if waits:
                resumed()  # this greenlet's slice starts (see bridge.cooperate's within)
            msg = from_esl(raw) if isinstance(raw, EslEvent | str) else raw
            if msg.kind in (Kind.HANGUP, Kind.CLOSED):
                self.gone = True
                raise CallEnded("caller_hangup" if msg.kind is Kind.HANGUP else "closed")
            if msg.kind is Kind.LEFT or (msg.kind is Kind.COMPLETE and self._moved(msg)):
                # Someone moved the call elsewhere (uuid_transfer): FreeSWITCH keeps our
                # socket and its events, but the caller is not ours to talk to any more.
                self.left = True
                raise CallEnded("left")
            if msg.kind is Kind.TIMER and msg.key == "max_call":
                raise CallEnded("max_call")
            if msg.kind is Kind.STARTED:
                self.app_started = msg.key
                continue
            if msg.kind is Kind.OTHER:
                continue
            return msg

    def _moved(self, msg: Msg) -> bool:
        """The channel was transferred away since it reached us.

        Why not wait for the ``socket`` app's completion: on FreeSWITCH 1.10 the
        transfer first breaks our playback, and that completion (carrying the new
        ``transfer_source``) comes before it; a next prompt sent on it would play to
        whoever has the call now. A call transferred *into* our extension carries its
        transfer_source from the start, so only a change counts.
        """
        ev = msg.event
        if ev is None:
            return False
        now = ev.get("variable_transfer_source") or ""
        return bool(now) and now != (self.channel.get("variable_transfer_source") or "")

    def _await_hangup(self, seconds: float) -> None:
        """Give a hang-up that may be on its way ``seconds`` to arrive (raises CallEnded).

        Why: FreeSWITCH closes the audio fork normally (1000) when the caller hangs up,
        and that close and the hang-up event travel on two sockets: under load the
        close often comes first. Without this the bot would apologise to, and try to
        transfer, a caller who is gone. Anything else arriving meanwhile is kept.
        """
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self.next(timeout=left)
            if msg is None:
                return
            self.stash(msg)

    def _confirm_channel_up(self) -> None:
        """Raise :class:`CallEnded` unless FreeSWITCH says the channel still exists.

        Why a round trip after the grace: a worker starved of CPU can wake with its
        timer expired before its reader has read the hang-up FreeSWITCH sent long ago.
        The reply to ``uuid_exists`` travels behind that event on the same socket, so
        once it is here the event is on our queue too.
        """
        try:
            reply = self.session.api(f"uuid_exists {self.session.uuid}", timeout=2.0)
        except EslError:
            self.gone = True
            raise CallEnded("closed") from None
        while (msg := self.next(timeout=0)) is not None:  # raises on a queued hang-up
            self.stash(msg)
        if reply.strip() == "false":
            self.gone = True
            raise CallEnded("caller_hangup")

    def stash(self, msg: Msg) -> None:
        self._pending.append(msg)

    def post(self, msg: Msg) -> None:
        self.queue.put(msg)

    def spawn(self, fn, *args) -> gevent.Greenlet:
        g = gevent.spawn(fn, *args)
        self._helpers.add(g)
        g.link(self._helpers.discard)
        return g

    # -- the call ------------------------------------------------------------------

    def run(self) -> Transcript:
        """Handle the whole call; never raises (the transcript says how it went)."""
        try:
            self._setup()
            if self.tenant is None:
                self._reject()
            else:
                self._converse()
        except CallEnded as exc:
            self.ended_reason = exc.reason
            if exc.reason == "max_call" and not self.gone:
                self._time_limit()
        except EslError as exc:
            if not self.channel and self.session.peer_gone:
                # closed (or reset: our 'connect' arrived unread) before FreeSWITCH's
                # connect reply: a port probe (ivrctl health, a load balancer's check),
                # not a call: nothing to record or count
                self.probe = True
                log.debug("connection closed before 'connect' was answered: a probe")
            elif self.gone or self.session.hungup:
                # the call was over (FreeSWITCH reported the hang-up, or we hung up) and
                # the socket closed while a command was on its way: not a failure
                if self.session.channel_hungup:
                    self.gone = True  # the hang-up event may still sit in our queue
                self.ended_reason = "caller_hangup" if self.gone else "hangup"
                log.info("call %s: closed after the caller hung up (%s)", self.label(), exc)
            else:
                self.ended_reason = "esl_error"
                log.warning("call %s: ESL failure: %s", self.label(), exc)
                self.transcript.outcome = self.transcript.outcome or "error"
        except gevent.GreenletExit:
            self.ended_reason = "shutdown"
            raise
        except Exception:
            self.ended_reason = "error"
            log.exception("call %s failed", self.label())
            self.transcript.outcome = self.transcript.outcome or "error"
            self.hang_up()
        finally:
            self._cleanup()
        return self.transcript

    def _setup(self) -> None:
        """``answer``, channel data, tenant: the answer goes out in the first write.

        ``connect``/``myevents``/``linger``/``answer`` travel in one write: every call
        is answered (a number no clinic has hears an apology), so the answer waits
        neither for the channel data nor for the tenant, and everything else (channel
        variables, metrics, the time limit) happens while FreeSWITCH answers. Every
        reply is still checked before the answer's completion is awaited.
        """
        app = str(uuid.uuid4())
        self.channel = self.session.handshake(answer=app)
        ch = self.channel
        call_id = ch.get("Unique-ID") or ch.get("variable_uuid") or ""
        did = ch.get("Caller-Destination-Number") or ch.get("variable_sip_to_user") or ""
        caller = ch.get("Caller-Caller-ID-Number") or ch.get("variable_sip_from_user") or ""
        self.transcript.call_id = call_id
        self.transcript.did = did
        self.transcript.caller = caller
        tenants = self.services.tenants()
        wanted = ch.get("variable_ivr_tenant")
        self.tenant = tenants.get(wanted) if wanted else tenants.by_did(did)
        if self.accepted_at:
            setup = time.monotonic() - self.accepted_at
            metrics.CALL_SETUP.observe(setup)
            metrics.CALL_SETUP_OWN.observe(max(0.0, setup - self.session.handshake_wait_s))
        log.info("call %s: did=%s caller=%s tenant=%s", self.label(), did, mask_number(caller),
                 self.tenant.id if self.tenant else "-")
        if self.tenant is not None:
            if self.services.outbound_for is not None:
                self.outbound = self.services.outbound_for(ch)
            if self.outbound is not None and self.outbound.events:
                # behind the answer, in the same round trip; still filtered to this
                # channel by myevents. Its refusal costs the events, not the call.
                self.session.post(f"event plain {self.outbound.events}",
                                  check=self._events_refused, label="event")
            self.transcript.tenant = self.tenant.id
            self.publish()
            metrics.CALLS_ACTIVE.labels(self.tenant.id).inc()
            self._counted_active = True
            self._timers.append(gevent.spawn_later(
                self.tenant.max_call_seconds, self.post, Msg(Kind.TIMER, key="max_call")))
        self._emit("call_started", {"call_id": call_id, "did": did,
                                    "tenant": self.transcript.tenant})
        if self.services.record_start is not None and call_id:
            # not a helper: a cleanup must never kill it inside its transaction
            gevent.spawn(self._record_start)
        self._answer(app)

    def _events_refused(self, event: Any) -> None:
        if event.data.startswith("-ERR"):
            log.warning("call %s: 'event plain %s' refused: %s", self.label(),
                        self.outbound.events if self.outbound else "", event.data.strip())

    def _record_start(self) -> None:
        try:
            self.services.record_start(self.transcript)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the end of the call stores it anyway
            log.warning("call %s: could not store the call's start (%s)", self.label(),
                        type(exc).__name__)

    def _answer(self, app: str) -> None:
        """Check the set-up replies (``-ERR`` ends the call), then await the answer."""
        self.session.flush()
        while True:
            msg = self.next(timeout=self.services.command_timeout)
            if msg is None:
                raise EslError("answer never completed")
            if msg.kind is Kind.COMPLETE and msg.key == app:
                return
            if msg.kind in (Kind.DTMF, Kind.TRANSCRIPT):
                self.stash(msg)

    def _reject(self) -> None:
        self.transcript.outcome = "rejected"
        # pipelined ahead of the apology: the CDR, a remote simulator and a load test read
        # "rejected" (not in service) instead of guessing from who hung up
        self.publish()
        self.say(self.services.reject_text, tts=FreeswitchTts(), voice=REJECT_VOICE,
                  barge_in=False)
        if self.services.reject_transfer:
            self.transcript.transfer_to = self.services.reject_transfer
            if Bridge(self, self.services.reject_transfer).run().connected:
                self.hang_up()
                return
        self.hang_up()

    def _converse(self) -> None:
        tenant = self.tenant
        assert tenant is not None
        self.ctx = CallContext(call_id=self.transcript.call_id, tenant=tenant,
                               caller=self.transcript.caller, did=self.transcript.did,
                               now=self.services.now())
        own = self.outbound.agent_for(tenant) if self.outbound is not None else None
        self.agent = own or self.services.agent_for(tenant)
        tts_name = self.channel.get("variable_ivr_tts") or tenant.tts
        self.tts = self.services.tts_for(tenant, tts_name)
        self.listener = self._make_listener(tenant)

        self.ctx.signal = self._agent_signal
        self.usage.agent_provider = tenant.agent
        self.usage.tts_provider = tts_name
        self.usage.stt_provider = self.channel.get("variable_ivr_stt") or tenant.stt
        # the acknowledgements and the filler, ready before the caller's first turn
        WARMER.warm(self.tts, (*tenant.ack_phrases, FILLER_TEXT), voice=tenant.voice,
                    sample_rate=tenant.sample_rate, language=tenant.language)
        if self.outbound is not None and not self.outbound.opening(self, own):
            return
        # the clinic's greeting plays while the agent writes its opening line (a call the
        # bot placed has its own introduction)
        reply = self._stream_reply(lambda: greet_stream(self.agent, self.ctx), said="",
                                   lead="" if own is not None else tenant.greeting)
        if reply is None:
            return
        self._loop(reply, heard=self._reply_heard)

    def listen_once(self, timeout: float) -> Utterance | None:
        """One caller turn heard within ``timeout`` (for an outbound call's opening)."""
        assert self.listener is not None
        return Listen(self, self.listener, timeout=timeout).run(self._pending)

    def _in_message_mode(self) -> bool:
        return self.ctx is not None and self.ctx.state.get("mode") == "message"

    def _agent_signal(self, kind: str) -> None:
        """Called from the agent's greenlet: hand the request to the controller."""
        self.post(Msg(Kind.SIGNAL, key=kind))

    def _loop(self, reply: AgentReply, *, heard: bool = True) -> None:
        """Listen → agent → speak until the agent transfers or hangs up.

        ``heard`` is False when none of the reply's text reached the caller (its
        speech failed): before the call acts on it the caller still hears what
        matters, the closing line (a booking's confirmation) or a transfer notice.
        """
        tenant = self.tenant
        assert tenant is not None
        misses = 0
        last_prompt = reply.text
        while True:
            set_hints = getattr(self.listener, "set_hints", None)
            if set_hints is not None:  # bias the recogniser toward the expected answer
                set_hints(reply.hints)
            if reply.action == "transfer":
                self._transfer(reply.transfer_to or tenant.handoff, reply.outcome or "handoff",
                               announce=not (reply.text and heard))
                return
            if reply.action == "hangup":
                if reply.text and not heard:
                    self.say(reply.text, barge_in=False)
                # the conversation ended normally (the caller was helped, or only asked)
                self.transcript.note_outcome(None if self.transcript.outcome else "completed")
                self.publish()  # before the hang-up: a remote simulator reads it
                self.hang_up()
                return
            self._emit("listening", {})
            listen = Listen(self, self.listener, timeout=tenant.no_input_seconds)
            utterance = listen.run(self._pending)
            if utterance is None and listen.media_lost:
                # a hang-up closes (or drops) the fork too: make sure it is not one
                self._await_hangup(_CLOSED_GRACE_S)  # raises CallEnded if it comes
                self._confirm_channel_up()
                log.warning("call %s: audio stream lost (%s)", self.label(), listen.media_lost)
                self.say(lines.CANT_HEAR, barge_in=False)
                if tenant.handoff:
                    self._transfer(tenant.handoff, self.transcript.outcome or "handoff")
                else:
                    self._goodbye()
                return
            if utterance is None:
                misses += 1
                if misses <= 2:
                    text = (f"{lines.NOTHING_HEARD} {_last_sentence(last_prompt)}"
                            if misses == 1 else lines.STILL_THERE)
                    self.say(text)
                    continue
                self._no_input()
                return
            misses = 0
            self._turn_t0 = time.monotonic()
            self._response_t0 = listen.heard_at or None
            said = utterance.text if utterance.text is not None else f"#{utterance.dtmf}"
            self.transcript.add("caller", said, dtmf=utterance.dtmf)
            if _wants_person(utterance) and not self._in_message_mode():
                self._transfer(tenant.handoff, "handoff")
                return
            reply = self._stream_reply(
                lambda u=utterance: respond_stream(self.agent, self.ctx, u), said=said,
                ack=True)
            if reply is None:
                return
            heard = self._reply_heard
            if reply.text:
                last_prompt = reply.text

    def _make_listener(self, tenant: Tenant) -> ListenSource:
        mode = self.services.listen_mode or (
            "text" if (self.channel.get("variable_ivr_stt") or tenant.stt) == "freeswitch"
            else "audio")
        if mode == "audio" and self.services.audio_source_for is not None:
            return self.services.audio_source_for(self, tenant, self.session)
        return TextListenSource(self.session)

    # -- agent ---------------------------------------------------------------------

    def _stream_reply(self, make: Callable[[], AgentStream], *, said: str, lead: str = "",
                      ack: bool = False) -> AgentReply | None:
        """One agent turn, spoken sentence by sentence while the agent still writes.

        The agent's stream runs in a helper greenlet (a hang-up is seen at once) and
        posts its pieces. One open-ended :class:`Speak` plays ``lead`` (the clinic's
        greeting), then, with ``ack``, a cached acknowledgement when the first sentence
        is later than the tenant's ``ack_after_ms``, then each sentence as soon as it is
        complete (synthesis runs ahead while the previous one plays). The reply is
        recorded the moment it is complete, so a hang-up while it is spoken keeps a
        booking. The caller's speech cuts it only once the greeting or the answer
        itself plays (not an ack or filler); the reply is still awaited and recorded.
        Returns ``None`` when the agent failed (the caller has been told and the call
        handed over or ended).
        """
        tenant = self.tenant
        assert tenant is not None
        self._agent_seq += 1
        key = str(self._agent_seq)

        def job() -> None:
            value = _run_stream(make, lambda piece: self.post(
                Msg(Kind.AGENT_TEXT, key=key, text=piece)))
            self.post(Msg(Kind.AGENT, key=key, value=value))

        turn = _StreamTurn(key, said, time.monotonic())
        lead_sentences = split_sentences(lead)
        inline = bool(getattr(self.agent, "in_process", False))
        timers: list[gevent.Greenlet] = []
        if inline:  # the reply is ready before anything plays: no helper, an ack if it stalls
            answer = self._reply_now(make, turn, ack=ack)
        else:
            answer = []
            self._agent_job = self.spawn(job)
            timers.append(gevent.spawn_later(AGENT_TIMEOUT, self.post,
                                             Msg(Kind.TIMER, key=f"agent_timeout:{key}")))
            if ack and (delay := self._ack_delay(turn)) is not None:
                timers.append(gevent.spawn_later(delay, self.post,
                                                 Msg(Kind.TIMER, key=f"ack:{key}")))
        turn.lead = len(lead_sentences)
        turn.kinds.update(dict.fromkeys(range(len(lead_sentences) + len(answer)), "answer"))
        turn.queued = bool(answer)
        # not cut by the caller before the greeting or the answer itself plays (an ack,
        # a filler, a sentence still being synthesised): they would hear none of it
        verb = self._turn_speak(lead_sentences + answer, open_ended=not inline,
                                on_other=lambda m: self._on_stream_msg(turn, verb, m),
                                on_play=lambda i, item: self._on_stream_play(turn, verb, i,
                                                                             item))
        self._current_verb = verb
        try:
            verb.run()
        finally:
            self._current_verb = None
            for t in timers:
                t.kill(block=False)
            if self.listener is not None and verb.started:
                self.listener.speaking(False)
            self._record_speech(turn, verb)
        deadline = turn.started + AGENT_TIMEOUT
        while turn.final is None:  # cut short by a barge-in: the reply still counts
            kept = next((m for m in self._pending if m.kind is Kind.AGENT and m.key == key), None)
            if kept is not None:  # it arrived while something else was reading the queue
                self._pending.remove(kept)
                self._settle(turn, kept.value)
                break
            msg = self.next(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None:
                self._agent_job.kill(block=False)
                turn.final = TimeoutError("agent timed out")
            elif msg.kind is Kind.AGENT and msg.key == key:
                self._settle(turn, msg.value)
            elif msg.kind in (Kind.DTMF, Kind.TRANSCRIPT, Kind.MEDIA_LOST):
                self.stash(msg)
        self._agent_job = None
        value = turn.final
        if isinstance(value, AgentReply):
            self._reply_heard = turn.answer_heard or not value.text.strip()
            return value
        log.warning("call %s: agent failed: %s", self.label(), value)
        metrics.PROVIDER_ERRORS.labels("agent", getattr(self.agent, "name", "?")).inc()
        self.transcript.outcome = self.transcript.outcome or "error"
        self.say(TROUBLE_TEXT)
        if tenant.handoff:
            self._transfer(tenant.handoff, self.transcript.outcome or "error")
        else:
            self._goodbye()
        return None

    def _reply_now(self, make: Callable[[], AgentStream], turn: _StreamTurn, *,
                   ack: bool = False) -> list[str]:
        """Run an in-process agent's turn on this greenlet; the sentences to speak.

        Why: a helper greenlet costs two hand-offs (its start, its reply back), each a
        wait for the rest of a loop iteration on a busy worker, for work that never
        waits on anything remote. The reply is recorded (a booking kept) before
        anything plays; what a failing agent had already completed is still said,
        as on the streamed path, before the call's own fallback.

        Such a turn takes milliseconds, unless its database stalls: with ``ack``, a
        bare libev timer (no greenlet unless it fires) plays the tenant's
        acknowledgement after ``ack_after_ms`` (:meth:`_stall_ack`), so a stall is
        not dead air.
        """
        pieces: list[str] = []
        acks: list[gevent.Greenlet] = []
        timer = self._stall_timer(turn, acks) if ack else None
        try:
            # the timeout is raised inside the stream, where _run_stream takes it as a failure
            with gevent.Timeout(AGENT_TIMEOUT, TimeoutError("agent timed out")):
                value = _run_stream(make, pieces.append)
        except BaseException:
            for g in acks:
                g.kill(block=False)
            raise
        finally:
            if timer is not None:
                timer.stop()
                timer.close()
        turn.streamed = "".join(pieces)
        self._settle(turn, value)
        if acks:  # the acknowledgement plays to its end (or never starts: the reply is in)
            ended = acks[0].get()
            if ended is not None:  # the hang-up it read, now that the reply is recorded
                self._record_segments(turn, barged_in=False)
                raise ended
        done, tail = complete_sentences(turn.streamed)
        if isinstance(value, AgentReply):
            done += split_sentences(tail + _unspoken(value.text, turn.streamed))
        return [s for s in done if s.strip()]

    def _turn_speak(self, sentences: list[str], *, open_ended: bool = False,
                    on_other: Callable[[Msg], None] | None = None,
                    on_play: Callable[[int, PlayInstruction], None] | None = None) -> Speak:
        """A Speak for an agent turn: not cut by the caller until the answer itself plays."""
        tenant = self.tenant
        assert tenant is not None
        return Speak(self, sentences, self.tts or FreeswitchTts(), voice=tenant.voice,
                     sample_rate=tenant.sample_rate, language=tenant.language,
                     barge_in=True, interruptible=False,
                     before_play=self.listener.arm if self.listener else None,
                     on_first_audio=self._stream_first_audio, open_ended=open_ended,
                     on_other=on_other, on_play=on_play)

    def _ack_delay(self, turn: _StreamTurn) -> float | None:
        """Seconds until this turn's acknowledgement is due (``ack_after_ms``); None: never."""
        tenant = self.tenant
        if tenant is None or tenant.ack_after_ms <= 0:
            return None
        since = time.monotonic() - (self._turn_t0 or turn.started)
        return max(0.0, tenant.ack_after_ms / 1000.0 - since)

    def _stall_timer(self, turn: _StreamTurn, acks: list[gevent.Greenlet]) -> Any:
        """A libev timer that starts :meth:`_stall_ack` once ``ack_after_ms`` has passed."""
        delay = self._ack_delay(turn)
        if delay is None:
            return None
        timer = gevent.get_hub().loop.timer(delay)
        timer.start(lambda: acks.append(gevent.spawn(self._stall_ack, turn)))
        return timer

    def _stall_ack(self, turn: _StreamTurn) -> BaseException | None:
        """Play an acknowledgement while this call's in-process agent waits (its own greenlet).

        The call's greenlet is inside the agent, so this one reads the call's messages
        meanwhile, as the streamed path's Speak would: the caller's words are kept for
        the next listen. A hang-up it reads is returned, for the call's greenlet to
        raise once the reply is recorded.
        """
        if turn.final is not None or self.gone or not self.session.channel_up:
            return None  # the reply came in before this greenlet ran, or nobody is there
        text = self._pick_ack()  # None without a tenant or a TTS
        if text is None:
            return None
        verb = self._turn_speak([text], on_play=lambda i, item: turn.heard(
            "ack", to_plain(item.text or text), self.transcript.elapsed_ms()))
        try:
            verb.run()
        except (CallEnded, EslError) as exc:
            return exc
        finally:
            if self.listener is not None and verb.started:
                self.listener.speaking(False)
        return None

    def _on_stream_msg(self, turn: _StreamTurn, verb: Speak, msg: Msg) -> None:
        """A message for the turn being spoken (runs on the controller's greenlet)."""
        key = turn.key
        if msg.kind is Kind.AGENT_TEXT and msg.key == key:
            if turn.final is not None:
                return
            turn.streamed += msg.text
            done, turn.tail = complete_sentences(turn.tail + msg.text)
            self._queue_speech(turn, verb, done, "answer")
        elif msg.kind is Kind.AGENT and msg.key == key:
            self._settle(turn, msg.value)
            if isinstance(msg.value, AgentReply):
                rest = turn.tail + _unspoken(msg.value.text, turn.streamed)
                self._queue_speech(turn, verb, split_sentences(rest), "answer")
            verb.finish()  # after a failure nothing more of this reply is said
        elif msg.kind is Kind.TIMER and msg.key == f"agent_timeout:{key}":
            if turn.final is None and self._agent_job is not None:
                self._agent_job.kill(block=False)
                turn.final = TimeoutError("agent timed out")
                verb.finish()
        elif msg.kind is Kind.TIMER and msg.key == f"ack:{key}":
            if turn.final is None and not turn.queued and not verb.closed:
                ack = self._pick_ack()
                if ack is not None:
                    self._queue_speech(turn, verb, [ack], "ack")
        elif msg.kind is Kind.SIGNAL and msg.key == "filler":
            # ResilientAgent's "still working": only into silence, never over an
            # acknowledgement or the answer already queued
            if turn.final is None and not verb.closed and not verb.busy:
                self._queue_speech(turn, verb, [FILLER_TEXT], "filler")
        # anything else (a killed job's late pieces, an old timer) is dropped

    def _on_stream_play(self, turn: _StreamTurn, verb: Speak, index: int,
                        item: PlayInstruction) -> None:
        """A sentence of the turn went out: the greeting or the answer makes it interruptible."""
        turn.played(index, to_plain(item.text or verb.sentences[index]),
                    self.transcript.elapsed_ms())
        if turn.kinds.get(index, "answer") == "answer":
            verb.allow_barge_in()
            if index >= turn.lead:
                turn.answer_heard = True

    def _queue_speech(self, turn: _StreamTurn, verb: Speak, sentences: list[str],
                      kind: str) -> None:
        sentences = [s for s in sentences if s.strip()]
        if not sentences or verb.closed:
            return
        first = len(verb.sentences)
        turn.kinds.update(dict.fromkeys(range(first, first + len(sentences)), kind))
        turn.queued = True
        verb.add(sentences)

    def _settle(self, turn: _StreamTurn, value: Any) -> None:
        """The agent's turn is complete: record it at once (outcome, usage)."""
        if turn.final is not None:
            return
        turn.final = value
        if isinstance(value, AgentReply):
            self.usage.add_agent_turn(turn.said, value.text)
            self._note(value)

    def _pick_ack(self) -> str | None:
        """An acknowledgement already synthesised, never the previous one again."""
        tenant = self.tenant
        if tenant is None or self.tts is None:
            return None
        ready = [p for p in tenant.ack_phrases if p != self._last_ack and WARMER.ready(
            self.tts, p, voice=tenant.voice, sample_rate=tenant.sample_rate,
            language=tenant.language)]
        if not ready:
            return None
        self._last_ack = random.choice(ready)
        return self._last_ack

    def _stream_first_audio(self) -> None:
        if self.listener is not None:
            self.listener.speaking(True)
        self._first_audio()

    def _record_speech(self, turn: _StreamTurn, verb: Speak) -> None:
        """What the caller heard, one transcript turn per kind (ack, filler, answer)."""
        result = verb.result
        if result.barged_in:
            metrics.BARGE_INS.labels(self.tenant.id if self.tenant else "-").inc()
        self._record_segments(turn, barged_in=result.barged_in)

    def _record_segments(self, turn: _StreamTurn, *, barged_in: bool) -> None:
        for n, (_kind, at, texts) in enumerate(turn.segments):
            last = n == len(turn.segments) - 1
            heard = " ".join(texts)
            barged = barged_in and last
            self.transcript.add("bot", heard, barged_in=barged, at_ms=at)
            self._emit("bot_said", {"text": heard, "barged_in": barged})

    def _note(self, reply: AgentReply) -> None:
        if reply.outcome in ("booked", "cancelled", "rescheduled") and self.tenant is not None:
            metrics.BOOKINGS.labels(self.tenant.id, reply.outcome, "phone").inc()
        self.transcript.note_outcome(reply.outcome, confirmation=reply.confirmation,
                                     appointment=reply.appointment)
        self.publish()

    def publish(self) -> None:
        """Mirror the call's result into ``ivr_*`` channel variables.

        FreeSWITCH then writes them into its CDRs, and a simulator attached to a remote
        server can report the outcome without access to our database.
        """
        t = self.transcript
        wanted = {"ivr_tenant": t.tenant, "ivr_outcome": t.outcome,
                  "ivr_confirmation": t.confirmation, "ivr_transfer_to": t.transfer_to,
                  "ivr_appointment": json.dumps(t.appointment, separators=(",", ":"))
                  if t.appointment else None}
        for name, raw in wanted.items():
            value = _one_line(raw, name)
            if value and self._published.get(name) != value and self.session.channel_up:
                # pipelined: whatever is sent next (the answer, a prompt, the hang-up)
                # reaches FreeSWITCH after it, so the variable is set before the call ends
                try:
                    self.session.post(f"api uuid_setvar {self.session.uuid} {name} {value}",
                                      check=self._setvar_checker(name, value),
                                      label="uuid_setvar")
                except EslError:
                    return
                self._published[name] = value

    def _setvar_checker(self, name: str, value: str) -> Callable[[EslEvent], None]:
        """A refused ``uuid_setvar`` is logged and retried at the next publish."""
        def check(reply: EslEvent) -> None:
            if reply.data.startswith("-ERR"):
                if self._published.get(name) == value:
                    del self._published[name]
                log.info("call %s: %s not set: %s", self.label(), name, reply.data.strip())
        return check

    # -- speaking, transfer, endings ----------------------------------------------

    def say(self, text: str, *, tts: TtsProvider | None = None, voice: str | None = None,
             barge_in: bool = True) -> None:
        """Speak ``text``; with ``barge_in`` the caller is heard over it (and may cut it)."""
        tenant = self.tenant
        sentences = split_sentences(text)
        if not sentences:
            return
        at = self.transcript.elapsed_ms()
        verb = Speak(self, sentences, tts or self.tts or FreeswitchTts(),
                     voice=voice or (tenant.voice if tenant else "Joanna"),
                     sample_rate=tenant.sample_rate if tenant else 8000,
                     language=tenant.language if tenant else "en-US", barge_in=barge_in,
                     before_play=self.listener.arm if (barge_in and self.listener) else None,
                     on_first_audio=self._first_audio)
        self._current_verb = verb
        if self.listener is not None:
            self.listener.speaking(True)
        try:
            verb.run()
        finally:
            self._current_verb = None
            if self.listener is not None:
                self.listener.speaking(False)
            result = verb.result
            cut = result.barged_in or self.gone
            if result.barged_in and self.tenant is not None:
                metrics.BARGE_INS.labels(self.tenant.id).inc()
            heard = result.text if cut else to_plain(" ".join(sentences))
            if heard:
                self.transcript.add("bot", heard, barged_in=result.barged_in, at_ms=at)
                self._emit("bot_said", {"text": heard, "barged_in": result.barged_in})

    def reply_playing(self) -> None:
        """A reply's first playback command is about to go out (called by Speak).

        Ends the turn's response time, measured from when the final transcript reached
        us (the ESL reader or the recogniser): with instant providers, our own work.
        """
        t0, self._response_t0 = self._response_t0, None
        if t0 is not None:
            metrics.TURN_RESPONSE.observe(time.monotonic() - t0)

    def _first_audio(self) -> None:
        """The bot starts answering: one conversational turn's latency is known."""
        t0, self._turn_t0 = self._turn_t0, None
        if t0 is not None and self.tenant is not None:
            metrics.TURN_LATENCY.labels(self.tenant.id).observe(time.monotonic() - t0)

    def _transfer(self, target: str, outcome: str, *, announce: bool = True,
                  offer_message: bool = True) -> None:
        target = _one_line(target, "transfer target") or ""  # it goes into ESL commands
        self.transcript.note_outcome(outcome)
        self.transcript.transfer_to = target or None
        self.publish()
        if not target:
            self.say(lines.NOBODY_AVAILABLE)
            self.hang_up()
            return
        if announce:
            self.say(lines.HOLD, barge_in=False)
        self._emit("transfer", {"to": target})
        tenant = self.tenant
        result = Bridge(self, target,
                        ring_seconds=tenant.transfer_timeout_seconds if tenant else None).run()
        if result.connected:
            self.hang_up()
            return
        log.info("call %s: transfer failed (%s)", self.label(), result.disposition)
        self.transcript.transfer_to = None
        self._emit("transfer_failed", {"to": target, "disposition": result.disposition})
        take_message = self.services.take_message
        if offer_message and take_message is not None and self.ctx is not None \
                and not self._in_message_mode() and self.session.channel_up and not self.gone:
            reply = take_message(self.ctx, result.disposition)
            self._note(reply)
            if reply.text:
                self.say(reply.text)
            self._loop(reply)
            return
        self.say(lines.NOBODY_ANSWERED, barge_in=False)
        self.hang_up()

    def _no_input(self) -> None:
        tenant = self.tenant
        assert tenant is not None
        if self.transcript.outcome is None:
            self.transcript.outcome = "no_input"
        if tenant.no_input_action == "transfer" and tenant.handoff \
                and not self._in_message_mode():
            self._transfer(tenant.handoff, self.transcript.outcome)
        else:
            self._goodbye()

    def _goodbye(self) -> None:
        self.say(lines.GOODBYE, barge_in=False)
        self.hang_up()

    def _time_limit(self) -> None:
        """The call ran past ``max_call_seconds``: hand over or say goodbye, never cut dead."""
        with contextlib.suppress(CallEnded, EslError):
            if self._current_verb is not None:
                self._current_verb.cancel()
            tenant = self.tenant
            if tenant is not None and tenant.handoff:
                self._transfer(tenant.handoff, self.transcript.outcome or "handoff",
                               offer_message=False)
            else:
                self._goodbye()

    def note_tts(self, item: PlayInstruction) -> None:
        """A sentence went to FreeSWITCH: count its characters (and whether cached)."""
        self.usage.add_tts(to_plain(item.text or ""), cached=item.cached)

    def _settle_usage(self) -> None:
        """What the call used, and its estimated cost (price table: ``IVR_PRICES``)."""
        from esl_app.providers.usage import estimate_cost, prices_from_env

        seconds = getattr(self.listener, "stt_seconds", 0.0) or 0.0
        if seconds:
            self.usage.add_stt(seconds, new_stream=True)
        fallback = getattr(self.listener, "stt_fallback", None)  # the recogniser was replaced
        if fallback:
            self.transcript.usage["stt_fallback"] = fallback
        if self.ctx is not None:
            cloud = self.ctx.state.get("bedrock") or {}
            if isinstance(cloud, dict) and cloud.get("invocations"):
                self.usage.agent_invocations = int(cloud["invocations"])
        with contextlib.suppress(Exception):
            self.transcript.usage["usage"] = self.usage.to_dict()
            self.transcript.usage["cost"] = estimate_cost(self.usage, prices_from_env())

    def hang_up(self) -> None:
        if not self.gone and not self.left and self.session.channel_up:
            self.session.hangup()

    def _cleanup(self) -> None:
        """Release everything of the call, promptly: timers, helpers, recogniser, socket."""
        if self.probe:  # nothing was set up; a probe is neither recorded nor counted
            self.session.stop()
            return
        for t in self._timers:
            t.kill(block=False)
        job = self._agent_job
        if job is not None:  # alive, or done with its reply still unread
            if not job.dead:
                job.join(timeout=HANGUP_GRACE)  # a booking in flight completes or rolls back
            if not job.dead:
                job.kill(block=True, timeout=0.2)
            self._drain_agent_reply()
            # a killed job keeps its GreenletExit, whose traceback holds the job's frame
            # and so this controller: let reference counting free the call
            self._agent_job = None
        if self.listener is not None:
            with contextlib.suppress(Exception):
                self.listener.close()
        for g in list(self._helpers):
            g.kill(block=False)
        if self.agent is not None and self.ctx is not None:
            with contextlib.suppress(Exception):
                self.agent.end(self.ctx)
        if self.ctx is not None:  # a time the caller was holding is free again at once
            if self.services.release_holds is not None:
                with contextlib.suppress(Exception):
                    self.services.release_holds(self.ctx.call_id)
            self.ctx.signal = None  # the ctx <-> controller cycle: let refcounting free the call
        if self.transcript.outcome is None and self.left:
            self.transcript.outcome = "handoff"  # an operator took the call over
        if self.transcript.outcome is None:
            broken = self.session.close_reason.startswith(("protocol", "connection error"))
            self.transcript.outcome = "caller_hangup" if self.gone and not broken else "error"
        self.session.stop()
        self.transcript.ended_at = datetime.now(self.transcript.started_at.tzinfo)
        self._settle_usage()
        self.transcript.usage.update({
            "duration_ms": self.transcript.elapsed_ms(),
            "turns": len(self.transcript.turns),
            "barge_ins": sum(1 for t in self.transcript.turns if t.barged_in),
            "ended": self.ended_reason or "normal",
            "appointment": self.transcript.appointment,
        })
        if self.outbound is not None:
            with contextlib.suppress(Exception):
                self.outbound.finish(self.transcript)
        if self.services.recorder is not None:
            try:
                self.services.recorder(self.transcript)
            except Exception:
                log.exception("call %s: could not store the call record", self.label())
        tenant_label = self.transcript.tenant or "-"
        if self._counted_active:
            metrics.CALLS_ACTIVE.labels(tenant_label).dec()
        metrics.CALLS_TOTAL.labels(tenant_label, self.transcript.outcome or "error").inc()
        log.info("call %s: ended outcome=%s", self.label(), self.transcript.outcome)
        self._emit("call_ended", self.transcript.to_dict())

    def _drain_agent_reply(self) -> None:
        """A reply that landed while we hung up still counts (e.g. the booking was made).

        It may be on the queue or among the stashed messages; only the current
        turn's reply counts (an older one was settled when it arrived).
        """
        key = str(self._agent_seq)
        kept, self._pending = self._pending, []
        while True:
            try:
                kept.append(self.queue.get_nowait())
            except Empty:
                break
        for raw in kept:
            if isinstance(raw, Msg) and raw.kind is Kind.AGENT and raw.key == key \
                    and isinstance(raw.value, AgentReply):
                self._note(raw.value)

    def _emit(self, name: str, data: dict[str, Any]) -> None:
        if self.services.on_event is not None:
            with contextlib.suppress(Exception):
                self.services.on_event(name, data)

    def label(self) -> str:
        return (self.transcript.call_id or "?")[:8]


def _wants_person(utterance: Utterance) -> bool:
    from esl_app.providers.agent.local.nlu import asks_for_person
    from esl_app.telephony.verbs import is_zero_request

    if is_zero_request(utterance):
        return True
    return asks_for_person(utterance.text)


@dataclass
class _StreamTurn:
    """The state of one streamed agent turn."""

    key: str
    said: str
    started: float
    streamed: str = ""  # all text the agent gave
    tail: str = ""  # text after the last complete sentence
    final: Any = None  # the AgentReply, or the failure
    queued: bool = False  # something (ack, filler, answer) was queued to speak
    lead: int = 0  # sentences of the clinic's greeting before the agent's own
    answer_heard: bool = False  # a sentence of the agent's reply started playing
    kinds: dict[int, str] = field(default_factory=dict)  # Speak index -> ack/filler/answer
    segments: list[tuple[str, int, list[str]]] = field(default_factory=list)

    def played(self, index: int, text: str, at_ms: int) -> None:
        self.heard(self.kinds.get(index, "answer"), text, at_ms)

    def heard(self, kind: str, text: str, at_ms: int) -> None:
        """A sentence of ``kind`` started playing: one transcript turn per run of a kind."""
        if self.segments and self.segments[-1][0] == kind:
            self.segments[-1][2].append(text)
        else:
            self.segments.append((kind, at_ms, [text]))


def _run_stream(make: Callable[[], AgentStream], on_piece: Callable[[str], Any]) -> Any:
    """Drain an agent's stream: each text piece to ``on_piece``; the reply or the failure."""
    try:
        for item in make():
            if isinstance(item, AgentReply):
                return item
            if item:
                on_piece(str(item))
    except Exception as exc:
        return exc
    return AgentError("the agent's stream ended without a reply")


def _unspoken(full: str, streamed: str) -> str:
    """What ``full`` (the reply's text) says beyond the ``streamed`` pieces."""
    if not streamed.strip():
        return full
    have, want = " ".join(streamed.split()), " ".join(full.split())
    return want[len(have):] if want.startswith(have) else ""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _one_line(value: str | None, what: str) -> str | None:
    """``value`` without control characters (runs become one space).

    A CR/LF would split a pipelined ESL command and shift every later reply onto
    the wrong command.
    """
    if not value or not _CONTROL.search(value):
        return value
    log.debug("control characters removed from %s", what)
    return _CONTROL.sub(" ", value).strip()


def _last_sentence(text: str) -> str:
    parts = split_sentences(text)
    return parts[-1] if parts else ""
