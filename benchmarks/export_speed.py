"""How long `python -m training export` takes for 10,000 points, and how fast a run folder loads back.

    python benchmarks/export_speed.py                # builds a dSprites run of the published architecture
    python benchmarks/export_speed.py --run RUN      # or measures an existing run folder (its export files
                                                     # are rewritten)

1. Trains a dSprites run with the architecture of Burgess et al. (64x64, four stride-2 convs, 10 latents) for
   a few steps: the export's cost depends on the model and the number of points, not on training length.
2. Runs `python -m training export RUN --n 10000` in a fresh process, as a user would: the wall time
   includes importing torch and umap and the numba compilation of a first UMAP fit.
3. In another fresh process (imports done first), times `load_run(RUN)` + loading latents.npz and
   attributes.json: what the explorer does when it opens a run.

Targets on the 2-core CPU: export < 120 s, load < 1 s. Prints one JSON object; exit code 1 if a target
is missed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TARGETS = {"export_s": 120.0, "load_s": 1.0}

LOAD_SNIPPET = """
import json, os, sys, time
import numpy as np
from training.runfolder import load_latents, load_run
run_dir = sys.argv[1]
start = time.perf_counter()
run = load_run(run_dir)
latents = load_latents(run_dir)
with open(os.path.join(run_dir, "attributes.json")) as f:
    attributes = json.load(f)
print(json.dumps({"load_s": time.perf_counter() - start, "points": int(len(latents["mu"])),
                  "latents_mb": os.path.getsize(os.path.join(run_dir, "latents.npz")) / 2**20}))
"""


def build_run(root: str, steps: int) -> str:
    from training.config import DataConfig, RunConfig, TrainConfig, model_config
    from training.trainer import train

    out = os.path.join(root, "dsprites-vae")
    cfg = RunConfig(data=DataConfig(name="dsprites"), model=model_config(name="vae"),
                    train=TrainConfig(steps=steps, batch_size=64, device="cpu", amp=False, log_every=steps,
                                      sample_every=steps, checkpoint_every=steps, grid_n=16))
    train(cfg, out, progress=False)
    return out


def subprocess_env() -> dict:
    env = dict(os.environ, PYTHONPATH=REPO)
    env.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "vae-explorer-numba-cache"))
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="export this run folder instead of building one")
    p.add_argument("--points", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=20, help="training steps of the built run")
    p.add_argument("--keep", action="store_true", help="keep the built run folder (path is printed)")
    args = p.parse_args(argv)

    root = None
    if args.run:
        run_dir = args.run
    else:
        root = tempfile.mkdtemp(prefix="export-speed-")
        started = time.perf_counter()
        run_dir = build_run(root, args.steps)
        print(f"built {run_dir} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    try:
        started = time.perf_counter()
        export = subprocess.run([sys.executable, "-m", "training", "export", run_dir, "--n", str(args.points)],
                                cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
        export_s = time.perf_counter() - started
        if export.returncode != 0:
            print(export.stdout + export.stderr, file=sys.stderr)
            return 1
        stages = {}
        for name, pattern in (("encode", r"encoded \d+ points in ([\d.]+) s"),
                              ("umap", r"fitted the UMAP in ([\d.]+) s")):
            match = re.search(pattern, export.stdout)
            stages[name] = float(match.group(1)) if match else None
        load = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, run_dir], cwd=REPO, env=subprocess_env(),
                              capture_output=True, text=True)
        if load.returncode != 0:
            print(load.stderr, file=sys.stderr)
            return 1
        loaded = json.loads(load.stdout.strip().splitlines()[-1])
        result = {
            "points": loaded["points"], "cpu_threads": os.cpu_count(),
            "export_s": round(export_s, 2),
            "export_stages_s": stages,
            "load_s": round(loaded["load_s"], 3), "latents_mb": round(loaded["latents_mb"], 2),
            "targets": TARGETS,
        }
        result["ok"] = result["export_s"] < TARGETS["export_s"] and result["load_s"] < TARGETS["load_s"]
        print(json.dumps(result, indent=2))
        return 0 if result["ok"] else 1
    finally:
        if root and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif root:
            print(f"kept {root}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
