"""The test suite's entry point: gevent monkey-patching before any other plugin.

Loaded with ``-p esl_app.pytest_plugin`` (pyproject addopts) so that it runs
before setuptools-registered plugins (schemathesis, anyio, hypothesis) import
ssl, which gevent must patch first.
"""

from gevent import monkey

if not monkey.is_module_patched("socket"):
    monkey.patch_all()

    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
