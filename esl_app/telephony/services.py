"""Default wiring of a call's providers: agent, TTS, listen source, records.

Factories are resolved once per (tenant, provider) and cached, because a
provider object (an AWS client, a prompt cache) is shared by all of a
tenant's calls. Vendor modules are imported lazily, at first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from esl_app.config.tenants import Tenant, TenantSet
from esl_app.providers.agent.base import Agent, CallContext
from esl_app.providers.tts.base import TtsProvider
from esl_app.telephony.call import CallServices, FreeswitchSpeak
from esl_app.telephony.transcript import Transcript

__all__ = ["ProviderCache", "build_services", "make_tenant_agent"]

log = logging.getLogger(__name__)


class ProviderCache:
    """Agents and TTS providers by tenant, built on first use through the registry.

    ``agent_factory(tenant)`` replaces :func:`make_tenant_agent`; tests pass one
    that calls ``make_tenant_agent(tenant, primary=...)`` so the production
    wrapping stays, around a cloud agent whose SDK client they stub.
    """

    def __init__(self, agent_factory: Callable[[Tenant], Agent] | None = None) -> None:
        self._agent_factory = agent_factory or make_tenant_agent
        self._agents: dict[tuple[str, str], Agent] = {}
        self._tts: dict[str, TtsProvider] = {}

    def agent_for(self, tenant: Tenant) -> Agent:
        key = (tenant.id, tenant.agent)
        agent = self._agents.get(key)
        if agent is None:
            agent = self._agents[key] = self._agent_factory(tenant)
        return agent

    def tts_for(self, tenant: Tenant, name: str) -> TtsProvider:
        if name == "freeswitch":
            return FreeswitchSpeak()
        provider = self._tts.get(name)
        if provider is None:
            provider = self._tts[name] = _make_tts(tenant, name)
        return provider


def make_tenant_agent(tenant: Tenant, *, primary: Agent | None = None,
                      **resilience: Any) -> Agent:
    """The tenant's agent, wrapped so that every agent behaves like a clinic's.

    Outermost: the emergency guard and message taking (GuardedAgent). A cloud
    agent is further wrapped in ResilientAgent: a cached filler after 1.2 s, one
    safe retry, then the local agent (same tools, same call state) takes over.

    ``primary`` replaces the registry's agent for ``tenant.agent`` (a test's
    BedrockAgent with a stubbed client); ``resilience`` are ResilientAgent
    options (e.g. timings scaled down with the emulator's ``time_scale``).
    """
    from esl_app.providers import registry
    from esl_app.providers.agent.guard import GuardedAgent
    from esl_app.providers.agent.local.dialogue import LocalAgent

    inner: Agent
    if tenant.agent == "local" and primary is None:
        inner = LocalAgent()
    else:
        if primary is None:
            try:
                primary = registry.make_agent(tenant.agent, tenant)
            except registry.ProviderUnavailable as exc:
                log.error("tenant %s: agent %r unavailable (%s); using the local agent",
                          tenant.id, tenant.agent, exc)
                return GuardedAgent(LocalAgent())
        from esl_app.providers.resilience import ResilientAgent

        inner = ResilientAgent(primary, LocalAgent(), on_filler=_play_filler, **resilience)
    return GuardedAgent(inner)


def _play_filler(call: CallContext) -> None:
    if call.signal is not None:
        call.signal("filler")


def _make_tts(tenant: Tenant, name: str) -> TtsProvider:
    try:
        from esl_app.providers import registry
    except ImportError:
        registry = None
    if registry is not None and hasattr(registry, "make_tts"):
        return registry.make_tts(name, tenant)
    if name == "local":
        from esl_app.providers.tts.local import LocalTts

        return LocalTts()
    log.warning("tts provider %r unavailable here; using FreeSWITCH speak", name)
    return FreeswitchSpeak()


_pending: Any = None


def _record(transcript: Transcript) -> None:
    """Store the finished call, or keep it for a retry (the database may be down)."""
    global _pending
    from esl_app.telephony.records import PendingRecords

    if _pending is None:
        _pending = PendingRecords()
    _pending.save(transcript)


def _record_start(transcript: Transcript) -> None:
    from esl_app.telephony.records import start_call

    start_call(transcript)


def build_services(
    tenants: Callable[[], TenantSet],
    *,
    listen_mode: str | None = None,
    audio_source_for: Callable[..., Any] | None = None,
    record: bool = True,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    providers: ProviderCache | None = None,
    **kw: Any,
) -> CallServices:
    """CallServices for ``ivr serve``/``simulate``/``demo``: registry providers, DB records."""
    cache = providers or ProviderCache()
    return CallServices(
        tenants=tenants,
        agent_for=cache.agent_for,
        tts_for=cache.tts_for,
        audio_source_for=audio_source_for,
        recorder=_record if record else None,
        record_start=_record_start if record else None,
        on_event=on_event,
        listen_mode=listen_mode,
        **kw,
    )
