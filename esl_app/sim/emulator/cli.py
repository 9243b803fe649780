"""``ivr emulator`` commands: run the emulated FreeSWITCH for ops scripts and manual tests."""

from __future__ import annotations

import click

from esl_app.config.settings import parse_hostport

__all__ = ["emulator"]


def _hostport(value: str, default_port: int) -> tuple[str, int]:
    try:
        return parse_hostport(value, default_port=default_port)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group("emulator")
def emulator() -> None:
    """FreeSWITCH emulator (real ESL wire protocol)."""


@emulator.command("inbound")
@click.option("--listen", default="127.0.0.1:8021", show_default=True,
              help="Inbound event-socket address.")
@click.option("--password", default="ClueCon", show_default=True, envvar="IVR_ESL_PASSWORD")
@click.option("--bot", "bot", default="127.0.0.1:8084", show_default=True,
              help="Outbound ESL server that `originate loopback/<did>` calls into.")
@click.option("--time-scale", default=1.0, show_default=True, type=float)
def inbound(listen: str, password: str, bot: str, time_scale: float) -> None:
    """Serve the inbound event socket until interrupted."""
    from esl_app.cli import EXIT_UNAVAILABLE, fail
    from esl_app.runtime.workers import listen_error
    from esl_app.sim.emulator.core import Switch
    from esl_app.sim.emulator.inbound import InboundServer

    host, port = _hostport(listen, 8021)
    switch = Switch(password=password, bot_address=_hostport(bot, 8084), time_scale=time_scale)
    server = InboundServer(switch, host, port)
    try:
        server.start()  # bind before saying so: a taken port is one line, exit 3
    except OSError as exc:
        fail(str(listen_error(host, port, "--listen", exc)), EXIT_UNAVAILABLE)
    click.echo(f"emulated FreeSWITCH inbound ESL on {host}:{server.address[1]}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
