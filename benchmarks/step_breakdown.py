"""Where the seed network's training step spends its time, against the step time that 3x the baseline needs.

The throughput target is 3x the images/s of ../shared/bench/seed_baseline.py. This script says how far
each part of the step is from that budget, on the machine it runs on:

1. the baseline's images/s (the notebook's loop, a subprocess, as train_throughput.py runs it) and from it
   the step time that 3x needs: batch / (3 x baseline images/s);
2. the trainer's step (training.trainer.train_step on the seed network, set up as train() sets it up);
3. the same step with every ATen / custom op timed one by one (a TorchDispatchMode), grouped by what the op
   does (timed in a separate run, so the groups' sum is only roughly the step: the gap is Python, the
   autograd engine and dispatch, and the timer's own cost moves it either way);
4. what oneDNN's own primitives take inside the convolutions (ONEDNN_VERBOSE exec times, a subprocess):
   the floor for the convolutions as long as PyTorch's CPU kernels run them;
5. the step of a stripped copy of the network whose batch norms and activations are identities, in windows
   alternating with the real step: a lower bound for any fusion of those layers that keeps oneDNN's
   convolutions (they would cost at least nothing).

Prints one JSON object (milliseconds per step).

    python benchmarks/step_breakdown.py [--steps 20] [--rounds 5] [--threads N] [--skip-baseline]
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from train_throughput import (DEFAULT_BASELINE, DEFAULT_DATA_DIR, ms_per_step, run_baseline,  # noqa: E402
                              seed_run_config, training_state)
from torch import nn  # noqa: E402

from training.trainer import make_optimizer, train_step  # noqa: E402

BATCH = 100  # the seed notebook's batch

# Op name prefix -> group, first match wins (names as torch prints an OpOverload: "aten.mm.default").
GROUPS = [("aten.convolution_backward.", "convolutions, backward"),
          ("aten.convolution.", "convolutions, forward"),
          ("aten.native_batch_norm", "batch norm"),
          ("aten.leaky_relu", "activations"), ("aten.sigmoid", "activations"),
          ("aten.mm.", "linear layers"), ("aten.addmm.", "linear layers"),
          ("aten._fused_adam", "optimizer and clipping"), ("aten._foreach", "optimizer and clipping")]


def group_of(op_name: str) -> str:
    return next((group for prefix, group in GROUPS if op_name.startswith(prefix)), "other ops")


class OpTimer(TorchDispatchMode):
    """Wall time of every op that reaches the dispatcher, summed per group."""

    def __init__(self):
        super().__init__()
        self.seconds = collections.defaultdict(float)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        self.seconds[group_of(str(func))] += time.perf_counter() - start
        return out


def stripped(module: nn.Module) -> nn.Module:
    """module with BatchNorm2d / LeakyReLU replaced by identities (every convolution stays)."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm2d, nn.LeakyReLU)):
            setattr(module, name, nn.Identity())
        else:
            stripped(child)
    return module


def paired_steps(state, cfg, steps: int, rounds: int) -> tuple:
    """Median step ms of the real network and of its stripped copy, timed in alternating windows."""
    model, optimizer, amp, batches = state
    bare = stripped(copy.deepcopy(model))
    bare_state = (bare, make_optimizer(bare, cfg.train), amp, batches)
    real, lower = [], []
    for _ in range(rounds):
        real.append(ms_per_step(state, steps, cfg.train.grad_clip))
        lower.append(ms_per_step(bare_state, steps, cfg.train.grad_clip))
    return statistics.median(real), statistics.median(lower)


def op_breakdown(state, cfg, steps: int) -> dict:
    model, optimizer, amp, batches = state
    timer = OpTimer()
    with timer:
        for step in range(steps):
            train_step(model, optimizer, amp, batches.next(), step, cfg.train.grad_clip)
    return {group: seconds / steps * 1e3 for group, seconds in timer.seconds.items()}


def onednn_exec_ms(steps: int, threads) -> dict:
    """oneDNN's own exec time per step by primitive kind, from a subprocess run with ONEDNN_VERBOSE=1."""
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--verbose-child", "--steps", str(steps)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"oneDNN verbose run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    marker = proc.stdout.index("=== timed steps ===")
    per_kind = collections.defaultdict(float)
    for line in proc.stdout[marker:].splitlines():
        fields = line.split(",")
        # onednn_verbose,v1,primitive,exec,cpu,<kind>,<implementation>,...,<exec time in ms>
        if len(fields) > 6 and fields[0] == "onednn_verbose" and fields[2:4] == ["primitive", "exec"]:
            per_kind[fields[5]] += float(fields[-1]) / steps
    return dict(per_kind)


def onednn_version():
    found = re.search(r"(?:MKL-DNN|oneDNN) v([\d.]+)", torch.__config__.show())
    return found.group(1) if found else None


def verbose_child(args) -> None:
    cfg = seed_run_config(args.steps, BATCH, args.data_dir, "cpu", True)
    state = training_state(cfg)
    ms_per_step(state, 5, cfg.train.grad_clip)  # warm-up: oneDNN creates its primitives on first use
    sys.stdout.flush()
    print("=== timed steps ===", flush=True)
    # ms_per_step runs one step more than it times: count it in the marker's window.
    ms_per_step(state, args.steps - 1, cfg.train.grad_clip)
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="steps per timing window")
    ap.add_argument("--rounds", type=int, default=5, help="timing windows (the median is reported)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's default, the core count)")
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="path of seed_baseline.py")
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="folder with MNIST/raw/ (the torchvision layout)")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--verbose-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.verbose_child:
        return verbose_child(args)

    baseline = None
    if not args.skip_baseline:
        baseline = statistics.median(run_baseline(args.baseline, 60, 5, BATCH, args.threads)["images_per_s"]
                                     for _ in range(3))
    cfg = seed_run_config(args.steps, BATCH, args.data_dir, "cpu", True)
    state = training_state(cfg)
    step_ms, stripped_ms = paired_steps(state, cfg, args.steps, args.rounds)
    groups = op_breakdown(state, cfg, args.steps * 2)
    onednn = onednn_exec_ms(args.steps * 2, args.threads)
    result = {
        "step_ms": round(step_ms, 2),
        "trainer_images_per_s": round(BATCH / step_ms * 1e3, 1),
        "stripped_step_ms": round(stripped_ms, 2),
        "groups_ms": {k: round(v, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "ops_sum_ms": round(sum(groups.values()), 2),
        "onednn_exec_ms": {k: round(v, 2) for k, v in sorted(onednn.items(), key=lambda kv: -kv[1])},
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "onednn": onednn_version(),
    }
    if baseline:
        budget = BATCH / (3 * baseline) * 1e3
        convs = groups["convolutions, forward"] + groups["convolutions, backward"]
        # What 3x leaves for everything that is not a oneDNN convolution, against what that takes now.
        result.update({"baseline_images_per_s": baseline, "ratio": round(BATCH / step_ms * 1e3 / baseline, 2),
                       "step_ms_for_3x": round(budget, 2), "convolutions_ms": round(convs, 2),
                       "rest_ms": round(step_ms - convs, 2), "rest_ms_for_3x": round(budget - convs, 2),
                       "stripped_ratio": round(BATCH / stripped_ms * 1e3 / baseline, 2)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
