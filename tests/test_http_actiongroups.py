"""The Bedrock action-group schemas built from openapi.yaml."""

from __future__ import annotations

import json

import pytest

from esl_app.http.actiongroups import ACTION_GROUPS, action_group_schemas, load_openapi


@pytest.fixture(scope="module")
def schemas() -> dict:
    return action_group_schemas()


def test_three_standalone_openapi_documents(schemas: dict):
    assert set(schemas) == {"searchSlots", "confirmAppointment", "handoffToHuman"}
    for name, doc in schemas.items():
        assert doc["openapi"].startswith("3.0")
        assert doc["info"]["title"] and doc["info"]["version"]
        text = json.dumps(doc)
        assert "$ref" not in text  # standalone: Bedrock gets one document per group
        path, method, op_id = ACTION_GROUPS[name]
        assert list(doc["paths"]) == [path] and list(doc["paths"][path]) == [method]
        op = doc["paths"][path][method]
        assert op["operationId"] == op_id and len(op["description"]) > 40
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["type"] == "object" and {"ok", "message"} <= set(schema["required"])


def test_parameter_names_are_the_contract(schemas: dict):
    search = schemas["searchSlots"]["paths"]["/searchSlots"]["get"]
    params = {p["name"]: p for p in search["parameters"]}
    assert set(params) == {"doctor", "date", "partOfDay"}
    for p in params.values():
        assert p["in"] == "query" and p["required"] is False and p["description"]
    assert params["partOfDay"]["schema"]["enum"] == ["morning", "afternoon", "evening"]
    assert params["date"]["schema"]["format"] == "date"

    body = schemas["confirmAppointment"]["paths"]["/confirmAppointment"]["post"]["requestBody"]
    obj = body["content"]["application/json"]["schema"]
    assert set(obj["properties"]) == {"slotId", "patientName", "email", "phone"}
    assert obj["required"] == ["slotId", "patientName"]
    assert all(p["description"] for p in obj["properties"].values())

    body = schemas["handoffToHuman"]["paths"]["/handoffToHuman"]["post"]["requestBody"]
    assert set(body["content"]["application/json"]["schema"]["properties"]) == {"reason"}


def test_single_source(schemas: dict):
    """Limits and descriptions come from the API document's components."""
    api = load_openapi()
    booking = api["components"]["schemas"]["BookingRequest"]["properties"]
    names = api["components"]["schemas"]["PatientName"]
    confirm = schemas["confirmAppointment"]["paths"]["/confirmAppointment"]["post"]
    props = confirm["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert props["patientName"]["maxLength"] == names["maxLength"]
    assert booking["patient_name"] == {"$ref": "#/components/schemas/PatientName"}
    doctor = api["components"]["parameters"]["Doctor"]["description"]
    search = schemas["searchSlots"]["paths"]["/searchSlots"]["get"]
    assert search["parameters"][0]["description"] == doctor.strip()


def test_returns_fresh_copies(schemas: dict):
    again = action_group_schemas()
    again["searchSlots"]["info"]["title"] = "changed"
    assert action_group_schemas()["searchSlots"]["info"]["title"] == "searchSlots"
