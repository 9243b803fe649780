"""The Bedrock action-group OpenAPI schemas, derived from openapi.yaml.

The appointments API document is the single source of truth: parameter
descriptions, field limits and result bodies are taken from its components,
so the agent's tools cannot drift from the API the Lambdas call. Bedrock
wants an OpenAPI 3.0 document per action group, with an ``operationId`` and a
description on every operation and a response schema; ``$ref`` is resolved
inline so the documents stand alone.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

import yaml

__all__ = ["ACTION_GROUPS", "action_group_schemas", "load_openapi"]

#: action-group name → (apiPath, method, operationId)
ACTION_GROUPS: dict[str, tuple[str, str, str]] = {
    "searchSlots": ("/searchSlots", "get", "searchSlots"),
    "confirmAppointment": ("/confirmAppointment", "post", "confirmAppointment"),
    "handoffToHuman": ("/handoffToHuman", "post", "handoffToHuman"),
}


@cache
def _openapi_text() -> str:
    return resources.files("esl_app.http").joinpath("openapi.yaml").read_text("utf-8")


def load_openapi() -> dict[str, Any]:
    """The appointments API document (a fresh copy the caller may change)."""
    return yaml.safe_load(_openapi_text())


def _resolve(node: Any, doc: dict[str, Any]) -> Any:
    """Inline every local ``$ref`` (the documents have no cycles)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = doc
            for part in ref[2:].split("/"):
                target = target[part]
            merged = {**_resolve(target, doc), **{k: v for k, v in node.items() if k != "$ref"}}
            return merged
        return {k: _resolve(v, doc) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, doc) for v in node]
    return node


def _document(title: str, description: str, path: str, method: str,
              operation: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.0.0",
        "info": {"title": title, "version": "1.0.0", "description": description},
        "paths": {path: {method: operation}},
    }


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"200": {"description": description,
                    "content": {"application/json": {"schema": schema}}}}


def action_group_schemas() -> dict[str, dict[str, Any]]:
    """The three action-group schemas, keyed by action-group name.

    Each value is a complete OpenAPI 3.0 document (a dict; ``json.dumps`` it
    for ``apiSchema.payload``). Parameter names are the contract of
    docs/contracts.md §3 (camelCase, as the Lambdas read them).
    """
    doc = load_openapi()
    comp = _resolve(doc["components"], doc)
    params, schemas = comp["parameters"], comp["schemas"]

    def query(name: str, src: dict[str, Any], extra: str = "") -> dict[str, Any]:
        schema = copy.deepcopy(src["schema"])
        schema.pop("example", None)
        return {"name": name, "in": "query", "required": False,
                "description": (src["description"] + extra).strip(), "schema": schema}

    def prop(src: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in copy.deepcopy(src).items() if k != "example"}

    search = _document(
        "searchSlots", "Find open appointment times at the caller's clinic.",
        "/searchSlots", "get", {
            "operationId": "searchSlots",
            "summary": "Search open appointment slots",
            "description": (
                "Find the earliest open appointment times at this clinic, optionally for one "
                "doctor, one date and one part of the day. Call it before offering any time; "
                "offer only the returned slots and remember their slotId for "
                "confirmAppointment. The clinic is known from the session: never pass one."),
            "parameters": [
                query("doctor", params["Doctor"]),
                query("date", params["Date"],
                      " Resolve words like 'tomorrow' or 'next Tuesday' to a date first."),
                query("partOfDay", params["PartOfDay"]),
            ],
            "responses": _json_response(
                "Open slots phrased for speech, or why none could be found.",
                schemas["ActionSearchSlotsResult"]),
        })

    booking = schemas["BookingRequest"]["properties"]
    confirm = _document(
        "confirmAppointment", "Book an appointment in a slot found by searchSlots.",
        "/confirmAppointment", "post", {
            "operationId": "confirmAppointment",
            "summary": "Book an open slot for the caller",
            "description": (
                "Book the slot the caller chose, after they confirmed the time and gave the "
                "patient's name. Returns a confirmation code to read back character by "
                "character. If the slot was taken meanwhile, search again and offer others."),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["slotId", "patientName"],
                    "properties": {
                        "slotId": prop(booking["slot_id"]),
                        "patientName": prop(booking["patient_name"]),
                        "email": prop(booking["email"]),
                        "phone": prop(booking["phone"]),
                    },
                }}},
            },
            "responses": _json_response(
                "The booking with its confirmation code, or why it failed.",
                schemas["ActionConfirmResult"]),
        })

    handoff = _document(
        "handoffToHuman", "Transfer the caller to the clinic's staff.",
        "/handoffToHuman", "post", {
            "operationId": "handoffToHuman",
            "summary": "Transfer the call to a person at the clinic",
            "description": (
                "Transfer the caller to the clinic's staff when they ask for a person, when "
                "the request is outside booking (billing, prescriptions, results), or when "
                "you cannot help. Say the returned message, then the call is transferred."),
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"reason": {
                        "type": "string", "maxLength": 200,
                        "description": "Why the caller needs a person, in a few words."}},
                }}},
            },
            "responses": _json_response(
                "The transfer signal for the call engine.", schemas["ActionHandoffResult"]),
        })
    return {"searchSlots": search, "confirmAppointment": confirm, "handoffToHuman": handoff}


def main() -> None:  # pragma: no cover - convenience for operators
    """Print the schemas as JSON (``python -m esl_app.http.actiongroups``)."""
    print(json.dumps(action_group_schemas(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
