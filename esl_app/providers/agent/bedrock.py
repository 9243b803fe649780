"""The Amazon Bedrock Agent as a dialogue agent (``agent: bedrock``).

One Bedrock session per call (session id = the call's UUID). The tenant id,
time zone, today's date in that zone and the caller's number travel as
*session attributes*, so the model can resolve "tomorrow" and the action-group
Lambdas learn the tenant from us, never from the model.

Both kinds of action group work:

* **Lambda** groups run server side; we only see them in the trace
  (``invocationInput`` / ``observation``), which is how a handoff or a booking
  made by a Lambda still reaches the call engine.
* **RETURN_CONTROL** groups hand the tool call to us: we run it in process
  through :mod:`esl_app.providers.agent.tools` (the same functions the Lambdas reach over HTTP)
  and send ``returnControlInvocationResults`` back in a follow-up request.

Failures raise :class:`BedrockAgentError`, whose ``retry_safe`` says whether a
tool with side effects (booking, cancelling, rescheduling) may already have
run this turn: :class:`esl_app.providers.resilience.ResilientAgent` retries
only when it is True (asking again after a booking could book twice).

Streaming (:meth:`BedrockAgent.respond_stream`): the request asks for
``streamingConfigurations={"streamFinalResponse": True}``, so the final answer
arrives as many ``chunk`` events instead of one; each complete sentence is
passed on at once (with the confirmation code marked up for spelling, which is
known by then: the tools ran before the final answer), so the call engine can
speak it while the model still writes the rest. The agent's role needs
``bedrock:InvokeModelWithResponseStream`` for this (Bedrock Agents docs).

Blocking boto3 I/O is fine here: under gevent the sockets are cooperative.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Generator, Iterable, Mapping
from datetime import date, datetime
from types import ModuleType
from typing import Any

import gevent

from esl_app.config.tenants import Tenant
from esl_app.providers.agent.base import (
    AgentError,
    AgentReply,
    AgentStream,
    CallContext,
    Utterance,
    complete_sentences,
)
from esl_app.providers.markup import say_characters

__all__ = [
    "BedrockAgent",
    "BedrockAgentError",
    "TOOL_ACTIONS",
    "new_client",
    "session_attributes",
]

log = logging.getLogger(__name__)

#: Bedrock action name -> (esl_app.providers.agent.tools function, {parameter name: keyword}).
#: The parameter names are the contract of docs/contracts.md §3.
TOOL_ACTIONS: dict[str, tuple[str, dict[str, str]]] = {
    "searchSlots": ("search_slots", {
        "doctor": "doctor", "date": "date", "partOfDay": "part_of_day", "limit": "limit"}),
    "confirmAppointment": ("confirm_appointment", {
        "slotId": "slot_id", "patientName": "patient_name", "email": "email",
        "phone": "phone"}),
    "handoffToHuman": ("handoff_to_human", {"reason": "reason"}),
    "cancelAppointment": ("cancel_appointment", {
        "code": "code", "confirmation": "code", "verify": "verify"}),
    "rescheduleAppointment": ("reschedule_appointment", {
        "code": "code", "confirmation": "code", "slotId": "slot_id"}),
    "findAppointments": ("find_appointments", {"phone": "phone", "name": "name"}),
}
#: Actions whose repetition could change the database (never retried blindly).
SIDE_EFFECTS = frozenset({"confirmAppointment", "cancelAppointment", "rescheduleAppointment"})
_TAKES_NOW = frozenset({"search_slots", "confirm_appointment", "reschedule_appointment",
                        "find_appointments"})
_OUTCOMES = {"confirmAppointment": "booked", "cancelAppointment": "cancelled",
             "rescheduleAppointment": "rescheduled"}
_HTTP_STATUS = {"slot_taken": 409, "not_found": 404, "not_allowed": 403, "invalid": 422}
#: Error codes (HTTP or in-stream) worth one more try.
_TRANSIENT = frozenset({
    "throttlingException", "ThrottlingException", "internalServerException",
    "InternalServerException", "badGatewayException", "BadGatewayException",
    "dependencyFailedException", "DependencyFailedException", "modelNotReadyException",
    "ModelNotReadyException", "ServiceUnavailableException", "serviceQuotaExceededException",
})
_MAX_ROUNDS = 5  # returnControl round trips in one turn
_HANDOFF_TEXT = "Let me connect you with someone at the clinic."

_clients: dict[tuple[str, float, float], Any] = {}
_clients_lock = threading.Lock()


class BedrockAgentError(AgentError):
    """Bedrock failed this turn.

    ``retry_safe``: no tool with side effects can have run, so asking again
    cannot book twice. ``transient``: the failure may go away (throttling,
    timeout, 5xx) — a retry is worth its latency.
    """

    def __init__(self, message: str, *, retry_safe: bool, transient: bool,
                 code: str = "") -> None:
        super().__init__(message)
        self.retry_safe = retry_safe
        self.transient = transient
        self.code = code


def session_attributes(call: CallContext) -> dict[str, str]:
    """What every Bedrock request of a call carries (all values are strings)."""
    tenant = call.tenant
    now = call.now.astimezone(tenant.tz) if call.now else datetime.now(tenant.tz)
    attrs = {
        "tenantId": tenant.id,
        "tenantTimezone": tenant.timezone,
        "today": now.date().isoformat(),
        "weekday": now.strftime("%A"),
    }
    if call.caller:
        attrs["callerNumber"] = call.caller
    return attrs


def new_client(region: str, read_timeout_s: float = 10.0, connect_timeout_s: float = 3.0) -> Any:
    """A ``bedrock-agent-runtime`` client; credentials from the standard AWS chain."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "bedrock-agent-runtime", region_name=region,
        config=Config(read_timeout=read_timeout_s, connect_timeout=connect_timeout_s,
                      # one attempt: ResilientAgent owns retries, and knows
                      # whether a retry is safe after a tool ran
                      retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def _client(region: str, read_timeout_s: float, connect_timeout_s: float) -> Any:
    """One shared client per region and timeouts (boto3 clients are thread-safe)."""
    key = (region, read_timeout_s, connect_timeout_s)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = new_client(region, read_timeout_s, connect_timeout_s)
        return client


class _Turn:
    """What one caller turn produced, gathered from chunks, traces and tools."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.side_effects = False
        self.handoff: dict[str, Any] | None = None
        self.outcome: str | None = None
        self.confirmation: str | None = None
        self.appointment: dict[str, Any] | None = None
        self.pending_action: str | None = None  # last action seen in a trace

    def saw_result(self, action: str, result: Any) -> None:
        """Note a tool result (ours, or a Lambda's from the trace)."""
        if action == "handoffToHuman":
            self.handoff = result if isinstance(result, dict) else {}
            return
        if not isinstance(result, dict) or result.get("ok") is False:
            return
        outcome = _OUTCOMES.get(action)
        if outcome:
            self.outcome = outcome
            self.confirmation = result.get("confirmation") or self.confirmation
            if result.get("start"):
                self.appointment = {"doctor": result.get("doctor"), "start": result["start"]}


class BedrockAgent:
    """A Bedrock Agent behind the :class:`~esl_app.providers.agent.base.Agent` interface.

    One instance may serve every call of every tenant: the per-call state is the
    Bedrock session (keyed by call id) and ``call.state``.
    """

    name = "bedrock"

    def __init__(
        self,
        tenant: Tenant | None = None,
        *,
        client: Any = None,
        read_timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
        enable_trace: bool = True,
        tools: ModuleType | None = None,
        end_timeout_s: float = 3.0,
        stream: bool = True,
    ) -> None:
        """``client`` overrides the shared boto3 client (tests inject their own).

        ``stream=False`` makes :meth:`respond_stream` ask for one whole answer
        (for an agent role without ``bedrock:InvokeModelWithResponseStream``).
        """
        self.tenant = tenant
        self._client = client
        self.read_timeout_s = read_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.enable_trace = enable_trace
        self._tools = tools
        self.end_timeout_s = end_timeout_s
        self.stream = stream
        self.invocations = 0  # invoke_agent requests made (usage accounting)

    # -- Agent interface -------------------------------------------------

    def greet(self, call: CallContext) -> AgentReply:
        """A fixed opening line: no model round trip before the caller speaks."""
        return AgentReply(text="How can I help you today?")

    def respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        """Send one caller turn to the agent and turn its answer into a reply."""
        run = self._run(call, utterance, stream=False)
        while True:
            try:
                next(run)
            except StopIteration as done:
                return done.value

    def respond_stream(self, call: CallContext, utterance: Utterance) -> AgentStream:
        """One caller turn with the final answer streamed: complete sentences, then the reply."""
        turn_box: list[_Turn] = []
        tail = ""
        given = False
        run = self._run(call, utterance, stream=self.stream, turn_box=turn_box)
        while True:
            try:
                piece = next(run)
            except StopIteration as done:
                reply: AgentReply = done.value
                break
            ready, tail = complete_sentences(tail + piece)
            for sentence in ready:
                given = True
                yield self._spell(turn_box[0], sentence) + " "
        if tail.strip():
            yield self._spell(turn_box[0], tail.strip())
        elif not given and reply.text:  # nothing streamed: a fixed reply, a handoff
            yield reply.text
        yield reply

    @staticmethod
    def _spell(turn: _Turn, sentence: str) -> str:
        """Mark the confirmation code up for spelling, as :meth:`_reply` does."""
        code = turn.confirmation
        if code and code in sentence and "<say-as" not in sentence:
            return sentence.replace(code, say_characters(code))
        return sentence

    def _run(self, call: CallContext, utterance: Utterance, *, stream: bool,
             turn_box: list[_Turn] | None = None) -> Generator[str, None, AgentReply]:
        """The turn's round trips; yields answer text as it streams, returns the reply."""
        text = (utterance.text or "").strip()
        if not text and utterance.dtmf:
            text = f"(The caller pressed {' '.join(utterance.dtmf)} on the keypad.)"
        if not text:
            return AgentReply(text="Sorry, I didn't catch that. Could you say it again?")
        turn = _Turn()
        if turn_box is not None:
            turn_box.append(turn)
        state: dict[str, Any] = {"sessionAttributes": session_attributes(call)}
        request: dict[str, Any] = {"inputText": text}
        for _ in range(_MAX_ROUNDS):
            control = yield from self._invoke(call, turn, request, state, stream=stream)
            if control is None:
                return self._reply(call, turn)
            results = self._run_tools(call, turn, control)
            if turn.handoff is not None:
                # The caller goes to a human now; the model need not phrase it.
                return self._reply(call, turn)
            state = {"sessionAttributes": session_attributes(call),
                     "invocationId": control.get("invocationId", ""),
                     "returnControlInvocationResults": results}
            request = {}
        raise BedrockAgentError("too many returnControl rounds", retry_safe=not
                                turn.side_effects, transient=False, code="loop")

    def end(self, call: CallContext) -> None:
        """Close the Bedrock session (bounded wait, never raises)."""
        try:
            with gevent.Timeout(self.end_timeout_s):
                response = self._get_client(call.tenant).invoke_agent(
                    agentId=self._config(call.tenant).agent_id,
                    agentAliasId=self._config(call.tenant).alias_id,
                    sessionId=call.call_id, inputText="Goodbye.", endSession=True,
                    sessionState={"sessionAttributes": session_attributes(call)})
                self.invocations += 1
                for _ in response.get("completion", ()):
                    pass
        except BaseException as exc:  # noqa: BLE001 - end() must never raise
            if isinstance(exc, gevent.GreenletExit | KeyboardInterrupt | SystemExit):
                raise
            log.debug("bedrock end_session for call %s failed: %s", call.call_id,
                      type(exc).__name__)

    # -- internals ---------------------------------------------------------

    def _config(self, tenant: Tenant) -> Any:
        cfg = tenant.bedrock or (self.tenant.bedrock if self.tenant else None)
        if cfg is None:
            raise BedrockAgentError(f"tenant '{tenant.id}' has no bedrock configuration",
                                    retry_safe=True, transient=False, code="config")
        return cfg

    def _get_client(self, tenant: Tenant) -> Any:
        if self._client is not None:
            return self._client
        return _client(self._config(tenant).region, self.read_timeout_s,
                       self.connect_timeout_s)

    def _invoke(self, call: CallContext, turn: _Turn, request: Mapping[str, Any],
                state: Mapping[str, Any], *, stream: bool = False
                ) -> Generator[str, None, dict[str, Any] | None]:
        """One invoke_agent round trip: yields answer text, returns returnControl or None.

        Text is yielded only with ``stream`` (then requested as a stream, too).
        """
        from botocore.exceptions import BotoCoreError, ClientError, EventStreamError

        cfg = self._config(call.tenant)
        control: dict[str, Any] | None = None
        try:
            self.invocations += 1
            per_call = call.state.setdefault("bedrock", {})
            per_call["invocations"] = per_call.get("invocations", 0) + 1
            extra: dict[str, Any] = dict(request)
            if stream:
                extra["streamingConfigurations"] = {"streamFinalResponse": True}
            response = self._get_client(call.tenant).invoke_agent(
                agentId=cfg.agent_id, agentAliasId=cfg.alias_id, sessionId=call.call_id,
                enableTrace=self.enable_trace, sessionState=dict(state), **extra)
            for event in response["completion"]:
                if "chunk" in event:
                    piece = event["chunk"].get("bytes", b"").decode("utf-8", "replace")
                    turn.text.append(piece)
                    if stream and piece:
                        yield piece
                elif "trace" in event:
                    self._on_trace(call, turn, event["trace"])
                elif "returnControl" in event:
                    control = event["returnControl"]
        except EventStreamError as exc:  # an error event inside the stream
            code = exc.response.get("Error", {}).get("Code", "")
            raise BedrockAgentError(f"bedrock stream error {code}", retry_safe=not
                                    turn.side_effects, transient=code in _TRANSIENT,
                                    code=code) from exc
        except ClientError as exc:  # HTTP error before the stream
            code = exc.response.get("Error", {}).get("Code", "")
            raise BedrockAgentError(f"bedrock error {code}", retry_safe=not turn.side_effects,
                                    transient=code in _TRANSIENT, code=code) from exc
        except BotoCoreError as exc:  # timeouts, connection errors, bad frames
            raise BedrockAgentError(f"bedrock transport error {type(exc).__name__}",
                                    retry_safe=not turn.side_effects, transient=True,
                                    code=type(exc).__name__) from exc
        except (OSError, ValueError, KeyError, UnicodeError) as exc:
            # urllib3 read timeouts/protocol errors surface raw from the event
            # stream; botocore.eventstream.ParserError (checksum, lengths) is a
            # plain Exception subclass and handled below.
            raise BedrockAgentError(f"bedrock stream broken: {type(exc).__name__}",
                                    retry_safe=not turn.side_effects, transient=True,
                                    code=type(exc).__name__) from exc
        except Exception as exc:
            if _is_stream_failure(exc):
                raise BedrockAgentError(f"bedrock stream broken: {type(exc).__name__}",
                                        retry_safe=not turn.side_effects, transient=True,
                                        code=type(exc).__name__) from exc
            raise
        return control

    def _on_trace(self, call: CallContext, turn: _Turn, part: Mapping[str, Any]) -> None:
        """Log the trace at debug and read tool calls made by Lambda action groups."""
        trace = part.get("trace") or {}
        if log.isEnabledFor(logging.DEBUG):
            log.debug("bedrock trace call=%s kinds=%s", call.call_id, sorted(trace))
        orch = trace.get("orchestrationTrace") or {}
        invocation = (orch.get("invocationInput") or {}).get("actionGroupInvocationInput")
        if invocation:
            action = _action_name(invocation.get("apiPath") or invocation.get("function"))
            turn.pending_action = action
            if action in SIDE_EFFECTS:
                turn.side_effects = True
            if action == "handoffToHuman":
                turn.handoff = turn.handoff or {}
        output = (orch.get("observation") or {}).get("actionGroupInvocationOutput")
        if output and turn.pending_action:
            turn.saw_result(turn.pending_action, _loads(output.get("text")))

    def _run_tools(self, call: CallContext, turn: _Turn,
                   control: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run a RETURN_CONTROL group's tool calls here; build the results to send back."""
        results: list[dict[str, Any]] = []
        for item in control.get("invocationInputs") or ():
            if "apiInvocationInput" in item:
                inv = item["apiInvocationInput"]
                action = _action_name(inv.get("apiPath"))
                params = _params(inv.get("parameters"))
                body = ((inv.get("requestBody") or {}).get("content") or {})
                for content in body.values():
                    params.update(_params((content or {}).get("properties")))
                result, status = self._call_tool(call, turn, action, params)
                results.append({"apiResult": {
                    "actionGroup": inv.get("actionGroup", ""),
                    "apiPath": inv.get("apiPath", ""),
                    "httpMethod": inv.get("httpMethod", "POST"),
                    "httpStatusCode": status,
                    "responseBody": {"application/json": {"body": json.dumps(result)}},
                }})
            elif "functionInvocationInput" in item:
                inv = item["functionInvocationInput"]
                action = _action_name(inv.get("function"))
                result, status = self._call_tool(call, turn, action,
                                                 _params(inv.get("parameters")))
                fr: dict[str, Any] = {
                    "actionGroup": inv.get("actionGroup", ""),
                    "function": inv.get("function", ""),
                    "responseBody": {"TEXT": {"body": json.dumps(result)}},
                }
                if status >= 500:
                    fr["responseState"] = "FAILURE"
                results.append({"functionResult": fr})
        return results

    def _call_tool(self, call: CallContext, turn: _Turn, action: str,
                   params: dict[str, str]) -> tuple[dict[str, Any], int]:
        """Run one tool; the tenant always comes from the call, never the model."""
        spec = TOOL_ACTIONS.get(action)
        if spec is None:
            return {"ok": False, "error": "unknown_action",
                    "message": "That is not something I can do."}, 400
        func_name, mapping = spec
        kwargs: dict[str, Any] = {}
        for name, value in params.items():
            key = mapping.get(name)
            if key and value not in (None, ""):
                kwargs[key] = value
        try:
            if "limit" in kwargs:
                kwargs["limit"] = max(1, min(int(kwargs["limit"]), 5))
            if "date" in kwargs:
                kwargs["date"] = date.fromisoformat(str(kwargs["date"])[:10])
        except ValueError:
            return {"ok": False, "error": "invalid",
                    "message": "I could not understand that date."}, 422
        if func_name in _TAKES_NOW and call.now is not None:
            kwargs["now"] = call.now
        if func_name == "confirm_appointment":
            kwargs["call_id"] = call.call_id
            kwargs["caller"], kwargs["did"] = call.caller, call.did
            if "phone" not in kwargs and call.caller:
                kwargs["phone"] = call.caller
        if action in SIDE_EFFECTS:
            turn.side_effects = True
        tools = self._tools
        if tools is None:
            from esl_app.providers.agent import tools as tools_module
            tools = self._tools = tools_module
        func: Callable[..., dict[str, Any]] = getattr(tools, func_name)
        try:
            result = func(call.tenant, **kwargs)
        except TypeError as exc:  # the model sent parameters the tool cannot take
            log.info("bedrock tool %s: bad parameters (%s)", action, type(exc).__name__)
            return {"ok": False, "error": "invalid",
                    "message": "Some details were missing or invalid."}, 422
        except Exception as exc:  # noqa: BLE001 - the model hears a failure, the call goes on
            log.warning("bedrock tool %s failed: %s", action, type(exc).__name__)
            return {"ok": False, "error": "internal",
                    "message": "The scheduling system is not available right now."}, 500
        turn.saw_result(action, result)
        if action in SIDE_EFFECTS and result.get("ok"):
            # Committed: if this turn fails before the caller hears it, whichever agent
            # answers next must announce it rather than start over (no double booking).
            call.state["unannounced"] = {
                "outcome": _OUTCOMES.get(action), "confirmation": result.get("confirmation"),
                "doctor": result.get("doctor"), "start": result.get("start"),
                "spoken": result.get("spoken")}
        if action == "searchSlots" and result.get("ok"):
            call.state.setdefault("bedrock", {})["last_slots"] = result.get("slots", [])
        if result.get("ok") is False:
            return result, _HTTP_STATUS.get(str(result.get("error")), 400)
        return result, 200

    def _reply(self, call: CallContext, turn: _Turn) -> AgentReply:
        """Build the call engine's reply; the transfer wins over any text."""
        text = "".join(turn.text).strip()
        if text or turn.handoff is not None:
            call.state.pop("unannounced", None)  # the model will say it itself
        if turn.confirmation and turn.confirmation in text and "<say-as" not in text:
            text = text.replace(turn.confirmation, say_characters(turn.confirmation))
        if turn.outcome:
            call.state.setdefault("bedrock", {})["outcome"] = turn.outcome
        if turn.handoff is not None:
            to = call.tenant.handoff or str(turn.handoff.get("to") or "")
            return AgentReply(text=text or _HANDOFF_TEXT, action="transfer",
                              transfer_to=to or None, outcome="handoff",
                              confirmation=turn.confirmation, appointment=turn.appointment)
        if not text:
            raise BedrockAgentError("bedrock returned no text", retry_safe=not turn.side_effects,
                                    transient=True, code="empty")
        action = "hangup" if _CLOSING.search(text) and not turn.outcome else "continue"
        return AgentReply(text=text, action=action, outcome=turn.outcome,
                          confirmation=turn.confirmation, appointment=turn.appointment)


# The model says goodbye in words; the call engine needs an action to end the call.
_CLOSING = re.compile(r"\b(good ?bye|bye now|have a (?:great|good|nice|wonderful) "
                      r"(?:day|evening|afternoon))\b[.!]?\s*$", re.IGNORECASE)


def _action_name(raw: str | None) -> str:
    """``/searchSlots`` or ``searchSlots`` → ``searchSlots``."""
    return (raw or "").strip().strip("/").split("/")[-1]


def _params(items: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(p.get("name")): p.get("value") for p in items or () if p.get("name")}


def _loads(text: Any) -> Any:
    """A Lambda's body as JSON when it is JSON, else the raw text."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        match = re.search(r"\{.*\}", text, re.S)
        if match:
            try:
                return json.loads(match.group(0))
            except ValueError:
                pass
        return text


def _is_stream_failure(exc: Exception) -> bool:
    """Errors from a broken event stream that are not botocore/OS errors."""
    from botocore.eventstream import ParserError

    if isinstance(exc, ParserError):
        return True
    try:
        from urllib3.exceptions import HTTPError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, HTTPError)
