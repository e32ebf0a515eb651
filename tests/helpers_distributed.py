"""Data-parallel test runs: tiny configs, and a script that torchrun starts once for several trainings.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/helpers_distributed.py OUT

Each process imports torch once and then trains, in OUT:
  bad-batch/      a global batch of 15 over 2 processes: must fail with a UserError on every rank
  vae/            the VAE through the command line (`training.cli.main`, what `-m training train` runs)
  vqvae/          the VQ-VAE through `train()`
  btcvae/         β-TCVAE (MSS estimator, whose weights depend on the batch order) through `train()`
  vae-half/       the VAE for 5 steps (a 2-process checkpoint for 1 process to continue)
  resume-1to2/    a 1-process checkpoint at step 5 (made by the test beforehand) continued to step 10
Every run is 10 steps at most: float rounding differences between 1 and 2 processes (~1e-7) grow
with every Adam step (~1e-5 after 10 steps, ~1e-4 after 20).
and rank 0 writes OUT/worker.json with what it saw.
"""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from helpers_trainer import tiny_cli_args, tiny_config  # noqa: E402
from training.config import RunConfig  # noqa: E402

STEPS = 10
HALF = STEPS // 2


def dp_config(model: str, steps: int = STEPS, **train_overrides) -> RunConfig:
    """tiny_config without BatchNorm (SyncBatchNorm is GPU-only; on the CPU each process would normalise
    its own shard), checkpoint and grids every 10 steps, logs every 5."""
    cfg = tiny_config(model, steps=steps, checkpoint_every=10, sample_every=10, log_every=5, **train_overrides)
    cfg.model.batch_norm = False
    if model == "btcvae":
        cfg.model.beta, cfg.model.tc_estimator = 4.0, "mss"
    return cfg


def dp_cli_args(out: str, steps: int = STEPS) -> list:
    """`python -m training train` arguments equivalent to dp_config("vae", steps)."""
    return tiny_cli_args(out, steps=steps) + ["--set", "model.batch_norm=false"]


def main(out: str) -> int:
    import torch
    import torch.distributed as dist

    from training.cli import main as cli_main
    from training.errors import UserError
    from training.trainer import train

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    seen: dict = {"world_size": int(os.environ["WORLD_SIZE"])}
    try:
        train(dp_config("vae", batch_size=15), os.path.join(out, "bad-batch"), progress=False)
        seen["bad_batch"] = None
    except UserError as e:
        seen["bad_batch"] = str(e)
    seen["cli_exit_code"] = cli_main(dp_cli_args(os.path.join(out, "vae")))
    train(dp_config("vqvae"), os.path.join(out, "vqvae"), progress=False)
    train(dp_config("btcvae"), os.path.join(out, "btcvae"), progress=False)
    train(dp_config("vae", steps=HALF), os.path.join(out, "vae-half"), progress=False)
    run = train(dp_config("vae"), os.path.join(out, "resume-1to2"), resume=True, progress=False)
    seen["resumed_step"] = run.step
    seen["process_group_backend"] = dist.get_backend() if dist.is_initialized() else None
    if rank == 0:
        with open(os.path.join(out, "worker.json"), "w") as f:
            json.dump(seen, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
