from pathlib import Path

import pytest

from esl_app.config.tenants import ConfigError, did_forms, load_tenants, parse_tenants

FIX = Path(__file__).parent / "fixtures" / "tenants"


def test_repo_tenants_load(repo_root):
    ts = load_tenants(repo_root / "tenants.yaml")
    assert [t.id for t in ts] == ["sunrise", "lakeside"]
    sunrise = ts.get("sunrise")
    assert sunrise.doctor("smith").name == "Dr. Sarah Smith"
    assert set(sunrise.hours) == {"mon", "tue", "wed", "thu", "fri", "sat"}
    assert ts.get("lakeside").slot_minutes == 20


@pytest.mark.parametrize("number,tenant", [
    ("1001", "sunrise"), ("+15550101001", "sunrise"), ("15550101001", "sunrise"),
    ("5550101001", "sunrise"), ("sip:+15550101001@example.com", "sunrise"),
    ("1002", "lakeside"), ("+1 (555) 010-1002", "lakeside"), ("9999", None), ("", None),
])
def test_did_routing(repo_root, number, tenant):
    ts = load_tenants(repo_root / "tenants.yaml")
    found = ts.by_did(number)
    assert (found.id if found else None) == tenant


def test_did_forms():
    assert set(did_forms("+15550101001")) >= {"+15550101001", "15550101001", "5550101001"}
    assert did_forms("1001") == ("1001",)


@pytest.mark.parametrize("fixture,expected", [
    ("bad_yaml_syntax.yaml", "line"),
    ("bad_unknown_key.yaml", "tenant 'a': unknown key 'colour'"),
    ("bad_timezone.yaml", "tenant 'a': key 'timezone': unknown time zone 'Mars/Olympus'"),
    ("bad_duplicate_did.yaml",
     "tenant 'b': key 'dids': DID 5550102001 is already used by tenant 'a'"),
    ("bad_duplicate_id.yaml", "tenant 'a': duplicate tenant id"),
    ("bad_hours_overlap.yaml", "tenant 'a': key 'hours.wed': '11:00-13:00' overlaps 09:00-12:00"),
    ("bad_hours_format.yaml", "tenant 'a': key 'hours.mon': '9am-5pm' is not HH:MM-HH:MM"),
    ("bad_hours_reversed.yaml", "ends before it starts"),
    ("bad_day.yaml", "key 'hours': 'funday' is not a day"),
    ("bad_missing_key.yaml", "tenant 'a': key 'dids' is required"),
    ("bad_did_format.yaml", "key 'dids': 'call-me' is not a phone number"),
    ("bad_bedrock_missing.yaml", "key 'bedrock' is required when agent is 'bedrock'"),
    ("bad_slug.yaml", "key 'id': 'Bad Id!' is not a slug"),
    ("bad_doctor_dup.yaml", "duplicate doctor id 'd'"),
    ("bad_top_level.yaml", "top level must be a mapping"),
])
def test_rejections_name_tenant_and_key(fixture, expected):
    with pytest.raises(ConfigError) as err:
        load_tenants(FIX / fixture)
    assert expected in str(err.value)
    assert fixture in str(err.value)


def test_yaml_error_has_line_number():
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_tenants(FIX / "bad_yaml_syntax.yaml")


def test_missing_file():
    with pytest.raises(ConfigError, match="file not found"):
        load_tenants(FIX / "nope.yaml")


def test_round_trip_export(repo_root):
    import yaml

    ts = load_tenants(repo_root / "tenants.yaml")
    again = parse_tenants(yaml.safe_dump({"tenants": [t.to_dict() for t in ts]}))
    assert again.tenants == ts.tenants


def test_bad_barge_in_and_numbers():
    base = ('tenants:\n  - id: a\n    name: A\n    dids: ["2001"]\n    timezone: UTC\n'
            '    hours: {mon: "09:00-10:00"}\n    doctors: [{id: d, name: D}]\n')
    with pytest.raises(ConfigError, match="barge_in"):
        parse_tenants(base + "    barge_in: {vad_mode: 9}\n")
    with pytest.raises(ConfigError, match="slot_minutes"):
        parse_tenants(base + "    slot_minutes: 2\n")
    with pytest.raises(ConfigError, match="sample_rate"):
        parse_tenants(base + "    sample_rate: 11025\n")
    with pytest.raises(ConfigError, match="stt"):
        parse_tenants(base + "    stt: whisper\n")
