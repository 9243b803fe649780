"""The three action-group Lambdas against a real API on loopback with a real SQLite DB.

Events are shaped like the AWS documentation's examples of both forms (OpenAPI
schema and function details), see docs/contracts.md §3.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from datetime import date, datetime, timedelta

import pytest
from fakes.api import LiveApi, lambda_modules, live_api

from esl_app.db.models import Slot
from esl_app.scheduling import service

common, search_slots, confirm_appointment, handoff_human = lambda_modules()

CODE = re.compile(r"^[A-Z0-9]{3}-[A-Z0-9]{3}$")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    with live_api(tmp_path_factory.mktemp("lambdas")) as live:
        yield live


@pytest.fixture(autouse=True)
def lambda_env(api: LiveApi, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IVR_API_URL", api.url)
    monkeypatch.setenv("IVR_API_TOKENS", json.dumps(api.tokens))
    monkeypatch.setenv("IVR_API_TIMEOUT", "5")
    monkeypatch.delenv("IVR_API_TOKENS_SECRET", raising=False)
    common.clear_caches()
    yield
    common.clear_caches()


def _agent() -> dict:
    return {"name": "ivr-clinic-agent", "id": "S2MOVY5G8J", "alias": "XOOC4XVDXZ",
            "version": "DRAFT"}


def openapi_event(api_path: str, method: str, *, params: dict | None = None,
                  body: dict | None = None, tenant: str | None = "sunrise",
                  action_group: str = "appointments") -> dict:
    event = {
        "messageVersion": "1.0",
        "agent": _agent(),
        "inputText": "I'd like to see a doctor",
        "sessionId": "3f2a9c1e-call-uuid",
        "actionGroup": action_group,
        "apiPath": api_path,
        "httpMethod": method,
        "parameters": [{"name": k, "type": "string", "value": v}
                       for k, v in (params or {}).items()],
        "sessionAttributes": {"tenantId": tenant} if tenant else {},
        "promptSessionAttributes": {},
    }
    if body is not None:
        event["requestBody"] = {"content": {"application/json": {"properties": [
            {"name": k, "type": "string", "value": v} for k, v in body.items()]}}}
    return event


def function_event(function: str, params: dict | None = None, *,
                   tenant: str | None = "sunrise") -> dict:
    return {
        "messageVersion": "1.0",
        "agent": _agent(),
        "inputText": "I'd like to see a doctor",
        "sessionId": "3f2a9c1e-call-uuid",
        "actionGroup": "appointments",
        "function": function,
        "parameters": [{"name": k, "type": "string", "value": v}
                       for k, v in (params or {}).items()],
        "sessionAttributes": {"tenantId": tenant} if tenant else {},
        "promptSessionAttributes": {},
    }


def openapi_body(out: dict) -> dict:
    assert out["messageVersion"] == "1.0"
    r = out["response"]
    assert set(r) == {"actionGroup", "apiPath", "httpMethod", "httpStatusCode", "responseBody"}
    return json.loads(r["responseBody"]["application/json"]["body"])


def function_body(out: dict) -> tuple[dict, str | None]:
    assert out["messageVersion"] == "1.0"
    r = out["response"]
    assert set(r) == {"actionGroup", "function", "functionResponse"}
    fr = r["functionResponse"]
    return json.loads(fr["responseBody"]["TEXT"]["body"]), fr.get("responseState")


def _open_slot_ids(tenant: str) -> set[str]:
    return {v.slot_id for v in service.search_slots(tenant, limit=50)}


# ---------------------------------------------------------------- searchSlots


def test_search_openapi_form_returns_real_open_slots(api: LiveApi):
    out = search_slots.handler(openapi_event("/searchSlots", "GET"), None)
    r = out["response"]
    assert (r["actionGroup"], r["apiPath"], r["httpMethod"], r["httpStatusCode"]) == (
        "appointments", "/searchSlots", "GET", 200)
    body = openapi_body(out)
    assert body["ok"] is True and 1 <= len(body["slots"]) <= 3
    assert {s["slotId"] for s in body["slots"]} <= _open_slot_ids("sunrise")
    first = body["slots"][0]
    assert re.search(r"(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), \w+ \d{1,2} "
                     r"at (\d{1,2}(:\d\d)? (AM|PM)|noon) with Dr\. ", first["spoken"])
    assert first["spoken"] in body["message"]
    assert out["sessionAttributes"] == {"tenantId": "sunrise"}


def test_search_function_form_with_filters(api: LiveApi):
    day = datetime.fromisoformat(service.search_slots("sunrise", limit=1)[0].start.isoformat())
    out = search_slots.handler(function_event("searchSlots", {
        "doctor": "patel", "date": day.date().isoformat(), "partOfDay": "afternoon"}), None)
    body, state = function_body(out)
    assert state is None and body["ok"] is True
    for s in body["slots"]:
        start = datetime.fromisoformat(s["start"])
        assert s["doctor"] == "patel" and start.date() == day.date()
        assert 12 <= start.hour < 17
        assert start.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4))


def test_search_no_slots_is_a_polite_answer(api: LiveApi):
    far = (date.today() + timedelta(days=200)).isoformat()  # beyond the generated slots
    body = openapi_body(search_slots.handler(
        openapi_event("/searchSlots", "GET", params={"date": far}), None))
    assert body["ok"] is True and body["slots"] == []
    assert "no open appointments" in body["message"]


def test_search_bad_date_and_part_reprompt(api: LiveApi):
    out = search_slots.handler(function_event("searchSlots", {"date": "next blursday"}), None)
    body, state = function_body(out)
    assert state == "REPROMPT" and body["error"] == "invalid_date"
    out = search_slots.handler(
        openapi_event("/searchSlots", "GET", params={"partOfDay": "midnight"}), None)
    assert out["response"]["httpStatusCode"] == 400
    assert openapi_body(out)["error"] == "invalid_part_of_day"


def test_search_unknown_doctor_names_the_doctors(api: LiveApi):
    out = search_slots.handler(
        openapi_event("/searchSlots", "GET", params={"doctor": "Dr. Who"}), None)
    body = openapi_body(out)
    assert out["response"]["httpStatusCode"] == 404
    assert body["error"] == "unknown_doctor" and "Dr. Sarah Smith" in body["message"]


def test_search_by_spoken_doctor_name(api: LiveApi):
    body = openapi_body(search_slots.handler(
        openapi_event("/searchSlots", "GET", params={"doctor": "Dr. Patel"}), None))
    assert body["slots"] and all(s["doctor"] == "patel" for s in body["slots"])


# ---------------------------------------------------------------- confirmAppointment


def test_confirm_books_then_second_confirm_is_taken(api: LiveApi):
    slot = openapi_body(search_slots.handler(
        openapi_event("/searchSlots", "GET"), None))["slots"][0]
    event = openapi_event("/confirmAppointment", "POST", body={
        "slotId": slot["slotId"], "patientName": "Ann Lee", "email": "ann@example.org",
        "phone": "+1 555 010 1234"})
    out = confirm_appointment.handler(event, None)
    assert out["response"]["httpStatusCode"] == 201
    body = openapi_body(out)
    assert body["ok"] is True and CODE.match(body["confirmation"])
    assert body["start"] == slot["start"] and slot["spoken"].split(" with ")[0] in body["message"]
    stored = service.get_appointment("sunrise", body["confirmation"])
    assert stored.status == "booked"
    assert stored.patient_name == "Ann Lee" and stored.call_id == "3f2a9c1e-call-uuid"
    assert slot["slotId"] not in _open_slot_ids("sunrise")

    from esl_app.scheduling.audit import list_audit

    trail = list_audit("sunrise", entity_id=body["confirmation"])
    assert ("lambda", "create") in {(e["actor"], e["action"]) for e in trail}

    again = confirm_appointment.handler(event, None)
    assert again["response"]["httpStatusCode"] == 409
    taken = openapi_body(again)
    assert taken["ok"] is False and taken["error"] == "slot_taken"
    assert "just taken" in taken["message"]


def test_confirm_function_form(api: LiveApi):
    slot = service.search_slots("lakeside", limit=1)[0]
    out = confirm_appointment.handler(function_event("confirmAppointment", {
        "slotId": slot.slot_id, "patientName": "Bo Chen"}, tenant="lakeside"), None)
    body, state = function_body(out)
    assert state is None and body["ok"] is True and CODE.match(body["confirmation"])
    out = confirm_appointment.handler(function_event("confirmAppointment", {
        "slotId": slot.slot_id, "patientName": "Cy Dunn"}, tenant="lakeside"), None)
    body, state = function_body(out)
    assert state == "REPROMPT" and body["error"] == "slot_taken"


def test_confirm_missing_and_invalid_fields_reprompt(api: LiveApi):
    slot = service.search_slots("sunrise", limit=1)[0]
    cases = [
        ({"patientName": "Ann"}, "missing_slot"),
        ({"slotId": slot.slot_id}, "missing_name"),
        ({"slotId": slot.slot_id, "patientName": "Ann", "email": "ann at example"},
         "invalid_email"),
        ({"slotId": slot.slot_id, "patientName": "Ann", "phone": "call me"}, "invalid_phone"),
        ({"slotId": slot.slot_id, "patientName": "Ann", "phone": "1234567890123456789"},
         "invalid"),  # passes the Lambda's shape check; the API refuses it (422)
    ]
    for params, code in cases:
        body, state = function_body(confirm_appointment.handler(
            function_event("confirmAppointment", params), None))
        assert (body["ok"], body["error"], state) == (False, code, "REPROMPT"), params
        assert body["message"]
    assert slot.slot_id in _open_slot_ids("sunrise")


# ---------------------------------------------------------------- tenant isolation


def test_other_tenants_slot_is_refused_and_untouched(api: LiveApi):
    foreign = service.search_slots("lakeside", limit=1)[0]
    out = confirm_appointment.handler(openapi_event("/confirmAppointment", "POST", body={
        "slotId": foreign.slot_id, "patientName": "Eve Mallory"}), None)
    body = openapi_body(out)
    assert out["response"]["httpStatusCode"] == 404
    assert body["ok"] is False and body["error"] == "not_found"
    assert "at this clinic" in body["message"]
    assert Slot.get_by_id(int(foreign.slot_id)).state == "open"


def test_model_supplied_tenant_is_refused(api: LiveApi):
    for params in ({"tenantId": "lakeside"}, {"clinic": "lakeside", "doctor": "garcia"}):
        out = search_slots.handler(
            openapi_event("/searchSlots", "GET", params=params), None)
        body = openapi_body(out)
        assert out["response"]["httpStatusCode"] == 403
        assert body["error"] == "wrong_clinic" and "this clinic" in body["message"]
    # the session's own tenant named explicitly is fine
    ok = openapi_body(search_slots.handler(
        openapi_event("/searchSlots", "GET", params={"tenantId": "sunrise"}), None))
    assert ok["ok"] is True


def test_unknown_session_tenant_gets_a_speakable_refusal(api: LiveApi):
    for tenant in ("nosuchclinic", "../lakeside", None):
        out = search_slots.handler(openapi_event("/searchSlots", "GET", tenant=tenant), None)
        body = openapi_body(out)
        assert body["ok"] is False and body["message"]
        assert out["response"]["httpStatusCode"] in (400, 503)


@pytest.mark.parametrize("event", [
    None, {}, [], "hello", 42,
    {"messageVersion": "1.0", "apiPath": "/searchSlots"},
    {"apiPath": "/searchSlots", "httpMethod": "GET", "parameters": "date=1",
     "sessionAttributes": {"tenantId": "sunrise"}},
    {"function": "searchSlots", "parameters": [{"name": 1}, "x", {"name": "date"}],
     "sessionAttributes": {"tenantId": "sunrise"}},
    {"apiPath": "/confirmAppointment", "httpMethod": "POST", "requestBody": {"content": 5},
     "sessionAttributes": {"tenantId": ["sunrise"]}},
    {"function": "confirmAppointment", "parameters": [
        {"name": "slotId", "type": "string", "value": {"$gt": ""}},
        {"name": "patientName", "type": "string", "value": "x" * 5000}],
     "sessionAttributes": {"tenantId": "sunrise"}},
])
@pytest.mark.parametrize("module", [search_slots, confirm_appointment, handoff_human])
def test_malformed_events_get_well_formed_answers(api: LiveApi, module, event):
    out = module.handler(event, None)
    assert out["messageVersion"] == "1.0"
    r = out["response"]
    if "functionResponse" in r:
        body = json.loads(r["functionResponse"]["responseBody"]["TEXT"]["body"])
    else:
        body = json.loads(r["responseBody"]["application/json"]["body"])
        assert isinstance(r["httpStatusCode"], int)
    assert isinstance(body["message"], str) and body["message"]
    json.dumps(out)  # serialisable as Lambda output


# ---------------------------------------------------------------- handoffToHuman


def test_handoff_both_forms(api: LiveApi):
    out = handoff_human.handler(openapi_event("/handoffToHuman", "POST",
                                              body={"reason": "billing question"}), None)
    body = openapi_body(out)
    assert body == {"ok": True, "action": "transfer", "to": "user/1000",
                    "reason": "billing question", "message": body["message"]}
    assert out["sessionAttributes"]["handoffTo"] == "user/1000"
    body, state = function_body(handoff_human.handler(
        function_event("handoffToHuman", tenant="lakeside"), None))
    assert state is None and body["to"] == "user/1001" and body["reason"] is None


# ---------------------------------------------------------------- failures outside the API


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_api_down(api: LiveApi, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IVR_API_URL", f"http://127.0.0.1:{_closed_port()}")
    out = search_slots.handler(function_event("searchSlots"), None)
    body, state = function_body(out)
    assert body["error"] == "unavailable" and "transfer" in body["message"]
    assert state is None  # not FAILURE: that would end the agent's turn with an exception
    out = confirm_appointment.handler(openapi_event("/confirmAppointment", "POST", body={
        "slotId": "1", "patientName": "Ann"}), None)
    assert out["response"]["httpStatusCode"] == 503
    # a handoff still happens: the call engine falls back to the tenant's configured line
    body = openapi_body(handoff_human.handler(openapi_event("/handoffToHuman", "POST"), None))
    assert body["ok"] is True and body["action"] == "transfer" and body["to"] is None


def test_api_timeout(api: LiveApi, monkeypatch: pytest.MonkeyPatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    try:
        monkeypatch.setenv("IVR_API_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("IVR_API_TIMEOUT", "0.3")
        body = openapi_body(search_slots.handler(openapi_event("/searchSlots", "GET"), None))
        assert body["error"] == "unavailable"
    finally:
        silent.close()


def test_missing_or_wrong_token(api: LiveApi, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IVR_API_TOKENS", json.dumps({"sunrise": api.tokens["lakeside"]}))
    body = openapi_body(search_slots.handler(openapi_event("/searchSlots", "GET"), None))
    assert body["error"] == "unavailable"  # 403 from the API: a config fault, not the caller's
    monkeypatch.setenv("IVR_API_TOKENS", "{}")
    body = openapi_body(search_slots.handler(openapi_event("/searchSlots", "GET"), None))
    assert body["error"] == "unavailable"


def test_tokens_from_secrets_manager(api: LiveApi, monkeypatch: pytest.MonkeyPatch):
    moto = pytest.importorskip("moto")
    import boto3

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("IVR_API_TOKENS")
    monkeypatch.setenv("IVR_API_TOKENS_SECRET", "ivr/api-tokens")
    with moto.mock_aws():
        boto3.client("secretsmanager").create_secret(
            Name="ivr/api-tokens", SecretString=json.dumps(api.tokens))
        body = openapi_body(search_slots.handler(openapi_event("/searchSlots", "GET"), None))
        assert body["ok"] is True and body["slots"]
        # cached: a deleted secret does not break the next invocation within the TTL
        boto3.client("secretsmanager").delete_secret(
            SecretId="ivr/api-tokens", ForceDeleteWithoutRecovery=True)
        body = openapi_body(search_slots.handler(
            openapi_event("/searchSlots", "GET", tenant="lakeside"), None))
        assert body["ok"] is True
        common.clear_caches()
        body = openapi_body(search_slots.handler(openapi_event("/searchSlots", "GET"), None))
        assert body["error"] == "unavailable"


# ---------------------------------------------------------------- speech and logs


def test_the_lambdas_say_times_as_the_bot_does():
    # the Lambda bundle cannot import esl_app: its copy must equal the bot's, every minute
    from esl_app.providers.agent.tools import spoken_time

    for day in (date(2026, 11, 24), date(2026, 3, 8), date(2027, 1, 3)):
        noon = datetime(day.year, day.month, day.day, 12)
        assert common.speak_date(day) == spoken_time(noon).split(" at ")[0]
        for minute in range(24 * 60):
            for offset in ("-05:00", "+00:00", "+05:30"):
                text = f"{day.isoformat()}T{minute // 60:02d}:{minute % 60:02d}:00{offset}"
                dt = datetime.fromisoformat(text)
                assert common.speak_time(text) == spoken_time(dt), text
                assert common.speak_time(dt, with_day=False) == spoken_time(dt, with_day=False)


def test_speech_formatting():
    assert common.speak_code("K7M-4Q2") == "K 7 M, 4 Q 2"
    assert common.join_spoken(["a", "b", "c"]) == "a, b, and c"


def test_logs_are_json_and_masked(api: LiveApi):
    assert common.mask("ann.lee@example.org called +1 (555) 010-1234") == (
        "***@example.org called ***34")
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    common.log(logging.INFO, "warmup")  # installs the module's own handler first
    grab = Grab()
    logger = logging.getLogger("ivr.lambda")
    logger.addHandler(grab)
    try:
        common.log(logging.ERROR, "probe", detail="mail bob@example.com or 555-010-9876")
        slot = service.search_slots("sunrise", limit=1)[0]
        confirm_appointment.handler(openapi_event("/confirmAppointment", "POST", body={
            "slotId": slot.slot_id, "patientName": "Zed Quinn", "email": "zed@example.net",
            "phone": "+15550109999"}), None)
    finally:
        logger.removeHandler(grab)
    assert records
    for line in records:
        data = json.loads(line)
        assert "event" in data and "level" in data
        assert "@example.com" not in line.replace("***@example.com", "")
        assert "bob@" not in line and "9876" not in line and "zed@" not in line
        assert "5550109999" not in line and "Zed" not in line


def test_bodies_match_action_group_schemas(api: LiveApi):
    """What the Lambdas answer is what the action-group schemas promise the model."""
    import jsonschema_rs

    from esl_app.http.actiongroups import action_group_schemas

    def to_json_schema(node):  # OpenAPI 3.0 "nullable" → JSON Schema
        if isinstance(node, dict):
            out = {k: to_json_schema(v) for k, v in node.items() if k != "nullable"}
            if node.get("nullable"):
                out["type"] = [node["type"], "null"]
            return out
        return [to_json_schema(v) for v in node] if isinstance(node, list) else node

    def validator(name: str, path: str, method: str):
        op = action_group_schemas()[name]["paths"][path][method]
        return jsonschema_rs.validator_for(to_json_schema(
            op["responses"]["200"]["content"]["application/json"]["schema"]))

    search_v = validator("searchSlots", "/searchSlots", "get")
    confirm_v = validator("confirmAppointment", "/confirmAppointment", "post")
    handoff_v = validator("handoffToHuman", "/handoffToHuman", "post")
    found = openapi_body(search_slots.handler(openapi_event("/searchSlots", "GET"), None))
    search_v.validate(found)
    search_v.validate(openapi_body(search_slots.handler(
        openapi_event("/searchSlots", "GET", params={"date": "bad"}), None)))
    booked = openapi_body(confirm_appointment.handler(openapi_event(
        "/confirmAppointment", "POST",
        body={"slotId": found["slots"][-1]["slotId"], "patientName": "Di Eng"}), None))
    confirm_v.validate(booked)
    confirm_v.validate(openapi_body(confirm_appointment.handler(openapi_event(
        "/confirmAppointment", "POST",
        body={"slotId": found["slots"][-1]["slotId"], "patientName": "Di Eng"}), None)))
    handoff_v.validate(openapi_body(handoff_human.handler(
        openapi_event("/handoffToHuman", "POST"), None)))


def test_router_dispatches_by_path_or_function(api: LiveApi):
    router = __import__("lambdas.router", fromlist=["handler"])
    body = openapi_body(router.handler(openapi_event("/searchSlots", "GET"), None))
    assert body["ok"] is True and body["slots"]
    body, _ = function_body(router.handler(function_event("handoffToHuman"), None))
    assert body["action"] == "transfer"
    out = router.handler(openapi_event("/deleteEverything", "POST"), None)
    assert out["response"]["httpStatusCode"] == 404
    assert openapi_body(out)["error"] == "unknown_action"
    body, state = function_body(router.handler(function_event("dropTables"), None))
    assert body["error"] == "unknown_action" and state == "REPROMPT"
