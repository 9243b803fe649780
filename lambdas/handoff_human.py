"""handoffToHuman: the signal to transfer the caller to the clinic's human line.

The target is read from the API (``GET /v1/tenants/{tenant}``, the tenant's
``handoff`` from tenants.yaml) so it is configured in one place. The result
body — ``{"action": "transfer", "to": …, "reason": …}`` — is what the call
engine acts on; it is also copied to the session attributes ``handoffTo`` and
``handoffReason``. If the API cannot be reached the signal is still given with
``to: null``: the call engine then uses the tenant's configured line, because
a person is the safe way out whenever the bot cannot help.
"""

from __future__ import annotations

import logging
from typing import Any

try:  # deployed: the modules sit side by side at the root of the package
    from .common import ActionCall, ActionError, api_request, log, run_action
except ImportError:  # pragma: no cover - the Lambda runtime imports us as a top-level module
    from common import ActionCall, ActionError, api_request, log, run_action  # type: ignore

__all__ = ["handler", "handoff"]

MESSAGE = "Of course. Please hold while I transfer you to a member of our staff."


def handoff(call: ActionCall) -> tuple[dict[str, Any], int]:
    """Look up the tenant's human line and return the transfer signal."""
    reason = " ".join(call.params.get("reason", "").split())[:200] or None
    target: str | None = None
    try:
        info = api_request(call.tenant_id, "GET", "", retry=True)
        if info.status == 200 and isinstance(info.data, dict):
            target = info.data.get("handoff") or None
            if target is None:
                raise ActionError(
                    "no_handoff",
                    "I'm sorry, there is no one available to take the call right now. "
                    "Please call back during opening hours.", status=404, state=None)
        else:
            log(logging.WARNING, "handoff_lookup_failed", tenant=call.tenant_id,
                status=info.status)
    except ActionError as exc:
        if exc.code != "unavailable":
            raise
        log(logging.WARNING, "handoff_lookup_unavailable", tenant=call.tenant_id)
    call.session_attributes["handoffTo"] = target or ""
    call.session_attributes["handoffReason"] = reason or ""
    return {"ok": True, "action": "transfer", "to": target, "reason": reason,
            "message": MESSAGE}, 200


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry point for the handoffToHuman action."""
    return run_action(event, context, "handoffToHuman", handoff)
