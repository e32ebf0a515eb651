"""Tiny real runs for the evaluation / export / prior tests, trained once per test session.

Each run is a real `training.trainer.train` run folder, small enough to train in seconds on 2 CPU
cores. `tiny_run(kind)` trains it the first time it is asked for and returns its folder afterwards
(cached in one temp folder for the whole pytest process, removed at exit). Tests that change a run
folder must copy it first (`copy_run`).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

import torch

from training.config import DataConfig, RunConfig, TrainConfig, model_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The official MNIST test split in ../shared/data, or the stand-in tests/conftest.py writes where it is missing.
SHARED_DATA = os.environ.get("VAE_TEST_MNIST_DIR") or os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))

_ROOT = None
_RUNS: dict = {}


def _root() -> str:
    global _ROOT
    if _ROOT is None:
        _ROOT = tempfile.mkdtemp(prefix="vae-eval-tests-")
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


def _train_config(steps: int, batch_size: int = 32, lr: float = 2e-3) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, device="cpu", seed=1, amp=False,
                       log_every=max(1, steps // 4), sample_every=steps, checkpoint_every=steps, grid_n=16)


def run_config(kind: str) -> RunConfig:
    """The configs of the tiny runs (MNIST: the shipped test split, 1,000 training images)."""
    mnist = DataConfig(name="mnist", data_dir=SHARED_DATA, subset=1000)
    if kind == "vae-mnist":
        return RunConfig(data=mnist, model=model_config(name="vae", hidden=[8, 16], fc_dim=32, latent_dim=4),
                         train=_train_config(60))
    if kind == "vae-gaussian-mnist":
        return RunConfig(data=mnist, model=model_config(name="vae", hidden=[8, 16], fc_dim=32, latent_dim=4,
                                                       likelihood="gaussian", gaussian_std=0.2),
                         train=_train_config(40))
    if kind == "vq-mnist":
        return RunConfig(data=mnist, model=model_config(name="vqvae", hidden=[8, 16], num_codes=16, code_dim=4,
                                                       vq_downsample=2),
                         train=_train_config(200))
    # dSprites at 32 px (rendered at 64, downscaled by the dataset): 4x cheaper than the native size.
    dsprites = DataConfig(name="dsprites", image_size=32, subset=20_000)
    small = dict(hidden=[16, 16, 16], fc_dim=64, latent_dim=6)
    if kind == "vae-dsprites":
        return RunConfig(data=dsprites, model=model_config(name="vae", **small), train=_train_config(300, lr=1e-3))
    if kind == "btcvae-dsprites":
        return RunConfig(data=dsprites, model=model_config(name="btcvae", beta=4.0, **small),
                         train=_train_config(300, lr=1e-3))
    raise KeyError(kind)


def tiny_run(kind: str) -> str:
    """Folder of a trained tiny run of the given kind (trained on first use)."""
    if kind not in _RUNS:
        from training.trainer import train

        path = os.path.join(_root(), kind)
        with one_thread():
            train(run_config(kind), path, progress=False)
        _RUNS[kind] = path
    return _RUNS[kind]


def copy_run(kind: str, dest: str) -> str:
    shutil.copytree(tiny_run(kind), dest)
    return dest


@contextlib.contextmanager
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is faster than two fighting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def python_m_training(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def assert_one_line_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, one `error: ...` line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
