"""One Lambda for a whole action group: dispatch on ``apiPath`` or ``function``.

Bedrock allows one Lambda per action group; when the three actions share one
group (instead of one group each), deploy this handler and it runs the right
action. Unknown actions get a well-formed refusal, never an exception.
"""

from __future__ import annotations

from typing import Any

try:  # deployed: the modules sit side by side at the root of the package
    from . import confirm_appointment, handoff_human, search_slots
    from .common import ActionError, run_action
except ImportError:  # pragma: no cover - the Lambda runtime imports us as a top-level module
    import confirm_appointment  # type: ignore[no-redef]
    import handoff_human  # type: ignore[no-redef]
    import search_slots  # type: ignore[no-redef]
    from common import ActionError, run_action  # type: ignore[no-redef]

__all__ = ["ACTIONS", "handler"]

ACTIONS = {
    "searchSlots": search_slots.handler,
    "confirmAppointment": confirm_appointment.handler,
    "handoffToHuman": handoff_human.handler,
}


def _unknown(call: Any) -> tuple[dict[str, Any], int]:
    raise ActionError("unknown_action", "I'm sorry, I can't do that here.", status=404,
                      state="REPROMPT")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry point serving every action of the group."""
    name = ""
    if isinstance(event, dict):
        raw = event.get("function") or event.get("apiPath") or ""
        name = raw.strip("/") if isinstance(raw, str) else ""
    target = ACTIONS.get(name)
    if target is None:
        return run_action(event, context, name or "unknown", _unknown)
    return target(event, context)
