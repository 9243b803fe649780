"""The appointments API over real HTTP: auth, validation, errors, health, metrics."""

from __future__ import annotations

import http.client
import json
import re

import pytest
from fakes.api import LiveApi, live_api

from esl_app.scheduling import service
from esl_app.scheduling.tokens import issue_token, revoke_tokens


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    with live_api(tmp_path_factory.mktemp("http")) as live:
        yield live


def call(api: LiveApi, method: str, path: str, *, tenant: str | None = "sunrise",
         body: object = None, raw: bytes | None = None, headers: dict | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    h = dict(api.auth(tenant)) if tenant else {}
    if body is not None:
        raw = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    try:
        conn.request(method, path, body=raw, headers=h)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def jcall(api: LiveApi, method: str, path: str, **kw) -> tuple[int, object]:
    status, headers, data = call(api, method, path, **kw)
    assert headers["content-type"].startswith("application/json"), (status, data[:200])
    return status, json.loads(data)


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize("path", [
    "/v1/tenants/sunrise", "/v1/tenants/sunrise/slots",
    "/v1/tenants/sunrise/appointments/ABC-DEF"])
def test_no_or_bad_token_is_401(api: LiveApi, path: str):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"},
                    {"Authorization": "Bearer "}, {"Authorization": "Bearer " + "x" * 4000}):
        status, hdrs, data = call(api, "GET", path, tenant=None, headers=headers)
        assert status == 401, headers
        assert json.loads(data) == {"error": "a valid bearer token is required"}
        assert hdrs["www-authenticate"].startswith("Bearer")


def test_other_tenants_token_is_403(api: LiveApi):
    for method, path, body in (
        ("GET", "/v1/tenants/lakeside", None),
        ("GET", "/v1/tenants/lakeside/slots", None),
        ("POST", "/v1/tenants/lakeside/appointments", {"slot_id": "1", "patient_name": "A"}),
        ("DELETE", "/v1/tenants/lakeside/appointments/ABC-DEF", None),
        ("GET", "/v1/tenants/nosuch/slots", None),
    ):
        status, data = jcall(api, method, path, tenant="sunrise", body=body)
        assert status == 403 and "error" in data


def test_revoked_token_is_401(api: LiveApi):
    token = issue_token("lakeside")
    headers = {"Authorization": f"Bearer {token}"}
    assert call(api, "GET", "/v1/tenants/lakeside", tenant=None, headers=headers)[0] == 200
    assert revoke_tokens("lakeside") >= 1
    assert call(api, "GET", "/v1/tenants/lakeside", tenant=None, headers=headers)[0] == 401
    # the fixture's token was revoked too: issue a fresh one for later tests
    api.tokens["lakeside"] = issue_token("lakeside")
    assert call(api, "GET", "/v1/tenants/lakeside", tenant="lakeside")[0] == 200


# ---------------------------------------------------------------- the appointment lifecycle


def test_search_book_get_reschedule_cancel(api: LiveApi):
    status, slots = jcall(api, "GET", "/v1/tenants/sunrise/slots?doctor=smith&limit=3")
    assert status == 200 and len(slots) == 3
    for s in slots:
        assert set(s) >= {"slot_id", "doctor", "start", "end"} and s["doctor"] == "smith"
        assert re.search(r"[+-]0[45]:00$", s["start"])
    status, appt = jcall(api, "POST", "/v1/tenants/sunrise/appointments", body={
        "slot_id": slots[0]["slot_id"], "patient_name": "  Ann   Lee ",
        "email": "ann@example.org", "phone": "+1 555 010 1234", "call_id": "c-1"})
    assert status == 201
    code = appt["confirmation"]
    assert re.fullmatch(r"[A-Z0-9]{3}-[A-Z0-9]{3}", code)
    assert (appt["doctor"], appt["start"], appt["status"]) == ("smith", slots[0]["start"],
                                                               "booked")
    status, again = jcall(api, "POST", "/v1/tenants/sunrise/appointments", body={
        "slot_id": slots[0]["slot_id"], "patient_name": "Bob"})
    assert status == 409 and again["error"]
    status, got = jcall(api, "GET", f"/v1/tenants/sunrise/appointments/{code.lower()}")
    assert status == 200 and got["confirmation"] == code and got["patient_name"] == "Ann Lee"
    status, moved = jcall(api, "POST", f"/v1/tenants/sunrise/appointments/{code}/reschedule",
                          body={"slot_id": slots[1]["slot_id"]})
    assert status == 200 and moved["start"] == slots[1]["start"] and moved["confirmation"] == code
    assert jcall(api, "POST", f"/v1/tenants/sunrise/appointments/{code}/reschedule",
                 body={"slot_id": slots[1]["slot_id"]})[0] in (409, 422)
    status, gone = jcall(api, "DELETE", f"/v1/tenants/sunrise/appointments/{code}")
    assert status == 200 and gone["status"] == "cancelled"
    assert jcall(api, "DELETE", f"/v1/tenants/sunrise/appointments/{code}")[0] == 409
    # both slots are open again
    open_ids = {v.slot_id for v in service.search_slots("sunrise", doctor="smith", limit=10)}
    assert {slots[0]["slot_id"], slots[1]["slot_id"]} <= open_ids
    # every read and change is in the audit log, attributed to the API token
    from esl_app.scheduling.audit import list_audit

    trail = [(e["actor"], e["action"]) for e in reversed(list_audit("sunrise", entity_id=code))]
    assert trail == [("api:token", "create"), ("api:token", "read"),
                     ("api:token", "reschedule"), ("api:token", "cancel")]


def test_other_tenants_data_is_invisible(api: LiveApi):
    foreign_slot = service.search_slots("lakeside", limit=1)[0]
    appt = service.book("lakeside", foreign_slot.slot_id, patient_name="Lake Person")
    assert jcall(api, "GET", f"/v1/tenants/sunrise/appointments/{appt.confirmation}")[0] == 404
    assert jcall(api, "DELETE", f"/v1/tenants/sunrise/appointments/{appt.confirmation}")[0] == 404
    other = service.search_slots("lakeside", limit=1)[0]
    assert jcall(api, "POST", "/v1/tenants/sunrise/appointments",
                 body={"slot_id": other.slot_id, "patient_name": "X"})[0] == 404
    assert jcall(api, "GET", "/v1/tenants/sunrise/slots?doctor=garcia")[0] == 404
    assert service.get_appointment("lakeside", appt.confirmation).status == "booked"


def test_tenant_info(api: LiveApi):
    status, info = jcall(api, "GET", "/v1/tenants/lakeside", tenant="lakeside")
    assert status == 200
    assert (info["id"], info["timezone"], info["handoff"]) == (
        "lakeside", "America/Chicago", "user/1001")
    assert {d["id"] for d in info["doctors"]} == {"johnson", "garcia"}


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("query, field", [
    ("date=2026-13-01", "date"), ("date=tomorrow", "date"), ("date=0001-01-01", "date"),
    ("part=night", "part"), ("limit=0", "limit"), ("limit=51", "limit"), ("limit=x", "limit"),
    ("doctor=" + "a" * 101, "doctor"),
])
def test_bad_search_parameters_are_422(api: LiveApi, query: str, field: str):
    status, data = jcall(api, "GET", f"/v1/tenants/sunrise/slots?{query}")
    assert status == 422 and data["error"].startswith(field)


@pytest.mark.parametrize("body, status, field", [
    ({}, 422, "slot_id"),
    ({"slot_id": "1"}, 422, "patient_name"),
    ({"slot_id": 1, "patient_name": "A"}, 422, "slot_id"),
    ({"slot_id": "1", "patient_name": ["A"]}, 422, "patient_name"),
    ({"slot_id": "1", "patient_name": "   "}, 422, "patient_name"),
    ({"slot_id": "1", "patient_name": "A" * 101}, 422, "patient_name"),
    ({"slot_id": "1", "patient_name": "A", "email": "nope"}, 422, "email"),
    ({"slot_id": "1", "patient_name": "A", "phone": "call me"}, 422, "phone"),
    ({"slot_id": "1", "patient_name": "A", "tenant": "lakeside"}, 422, "tenant"),
    ({"slot_id": "not-a-slot", "patient_name": "A"}, 404, None),
])
def test_bad_booking_bodies(api: LiveApi, body: dict, status: int, field: str | None):
    got, data = jcall(api, "POST", "/v1/tenants/sunrise/appointments", body=body)
    assert got == status
    if field:
        assert data["error"].startswith(field)


@pytest.mark.parametrize("raw, ctype, status", [
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'"x"', "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    (b"", "application/json", 400),
    (b"slot_id=1", "application/x-www-form-urlencoded", 415),
    (b'{"slot_id": "1", "patient_name": "' + b"a" * 20000 + b'"}', "application/json", 413),
])
def test_malformed_bodies(api: LiveApi, raw: bytes, ctype: str, status: int):
    got, data = jcall(api, "POST", "/v1/tenants/sunrise/appointments", raw=raw,
                      headers={"Content-Type": ctype})
    assert got == status and isinstance(data["error"], str)


def test_chunked_oversized_body_is_413(api: LiveApi):
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.putrequest("POST", "/v1/tenants/sunrise/appointments")
        for k, v in {**api.auth("sunrise"), "Content-Type": "application/json",
                     "Transfer-Encoding": "chunked"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        chunk = b"a" * 8192
        for _ in range(4):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        assert resp.status == 413 and "error" in json.loads(resp.read())
    finally:
        conn.close()


# ---------------------------------------------------------------- errors are JSON


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/", 404), ("GET", "/v2/anything", 404), ("GET", "/v1/tenants", 404),
    ("PUT", "/v1/tenants/sunrise/slots", 405), ("POST", "/healthz", 405),
    ("PATCH", "/v1/tenants/sunrise/appointments/ABC-DEF", 405),
])
def test_routing_errors_are_json(api: LiveApi, method: str, path: str, status: int):
    got, headers, data = call(api, method, path, headers={"Accept": "text/html"})
    assert got == status and headers["content-type"].startswith("application/json")
    assert set(json.loads(data)) == {"error"} and b"<" not in data


def test_internal_errors_are_json_without_traceback(api: LiveApi, tmp_path):
    import falcon.testing

    from esl_app.http.app import create_app

    def broken(tenant_id: str):
        raise RuntimeError("secret internals /etc/passwd")

    client = falcon.testing.TestClient(create_app(tenants_provider=broken))
    result = client.simulate_get("/v1/tenants/sunrise", headers=api.auth("sunrise"))
    assert result.status_code == 500 and result.json == {"error": "internal error"}
    assert "passwd" not in result.text


# ---------------------------------------------------------------- health and metrics


def test_healthz_checks_the_database(api: LiveApi, monkeypatch: pytest.MonkeyPatch):
    assert jcall(api, "GET", "/healthz", tenant=None) == (200, {"status": "ok", "database": "ok"})
    import esl_app.http.app as app_module

    def no_db():
        raise RuntimeError("database not initialised")

    monkeypatch.setattr(app_module, "database", no_db)
    status, data = jcall(api, "GET", "/healthz", tenant=None)
    assert status == 503 and data == {"error": "database unavailable"}


def test_metrics_text(api: LiveApi):
    from esl_app.http import metrics

    metrics.CALLS_ACTIVE.labels("sunrise").inc()
    metrics.TURN_LATENCY.labels("sunrise").observe(0.42)
    metrics.TTS_CACHE_HITS.inc()
    jcall(api, "GET", "/v1/tenants/sunrise/slots")
    status, headers, data = call(api, "GET", "/metrics", tenant=None)
    text = data.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'ivr_calls_active{tenant="sunrise"}' in text
    assert 'ivr_turn_latency_seconds_bucket{le="0.5",tenant="sunrise"}' in text
    assert "ivr_tts_cache_hits_total" in text and "ivr_provider_errors_total" in text or (
        "# TYPE ivr_provider_errors counter" in text)
    assert re.search(r'ivr_http_requests_total\{method="GET",route="/v1/tenants/\{tenant\}/slots"'
                     r',status="200"\} [1-9]', text)
    assert "python_gc" not in text  # dedicated registry, not the global one
    metrics.CALLS_ACTIVE.labels("sunrise").dec()


def test_openapi_document_is_served(api: LiveApi):
    status, headers, data = call(api, "GET", "/openapi.yaml", tenant=None)
    assert status == 200 and data.startswith(b"openapi: 3.0")


def test_concurrent_bookings_of_one_slot_have_one_winner(api: LiveApi):
    import gevent

    slot = service.search_slots("sunrise", doctor="patel", limit=1)[0]
    jobs = [gevent.spawn(call, api, "POST", "/v1/tenants/sunrise/appointments",
                         body={"slot_id": slot.slot_id, "patient_name": f"Caller {i}"})
            for i in range(20)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    statuses = sorted(job.value[0] for job in jobs)
    assert statuses == [201] + [409] * 19


def test_serve_http_on_a_shared_listener(api: LiveApi):
    """Pre-fork workers hand serve_http an already bound socket."""
    from gevent import socket as gsocket

    from esl_app.http.app import serve_http

    sock = gsocket.socket()
    sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = serve_http(listener=sock)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", sock.getsockname()[1], timeout=10)
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
        conn.close()
    finally:
        server.stop(timeout=2)


def test_callbacks_show_in_the_api(api: LiveApi):
    from esl_app.scheduling.callbacks import create_ticket, mark_done

    t1 = create_ticket("sunrise", name="Ann Lee", phone="+15550101234", reason="test results",
                       call_id="c-9")
    t2 = create_ticket("sunrise", name="Bob", phone="5550109999", reason="billing")
    mark_done("sunrise", t2.id)
    create_ticket("lakeside", name="Other", phone="5550108888", reason="not yours")
    status, body = jcall(api, "GET", "/v1/tenants/sunrise/callbacks")
    assert status == 200
    assert [(x["id"], x["name"], x["phone"], x["reason"], x["status"]) for x in body] == [
        (t1.id, "Ann Lee", "+15550101234", "test results", "open")]
    status, every = jcall(api, "GET", "/v1/tenants/sunrise/callbacks?status=all")
    assert status == 200 and {x["id"] for x in every} == {t1.id, t2.id}
    assert all(x["reason"] != "not yours" for x in every)
    assert jcall(api, "GET", "/v1/tenants/sunrise/callbacks?status=maybe")[0] == 422
    assert jcall(api, "GET", "/v1/tenants/lakeside/callbacks", tenant="sunrise")[0] == 403
