"""A worker's event-loop lag gauge (esl_app/runtime/workers.py)."""

from __future__ import annotations

import gevent

from esl_app.runtime import workers


def test_hub_lag_is_observed_and_shows_a_blocked_hub(monkeypatch):
    import time

    from esl_app.http.metrics import HUB_LAG

    def count_and_sum():
        samples = {s.name: s.value for m in HUB_LAG.collect() for s in m.samples
                   if s.name.endswith(("_count", "_sum"))}
        return samples["ivr_hub_lag_seconds_count"], samples["ivr_hub_lag_seconds_sum"]

    n0, s0 = count_and_sum()
    g = gevent.spawn(workers._watch_hub_lag)
    gevent.sleep(0.1)
    t = time.monotonic()
    while time.monotonic() - t < 0.1:  # the hub held for 100 ms, as a long collection would
        pass
    gevent.sleep(0.05)
    g.kill()
    n1, s1 = count_and_sum()
    assert n1 - n0 >= 4
    assert s1 - s0 >= 0.07  # the timer due during the 100 ms ran that much late


def test_watch_hub_lag_reports_each_tick_to_its_callback():
    """The one sampler both the workers and the load generator's emulators run."""
    import time

    from esl_app.support.bridge import watch_hub_lag

    lags: list[float] = []
    g = gevent.spawn(watch_hub_lag, lags.append, 0.01)
    gevent.sleep(0.05)
    t = time.monotonic()
    while time.monotonic() - t < 0.05:  # the hub held for 50 ms
        pass
    gevent.sleep(0.02)
    g.kill()
    assert len(lags) >= 4 and min(lags) >= 0.0
    assert max(lags) >= 0.035


def test_a_worker_makes_every_tenants_recogniser_before_its_first_call(tmp_path):
    """The first audio call must not import its recogniser on the hub (~160 ms for the
    local one on a slow machine, with every other call of the worker standing still)."""
    from fakes.telephony import TENANTS_YAML

    from esl_app.config.tenants import parse_tenants
    from esl_app.runtime.wiring import start_media_for_calls

    made: list[str] = []

    def stt_for(tenant):
        made.append(tenant.id)
        return object()

    tenants = list(parse_tenants(TENANTS_YAML))

    class Source:
        def current(self):
            return tenants

    class Services:
        def agent_for(self, tenant):
            return None

        def tts_for(self, tenant, name):
            return None

    media, sources = start_media_for_calls(stt_for=stt_for)
    try:
        workers._warm(Services(), Source(), sources)
    finally:
        media.stop()
    assert made == [t.id for t in tenants] and made
