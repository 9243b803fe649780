"""Prometheus metrics of the whole process, in one dedicated registry.

Other modules import the metric objects from here and update them; ``/metrics``
renders :func:`render`. A dedicated :class:`CollectorRegistry` (not the global
default) keeps library-registered collectors and test re-imports out of our
exposition. With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR``
before the process starts: ``prometheus_client`` then keeps values in shared
files and :func:`render` aggregates every worker.

Label values must stay bounded: tenant ids, outcomes, provider names and route
templates only — never a caller number, a name or a confirmation code.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "BARGE_INS",
    "BARGE_IN_REACTION",
    "BOOKINGS",
    "CALLS_ACTIVE",
    "CALL_SETUP",
    "CALL_SETUP_OWN",
    "CALLS_TOTAL",
    "CONTENT_TYPE",
    "HTTP_REQUESTS",
    "HTTP_SECONDS",
    "GC_FULL",
    "HUB_LAG",
    "PROVIDER_ERRORS",
    "REGISTRY",
    "STT_FALLBACKS",
    "TTS_CACHE_HITS",
    "TTS_CACHE_MISSES",
    "TURN_LATENCY",
    "TURN_RESPONSE",
    "collected",
    "render",
]

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

CALLS_ACTIVE = Gauge(
    "ivr_calls_active", "Calls in progress.", ["tenant"],
    registry=REGISTRY, multiprocess_mode="livesum")
CALLS_TOTAL = Counter(
    "ivr_calls", "Finished calls by outcome (booked, handoff, caller_hangup, error, ...).",
    ["tenant", "outcome"], registry=REGISTRY)
TURN_LATENCY = Histogram(
    "ivr_turn_latency_seconds",
    "End of caller speech to the first bot audio, per conversational turn.",
    ["tenant"], registry=REGISTRY,
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0))
BARGE_INS = Counter(
    "ivr_barge_ins", "Bot playback stopped because the caller spoke.", ["tenant"],
    registry=REGISTRY)
# server-side shares of the two latencies a caller feels most, in fine buckets (load tests
# read them to tell the server's part from the network's and the switch's)
_FINE = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
         0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
CALL_SETUP = Histogram(
    "ivr_call_setup_seconds",
    "Server side of call set-up: the ESL connection accepted to the call set up (the "
    "answer written with connect, FreeSWITCH's channel data read, the tenant known).",
    registry=REGISTRY, buckets=_FINE)
CALL_SETUP_OWN = Histogram(
    "ivr_call_setup_own_seconds",
    "Our own part of call set-up: ivr_call_setup_seconds less the wait for FreeSWITCH's "
    "reply to connect (written to in hand: the hub's delay in reading it counts as wait).",
    registry=REGISTRY, buckets=_FINE)
BARGE_IN_REACTION = Histogram(
    "ivr_barge_in_reaction_seconds",
    "Server side of barge-in: our VAD detects the caller's speech to uuid_break written.",
    registry=REGISTRY, buckets=_FINE)
TURN_RESPONSE = Histogram(
    "ivr_turn_response_seconds",
    "A caller's final transcript received to the reply's first playback command written "
    "(provider latency included; with instant providers, the server's own work).",
    registry=REGISTRY, buckets=_FINE)
HUB_LAG = Histogram(
    "ivr_hub_lag_seconds",
    "How late a worker's event loop runs a timer that is due (sampled every 20 ms): what "
    "any call's set-up, barge-in or turn waits behind the rest of the worker's work.",
    registry=REGISTRY, buckets=_FINE)
HUB_STOPS = Counter(
    "ivr_hub_stops",
    "Times a worker's event loop stood still for 250 ms or more, by what held it (on_cpu, "
    "blocked, no_core, not_run; esl_app/runtime/hubwatch.py): every call of the worker waited.",
    ["kind"], registry=REGISTRY)
GC_FULL = Histogram(
    "ivr_gc_full_seconds",
    "A worker's full (generation 2) garbage collections: the hub runs nothing meanwhile.",
    registry=REGISTRY, buckets=_FINE)
BOOKINGS = Counter(
    "ivr_bookings", "Appointment changes by action (booked, cancelled, rescheduled) and channel.",
    ["tenant", "action", "channel"], registry=REGISTRY)
PROVIDER_ERRORS = Counter(
    "ivr_provider_errors", "Provider failures (kind: stt, tts, agent; provider: aws, local, ...).",
    ["kind", "provider"], registry=REGISTRY)
STT_FALLBACKS = Counter(
    "ivr_stt_fallbacks",
    "Calls whose recogniser failed mid-call (error, exception, or no result in time) and "
    "was replaced by the local one for the rest of the call (none could start: the caller "
    "was handed over); from: the failed provider.",
    ["tenant", "from"], registry=REGISTRY)
TTS_CACHE_HITS = Counter(
    "ivr_tts_cache_hits", "Synthesised prompts served from the cache.", registry=REGISTRY)
TTS_CACHE_MISSES = Counter(
    "ivr_tts_cache_misses", "Prompts that had to be synthesised.", registry=REGISTRY)
HTTP_REQUESTS = Counter(
    "ivr_http_requests", "Appointments API requests by route template and status.",
    ["route", "method", "status"], registry=REGISTRY)
HTTP_SECONDS = Histogram(
    "ivr_http_request_seconds", "Appointments API request duration by route template.",
    ["route"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))


def collected(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """``registry``, else every worker's metrics under multiprocess mode, else this one's."""
    if registry is not None:
        return registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return REGISTRY


def render(registry: CollectorRegistry | None = None) -> bytes:
    """The exposition text: this registry, or every worker's under multiprocess mode."""
    return generate_latest(collected(registry))
