"""The operators' live page: health of the database and FreeSWITCH, drain state, metrics.

FreeSWITCH is asked over its inbound event socket (``FS_ESL_HOST``/``FS_ESL_PORT``/
``FS_ESL_PASSWORD``, as ``ivrctl``) with one short deadline for the whole exchange, and
the answer is kept for :data:`PROBE_TTL` seconds: the live page refreshes every couple of
seconds per operator, and a switch that does not answer must cost a page half a second
at most, once. Metrics come from the process's own Prometheus registry (every worker's
under ``PROMETHEUS_MULTIPROC_DIR``), as ``/metrics`` exposes them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from esl_app.config.dialplan import DRAIN_VARIABLE
from esl_app.config.settings import freeswitch_esl

__all__ = ["DrainFailed", "ProviderHealth", "SwitchStatus", "bar_chart", "database_health",
           "metrics_summary", "provider_health", "set_drain", "switch_status"]

PROBE_TIMEOUT = 0.5
PROBE_TTL = 5.0

_cache: dict[tuple[str, int], tuple[float, SwitchStatus]] = {}


@dataclass(frozen=True)
class SwitchStatus:
    """What the inbound event socket said (or why it could not be asked)."""

    address: str
    reachable: bool
    status: str = ""  # the first line of ``api status`` ("UP 0 years, 0 days, …")
    drain: str = "unknown"  # on | off | unknown
    error: str = ""
    ms: float = 0.0


def _read_message(reader: Any) -> tuple[dict[str, str], bytes]:
    headers: dict[str, str] = {}
    while True:
        line = reader.readline(8192)
        if not line:
            raise ConnectionError("connection closed")
        text = line.decode("utf-8", "replace").strip()
        if not text:
            if headers:
                break
            continue
        name, _, value = text.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    length = headers.get("content-length", "")
    if length.isdigit():
        body = reader.read(min(int(length), 1 << 20))
    return headers, body


def _exchange(host: str, port: int, password: str, timeout: float,
              commands: list[str]) -> list[str]:
    """Sign in to the inbound event socket and run ``api`` commands, under one deadline.

    Raises ``gevent.Timeout``, PermissionError (password refused) or OSError/ConnectionError.
    """
    import gevent
    from gevent import socket

    sock = None
    try:
        with gevent.Timeout(timeout):
            sock = socket.create_connection((host, port), timeout=timeout)
            reader = sock.makefile("rb")
            headers, _ = _read_message(reader)
            if headers.get("content-type") != "auth/request":
                raise ConnectionError("no ESL auth request")
            sock.sendall(f"auth {password}\n\n".encode())
            headers, _ = _read_message(reader)
            if not headers.get("reply-text", "").startswith("+OK"):
                raise PermissionError("the ESL password was refused")
            answers = []
            for command in commands:
                sock.sendall(f"api {command}\n\n".encode())
                _, body = _read_message(reader)
                answers.append(body.decode("utf-8", "replace").strip())
            sock.sendall(b"exit\n\n")
            return answers
    finally:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _failure(exc: BaseException, timeout: float) -> str:
    """One line for an operator: why the switch could not be asked (never the password)."""
    import gevent

    if isinstance(exc, gevent.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, PermissionError):
        return str(exc)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason).lower()


def _is_on(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "on")


def _probe(host: str, port: int, password: str, timeout: float) -> SwitchStatus:
    import gevent

    where = f"{host}:{port}"
    started = time.perf_counter()
    try:
        drain_value, status = _exchange(host, port, password, timeout,
                                        [f"global_getvar {DRAIN_VARIABLE}", "status"])
    except (gevent.Timeout, PermissionError, OSError, ConnectionError) as exc:
        return SwitchStatus(where, False, error=_failure(exc, timeout),
                            ms=(time.perf_counter() - started) * 1000)
    first = status.splitlines()[0] if status else ""
    return SwitchStatus(where, True, status=first[:200],
                        drain="on" if _is_on(drain_value) else "off",
                        ms=(time.perf_counter() - started) * 1000)


class DrainFailed(Exception):
    """The drain switch could not be set (the message says why, for the operator)."""


def set_drain(on: bool, *, host: str | None = None, port: int | None = None,
              password: str | None = None, timeout: float = 2.0) -> str:
    """Turn the dialplan's drain switch on or off (as ``ivrctl drain``) and read it back.

    Drain on sends new calls straight to each clinic's human line; calls in progress go
    on. Returns "on" or "off" as FreeSWITCH then reports it; DrainFailed if it cannot be
    reached or reports something else. The cached probe is dropped either way.
    """
    import gevent

    host, port, password = freeswitch_esl(host, port, password)
    value = "true" if on else "false"
    try:
        _, now = _exchange(host, port, password, timeout,
                           [f"global_setvar {DRAIN_VARIABLE}={value}",
                            f"global_getvar {DRAIN_VARIABLE}"])
    except (gevent.Timeout, PermissionError, OSError, ConnectionError) as exc:
        raise DrainFailed(f"FreeSWITCH {host}:{port}: {_failure(exc, timeout)}") from None
    finally:
        forget_probes()
    if _is_on(now) != on:
        raise DrainFailed(f"FreeSWITCH still reports {DRAIN_VARIABLE}={now[:40] or 'unset'}")
    return "on" if on else "off"


def switch_status(*, host: str | None = None, port: int | None = None,
                  password: str | None = None, timeout: float = PROBE_TIMEOUT,
                  ttl: float = PROBE_TTL) -> SwitchStatus:
    """FreeSWITCH's health and drain switch, at most one probe per ``ttl`` seconds."""
    host, port, password = freeswitch_esl(host, port, password)
    key = (host, port)
    hit = _cache.get(key)
    now = time.monotonic()
    if hit and now - hit[0] < ttl:
        return hit[1]
    result = _probe(host, port, password, timeout)
    _cache[key] = (time.monotonic(), result)
    return result


def forget_probes() -> None:
    """Drop cached switch answers (tests; an operator's "check now")."""
    _cache.clear()


def database_health() -> tuple[bool, float, str]:
    """(ok, milliseconds, error) of a ``SELECT 1``."""
    from esl_app.db import database

    started = time.perf_counter()
    try:
        db = database()
        with db.connection_context():
            db.execute_sql("SELECT 1").fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", shown by kind
        return False, (time.perf_counter() - started) * 1000, type(exc).__name__
    return True, (time.perf_counter() - started) * 1000, ""


# ---------------------------------------------------------------- providers

RECENT_WINDOW = 300.0  # "failing" means errors within this many seconds
IN_USE_TTL = 60.0  # which providers the clinics use: read again after this long
OUTBOX_LATE = 300  # seconds a queued message may wait past its time before it counts
_KINDS = {"stt": "speech to text", "tts": "text to speech", "agent": "agent",
          "sms": "SMS", "email": "e-mail"}
_started = time.monotonic()
_history: dict[tuple[str, str], list[tuple[float, int]]] = {}
_in_use: tuple[float, int, dict[tuple[str, str], int]] | None = None


@dataclass(frozen=True)
class ProviderHealth:
    """One provider the clinics use (or that failed), as the live page shows it."""

    kind: str  # stt | tts | agent | sms | email
    provider: str
    clinics: int  # clinics configured to use it
    errors: int = 0  # since the workers started (stt/tts/agent), or failed in 24 h (sms/email)
    recent: int = 0  # errors within RECENT_WINDOW; for sms/email, messages overdue
    since: str = ""  # "" when the whole window was seen, else the clock time watching began
    fallbacks: int = 0  # calls moved to the local recogniser after this one failed

    @property
    def label(self) -> str:
        return _KINDS.get(self.kind, self.kind)

    @property
    def state(self) -> str:
        """The health list's class: fail (errors just now, or late messages), warn, ok."""
        if self.recent:
            return "fail"
        return "warn" if self.errors or self.fallbacks else "ok"


def _recent(key: tuple[str, str], total: int, now: float) -> tuple[int, str]:
    """Errors of ``key`` within the window, from the totals this process has seen.

    Counters only grow, so the newest total at least a window old is the baseline. Before
    one exists: 0 if the process started within the window (every error is recent), else
    the oldest total seen, and the time watching began.
    """
    seen = _history.setdefault(key, [])
    if not seen or now - seen[-1][0] >= 10.0 or seen[-1][1] != total:
        seen.append((now, total))
    while len(seen) > 2 and seen[1][0] <= now - RECENT_WINDOW:
        del seen[0]  # seen[1] is old enough to be the baseline: seen[0] never will be
    if seen[0][0] <= now - RECENT_WINDOW:
        return total - seen[0][1], ""
    if now - _started <= RECENT_WINDOW:
        return total, ""
    began = time.strftime("%H:%M:%S", time.localtime(time.time() - (now - seen[0][0])))
    return total - seen[0][1], began


def providers_in_use() -> dict[tuple[str, str], int]:
    """(kind, provider) → clinics configured for it; read from the tenants' stored config.

    Cached for IN_USE_TTL seconds: the live panel is drawn every couple of seconds.
    """
    import json

    from esl_app.db import database
    from esl_app.db.models import TenantRow

    global _in_use
    mono = time.monotonic()
    db = database()
    if _in_use is not None and _in_use[1] == id(db) and mono - _in_use[0] < IN_USE_TTL:
        return _in_use[2]
    counts: dict[tuple[str, str], int] = {}
    with db.connection_context():
        configs = [c for (c,) in TenantRow.select(TenantRow.config).tuples()]
    for raw in configs:
        try:
            cfg = json.loads(raw or "{}")
        except ValueError:
            continue
        notify = cfg.get("notifications") or {}
        for kind, name in (("stt", cfg.get("stt", "local")), ("tts", cfg.get("tts", "local")),
                           ("agent", cfg.get("agent", "local")),
                           ("sms", notify.get("sms", "outbox")),
                           ("email", notify.get("email", "outbox"))):
            if kind in ("sms", "email") and name == "outbox":
                continue  # kept in the table, nothing sent: no provider to be healthy
            key = (kind, str(name))
            counts[key] = counts.get(key, 0) + 1
    _in_use = (mono, id(db), counts)
    return counts


def _outbox_health() -> dict[tuple[str, str], tuple[int, int]]:
    """(channel, provider) → (failed in the last 24 h, queued past their time by 5 min).

    Both counts start from the sender's (status, next_attempt_at) index.
    """
    from datetime import timedelta

    import peewee as pw

    from esl_app.db import database
    from esl_app.db.models import OutboxMessage, utcnow

    now = utcnow()
    out: dict[tuple[str, str], list[int]] = {}
    with database().connection_context():
        failed = (OutboxMessage.select(OutboxMessage.channel, OutboxMessage.provider,
                                       pw.fn.COUNT(OutboxMessage.id))
                  .where((OutboxMessage.status == "failed")
                         & (OutboxMessage.next_attempt_at > now - timedelta(days=1)))
                  .group_by(OutboxMessage.channel, OutboxMessage.provider).tuples())
        for channel, provider, n in failed:
            out.setdefault((channel, provider), [0, 0])[0] = n
        late = (OutboxMessage.select(OutboxMessage.channel, OutboxMessage.provider,
                                     pw.fn.COUNT(OutboxMessage.id))
                .where((OutboxMessage.status == "queued")
                       & (OutboxMessage.next_attempt_at < now - timedelta(seconds=OUTBOX_LATE)))
                .group_by(OutboxMessage.channel, OutboxMessage.provider).tuples())
        for channel, provider, n in late:
            out.setdefault((channel, provider), [0, 0])[1] = n
    return {k: (v[0], v[1]) for k, v in out.items()}


def provider_health(metrics: dict[str, Any], *, now: float | None = None
                    ) -> list[ProviderHealth]:
    """Every provider in use or seen failing: speech, agent and message delivery.

    Speech and agent health come from ``ivr_provider_errors_total`` (and the recogniser
    fallbacks) of every worker; SMS and e-mail from the outbox table: ``kept`` messages
    (provider ``outbox``) never leave it and are not listed.
    """
    mono = time.monotonic() if now is None else now
    in_use = providers_in_use()
    errors: dict[tuple[str, str], int] = metrics.get("provider_errors", {})
    fallbacks: dict[str, int] = metrics.get("stt_fallbacks", {})
    outbox = _outbox_health()
    keys = set(in_use) | set(errors) | {k for k in outbox if k[1] != "outbox"}
    out = []
    for kind, name in sorted(keys, key=lambda k: (list(_KINDS).index(k[0])
                                                   if k[0] in _KINDS else 9, k[1])):
        if kind in ("sms", "email"):
            failed, late = outbox.get((kind, name), (0, 0))
            out.append(ProviderHealth(kind, name, in_use.get((kind, name), 0), errors=failed,
                                      recent=late))
            continue
        total = errors.get((kind, name), 0)
        recent, since = _recent((kind, name), total, mono)
        out.append(ProviderHealth(kind, name, in_use.get((kind, name), 0), errors=total,
                                  recent=recent, since=since,
                                  fallbacks=fallbacks.get(name, 0) if kind == "stt" else 0))
    return out


def forget_providers() -> None:
    """Drop the providers-in-use cache and error history (tests; a reloaded config)."""
    global _in_use
    _in_use = None
    _history.clear()


# ---------------------------------------------------------------- metrics


def _registry(registry: Any) -> Any:
    from esl_app.http.metrics import collected

    return collected(registry)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile`` over cumulative (upper bound, count) pairs, sorted."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _histogram(samples: list[Any], name: str) -> dict[str, Any]:
    """Buckets summed over every label set; count, p50, p95 and per-bucket counts."""
    cumulative: dict[float, float] = {}
    for s in samples:
        if s.name == name + "_bucket":
            le = float(s.labels.get("le", "inf"))
            cumulative[le] = cumulative.get(le, 0.0) + s.value
    buckets = sorted(cumulative.items())
    per_bucket = []
    prev = 0.0
    for upper, count in buckets:
        per_bucket.append((upper, count - prev))
        prev = count
    total = buckets[-1][1] if buckets else 0.0
    return {"count": int(total), "p50": quantile(0.5, buckets), "p95": quantile(0.95, buckets),
            "buckets": per_bucket}


def metrics_summary(registry: Any = None) -> dict[str, Any]:
    """Calls by outcome, bookings by action, barge-ins, and latency percentiles."""
    families = {f.name: f for f in _registry(registry).collect()}

    def counter(name: str, label: str) -> dict[str, int]:
        out: dict[str, int] = {}
        fam = families.get(name)
        for s in fam.samples if fam else ():
            if s.name == name + "_total":
                key = s.labels.get(label, "")
                out[key] = out.get(key, 0) + int(s.value)
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def samples(name: str) -> list[Any]:
        fam = families.get(name)
        return list(fam.samples) if fam else []

    active = sum(int(s.value) for s in samples("ivr_calls_active") if s.name == "ivr_calls_active")
    barge = sum(int(s.value) for s in samples("ivr_barge_ins")
                if s.name == "ivr_barge_ins_total")
    provider_errors: dict[tuple[str, str], int] = {}
    for smp in samples("ivr_provider_errors"):
        if smp.name == "ivr_provider_errors_total":
            key = (smp.labels.get("kind", ""), smp.labels.get("provider", ""))
            provider_errors[key] = provider_errors.get(key, 0) + int(smp.value)
    return {
        "active": active,
        "provider_errors": provider_errors,
        "stt_fallbacks": counter("ivr_stt_fallbacks", "from"),
        "calls": counter("ivr_calls", "outcome"),
        "bookings": counter("ivr_bookings", "action"),
        "barge_ins": barge,
        "turn_latency": _histogram(samples("ivr_turn_latency_seconds"),
                                   "ivr_turn_latency_seconds"),
        "barge_in_reaction": _histogram(samples("ivr_barge_in_reaction_seconds"),
                                        "ivr_barge_in_reaction_seconds"),
        "turn_response": _histogram(samples("ivr_turn_response_seconds"),
                                    "ivr_turn_response_seconds"),
    }


def bar_chart(items: list[tuple[str, float]], *, width: int = 320, bar: int = 16,
              gap: int = 4, label_width: int = 110) -> dict[str, Any]:
    """Geometry of a horizontal bar chart, for an inline SVG the template draws."""
    top = max((v for _, v in items), default=0.0) or 1.0
    span = width - label_width - 50
    rows = []
    for i, (label, value) in enumerate(items):
        rows.append({"label": label, "value": value, "y": i * (bar + gap),
                     "w": max(1 if value else 0, round(span * value / top))})
    return {"rows": rows, "width": width, "height": max(1, len(items)) * (bar + gap),
            "bar": bar, "x0": label_width}


def histogram_chart(hist: dict[str, Any], *, unit: str = "ms") -> dict[str, Any]:
    """A bar per histogram bucket, labelled by its upper bound (none before any sample)."""
    items: list[tuple[str, float]] = []
    if not hist.get("count"):
        return bar_chart(items)
    for upper, count in hist.get("buckets", []):
        if math.isinf(upper):
            label = "more"
        elif unit == "ms":
            label = f"≤ {upper * 1000:g} ms"
        else:
            label = f"≤ {upper:g} s"
        items.append((label, count))
    while items and items[-1][1] == 0 and len(items) > 1:  # empty tail: not worth a row
        items.pop()
    return bar_chart(items)
