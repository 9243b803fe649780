"""The ``reminders`` key of a tenant: who is called before an appointment, when and how.

```yaml
reminders:
  enabled: true
  hours_before: [24]              # one reminder per entry, each at most once
  window: "09:00-19:00"           # clinic time: calls are placed only inside it
  days: mon-sat                   # days calls are allowed (default: every day)
  max_attempts: 3                 # per reminder: busy / no answer are retried
  retry_minutes: 60
  caller_id: "+15550101001"       # the number the patient sees
  dial: "sofia/gateway/clinic/{number}"   # FreeSWITCH dial string; {number} = patient
  ring_seconds: 30                # how long the patient's phone rings
  amd: {initial_silence_ms: 2500, …}      # answering-machine detection tuning (optional)
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time
from typing import Any

__all__ = ["ReminderPolicy", "parse_reminders", "reminders_to_yaml"]

_RANGE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")
_KEYS = {"enabled", "hours_before", "window", "days", "max_attempts", "retry_minutes",
         "caller_id", "dial", "ring_seconds", "amd"}


@dataclass(frozen=True)
class ReminderPolicy:
    """A clinic's reminder calls (validated; see the module docstring)."""

    enabled: bool = False
    hours_before: tuple[int, ...] = (24,)
    window: tuple[time, time] = (time(9, 0), time(19, 0))
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    max_attempts: int = 3
    retry_minutes: int = 60
    caller_id: str = ""
    dial: str = ""
    ring_seconds: int = 30
    amd: dict[str, Any] = field(default_factory=dict)

    def dial_string(self, number: str) -> str:
        """The FreeSWITCH endpoint for ``number`` (digits and a leading + only)."""
        clean = re.sub(r"[^0-9+]", "", number)
        return self.dial.replace("{number}", clean)


def parse_reminders(raw: Any, where: str) -> ReminderPolicy | None:
    """Validate the ``reminders`` mapping of a tenant; None when absent."""
    from esl_app.config.tenants import (
        MAX_SETTING_CHARS,
        ConfigError,
        _expand_days,
        _int_in,
        _q,
        _text,
    )

    if raw is None:
        return None
    w = f"{where}: reminders"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: key 'reminders' must be a mapping")
    for key in raw:
        if key not in _KEYS:
            raise ConfigError(f"{where}: key 'reminders.{_q(key)[1:-1]}' is unknown")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{w}: key 'enabled' must be true or false")
    hours = raw.get("hours_before", [24])
    if isinstance(hours, int) and not isinstance(hours, bool):
        hours = [hours]
    if (not isinstance(hours, list) or not hours or len(hours) > 5
            or any(isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= 24 * 14
                   for h in hours)):
        raise ConfigError(f"{w}: key 'hours_before' must be a list of 1 to 5 whole hours "
                          "from 1 to 336")
    window_raw = raw.get("window", "09:00-19:00")
    m = _RANGE.match(window_raw.strip()) if isinstance(window_raw, str) else None
    if not m:
        raise ConfigError(f"{w}: key 'window': {_q(window_raw)} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 or (h2, m2) <= (h1, m1):
        raise ConfigError(f"{w}: key 'window': {_q(window_raw)} is not a range within a day")
    days_raw = raw.get("days", "mon-sun")
    try:
        if not isinstance(days_raw, str) or len(days_raw) > 100:
            raise ValueError(days_raw)
        days = tuple(dict.fromkeys(_expand_days(days_raw)))
    except ValueError:
        raise ConfigError(f"{w}: key 'days': {_q(days_raw)} is not a day or day range "
                          "(mon..sun)") from None
    dial = _text(raw.get("dial", ""), f"{w}: key 'dial'", MAX_SETTING_CHARS)
    if enabled and "{number}" not in dial:
        raise ConfigError(f"{w}: key 'dial' must hold {{number}}, e.g. "
                          "sofia/gateway/clinic/{number}")
    if re.search(r"[\s{}]", dial.replace("{number}", "")):
        raise ConfigError(f"{w}: key 'dial' must be one FreeSWITCH endpoint without spaces "
                          "or channel variables")
    caller_id = _text(raw.get("caller_id", ""), f"{w}: key 'caller_id'", 32)
    if caller_id and not re.fullmatch(r"\+?[0-9]{3,15}", caller_id):
        raise ConfigError(f"{w}: key 'caller_id' must be a phone number")
    amd = raw.get("amd", {})
    if not isinstance(amd, dict) or len(amd) > 20:
        raise ConfigError(f"{w}: key 'amd' must be a mapping of detector settings")
    if amd:
        from esl_app.media.amd import AmdSettings

        try:
            AmdSettings.from_dict(amd)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{w}: {str(exc)[:200]}") from None
    return ReminderPolicy(
        enabled=enabled,
        hours_before=tuple(sorted(set(hours), reverse=True)),
        window=(time(h1, m1), time(h2, m2)),
        days=days,
        max_attempts=_int_in(raw, "max_attempts", 3, 1, 10, w),
        retry_minutes=_int_in(raw, "retry_minutes", 60, 5, 24 * 60, w),
        caller_id=caller_id,
        dial=dial,
        ring_seconds=_int_in(raw, "ring_seconds", 30, 10, 120, w),
        amd=dict(amd),
    )


def reminders_to_yaml(policy: ReminderPolicy) -> dict[str, Any]:
    """The policy in tenants.yaml form (``ivr tenants export``)."""
    from esl_app.config.tenants import WEEKDAYS

    days = list(policy.days)
    out: dict[str, Any] = {
        "enabled": policy.enabled,
        "hours_before": list(policy.hours_before),
        "window": f"{policy.window[0]:%H:%M}-{policy.window[1]:%H:%M}",
        "days": ",".join(d for d in WEEKDAYS if d in days),
        "max_attempts": policy.max_attempts,
        "retry_minutes": policy.retry_minutes,
        "caller_id": policy.caller_id,
        "dial": policy.dial,
        "ring_seconds": policy.ring_seconds,
    }
    if policy.amd:
        out["amd"] = dict(policy.amd)
    return out
