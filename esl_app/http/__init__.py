"""The HTTP side of ivr: the appointments API, health, metrics and the OpenAPI document.

- :mod:`esl_app.http.app` — falcon WSGI app (``create_app``) and gevent server (``serve_http``)
- :mod:`esl_app.http.metrics` — the process's Prometheus metrics (import and update them)
- :mod:`esl_app.http.actiongroups` — Bedrock action-group schemas derived from ``openapi.yaml``

Nothing is imported here, so importing the metrics does not pull in falcon.
"""
