import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "youtube-spam"
WRENCH = Path(__file__).resolve().parent / "data" / "wrench"

# The tests must not see a developer's settings (CURATE_SKIP_LABELSTUDIO is a test switch, not a setting).
for _k in [k for k in os.environ if k.startswith("CURATE_") and k != "CURATE_SKIP_LABELSTUDIO"]:
    del os.environ[_k]


@pytest.fixture
def store(tmp_path):
    from curation.settings import Settings
    from curation.store import Store

    s = Store.open(Settings(db=tmp_path / "t.duckdb"))
    yield s
    s.close()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """The test machine's 2 cores are shared: one torch thread avoids spin-waiting (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
