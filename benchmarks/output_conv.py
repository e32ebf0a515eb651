"""OutputConv2d's matrix-product path against oneDNN (nn.Conv2d), side by side in one process.

1. The layer alone, forward + backward, for the decoders' last layer in the shipped presets (the seed
   network at 32 px, the dSprites and MNIST presets) and for RGB (where the module keeps oneDNN).
2. The seed network's whole training step (training.trainer.train_step), with the path switched on
   and off in alternating windows of steps, so that both see the same machine load.

Prints one JSON object: milliseconds per call for each variant and the ratio native / matrix path
(above 1: the matrix path is faster), as the median over rounds.

    python benchmarks/output_conv.py [--rounds 7] [--steps 20] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from training.models import output_conv  # noqa: E402
from training.trainer import keep_freed_memory  # noqa: E402

# (name, batch, in_channels, out_channels, side): the last decoder layer of each preset family.
LAYERS = [("seed network (MNIST 32 px)", 100, 16, 1, 32),
          ("mnist presets (28 px padded to 32)", 64, 32, 1, 32),
          ("bundled dSprites (64 px)", 64, 16, 1, 64),
          ("dsprites presets (64 px)", 64, 32, 1, 64),
          ("RGB, 3 channels (stays on oneDNN)", 64, 16, 3, 64)]


def time_calls(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def layer_rounds(batch, c_in, c_out, side, rounds, calls):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, side, side, generator=g).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    conv = output_conv.OutputConv2d(c_in, c_out).to(memory_format=torch.channels_last)
    grad = torch.randn(batch, c_out, side, side, generator=g)

    def native():
        x.grad = None
        F.conv2d(x, conv.weight, conv.bias, padding=1).backward(grad)

    def matrix():
        x.grad = None
        output_conv.output_conv3x3(x, conv.weight, conv.bias).backward(grad)

    for fn in (native, matrix):  # warm-up: oneDNN primitive creation, allocator
        time_calls(fn, 3)
    samples = {"native": [], "matrix": []}
    for _ in range(rounds):
        samples["native"].append(time_calls(native, calls))
        samples["matrix"].append(time_calls(matrix, calls))
    return samples


def step_rounds(rounds, steps):
    from train_throughput import DEFAULT_DATA_DIR, ms_per_step, seed_run_config, training_state

    cfg = seed_run_config(steps, 100, DEFAULT_DATA_DIR, "cpu", channels_last=True)
    state = training_state(cfg)
    default = output_conv.MAX_OUT_CHANNELS

    def window(max_out_channels):
        output_conv.MAX_OUT_CHANNELS = max_out_channels  # ms_per_step's untimed first step is the switch-over
        return ms_per_step(state, steps, cfg.train.grad_clip)

    samples = {"native": [], "matrix": []}
    try:
        for max_out_channels in (default, 0):  # warm-up of both paths, not recorded
            window(max_out_channels)
        for _ in range(rounds):
            samples["native"].append(window(0))
            samples["matrix"].append(window(default))
    finally:
        output_conv.MAX_OUT_CHANNELS = default
    return samples


def summary(samples) -> dict:
    ratios = [n / m for n, m in zip(samples["native"], samples["matrix"])]
    return {"native_ms": round(statistics.median(samples["native"]), 3),
            "matrix_ms": round(statistics.median(samples["matrix"]), 3),
            "native_over_matrix": round(statistics.median(ratios), 3),
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=10, help="layer calls per timed window")
    ap.add_argument("--steps", type=int, default=20, help="training steps per timed window")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--skip-step", action="store_true", help="only the layer measurements")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as train() does on the CPU
    result = {"layers": {}}
    for name, batch, c_in, c_out, side in LAYERS:
        entry = summary(layer_rounds(batch, c_in, c_out, side, args.rounds, args.calls))
        entry["shape"] = f"batch {batch}, {c_in} -> {c_out} channels, {side}x{side}"
        result["layers"][name] = entry
    if not args.skip_step:
        result["seed_train_step"] = summary(step_rounds(args.rounds, args.steps))
    result.update({"rounds": args.rounds, "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "module_path_for_out_channels_up_to": output_conv.MAX_OUT_CHANNELS})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
