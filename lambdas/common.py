"""Shared code of the Bedrock action-group Lambdas (standard library only).

The Lambdas are thin: they read the agent's action-group event, call the
appointments API (docs/contracts.md §2) as the session's tenant, and phrase the answer
for speech. They must never fail in a way the caller hears as silence, so every
problem — a malformed event, a missing token, the API down — becomes a
well-formed action-group response whose ``message`` the model can say.

Both event forms are handled (docs/contracts.md §3): the OpenAPI form (``apiPath``,
``httpMethod``, ``parameters``, ``requestBody``) answered with
``responseBody["application/json"]["body"]`` and the function-details form
(``function``, ``parameters``) answered with ``functionResponse``.

Environment: ``IVR_API_URL`` (base URL of the API), ``IVR_API_TOKENS`` (JSON
tenant id → token) or ``IVR_API_TOKENS_SECRET`` (Secrets Manager secret holding
the same JSON; boto3 is imported lazily, it ships with the Lambda runtime),
``IVR_API_TIMEOUT`` (seconds, default 4), ``IVR_LOG_LEVEL`` (default INFO).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

__all__ = [
    "ActionCall",
    "ActionError",
    "ApiResult",
    "api_request",
    "clear_caches",
    "log",
    "mask",
    "parse_event",
    "respond",
    "run_action",
    "speak_code",
    "speak_time",
    "token_for",
]

SORRY_UNAVAILABLE = (
    "I'm sorry, I can't reach the clinic's calendar right now. "
    "I can transfer you to the clinic's staff instead."
)
_TENANT_KEYS = {"tenant", "tenantid", "tenant_id", "clinic", "clinicid", "clinic_id"}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_PHONE = re.compile(r"(?<![\w])\+?\d[\d ().-]{5,}\d(?![\w])")
_MAX_PARAM = 1000


class ActionError(Exception):
    """A refusal the model can explain: ``message`` is said to the caller.

    ``status`` is the HTTP status reported in the OpenAPI form; ``state`` is
    the function-details ``responseState`` (``REPROMPT`` when the model should
    ask the caller again, ``None`` for an answer it just relays).
    """

    def __init__(self, code: str, message: str, *, status: int = 400,
                 state: str | None = "REPROMPT", extra: dict[str, Any] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.status = status
        self.state = state
        self.extra = extra or {}


@dataclass
class ActionCall:
    """One action-group invocation, whichever form it came in."""

    form: str  # "openapi" | "function"
    action_group: str
    api_path: str
    http_method: str
    function: str
    tenant_id: str
    session_id: str
    params: dict[str, str] = field(default_factory=dict)
    session_attributes: dict[str, str] = field(default_factory=dict)
    prompt_session_attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class ApiResult:
    """An API answer: status and decoded JSON (``None`` when there was no JSON)."""

    status: int
    data: Any


# ---------------------------------------------------------------- logging

_logger = logging.getLogger("ivr.lambda")
_UNMASKED = {"request_id", "tenant", "action", "form", "outcome", "status", "ms", "attempt"}


def mask(text: str) -> str:
    """Hide e-mail addresses and phone numbers (keep the last two digits)."""
    text = _EMAIL.sub(lambda m: "***@" + m.group(0).rsplit("@", 1)[1], text)
    return _PHONE.sub(lambda m: "***" + re.sub(r"\D", "", m.group(0))[-2:], text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


def _setup_logging() -> None:
    if _logger.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    _logger.addHandler(handler)
    _logger.propagate = False  # the Lambda runtime's root handler would log it twice
    _logger.setLevel(os.environ.get("IVR_LOG_LEVEL", "INFO").upper())


def log(level: int, event: str, **fields: Any) -> None:
    """One JSON log line; every string is masked for phone numbers and e-mails."""
    _setup_logging()
    if not _logger.isEnabledFor(level):
        return
    record = {"level": logging.getLevelName(level), "event": event,
              **{k: v if k in _UNMASKED else _masked(v) for k, v in fields.items()}}
    _logger.log(level, json.dumps(record, default=str, sort_keys=True))


# ---------------------------------------------------------------- events


def _props(items: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if not isinstance(items, list):
        return out
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            value = item.get("value")
            if value is None:
                continue
            value = value if isinstance(value, str) else json.dumps(value)
            out[item["name"]] = value.strip()[:_MAX_PARAM]
    return out


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def parse_event(event: Any, default_action: str) -> ActionCall:
    """Read an action-group event; raises :class:`ActionError` when it is unusable.

    Even when it raises, :func:`shell_call` gives the response envelope a best
    guess of the event's names, so the agent still gets a well-formed answer.
    """
    call = shell_call(event, default_action)
    if not isinstance(event, dict):
        raise ActionError("malformed_event", "I'm sorry, something went wrong on my side.",
                          status=400, state="FAILURE")
    params = _props(event.get("parameters"))
    body = event.get("requestBody")
    if isinstance(body, dict) and isinstance(body.get("content"), dict):
        for content in body["content"].values():
            if isinstance(content, dict):
                params.update(_props(content.get("properties")))
    call.params = params
    tenant = call.session_attributes.get("tenantId", "")
    if not _SLUG.match(tenant):
        log(logging.WARNING, "missing_tenant", action=default_action)
        raise ActionError("no_tenant", SORRY_UNAVAILABLE, status=400, state=None)
    call.tenant_id = tenant
    for key, value in params.items():
        if key.lower() in _TENANT_KEYS and value and value != tenant:
            log(logging.WARNING, "foreign_tenant_refused", action=default_action, tenant=tenant)
            raise ActionError("wrong_clinic",
                              "I can only help with appointments at this clinic.",
                              status=403, state=None)
    return call


def shell_call(event: Any, default_action: str) -> ActionCall:
    """The names of an event, as far as they can be read (for the response)."""
    ev = event if isinstance(event, dict) else {}

    def s(key: str, default: str = "") -> str:
        value = ev.get(key)
        return value if isinstance(value, str) else default

    form = "function" if "function" in ev and "apiPath" not in ev else "openapi"
    return ActionCall(
        form=form,
        action_group=s("actionGroup"),
        api_path=s("apiPath", "/" + default_action),
        http_method=s("httpMethod", "POST"),
        function=s("function", default_action),
        tenant_id="",
        session_id=s("sessionId"),
        session_attributes=_str_map(ev.get("sessionAttributes")),
        prompt_session_attributes=_str_map(ev.get("promptSessionAttributes")),
    )


def respond(call: ActionCall, body: dict[str, Any], *, status: int = 200,
            state: str | None = None) -> dict[str, Any]:
    """The action-group response in the form the event came in."""
    text = json.dumps(body, ensure_ascii=False)
    if call.form == "function":
        function_response: dict[str, Any] = {"responseBody": {"TEXT": {"body": text}}}
        if state:
            function_response["responseState"] = state
        response: dict[str, Any] = {
            "actionGroup": call.action_group,
            "function": call.function,
            "functionResponse": function_response,
        }
    else:
        response = {
            "actionGroup": call.action_group,
            "apiPath": call.api_path,
            "httpMethod": call.http_method,
            "httpStatusCode": status,
            "responseBody": {"application/json": {"body": text}},
        }
    return {
        "messageVersion": "1.0",
        "response": response,
        "sessionAttributes": call.session_attributes,
        "promptSessionAttributes": call.prompt_session_attributes,
    }


def run_action(event: Any, context: Any, action: str,
               fn: Callable[[ActionCall], tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """Parse, run ``fn``, answer; turns every failure into a speakable answer."""
    started = time.monotonic()
    call = shell_call(event, action)
    request_id = getattr(context, "aws_request_id", None)
    try:
        call = parse_event(event, action)
        body, status = fn(call)
        out = respond(call, body, status=status)
        outcome = "ok" if body.get("ok") else str(body.get("error", "refused"))
    except ActionError as exc:
        body = {"ok": False, "error": exc.code, "message": exc.message, **exc.extra}
        out = respond(call, body, status=exc.status, state=exc.state)
        status, outcome = exc.status, exc.code
    except Exception as exc:  # the agent must always get an answer
        log(logging.ERROR, "action_crashed", action=action, tenant=call.tenant_id,
            error=type(exc).__name__, detail=str(exc)[:300], request_id=request_id)
        body = {"ok": False, "error": "internal", "message": SORRY_UNAVAILABLE}
        out = respond(call, body, status=500, state=None)
        status, outcome = 500, "internal"
    log(logging.INFO, "action", action=action, form=call.form, tenant=call.tenant_id,
        status=status, outcome=outcome, ms=round((time.monotonic() - started) * 1000, 1),
        request_id=request_id)
    return out


# ---------------------------------------------------------------- tokens

_secret_cache: dict[str, Any] = {"name": None, "at": 0.0, "tokens": {}}
_SECRET_TTL = 300.0
_SECRET_MIN_REFRESH = 30.0


def clear_caches() -> None:
    """Forget cached secrets (tests; a rotated secret is re-read after the TTL anyway)."""
    _secret_cache.update(name=None, at=0.0, tokens={})


def _load_secret(name: str) -> dict[str, str]:
    import boto3  # lazily: present in the Lambda runtime, not needed with IVR_API_TOKENS

    raw = boto3.client("secretsmanager").get_secret_value(SecretId=name)
    text = raw.get("SecretString") or raw.get("SecretBinary", b"").decode("utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("secret is not a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def token_for(tenant_id: str) -> str:
    """The API token of a tenant (env JSON first, then the cached secret)."""
    raw = os.environ.get("IVR_API_TOKENS")
    if raw:
        try:
            tokens = json.loads(raw)
        except ValueError:
            log(logging.ERROR, "config_error", key="IVR_API_TOKENS", detail="not JSON")
            tokens = {}
        token = tokens.get(tenant_id) if isinstance(tokens, dict) else None
        if isinstance(token, str) and token:
            return token
    name = os.environ.get("IVR_API_TOKENS_SECRET")
    if name:
        now = time.monotonic()
        cache = _secret_cache
        age = now - cache["at"]
        stale = cache["name"] != name or age > _SECRET_TTL
        missing = tenant_id not in cache["tokens"] and age > _SECRET_MIN_REFRESH
        if stale or missing:
            try:
                cache.update(name=name, at=now, tokens=_load_secret(name))
            except Exception as exc:
                log(logging.ERROR, "secret_unavailable", error=type(exc).__name__,
                    detail=str(exc)[:200])
                raise ActionError("unavailable", SORRY_UNAVAILABLE, status=503,
                                  state=None) from None
        token = cache["tokens"].get(tenant_id)
        if token:
            return token
    log(logging.ERROR, "no_token", tenant=tenant_id)
    raise ActionError("unavailable", SORRY_UNAVAILABLE, status=503, state=None)


# ---------------------------------------------------------------- API client


def api_request(tenant_id: str, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: dict[str, Any] | None = None, retry: bool = False) -> ApiResult:
    """Call the appointments API as ``tenant_id``.

    ``path`` is relative to ``/v1/tenants/{tenant}``. 2xx and 4xx answers are
    returned for the caller to phrase, except 401/403 (a configuration fault
    the caller cannot fix) which, like 5xx, timeouts and refused connections,
    raise :class:`ActionError` "unavailable".
    """
    base = os.environ.get("IVR_API_URL", "").rstrip("/")
    if not base.startswith(("http://", "https://")):
        log(logging.ERROR, "config_error", key="IVR_API_URL")
        raise ActionError("unavailable", SORRY_UNAVAILABLE, status=503, state=None)
    url = f"{base}/v1/tenants/{urllib.parse.quote(tenant_id, safe='')}{path}"
    if query:
        clean = {k: v for k, v in query.items() if v not in (None, "")}
        if clean:
            url += "?" + urllib.parse.urlencode(clean)
    headers = {
        "Authorization": f"Bearer {token_for(tenant_id)}",
        "Accept": "application/json",
        "User-Agent": "ivr-lambda/1",
    }
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    timeout = float(os.environ.get("IVR_API_TIMEOUT", "4") or 4)
    attempts = 2 if retry else 1
    for attempt in range(attempts):
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return ApiResult(resp.status, _decode(resp.read()))
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, _decode(exc.read())
            exc.close()
            if status in (401, 403):
                log(logging.ERROR, "api_auth_failed", tenant=tenant_id, status=status)
                raise ActionError("unavailable", SORRY_UNAVAILABLE, status=503,
                                  state=None) from None
            if status >= 500:
                log(logging.ERROR, "api_error", tenant=tenant_id, status=status)
                raise ActionError("unavailable", SORRY_UNAVAILABLE, status=503,
                                  state=None) from None
            return ApiResult(status, payload)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out
            log(logging.WARNING if attempt + 1 < attempts else logging.ERROR, "api_unreachable",
                tenant=tenant_id, error=type(exc).__name__, attempt=attempt + 1)
            if attempt + 1 < attempts:
                time.sleep(0.2)
                continue
            raise ActionError("unavailable", SORRY_UNAVAILABLE, status=503,
                              state=None) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw else None
    except ValueError:
        return None


def api_error_text(result: ApiResult) -> str:
    """The ``error`` text of an API answer, or empty."""
    if isinstance(result.data, dict) and isinstance(result.data.get("error"), str):
        return result.data["error"]
    return ""


# ---------------------------------------------------------------- speech


def parse_time(iso: str) -> datetime:
    """An ISO 8601 time from the API (it carries the clinic's UTC offset)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def speak_time(value: str | datetime, *, with_day: bool = True) -> str:
    """"Tuesday, November 24 at 9 AM" / "at 9:30 AM" / "at noon" in the clinic's local time.

    The bot's ``esl_app.providers.agent.tools.spoken_time``, copied because the Lambda
    bundle is ``lambdas/`` alone (no ``esl_app``): tests/test_lambdas_handlers.py proves
    the two say the same for every minute of the day. The API returns times with the
    clinic's offset, so the wall-clock values are already local: no time zone database
    is needed here.
    """
    dt = parse_time(value) if isinstance(value, str) else value
    hour = dt.hour % 12 or 12
    clock = f"{hour}" if dt.minute == 0 else f"{hour}:{dt.minute:02d}"
    clock += " AM" if dt.hour < 12 else " PM"
    if dt.hour == 12 and dt.minute == 0:
        clock = "noon"
    if not with_day:
        return clock
    return f"{dt:%A}, {dt:%B} {dt.day} at {clock}"


def speak_date(value: date) -> str:
    """"Tuesday, November 24"."""
    return f"{value:%A}, {value:%B} {value.day}"


def speak_code(code: str) -> str:
    """A confirmation code spelled for speech: "K 7 M, 4 Q 2"."""
    return ", ".join(" ".join(part) for part in code.split("-") if part)


def join_spoken(items: list[str]) -> str:
    """"a", "a and b", "a, b, and c"."""
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]
