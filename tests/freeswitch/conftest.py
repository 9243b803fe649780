"""Fixtures for the real-FreeSWITCH suite (marker ``freeswitch``).

The switch is started for the session (and stopped again if this run started it);
one ``ivr serve`` runs the repo's tenants plus three test clinics whose human lines
are the kit's test extensions: 1005 (answers), 1004 (rings, never answers) and
``user/1000`` (not registered, sunrise's line). Every test must leave no channel
behind: the autouse check waits for the channels a test created to be gone, kills
stragglers and fails the test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from freeswitch import harness
from freeswitch.harness import Bot, DialplanInstall, InboundEsl, Switch

TEST_TENANTS = [
    {"id": "frontdesk", "name": "Front Desk Clinic", "dids": ["2001"],
     "timezone": "America/New_York", "language": "en-US", "voice": "Joanna",
     "greeting": "Thank you for calling Front Desk Clinic.",
     "hours": {"mon-sun": "00:00-23:30"}, "slot_minutes": 30,
     "handoff": "loopback/1005/public", "agent": "local",
     "doctors": [{"id": "lee", "name": "Dr. Ann Lee", "specialty": "family medicine"}]},
    {"id": "noanswer", "name": "Quiet Clinic", "dids": ["2002"],
     "timezone": "America/New_York", "language": "en-US", "voice": "Joanna",
     "greeting": "Thank you for calling Quiet Clinic.",
     "hours": {"mon-sun": "00:00-23:30"}, "slot_minutes": 30,
     "handoff": "loopback/1004/public", "transfer_timeout_seconds": 5, "agent": "local",
     "doctors": [{"id": "lee", "name": "Dr. Ann Lee", "specialty": "family medicine"}]},
    {"id": "flitetts", "name": "Flite Clinic", "dids": ["2003"],
     "timezone": "America/New_York", "language": "en-US", "voice": "Matthew",
     "greeting": "Thank you for calling Flite Clinic.", "tts": "freeswitch",
     "hours": {"mon-sun": "00:00-23:30"}, "slot_minutes": 30,
     "handoff": "loopback/1005/public", "agent": "local",
     "doctors": [{"id": "lee", "name": "Dr. Ann Lee", "specialty": "family medicine"}]},
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=harness.SKIP_REASON)
    ok = harness.available()
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.freeswitch)
            if not ok:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def fs_switch() -> Iterator[Switch]:
    switch = Switch()
    switch.start()
    yield switch
    switch.stop()


@pytest.fixture(scope="session")
def fs_esl(fs_switch: Switch) -> Iterator[InboundEsl]:
    esl = InboundEsl().connect()
    yield esl
    esl.close()


@pytest.fixture(scope="session")
def fs_workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ivr-fs-"))
    yield path
    if not os.environ.get("IVR_FS_KEEP"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def fs_tenants(fs_workdir: Path, repo_root_session: Path) -> Path:
    data = yaml.safe_load((repo_root_session / "tenants.yaml").read_text())
    data["tenants"] += TEST_TENANTS
    path = fs_workdir / "tenants.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def repo_root_session() -> Path:
    return harness.ROOT


@pytest.fixture(scope="session")
def fs_plan(fs_esl: InboundEsl) -> Iterator[DialplanInstall]:
    plan = DialplanInstall(fs_esl, tag=str(os.getpid()))
    yield plan
    plan.remove()


@pytest.fixture(scope="session")
def fs_bot(fs_workdir: Path, fs_tenants: Path, fs_plan: DialplanInstall) -> Iterator[Bot]:
    bot = Bot(fs_workdir, fs_tenants)
    bot.prepare()
    bot.start()
    fs_plan.install(fs_tenants, bot.esl)
    yield bot
    bot.stop()


@pytest.fixture(autouse=True)
def _no_channel_left(request: pytest.FixtureRequest) -> Iterator[None]:
    if "fs_esl" not in request.fixturenames:
        yield
        return
    esl: InboundEsl = request.getfixturevalue("fs_esl")
    mark = len(esl.events)
    yield
    created = esl.ours(mark)
    deadline = time.monotonic() + 15
    left: set[str] = set()
    while time.monotonic() < deadline:
        gone = {e.uuid for e in esl.events[mark:] if e.name == "CHANNEL_HANGUP_COMPLETE"}
        left = created - gone
        if not left:
            return
        time.sleep(0.2)
    for uuid in left:
        esl.api(f"uuid_kill {uuid}")
    pytest.fail(f"{len(left)} channel(s) left behind by the test: {sorted(left)}")
