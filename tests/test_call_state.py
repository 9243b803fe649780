"""Every key of a call's shared state is declared once (CallState), every stage handled."""

from __future__ import annotations

import re
from pathlib import Path

from esl_app.providers.agent.local.dialogue import _STAGE_HANDLERS
from esl_app.providers.agent.state import ASKED_KEYS, STAGES, WHEN_KEYS, CallState

PKG = Path(__file__).resolve().parent.parent / "esl_app"
# call.state / ctx.state / st (the agents' name for call.state) with a literal key
_USE = re.compile(r"\b(?:st|call\.state|self\.ctx\.state|ctx\.state|self\.call\.state)"
                  r"(?:\[|\.get\(|\.pop\(|\.setdefault\()\s*\"([a-z_]+)\"")
_STAGE_SET = re.compile(r"(?:\[\"stage\"\] = |_ask\(call, |\"resume_stage\"\] = )\"([a-z_]+)\"")
# the modules whose ``st`` is a call's state (the reminder agent's ``st`` is its own dataclass)
SHARED = ("providers", "telephony/call.py")


def _sources() -> list[Path]:
    out: list[Path] = []
    for part in SHARED:
        path = PKG / part
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def test_every_state_key_used_is_declared() -> None:
    declared = set(CallState.__annotations__)
    used = {(m.group(1), p.relative_to(PKG).as_posix()) for p in _sources()
            for m in _USE.finditer(p.read_text())}
    assert used, "the scan found no state use: the pattern went stale"
    assert sorted(u for u in used if u[0] not in declared) == []
    assert set(ASKED_KEYS) <= declared and set(WHEN_KEYS) <= declared


def test_every_stage_the_local_agent_sets_has_a_handler() -> None:
    text = "".join(p.read_text() for p in (PKG / "providers/agent/local").glob("*.py"))
    set_here = set(_STAGE_SET.findall(text))
    assert "offer_handoff" in set_here and "verify_name" in set_here  # the scan works
    assert set_here <= set(STAGES), set_here - set(STAGES)
    assert set(_STAGE_HANDLERS) == set(STAGES)
