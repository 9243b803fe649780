"""Provider names → notifiers, per tenant and channel; SDKs imported only when used.

Names are the tenants.yaml values: ``notifications.sms: outbox | sns`` and
``notifications.email: outbox | ses | smtp``. ``outbox`` has no notifier (its messages
are ``kept``). Notifiers are cached per configuration, so a boto3 client is built once
per process and region, not per message (building one costs tens of milliseconds).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable
from typing import Any

from esl_app.config.tenants import Tenant
from esl_app.notify.base import Notifier
from esl_app.notify.outbox import config_of
from esl_app.providers.registry import ProviderUnavailable, aws_region

__all__ = ["NOTIFIERS", "clear_cache", "notifier_for", "warm_notifiers"]

# name -> ("module", "attribute", extra or None)
NOTIFIERS: dict[str, tuple[str, str, str | None]] = {
    "sns": ("esl_app.notify.sns", "SnsNotifier", "aws"),
    "ses": ("esl_app.notify.ses", "SesNotifier", "aws"),
    "smtp": ("esl_app.notify.smtp", "SmtpNotifier", None),
}
log = logging.getLogger(__name__)
_AWS_MODULES = ("boto3", "botocore")
_cache: dict[tuple[Any, ...], Notifier] = {}
_lock = threading.Lock()


def _factory(name: str) -> Any:
    try:
        module_name, attr, extra = NOTIFIERS[name]
    except KeyError:
        raise ProviderUnavailable(f"unknown notification provider '{name}' "
                                  f"(known: {', '.join(sorted(NOTIFIERS))})") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra and (exc.name or "").split(".")[0] in _AWS_MODULES:
            raise ProviderUnavailable(f"the notification provider '{name}' needs the "
                                      f"'{extra}' extra: pip install ivr[{extra}]") from exc
        raise
    return getattr(module, attr)


def notifier_for(tenant: Tenant, channel: str) -> Notifier | None:
    """The tenant's notifier for ``sms`` or ``email``; None when it keeps messages local."""
    config = config_of(tenant)
    name = config.provider(channel)
    if name == "outbox":
        return None
    key = (name, config.region, config.from_email, config.smtp)
    with _lock:
        found = _cache.get(key)
        if found is None:
            factory = _factory(name)
            if name == "sns":
                found = factory(aws_region(config.region or None))
            elif name == "ses":
                found = factory(aws_region(config.region or None), from_email=config.from_email)
            else:
                if config.smtp is None:
                    raise ProviderUnavailable(f"tenant '{tenant.id}' has no notifications.smtp")
                found = factory(config.smtp, from_email=config.from_email)
            _cache[key] = found
    return found


def clear_cache() -> None:
    """Forget built notifiers (tests; a changed environment)."""
    with _lock:
        _cache.clear()


def warm_notifiers(tenants: Iterable[Tenant]) -> int:
    """Build every tenant's notifiers (and SDK clients) now; returns how many.

    Why: importing boto3 and building a client costs a few hundred milliseconds of CPU
    the first time; ``ivr serve`` pays it before accepting calls rather than stalling
    every call of the worker at the first confirmation. A provider that cannot be built
    is logged and left to the sender, which retries it.
    """
    built = 0
    for tenant in tenants:
        for channel in ("sms", "email"):
            try:
                notifier = notifier_for(tenant, channel)
                if notifier is not None and hasattr(notifier, "_get_client"):
                    notifier._get_client()
                built += notifier is not None
            except Exception as exc:  # noqa: BLE001 - delivery retries report it per message
                log.warning("tenant %s: %s notifier unavailable: %s", tenant.id, channel, exc)
    return built
