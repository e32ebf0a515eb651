"""Shared test set-up: writable caches in a temp folder (no writable home is guaranteed), few threads."""
import os
import tempfile

_cache = os.path.join(tempfile.gettempdir(), "vae-explorer-test-cache")
os.makedirs(_cache, exist_ok=True)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(_cache, "numba"))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_cache, "mpl"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))

# One intra-op thread per test process: the app's server threads, the test client and torch would
# otherwise oversubscribe 2 cores (measured here: tiny training steps 6-25x slower with 2 threads).
import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts (and ends) with one intra-op thread, whatever the test before it set."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)
