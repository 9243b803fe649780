"""What one call used, and what that probably cost.

A clinic wants to know what a booked call costs (the original design estimates
about $0.05). The call engine keeps a :class:`CallUsage` per call, feeds it as
providers work, stores ``to_dict()`` with the call record, and ``ivr calls
show`` prints :func:`estimate_cost` of it.

Only cloud providers cost money here: audio sent to Transcribe, characters
Polly synthesised (cache hits are free — that is what the cache is for) and
Bedrock Agent invocations. Local providers count usage but price at zero.

Default prices (USD, us-east-1, public list prices; override them with
:meth:`Prices.from_mapping`, e.g. from the ``IVR_PRICES`` JSON):

* Transcribe streaming: $0.024 per minute, billed per second, 15 s minimum
  per stream.
* Polly: neural $16 per million characters, standard $4.
* Bedrock (Claude 3 Haiku behind the agent): $0.00025 per 1k input tokens,
  $0.00125 per 1k output tokens. Tokens are approximated from characters
  (4 characters a token) plus a per-invocation overhead, because an agent
  sends its orchestration prompt (instructions, action schemas, history) to
  the model on every invocation — that overhead dominates the agent cost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["DEFAULT_PRICES", "CallUsage", "Prices", "estimate_cost", "prices_from_env"]

PAID_STT = frozenset({"transcribe"})
PAID_TTS = frozenset({"polly"})
PAID_AGENTS = frozenset({"bedrock"})


@dataclass
class CallUsage:
    """Counters for one call (mutable; the controller greenlet owns it)."""

    stt_provider: str = ""
    stt_seconds: float = 0.0  # audio streamed to the recogniser
    stt_streams: int = 0
    tts_provider: str = ""
    tts_engine: str = "neural"
    tts_chars: int = 0  # all characters spoken
    tts_chars_cached: int = 0  # of which came from the prompt cache
    agent_provider: str = ""
    agent_invocations: int = 0  # model round trips (a tool round trip counts)
    agent_input_chars: int = 0
    agent_output_chars: int = 0

    def add_stt(self, seconds: float, *, new_stream: bool = False) -> None:
        """Audio sent to the recogniser (e.g. ``stream.audio_seconds`` at hang-up)."""
        self.stt_seconds += max(0.0, seconds)
        self.stt_streams += int(new_stream)

    def add_tts(self, text: str, *, cached: bool) -> None:
        """One synthesised sentence (``PlayInstruction.text`` and ``.cached``)."""
        self.tts_chars += len(text)
        if cached:
            self.tts_chars_cached += len(text)

    def add_agent_turn(self, input_text: str, reply_text: str, invocations: int = 1) -> None:
        """One caller turn handled by the agent."""
        self.agent_invocations += max(0, invocations)
        self.agent_input_chars += len(input_text or "")
        self.agent_output_chars += len(reply_text or "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the call record."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallUsage:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (older/newer records)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Prices:
    """A price table (USD); see the module docstring for the sources of the defaults."""

    transcribe_per_minute: float = 0.024
    transcribe_min_seconds: float = 15.0
    polly_neural_per_million_chars: float = 16.0
    polly_standard_per_million_chars: float = 4.0
    bedrock_input_per_1k_tokens: float = 0.00025
    bedrock_output_per_1k_tokens: float = 0.00125
    chars_per_token: float = 4.0
    agent_prompt_tokens_per_invocation: int = 1500
    agent_output_tokens_per_invocation: int = 100
    currency: str = "USD"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "prices") -> Prices:
        """Defaults overridden by ``data``; a bad key or value names itself."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"{where}: unknown key '{key}'")
            if key == "currency":
                values[key] = str(value)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{where}: key '{key}' must be a number >= 0")
            values[key] = value
        prices = cls(**values)
        if prices.chars_per_token <= 0:
            raise ValueError(f"{where}: key 'chars_per_token' must be > 0")
        return prices


DEFAULT_PRICES = Prices()


def prices_from_env(env: Mapping[str, str] | None = None) -> Prices:
    """``IVR_PRICES`` (a JSON object of :class:`Prices` fields) over the defaults."""
    raw = (env if env is not None else os.environ).get("IVR_PRICES")
    if not raw:
        return DEFAULT_PRICES
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"IVR_PRICES: not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("IVR_PRICES: must be a JSON object")
    return Prices.from_mapping(data, "IVR_PRICES")


def estimate_cost(usage: CallUsage | Mapping[str, Any],
                  prices: Prices = DEFAULT_PRICES) -> dict[str, Any]:
    """``{"stt", "tts", "agent", "total", "currency"}``, amounts rounded to 1/10000."""
    u = usage if isinstance(usage, CallUsage) else CallUsage.from_dict(usage)
    stt = 0.0
    if u.stt_provider in PAID_STT and u.stt_seconds > 0:
        streams = max(1, u.stt_streams)
        billed = max(u.stt_seconds, prices.transcribe_min_seconds * streams)
        stt = billed / 60.0 * prices.transcribe_per_minute
    tts = 0.0
    if u.tts_provider in PAID_TTS:
        per_million = (prices.polly_standard_per_million_chars if u.tts_engine == "standard"
                       else prices.polly_neural_per_million_chars)
        tts = max(0, u.tts_chars - u.tts_chars_cached) / 1e6 * per_million
    agent = 0.0
    if u.agent_provider in PAID_AGENTS and u.agent_invocations:
        tokens_in = (u.agent_invocations * prices.agent_prompt_tokens_per_invocation
                     + u.agent_input_chars / prices.chars_per_token)
        tokens_out = (u.agent_invocations * prices.agent_output_tokens_per_invocation
                      + u.agent_output_chars / prices.chars_per_token)
        agent = (tokens_in / 1000 * prices.bedrock_input_per_1k_tokens
                 + tokens_out / 1000 * prices.bedrock_output_per_1k_tokens)
    return {"stt": round(stt, 4), "tts": round(tts, 4), "agent": round(agent, 4),
            "total": round(stt + tts + agent, 4), "currency": prices.currency}
