"""The embedded deterministic agent: ``nlu`` (pure parsing) and ``dialogue`` (LocalAgent).

``LocalAgent`` is imported lazily so that using the pure NLU does not load
the scheduling stack.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalAgent"]


def __getattr__(name: str) -> Any:
    if name == "LocalAgent":
        from esl_app.providers.agent.local.dialogue import LocalAgent

        return LocalAgent
    raise AttributeError(name)
