"""``ivr demo``: one realistic booking call from nothing, printed as it happens.

Fresh database under ``./var/``, tenants from tenants.yaml (or the example clinics
shipped in the package), 14 days of slots,
the bot in-process, the FreeSWITCH emulator as the phone network, and a
caller who books with the first clinic. The last line reads the appointment
back from the database, so the demo proves the whole path, not a mock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from esl_app.config.settings import sqlite_url
from esl_app.config.tenants import TenantSet

__all__ = ["AUDIO_DEMO_SCRIPT", "DEMO_SCRIPT", "EXAMPLE_TENANTS", "run_demo"]

# The example clinics, shipped in the package (a copy of the repository's tenants.yaml,
# kept identical by a test) so that `ivr demo` runs from any directory.
EXAMPLE_TENANTS = Path(__file__).resolve().parent.parent / "examples" / "tenants.yaml"

DEMO_SCRIPT = (
    "Hi, I'd like to book an appointment with Dr. Smith",
    "next Tuesday morning",
    "the first one",
    "John Smith",
    "yes",
    "no, that's all, thanks",
)

# The audio caller answers one question at a time, as callers do on the phone: the
# recogniser then knows what to expect (the agent's hints), which the bundled acoustic
# model needs for espeak's voice (its /s/ is weak: "Smith" alone tends to "Lee").
AUDIO_DEMO_SCRIPT = (
    "Hi, I'd like to book an appointment",
    "Dr. Smith, please",
    "next Tuesday morning",
    "the last one",
    "Mary Johnson",
    "yes",
    "no, that's all, thanks",
)


def run_demo(tenants: TenantSet, *, var_dir: str | Path = "var", audio: bool = False,
             time_scale: float = 0.15, echo: Callable[[str], None] = print,
             script: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Run the demo call; returns the call's transcript.

    ``script`` defaults to :data:`DEMO_SCRIPT`, or :data:`AUDIO_DEMO_SCRIPT` with ``audio``.
    """
    if script is None:
        script = AUDIO_DEMO_SCRIPT if audio else DEMO_SCRIPT
    from esl_app.db import close_db
    from esl_app.scheduling import service
    from esl_app.sim.simulate import (
        SimCall,
        prepare_database,
        run_lines,
        start_local_bot,
        transcript_for,
    )

    var = Path(var_dir)
    var.mkdir(parents=True, exist_ok=True)
    db_path = var / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    tenant = tenants.tenants[0]
    did = tenant.dids[0]
    t0 = time.monotonic()
    prepare_database(sqlite_url(db_path), tenants, days=14)
    echo(f"database   {db_path}  ({len(tenants)} clinics, 14 days of slots)")
    bot = start_local_bot(tenants, audio=audio)
    host, port = bot.address
    echo(f"bot        ESL server on {host}:{port}, {'audio' if audio else 'text'} mode")
    echo(f"call       +15550100100 dials {did} ({tenant.name})")
    echo("")

    def show(ev: dict[str, Any]) -> None:
        at = time.monotonic() - t_call
        if ev.get("event") == "bot_said":
            echo(f"  {at:6.1f}s  BOT    {ev.get('text', '')}")
        elif ev.get("event") == "transfer":
            echo(f"  {at:6.1f}s  ---    transferred to {ev.get('to')}")

    class Caller(SimCall):
        def act(self, line: str, *, wait: float = 60.0) -> bool:
            ok = super().act(line, wait=wait)
            if ok and not line.startswith("#"):
                echo(f"  {time.monotonic() - t_call:6.1f}s  CALLER {line}")
            return ok

    try:
        t_call = time.monotonic()
        sim = Caller(bot.address, did, "+15550100100", audio=audio,
                     time_scale=time_scale).start()
        run_lines(sim, script, show)
        transcript = transcript_for(sim, bot)
    finally:
        bot.stop()
    echo("")
    code = transcript.get("confirmation")
    echo(f"outcome    {transcript.get('outcome')}  ({len(transcript.get('turns', []))} turns, "
         f"{time.monotonic() - t_call:.1f}s call, {time.monotonic() - t0:.1f}s total)")
    if code:
        ap = service.get_appointment(tenant.id, code)
        echo(f"stored     {ap.confirmation}: {ap.patient_name} with {ap.doctor_name}, "
             f"{ap.start:%A %B %-d at %-I:%M %p} ({ap.start.isoformat()}), status {ap.status}")
    else:
        echo("stored     no appointment was made")
    close_db()
    return transcript
