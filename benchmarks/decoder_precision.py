"""What float16 weight storage does to a run's decoder.onnx: its size, its pixels, its speed in onnxruntime.

    python benchmarks/decoder_precision.py                     # every run in assets/
    python benchmarks/decoder_precision.py assets/mnist-vae --points 1000 --timing-runs 2000 [--json]

For each run the decoder is exported twice from its weights, as `python -m training export --decoder-weights
float32` and `float16` would write it, and both files decode the first --points latents of the run's
latents.npz with onnxruntime (CPU, one thread) against the torch model (float32): `mu` for a VAE or an AE,
and for a VQ-VAE the codebook vectors of its exported `codes` (inputs that quantise to those codes with no
tie). Per file: bytes, the largest absolute difference from torch on [0, 1] pixels, the share of 8-bit
pixels (round(255 x)) that differ from torch's and by how many levels at most; then the time of a session's
creation (the fastest of three; onnxruntime folds the float16 file's casts then) and of one single-latent
run (median of --timing-runs, both files alternating in blocks, so that the load of a shared machine falls
on both alike). The last column says which export the shipped decoder.onnx is, byte for byte.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from training.models.base import Encoding  # noqa: E402
from training.onnx_decoder import (INPUT_NAME, OUTPUT_NAME, WEIGHT_STORAGES, decoder_weight_storage,  # noqa: E402
                                   export_decoder)
from training.runfolder import CONFIG_FILE, DECODER_FILE, load_latents, load_run  # noqa: E402

TIMING_BLOCK = 100
SESSION_REPEATS = 3


def session(data: bytes):
    # onnxruntime is a development dependency (requirements-dev.txt), needed only by this benchmark and the tests.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_latents(run, run_dir: str, points: int) -> np.ndarray:
    """(points, D) float32: exported means, or for a VQ-VAE the codebook vectors of its exported codes."""
    latents = load_latents(run_dir)
    if "codes" in latents and hasattr(run.model, "quantizer"):
        codes = torch.from_numpy(np.asarray(latents["codes"][:points], dtype=np.int64))
        with torch.no_grad():
            return run.model.quantizer.lookup(codes).reshape(len(codes), -1).numpy().astype(np.float32)
    return np.ascontiguousarray(latents["mu"][:points], dtype=np.float32)


@torch.no_grad()
def torch_images(model, z: np.ndarray) -> np.ndarray:
    latent = torch.from_numpy(z).reshape(-1, *model.latent_shape)
    return model.decode_image(model.latent_for_decode(Encoding(mean=latent))).numpy()


def pixel_differences(got: np.ndarray, expected: np.ndarray) -> dict:
    levels = np.abs(np.round(got * 255.0) - np.round(expected * 255.0))
    return {"max_abs": float(np.abs(got - expected).max()), "share_8bit_differing": float((levels > 0).mean()),
            "max_8bit_levels": int(levels.max())}


def timings(sessions: dict, z: np.ndarray, runs: int) -> dict:
    """Median microseconds of one single-latent run per storage, the storages alternating in blocks."""
    one = z[:1]
    for s in sessions.values():     # the first runs allocate; they are not what a visitor waits for
        for _ in range(10):
            s.run([OUTPUT_NAME], {INPUT_NAME: one})
    seconds = {name: [] for name in sessions}
    for _ in range(max(1, runs // TIMING_BLOCK)):
        for name, s in sessions.items():
            for _ in range(TIMING_BLOCK):
                start = time.perf_counter()
                s.run([OUTPUT_NAME], {INPUT_NAME: one})
                seconds[name].append(time.perf_counter() - start)
    return {name: float(np.median(values) * 1e6) for name, values in seconds.items()}


def measure(run_dir: str, points: int, timing_runs: int) -> dict:
    run = load_run(run_dir, device="cpu")
    z = run_latents(run, run_dir, points)
    expected = torch_images(run.model, z)
    shipped_path = os.path.join(run_dir, DECODER_FILE)
    shipped = None
    if os.path.isfile(shipped_path):
        with open(shipped_path, "rb") as f:
            shipped = f.read()
    result = {"run": os.path.basename(os.path.normpath(run_dir)), "points": int(len(z)),
              "shipped": "-" if shipped is None else f"{decoder_weight_storage(shipped)}, not this export's bytes"}
    sessions = {}
    for storage in WEIGHT_STORAGES:
        data = export_decoder(run.model, storage)
        if data == shipped:
            result["shipped"] = storage
        created = []
        for _ in range(SESSION_REPEATS):     # the first session of a process also starts onnxruntime
            start = time.perf_counter()
            sessions[storage] = session(data)
            created.append(time.perf_counter() - start)
        got = sessions[storage].run([OUTPUT_NAME], {INPUT_NAME: z})[0]
        result[storage] = {"bytes": len(data), "session_ms": round(min(created) * 1e3, 1),
                           **pixel_differences(got, expected)}
    for storage, us in timings(sessions, z, timing_runs).items():
        result[storage]["run_us"] = round(us, 1)
    return result


def markdown(results: list) -> str:
    lines = ["| run | decoder.onnx bytes float32 → float16 | max abs diff from torch float32 / float16 | "
             "8-bit pixels differing float32 / float16 (max levels) | one latent, µs float32 / float16 | "
             "session ms float32 / float16 | shipped |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        a, b = r["float32"], r["float16"]
        lines.append(f"| {r['run']} | {a['bytes']:,} → {b['bytes']:,} ({b['bytes'] / a['bytes']:.3f}×) | "
                     f"{a['max_abs']:.1e} / {b['max_abs']:.1e} | "
                     f"{a['share_8bit_differing']:.4%} ({a['max_8bit_levels']}) / "
                     f"{b['share_8bit_differing']:.4%} ({b['max_8bit_levels']}) | "
                     f"{a['run_us']:.0f} / {b['run_us']:.0f} | {a['session_ms']:.0f} / {b['session_ms']:.0f} | "
                     f"{r['shipped']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="RUN", help="run folders (default: every run in assets/)")
    parser.add_argument("--points", type=int, default=1000, help="latents from each run's latents.npz")
    parser.add_argument("--timing-runs", type=int, default=2000, help="single-latent runs timed per file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    assets = os.path.join(REPO, "assets")
    runs = args.runs or sorted(os.path.join(assets, name) for name in os.listdir(assets)
                               if os.path.isfile(os.path.join(assets, name, CONFIG_FILE)))
    results = [measure(run_dir, args.points, args.timing_runs) for run_dir in runs]
    print(json.dumps(results, indent=1) if args.json else markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
