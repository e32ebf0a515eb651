"""Subnormal floats in a CPU training: the trainer's flush-to-zero against none, same state, same machine.

Adam's first moment of a weight whose gradient is exactly zero (one feeding a dead ReLU unit) shrinks
by beta1 every step until it is subnormal, and x86 arithmetic on subnormals is many times slower. The
trainer therefore runs its loop under `training.trainer.subnormals_flushed`. This benchmark shows
what that buys and what it costs:

1. trains a preset for --steps steps into a scratch folder with the real trainer, flush off (run
   folder, checkpoint.pt), and counts the subnormal values in the checkpoint's weights and optimiser
   state;
2. resumes that checkpoint for --more steps, alternately with the flush off (the loop run under a null
   context instead) and on, --rounds times each, every time from a fresh copy of the same checkpoint;
3. prints one JSON object: the median images/s of each (from the `images_per_s` that train() logs),
   their ratio, and whether the weights after the --more steps are bit for bit the same.

    python benchmarks/subnormals.py [--config training/configs/bundled_dsprites_btcvae.json]
                                    [--steps 1000] [--more 300] [--rounds 2] [--threads 1]
    python benchmarks/subnormals.py --from RUN_DIR [--more 300]    # start from a run's checkpoint.pt
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

from training import trainer  # noqa: E402
from training.runfolder import (CHECKPOINT_FILE, load_checkpoint, load_config, logged_images_per_s, read_config,  # noqa: E402
                                read_log, save_config)


def count_subnormals(tensors) -> tuple[int, int]:
    """(subnormal values, all values) over the floating-point tensors given."""
    tiny = torch.finfo(torch.float32).tiny
    subnormal = total = 0
    for t in tensors:
        if torch.is_tensor(t) and t.is_floating_point():
            t = t.float()
            subnormal += int(((t != 0) & (t.abs() < tiny)).sum())
            total += t.numel()
    return subnormal, total


def checkpoint_subnormals(checkpoint: dict) -> dict:
    moments = [v for state in checkpoint["optimizer"]["state"].values() for v in state.values()]
    weights = count_subnormals(checkpoint["model"].values())
    optimiser = count_subnormals(moments)
    return {"weights": {"subnormal": weights[0], "values": weights[1]},
            "optimiser_state": {"subnormal": optimiser[0], "values": optimiser[1]}}


def train(cfg, run_dir: str, flush: bool, resume: bool = False):
    """The real trainer, with its loop under the flush (flush=True) or under a null context."""
    real = trainer.subnormals_flushed
    if not flush:
        trainer.subnormals_flushed = lambda device: contextlib.nullcontext()
    try:
        return trainer.train(cfg, run_dir, resume=resume, progress=False)
    finally:
        trainer.subnormals_flushed = real


def quiet(cfg):
    """cfg on the CPU with no sample grids, snapshots or checkpoints inside the timed steps."""
    cfg.train.device = "cpu"
    cfg.train.snapshots = 0
    cfg.train.sample_every = cfg.train.checkpoint_every = 10 ** 9  # the last step still writes both
    return cfg


def resume_for(source: str, scratch: str, more: int, flush: bool) -> tuple[float, dict]:
    """Resume a copy of `source` for `more` steps; returns (images/s over those steps, final weights)."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(source, scratch)
    cfg = load_config(scratch)
    start = cfg.train.steps
    cfg.train.steps = start + more
    run = train(cfg, scratch, flush, resume=True)
    speed = logged_images_per_s(read_log(scratch), start, cfg.train.batch_size)
    return speed, {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=os.path.join(REPO_ROOT, "training", "configs", "bundled_dsprites_btcvae.json"))
    ap.add_argument("--steps", type=int, default=1000, help="steps trained before the comparison")
    ap.add_argument("--from", dest="source", help="a run folder whose checkpoint.pt to start from instead "
                                                 "(read only: every measurement resumes a copy)")
    ap.add_argument("--more", type=int, default=300, help="steps timed from that checkpoint, per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="measurements of each setting, alternating")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the bundled runs train on 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        if args.source:
            shutil.copytree(args.source, base, ignore=shutil.ignore_patterns("snapshots", "*_*.png"))
            cfg = load_config(base)
        else:
            cfg = read_config(args.config)
            cfg.train.steps = args.steps
            train(quiet(cfg), base, flush=False)  # the state a training reaches without the flush
        checkpoint = load_checkpoint(os.path.join(base, CHECKPOINT_FILE))
        counts = checkpoint_subnormals(checkpoint)
        cfg.train.steps = checkpoint["step"]
        quiet(cfg)
        save_config(base, cfg)  # resumed copies take their settings and starting step from here
        speeds = {False: [], True: []}
        weights = {}
        for _ in range(args.rounds):
            for flush in (False, True):
                speed, weights[flush] = resume_for(base, os.path.join(tmp, "resumed"), args.more, flush)
                speeds[flush].append(speed)
    same = all(torch.equal(weights[False][k], weights[True][k]) for k in weights[False])
    off, on = statistics.median(speeds[False]), statistics.median(speeds[True])
    print(json.dumps({
        "from": args.source or os.path.relpath(args.config, REPO_ROOT), "steps_before": cfg.train.steps, "steps_timed": args.more,
        "threads": args.threads, "torch": torch.__version__,
        "subnormals_at_checkpoint": counts,
        "images_per_s_flush_off": round(off, 1), "images_per_s_flush_on": round(on, 1),
        "speedup": round(on / off, 2), "weights_bit_identical": same,
        "rounds": {"off": [round(v, 1) for v in speeds[False]], "on": [round(v, 1) for v in speeds[True]]},
    }, indent=1))


if __name__ == "__main__":
    main()
