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
OFFICIAL_DATA = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))


def _official_mnist_present(root: str) -> bool:
    raw = os.path.join(root, "MNIST", "raw")
    return any(os.path.isfile(os.path.join(raw, "t10k-images-idx3-ubyte" + ext)) for ext in ("", ".gz"))


def _write_stand_in_mnist(root: str, n: int = 10_000) -> None:
    """MNIST-format IDX files (the test split only, 10,000 images, as in ../shared) of procedural 28x28 "digits": class k is
    a bright bar at angle 18k degrees with a random offset and width, so the classes are learnable. Only for
    machines without the official files: tests that need the real digits skip there."""
    import gzip
    import struct

    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32) - 13.5
    images = np.zeros((n, 28, 28), np.uint8)
    for i, k in enumerate(labels):
        angle = np.deg2rad(18.0 * k)
        offset, width = rng.uniform(-3, 3), rng.uniform(1.2, 2.5)
        distance = np.abs(xx * np.sin(angle) - yy * np.cos(angle) - offset)
        bar = np.clip(width - distance, 0, 1) * (np.abs(xx * np.cos(angle) + yy * np.sin(angle)) < 9)
        images[i] = (255 * bar).astype(np.uint8)
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for name, array in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
        with gzip.open(os.path.join(raw, name + ".gz"), "wb") as f:
            f.write(header + array.tobytes())


# The MNIST folder the tests train on: the official test split in ../shared/data where this machine has it,
# else a procedural stand-in in the same format (helpers read VAE_TEST_MNIST_DIR).
if _official_mnist_present(OFFICIAL_DATA):
    SHARED_DATA = OFFICIAL_DATA
else:
    SHARED_DATA = os.path.join(_cache, "stand-in-mnist")
    if not _official_mnist_present(SHARED_DATA):
        _write_stand_in_mnist(SHARED_DATA)
os.environ["VAE_TEST_MNIST_DIR"] = SHARED_DATA
OFFICIAL_MNIST = SHARED_DATA == OFFICIAL_DATA

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


_SESSION_START = [0.0]


def pytest_sessionstart(session):
    import time

    _SESSION_START[0] = time.time() - 1


def pytest_terminal_summary(terminalreporter):
    """Point the log at the pictures browser tests wrote in this run (the lesson's steps, one each)."""
    folder = os.path.join(REPO_ROOT, "test-artifacts")
    if not os.path.isdir(folder):
        return
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        pictures = [f for f in os.listdir(path) if f.endswith(".png")
                    and os.path.getmtime(os.path.join(path, f)) >= _SESSION_START[0]] if os.path.isdir(path) else []
        if pictures:
            terminalreporter.write_line(f"screenshots ({name}): {len(pictures)} in {path}")
