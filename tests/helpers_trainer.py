"""Shared pieces of the trainer and CLI tests: tiny run configs on the shipped MNIST test split."""
from __future__ import annotations

import os
import subprocess
import sys

from training.config import DataConfig, RunConfig, TrainConfig, model_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The official MNIST test split in ../shared/data, or the stand-in tests/conftest.py writes where it is missing.
SHARED_DATA = os.environ.get("VAE_TEST_MNIST_DIR") or os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))


def tiny_config(model: str = "vae", steps: int = 20, **train_overrides) -> RunConfig:
    """A model small enough to take milliseconds per step: MNIST 28 px, 2 conv stages, 4 latents."""
    model_cfg = model_config(name=model, hidden=[8, 16], fc_dim=32, latent_dim=4, batch_norm=True)
    if model == "vqvae":
        model_cfg.num_codes, model_cfg.code_dim = 16, 4
    train = dict(steps=steps, batch_size=16, lr=2e-3, log_every=5, sample_every=10, checkpoint_every=10,
                 grid_n=16, device="cpu", seed=3)
    train.update(train_overrides)
    return RunConfig(data=DataConfig(name="mnist", data_dir=SHARED_DATA, subset=1000),
                     model=model_cfg, train=TrainConfig(**train))


def tiny_cli_args(out: str, steps: int = 20, **extra) -> list:
    """`python -m training train` arguments equivalent to tiny_config()."""
    args = ["train", "--model", "vae", "--dataset", "mnist", "--data-dir", SHARED_DATA, "--subset", "1000",
            "--hidden", "8", "16", "--latent-dim", "4", "--set", "model.fc_dim=32", "--set", "model.batch_norm=true",
            "--steps", str(steps), "--batch-size", "16", "--lr", "2e-3", "--seed", "3", "--device", "cpu",
            "--log-every", "5", "--sample-every", "10", "--checkpoint-every", "10", "--set", "train.grid_n=16",
            "--out", out, "--quiet"]
    for flag, value in extra.items():
        args += [f"--{flag.replace('_', '-')}", str(value)]
    return args


def python_m_training(args: list, **popen_kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.Popen([sys.executable, "-m", "training", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs)


def looks_like_valid_run(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(os.path.join(path, "model.safetensors"))
