"""Training throughput: the project's trainer against the seed notebook's loop, same model, same machine.

Runs ../shared/bench/seed_baseline.py (the notebook's VAE fed by a DataLoader with per-sample PIL
transforms) as a subprocess, then the project's trainer in this process on the same data (MNIST
resized to 32x32), model (ModelConfig of the seed architecture), batch (100) and optimiser
(Adam 1e-3, betas (0.5, 0.999)), and prints one JSON object with both images/s and their ratio.

The trainer is measured twice, both through its real code path:
  - `trainer_images_per_s`: the whole `train()` loop (batch sampling, model.loss, backward, clipping,
    optimiser step, NaN checks, logging), from the `images_per_s` that train() writes to metrics.jsonl
    for the steps after the warm-up (file writes excluded);
  - `step_images_per_s`: `training.trainer.train_step` alone on batches from `BatchSampler`.
The machines are shared and noisy: compare ratios from the same run, and run it more than once.

    python benchmarks/train_throughput.py [--steps 60] [--warmup 5] [--rounds 3] [--threads N] [--compile]
                                          [--baseline PATH] [--data-dir PATH] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

from training.config import DataConfig, RunConfig, TrainConfig, model_config  # noqa: E402
from training.device import resolve_device  # noqa: E402
from training.runfolder import logged_images_per_s, read_log  # noqa: E402
from training.trainer import (Amp, BatchSampler, build_seeded_model, has_convs, load_training_dataset,  # noqa: E402
                              make_optimizer, train, train_step)

DEFAULT_BASELINE = os.path.join(REPO_ROOT, "..", "shared", "bench", "seed_baseline.py")
DEFAULT_DATA_DIR = os.path.join(REPO_ROOT, "..", "shared", "data")


def seed_run_config(steps: int, batch: int, data_dir: str, device: str, channels_last: bool,
                    compile: bool = False) -> RunConfig:
    """The seed notebook's model and optimiser, expressed as a project RunConfig."""
    return RunConfig(
        data=DataConfig(name="mnist", data_dir=data_dir, image_size=32, options={"download": False}),
        model=model_config(name="vae", image_size=32, channels=1, latent_dim=200, hidden=[16, 32, 64, 128],
                          kernel_size=3, batch_norm=True, activation="leaky_relu", fc_dim=0, likelihood="gaussian"),
        train=TrainConfig(steps=steps, batch_size=batch, lr=1e-3, betas=[0.5, 0.999], device=device,
                          channels_last=channels_last, compile=compile, seed=0))


def run_baseline(path: str, steps: int, warmup: int, batch: int, threads: Optional[int]) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, path, "--steps", str(steps), "--warmup", str(warmup), "--batch", str(batch)],
                          capture_output=True, text=True, timeout=3600, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"baseline failed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_train_loop(cfg: RunConfig, warmup: int, steps: int) -> float:
    """images/s of the full train() loop over the `steps` steps that follow `warmup` steps."""
    cfg.train.steps = warmup + steps
    cfg.train.log_every = warmup
    cfg.train.sample_every = cfg.train.checkpoint_every = warmup + steps  # file writes only at the end
    with tempfile.TemporaryDirectory(prefix="throughput-") as out:
        train(cfg, os.path.join(out, "run"), progress=False)
        records = read_log(os.path.join(out, "run"))
    return logged_images_per_s(records, warmup, cfg.train.batch_size)


def training_state(cfg: RunConfig):
    """(model, optimizer, amp, batches) set up the way train() sets them up, for timing train_step."""
    device = resolve_device(cfg.train.device)
    dataset = load_training_dataset(cfg)
    model = build_seeded_model(cfg, device)
    model.train()
    optimizer = make_optimizer(model, cfg.train)
    amp = Amp(device, cfg.train.amp)
    batches = BatchSampler(dataset, cfg.train.batch_size, cfg.train.seed, device,
                           channels_last=cfg.train.channels_last and has_convs(model))
    return model, optimizer, amp, batches


def ms_per_step(state, steps: int, grad_clip, first_step: int = 0) -> float:
    """Milliseconds per train_step over `steps` steps on `state` (from training_state), after one untimed
    step (the end of a warm-up, or a switch-over between variants timed in alternating windows)."""
    model, optimizer, amp, batches = state
    float(train_step(model, optimizer, amp, batches.next(), first_step, grad_clip).loss.detach())  # sync
    start = time.perf_counter()
    for step in range(first_step + 1, first_step + 1 + steps):
        out = train_step(model, optimizer, amp, batches.next(), step, grad_clip)
    float(out.loss.detach())  # wait for the last step (matters on a GPU)
    return (time.perf_counter() - start) / steps * 1e3


def measure_train_step(cfg: RunConfig, warmup: int, steps: int) -> float:
    """images/s of train_step alone, on batches drawn the way train() draws them."""
    state = training_state(cfg)
    model, optimizer, amp, batches = state
    for step in range(warmup):
        train_step(model, optimizer, amp, batches.next(), step, cfg.train.grad_clip)
    return cfg.train.batch_size * 1e3 / ms_per_step(state, steps, cfg.train.grad_clip, first_step=warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="path of seed_baseline.py")
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="folder with MNIST/raw/ (the torchvision layout)")
    ap.add_argument("--device", default="cpu", help="device of the project's trainer (the baseline runs on the CPU)")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="train with train.compile (torch.compile); the "
                    "compile happens in the warm-up steps and is not timed")
    ap.add_argument("--threads", type=int, help="torch threads for both (default: torch's default, the core count)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate baseline and trainer this many times (on a busy machine: compare the pairs)")
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    def make_cfg() -> RunConfig:
        return seed_run_config(args.steps, args.batch, args.data_dir, args.device, not args.no_channels_last,
                               args.compile)

    rounds = []
    for _ in range(args.rounds):
        baseline = None if args.skip_baseline else run_baseline(args.baseline, args.steps, args.warmup, args.batch,
                                                                args.threads)["images_per_s"]
        loop = measure_train_loop(make_cfg(), args.warmup, args.steps)
        step = measure_train_step(make_cfg(), args.warmup, args.steps)
        rounds.append({"baseline_images_per_s": baseline, "trainer_images_per_s": round(loop, 1),
                       "step_images_per_s": round(step, 1),
                       "ratio": round(loop / baseline, 2) if baseline else None,
                       "step_ratio": round(step / baseline, 2) if baseline else None})
    result = dict(rounds[len(rounds) // 2] if len(rounds) == 1 else median_round(rounds))
    result.update({"steps": args.steps, "warmup": args.warmup, "batch": args.batch, "device": args.device,
                   "channels_last": not args.no_channels_last, "compile": args.compile, "threads": torch.get_num_threads(),
                   "torch": torch.__version__})
    if len(rounds) > 1:
        result["rounds"] = rounds
    print(json.dumps(result))


def median_round(rounds: list) -> dict:
    """The round whose trainer/baseline ratio is the median one (each ratio comes from one time window)."""
    key = "ratio" if rounds[0]["ratio"] is not None else "trainer_images_per_s"
    return sorted(rounds, key=lambda r: r[key])[len(rounds) // 2]


if __name__ == "__main__":
    main()
