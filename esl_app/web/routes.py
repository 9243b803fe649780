"""The dashboard's falcon app: every page under ``/ui/``, and the rules every request meets.

One middleware (:class:`_Guard`) decides before any page runs: who is signed in (session
cookie), whether they may see the page (operators only for the live page and the clinic
list), which tenant the URL names and whether it is theirs — a user of another clinic gets
the same 404 as for a clinic that does not exist, so no URL, id or parameter reaches or
even reveals another tenant's data — and, for every POST, that the form carries the
session's CSRF token and comes from this origin. Pages then only read the tenant from
``req.context``. Every change goes through the scheduling service (or callbacks), with the
signed-in user as the audit log's actor.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import falcon
import peewee

from esl_app.config.tenants import Tenant
from esl_app.db import DatabaseError, database, one_line, write_txn
from esl_app.http import metrics as m
from esl_app.scheduling import audit, service
from esl_app.scheduling.errors import (
    InvalidRequest,
    NotAllowed,
    NotFound,
    SchedulingError,
    SlotTaken,
)
from esl_app.scheduling.text import BadText, field_text
from esl_app.web import auth, data, live
from esl_app.web.render import render, static_file

__all__ = ["PREFIX", "WebConfig", "create_web_app", "web_config", "web_routes"]

log = logging.getLogger(__name__)

PREFIX = "/ui"
SESSION_COOKIE = "ivr_session"
LOGIN_CSRF_COOKIE = "ivr_login_csrf"
FLASH_COOKIE = "ivr_flash"
MAX_FORM = 8 * 1024
LIVE_TICK = 2.0  # seconds between two looks at the live data of one stream
STREAM_SECONDS = 300.0  # a stream then ends; EventSource reconnects by itself
MAX_STREAMS = 50  # per process: each holds a connection
SESSION_RECHECK = 30.0  # a stream ends within this long of its session

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{3,63}$")
_CODE = re.compile(r"^[A-Za-z0-9-]{3,16}$")
_DIGITS = re.compile(r"^[0-9]{1,18}$")
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# what a redirect after a change may say; the cookie carries a key and a code, never text
_FLASH = {
    "booked": "Booked {code}.",
    "cancelled": "Appointment {code} cancelled.",
    "moved": "Appointment {code} moved.",
    "arrived": "{code}: marked arrived.",
    "no_show": "{code}: marked no-show.",
    "clear": "{code}: attendance cleared.",
    "done": "Callback {code} marked done.",
    "drain_on": "Drain on: new calls go to the clinics' own lines.",
    "drain_off": "Drain off: the bot takes new calls again.",
}
_STATUS = {NotFound: falcon.HTTP_404, SlotTaken: falcon.HTTP_409, NotAllowed: falcon.HTTP_409,
           InvalidRequest: falcon.HTTP_422}
_streams = 0


@dataclass(frozen=True)
class WebConfig:
    """Settings of the dashboard, read once when the app is built."""

    trust_proxy: bool = False  # honour X-Forwarded-Proto / X-Forwarded-For (a TLS proxy)
    registry: Any = None  # Prometheus registry for the live page (None: the process's)


def web_config(registry: Any = None) -> WebConfig:
    """From ``IVR_WEB_TRUST_PROXY`` (0 or 1); a bad value stops the start with one line."""
    raw = os.environ.get("IVR_WEB_TRUST_PROXY", "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"IVR_WEB_TRUST_PROXY must be 0 or 1, not {raw[:20]!r}")
    return WebConfig(trust_proxy=raw == "1", registry=registry)


# ---------------------------------------------------------------- helpers


def _home(user: auth.User) -> str:
    return f"{PREFIX}/tenants" if user.is_operator else f"{PREFIX}/t/{user.tenant_id}/today"


def _local_path(value: str | None) -> str | None:
    """``value`` if it is a path of this dashboard (no open redirect), else None."""
    if not value or len(value) > 512 or "\\" in value or any(ord(c) < 33 for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith(PREFIX + "/") or "//" in value:
        return None
    return value


def _is_secure(req: falcon.Request, trust_proxy: bool) -> bool:
    if req.scheme == "https":
        return True
    if trust_proxy:
        proto = (req.get_header("X-Forwarded-Proto") or "").split(",")[0].strip().lower()
        return proto == "https"
    return False


def client_address(req: falcon.Request, trust_proxy: bool) -> str:
    """The client's address: the proxy's last X-Forwarded-For hop only when trusted."""
    if trust_proxy:
        forwarded = [h.strip() for h in (req.get_header("X-Forwarded-For") or "").split(",")
                     if h.strip()]
        if forwarded:
            return forwarded[-1][:64]
    return str(req.remote_addr or "-")[:64]


def _read_form(req: falcon.Request) -> dict[str, str]:
    """A urlencoded form body, bounded; the first value of each field."""
    ctype = (req.content_type or "").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise falcon.HTTPUnsupportedMediaType(description="Forms are sent url-encoded.")
    if req.content_length is not None and req.content_length > MAX_FORM:
        raise falcon.HTTPContentTooLarge(description="The form is too large.")
    raw = req.bounded_stream.read(MAX_FORM + 1)
    if len(raw) > MAX_FORM:
        raise falcon.HTTPContentTooLarge(description="The form is too large.")
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=40)
    except (UnicodeDecodeError, ValueError):
        raise falcon.HTTPBadRequest(description="The form could not be read.") from None
    return {k: v[0] for k, v in parsed.items() if v}


def _check_origin(req: falcon.Request, trust_proxy: bool) -> None:
    """A browser's Origin must be this site (SameSite=Strict and CSRF tokens come first)."""
    origin = req.get_header("Origin")
    if not origin or origin == "null":
        if origin == "null":
            raise falcon.HTTPForbidden(description="The form was sent from another site.")
        return
    host = urlsplit(origin).netloc.lower()
    allowed = {(req.get_header("Host") or "").lower()}
    if trust_proxy and req.get_header("X-Forwarded-Host"):
        allowed.add(req.get_header("X-Forwarded-Host", default="").split(",")[0].strip().lower())
    if host not in allowed:
        raise falcon.HTTPForbidden(description="The form was sent from another site.")


def _field(form: dict[str, str], name: str, *, max_len: int, required: bool = False,
           label: str | None = None) -> str:
    """A cleaned text field (the API's checks, ``field_text``) or InvalidRequest naming it."""
    label = label or name.replace("_", " ")
    try:
        return field_text(form.get(name, ""), label, max_len=max_len, required=required)
    except BadText as exc:
        raise InvalidRequest(f"{label}: {exc.reason}") from None


def _set_flash(resp: falcon.Response, secure: bool, key: str, code: str = "") -> None:
    resp.set_cookie(FLASH_COOKIE, f"{key}.{code}", max_age=60, path=PREFIX, secure=secure,
                    http_only=True, same_site="Strict")


def _take_flash(req: falcon.Request, resp: falcon.Response) -> str | None:
    raw = req.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    resp.unset_cookie(FLASH_COOKIE, path=PREFIX, same_site="Strict")
    key, _, code = raw.partition(".")
    if key not in _FLASH or not re.fullmatch(r"[A-Za-z0-9-]{0,20}", code):
        return None
    return _FLASH[key].format(code=code)


def _page(req: falcon.Request, resp: falcon.Response, template: str, *,
          status: str = falcon.HTTP_200, section: str = "", **context: Any) -> None:
    """Render a page with what every page shows (user, clinic, switcher, flash, CSRF)."""
    session: auth.Session | None = req.context.session
    user = session.user if session else None
    tenants: list[tuple[str, str]] = []
    if user is not None and user.is_operator:
        with database().connection_context():
            from esl_app.db.models import TenantRow

            tenants = list(TenantRow.select(TenantRow.id, TenantRow.name)
                           .order_by(TenantRow.id).tuples())
    ctx = {"user": user, "csrf": session.csrf if session else "",
           "tenant": getattr(req.context, "tenant", None), "tenants": tenants,
           "section": section, "flash": _take_flash(req, resp), "path": req.path}
    ctx.update(context)
    resp.status = status
    resp.content_type = "text/html; charset=utf-8"
    resp.text = render(template, **ctx)


def _redirect(location: str) -> falcon.HTTPSeeOther:
    return falcon.HTTPSeeOther(location)


def _back(form: dict[str, str], default: str) -> str:
    return _local_path(form.get("back")) or default


# ---------------------------------------------------------------- errors


def _error_page(status: str, title: str, message: str, back: str | None = None) -> str:
    return render("error.html", status=status, title=title, message=message,
                  back=back or f"{PREFIX}/", user=None, tenant=None, tenants=[], csrf="",
                  section="", flash=None, path="")


def _html_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Every HTTP error as a small page of its own (never JSON, never a traceback)."""
    title = re.sub(r"^\d{3}\s*", "", exc.title or "Error")
    resp.content_type = "text/html; charset=utf-8"
    resp.text = _error_page(str(exc.status), title, exc.description or title)


def _scheduling_error(req: falcon.Request, resp: falcon.Response, exc: Exception,
                      params: dict[str, Any]) -> None:
    status = next((_STATUS[c] for c in type(exc).__mro__ if c in _STATUS), falcon.HTTP_503)
    if status == falcon.HTTP_503:
        log.error("scheduling error on %s: %s", req.uri_template or "?", type(exc).__name__)
    form = getattr(req.context, "form", None) or {}
    resp.status = status
    resp.content_type = "text/html; charset=utf-8"
    title = "Not found" if status == falcon.HTTP_404 else "Not done"
    resp.text = _error_page(status, title, str(exc) or type(exc).__name__,
                            _local_path(form.get("back")))


def _unexpected_error(req: falcon.Request, resp: falcon.Response, exc: Exception,
                      params: dict[str, Any]) -> None:
    resp.content_type = "text/html; charset=utf-8"
    if isinstance(exc, peewee.OperationalError | peewee.InterfaceError | DatabaseError):
        log.error("database unavailable on %s %s: %s", req.method, req.uri_template or "?",
                  one_line(exc))
        resp.status = falcon.HTTP_503
        resp.text = _error_page(resp.status, "Unavailable",
                                "The database is unavailable; try again in a moment.")
        return
    log.exception("unhandled error on %s %s", req.method, req.uri_template or "?")
    resp.status = falcon.HTTP_500
    resp.text = _error_page(resp.status, "Internal error", "Something went wrong on our side.")


# ---------------------------------------------------------------- the guard


class _Guard:
    """Session, access, tenant scope, CSRF and origin, headers and metrics, in one place."""

    def __init__(self, cfg: WebConfig) -> None:
        self.cfg = cfg

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        req.context.secure = _is_secure(req, self.cfg.trust_proxy)
        req.context.session = None
        req.context.token = None
        req.context.cfg = self.cfg
        if req.path.startswith(PREFIX + "/static/"):
            return
        token = req.cookies.get(SESSION_COOKIE)
        if token:
            req.context.token = token
            req.context.session = auth.session_for(token)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict[str, Any]) -> None:
        if resource is None:
            return
        access = getattr(resource, "access", "user")
        session: auth.Session | None = req.context.session
        if access != "public":
            if session is None:
                if req.method in ("GET", "HEAD"):
                    raise _redirect(f"{PREFIX}/login?next={quote(req.relative_uri, safe='/')}")
                raise falcon.HTTPForbidden(description="You are not signed in (or your "
                                           "session ended); sign in and try again.")
            if access == "operator" and not session.user.is_operator:
                raise falcon.HTTPForbidden(description="This page is for operators.")
        if "tenant" in params:
            assert session is not None
            req.context.tenant = _scope(session.user, params["tenant"])
        if req.method == "POST":
            _check_origin(req, self.cfg.trust_proxy)
            req.context.form = _read_form(req)
            if access != "public":
                assert session is not None
                if not auth.csrf_matches(session.csrf, req.context.form.get("csrf")):
                    raise falcon.HTTPForbidden(description="The form has expired; reload "
                                               "the page and try again.")

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("X-Frame-Options", "DENY")
        resp.set_header("Referrer-Policy", "same-origin")
        resp.set_header("Content-Security-Policy", _CSP)
        if not req.path.startswith(PREFIX + "/static/"):
            resp.set_header("Cache-Control", "no-store")
        route = req.uri_template if resource is not None else "unmatched"
        status = str(resp.status)[:3] if resp.status else "500"
        m.HTTP_REQUESTS.labels(route, req.method, status).inc()
        started = getattr(req.context, "started", None)
        if started is not None:
            m.HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)


def _scope(user: auth.User, tenant_id: str) -> Tenant:
    """The tenant a URL names, if this user may see it; else the 404 of a missing one."""
    missing = falcon.HTTPNotFound(description="There is no such clinic or page.")
    if not _SLUG.match(tenant_id or ""):
        raise missing
    if not user.is_operator and tenant_id != user.tenant_id:
        raise missing
    try:
        return service.get_tenant(tenant_id)
    except NotFound:
        raise missing from None


# ---------------------------------------------------------------- sign-in


class _Root:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise _redirect(_home(req.context.session.user))


class _TenantRoot:
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        raise _redirect(f"{PREFIX}/t/{req.context.tenant.id}/today")


class _Login:
    access = "public"

    def _show(self, req: falcon.Request, resp: falcon.Response, *, status: str = falcon.HTTP_200,
              error: str | None = None, username: str = "") -> None:
        token = req.cookies.get(LOGIN_CSRF_COOKIE)
        if not token or not re.fullmatch(r"[A-Za-z0-9_-]{20,64}", token):
            token = auth.new_token()
            resp.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path=PREFIX,
                            secure=req.context.secure, http_only=True, same_site="Strict")
        nxt = _local_path(req.get_param("next") or (getattr(req.context, "form", None) or {})
                          .get("next")) or ""
        req.context.session = None  # the form is the same for everyone
        _page(req, resp, "login.html", status=status, login_csrf=token, error=error,
              username=username, next=nxt)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.context.session is not None:
            raise _redirect(_home(req.context.session.user))
        self._show(req, resp)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = req.context.form
        if not auth.csrf_matches(req.cookies.get(LOGIN_CSRF_COOKIE), form.get("csrf")):
            self._show(req, resp, status=falcon.HTTP_403,
                       error="The sign-in form expired; please try again.")
            return
        username = form.get("username", "")[:64]
        password = form.get("password", "")
        address = client_address(req, req.context.cfg.trust_proxy)
        try:
            result = auth.sign_in(username, password, address)
        except auth.LockedOut as exc:
            resp.set_header("Retry-After", str(exc.retry_after))
            self._show(req, resp, status=falcon.HTTP_429, username=username,
                       error=f"Too many failed sign-ins. Try again in "
                             f"{exc.retry_after // 60 + 1} minutes.")
            return
        if result is None:
            self._show(req, resp, status=falcon.HTTP_401, username=username,
                       error="Wrong username or password.")
            return
        token, session = result
        if req.context.session is not None:  # whoever was signed in here before: ended
            auth.sign_out(req.context.session.token_hash)
        with write_txn():
            audit.record(session.user.tenant_id, session.user.actor, "sign_in", "user",
                         session.user.username)
        resp.set_cookie(SESSION_COOKIE, token, path=PREFIX, secure=req.context.secure,
                        http_only=True, same_site="Strict")
        resp.unset_cookie(LOGIN_CSRF_COOKIE, path=PREFIX, same_site="Strict")
        raise _redirect(_local_path(form.get("next")) or _home(session.user))


class _Logout:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        session: auth.Session = req.context.session
        auth.sign_out(session.token_hash)
        with write_txn():
            audit.record(session.user.tenant_id, session.user.actor, "sign_out", "user",
                         session.user.username)
        resp.unset_cookie(SESSION_COOKIE, path=PREFIX, same_site="Strict")
        raise _redirect(f"{PREFIX}/login")


# ---------------------------------------------------------------- operators


class _Tenants:
    access = "operator"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _page(req, resp, "tenants.html", section="tenants", rows=data.tenant_summaries())


class _Switch:
    access = "operator"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        tenant = _scope(req.context.session.user, req.get_param("tenant") or "")
        raise _redirect(f"{PREFIX}/t/{tenant.id}/today")


# ---------------------------------------------------------------- schedule


def _day_param(req: falcon.Request, name: str, default: date) -> date:
    return data.parse_day(req.get_param(name)) or default


class _Today:
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        t: Tenant = req.context.tenant
        user = req.context.session.user
        today = data.local_today(t)
        day = _day_param(req, "date", today)
        doctors = data.active_doctors(t.id)
        grid = data.slot_grid(t, doctors, day, 1)
        counts = {"booked": 0, "held": 0, "free": 0}
        for cells in grid.values():
            for c in cells:
                if c.state in counts:
                    counts[c.state] += 1
        with write_txn():
            audit.record(t.id, user.actor, "list", "appointment", "", day=day.isoformat(),
                         view="today")
        _page(req, resp, "today.html", section="today", day=day, today=today,
              prev=day - timedelta(days=1), next=day + timedelta(days=1), doctors=doctors,
              grid=grid, counts=counts)


class _Week:
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        t: Tenant = req.context.tenant
        user = req.context.session.user
        today = data.local_today(t)
        start = _day_param(req, "start", today)
        doctors = data.active_doctors(t.id)
        wanted = req.get_param("doctor")
        doctor = next((d for d in doctors if d.slug == wanted), None)
        if wanted and doctor is None:
            raise falcon.HTTPNotFound(description="This clinic has no such doctor.")
        doctor = doctor or (doctors[0] if doctors else None)
        days = [start + timedelta(days=i) for i in range(7)]
        rows: list[dict[str, Any]] = []
        if doctor is not None:
            cells = data.slot_grid(t, [doctor], start, 7)[doctor.slug]
            by_time: dict[tuple[int, int], dict[date, data.Cell]] = {}
            for c in cells:
                by_time.setdefault((c.start.hour, c.start.minute), {})[c.start.date()] = c
            for key in sorted(by_time):
                sample = next(iter(by_time[key].values()))
                rows.append({"label": sample.start, "cells": [by_time[key].get(d) for d in days]})
            with write_txn():
                audit.record(t.id, user.actor, "list", "appointment", "",
                             day=start.isoformat(), view="week", doctor=doctor.slug)
        _page(req, resp, "week.html", section="week", start=start, days=days, today=today,
              doctors=doctors, doctor=doctor, rows=rows, prev=start - timedelta(days=7),
              next=start + timedelta(days=7))


def _slot_param(raw: str | None) -> int:
    if not raw or not _DIGITS.match(raw):
        raise NotFound("unknown slot")
    return int(raw)


class _Book:
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        t: Tenant = req.context.tenant
        slot = _slot_view(t, _slot_param(req.get_param("slot")))
        _page(req, resp, "book.html", section="today", slot=slot, error=None,
              values={"patient_name": "", "phone": "", "email": ""})

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        t: Tenant = req.context.tenant
        user = req.context.session.user
        form = req.context.form
        slot_pk = _slot_param(form.get("slot"))
        try:
            name = _field(form, "patient_name", max_len=200, required=True,
                          label="the patient's name")
            phone = _field(form, "phone", max_len=32, label="phone") or None
            email = _field(form, "email", max_len=254, label="e-mail") or None
            view = service.book(t.id, slot_pk, patient_name=name, phone=phone, email=email,
                                actor=user.actor)
        except (InvalidRequest, SlotTaken, NotAllowed) as exc:
            slot = _slot_view(t, slot_pk)
            status = falcon.HTTP_422 if isinstance(exc, InvalidRequest) else falcon.HTTP_409
            _page(req, resp, "book.html", section="today", slot=slot, error=str(exc),
                  status=status, values={k: form.get(k, "")[:300] for k in
                                         ("patient_name", "phone", "email")})
            return
        m.BOOKINGS.labels(t.id, "booked", "web").inc()
        _set_flash(resp, req.context.secure, "booked", view.confirmation)
        raise _redirect(f"{PREFIX}/t/{t.id}/appointments/{view.confirmation}")


def _slot_view(t: Tenant, slot_pk: int) -> dict[str, Any]:
    """A slot of this tenant for the booking form (NotFound for anyone else's)."""
    from esl_app.db.models import Doctor, Slot

    with database().connection_context():
        found = list(Slot.select(Slot.id, Slot.start, Slot.end, Slot.state, Doctor.name)
                     .join(Doctor)
                     .where((Slot.id == slot_pk) & (Slot.tenant == t.id)).tuples())
    if not found:
        raise NotFound("unknown slot")
    sid, start, end, state, doctor_name = found[0]
    return {"id": sid, "start": data.local(start, t.tz), "end": data.local(end, t.tz),
            "state": state, "doctor_name": doctor_name}


class _Appointment:
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str,
               code: str) -> None:
        t: Tenant = req.context.tenant
        user = req.context.session.user
        if not _CODE.match(code):
            raise NotFound("no appointment with that confirmation code")
        view = service.get_appointment(t.id, code, actor=user.actor)
        extras = data.appointment_extras(t.id, view.confirmation)
        move_day = data.parse_day(req.get_param("move_date"))
        doctors = data.active_doctors(t.id)
        move_doctor = req.get_param("move_doctor") or view.doctor
        if move_doctor not in {d.slug for d in doctors}:
            raise InvalidRequest("this clinic has no such doctor")
        options: list[service.SlotView] = []
        if move_day is not None and view.status == "booked":
            options = service.search_slots(t.id, doctor=move_doctor, date=move_day, limit=50)
        today = data.local_today(t)
        _page(req, resp, "appointment.html", section="today", a=view, extras=extras,
              doctors=doctors, move_day=move_day, move_doctor=move_doctor, options=options,
              can_mark=view.status == "booked" and view.start.date() <= today,
              default_move_day=max(today + timedelta(days=1), view.start.date()))


class _Cancel:
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str,
                code: str) -> None:
        t: Tenant = req.context.tenant
        view = service.cancel(t.id, code, actor=req.context.session.user.actor)
        m.BOOKINGS.labels(t.id, "cancelled", "web").inc()
        _set_flash(resp, req.context.secure, "cancelled", view.confirmation)
        raise _redirect(_back(req.context.form,
                              f"{PREFIX}/t/{t.id}/appointments/{view.confirmation}"))


class _Move:
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str,
                code: str) -> None:
        t: Tenant = req.context.tenant
        slot_pk = _slot_param(req.context.form.get("slot"))
        view = service.reschedule(t.id, code, slot_pk, actor=req.context.session.user.actor)
        m.BOOKINGS.labels(t.id, "rescheduled", "web").inc()
        _set_flash(resp, req.context.secure, "moved", view.confirmation)
        raise _redirect(f"{PREFIX}/t/{t.id}/appointments/{view.confirmation}")


class _Attendance:
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str,
                code: str) -> None:
        t: Tenant = req.context.tenant
        state = req.context.form.get("state", "")
        done = data.mark_attendance(t.id, code, state, tenant=t,
                                    actor=req.context.session.user.actor)
        _set_flash(resp, req.context.secure, state, done)
        raise _redirect(_back(req.context.form, f"{PREFIX}/t/{t.id}/appointments/{done}"))


# ---------------------------------------------------------------- calls


class _Calls:
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        t: Tenant = req.context.tenant
        filters = {k: (req.get_param(k) or "")[:40] for k in ("outcome", "date", "digits")}
        error = None
        rows: list[data.CallRow] = []
        nxt = None
        try:
            outcome = filters["outcome"] or None
            if outcome is not None and not data.OUTCOME_RE.match(outcome):
                raise InvalidRequest("unknown outcome")
            day = data.parse_day(filters["date"])
            digits = data.last_digits(filters["digits"])
            raw_before = req.get_param("before")
            if raw_before is not None and not _DIGITS.match(raw_before):
                raise InvalidRequest("bad page")
            before = int(raw_before) if raw_before else None
            rows, nxt = data.calls_page(t, outcome=outcome, day=day, digits=digits,
                                        before=before)
        except InvalidRequest as exc:
            error = str(exc)
        query = "&".join(f"{k}={quote(v)}" for k, v in filters.items() if v)
        _page(req, resp, "calls.html", section="calls", rows=rows, next_before=nxt,
              filters=filters, error=error, outcomes=data.CALL_OUTCOMES, query=query,
              status=falcon.HTTP_422 if error else falcon.HTTP_200)


class _Call:
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str,
               call_id: str) -> None:
        t: Tenant = req.context.tenant
        rec = data.call_detail(t, call_id) if _CALL_ID.match(call_id) else None
        if rec is None:
            raise falcon.HTTPNotFound(description="This clinic has no such call.")
        with write_txn():
            audit.record(t.id, req.context.session.user.actor, "read", "call", call_id)
        _page(req, resp, "call.html", section="calls", c=rec)


# ---------------------------------------------------------------- callbacks and reminders


class _Callbacks:
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        from esl_app.scheduling.callbacks import list_tickets

        t: Tenant = req.context.tenant
        show = req.get_param("show") or "open"
        if show not in ("open", "all"):
            raise InvalidRequest("show must be open or all")
        tickets = list_tickets(t.id, status="open" if show == "open" else None,
                               actor=req.context.session.user.actor)
        if show == "all":
            tickets = sorted(tickets, key=lambda x: (x.status != "open", -x.id))
        _page(req, resp, "callbacks.html", section="callbacks", tickets=tickets, show=show)


class _CallbackDone:
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str,
                ticket: str) -> None:
        from esl_app.scheduling.callbacks import mark_done

        t: Tenant = req.context.tenant
        if not _DIGITS.match(ticket):
            raise NotFound("no such callback ticket")
        done = mark_done(t.id, int(ticket), actor=req.context.session.user.actor)
        _set_flash(resp, req.context.secure, "done", str(done.id))
        raise _redirect(_back(req.context.form, f"{PREFIX}/t/{t.id}/callbacks"))


def _reminder_tables() -> bool:
    """Whether the reminder feature's tables exist in this database (it may not be there)."""
    db = database()
    with db.connection_context():
        return bool(db.table_exists("reminder_call") and db.table_exists("do_not_call"))


class _Reminders:
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        t: Tenant = req.context.tenant
        reminders: list[dict[str, Any]] = []
        blocked: list[dict[str, Any]] = []
        available = False
        try:
            from esl_app.reminders import store
        except ImportError:
            store = None  # type: ignore[assignment]
        if store is not None and _reminder_tables():
            from esl_app.telephony.transcript import mask_number

            available = True
            reminders = store.list_reminders(t.id, limit=200)
            blocked = [{**r, "phone": mask_number(r.get("phone"))}
                       for r in store.list_do_not_call(t.id)]
        _page(req, resp, "reminders.html", section="reminders", available=available,
              reminders=reminders, blocked=blocked)


# ---------------------------------------------------------------- live


def live_context(cfg: WebConfig) -> dict[str, Any]:
    """Everything the live panel shows (calls in progress, health, metrics)."""
    db_ok, db_ms, db_error = live.database_health()
    calls = data.calls_in_progress() if db_ok else []
    per_worker: dict[str, int] = {}
    for c in calls:
        per_worker[c["worker"] or "?"] = per_worker.get(c["worker"] or "?", 0) + 1
    metrics = live.metrics_summary(cfg.registry)
    return {
        "calls": calls, "per_worker": sorted(per_worker.items()), "db_ok": db_ok,
        "db_ms": db_ms, "db_error": db_error, "switch": live.switch_status(),
        "providers": live.provider_health(metrics) if db_ok else [], "metrics": metrics,
        "outcome_chart": live.bar_chart(list(metrics["calls"].items())[:8]),
        "booking_chart": live.bar_chart(list(metrics["bookings"].items())),
        "turn_chart": live.histogram_chart(metrics["turn_latency"]),
        "barge_chart": live.histogram_chart(metrics["barge_in_reaction"]),
        "now": time.strftime("%H:%M:%S"),
    }


class _Live:
    access = "operator"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _page(req, resp, "live.html", section="live", **live_context(req.context.cfg))


class _Drain:
    """Drain on or off (as ``ivrctl drain``), for operators; audited like every change."""

    access = "operator"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        state = req.context.form.get("state", "")
        if state not in ("on", "off"):
            raise falcon.HTTPBadRequest(description="The drain switch is either on or off.")
        user = req.context.session.user
        try:
            live.set_drain(state == "on")
        except live.DrainFailed as exc:
            raise falcon.HTTPServiceUnavailable(
                description=f"The drain switch was not changed: {exc}.") from None
        with write_txn():
            audit.record(user.tenant_id, user.actor, f"drain_{state}", "switch", "")
        log.info("drain %s from the dashboard", state)  # who: the audit log
        _set_flash(resp, req.context.secure, f"drain_{state}")
        raise _redirect(f"{PREFIX}/live")


def _sse(event: str, text: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in text.splitlines() or [""])
    return f"event: {event}\n{lines}\n".encode()


class _LiveEvents:
    """Server-sent events: the live panel, re-rendered when it changes."""

    access = "operator"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if _streams >= MAX_STREAMS:
            raise falcon.HTTPServiceUnavailable(
                description="Too many live views are open; try again shortly.", retry_after=10)
        resp.content_type = "text/event-stream; charset=utf-8"
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = self._events(req.context.cfg, req.context.token)

    @staticmethod
    def _events(cfg: WebConfig, token: str) -> Any:
        import gevent

        global _streams
        _streams += 1
        try:
            yield b"retry: 3000\n\n"
            end = time.monotonic() + STREAM_SECONDS
            recheck = time.monotonic() + SESSION_RECHECK
            last = None
            while time.monotonic() < end:
                if time.monotonic() >= recheck:
                    recheck = time.monotonic() + SESSION_RECHECK
                    if auth.session_for(token) is None:
                        yield _sse("signed_out", "")
                        return
                try:
                    html = render("_live_panel.html", **live_context(cfg))
                except Exception as exc:  # noqa: BLE001 - the stream outlives a bad tick
                    log.warning("live panel not rendered: %s", type(exc).__name__)
                    html = last
                if html is not None and html != last:
                    last = html
                    yield _sse("update", html)
                else:
                    yield b": tick\n\n"
                gevent.sleep(LIVE_TICK)
        finally:
            _streams -= 1


class _Static:
    access = "public"

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        found = static_file(name)
        if found is None:
            raise falcon.HTTPNotFound(description="No such file.")
        resp.data, resp.content_type = found
        resp.set_header("Cache-Control", "public, max-age=31536000, immutable")


# ---------------------------------------------------------------- the app


def web_routes() -> list[tuple[str, Any]]:
    """Every URL template of the dashboard and its resource (the isolation tests walk it)."""
    t = PREFIX + "/t/{tenant}"
    return [
        (PREFIX, _Root()),
        (PREFIX + "/login", _Login()),
        (PREFIX + "/logout", _Logout()),
        (PREFIX + "/tenants", _Tenants()),
        (PREFIX + "/switch", _Switch()),
        (PREFIX + "/live", _Live()),
        (PREFIX + "/live/events", _LiveEvents()),
        (PREFIX + "/live/drain", _Drain()),
        (PREFIX + "/static/{name}", _Static()),
        (t, _TenantRoot()),
        (t + "/today", _Today()),
        (t + "/week", _Week()),
        (t + "/book", _Book()),
        (t + "/appointments/{code}", _Appointment()),
        (t + "/appointments/{code}/cancel", _Cancel()),
        (t + "/appointments/{code}/move", _Move()),
        (t + "/appointments/{code}/attendance", _Attendance()),
        (t + "/calls", _Calls()),
        (t + "/calls/{call_id}", _Call()),
        (t + "/callbacks", _Callbacks()),
        (t + "/callbacks/{ticket}/done", _CallbackDone()),
        (t + "/reminders", _Reminders()),
    ]


def create_web_app(cfg: WebConfig | None = None) -> falcon.App:
    """The dashboard as its own falcon app (HTML errors; the API keeps its JSON ones)."""
    cfg = cfg or web_config()
    app = falcon.App(middleware=[_Guard(cfg)])
    app.req_options.auto_parse_qs_csv = False
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.keep_blank_qs_values = False
    app.set_error_serializer(_html_error)
    app.add_error_handler(Exception, _unexpected_error)
    app.add_error_handler(SchedulingError, _scheduling_error)
    for path, resource in web_routes():
        app.add_route(path, resource)
    return app
