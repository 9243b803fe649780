"""tenants.yaml: loading and validation into frozen dataclasses.

Every clinic (tenant) is configured here; the file is validated once, as a
whole, so that a typo is reported with the tenant and the key that hold it
instead of surfacing mid-call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

__all__ = [
    "BargeInConfig",
    "BedrockConfig",
    "ConfigError",
    "Doctor",
    "Tenant",
    "TenantSet",
    "WEEKDAYS",
    "load_tenants",
    "normalize_did",
    "parse_tenants",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DID = re.compile(r"^\+?[0-9]{3,15}$")
_RANGE = re.compile(r"^([0-2][0-9]):([0-5][0-9])-([0-2][0-9]):([0-5][0-9])$")


class ConfigError(ValueError):
    """A configuration file is invalid; the message names where and why."""


@dataclass(frozen=True)
class Doctor:
    """A bookable practitioner of one clinic."""

    id: str
    name: str
    specialty: str = ""


@dataclass(frozen=True)
class BedrockConfig:
    """Where a tenant's Bedrock Agent lives (only when ``agent: bedrock``)."""

    agent_id: str
    alias_id: str
    region: str = "us-east-1"


@dataclass(frozen=True)
class BargeInConfig:
    """Voice-activity tuning: how eager the bot is to stop talking."""

    vad_mode: int = 2
    min_speech_ms: int = 120
    end_silence_ms: int = 600


@dataclass(frozen=True)
class Tenant:
    """One clinic, as validated from tenants.yaml."""

    id: str
    name: str
    dids: tuple[str, ...]
    timezone: str
    language: str = "en-US"
    voice: str = "Joanna"
    greeting: str = ""
    hours: Mapping[str, tuple[tuple[time, time], ...]] = field(default_factory=dict)
    slot_minutes: int = 30
    handoff: str = ""
    agent: str = "local"
    bedrock: BedrockConfig | None = None
    doctors: tuple[Doctor, ...] = ()
    address: str = ""
    stt: str = "local"
    tts: str = "local"
    sample_rate: int = 8000
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)
    no_input_seconds: float = 6.0
    no_input_action: str = "transfer"
    max_call_seconds: int = 900
    emergency_number: str = "911"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def doctor(self, doctor_id: str) -> Doctor | None:
        """The doctor with this id, or None."""
        return next((d for d in self.doctors if d.id == doctor_id), None)

    def to_dict(self) -> dict[str, Any]:
        """The tenant in tenants.yaml form (used by ``ivr tenants export``)."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "dids": list(self.dids),
            "timezone": self.timezone,
            "language": self.language,
            "voice": self.voice,
            "greeting": self.greeting,
            "hours": _hours_to_yaml(self.hours),
            "slot_minutes": self.slot_minutes,
            "handoff": self.handoff,
            "agent": self.agent,
        }
        if self.bedrock:
            out["bedrock"] = {
                "agent_id": self.bedrock.agent_id,
                "alias_id": self.bedrock.alias_id,
                "region": self.bedrock.region,
            }
        out["doctors"] = [
            {k: v for k, v in (("id", d.id), ("name", d.name), ("specialty", d.specialty)) if v}
            for d in self.doctors
        ]
        defaults = Tenant(id="x", name="x", dids=(), timezone="UTC")
        for key in ("address", "stt", "tts", "sample_rate", "no_input_seconds",
                    "no_input_action", "max_call_seconds", "emergency_number"):
            if getattr(self, key) != getattr(defaults, key):
                out[key] = getattr(self, key)
        if self.barge_in != defaults.barge_in:
            out["barge_in"] = {
                "vad_mode": self.barge_in.vad_mode,
                "min_speech_ms": self.barge_in.min_speech_ms,
                "end_silence_ms": self.barge_in.end_silence_ms,
            }
        return out


@dataclass(frozen=True)
class TenantSet:
    """All tenants, with the DID index used to route calls."""

    tenants: tuple[Tenant, ...]
    source: str = ""

    def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id, or None."""
        return next((t for t in self.tenants if t.id == tenant_id), None)

    def by_did(self, number: str | None) -> Tenant | None:
        """The tenant owning a dialled number, whatever its form (+1…, 1…, local)."""
        if not number:
            return None
        wanted = set(did_forms(number))
        for tenant in self.tenants:
            for did in tenant.dids:
                if wanted & set(did_forms(did)):
                    return tenant
        return None

    def __iter__(self):
        return iter(self.tenants)

    def __len__(self) -> int:
        return len(self.tenants)


def normalize_did(number: str) -> str:
    """Strip SIP/URI decoration and punctuation: ``sip:+1 (555) 010-1001@x`` → ``+15550101001``."""
    n = number.strip()
    if n.lower().startswith(("sip:", "sips:", "tel:")):
        n = n.split(":", 1)[1]
    n = n.split("@", 1)[0].split(";", 1)[0]
    plus = n.startswith("+")
    digits = re.sub(r"[^0-9]", "", n)
    return ("+" if plus else "") + digits


def did_forms(number: str) -> tuple[str, ...]:
    """Equivalent forms of a North-American-style number: +1NXX…, 1NXX…, NXX….

    Short extensions (e.g. ``1001``) only match themselves.
    """
    n = normalize_did(number)
    digits = n.lstrip("+")
    forms = {n, digits}
    if len(digits) == 11 and digits.startswith("1"):
        forms |= {digits[1:], "+" + digits}
    elif len(digits) == 10:
        forms |= {"1" + digits, "+1" + digits}
    elif n.startswith("+"):
        forms.add(digits)
    return tuple(sorted(forms))


def load_tenants(path: str | Path) -> TenantSet:
    """Read and validate a tenants.yaml file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    return parse_tenants(text, source=str(p))


def parse_tenants(text: str, source: str = "tenants.yaml") -> TenantSet:
    """Parse and validate tenants.yaml text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}:{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict) or set(data) != {"tenants"}:
        raise ConfigError(f"{source}: the top level must be a mapping with the one key 'tenants'")
    items = data["tenants"]
    if not isinstance(items, list):
        raise ConfigError(f"{source}: 'tenants' must be a list")
    tenants: list[Tenant] = []
    seen_ids: set[str] = set()
    did_owner: dict[str, str] = {}
    for index, item in enumerate(items):
        label = f"tenant #{index + 1}"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            label = f"tenant '{item['id']}'"
        tenant = _parse_tenant(item, f"{source}: {label}")
        if tenant.id in seen_ids:
            raise ConfigError(f"{source}: {label}: duplicate tenant id")
        seen_ids.add(tenant.id)
        for did in tenant.dids:
            for form in did_forms(did):
                owner = did_owner.get(form)
                if owner is not None:
                    raise ConfigError(
                        f"{source}: {label}: key 'dids': DID {did} is already used by "
                        f"tenant '{owner}'" if owner != tenant.id else
                        f"{source}: {label}: key 'dids': DID {did} is listed twice"
                    )
            for form in did_forms(did):
                did_owner[form] = tenant.id
        tenants.append(tenant)
    return TenantSet(tuple(tenants), source)


_KEYS = {
    "id", "name", "dids", "timezone", "language", "voice", "greeting", "hours",
    "slot_minutes", "handoff", "agent", "bedrock", "doctors", "address", "stt", "tts",
    "sample_rate", "barge_in", "no_input_seconds", "no_input_action", "max_call_seconds",
    "emergency_number",
}
_REQUIRED = ("id", "name", "dids", "timezone", "hours", "doctors")


def _parse_tenant(item: Any, where: str) -> Tenant:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: must be a mapping")
    for key in item:
        if key not in _KEYS:
            raise ConfigError(f"{where}: unknown key '{key}'")
    for key in _REQUIRED:
        if key not in item or item[key] in (None, "", [], {}):
            raise ConfigError(f"{where}: key '{key}' is required")

    def s(key: str, default: str = "") -> str:
        value = item.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: key '{key}' must be a string")
        return value.strip()

    def num(key: str, default: float, lo: float, hi: float, kind: type = int) -> Any:
        value = item.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: key '{key}' must be a number")
        if not lo <= value <= hi:
            raise ConfigError(f"{where}: key '{key}' must be between {lo} and {hi}")
        if kind is int and value != int(value):
            raise ConfigError(f"{where}: key '{key}' must be a whole number")
        return kind(value)

    tid = s("id")
    if not _SLUG.match(tid):
        raise ConfigError(f"{where}: key 'id': '{tid}' is not a slug (a-z, 0-9, '-', '_')")
    dids_raw = item["dids"]
    if not isinstance(dids_raw, list):
        raise ConfigError(f"{where}: key 'dids' must be a list")
    dids: list[str] = []
    for did in dids_raw:
        if isinstance(did, int) and not isinstance(did, bool):
            did = str(did)
        if not isinstance(did, str) or not _DID.match(did.strip()):
            raise ConfigError(f"{where}: key 'dids': '{did}' is not a phone number or extension")
        dids.append(did.strip())
    tz = s("timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: key 'timezone': unknown time zone '{tz}'") from None
    agent = s("agent", "local")
    if agent not in ("local", "bedrock"):
        raise ConfigError(f"{where}: key 'agent' must be 'local' or 'bedrock'")
    bedrock = None
    if "bedrock" in item and item["bedrock"] is not None:
        b = item["bedrock"]
        if not isinstance(b, dict) or set(b) - {"agent_id", "alias_id", "region"}:
            raise ConfigError(
                f"{where}: key 'bedrock' must be a mapping of agent_id, alias_id, region")
        if not all(isinstance(b.get(k), str) and b.get(k) for k in ("agent_id", "alias_id")):
            raise ConfigError(f"{where}: key 'bedrock' needs agent_id and alias_id")
        bedrock = BedrockConfig(b["agent_id"], b["alias_id"], str(b.get("region", "us-east-1")))
    if agent == "bedrock" and bedrock is None:
        raise ConfigError(f"{where}: key 'bedrock' is required when agent is 'bedrock'")
    doctors = _parse_doctors(item["doctors"], where)
    stt = s("stt", "local")
    if stt not in ("local", "transcribe", "freeswitch"):
        raise ConfigError(f"{where}: key 'stt' must be local, transcribe or freeswitch")
    tts = s("tts", "local")
    if tts not in ("local", "polly", "freeswitch"):
        raise ConfigError(f"{where}: key 'tts' must be local, polly or freeswitch")
    rate = num("sample_rate", 8000, 8000, 16000)
    if rate not in (8000, 16000):
        raise ConfigError(f"{where}: key 'sample_rate' must be 8000 or 16000")
    action = s("no_input_action", "transfer")
    if action not in ("transfer", "goodbye"):
        raise ConfigError(f"{where}: key 'no_input_action' must be 'transfer' or 'goodbye'")
    language = s("language", "en-US")
    if not re.match(r"^[a-z]{2}-[A-Z]{2}$", language):
        raise ConfigError(f"{where}: key 'language' must look like en-US")
    return Tenant(
        id=tid,
        name=s("name"),
        dids=tuple(dids),
        timezone=tz,
        language=language,
        voice=s("voice", "Joanna") or "Joanna",
        greeting=s("greeting", "") or f"Thank you for calling {s('name')}.",
        hours=_parse_hours(item["hours"], where),
        slot_minutes=num("slot_minutes", 30, 5, 240),
        handoff=s("handoff", ""),
        agent=agent,
        bedrock=bedrock,
        doctors=doctors,
        address=s("address", ""),
        stt=stt,
        tts=tts,
        sample_rate=rate,
        barge_in=_parse_barge_in(item.get("barge_in"), where),
        no_input_seconds=num("no_input_seconds", 6.0, 1, 60, float),
        no_input_action=action,
        max_call_seconds=num("max_call_seconds", 900, 30, 7200),
        emergency_number=s("emergency_number", "911") or "911",
    )


def _parse_doctors(raw: Any, where: str) -> tuple[Doctor, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: key 'doctors' must be a list")
    out: list[Doctor] = []
    for d in raw:
        if not isinstance(d, dict) or set(d) - {"id", "name", "specialty"}:
            raise ConfigError(f"{where}: key 'doctors': each doctor is a mapping of id, name, "
                              "specialty")
        did, name = d.get("id"), d.get("name")
        if not isinstance(did, str) or not _SLUG.match(did):
            raise ConfigError(f"{where}: key 'doctors': id '{did}' is not a slug")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: key 'doctors': doctor '{did}' needs a name")
        if any(o.id == did for o in out):
            raise ConfigError(f"{where}: key 'doctors': duplicate doctor id '{did}'")
        out.append(Doctor(did, name.strip(), str(d.get("specialty") or "").strip()))
    return tuple(out)


def _parse_barge_in(raw: Any, where: str) -> BargeInConfig:
    if raw is None:
        return BargeInConfig()
    if not isinstance(raw, dict) or set(raw) - {"vad_mode", "min_speech_ms", "end_silence_ms"}:
        raise ConfigError(
            f"{where}: key 'barge_in' takes vad_mode, min_speech_ms, end_silence_ms")
    b = BargeInConfig(**raw)
    if b.vad_mode not in (0, 1, 2, 3):
        raise ConfigError(f"{where}: key 'barge_in.vad_mode' must be 0..3")
    if not (20 <= b.min_speech_ms <= 2000 and 100 <= b.end_silence_ms <= 5000):
        raise ConfigError(f"{where}: key 'barge_in': min_speech_ms 20..2000, "
                          "end_silence_ms 100..5000")
    return b


def _expand_days(spec: str) -> list[str]:
    days: list[str] = []
    for part in spec.lower().replace(" ", "").split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a not in WEEKDAYS or b not in WEEKDAYS:
                raise ValueError(part)
            i, j = WEEKDAYS.index(a), WEEKDAYS.index(b)
            if j < i:
                raise ValueError(part)
            days.extend(WEEKDAYS[i:j + 1])
        elif part in WEEKDAYS:
            days.append(part)
        else:
            raise ValueError(part)
    return days


def _parse_hours(raw: Any, where: str) -> dict[str, tuple[tuple[time, time], ...]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: key 'hours' must be a mapping like mon-fri: \"08:00-17:00\"")
    out: dict[str, list[tuple[time, time]]] = {}
    for spec, ranges in raw.items():
        try:
            days = _expand_days(str(spec))
        except ValueError:
            raise ConfigError(f"{where}: key 'hours': '{spec}' is not a day or day range "
                              "(mon..sun)") from None
        values: Iterable[Any] = ranges if isinstance(ranges, list) else [ranges]
        for value in values:
            m = _RANGE.match(str(value).strip())
            if not m:
                raise ConfigError(f"{where}: key 'hours.{spec}': '{value}' is not HH:MM-HH:MM")
            h1, m1, h2, m2 = (int(g) for g in m.groups())
            if h1 > 23 or h2 > 24 or (h2 == 24 and m2):
                raise ConfigError(f"{where}: key 'hours.{spec}': '{value}' is not a valid time")
            start = time(h1, m1)
            end = time(23, 59) if h2 == 24 else time(h2, m2)
            if end <= start:
                raise ConfigError(f"{where}: key 'hours.{spec}': '{value}' ends before it starts")
            for day in days:
                for a, b in out.get(day, []):
                    if start < b and a < end:
                        raise ConfigError(f"{where}: key 'hours.{spec}': '{value}' overlaps "
                                          f"{a:%H:%M}-{b:%H:%M} on {day}")
                out.setdefault(day, []).append((start, end))
    return {d: tuple(sorted(out[d])) for d in WEEKDAYS if d in out}


def _hours_to_yaml(hours: Mapping[str, tuple[tuple[time, time], ...]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for day in WEEKDAYS:
        if day in hours:
            ranges = [f"{a:%H:%M}-{b:%H:%M}" for a, b in hours[day]]
            out[day] = ranges[0] if len(ranges) == 1 else ranges
    return out
