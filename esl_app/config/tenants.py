"""tenants.yaml: loading and validation into frozen dataclasses.

Every clinic (tenant) is configured here; the file is validated once, as a
whole, so that a typo is reported with the tenant and the key that hold it
instead of surfacing mid-call.

Hostile input is bounded (issue #31): the file's size (:data:`MAX_FILE_BYTES`), YAML
aliases (refused: a "billion laughs" bomb of a few hundred bytes expands to GBs when
validated), every text setting's length (a greeting is spoken at every call) and every
value quoted in an error message (:data:`MAX_QUOTED_CHARS`: one short line).
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from esl_app.config.notifications import (
    NotificationConfig,
    notifications_to_yaml,
    parse_notifications,
)

if TYPE_CHECKING:
    from esl_app.config.reminders import ReminderPolicy

__all__ = [
    "DEFAULT_ACK_PHRASES",
    "MAX_ACK_PHRASE_CHARS",
    "MAX_ADDRESS_CHARS",
    "MAX_FILE_BYTES",
    "MAX_GREETING_CHARS",
    "MAX_LIST_ITEMS",
    "MAX_NAME_CHARS",
    "MAX_RANGES_PER_DAY",
    "MAX_QUOTED_CHARS",
    "MAX_SETTING_CHARS",
    "BargeInConfig",
    "BedrockConfig",
    "ConfigError",
    "DataPolicy",
    "Doctor",
    "Policy",
    "VisitType",
    "Tenant",
    "TenantSet",
    "WEEKDAYS",
    "load_tenants",
    "normalize_did",
    "parse_tenants",
    "tenants_from_data",
    "tenants_from_json",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DID = re.compile(r"^\+?[0-9]{3,15}$")
_RANGE = re.compile(r"^([0-2][0-9]):([0-5][0-9])-([0-2][0-9]):([0-5][0-9])$")
#: What the bot says at once when the agent is slow to start answering (``ack_phrases``).
#: Short on purpose: an answer ready while the acknowledgement plays waits for its end,
#: so "Let me check that." (about 1 s) costs the answer more than "Okay." (0.3 s).
DEFAULT_ACK_PHRASES = ("Okay.", "Sure.", "Alright.", "Got it.")

#: The largest tenants file read (bytes); a real clinic takes well under 1 KB of it.
MAX_FILE_BYTES = 1_000_000
#: The longest ``greeting`` (characters): it is spoken at every call (500 is ~30 s).
MAX_GREETING_CHARS = 500
#: The longest ``address`` (characters): read out to a caller who asks.
MAX_ADDRESS_CHARS = 300
#: The longest clinic, doctor, specialty or visit-type name (characters): spoken in replies.
MAX_NAME_CHARS = 120
#: The longest of every other text setting (voice, handoff, numbers, Bedrock ids).
MAX_SETTING_CHARS = 200
#: The longest acknowledgement phrase (``ack_phrases``; an acknowledgement, not an answer).
MAX_ACK_PHRASE_CHARS = 40
#: The most items of one list setting (dids, doctors, visit_types, closed_dates, ack_phrases,
#: one day spec's hours): routing scans every DID per call, hours are checked pairwise.
MAX_LIST_ITEMS = 500
#: The most opening-hour ranges of one day, whatever the day specs that give them
#: (``mon-sun`` and ``Mon-sun`` are two keys for the same days). Each range is checked
#: against the day's others: 1439 one-minute ranges on every day took 0.6 s of a
#: worker's hub per reload for a 65 KB file, and the export of such a day (one list
#: per day) no longer passed :data:`MAX_LIST_ITEMS`.
MAX_RANGES_PER_DAY = 48
#: The most characters of a bad value quoted in an error message.
MAX_QUOTED_CHARS = 60
# Larger texts are parsed on a real thread, not the gevent hub: YAML with the alias
# pre-pass and validation take ~2.5 ms per KiB (160 ms for 63 KB on a busy 2-core box).
_INLINE_PARSE_CHARS = 16 * 1024
# libyaml when present: ~6x faster, and deep nesting is a clean error, not a RecursionError
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(ValueError):
    """A configuration file is invalid; the message names where and why."""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 2, 3, 3, 3, 3
_REPR.maxstring = _REPR.maxother = MAX_QUOTED_CHARS


def _q(value: Any) -> str:
    """``value`` quoted for an error message, cut to :data:`MAX_QUOTED_CHARS`, on one line.

    Why: a hostile value (a multi-MB string, an alias bomb expanding to GBs) put into
    a message whole stalled the process and wrote a 312 MB log line (issue #31).
    ``reprlib`` never renders more of a container than it shows.
    """
    if isinstance(value, str):
        text = value if len(value) <= MAX_QUOTED_CHARS else value[:MAX_QUOTED_CHARS - 1] + "…"
    else:
        text = _REPR.repr(value)[:MAX_QUOTED_CHARS]
    return "'" + text.replace("\n", "\\n").replace("\r", "\\r") + "'"


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
    min_speech_ms: int = 100
    end_silence_ms: int = 600
    # While the bot talks, speech must last this long to count (0: same as min_speech_ms).
    # A mono fork carries only the caller's leg, so line echo is all there is to reject.
    echo_min_speech_ms: int = 0
    # While the bot talks, a caller's voice (periodic, not a keypad tone) stops it after
    # this long instead of min_speech_ms (0: off); noise still needs min_speech_ms.
    voiced_speech_ms: int = 80


@dataclass(frozen=True)
class VisitType:
    """A kind of visit with its own length (e.g. new patient 40 min)."""

    id: str
    name: str
    minutes: int


@dataclass(frozen=True)
class Policy:
    """A clinic's booking rules, honoured by slot search, booking and the agents."""

    min_notice_minutes: int = 0
    booking_window_days: int = 180
    buffer_minutes: int = 0
    closed_dates: tuple[date, ...] = ()
    cancel_window_hours: int = 0
    hold_minutes: int = 3


@dataclass(frozen=True)
class DataPolicy:
    """A clinic's patient-data obligations."""

    retention_days: int = 365
    store_transcripts: bool = True


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
    urgent_line: str = ""
    transfer_timeout_seconds: int = 25
    # Acknowledgement: when the agent has no first sentence this long after the caller's
    # final transcript, play a short cached "Okay." (0 turns it off).
    ack_after_ms: int = 300
    ack_phrases: tuple[str, ...] = DEFAULT_ACK_PHRASES
    # confirmations by SMS / e-mail: esl_app/config/notifications.py
    notifications: NotificationConfig = field(default_factory=NotificationConfig)
    policy: Policy = field(default_factory=Policy)
    visit_types: tuple[VisitType, ...] = ()
    data: DataPolicy = field(default_factory=DataPolicy)
    reminders: ReminderPolicy | None = None  # esl_app/config/reminders.py

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def visit_type(self, visit_id: str | None) -> VisitType | None:
        """The visit type with this id, or None."""
        return next((v for v in self.visit_types if v.id == visit_id), None)

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
                    "no_input_action", "max_call_seconds", "emergency_number", "urgent_line",
                    "transfer_timeout_seconds", "ack_after_ms"):
            if getattr(self, key) != getattr(defaults, key):
                out[key] = getattr(self, key)
        if self.ack_phrases != defaults.ack_phrases:
            out["ack_phrases"] = list(self.ack_phrases)
        if self.notifications != defaults.notifications:
            out["notifications"] = notifications_to_yaml(self.notifications)
        if self.policy != defaults.policy:
            p = self.policy
            out["policy"] = {
                "min_notice_minutes": p.min_notice_minutes,
                "booking_window_days": p.booking_window_days,
                "buffer_minutes": p.buffer_minutes,
                "closed_dates": [d.isoformat() for d in p.closed_dates],
                "cancel_window_hours": p.cancel_window_hours,
                "hold_minutes": p.hold_minutes,
            }
        if self.visit_types:
            out["visit_types"] = [{"id": v.id, "name": v.name, "minutes": v.minutes}
                                  for v in self.visit_types]
        if self.data != defaults.data:
            out["data"] = {"retention_days": self.data.retention_days,
                           "store_transcripts": self.data.store_transcripts}
        if self.reminders is not None:
            from esl_app.config.reminders import reminders_to_yaml

            out["reminders"] = reminders_to_yaml(self.reminders)
        if self.barge_in != defaults.barge_in:
            out["barge_in"] = {
                "vad_mode": self.barge_in.vad_mode,
                "min_speech_ms": self.barge_in.min_speech_ms,
                "end_silence_ms": self.barge_in.end_silence_ms,
                "echo_min_speech_ms": self.barge_in.echo_min_speech_ms,
                "voiced_speech_ms": self.barge_in.voiced_speech_ms,
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
    """Read and validate a tenants.yaml file (at most :data:`MAX_FILE_BYTES`).

    A large file is read and parsed on a real thread: on the gevent hub a second of
    parsing would hold up every call of the worker (a hot reload runs there).
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # bounded even for a FIFO or /dev/zero
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{p}: file too large: more than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    return parse_tenants(text, source=str(p))


def parse_tenants(text: str, source: str = "tenants.yaml") -> TenantSet:
    """Parse and validate tenants.yaml text; large texts on a real thread (see above)."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: file too large: more than {MAX_FILE_BYTES} bytes")
    if len(text) <= _INLINE_PARSE_CHARS:
        return _parse_tenants(text, source)
    from esl_app.support.bridge import get_pool, run_in_thread

    get_pool("config", 1)  # one at a time: a reload storm must not take every core
    return run_in_thread(_parse_tenants, text, source, pool="config")


def tenants_from_json(configs: list[str], source: str = "database") -> TenantSet:
    """Validate tenants stored as JSON texts (one per tenant); many on a real thread.

    What a serving worker re-reads after every ``ivr tenants import``: 1800 clinics
    took 380 ms to validate, which on the gevent hub would hold up every call.
    """
    if sum(len(c) for c in configs) <= _INLINE_PARSE_CHARS:
        return _from_json(configs, source)
    from esl_app.support.bridge import get_pool, run_in_thread

    get_pool("config", 1)
    return run_in_thread(_from_json, configs, source, pool="config")


def _from_json(configs: list[str], source: str) -> TenantSet:
    return tenants_from_data({"tenants": [json.loads(c) for c in configs]}, source=source)


def _parse_tenants(text: str, source: str) -> TenantSet:
    try:
        data = _load_yaml(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}:{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    return tenants_from_data(data, source)


def _load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` that refuses aliases (``*name``), before building anything.

    Why: aliases let a few hundred bytes stand for a "billion laughs" tree; any
    walk of it (validation, an error message, JSON for the database) expands it to
    GBs. A tenants file has no use for them, so the first one is an error.
    """
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.AliasEvent):
            mark = event.start_mark
            raise ConfigError(f"{source}: line {mark.line + 1}, column {mark.column + 1}: "
                              f"YAML aliases are not allowed (*{_q(event.anchor)[1:-1]}); "
                              "write the value out")
    return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader


def tenants_from_data(data: Any, source: str = "tenants") -> TenantSet:
    """Validate already-parsed tenants data (e.g. JSON stored in the database)."""
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
            label = f"tenant {_q(item['id'])}"
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
    "emergency_number", "urgent_line", "transfer_timeout_seconds", "policy", "visit_types",
    "notifications",
    "data", "ack_after_ms", "ack_phrases", "reminders",
}
_REQUIRED = ("id", "name", "dids", "timezone", "hours", "doctors")


def _parse_tenant(item: Any, where: str) -> Tenant:
    from esl_app.config.reminders import parse_reminders

    if not isinstance(item, dict):
        raise ConfigError(f"{where}: must be a mapping")
    for key in item:
        if key not in _KEYS:
            raise ConfigError(f"{where}: unknown key {_q(key)}")
    for key in _REQUIRED:
        if key not in item or item[key] in (None, "", [], {}):
            raise ConfigError(f"{where}: key '{key}' is required")

    def s(key: str, default: str = "", limit: int = MAX_SETTING_CHARS) -> str:
        value = item.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: key '{key}' must be a string")
        value = value.strip()
        if len(value) > limit:
            raise ConfigError(f"{where}: key '{key}' is too long: {len(value)} characters "
                              f"(at most {limit})")
        return value

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
        raise ConfigError(f"{where}: key 'id': {_q(tid)} is not a slug (a-z, 0-9, '-', '_')")
    dids_raw = item["dids"]
    if not isinstance(dids_raw, list):
        raise ConfigError(f"{where}: key 'dids' must be a list")
    _count(dids_raw, f"{where}: key 'dids'")
    dids: list[str] = []
    for did in dids_raw:
        if isinstance(did, int) and not isinstance(did, bool):
            did = str(did)
        if not isinstance(did, str) or not _DID.match(did.strip()):
            raise ConfigError(f"{where}: key 'dids': {_q(did)} is not a phone number or "
                              "extension")
        dids.append(did.strip())
    tz = s("timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: key 'timezone': unknown time zone {_q(tz)}") from None
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
        region = b.get("region", "us-east-1")
        if not isinstance(region, str):
            raise ConfigError(f"{where}: key 'bedrock.region' must be a string")
        if any(len(v) > MAX_SETTING_CHARS for v in (b["agent_id"], b["alias_id"], region)):
            raise ConfigError(f"{where}: key 'bedrock': each value is at most "
                              f"{MAX_SETTING_CHARS} characters")
        bedrock = BedrockConfig(b["agent_id"], b["alias_id"], region)
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
        name=s("name", limit=MAX_NAME_CHARS),
        dids=tuple(dids),
        timezone=tz,
        language=language,
        voice=s("voice", "Joanna") or "Joanna",
        greeting=s("greeting", "", MAX_GREETING_CHARS) or f"Thank you for calling {s('name')}.",
        hours=_parse_hours(item["hours"], where),
        slot_minutes=num("slot_minutes", 30, 5, 240),
        handoff=s("handoff", ""),
        agent=agent,
        bedrock=bedrock,
        doctors=doctors,
        address=s("address", "", MAX_ADDRESS_CHARS),
        stt=stt,
        tts=tts,
        sample_rate=rate,
        barge_in=_parse_barge_in(item.get("barge_in"), where),
        no_input_seconds=num("no_input_seconds", 6.0, 1, 60, float),
        no_input_action=action,
        max_call_seconds=num("max_call_seconds", 900, 30, 7200),
        emergency_number=s("emergency_number", "911") or "911",
        urgent_line=s("urgent_line", ""),
        transfer_timeout_seconds=num("transfer_timeout_seconds", 25, 5, 120),
        ack_after_ms=num("ack_after_ms", 300, 0, 5000),
        ack_phrases=_parse_ack_phrases(item.get("ack_phrases"), where),
        notifications=parse_notifications(item.get("notifications"), where),
        policy=_parse_policy(item.get("policy"), where),
        visit_types=_parse_visit_types(item.get("visit_types"), where),
        data=_parse_data_policy(item.get("data"), where),
        reminders=parse_reminders(item.get("reminders"), where),
    )


def _parse_ack_phrases(raw: Any, where: str) -> tuple[str, ...]:
    """``ack_phrases``: short lines the bot may say while the agent works.

    At least two (so none is said twice in a row), each at most 40 characters
    (an acknowledgement, not an answer); absent means :data:`DEFAULT_ACK_PHRASES`.
    """
    if raw is None:
        return DEFAULT_ACK_PHRASES
    if not isinstance(raw, list) or not all(isinstance(p, str) and p.strip() for p in raw):
        raise ConfigError(f"{where}: key 'ack_phrases' must be a list of phrases")
    _count(raw, f"{where}: key 'ack_phrases'")
    phrases = tuple(dict.fromkeys(p.strip() for p in raw))
    if len(phrases) < 2:
        raise ConfigError(f"{where}: key 'ack_phrases' needs at least two different phrases")
    if any(len(p) > MAX_ACK_PHRASE_CHARS for p in phrases):
        raise ConfigError(f"{where}: key 'ack_phrases': each phrase must be at most "
                          f"{MAX_ACK_PHRASE_CHARS} characters")
    return phrases


def _count(items: Any, what: str) -> None:
    """Refuse a list setting of more than :data:`MAX_LIST_ITEMS` items."""
    if len(items) > MAX_LIST_ITEMS:
        raise ConfigError(f"{what}: too many items: {len(items)} (at most {MAX_LIST_ITEMS})")


def _text(value: Any, what: str, limit: int) -> str:
    """A text setting, stripped, at most ``limit`` characters (``what`` names it)."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise ConfigError(f"{what} is too long: {len(value)} characters (at most {limit})")
    return value


def _int_in(raw: dict[str, Any], key: str, default: int, lo: int, hi: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{where}: key '{key}' must be a whole number between {lo} and {hi}")
    return value


def _parse_policy(raw: Any, where: str) -> Policy:
    if raw is None:
        return Policy()
    keys = {"min_notice_minutes", "booking_window_days", "buffer_minutes", "closed_dates",
            "cancel_window_hours", "hold_minutes"}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: key 'policy' must be a mapping")
    for key in raw:
        if key not in keys:
            raise ConfigError(f"{where}: key 'policy.{_q(key)[1:-1]}' is unknown")
    w = f"{where}: policy"
    closed: list[date] = []
    dates = raw.get("closed_dates") or []
    if not isinstance(dates, list):
        raise ConfigError(f"{where}: key 'policy.closed_dates' must be a list of dates")
    _count(dates, f"{where}: key 'policy.closed_dates'")
    for value in dates:
        try:
            if isinstance(value, date):
                closed.append(value)
            elif isinstance(value, str):
                closed.append(date.fromisoformat(value))
            else:
                raise ValueError(value)
        except ValueError:
            raise ConfigError(f"{where}: key 'policy.closed_dates': {_q(value)} is not "
                              "YYYY-MM-DD") from None
    return Policy(
        min_notice_minutes=_int_in(raw, "min_notice_minutes", 0, 0, 60 * 24 * 30, w),
        booking_window_days=_int_in(raw, "booking_window_days", 180, 1, 800, w),
        buffer_minutes=_int_in(raw, "buffer_minutes", 0, 0, 240, w),
        closed_dates=tuple(sorted(set(closed))),
        cancel_window_hours=_int_in(raw, "cancel_window_hours", 0, 0, 24 * 14, w),
        hold_minutes=_int_in(raw, "hold_minutes", 3, 1, 60, w),
    )


def _parse_visit_types(raw: Any, where: str) -> tuple[VisitType, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: key 'visit_types' must be a list")
    _count(raw, f"{where}: key 'visit_types'")
    out: list[VisitType] = []
    for v in raw:
        if not isinstance(v, dict) or set(v) - {"id", "name", "minutes"}:
            raise ConfigError(f"{where}: key 'visit_types': each is a mapping of id, name, "
                              "minutes")
        vid, name, minutes = v.get("id"), v.get("name"), v.get("minutes")
        if not isinstance(vid, str) or not _SLUG.match(vid):
            raise ConfigError(f"{where}: key 'visit_types': id {_q(vid)} is not a slug")
        if any(o.id == vid for o in out):
            raise ConfigError(f"{where}: key 'visit_types': duplicate id '{vid}'")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 5 <= minutes <= 480:
            raise ConfigError(f"{where}: key 'visit_types': '{vid}' minutes must be 5..480")
        name = _text(name or vid, f"{where}: key 'visit_types': '{vid}' name", MAX_NAME_CHARS)
        out.append(VisitType(vid, name, minutes))
    return tuple(out)


def _parse_data_policy(raw: Any, where: str) -> DataPolicy:
    if raw is None:
        return DataPolicy()
    if not isinstance(raw, dict) or set(raw) - {"retention_days", "store_transcripts"}:
        raise ConfigError(f"{where}: key 'data' takes retention_days, store_transcripts")
    store = raw.get("store_transcripts", True)
    if not isinstance(store, bool):
        raise ConfigError(f"{where}: key 'data.store_transcripts' must be true or false")
    return DataPolicy(
        retention_days=_int_in(raw, "retention_days", 365, 1, 3650, f"{where}: data"),
        store_transcripts=store,
    )


def _parse_doctors(raw: Any, where: str) -> tuple[Doctor, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: key 'doctors' must be a list")
    _count(raw, f"{where}: key 'doctors'")
    out: list[Doctor] = []
    for d in raw:
        if not isinstance(d, dict) or set(d) - {"id", "name", "specialty"}:
            raise ConfigError(f"{where}: key 'doctors': each doctor is a mapping of id, name, "
                              "specialty")
        did, name = d.get("id"), d.get("name")
        if not isinstance(did, str) or not _SLUG.match(did):
            raise ConfigError(f"{where}: key 'doctors': id {_q(did)} is not a slug")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: key 'doctors': doctor '{did}' needs a name")
        if any(o.id == did for o in out):
            raise ConfigError(f"{where}: key 'doctors': duplicate doctor id '{did}'")
        w = f"{where}: key 'doctors': doctor '{did}'"
        out.append(Doctor(did, _text(name, f"{w} name", MAX_NAME_CHARS),
                          _text(d.get("specialty") or "", f"{w} specialty", MAX_NAME_CHARS)))
    return tuple(out)


def _parse_barge_in(raw: Any, where: str) -> BargeInConfig:
    if raw is None:
        return BargeInConfig()
    if not isinstance(raw, dict) or set(raw) - {"vad_mode", "min_speech_ms", "end_silence_ms",
                                                "echo_min_speech_ms", "voiced_speech_ms"}:
        raise ConfigError(f"{where}: key 'barge_in' takes vad_mode, min_speech_ms, "
                          "end_silence_ms, echo_min_speech_ms, voiced_speech_ms")
    if any(isinstance(v, bool) or not isinstance(v, int) for v in raw.values()):
        raise ConfigError(f"{where}: key 'barge_in': each value must be a whole number")
    b = BargeInConfig(**raw)
    if b.vad_mode not in (0, 1, 2, 3):
        raise ConfigError(f"{where}: key 'barge_in.vad_mode' must be 0..3")
    if not (20 <= b.min_speech_ms <= 2000 and 100 <= b.end_silence_ms <= 5000
            and 0 <= b.echo_min_speech_ms <= 2000
            and (b.voiced_speech_ms == 0 or 40 <= b.voiced_speech_ms <= 2000)):
        raise ConfigError(f"{where}: key 'barge_in': min_speech_ms 20..2000, "
                          "end_silence_ms 100..5000, echo_min_speech_ms 0..2000, "
                          "voiced_speech_ms 0 (off) or 40..2000")
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
            if not isinstance(spec, str) or len(spec) > 100:
                raise ValueError(spec)
            days = _expand_days(spec)
        except ValueError:
            raise ConfigError(f"{where}: key 'hours': {_q(spec)} is not a day or day range "
                              "(mon..sun)") from None
        values: Iterable[Any] = ranges if isinstance(ranges, list) else [ranges]
        _count(values, f"{where}: key 'hours.{spec}'")
        for value in values:
            m = _RANGE.match(value.strip()) if isinstance(value, str) else None
            if not m:
                raise ConfigError(f"{where}: key 'hours.{spec}': {_q(value)} is not HH:MM-HH:MM")
            h1, m1, h2, m2 = (int(g) for g in m.groups())
            if h1 > 23 or h2 > 24 or (h2 == 24 and m2):
                raise ConfigError(f"{where}: key 'hours.{spec}': '{value}' is not a valid time")
            start = time(h1, m1)
            end = time(23, 59) if h2 == 24 else time(h2, m2)
            if end <= start:
                raise ConfigError(f"{where}: key 'hours.{spec}': '{value}' ends before it starts")
            for day in days:
                if len(out.get(day, ())) >= MAX_RANGES_PER_DAY:
                    raise ConfigError(f"{where}: key 'hours.{spec}': more than "
                                      f"{MAX_RANGES_PER_DAY} ranges on {day}")
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
