"""The test suite's entry point: gevent patches everything before anything imports ssl.

pyproject disables the auto-loading of the plugins that import ssl (typeguard, anyio,
schemathesis); schemathesis's, which the fuzz tests need, is loaded below, after patching.
"""

from gevent import monkey

monkey.patch_all()

from psycogreen.gevent import patch_psycopg  # noqa: E402

patch_psycopg()

pytest_plugins = ["schemathesis.pytest.plugin"]

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("IVR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("IVR_TEST_POSTGRES_URL not set")
    return url


@pytest.fixture(params=["compiled", "python"])
def both_frame_paths(request, monkeypatch):
    """A media test on the compiled WebSocket fast path and on its Python twin."""
    from esl_app.media import server

    if request.param == "python":
        monkeypatch.setattr(server, "_ws_audio", server._ws_audio_py)
    elif server._ws_audio is server._ws_audio_py:
        pytest.skip("the compiled frame path was not built")
    return request.param
