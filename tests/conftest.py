from gevent import monkey

if not monkey.is_module_patched("socket"):  # normally done by esl_app.pytest_plugin
    monkey.patch_all()

    from psycogreen.gevent import patch_psycopg

    patch_psycopg()

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
