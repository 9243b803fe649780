"""The one place that wires providers into calls: agent, TTS, recogniser, records.

``ivr serve``'s workers, ``ivr simulate``/``demo`` and the tests all build their
calls' services here. Factories are resolved once per (tenant, provider) and cached,
because a provider object (an AWS client, a prompt cache, the local decoder pool) is
shared by all of a tenant's calls. Vendor modules are imported lazily, at first use.

A load test's server runs with an emulated cloud latency profile: :func:`for_profile`
is the one door from here into :mod:`esl_app.sim`, and it is opened only then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from esl_app.config.tenants import Tenant, TenantSet
from esl_app.providers.agent.base import Agent, AgentReply, CallContext
from esl_app.providers.stt.base import SttProvider
from esl_app.providers.tts.base import TtsProvider
from esl_app.providers.tts.freeswitch import FreeswitchTts
from esl_app.telephony.audio import AudioSources
from esl_app.telephony.call import CallServices
from esl_app.telephony.transcript import Transcript

__all__ = ["ProviderCache", "SttCache", "build_services", "for_profile", "make_tenant_agent",
           "start_media_for_calls"]

log = logging.getLogger(__name__)


class ProviderCache:
    """Agents and TTS providers by tenant, built on first use through the registry.

    ``agent_factory(tenant)`` replaces :func:`make_tenant_agent`; tests pass one
    that calls ``make_tenant_agent(tenant, primary=...)`` so the production
    wrapping stays, around a cloud agent whose SDK client they stub.
    """

    def __init__(self, agent_factory: Callable[[Tenant], Agent] | None = None, *,
                 wrap_agent: Callable[[Agent], Agent] | None = None,
                 make_tts: Callable[[Tenant, str], TtsProvider] | None = None) -> None:
        """``wrap_agent``/``make_tts``: a latency profile's stand-ins (:func:`for_profile`)."""
        self._agent_factory = agent_factory or make_tenant_agent
        self._wrap_agent = wrap_agent
        self._make_tts = make_tts or _make_tts
        self._agents: dict[tuple[str, str], Agent] = {}
        self._tts: dict[str, TtsProvider] = {}

    def agent_for(self, tenant: Tenant) -> Agent:
        key = (tenant.id, tenant.agent)
        agent = self._agents.get(key)
        if agent is None:
            agent = self._agent_factory(tenant)
            if self._wrap_agent is not None:
                agent = self._wrap_agent(agent)
            self._agents[key] = agent
        return agent

    def tts_for(self, tenant: Tenant, name: str) -> TtsProvider:
        if name == "freeswitch":
            return FreeswitchTts()
        provider = self._tts.get(name)
        if provider is None:
            provider = self._tts[name] = self._make_tts(tenant, name)
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
    from esl_app.providers import registry

    return registry.make_tts(name, tenant)


class SttCache:
    """Recognisers by tenant: one per (provider, tenant), and one local decoder pool.

    The local recogniser is also every cloud recogniser's fallback, so a process
    holds one pool of pocketsphinx decoders whatever its tenants use.
    """

    def __init__(self) -> None:
        self._made: dict[str, SttProvider] = {}

    def stt_for(self, tenant: Tenant) -> SttProvider:
        name = tenant.stt if tenant.stt != "freeswitch" else "local"
        if name == "local":
            return self.local()
        key = f"{name}:{tenant.id}"
        if key not in self._made:
            from esl_app.providers import registry

            try:
                self._made[key] = registry.make_stt(name, tenant)
            except registry.ProviderUnavailable as exc:  # its extra is not installed
                log.error("tenant %s: stt %r unavailable (%s); using the local recogniser",
                          tenant.id, name, exc)
                self._made[key] = self.local()
        return self._made[key]

    def local(self) -> SttProvider:
        """The process's local recogniser: one decoder pool, also every fallback's."""
        if "local" not in self._made:
            from esl_app.providers import registry

            self._made["local"] = registry.make_stt("local")
        return self._made["local"]


def start_media_for_calls(host: str = "127.0.0.1", port: int = 0, *,
                          stt_for: Callable[[Tenant], SttProvider] | None = None,
                          stt: SttCache | None = None) -> tuple[Any, AudioSources]:
    """Start the media server; returns it and the ``audio_source_for`` factory for calls.

    ``stt_for`` replaces the tenant's recogniser (a test's, a latency profile's);
    the local fallback always comes from ``stt`` (a fresh :class:`SttCache` if None).
    """
    from esl_app.media import server as media_server
    from esl_app.media.server import MediaRegistry, MediaServer

    if media_server._ws_audio is media_server._ws_audio_py:
        log.warning("media: the compiled frame path (esl_app/media/_fastpath.c) was not "
                    "built, so audio frames take the Python path: about a third more CPU "
                    "per frame; reinstall with a C compiler and Python headers")
    cache = stt or SttCache()
    registry = MediaRegistry()
    media = MediaServer(host, port, registry).start()
    mhost, mport = media.address
    return media, AudioSources(registry, f"ws://{mhost}:{mport}", stt_for or cache.stt_for,
                               cache.local)


def for_profile(profile: str, seed: int | None = None, *,
                stt: SttCache | None = None
                ) -> tuple[ProviderCache, Callable[[Tenant], SttProvider] | None]:
    """The providers of a worker whose cloud calls follow a latency ``profile``.

    ``local`` (production's default) is plain wiring and never imports the offline
    kit; any other profile is a load test's server: agents, TTS and recognisers are
    wrapped by :mod:`esl_app.sim.latency` to take the cloud's time without its CPU.
    """
    if profile == "local":
        return ProviderCache(), None
    from esl_app.sim.latency import make_provider_cache, make_stt_factory

    return (make_provider_cache(profile, seed=seed),
            make_stt_factory(profile, seed=seed, base=None, stt=stt))


_pending: Any = None


def _record(transcript: Transcript) -> None:
    """Store the finished call, or keep it for a retry (the database may be down)."""
    global _pending
    from esl_app.telephony.records import PendingRecords

    if _pending is None:
        _pending = PendingRecords()
    _pending.save(transcript)


def _release_holds(call_id: str) -> None:
    from esl_app.scheduling.service import release_holds

    release_holds(call_id)


def _take_message(call: CallContext, disposition: str) -> AgentReply:
    from esl_app.providers.agent.message import start_message

    return start_message(call, disposition)


def _outbound_for(channel: Mapping[str, str]) -> Any:
    from esl_app.reminders.call import reminder_call_for

    return reminder_call_for(channel)


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
        release_holds=_release_holds,
        take_message=_take_message,
        outbound_for=_outbound_for,
        on_event=on_event,
        listen_mode=listen_mode,
        **kw,
    )
