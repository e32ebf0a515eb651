"""Export a run's latent table and 2-D map for the explorer: latents.npz + attributes.json.

    python -m training export RUN [--n 10000] [--split both|test|train] [--umap-neighbors 15]
                                  [--umap-min-dist 0.1] [--seed 0] [--thumb-size 64]

The explorer fits nothing: everything it shows about the data (posterior means, labels, thumbnails,
the UMAP map, attribute vectors) is computed here, once, and stored in the run folder
(docs/run-format.md). New latents are placed on the map by inverse-distance-weighted k-nearest
neighbours over the exported means (`place_on_map`), never by running UMAP in the app.

Also home of the helpers that evaluate and train-prior share: `open_dataset` (the run's dataset, with
a one-line error when it is missing) and `encode_split` (posterior means / log-variances / codes /
labels / thumbnails for a seeded choice of points of one split).
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .attributes import attribute_vectors, save_attributes
from .config import atomic_write_bytes
from .errors import UserError

LATENTS_FILE = "latents.npz"
ATTRIBUTES_FILE = "attributes.json"
SPLITS = ("both", "test", "train")
SPLIT_CODE = {"train": 0, "test": 1}


# ---- the run's dataset ------------------------------------------------------------------------------------
def open_dataset(run):
    """The dataset a run was trained on, checked against the model; UserError when it cannot be loaded."""
    from .data import load_dataset

    data_cfg = run.config.data
    try:
        dataset = load_dataset(data_cfg)
    except UserError as e:
        raise UserError(f"{run.path}: cannot load its dataset {data_cfg.name!r}: {e}")
    except (OSError, RuntimeError, ValueError) as e:
        where = f" from {data_cfg.data_dir}" if data_cfg.data_dir else ""
        raise UserError(f"{run.path}: cannot load its dataset {data_cfg.name!r}{where} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'no details'})")
    model_cfg = run.config.model
    if (dataset.channels, dataset.image_size) != (model_cfg.channels, model_cfg.image_size):
        raise UserError(f"{run.path}: dataset {data_cfg.name!r} gives {dataset.channels}x{dataset.image_size}px "
                        f"images, the model expects {model_cfg.channels}x{model_cfg.image_size}px")
    return dataset


def choose_indices(dataset, split: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(dataset indices, split codes) of up to n points: a seeded choice, test first for "both"."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (choose from: {', '.join(SPLITS)})")
    if n < 1:
        raise UserError(f"the number of points must be >= 1, not {n}")
    rng = np.random.default_rng(seed)
    parts, codes = [], []
    for name in (("test", "train") if split == "both" else (split,)):
        pool = np.asarray(dataset.test_indices if name == "test" else dataset.train_indices, dtype=np.int64)
        take = min(n - sum(len(p) for p in parts), len(pool))
        if take <= 0:
            continue
        chosen = np.sort(rng.choice(pool, size=take, replace=False)) if take < len(pool) else np.sort(pool)
        parts.append(chosen)
        codes.append(np.full(take, SPLIT_CODE[name], dtype=np.int8))
    if not parts:
        raise UserError(f"dataset {dataset.name!r} has no {split} examples")
    return np.concatenate(parts), np.concatenate(codes)


@dataclass
class EncodedPoints:
    index: np.ndarray                 # (N,) int64 dataset indices
    split: np.ndarray                 # (N,) int8, 0 train / 1 test
    mu: np.ndarray                    # (N, D) float32, flattened
    logvar: Optional[np.ndarray]      # (N, D) float32, None for AE / VQ-VAE
    codes: Optional[np.ndarray]       # (N, h, w) int64, VQ-VAE only
    labels: np.ndarray                # (N, K) float32
    thumbs: Optional[np.ndarray]      # (N, C, t, t) uint8 when asked for


def make_thumbnails(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, C, H, W) -> uint8 thumbnails at most `size` px (area averaging, never upscaled)."""
    if images.shape[-1] <= size:
        return images
    small = F.interpolate(images.float(), size=(size, size), mode="area")
    return small.round_().clamp_(0, 255).to(torch.uint8)


@torch.no_grad()
def encode_indices(model, dataset, index: np.ndarray, split: np.ndarray, device: str = "cpu",
                   batch_size: int = 256, thumb_size: Optional[int] = None) -> EncodedPoints:
    """Run the encoder over the given dataset indices in batches."""
    mus, logvars, codes, labels, thumbs = [], [], [], [], []
    for start in range(0, len(index), batch_size):
        images, batch_labels = dataset.get(index[start:start + batch_size])
        enc = model.encode(images.to(device).float().div_(255.0))
        mus.append(enc.mean.reshape(images.shape[0], -1).float().cpu())
        if enc.logvar is not None:
            logvars.append(enc.logvar.reshape(images.shape[0], -1).float().cpu())
        if enc.codes is not None:
            codes.append(enc.codes.cpu())
        labels.append(batch_labels.float().reshape(images.shape[0], -1))
        if thumb_size:
            thumbs.append(make_thumbnails(images, thumb_size))
    n_labels = len(getattr(dataset, "label_names", []) or [])
    return EncodedPoints(
        index=np.asarray(index, dtype=np.int64), split=np.asarray(split, dtype=np.int8),
        mu=torch.cat(mus).numpy(),
        logvar=torch.cat(logvars).numpy() if logvars else None,
        codes=torch.cat(codes).numpy().astype(np.int64) if codes else None,
        labels=torch.cat(labels).numpy() if labels else np.zeros((0, n_labels), np.float32),
        thumbs=torch.cat(thumbs).numpy() if thumbs else None)


def encode_split(model, dataset, split: str, n: int, seed: int = 0, device: str = "cpu",
                 batch_size: int = 256, thumb_size: Optional[int] = None) -> EncodedPoints:
    index, split_codes = choose_indices(dataset, split, n, seed)
    return encode_indices(model, dataset, index, split_codes, device, batch_size, thumb_size)


# ---- the 2-D map --------------------------------------------------------------------------------------------
def ensure_numba_cache() -> None:
    """umap imports numba, which fails in read-only installs unless its cache dir is writable."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        path = os.path.join(tempfile.gettempdir(), "vae-explorer-numba-cache")
        os.makedirs(path, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = path


def exact_knn(x: np.ndarray, k: int, max_entries: int = 20_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row (itself included, first): (indices int32, distances float32).

    Chunked float32 matrix products pick the candidates (memory ~ max_entries floats at a time); the
    chosen distances are then recomputed exactly, so the expansion's rounding cannot leak into them.
    """
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    squared = (t * t).sum(1)
    rows = max(1, max_entries // max(1, len(t)))
    indices = []
    for start in range(0, len(t), rows):
        block = t[start:start + rows]
        d2 = squared[start:start + rows, None] - 2.0 * block @ t.T + squared[None, :]
        indices.append(torch.topk(d2, k, dim=1, largest=False).indices)
    idx = torch.cat(indices)
    x64 = torch.from_numpy(np.asarray(x, dtype=np.float64))
    dist = (x64[:, None, :] - x64[idx]).pow(2).sum(-1).sqrt()
    dist, order = dist.sort(dim=1)
    idx = torch.gather(idx, 1, order)
    return idx.numpy().astype(np.int32), dist.numpy().astype(np.float32)


def fit_map(mu: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """2-D UMAP of the rows of mu (float32 (N, 2)). seed < 0: no random_state (parallel, not reproducible).

    The neighbour graph is computed exactly here (`exact_knn`) and handed to UMAP as precomputed_knn:
    exact rather than approximate, and it skips pynndescent, whose numba compilation costs about a
    minute in every fresh process for more than 4,096 points. The fitted UMAP object is not kept
    (placing new points uses `place_on_map`). Fewer than 4 points (or all identical) get a PCA.
    """
    n = mu.shape[0]
    if n < 4 or np.allclose(mu, mu[:1]):
        return pca_2d(mu)
    ensure_numba_cache()
    import warnings

    import umap

    k = max(2, min(n_neighbors, n - 1))
    knn_indices, knn_dists = exact_knn(mu, k)
    reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist,
                        random_state=None if seed < 0 else seed, precomputed_knn=(knn_indices, knn_dists, None),
                        # Spectral initialisation needs a graph of some size; tiny tables start at random.
                        init="spectral" if n > 3 * k else "random")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        return reducer.fit_transform(np.asarray(mu, dtype=np.float32)).astype(np.float32)


def pca_2d(mu: np.ndarray) -> np.ndarray:
    centred = mu.astype(np.float64) - mu.mean(0, keepdims=True)
    out = np.zeros((mu.shape[0], 2), np.float32)
    if mu.shape[0] > 1 and np.any(centred):
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[:2].T
        out[:, :proj.shape[1]] = proj
    return out


def place_on_map(mu_table: np.ndarray, xy_table: np.ndarray, mu_new: np.ndarray, k: int = 8) -> np.ndarray:
    """Map coordinates for new latents: inverse-distance-weighted mean of the xy of their k nearest
    exported means. mu_new (D,) -> (2,), or (M, D) -> (M, 2). A latent equal to an exported mean gets
    exactly that point's xy. Vectorised: ~milliseconds for 10,000 exported points."""
    table = np.asarray(mu_table, dtype=np.float64).reshape(len(mu_table), -1)
    xy = np.asarray(xy_table, dtype=np.float64)
    query = np.asarray(mu_new, dtype=np.float64)
    single = query.ndim == 1
    query = query.reshape(1 if single else len(query), -1)
    if query.shape[1] != table.shape[1]:
        raise ValueError(f"latent size {query.shape[1]} does not match the table's {table.shape[1]}")
    k = max(1, min(int(k), len(table)))
    # ‖q − t‖² = ‖q‖² − 2 q·t + ‖t‖² (float64 keeps exact matches at ~0).
    d2 = (query ** 2).sum(1)[:, None] - 2.0 * query @ table.T + (table ** 2).sum(1)[None, :]
    nearest = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < len(table) else \
        np.broadcast_to(np.arange(len(table)), (len(query), len(table)))
    dist = np.sqrt(np.maximum(np.take_along_axis(d2, nearest, axis=1), 0.0))
    scale = 1e-9 * (1.0 + np.sqrt((query ** 2).sum(1, keepdims=True)))
    exact = dist <= scale
    weights = np.where(exact.any(1, keepdims=True), exact.astype(np.float64), 1.0 / np.maximum(dist, scale))
    out = (weights[:, :, None] * xy[nearest]).sum(1) / weights.sum(1, keepdims=True)
    out = out.astype(np.float32)
    return out[0] if single else out


# ---- the export ---------------------------------------------------------------------------------------------
def latents_arrays(points: EncodedPoints, xy: np.ndarray, label_names: list, label_kinds: list,
                   umap_params: tuple) -> dict:
    """The arrays of latents.npz (docs/run-format.md), all numeric or fixed-width unicode."""
    d = points.mu.shape[1]
    logvar = points.logvar if points.logvar is not None else np.zeros_like(points.mu)
    if points.logvar is not None:
        kl = 0.5 * (points.mu.astype(np.float64) ** 2 + np.exp(logvar) - 1.0 - logvar)
        kl_per_dim = kl.mean(0).astype(np.float32)
    else:
        kl_per_dim = np.zeros(d, np.float32)
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
        "kl_per_dim": kl_per_dim,
        "umap_params": np.asarray(umap_params, dtype=np.float32),
    }
    if points.codes is not None:
        arrays["codes"] = points.codes.astype(np.int16)
    return arrays


def save_latents(path: str, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_latents(path: str) -> dict:
    """latents.npz as a dict of arrays (no pickles)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (run `python -m training export RUN`)")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def export_run(run_dir: str, n: int = 10_000, split: str = "both", umap_neighbors: int = 15,
               umap_min_dist: float = 0.1, seed: int = 0, thumb_size: int = 64, device: str = "cpu",
               batch_size: int = 256, progress: bool = False) -> dict:
    """Write latents.npz and attributes.json into run_dir; returns a summary (counts, seconds per stage)."""
    from .runfolder import load_run

    if thumb_size < 1:
        raise UserError(f"--thumb-size must be >= 1, not {thumb_size}")
    if umap_neighbors < 2 or not 0.0 <= umap_min_dist <= 1.0:
        raise UserError("UMAP needs --umap-neighbors >= 2 and 0 <= --umap-min-dist <= 1")
    timings = {}
    started = time.perf_counter()
    run = load_run(run_dir, device=device)
    dataset = open_dataset(run)
    timings["load"] = time.perf_counter() - started

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
    save_latents(os.path.join(run_dir, LATENTS_FILE), arrays)
    save_attributes(os.path.join(run_dir, ATTRIBUTES_FILE), attributes)
    timings["total"] = time.perf_counter() - started
    return {"n": int(len(points.index)), "n_test": int((points.split == 1).sum()),
            "n_train": int((points.split == 0).sum()), "latent_size": int(points.mu.shape[1]),
            "attributes": sorted(attributes["attributes"]), "seconds": {k: round(v, 2) for k, v in timings.items()}}


# ---- CLI ------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run folder")
    parser.add_argument("--n", type=int, default=10_000, help="number of points to export")
    parser.add_argument("--split", choices=SPLITS, default="both",
                        help="both: the test split first, then training points if more are needed")
    parser.add_argument("--umap-neighbors", type=int, default=15)
    parser.add_argument("--umap-min-dist", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0,
                        help="choice of points and UMAP random_state (-1: unseeded UMAP, faster on many cores)")
    parser.add_argument("--thumb-size", type=int, default=64, help="largest thumbnail side in pixels")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")


def run(args: argparse.Namespace) -> int:
    from .prior import resolve_device

    summary = export_run(args.run, n=args.n, split=args.split, umap_neighbors=args.umap_neighbors,
                         umap_min_dist=args.umap_min_dist, seed=args.seed, thumb_size=args.thumb_size,
                         device=resolve_device(args.device), batch_size=args.batch_size, progress=True)
    seconds = summary["seconds"]
    print(f"exported {summary['n']} points ({summary['n_test']} test, {summary['n_train']} train; latent size "
          f"{summary['latent_size']}) and {len(summary['attributes'])} attribute vectors in {seconds['total']:.1f} s "
          f"-> {os.path.join(args.run, LATENTS_FILE)}, {ATTRIBUTES_FILE}")
    return 0
