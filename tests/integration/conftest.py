"""The real Label Studio for integration tests: installed into `.labelstudio/venv` if needed (~75 s once),
started on 127.0.0.1 on a free port from a copy of the migrated template data dir (~3 s; the first run migrates
it, ~25 s), stopped and removed at the end of the session.

Set CURATE_SKIP_LABELSTUDIO=1 to skip these tests (CI must not set it).
"""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.labelstudio)


@pytest.fixture(scope="session")
def labelstudio():
    """A running Label Studio: `.url`, `.token`, `.username`, `.password`, `.port`."""
    if os.environ.get("CURATE_SKIP_LABELSTUDIO") == "1":
        pytest.skip("CURATE_SKIP_LABELSTUDIO=1: the real Label Studio server tests are skipped")
    from labeling.studio import server as ls_server

    root = ROOT / ".labelstudio"
    ls_server.install(root)
    server = ls_server.start(root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def studio(labelstudio):
    from labeling.studio import StudioClient

    with StudioClient(labelstudio.url, labelstudio.token) as client:
        yield client
