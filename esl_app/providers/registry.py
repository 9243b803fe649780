"""Provider names → factories: one explicit table, vendor modules imported lazily.

Why a table and not registration at import time: what exists is visible in one
place, and a process that never uses AWS never imports boto3 or awscrt. A
missing optional dependency becomes :class:`ProviderUnavailable` naming the
extra to install, instead of an ImportError deep in a call.

Names are the tenants.yaml values: ``agent: local | bedrock``,
``stt: local | transcribe | freeswitch``, ``tts: local | polly | freeswitch``.
Keyword options are passed through to the provider's constructor.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from esl_app.config.tenants import Tenant

__all__ = [
    "AGENTS",
    "STT",
    "TTS",
    "ProviderUnavailable",
    "aws_region",
    "make_agent",
    "make_stt",
    "make_tts",
]

# kind -> name -> ("module", "attribute", extra or None)
AGENTS: dict[str, tuple[str, str, str | None]] = {
    "local": ("esl_app.providers.agent.local.dialogue", "LocalAgent", None),
    "bedrock": ("esl_app.providers.agent.bedrock", "BedrockAgent", "aws"),
}
STT: dict[str, tuple[str, str, str | None]] = {
    "local": ("esl_app.providers.stt.local", "LocalStt", None),
    "transcribe": ("esl_app.providers.stt.transcribe", "TranscribeStt", "aws"),
    "freeswitch": ("esl_app.providers.stt.freeswitch", "FreeswitchStt", None),
}
TTS: dict[str, tuple[str, str, str | None]] = {
    "local": ("esl_app.providers.tts.local", "LocalTts", None),
    "polly": ("esl_app.providers.tts.polly", "PollyTts", "aws"),
    "freeswitch": ("esl_app.providers.tts.freeswitch", "FreeswitchTts", None),
}
# third-party top-level modules each extra brings
_EXTRA_MODULES = {"aws": ("boto3", "botocore", "amazon_transcribe", "awscrt")}


class ProviderUnavailable(RuntimeError):
    """Unknown provider name, or its optional dependencies are not installed."""


def aws_region(region: str | None = None) -> str:
    """Argument → ``IVR_AWS_REGION`` → ``AWS_REGION``/``AWS_DEFAULT_REGION`` → us-east-1."""
    return (region or os.environ.get("IVR_AWS_REGION") or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")


def _load(kind: str, table: dict[str, tuple[str, str, str | None]],
          name: str) -> Callable[..., Any]:
    try:
        module_name, attr, extra = table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ProviderUnavailable(f"unknown {kind} provider '{name}' (known: {known})") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if extra and missing in _EXTRA_MODULES.get(extra, ()):
            raise ProviderUnavailable(
                f"the {kind} provider '{name}' needs the '{extra}' extra: "
                f"pip install ivr[{extra}]") from exc
        raise
    return getattr(module, attr)


def make_agent(name: str, tenant: Tenant | None = None, **options: Any) -> Any:
    """An Agent: ``local`` (embedded dialogue) or ``bedrock`` (needs the tenant's bedrock ids)."""
    factory = _load("agent", AGENTS, name)
    if name == "bedrock":
        if tenant is not None and tenant.bedrock is None:
            raise ProviderUnavailable(f"tenant '{tenant.id}' has no 'bedrock' configuration")
        return factory(tenant, **options)
    return factory(**options)


def make_stt(name: str, tenant: Tenant | None = None, **options: Any) -> Any:
    """An SttProvider.

    For ``transcribe``, ``IVR_TRANSCRIBE_VOCABULARY`` may hold ``{tenant}``
    (e.g. ``ivr-{tenant}``) to pick a per-tenant custom vocabulary.
    """
    factory = _load("stt", STT, name)
    if name == "transcribe":
        vocab = options.pop("vocabulary_name", None) or os.environ.get("IVR_TRANSCRIBE_VOCABULARY")
        if vocab and tenant is not None:
            vocab = vocab.replace("{tenant}", tenant.id)
        return factory(aws_region(options.pop("region", None)), vocabulary_name=vocab,
                       **options)
    return factory(**options)


def make_tts(name: str, tenant: Tenant | None = None, **options: Any) -> Any:
    """A TtsProvider; ``polly`` takes ``region``, ``cache``/``cache_dir``, ``engine``."""
    factory = _load("tts", TTS, name)
    if name == "polly":
        return factory(aws_region(options.pop("region", None)), **options)
    return factory(**options)
