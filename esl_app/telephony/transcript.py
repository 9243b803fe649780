"""The per-call transcript (docs/contracts.md §1): what was said, when, and how it ended.

It is built by the call controller only, so it needs no locking, and its
``to_dict()`` is the exact JSON contract shared by ``ivr simulate --json``,
the ``call_ended`` event and the stored call record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["OUTCOMES", "Transcript", "Turn", "mask_number"]

OUTCOMES = (
    "booked", "cancelled", "rescheduled", "handoff", "emergency", "message_taken",
    "caller_hangup", "rejected", "no_input", "error",
)


def mask_number(number: str | None) -> str:
    """A caller number fit for info logs: only the last two digits kept."""
    if not number:
        return "-"
    keep = 2 if len(number) > 4 else 0
    return "*" * (len(number) - keep) + number[len(number) - keep:]


@dataclass
class Turn:
    """One utterance; ``at_ms`` counts from the moment the call reached us."""

    speaker: str  # "bot" | "caller"
    text: str
    at_ms: int
    barged_in: bool = False
    dtmf: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"speaker": self.speaker, "text": self.text,
                               "at_ms": self.at_ms, "barged_in": self.barged_in}
        if self.dtmf is not None:
            out["dtmf"] = self.dtmf
        return out


_RANK = {"emergency": 3, "booked": 2, "cancelled": 2, "rescheduled": 2, "message_taken": 1}


@dataclass
class Transcript:
    """A call's record in the making."""

    call_id: str
    did: str | None = None
    caller: str | None = None
    tenant: str | None = None
    outcome: str | None = None
    confirmation: str | None = None
    appointment: dict[str, Any] | None = None
    transfer_to: str | None = None
    turns: list[Turn] = field(default_factory=list)
    emergency: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    def add(self, speaker: str, text: str, *, barged_in: bool = False,
            dtmf: str | None = None, at_ms: int | None = None) -> Turn:
        turn = Turn(speaker, text, self.elapsed_ms() if at_ms is None else at_ms,
                    barged_in, dtmf)
        self.turns.append(turn)
        return turn

    def note_outcome(self, outcome: str | None, *, confirmation: str | None = None,
                     appointment: dict[str, Any] | None = None) -> None:
        """Keep the most significant result: a booking is not undone by a later goodbye.

        Rank: emergency, then booked/cancelled/rescheduled (the latest of those),
        then message_taken, then everything else (the latest).
        """
        if outcome:
            if _RANK.get(outcome, 0) >= _RANK.get(self.outcome or "", 0):
                self.outcome = outcome
            if outcome == "emergency":
                self.emergency = True
        if confirmation:
            self.confirmation = confirmation
        if appointment:
            self.appointment = {k: appointment[k] for k in ("doctor", "start")
                                if k in appointment} or dict(appointment)

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "did": self.did,
            "tenant": self.tenant,
            "outcome": self.outcome,
            "confirmation": self.confirmation,
            "appointment": self.appointment,
            "transfer_to": self.transfer_to,
            "turns": [t.to_dict() for t in self.turns],
        }
