"""Export a run for the explorer: latents.npz (latent table + 2-D map), attributes.json, decoder.onnx and,
for a run trained with weight snapshots, timeline.npz.

The explorer fits nothing: everything it shows about the data (posterior means, labels, thumbnails,
the UMAP map, attribute vectors) is computed here, once, and stored in the run folder
(docs/run-format.md). New latents are placed on the map by nearest neighbours over the exported means
(training/latent_map.py), never by running UMAP in the app. decoder.onnx lets a browser decode latents
without a round trip to Python (training/onnx_decoder.py). timeline.npz follows the snapshots
(training/timeline.py).
"""
from __future__ import annotations

import time

import numpy as np

from .attributes import attribute_vectors
from .encoding import EncodedPoints, SPLIT_CODE, choose_indices, encode_split, open_dataset
from .errors import UserError
from .latent_map import fit_map
from .onnx_decoder import DEFAULT_WEIGHT_STORAGE, check_weight_storage, export_decoder, latent_size
from .runfolder import (LATENTS_FILE, MAX_LATENT_POINTS, is_codebook_timeline, list_snapshots, load_latents,
                        load_run, save_attributes, save_decoder, save_latents, save_timeline)
from .timeline import kl_per_dim, timeline_arrays


def latents_arrays(points: EncodedPoints, xy: np.ndarray, label_names: list, label_kinds: list,
                   umap_params: tuple) -> dict:
    """The arrays of latents.npz (docs/run-format.md), all numeric or fixed-width unicode."""
    d = points.mu.shape[1]
    logvar = points.logvar if points.logvar is not None else np.zeros_like(points.mu)
    arrays = {
        "index": points.index.astype(np.int64),
        "split": points.split.astype(np.int8),
        # VQ-VAE "means" are whole pre-quantised grids (D = grid cells × code dim, 784 on MNIST): stored
        # in float16 they halve the file (a Space refuses files over 10 MB) and lose nothing the map or
        # the explorer's interpolations can show; the loader widens them to float32.
        "mu": points.mu.astype(np.float16 if points.codes is not None else np.float32),
        "logvar": logvar.astype(np.float32),
        "label_names": np.array(list(label_names), dtype=np.str_).reshape(-1),
        "label_kinds": np.array(list(label_kinds), dtype=np.str_).reshape(-1),
        "labels": points.labels.astype(np.float32).reshape(len(points.index), len(label_names)),
        "thumbs": points.thumbs.astype(np.uint8),
        "xy": xy.astype(np.float32),
        "kl_per_dim": kl_per_dim(points.mu, points.logvar).reshape(d),
        "umap_params": np.asarray(umap_params, dtype=np.float32),
    }
    if points.codes is not None:
        arrays["codes"] = points.codes.astype(np.int16)
    return arrays


def export_run(run_dir: str, n: int = 10_000, split: str = "both", umap_neighbors: int = 15,
               umap_min_dist: float = 0.1, seed: int = 0, thumb_size: int = 64, device: str = "cpu",
               batch_size: int = 256, progress: bool = False, decoder_only: bool = False,
               timeline_only: bool = False, decoder_weights: str = DEFAULT_WEIGHT_STORAGE) -> dict:
    """Write latents.npz, attributes.json, decoder.onnx and (with snapshots) timeline.npz into run_dir; returns
    a summary (counts, seconds per stage). decoder_only: write decoder.onnx alone (no encoding, no map), for
    runs already exported; timeline_only: write timeline.npz alone. decoder_weights: how decoder.onnx stores
    its layer weights (training.onnx_decoder.WEIGHT_STORAGES)."""
    check_weight_storage(decoder_weights, "--decoder-weights")
    if decoder_only:
        return export_decoder_file(run_dir, decoder_weights)
    if timeline_only:
        return export_timeline_file(run_dir, n, split, seed, thumb_size, device, batch_size)
    if not 1 <= n <= MAX_LATENT_POINTS:
        raise UserError(f"--n must be between 1 and {MAX_LATENT_POINTS:,} (the most points a run's latent table "
                        f"may hold), not {n:,}")
    if thumb_size < 1:
        raise UserError(f"--thumb-size must be >= 1, not {thumb_size}")
    if umap_neighbors < 2 or not 0.0 <= umap_min_dist <= 1.0:
        raise UserError("UMAP needs --umap-neighbors >= 2 and 0 <= --umap-min-dist <= 1")
    timings = {}
    started = time.perf_counter()
    run = load_run(run_dir, device=device)
    dataset = open_dataset(run)
    timings["load"] = time.perf_counter() - started

    # Before the long encode and UMAP fit, so that a model that cannot be exported fails at once.
    t = time.perf_counter()
    decoder = export_decoder(run.model, decoder_weights)
    timings["decoder"] = time.perf_counter() - t

    t = time.perf_counter()
    points = encode_split(run.model, dataset, split, n, seed, device, batch_size, thumb_size)
    timings["encode"] = time.perf_counter() - t
    if progress:
        print(f"encoded {len(points.index)} points in {timings['encode']:.1f} s", flush=True)

    t = time.perf_counter()
    xy = fit_map(points.mu, umap_neighbors, umap_min_dist, seed)
    timings["umap"] = time.perf_counter() - t
    if progress:
        print(f"fitted the UMAP in {timings['umap']:.1f} s", flush=True)

    label_names = list(getattr(dataset, "label_names", []) or [])
    label_kinds = list(getattr(dataset, "label_kinds", []) or [])
    umap_params = (umap_neighbors, umap_min_dist, seed, len(points.index))
    arrays = latents_arrays(points, xy, label_names, label_kinds, umap_params)
    t = time.perf_counter()
    attributes = attribute_vectors(points.mu, arrays["labels"], label_names, label_kinds)
    timings["attributes"] = time.perf_counter() - t
    timeline = None
    if list_snapshots(run_dir):
        t = time.perf_counter()
        timeline = timeline_arrays(run, dataset, timeline_points(points.index, points.split), seed, thumb_size, device,
                                   batch_size)
        timings["timeline"] = time.perf_counter() - t
    save_latents(run_dir, arrays)
    save_attributes(run_dir, attributes)
    save_decoder(run_dir, decoder)
    if timeline is not None:
        save_timeline(run_dir, timeline)
    timings["total"] = time.perf_counter() - started
    return {"n": int(len(points.index)), "n_test": int((points.split == 1).sum()),
            "n_train": int((points.split == 0).sum()), "latent_size": int(points.mu.shape[1]),
            "attributes": sorted(attributes["attributes"]), "decoder_bytes": len(decoder),
            "snapshots": 0 if timeline is None else int(len(timeline["steps"])),
            "seconds": {k: round(v, 2) for k, v in timings.items()}}


def timeline_points(index: np.ndarray, split: np.ndarray) -> np.ndarray:
    """The exported points the timeline's KL (a VQ-VAE: its codebook use) is measured over: those of the
    test split (all of them when none is from the test split)."""
    is_test = split == SPLIT_CODE["test"]
    return index[is_test] if is_test.any() else index


def export_timeline_file(run_dir: str, n: int, split: str, seed: int, thumb_size: int, device: str,
                         batch_size: int) -> dict:
    """Write timeline.npz alone: over the points of latents.npz when the run has one (no encoding of the
    map, no UMAP), else over the points an export with these settings would choose."""
    started = time.perf_counter()
    run = load_run(run_dir, device=device)
    if not list_snapshots(run_dir):
        raise UserError(f"{run_dir}: no weight snapshots to export (train with `--snapshots 10`)")
    dataset = open_dataset(run)
    try:
        latents = load_latents(run_dir)
        index, split_codes = latents["index"], latents["split"]
    except UserError:  # not exported yet (or unusable): choose the points an export would
        if not 1 <= n <= MAX_LATENT_POINTS:
            raise UserError(f"--n must be between 1 and {MAX_LATENT_POINTS:,}, not {n:,}") from None
        index, split_codes = choose_indices(dataset, split, n, seed)
    if len(index) == 0 or np.any(index < 0) or np.any(index >= len(dataset)):
        raise UserError(f"{LATENTS_FILE}: its point indices do not fit the run's dataset; export the run again")
    timeline = timeline_arrays(run, dataset, timeline_points(index, split_codes), seed, thumb_size, device,
                               batch_size)
    save_timeline(run_dir, timeline)
    codebook = is_codebook_timeline(timeline)
    points = timeline["code_points" if codebook else "kl_points"]
    return {"snapshots": int(len(timeline["steps"])), "measured": "codebook use" if codebook else "KL",
            "points": int(points[0]),
            "seconds": {"total": round(time.perf_counter() - started, 2)}}


def export_decoder_file(run_dir: str, decoder_weights: str = DEFAULT_WEIGHT_STORAGE) -> dict:
    """Write decoder.onnx alone; returns {"decoder_bytes", "latent_size", "seconds"}."""
    started = time.perf_counter()
    run = load_run(run_dir, device="cpu")
    decoder = export_decoder(run.model, decoder_weights)
    save_decoder(run_dir, decoder)
    return {"decoder_bytes": len(decoder), "latent_size": latent_size(run.model),
            "seconds": {"total": round(time.perf_counter() - started, 2)}}
