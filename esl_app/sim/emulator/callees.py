"""People (and machines) the emulated switch can call: ``originate`` to a phone number.

FreeSWITCH dials a patient through a gateway (``originate {vars}sofia/gateway/gw/NUMBER
&socket(bot async full)``). The emulator plays the patient's side from a script:

- ``human``: answers; each time the bot listens, says its next line (the first is its
  "Hello?"); hangs up when its lines run out and the bot listens again;
- ``machine``: answers and, when the bot listens, plays a recorded greeting (its words
  in text mode), then stays silent;
- ``busy``: ``-ERR USER_BUSY`` at once; ``no_answer``: rings out, ``-ERR NO_ANSWER``.

Faults of the bot's audio fork, as the real switch shows them: ``fork_refused`` (a fork
of mod_audio_fork's default name is already on the channel: ``-ERR Operation Failed``)
and ``fork_drop_after_ms`` (the fork's connection breaks mid-stream: the media server
sees the socket close without a WebSocket close, FreeSWITCH raises
``mod_audio_fork::disconnect``).

A number with no script rings out. The results match what FreeSWITCH's ``api
originate`` answers, so the bot's dialer cannot tell the emulator from the switch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import gevent

from esl_app.scheduling.phones import phone_key

__all__ = ["Callee", "originate_to_callee"]

log = logging.getLogger(__name__)

MACHINE_GREETING = ("Hi, you've reached the Miller residence. We can't come to the phone "
                    "right now, please leave a message after the tone.")


@dataclass
class Callee:
    """One scripted phone at a number; ``calls`` counts how often it rang."""

    kind: str = "human"  # human | machine | busy | no_answer
    lines: list[str] = field(default_factory=lambda: ["Hello?"])
    greeting: str = MACHINE_GREETING
    calls: int = 0
    heard: list[list[str]] = field(default_factory=list)  # per call: what it said
    # the channel already carries a fork of mod_audio_fork's default name (a recorder
    # the carrier or the dialplan attached): the bot's ``uuid_audio_fork … start`` gets
    # ``-ERR Operation Failed``, as from the real switch
    fork_refused: bool = False
    # the bot's fork loses its connection after this much audio (ms; None: never)
    fork_drop_after_ms: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("human", "machine", "busy", "no_answer"):
            raise ValueError(f"unknown callee kind {self.kind!r}")


def originate_to_callee(switch: Any, number: str, variables: dict[str, str],
                        address: tuple[str, int] | None, socket_data: str = "") -> str:
    """The ``api originate`` reply for a call to ``number`` (busy, no answer, +OK uuid)."""
    from esl_app.sim.emulator.outbound import EmulatedCall

    callee: Callee | None = switch.callees.get(phone_key(number))
    if callee is not None:
        callee.calls += 1
    kind = callee.kind if callee is not None else "no_answer"
    if kind == "busy":
        return "-ERR USER_BUSY\n"
    ring = float(variables.get("originate_timeout", "30") or 30)
    if kind == "no_answer":
        gevent.sleep(ring * switch.time_scale)
        return "-ERR NO_ANSWER\n"
    if address is None:
        return "-ERR DESTINATION_OUT_OF_ORDER\n"
    assert callee is not None
    caller = variables.pop("origination_caller_id_number", "0000000000")
    from functools import partial

    from esl_app.sim.emulator.audio import AudioFork
    from esl_app.sim.emulator.channel import FORK_BUG

    # the fork only streams if the bot asks for one (audio mode); lines are spoken with
    # espeak-ng, or played from a recording (``#wav PATH``)
    call = EmulatedCall(address, number, caller, switch=switch, variables=variables,
                        time_scale=switch.time_scale,
                        audio_fork=partial(AudioFork, drop_after_ms=callee.fork_drop_after_ms),
                        socket_data=socket_data or None)
    if callee.fork_refused:
        call.channel.held_fork_bugs.add(FORK_BUG)
    try:
        call.start()
    except OSError:
        return "-ERR DESTINATION_OUT_OF_ORDER\n"
    said: list[str] = []
    callee.heard.append(said)
    gevent.spawn(_play, call, callee, said)
    return f"+OK {call.uuid}\n"


def _play(call: Any, callee: Callee, said: list[str]) -> None:
    """The callee's side of the call.

    The first line as soon as they pick up (a person's "Hello?", a machine's greeting),
    each next one when the bot listens; hang up when out of lines.

    A line ``#wav PATH`` plays that recording over the audio fork (a greeting with its
    beep); it means nothing in text mode.
    """
    lines = [callee.greeting] if callee.kind == "machine" else list(callee.lines)
    first = True
    try:
        while not call.ended:
            if first:  # picked up: speak once something hears the line (ASR or fork)
                first = False
                with gevent.Timeout(10, False):
                    while not call.ended and not call.channel.input_ready:
                        gevent.sleep(0.02)
            elif not call.wait_until_listening(60):
                return
            if not lines:
                if callee.kind == "machine":
                    gevent.sleep(0.05)  # a machine records silence; the bot hangs up
                    continue
                call.hang_up()
                return
            line = lines.pop(0)
            said.append(line)
            if line.startswith("#dtmf"):
                call.press(line[5:].strip())
            else:
                call.say(line)
            gevent.sleep(0.05)  # the bot answers before it listens again
    except Exception:  # noqa: BLE001 - a scripted phone must not crash the switch
        log.debug("callee script ended", exc_info=True)
