"""The offline kit: everything that stands in for the world outside a real deployment.

The FreeSWITCH emulator, the simulator behind ``ivr simulate``/``ivr demo``, the
load tester, the cloud latency profiles and the emulated Transcribe. Nothing on the
production path imports this package; ``ivr serve --profile`` (a load test's
server) is the one opt-in door, through :mod:`esl_app.runtime.wiring`.
"""
