"""The operators' live page: calls in progress, health, drain, metrics, server-sent events.

Also that ``serve_http`` mounts the dashboard beside the API on one port.
"""

from __future__ import annotations

import http.client
import json
import math
import time
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from test_web_helpers import PASSWORD, Client, add_call, build_env, cheap_hashes_fixture  # noqa: F401

from esl_app.db import close_db
from esl_app.http.app import serve_http
from esl_app.sim.emulator.core import Switch
from esl_app.sim.emulator.inbound import InboundServer
from esl_app.web import live, routes


@pytest.fixture
def registry():
    reg = CollectorRegistry()
    calls = Counter("ivr_calls", "x", ["tenant", "outcome"], registry=reg)
    calls.labels("sunrise", "booked").inc(7)
    calls.labels("lakeside", "booked").inc(3)
    calls.labels("sunrise", "handoff").inc(2)
    Counter("ivr_bookings", "x", ["tenant", "action", "channel"], registry=reg).labels(
        "sunrise", "booked", "call").inc(9)
    Counter("ivr_barge_ins", "x", ["tenant"], registry=reg).labels("sunrise").inc(4)
    Gauge("ivr_calls_active", "x", ["tenant"], registry=reg).labels("sunrise").set(1)
    turns = Histogram("ivr_turn_latency_seconds", "x", ["tenant"], registry=reg,
                      buckets=(0.1, 0.2, 0.5, 1.0))
    for v in [0.05] * 10 + [0.15] * 80 + [0.4] * 10:
        turns.labels("sunrise").observe(v)
    barge = Histogram("ivr_barge_in_reaction_seconds", "x", registry=reg,
                      buckets=(0.005, 0.01, 0.02))
    for v in (0.004, 0.006, 0.008, 0.015):
        barge.observe(v)
    return reg


@pytest.fixture
def web(tmp_path, registry, monkeypatch):
    monkeypatch.setenv("FS_ESL_PORT", "1")  # nothing listens there: "not reachable"
    live.forget_probes()
    live.forget_providers()  # cached per database object, whose id() a new one may reuse
    env = build_env(tmp_path, registry=registry)
    yield env
    live.forget_probes()
    live.forget_providers()
    close_db()


def test_live_page_lists_calls_in_progress(web):
    c = web.client("olga")
    r = c.get("/ui/live")
    assert r.status_code == 200 and "No call in progress." in r.text
    started = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=42)
    add_call("live0001-0000-0000-0000-000000000000", "lakeside", caller="+15557654321",
             outcome="in_progress", started=started)
    add_call("dead0001-0000-0000-0000-000000000000", "sunrise", outcome="in_progress",
             started=started - timedelta(hours=13))  # a dead worker's: not live
    r = c.get("/ui/live")
    assert 'data-call="live0001-0000-0000-0000-000000000000"' in r.text
    assert "dead0001" not in r.text
    assert "*********21" in r.text and "+15557654321" not in r.text
    assert '<span id="live-count">1</span>' in r.text
    assert '<noscript><meta http-equiv="refresh" content="10"></noscript>' in r.text
    assert 'data-live-src="/ui/live/events"' in r.text


def test_live_page_health_and_metrics(web):
    r = web.client("olga").get("/ui/live")
    assert "<strong>Database</strong>: ok" in r.text
    assert "not reachable" in r.text and "127.0.0.1:1" in r.text
    assert "<strong>Drain</strong>: unknown" in r.text
    assert "<dt>Calls finished</dt><dd>12</dd>" in r.text
    assert "<dt>Bookings</dt><dd>9</dd>" in r.text
    assert "<dt>Barge-ins</dt><dd>4</dd>" in r.text
    assert r.text.count("<svg") == 4 and 'role="img"' in r.text
    assert "Turn latency (100 turns)" in r.text
    # p50 inside the 0.1-0.2 s bucket, p95 inside 0.2-0.5 s
    assert "Turn latency p50 / p95</dt><dd>150 ms / 350 ms" in r.text


def test_metrics_summary_and_quantiles(registry):
    s = live.metrics_summary(registry)
    assert s["calls"] == {"booked": 10, "handoff": 2}
    assert s["bookings"] == {"booked": 9} and s["barge_ins"] == 4 and s["active"] == 1
    t = s["turn_latency"]
    assert t["count"] == 100
    assert t["p50"] == pytest.approx(0.15)
    assert t["p95"] == pytest.approx(0.35)
    b = s["barge_in_reaction"]
    assert b["count"] == 4 and 0.005 < b["p50"] <= 0.01
    assert live.quantile(0.5, []) is None
    assert live.quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert live.quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0  # +Inf: the last bound
    empty = live.metrics_summary(CollectorRegistry())
    assert empty["turn_latency"]["p50"] is None and empty["calls"] == {}
    chart = live.histogram_chart(t)
    assert [r["label"] for r in chart["rows"]] == ["≤ 100 ms", "≤ 200 ms", "≤ 500 ms"]
    assert max(r["w"] for r in chart["rows"]) == chart["width"] - chart["x0"] - 50


def test_the_process_registry_is_the_default():
    from esl_app.http import metrics as m

    m.BARGE_INS.labels("x-tenant").inc()
    assert live.metrics_summary()["barge_ins"] >= 1


@pytest.fixture
def switch():
    sw = Switch(password="S3cret")
    server = InboundServer(sw, "127.0.0.1", 0).start()
    live.forget_probes()
    yield sw, server.address
    server.stop()
    live.forget_probes()


def test_switch_status_over_the_inbound_event_socket(switch):
    sw, (host, port) = switch
    s = live.switch_status(host=host, port=port, password="S3cret")
    assert s.reachable and s.status.startswith("UP") and s.drain == "off"
    assert s.ms < 500
    sw.global_vars["ivr_drain"] = "true"
    assert live.switch_status(host=host, port=port, password="S3cret").drain == "off"  # cached
    live.forget_probes()
    assert live.switch_status(host=host, port=port, password="S3cret").drain == "on"
    live.forget_probes()
    bad = live.switch_status(host=host, port=port, password="wrong")
    assert not bad.reachable and "password" in bad.error
    assert "wrong" not in bad.error and "S3cret" not in repr(bad)


def test_switch_status_bounded_when_silent_or_closed():
    import gevent
    from gevent.server import StreamServer

    def silent(sock, address):  # accepts and says nothing, like a hung switch
        gevent.sleep(5)

    server = StreamServer(("127.0.0.1", 0), silent)
    server.start()
    try:
        t0 = time.monotonic()
        s = live.switch_status(host="127.0.0.1", port=server.server_port, timeout=0.2, ttl=0)
        assert not s.reachable and "no answer within 0.2 s" in s.error
        assert time.monotonic() - t0 < 1.0
    finally:
        server.stop(timeout=0)
    s = live.switch_status(host="127.0.0.1", port=1, ttl=0)
    assert not s.reachable and "refused" in s.error


def test_live_page_shows_the_drain_switch(web, switch, monkeypatch):
    sw, (host, port) = switch
    monkeypatch.setenv("FS_ESL_HOST", host)
    monkeypatch.setenv("FS_ESL_PORT", str(port))
    monkeypatch.setenv("FS_ESL_PASSWORD", "S3cret")
    sw.global_vars["ivr_drain"] = "true"
    r = web.client("olga").get("/ui/live")
    assert "<strong>Drain</strong>: on" in r.text
    assert "not reachable" not in r.text


def _use_switch(monkeypatch, address) -> None:
    host, port = address
    monkeypatch.setenv("FS_ESL_HOST", host)
    monkeypatch.setenv("FS_ESL_PORT", str(port))
    monkeypatch.setenv("FS_ESL_PASSWORD", "S3cret")


def test_operator_turns_drain_on_and_off(web, switch, monkeypatch):
    from esl_app.db.models import AuditLog

    sw, address = switch
    _use_switch(monkeypatch, address)
    c = web.client("olga")
    r = c.get("/ui/live")
    assert 'action="/ui/live/drain"' in r.text and 'data-drain="off"' in r.text
    r = c.post("/ui/live/drain", {"state": "on"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/live"
    assert sw.global_vars["ivr_drain"] == "true"
    r = c.get("/ui/live")
    assert 'class="flash" role="status">Drain on: new calls go to the clinics' in r.text
    assert 'data-drain="on"' in r.text  # the probe's cache was dropped
    c.post("/ui/live/drain", {"state": "off"})
    assert sw.global_vars["ivr_drain"] == "false"
    assert 'data-drain="off"' in c.get("/ui/live").text
    actions = [(a.actor, a.action, a.entity) for a in AuditLog.select()
               .where(AuditLog.entity == "switch").order_by(AuditLog.id)]
    assert actions == [("web:olga", "drain_on", "switch"), ("web:olga", "drain_off", "switch")]


@pytest.mark.parametrize("who, fields, csrf, status", [
    ("alice", {"state": "on"}, True, 403),  # staff: operators only
    ("olga", {"state": "on"}, False, 403),  # no CSRF token
    ("olga", {"state": "on", "csrf": "forged"}, False, 403),
    ("olga", {"state": "maybe"}, True, 400),
    ("olga", {}, True, 400),
])
def test_drain_form_refusals(web, switch, monkeypatch, who, fields, csrf, status):
    sw, address = switch
    _use_switch(monkeypatch, address)
    c = web.client(who)
    c.get("/ui/t/sunrise/today")
    r = c.post("/ui/live/drain", fields, csrf=csrf)
    assert r.status_code == status, r.text[-300:]
    assert "ivr_drain" not in sw.global_vars


def test_drain_form_from_another_origin_is_refused(web, switch, monkeypatch):
    sw, address = switch
    _use_switch(monkeypatch, address)
    c = web.client("olga")
    c.get("/ui/live")
    r = c.post("/ui/live/drain", {"state": "on"},
               headers={"Origin": "https://evil.example", "Host": "clinic.example"})
    assert r.status_code == 403 and "ivr_drain" not in sw.global_vars


def test_drain_without_a_switch_says_so(web):
    c = web.client("olga")
    c.get("/ui/live")
    r = c.post("/ui/live/drain", {"state": "on"})
    assert r.status_code == 503 and "was not changed" in r.text and "127.0.0.1:1" in r.text


def test_set_drain_reads_the_switch_back(switch):
    sw, (host, port) = switch
    assert live.set_drain(True, host=host, port=port, password="S3cret") == "on"
    assert sw.global_vars["ivr_drain"] == "true"
    with pytest.raises(live.DrainFailed, match="password"):
        live.set_drain(False, host=host, port=port, password="wrong")
    assert sw.global_vars["ivr_drain"] == "true"


def test_calls_in_progress_per_worker(web):
    import json as _json

    from esl_app.db.models import CallRecord

    started = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5)
    for i, worker in enumerate(("host:101", "host:101", "host:202")):
        call_id = f"work{i:04d}-0000-0000-0000-000000000000"
        add_call(call_id, "sunrise", outcome="in_progress", started=started)
        CallRecord.update(usage=_json.dumps({"worker": worker})).where(
            CallRecord.call_id == call_id).execute()
    r = web.client("olga").get("/ui/live")
    per_worker = r.text.split('id="per-worker"', 1)[1].split("</p>", 1)[0]
    assert '<span class="mono">host:101</span> 2' in per_worker
    assert '<span class="mono">host:202</span> 1' in per_worker


# ---------------------------------------------------------------- providers


def test_providers_in_use_and_their_errors(web, registry, monkeypatch):
    from esl_app.db.models import OutboxMessage, utcnow

    live.forget_providers()
    # the process is young (errors since its start are all recent), whatever ran before
    # this test in the same pytest process
    monkeypatch.setattr(live, "_started", time.monotonic())
    errors = Counter("ivr_provider_errors", "x", ["kind", "provider"], registry=registry)
    Counter("ivr_stt_fallbacks", "x", ["tenant", "from"], registry=registry).labels(
        "sunrise", "aws").inc(2)
    errors.labels("stt", "aws").inc(3)
    now = utcnow()
    for status, due in (("failed", now - timedelta(hours=2)), ("failed", now - timedelta(days=3)),
                        ("queued", now - timedelta(minutes=30)), ("queued", now)):
        OutboxMessage.create(tenant="sunrise", code="X", event="booked", channel="sms",
                             provider="sns", recipient="+15550001111", body="b", status=status,
                             next_attempt_at=due)
    r = web.client("olga").get("/ui/live")
    rows = {p.split('"', 1)[0]: p.split("</tr>", 1)[0]
            for p in r.text.split('data-provider="')[1:]}
    # both clinics: recogniser and voice on FreeSWITCH, the local agent
    assert set(rows) == {"stt:freeswitch", "tts:freeswitch", "agent:local", "stt:aws",
                         "sms:sns"}
    assert "<td class=\"num\">2</td>" in rows["agent:local"] and "ok" in rows["agent:local"]
    # no clinic uses aws now, but it failed within the window (the process is young)
    assert "failing" in rows["stt:aws"] and "3 in the last 5 min" in rows["stt:aws"]
    assert "2 calls moved to the local recogniser" in rows["stt:aws"]
    assert "1 waiting over 5 min, 1 failed in 24 h" in rows["sms:sns"]
    live.forget_providers()


def test_provider_errors_age_out_of_the_window(monkeypatch):
    live.forget_providers()
    monkeypatch.setattr(live, "_started", 0.0)
    metrics = {"provider_errors": {("tts", "polly"): 4}, "stt_fallbacks": {}}
    monkeypatch.setattr(live, "providers_in_use", lambda: {("tts", "polly"): 1})
    monkeypatch.setattr(live, "_outbox_health", lambda: {})
    first = live.provider_health(metrics, now=1000.0)[0]
    assert (first.recent, first.errors, first.state) == (0, 4, "warn")  # seen since 1000 s
    assert first.since  # watched for less than the window: says since when
    metrics["provider_errors"][("tts", "polly")] = 6
    p = live.provider_health(metrics, now=1100.0)[0]
    assert (p.recent, p.state) == (2, "fail")
    p = live.provider_health(metrics, now=1400.0)[0]  # 1100 s is now the baseline
    assert (p.recent, p.since, p.state) == (0, "", "warn")
    live.forget_providers()


# ---------------------------------------------------------------- over a real server


@pytest.fixture
def served(web, monkeypatch):
    monkeypatch.setattr(routes, "LIVE_TICK", 0.05)
    server = serve_http("127.0.0.1", 0, metrics=None)
    yield web, server.server_port
    server.stop(timeout=1)


def _session_cookie(port: int, username: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/ui/login")
    r = conn.getresponse()
    r.read()
    login_csrf = r.getheader("Set-Cookie").split(";")[0]
    token = login_csrf.split("=", 1)[1]
    body = f"csrf={token}&username={username}&password={PASSWORD.replace(' ', '+')}"
    conn.request("POST", "/ui/login", body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": login_csrf})
    r = conn.getresponse()
    r.read()
    assert r.status == 303, r.status
    cookies = [v for k, v in r.getheaders() if k.lower() == "set-cookie"]
    session = next(c for c in cookies if c.startswith("ivr_session="))
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/ui" in session
    conn.close()
    return session.split(";")[0]


def test_dashboard_and_api_share_the_port(served):
    web, port = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/healthz")
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["status"] == "ok"
    conn.request("GET", "/nope")
    r = conn.getresponse()
    assert r.status == 404 and r.getheader("Content-Type").startswith("application/json")
    r.read()
    conn.request("GET", "/ui/login")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/html")
    assert b"Sign in" in r.read()
    conn.request("GET", "/ui/")
    r = conn.getresponse()
    r.read()
    assert r.status == 303 and r.getheader("Location") == "/ui/login?next=/ui"
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    assert b'route="/ui/login"' in r.read()  # the dashboard's requests are counted too


def test_live_events_stream_the_panel(served):
    web, port = served
    cookie = _session_cookie(port, "olga")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/ui/live/events", headers={"Cookie": cookie})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/event-stream")
    assert r.getheader("Cache-Control") == "no-store"

    def next_update() -> str:
        data: list[str] = []
        event = None
        while True:
            line = r.fp.readline().decode()
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: "):
                data.append(line[6:].rstrip("\n"))
            elif line == "\r\n" or line == "\n":
                if event == "update":
                    return "\n".join(data)
                event, data = None, []

    first = next_update()
    assert "Calls in progress" in first and "No call in progress." in first
    add_call("sse00001-0000-0000-0000-000000000000", "sunrise", outcome="in_progress",
             started=datetime.now(UTC).replace(tzinfo=None))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        update = next_update()
        if "sse00001" in update:
            break
    else:
        pytest.fail("the new call never reached the stream")
    conn.close()


def test_live_events_end_with_the_session(served, monkeypatch):
    web, port = served
    monkeypatch.setattr(routes, "SESSION_RECHECK", 0.1)
    cookie = _session_cookie(port, "olga")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/ui/live/events", headers={"Cookie": cookie})
    r = conn.getresponse()
    assert r.status == 200
    from esl_app.web import auth

    auth.remove_user("sunrise", "olga")
    seen = b""
    deadline = time.monotonic() + 5
    while b"event: signed_out" not in seen and time.monotonic() < deadline:
        seen += r.fp.readline()
    assert b"event: signed_out" in seen
    conn.close()


def test_live_events_are_bounded(served, monkeypatch):
    web, port = served
    monkeypatch.setattr(routes, "_streams", routes.MAX_STREAMS)
    cookie = _session_cookie(port, "olga")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/ui/live/events", headers={"Cookie": cookie})
    r = conn.getresponse()
    assert r.status == 503 and r.getheader("Retry-After") == "10"
    r.read()
