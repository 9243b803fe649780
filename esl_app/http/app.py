"""The appointments API (DESIGN.md 3.4) as a falcon WSGI app on gevent's pywsgi.

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
import re
import time
from collections.abc import Callable
from datetime import date
from importlib import resources
from typing import Any

import falcon
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry

from esl_app.config.tenants import Tenant
from esl_app.db import database
from esl_app.http import metrics as m
from esl_app.scheduling import service, tokens
from esl_app.scheduling.errors import (
    InvalidRequest,
    NotAllowed,
    NotFound,
    SchedulingError,
    SlotTaken,
)

__all__ = ["MAX_BODY", "create_app", "serve_http"]

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{2,31}$")
_PARTS = ("morning", "afternoon", "evening")

TenantLookup = Callable[[str], Tenant]

# field → (required, max length, pattern or None); every field is a string
_BOOKING_FIELDS: dict[str, tuple[bool, int, re.Pattern[str] | None]] = {
    "slot_id": (True, 64, None),
    "patient_name": (True, 100, None),
    "email": (False, 254, _EMAIL),
    "phone": (False, 32, _PHONE),
    "call_id": (False, 64, None),
}
_RESCHEDULE_FIELDS: dict[str, tuple[bool, int, re.Pattern[str] | None]] = {
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
    raw = req.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise falcon.HTTPContentTooLarge(description=f"the body exceeds {MAX_BODY} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise falcon.HTTPBadRequest(description="the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise falcon.HTTPBadRequest(description="the body must be a JSON object")
    return data


def _fields(data: dict[str, Any], spec: dict[str, tuple[bool, int, re.Pattern[str] | None]]
            ) -> dict[str, str]:
    """Type, length and format checks; messages start with the field name."""
    unknown = sorted(set(data) - set(spec))
    if unknown:
        raise _unprocessable(f"{unknown[0][:40]}: unknown field")
    out: dict[str, str] = {}
    for name, (required, max_len, pattern) in spec.items():
        value = data.get(name)
        if value is None:
            if required:
                raise _unprocessable(f"{name}: required")
            continue
        if not isinstance(value, str):
            raise _unprocessable(f"{name}: must be a string")
        value = value.strip()
        if required and not value:
            raise _unprocessable(f"{name}: must not be empty")
        if len(value) > max_len:
            raise _unprocessable(f"{name}: at most {max_len} characters")
        if value and pattern is not None and not pattern.match(value):
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
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 50:
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
        view = service.book(tenant, f["slot_id"], patient_name=f["patient_name"],
                            phone=f.get("phone"), email=f.get("email"),
                            call_id=f.get("call_id"), actor=_actor(req))
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


def serve_http(host: str = "127.0.0.1", port: int = 8086, *, app: Any = None,
               max_connections: int = 1000, listener: Any = None,
               **app_kwargs: Any) -> WSGIServer:
    """Start the API on gevent's pywsgi and return the (started) server.

    ``port=0`` binds an ephemeral port (read ``server.server_port``);
    ``listener`` may be an already bound socket (pre-fork workers sharing a
    port). Call ``serve_forever()`` to block, ``stop(timeout)`` to drain.
    """
    wsgi = app or create_app(**app_kwargs)
    server = WSGIServer(listener or (host, port), wsgi, spawn=Pool(max_connections),
                        log=None, error_log=logging.getLogger("esl_app.http.server"))
    server.start()
    return server
