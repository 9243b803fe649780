"""The appointments API (docs/contracts.md §2) as a falcon WSGI app on gevent's pywsgi.

What the Lambdas, clinic integrations and operators talk to. Each
``/v1/tenants/{tenant}/…`` request is authorised by a per-tenant bearer token
(stored hashed, see :mod:`esl_app.scheduling.tokens`) and every scheduling call
is scoped by that tenant, so one clinic's token can never read or change
another clinic's data. Every answer — errors included, 404/405/500 too — is
JSON ``{"error": "…"}``: no HTML page, no traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from http import HTTPStatus
from http.client import HTTPException
from importlib import resources
from typing import Any

import falcon
import gevent
import peewee
from gevent.pool import Pool
from gevent.pywsgi import MAX_REQUEST_LINE, WSGIHandler, WSGIServer, _InvalidClientInput
from prometheus_client import CollectorRegistry

from esl_app.config.tenants import Tenant
from esl_app.db import DatabaseError, database, one_line
from esl_app.http import metrics as m
from esl_app.scheduling import service, tokens
from esl_app.scheduling.errors import (
    InvalidRequest,
    NotAllowed,
    NotFound,
    SchedulingError,
    SlotTaken,
)
from esl_app.scheduling.text import BadText, field_text, is_email
from esl_app.support.sockets import refuse

__all__ = ["MAX_BODY", "MAX_HEAD", "HttpLimits", "create_app", "http_limits", "serve_http"]

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{2,31}$")
_PARTS = ("morning", "afternoon", "evening")
_NOTIFY = re.compile(r"^(none|sms|email|both)$")

TenantLookup = Callable[[str], Tenant]

# field → (required, max length, format check or None); every field is a string
_Spec = dict[str, tuple[bool, int, Callable[[str], object] | None]]
_BOOKING_FIELDS: _Spec = {
    "slot_id": (True, 64, None),
    "patient_name": (True, 100, None),
    "email": (False, 254, is_email),
    "phone": (False, 32, _PHONE.match),
    "call_id": (False, 64, None),
    "notify": (False, 5, _NOTIFY.match),  # confirmations the patient agreed to
}
_RESCHEDULE_FIELDS: _Spec = {
    "slot_id": (True, 64, None),
}


# ---------------------------------------------------------------- errors


def _error_serializer(req: falcon.Request, resp: falcon.Response,
                      exc: falcon.HTTPError) -> None:
    """Always JSON ``{"error": …}``, whatever the client accepts."""
    message = exc.description or re.sub(r"^\d{3}\s*", "", exc.title or "").lower() or "error"
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps({"error": message}).encode("utf-8")


def _scheduling_error(req: falcon.Request, resp: falcon.Response, exc: Exception,
                      params: dict[str, Any]) -> None:
    statuses = {
        NotFound: falcon.HTTP_404,
        SlotTaken: falcon.HTTP_409,
        NotAllowed: falcon.HTTP_409,
        InvalidRequest: falcon.HTTP_422,
    }
    # the nearest known class: TooLate is a NotAllowed (a change inside the cancel window)
    status = next((statuses[c] for c in type(exc).__mro__ if c in statuses), falcon.HTTP_503)
    if status == falcon.HTTP_503:
        log.error("scheduling error on %s: %s", req.path, exc)
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps({"error": str(exc) or exc.__class__.__name__}).encode("utf-8")


def _unexpected_error(req: falcon.Request, resp: falcon.Response, exc: Exception,
                      params: dict[str, Any]) -> None:
    if isinstance(exc, peewee.OperationalError | peewee.InterfaceError | DatabaseError):
        # the database is down or gone: the client may retry, as /healthz says
        log.error("database unavailable on %s %s: %s", req.method,
                  req.uri_template or req.path, one_line(exc))
        resp.status = falcon.HTTP_503
        resp.content_type = falcon.MEDIA_JSON
        resp.data = b'{"error": "the database is unavailable; try again later"}'
        return
    log.exception("unhandled error on %s %s", req.method, req.uri_template or req.path)
    resp.status = falcon.HTTP_500
    resp.content_type = falcon.MEDIA_JSON
    resp.data = b'{"error": "internal error"}'


def _unprocessable(message: str) -> falcon.HTTPError:
    return falcon.HTTPUnprocessableEntity(description=message)


# ---------------------------------------------------------------- request helpers


def _bearer(req: falcon.Request) -> str | None:
    header = req.get_header("Authorization") or ""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _authorize(req: falcon.Request, tenant: str) -> None:
    """401 without a live token; 403 with a live token of another tenant."""
    token = _bearer(req)
    owner = tokens.verify_token(token) if token else None
    if owner is None:
        raise falcon.HTTPUnauthorized(
            description="a valid bearer token is required",
            challenges=['Bearer realm="ivr"'])
    if owner != tenant:
        raise falcon.HTTPForbidden(description="this token is not valid for that tenant")


def _json_body(req: falcon.Request) -> dict[str, Any]:
    """The request body as a JSON object, bounded to MAX_BODY bytes."""
    if req.content_length is not None and req.content_length > MAX_BODY:
        raise falcon.HTTPContentTooLarge(description=f"the body exceeds {MAX_BODY} bytes")
    ctype = (req.content_type or "").split(";", 1)[0].strip().lower()
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise falcon.HTTPUnsupportedMediaType(description="the body must be application/json")
    try:
        raw = req.stream.read(MAX_BODY + 1)
    except SlowBody:
        raise falcon.HTTPError(falcon.HTTP_408, description="the request body did not "
                               "arrive in time", headers={"Connection": "close"}) from None
    except (OSError, ValueError):  # a broken chunked body, a client gone mid-body
        raise falcon.HTTPBadRequest(description="the body could not be read",
                                    headers={"Connection": "close"}) from None
    if len(raw) > MAX_BODY:
        raise falcon.HTTPContentTooLarge(description=f"the body exceeds {MAX_BODY} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise falcon.HTTPBadRequest(description="the body is not valid JSON") from None
    except RecursionError:  # "[[[[…": nesting deeper than the parser's stack
        raise falcon.HTTPBadRequest(description="the body nests too deeply") from None
    if not isinstance(data, dict):
        raise falcon.HTTPBadRequest(description="the body must be a JSON object")
    return data


def _fields(data: dict[str, Any], spec: _Spec) -> dict[str, str]:
    """Type, length and format checks; messages start with the field name."""
    unknown = sorted(set(data) - set(spec))
    if unknown:
        raise _unprocessable(f"{unknown[0][:40]}: unknown field")
    out: dict[str, str] = {}
    for name, (required, max_len, valid) in spec.items():
        value = data.get(name)
        if value is None:
            if required:
                raise _unprocessable(f"{name}: required")
            continue
        if not isinstance(value, str):
            raise _unprocessable(f"{name}: must be a string")
        try:  # NFC, one line, no control or invisible format characters
            value = field_text(value, name, max_len=max_len, required=required,
                               empty="must not be empty")
        except BadText as exc:
            raise _unprocessable(f"{name}: {exc.reason}") from None
        if value and valid is not None and not valid(value):
            raise _unprocessable(f"{name}: not valid")
        if value:
            out[name] = value
    return out


def _appointment(view: service.AppointmentView) -> dict[str, Any]:
    return {**view.to_dict(), "doctor_name": view.doctor_name}


def _resolve_doctor(tenant: Tenant, wanted: str) -> str:
    """A doctor id from an id or a spoken name ("Dr. Smith", "sarah smith")."""
    if tenant.doctor(wanted):
        return wanted
    words = [w for w in re.sub(r"[^a-z ]", " ", wanted.lower()).split()
             if w not in ("dr", "doctor")]
    if words:
        for d in tenant.doctors:
            name = set(re.sub(r"[^a-z ]", " ", d.name.lower()).split())
            if all(w in name for w in words):
                return d.id
    raise falcon.HTTPNotFound(description="no such doctor at this clinic")


# ---------------------------------------------------------------- resources


class _Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            db = database()
            with db.connection_context():
                db.execute_sql("SELECT 1").fetchone()
        except Exception as exc:
            log.warning("health check failed: %s", type(exc).__name__)
            raise falcon.HTTPServiceUnavailable(description="database unavailable") from None
        resp.media = {"status": "ok", "database": "ok"}


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = m.CONTENT_TYPE
        resp.data = m.render(self.registry)


class _OpenApi:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "application/yaml"
        resp.data = resources.files("esl_app.http").joinpath("openapi.yaml").read_bytes()


class _TenantResource:
    def __init__(self, lookup: TenantLookup) -> None:
        self.lookup = lookup

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        _authorize(req, tenant)
        t = self.lookup(tenant)
        resp.media = {
            "id": t.id, "name": t.name, "timezone": t.timezone, "language": t.language,
            "handoff": t.handoff,
            "doctors": [{"id": d.id, "name": d.name, "specialty": d.specialty}
                        for d in t.doctors],
        }


def _known_params(req: falcon.Request, allowed: set[str]) -> None:
    """A typo in a query parameter is an error, not a silently wider search."""
    unknown = sorted(set(req.params) - allowed)
    if unknown:
        raise _unprocessable(f"unknown query parameter: {unknown[0][:40]}")


class _Callbacks:
    """The clinic's callback tickets (messages left when nobody could take the call)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        from esl_app.scheduling.callbacks import list_tickets

        _authorize(req, tenant)
        _known_params(req, {"status"})
        status = req.get_param("status")
        if status is None:
            status = "open"
        if status not in ("open", "done", "all"):
            raise _unprocessable("status: must be open, done or all")
        tickets = list_tickets(tenant, status=None if status == "all" else status,
                               actor=_actor(req))
        resp.media = [{k: v for k, v in t.to_dict().items() if k != "tenant_id"}
                      for t in tickets]


class _Slots:
    def __init__(self, lookup: TenantLookup) -> None:
        self.lookup = lookup

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        _authorize(req, tenant)
        _known_params(req, {"doctor", "date", "part", "limit"})
        t = self.lookup(tenant)
        day = None
        raw_date = req.get_param("date")
        if raw_date is not None:
            try:
                if not _DATE.match(raw_date):
                    raise ValueError
                day = date.fromisoformat(raw_date)
            except ValueError:
                raise _unprocessable("date: must be YYYY-MM-DD") from None
            if not 2000 <= day.year <= 2200:
                raise _unprocessable("date: out of range")
        part = req.get_param("part")
        if part is not None and part not in _PARTS:
            raise _unprocessable("part: must be morning, afternoon or evening")
        raw_limit = req.get_param("limit")
        limit = 5
        if raw_limit is not None:
            # ASCII digits only: str.isdigit() admits "²" (int() then fails) and "٣"
            if not re.fullmatch(r"[0-9]{1,3}", raw_limit) or not 1 <= int(raw_limit) <= 50:
                raise _unprocessable("limit: must be an integer from 1 to 50")
            limit = int(raw_limit)
        doctor = req.get_param("doctor")
        if doctor is not None:
            if len(doctor) > 100:
                raise _unprocessable("doctor: at most 100 characters")
            doctor = _resolve_doctor(t, doctor)
        views = service.search_slots(tenant, doctor=doctor, date=day, part_of_day=part,
                                     limit=limit)
        resp.media = [{**v.to_dict(), "doctor_name": v.doctor_name} for v in views]


def _actor(req: falcon.Request) -> str:
    """Who is reading or changing, for the audit log: the Lambdas identify themselves."""
    agent = req.user_agent or ""
    return "lambda" if agent.startswith("ivr-lambda/") else "api:token"


class _Appointments:
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        _authorize(req, tenant)
        f = _fields(_json_body(req), _BOOKING_FIELDS)
        notify = f.get("notify", "none")
        if notify in ("sms", "both") and "phone" not in f:
            raise _unprocessable("notify: a text confirmation needs phone")
        if notify in ("email", "both") and "email" not in f:
            raise _unprocessable("notify: an e-mail confirmation needs email")
        view = service.book(tenant, f["slot_id"], patient_name=f["patient_name"],
                            phone=f.get("phone"), email=f.get("email"),
                            call_id=f.get("call_id"), actor=_actor(req), notify=notify)
        m.BOOKINGS.labels(tenant, "booked", "api").inc()
        resp.status = falcon.HTTP_201
        resp.media = _appointment(view)


class _Appointment:
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str,
               code: str) -> None:
        _authorize(req, tenant)
        resp.media = _appointment(service.get_appointment(tenant, code, actor=_actor(req)))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str,
                  code: str) -> None:
        _authorize(req, tenant)
        view = service.cancel(tenant, code, actor=_actor(req))
        m.BOOKINGS.labels(tenant, "cancelled", "api").inc()
        resp.media = _appointment(view)


class _Reschedule:
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str,
                code: str) -> None:
        _authorize(req, tenant)
        f = _fields(_json_body(req), _RESCHEDULE_FIELDS)
        view = service.reschedule(tenant, code, f["slot_id"], actor=_actor(req))
        m.BOOKINGS.labels(tenant, "rescheduled", "api").inc()
        resp.media = _appointment(view)


class _RequestMetrics:
    """Counts requests by route template (bounded labels: never the raw path)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        route = req.uri_template if resource is not None else "unmatched"
        status = str(resp.status)[:3] if resp.status else "500"
        m.HTTP_REQUESTS.labels(route, req.method, status).inc()
        started = getattr(req.context, "started", None)
        if started is not None:
            m.HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)


# ---------------------------------------------------------------- factory & server


def create_app(tenants_provider: TenantLookup | None = None,
               metrics: CollectorRegistry | None = None) -> falcon.App:
    """The WSGI app.

    ``tenants_provider`` maps a tenant id to its :class:`Tenant` (default: the
    database's copy, :func:`esl_app.scheduling.service.get_tenant`, so tenants
    added with the CLI are served without a restart); ``metrics`` is the
    registry ``/metrics`` exposes (default: :data:`esl_app.http.metrics.REGISTRY`,
    or every worker's under ``PROMETHEUS_MULTIPROC_DIR``).
    """
    lookup = tenants_provider or service.get_tenant
    app = falcon.App(middleware=[_RequestMetrics()])
    app.req_options.auto_parse_qs_csv = False
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.secure_cookies_by_default = True
    app.set_error_serializer(_error_serializer)
    app.add_error_handler(Exception, _unexpected_error)
    app.add_error_handler(SchedulingError, _scheduling_error)
    app.add_route("/healthz", _Health())
    app.add_route("/metrics", _Metrics(metrics))
    app.add_route("/openapi.yaml", _OpenApi())
    app.add_route("/v1/tenants/{tenant}", _TenantResource(lookup))
    app.add_route("/v1/tenants/{tenant}/slots", _Slots(lookup))
    app.add_route("/v1/tenants/{tenant}/callbacks", _Callbacks())
    app.add_route("/v1/tenants/{tenant}/appointments", _Appointments())
    app.add_route("/v1/tenants/{tenant}/appointments/{code}", _Appointment())
    app.add_route("/v1/tenants/{tenant}/appointments/{code}/reschedule", _Reschedule())
    return app


# ---------------------------------------------------------------- connection limits
#
# Issue #31: pywsgi alone waits forever for a request head and, once its pool is
# full, stops accepting, so a few hundred idle sockets made /healthz time out. Here a
# head must arrive whole within ``header_timeout``, a kept-alive connection may idle
# ``idle_timeout``, one address holds at most ``max_per_address`` of the
# ``max_connections`` slots, and the accept loop never stops: a connection beyond
# the limits gets one of ``reserve`` short-lived slots, where /healthz is still
# answered and anything else gets 503. With the reserve full, a new connection
# displaces the oldest reserve connection whose request head has not arrived (it gets
# 503): attackers that redial the moment they are dropped would otherwise keep the
# reserve full for good, while a probe sends its head at once and is served before
# it is the oldest. Only with every reserve connection's head in: an immediate 503.

MAX_HEAD = 16 * 1024  # request line + headers; more is 431
_OVERFLOW_HEAD_S = 1.0  # a connection beyond the limits must send its head this fast
_SEND_S = 2.0  # bound on writing a server-level error response
_LINGER_S = 1.0  # after an error response, read what the client still sends (no RST)
_LINGER_BYTES = 256 * 1024
_BUSY_LOG_S = 60.0  # at most one "at the connection limit" warning per minute
_GENERAL, _OVERFLOW = 0, 1


@dataclass(frozen=True)
class HttpLimits:
    """The API server's connection limits (see the block comment above)."""

    max_connections: int = 1000
    max_per_address: int = 256
    reserve: int = 32
    header_timeout: float = 10.0
    idle_timeout: float = 15.0


# field → (environment variable, lowest, highest)
_LIMIT_ENV: dict[str, tuple[str, float, float]] = {
    "max_connections": ("IVR_HTTP_MAX_CONNECTIONS", 1, 100_000),
    "max_per_address": ("IVR_HTTP_MAX_PER_ADDRESS", 1, 100_000),
    "reserve": ("IVR_HTTP_RESERVE", 0, 10_000),
    "header_timeout": ("IVR_HTTP_HEADER_TIMEOUT", 0.1, 3600),
    "idle_timeout": ("IVR_HTTP_IDLE_TIMEOUT", 0.1, 3600),
}


def http_limits(**given: float | None) -> HttpLimits:
    """Each limit from its argument, else its ``IVR_HTTP_*`` variable, else the default.

    Out of range or not a number is a ValueError naming the setting, at start-up
    rather than as a server that cannot take a connection.
    """
    values: dict[str, float] = {}
    defaults = HttpLimits()
    for name, (env, low, high) in _LIMIT_ENV.items():
        value = given.pop(name, None)
        source = name
        if value is None and os.environ.get(env, "").strip():
            source, raw = env, os.environ[env].strip()
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{env} must be a number, not {raw!r}") from None
        if value is None:
            value = getattr(defaults, name)
        integral = isinstance(getattr(defaults, name), int)
        if not low <= value <= high or integral and value != int(value):  # NaN: range
            kind = "a whole number" if integral else "a number of seconds"
            raise ValueError(f"{source} must be {kind} from {low:g} to {high:g}, not {value!r}")
        values[name] = int(value) if integral else float(value)
    if given:
        raise TypeError(f"unknown limit: {sorted(given)[0]}")
    return HttpLimits(**values)  # type: ignore[arg-type]


def _error_response(status: int, message: str) -> bytes:
    """A complete server-level error response in the API's JSON error shape."""
    body = json.dumps({"error": message}).encode()
    extra = "Retry-After: 1\r\n" if status == 503 else ""
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}\r\n").encode() + body


_MESSAGES = {
    400: "the request is not valid HTTP",
    408: "the request head did not arrive in time",
    414: f"the request line is longer than {MAX_REQUEST_LINE} bytes",
    431: f"the request head is larger than {MAX_HEAD} bytes",
    500: "internal error",
    503: "the server is busy; retry later",
}
_BUSY = _error_response(503, _MESSAGES[503])


class SlowBody(_InvalidClientInput):
    """The request body did not arrive within ``header_timeout`` of the head's end."""


class _BodyReader:
    """The socket's reader as the request body's ``Input`` sees it: one deadline.

    Without it a client could send a head at once and then its body one byte a
    minute, holding its slot for good (pywsgi also reads an unread body to its end
    before the next request, with no bound on time).
    """

    def __init__(self, fp: Any, seconds: float) -> None:
        self.fp = fp
        self.end = time.monotonic() + seconds

    def _within(self, fn: Callable[..., bytes], *args: Any) -> bytes:
        left = self.end - time.monotonic()
        if left > 0:
            with gevent.Timeout(left, False):
                return fn(*args)
        raise SlowBody("the request body did not arrive in time")

    def read(self, *args: Any) -> bytes:
        return self._within(self.fp.read, *args)

    def readline(self, *args: Any) -> bytes:
        return self._within(self.fp.readline, *args)

    def peek(self, *args: Any) -> bytes:
        return self._within(self.fp.peek, *args)


class _Reject(Exception):
    """Answer with ``status`` (a server-level error) and close."""

    def __init__(self, status: int) -> None:
        super().__init__(_MESSAGES[status])
        self.status = status


class _HeadReader:
    """The socket's reader as ``http.client.parse_headers`` sees it, capped at MAX_HEAD.

    http.client only caps each line (64 KiB) and the count (100): 6 MB of headers
    would be read, and a line too long was answered with an empty 400.
    """

    def __init__(self, fp: Any, left: int) -> None:
        self.fp = fp
        self.left = left

    def readline(self, limit: int = -1) -> bytes:
        want = self.left + 1 if limit < 0 else min(limit, self.left + 1)
        line = self.fp.readline(max(want, 1))
        self.left -= len(line)
        if self.left < 0:
            raise _Reject(431)
        return line


class _Slot:
    """One admitted connection's place in the server's counts."""

    __slots__ = ("host", "kind", "sock", "evicted", "released")

    def __init__(self, host: str, kind: int, sock: Any) -> None:
        self.host = host
        self.kind = kind
        self.sock = sock
        self.evicted = False  # displaced from the reserve: end quietly, the 503 is sent
        self.released = False


def _head_waiting(sock: Any) -> bool:
    """Whether a whole request head sits unread in the socket (its greenlet will serve it)."""
    raw = getattr(sock, "_sock", sock)  # gevent's socket would wait on EAGAIN
    try:
        data = raw.recv(MAX_HEAD, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # nothing yet (EAGAIN), or a broken socket
        return False
    return b"\r\n\r\n" in data


class _ApiHandler(WSGIHandler):
    """pywsgi's handler with a deadline per request head and JSON server-level errors."""

    overflow = False  # admitted beyond the limits: /healthz only, then close
    slot: _Slot | None = None
    _requests = 0
    _deadline: gevent.Timeout | None = None

    @property
    def _limits(self) -> HttpLimits:
        return self.server.limits  # type: ignore[no-any-return]

    def handle_one_request(self) -> Any:
        """One request; server-level errors are answered here, then the connection ends."""
        try:
            result = super().handle_one_request()
        except gevent.Timeout as exc:
            if exc is not self._deadline:
                raise
            result = ("408", b"")
        except _Reject as exc:  # from read_requestline, which pywsgi does not guard
            result = (str(exc.status), b"")
        finally:
            if self._deadline is not None:
                self._deadline.close()
                self._deadline = None
        if self.slot is not None and self.slot.evicted:  # answered 503 by the evicter
            self.close_connection = True
            return None
        if isinstance(result, tuple):  # pywsgi's own rejections (414, 400) land here too
            status = int(result[0])
            self._answer_and_close(_error_response(status, _MESSAGES.get(status, "error")),
                                   linger=status != 408)
            return None
        return result

    def read_requestline(self) -> str:
        """Wait ``idle_timeout`` for a kept-alive request; then start the head's deadline."""
        self._requests += 1
        if self._requests > 1:
            waiting = True
            with gevent.Timeout(self._limits.idle_timeout, False):
                waiting = not self.rfile.peek(1)
            if waiting:  # idle too long, or closed by the client: end quietly
                return ""
        seconds = self._limits.header_timeout
        if self.overflow:
            seconds = min(seconds, _OVERFLOW_HEAD_S)
        self._deadline = gevent.Timeout(seconds)
        self._deadline.start()
        return super().read_requestline()  # type: ignore[no-any-return]

    def MessageClass(self, fp: Any, *args: Any) -> Any:  # noqa: N802 - pywsgi's name
        """The headers, read through the head-size cap."""
        return super().MessageClass(_HeadReader(fp, MAX_HEAD - len(self.requestline or "")),
                                    *args)

    def read_request(self, raw_requestline: str) -> bool:
        """Parse the head under its deadline; an overflow connection may only ask /healthz."""
        try:
            ok = super().read_request(raw_requestline)
        finally:  # the head is in: the application's time is its own
            if self._deadline is not None:
                self._deadline.close()
            if self.slot is not None:
                self.server.head_in(self.slot)  # type: ignore[attr-defined]
        if self.slot is not None and self.slot.evicted:  # EOF from the evicter's shutdown
            raise _Reject(503)
        if self.overflow:
            path = (self.path or "").split("?", 1)[0].rstrip("/")
            if self.command not in ("GET", "HEAD") or path != "/healthz":
                raise _Reject(503)
            self.close_connection = True
        return ok  # type: ignore[no-any-return]

    def get_environ(self) -> dict[str, Any]:
        """The environ of pywsgi, with the body read under its own deadline (_BodyReader)."""
        env = super().get_environ()
        body = getattr(self, "wsgi_input", None)
        if body is not None and env.get("wsgi.input") is body:
            body.rfile = _BodyReader(body.rfile, self._limits.header_timeout)
        return env

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Any:
        if self.overflow:  # say so: the client must not reuse this connection
            headers = [*headers, ("Connection", "close")]
        return super().start_response(status, headers, exc_info)

    def _handle_client_error(self, ex: BaseException) -> tuple[str, bytes]:
        """A malformed or over-limit head: its status (no traceback, no ERROR log)."""
        if isinstance(ex, _Reject):
            return (str(ex.status), b"")
        if isinstance(ex, SlowBody):
            return ("408", b"")
        if isinstance(ex, HTTPException):  # http.client: more than 100 header lines
            return ("431", b"")
        log.debug("malformed HTTP request refused: %s", type(ex).__name__)
        return ("400", b"")

    def _send_error_response_if_possible(self, error_code: int) -> None:
        """The mid-request 400/500 of pywsgi, in the API's JSON shape."""
        if self.response_length:
            self.close_connection = True
            return
        body = json.dumps({"error": _MESSAGES.get(error_code, "error")}).encode()
        try:
            self.start_response(f"{error_code} {HTTPStatus(error_code).phrase}", [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("Connection", "close")])
            self.write(body)
        except OSError:
            self.close_connection = True

    def _answer_and_close(self, data: bytes, *, linger: bool) -> None:
        """Send ``data``; then read off what the client still sends before closing.

        Closing a socket with unread input sends RST, and the client may then never
        see the response (a 100 KB header got "connection reset", not an answer).
        """
        sock = self.socket
        with gevent.Timeout(_SEND_S, False):
            try:
                sock.sendall(data)
                if linger:
                    sock.shutdown(socket.SHUT_WR)
                    end = time.monotonic() + _LINGER_S
                    left = _LINGER_BYTES
                    sock.settimeout(_LINGER_S)
                    while left > 0 and time.monotonic() < end:
                        chunk = sock.recv(min(left, 65536))
                        if not chunk:
                            break
                        left -= len(chunk)
            except OSError:
                pass


class _ApiServer(WSGIServer):
    """WSGIServer that admits connections by its own counts and never stops accepting.

    gevent stops accepting while its pool is full, so queued health probes time
    out; here the pool is unbounded (it is only for ``stop``) and ``do_handle``
    decides: a general slot, a reserve slot (displacing the oldest reserve
    connection still without its head, if need be), or an immediate 503.
    """

    def __init__(self, listener: Any, application: Any, limits: HttpLimits) -> None:
        self.limits = limits
        self._general = 0
        self._overflow = 0
        self._per_address: dict[str, int] = {}
        # reserve connections whose request head has not arrived, oldest first
        self._headless: dict[_Slot, None] = {}
        self._refused = 0
        self.evicted = 0
        self._busy_logged = 0.0
        super().__init__(listener, application, spawn=Pool(), handler_class=_ApiHandler,
                         log=None, error_log=logging.getLogger("esl_app.http.server"))

    @staticmethod
    def _host(address: Any) -> str:
        return str(address[0]) if isinstance(address, tuple) else str(address)

    def do_handle(self, sock: Any, address: Any) -> None:  # type: ignore[override]
        lim = self.limits
        host = self._host(address)
        held = self._per_address.get(host, 0)
        if self._general < lim.max_connections and held < lim.max_per_address:
            slot = _Slot(host, _GENERAL, sock)
            self._general += 1
            self._per_address[host] = held + 1
        elif self._overflow < lim.reserve or self._evict():
            slot = _Slot(host, _OVERFLOW, sock)
            self._overflow += 1
            self._headless[slot] = None
        else:
            self._refuse(sock)
            return
        if slot.kind == _OVERFLOW or held + 1 >= lim.max_per_address:
            self._note_busy()
        try:
            super().do_handle(sock, address, slot)
        except BaseException:
            self._release(slot)
            raise

    def _evict(self) -> bool:
        """Free the reserve slot of the oldest connection still without its request head.

        Its client gets 503 at once and its socket is shut down, so its greenlet (or,
        not started yet, its first read) sees the end and leaves quietly. A connection
        whose whole head is already waiting in the socket is passed over: it is about
        to be served.
        """
        victim = next((slot for slot in self._headless if not _head_waiting(slot.sock)),
                      None)
        if victim is None:
            return False
        victim.evicted = True
        self._release(victim)
        self.evicted += 1
        raw = getattr(victim.sock, "_sock", victim.sock)
        try:
            raw.send(_BUSY, socket.MSG_DONTWAIT)  # a fresh socket's buffer takes it
        except OSError:
            pass
        try:
            victim.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def head_in(self, slot: _Slot) -> None:
        """The connection's request head has arrived (or failed): it is not displaced."""
        self._headless.pop(slot, None)

    def handle(self, sock: Any, address: Any, slot: _Slot | None = None) -> None:  # type: ignore[override]
        """Serve one connection in its slot (runs in the connection's greenlet)."""
        if slot is None:
            slot = _Slot(self._host(address), _GENERAL, sock)  # counted by the caller
        try:
            if slot.evicted:  # displaced before it ever ran
                return
            handler = _ApiHandler(sock, address, self)
            handler.overflow = slot.kind == _OVERFLOW
            handler.slot = slot
            handler.handle()
        finally:
            self._release(slot)

    def _release(self, slot: _Slot) -> None:
        if slot.released:
            return
        slot.released = True
        if slot.kind == _OVERFLOW:
            self._overflow -= 1
            self._headless.pop(slot, None)
            return
        self._general -= 1
        left = self._per_address.get(slot.host, 1) - 1
        if left > 0:
            self._per_address[slot.host] = left
        else:
            self._per_address.pop(slot.host, None)

    def _refuse(self, sock: Any) -> None:
        """503 without a greenlet or a wait: a fresh socket's send buffer takes it."""
        self._refused += 1
        self._note_busy()
        refuse(sock, _BUSY)

    def _note_busy(self) -> None:
        """One WARNING a minute at most while connections meet the limits."""
        now = time.monotonic()
        if now - self._busy_logged < _BUSY_LOG_S:
            return
        self._busy_logged = now
        log.warning("HTTP API at its connection limits: %d general, %d reserve in use, "
                    "%d address(es) at the per-address cap, %d refused and %d displaced "
                    "from the reserve so far",
                    self._general, self._overflow,
                    sum(1 for n in self._per_address.values()
                        if n >= self.limits.max_per_address),
                    self._refused, self.evicted)


def serve_http(host: str = "127.0.0.1", port: int = 8086, *, app: Any = None,
               max_connections: int | None = None, listener: Any = None,
               max_per_address: int | None = None, reserve: int | None = None,
               header_timeout: float | None = None, idle_timeout: float | None = None,
               **app_kwargs: Any) -> WSGIServer:
    """Start the API on gevent's pywsgi and return the (started) server.

    ``port=0`` binds an ephemeral port (read ``server.server_port``);
    ``listener`` may be an already bound socket (pre-fork workers sharing a
    port). Call ``serve_forever()`` to block, ``stop(timeout)`` to drain.
    The connection limits come from the arguments, else ``IVR_HTTP_*`` (see
    :func:`http_limits`); ``server.limits`` holds them.
    """
    limits = http_limits(max_connections=max_connections, max_per_address=max_per_address,
                         reserve=reserve, header_timeout=header_timeout,
                         idle_timeout=idle_timeout)
    if app is None:  # the clinic dashboard (esl_app/web) shares the port, under /ui/
        from esl_app.web import mount

        app = mount(create_app(**app_kwargs), registry=app_kwargs.get("metrics"))
    wsgi = app
    server = _ApiServer(listener or (host, port), wsgi, limits)
    server.start()
    return server
