"""The explorer as a static site: `python -m explorer site RUN... --out DIR`.

The folder it writes needs no Python behind it: any static host serves it (`python -m http.server -d DIR`,
a free static Hugging Face Space). The page (`static/site/`: index.html, site.js, site.css) draws the map on a
2-D canvas and decodes latents in the browser with each run's decoder.onnx through `latent_decoder.js` and the
vendored onnxruntime-web (WASM). Layout:

    index.html  site.js  site.css  latent_decoder.js  README.md (Space front matter)  runs.json
    vendor/onnxruntime-web/        the runtime, as the app vendors it
    runs/<name>/index.json         shapes, labels, KL per dimension, model card, attribute vectors
    runs/<name>/mu.bin  xy.bin  labels.bin   float32 little-endian, row-major (N, D), (N, 2), (N, K)
    runs/<name>/thumbs.png         the thumbnails as one sprite sheet: point i at row i // cols, col i % cols
    runs/<name>/decoder.onnx       copied from the run folder

Every file stays under MAX_FILE_BYTES (a Space needs Xet for larger files): a run exports its first
`max_points` points, fewer when its latents are wide (mu.bin within MU_BUDGET_BYTES), and a sprite sheet that
would be too large is drawn with smaller thumbnails. The site is written into a temporary folder next to
--out and renamed at the end, so a failure leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np

from training.errors import UserError
from training.runfolder import (CONFIG_FILE, DECODER_FILE, LATENTS_FILE, WEIGHTS_FILE, is_run_folder,
                                load_decoder)

from .latent_ops import dims_by_kl, kl_per_dim
from .model_card import OBJECTIVE_ROWS, card, samples_note
from .runs import LoadedRun, load_run_folder
from .sprites import sprite_sheet

MAX_FILE_BYTES = 10_000_000
MU_BUDGET_BYTES = 8_000_000
MAX_POINTS = 10_000
MAX_LIVE_DIMS = 8           # per-dimension sliders on the page
MIN_THUMB = 8               # a sprite sheet never shrinks its thumbnails below this many pixels
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
PAGE_FILES = ("index.html", "site.js", "site.css")
# Only the gzipped wasm, which the page inflates itself: a static host sends a .br file without
# `Content-Encoding: br` (the Gradio app's ui_decode.BrotliRuntime does), and the page cannot inflate brotli.
VENDOR = ("LICENSE", "README.md", "ThirdPartyNotices.txt", "ort-wasm-simd-threaded.wasm.gz", "ort.wasm.bundle.min.mjs")
# A bare run name is looked up here (relative to the working folder), as app.py finds runs.
RUN_ROOTS = ("assets", "runs")
DECODER_HINT = "make it with `python -m training export RUN --decoder-only`"


@dataclass
class SiteRun:
    """One run as written into the site."""
    name: str
    folder: str
    n_points: int
    n_exported: int
    files: dict  # file name -> size in bytes
    data: Optional[dict] = None  # file name -> bytes, until written


# ---- checking the input --------------------------------------------------------------------------------------
def resolve_run(arg: str) -> str:
    """The run folder an argument names: a path, or a bare name of a run under RUN_ROOTS."""
    if os.path.isdir(arg):
        path = arg
    elif os.sep not in arg and "/" not in arg and any(os.path.isdir(os.path.join(r, arg)) for r in RUN_ROOTS):
        path = next(os.path.join(r, arg) for r in RUN_ROOTS if os.path.isdir(os.path.join(r, arg)))
    else:
        raise UserError(f"unknown run {arg!r}: no such folder (nor a run of that name in {', '.join(RUN_ROOTS)}/)")
    if not is_run_folder(path):
        raise UserError(f"{arg}: not a run folder (a run has {CONFIG_FILE} and {WEIGHTS_FILE}; for a folder of "
                        "runs, name each run)")
    if not os.path.isfile(os.path.join(path, LATENTS_FILE)):
        raise UserError(f"{arg}: no {LATENTS_FILE} (make it with `python -m training export {arg}`)")
    if not os.path.isfile(os.path.join(path, DECODER_FILE)):
        raise UserError(f"{arg}: no {DECODER_FILE} ({DECODER_HINT.replace('RUN', arg)})")
    return os.path.abspath(path)


def check_out(out: str) -> str:
    out = os.path.abspath(out)
    if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
        raise UserError(f"--out {out}: exists and is not an empty folder (choose a new one)")
    return out


def folder_names(paths: list) -> list:
    """A URL-safe, unique folder name per run (its folder's name, cleaned)."""
    names, seen = [], set()
    for path in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(path)).strip(".-") or "run"
        name, n = base, 2
        while name in seen:
            name, n = f"{base}-{n}", n + 1
        seen.add(name)
        names.append(name)
    return names


# ---- one run -------------------------------------------------------------------------------------------------
def points_kept(run: LoadedRun, max_points: int) -> int:
    """The first how many exported points the site carries: at most max_points, and few enough that mu.bin
    stays within MU_BUDGET_BYTES."""
    return max(1, min(run.n_points, max_points, MU_BUDGET_BYTES // (4 * run.latent_dim)))


def card_rows(run: LoadedRun, n_points: int) -> list:
    """The model card as [label, text] rows, as the app's card shows it."""
    c = card(run)
    shape = "×".join(str(s) for s in c["latent shape"])
    rows = [["model", c["model"] + (f" ({c['arch']})" if c["arch"] else "")],
            ["dataset", f"{c['dataset']}, {c['image size']}×{c['image size']}×{c['channels']}"],
            ["latent", str(c["latent size"]) + (f" ({shape})" if len(c["latent shape"]) > 1 else "")],
            ["likelihood", c["likelihood"]]]
    rows += [[key, str(c[key])] for key in OBJECTIVE_ROWS if key in c]
    steps = "?" if c["training steps"] is None else f"{c['training steps']:,}"
    rows.append(["training steps", steps + ("" if c["finished"] else " (not finished)")])
    rows.append(["points on this page", f"{n_points:,} of {run.n_points:,} exported"])
    rows.append(["samples", site_samples(run)[1]])
    if c["attributes"]:
        rows.append(["attributes", ", ".join(c["attributes"])])
    rows += [[label, value] for label, value in c["metrics"].items()]
    rows += [["note", problem] for problem in c.get("problems", [])]
    return rows


def site_samples(run: LoadedRun) -> tuple:
    """(kind, note) of the prior samples the page offers: 'gaussian', 'ae' (with a warning) or None. The
    PixelCNN prior of a VQ-VAE is not in decoder.onnx, so the page draws no VQ-VAE samples."""
    name = run.config.model.name
    if name == "vqvae":
        return None, "none here (a VQ-VAE's prior is a PixelCNN, which this page does not run)"
    if name == "ae":
        return "ae", samples_note(name, run.has_prior)
    return ("gaussian", "N(0, I) prior") if run.has_prior else (None, "no")


def attribute_entries(run: LoadedRun) -> dict:
    """attributes.json's vectors (plain and bias-corrected) with the numbers the page shows beside them."""
    out = {}
    for name, entry in ((run.attributes or {}).get("attributes") or {}).items():
        corrected = entry.get("corrected") if isinstance(entry.get("corrected"), dict) else None
        out[name] = {"kind": entry.get("kind"), "auc": entry.get("auc"), "vector": entry["vector"],
                     "corrected": None if corrected is None else {
                         key: corrected.get(key) for key in ("vector", "auc", "confounder", "correlation",
                                                             "balanced")}}
    return out


def float32_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def run_files(run: LoadedRun, decoder: bytes, max_points: int) -> tuple[dict, int]:
    """(file name -> bytes, points kept) of one run's folder in the site."""
    n = points_kept(run, max_points)
    lat = run.latents
    labels = lat["labels"][:n] if "labels" in lat else np.zeros((n, 0), np.float32)
    thumbs = lat["thumbs"][:n] if "thumbs" in lat else None
    sprite, layout = sprite_sheet(thumbs, MAX_FILE_BYTES, MIN_THUMB) if thumbs is not None else (None, None)
    kl = kl_per_dim(run)
    samples, note = site_samples(run)
    index = {
        "format_version": 1, "name": run.name, "model": run.config.model.name,
        "n_points": n, "n_exported": run.n_points, "latent_dim": run.latent_dim,
        "latent_shape": list(run.latent_shape),
        "image": {"channels": run.config.model.channels, "size": run.config.model.image_size},
        "is_vq": run.is_vq, "samples": samples, "samples_note": note,
        "kl_per_dim": None if kl is None else [float(x) for x in kl],
        # A VQ-VAE's latent is a grid of code vectors: one of its numbers alone is not a knob worth a slider.
        "live_dims": [] if run.is_vq else [int(d) for d in dims_by_kl(run)[:MAX_LIVE_DIMS]],
        "labels": {"names": list(run.label_names), "kinds": list(run.label_kinds)},
        "card": card_rows(run, n),
        "attributes": attribute_entries(run),
        "sprite": layout,
        "files": {"mu": "mu.bin", "xy": "xy.bin", "labels": "labels.bin", "decoder": DECODER_FILE,
                  "thumbs": "thumbs.png" if sprite else None},
    }
    files = {"index.json": json.dumps(index, separators=(",", ":"), allow_nan=False).encode(),
             "mu.bin": float32_bytes(lat["mu"][:n]), "xy.bin": float32_bytes(lat["xy"][:n]),
             "labels.bin": float32_bytes(labels), DECODER_FILE: decoder}
    if sprite:
        files["thumbs.png"] = sprite
    return files, n


# ---- the whole site ----------------------------------------------------------------------------------------
def space_readme(title: str, names: list) -> str:
    return (f"---\ntitle: {title}\nemoji: 🧭\ncolorFrom: indigo\ncolorTo: gray\nsdk: static\n"
            f"app_file: index.html\npinned: false\n---\n\n# {title}\n\n"
            f"Latent spaces of {', '.join(names)}, explored in the browser: the decoders run client-side with "
            "onnxruntime-web (WASM), no server code. Written by `python -m explorer site`; serve the folder with "
            "any static host, e.g. `python -m http.server -d .`.\n")


def build_site(run_args: list, out: str, max_points: int = MAX_POINTS, title: str = "VAE latent explorer",
               log=None) -> list:
    """Write the static site of the runs `run_args` (paths, or names under RUN_ROOTS) into the new folder
    `out`; returns a SiteRun per run. UserError, with nothing written, for bad input."""
    if not run_args:
        raise UserError("name at least one run")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
        raise UserError(f"--max-points must be a whole number of at least 1, got {max_points!r}")
    out = check_out(out)
    paths = [resolve_run(arg) for arg in run_args]
    folders = folder_names(paths)
    prepared = []
    for arg, path, folder in zip(run_args, paths, folders):
        decoder = load_decoder(path)
        run = load_run_folder(path, name=folder)
        if run.latents is None:
            reason = run.problems[0] if run.problems else f"no usable {LATENTS_FILE}"
            raise UserError(f"{arg}: {reason}")
        files, n = run_files(run, decoder, max_points)
        for name, data in files.items():
            if len(data) >= MAX_FILE_BYTES:
                raise UserError(f"{arg}: {name} would be {len(data):,} bytes (a file must stay under "
                                f"{MAX_FILE_BYTES:,}); lower --max-points")
        # Held until the site is written: a few MB per run.
        prepared.append(SiteRun(folder, folder, n, run.n_points, {k: len(v) for k, v in files.items()}, files))
        if log:
            cap = "" if n == run.n_points else f" (the first {n:,} of {run.n_points:,} exported points)"
            log(f"{folder}: {n:,} points{cap}")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        write_site(tmp, prepared, title)
        if os.path.isdir(out):
            os.rmdir(out)  # empty, checked above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for r in prepared:
        r.data = None
    return prepared


def write_site(root: str, runs: list, title: str) -> None:
    for name in PAGE_FILES:
        shutil.copyfile(os.path.join(STATIC, "site", name), os.path.join(root, name))
    shutil.copyfile(os.path.join(STATIC, "latent_decoder.js"), os.path.join(root, "latent_decoder.js"))
    vendor = os.path.join(root, "vendor", "onnxruntime-web")
    os.makedirs(vendor)
    for name in VENDOR:
        shutil.copyfile(os.path.join(STATIC, "vendor", "onnxruntime-web", name), os.path.join(vendor, name))
    listing = {"title": title, "runs": [{"name": r.name, "folder": f"runs/{r.folder}/"} for r in runs]}
    with open(os.path.join(root, "runs.json"), "w", encoding="utf-8") as f:
        json.dump(listing, f, indent=1)
    with open(os.path.join(root, "README.md"), "w", encoding="utf-8") as f:
        f.write(space_readme(title, [r.name for r in runs]))
    for r in runs:
        folder = os.path.join(root, "runs", r.folder)
        os.makedirs(folder)
        for name, data in r.data.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)


def site_files(root: str) -> dict:
    """Relative path -> bytes of every file under a written site (for the report and the tests)."""
    sizes = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            sizes[os.path.relpath(path, root).replace(os.sep, "/")] = os.path.getsize(path)
    return dict(sorted(sizes.items()))
