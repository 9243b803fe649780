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

from esl_app.config.settings import freeswitch_esl

__all__ = ["SwitchStatus", "bar_chart", "database_health", "metrics_summary", "switch_status"]

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


def _probe(host: str, port: int, password: str, timeout: float) -> SwitchStatus:
    import gevent
    from gevent import socket

    where = f"{host}:{port}"
    started = time.perf_counter()
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
            for command in ("global_getvar ivr_drain", "status"):
                sock.sendall(f"api {command}\n\n".encode())
                _, body = _read_message(reader)
                answers.append(body.decode("utf-8", "replace").strip())
            sock.sendall(b"exit\n\n")
    except gevent.Timeout:
        return SwitchStatus(where, False, error=f"no answer within {timeout:g} s",
                            ms=(time.perf_counter() - started) * 1000)
    except PermissionError as exc:
        return SwitchStatus(where, False, error=str(exc),
                            ms=(time.perf_counter() - started) * 1000)
    except (OSError, ConnectionError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return SwitchStatus(where, False, error=str(reason).lower(),
                            ms=(time.perf_counter() - started) * 1000)
    finally:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
    drain_value, status = answers
    drain = "on" if drain_value.lower() in ("true", "1", "yes", "on") else "off"
    first = status.splitlines()[0] if status else ""
    return SwitchStatus(where, True, status=first[:200], drain=drain,
                        ms=(time.perf_counter() - started) * 1000)


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
    return {
        "active": active,
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
