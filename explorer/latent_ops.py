"""Latent-space math behind the explorer: encode, decode, interpolate, place on the map, arithmetic.

Functions over NumPy arrays, torch tensors and a run's model. Latents travel as flattened float32 NumPy
arrays, (D,) or (B, D); images leave as uint8 NumPy arrays (B, H, W, C) ready for display. Values that
reach these functions from the app (point numbers, step counts, names, strengths) are checked once, at
the endpoint (`explorer.checks` and the tab modules); here only the arrays themselves are held to their
contract (finite, the run's latent size, a bounded batch), which keeps notebook callers from feeding the
shared model garbage. Nothing here changes a model or a run.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from training.attributes import roc_auc
from training.errors import UserError
from training.latent_map import PLACEMENT_NEIGHBOURS
from training.models.base import Encoding

from .run_scores import kl_per_dim_from_metrics
from .runs import LoadedRun

MAX_BATCH = 1024            # latents decoded in one call
MAX_GRID = 400              # images in one traversal grid
MAX_ABS_LATENT = 1e3        # |z| beyond this is not a latent, it is a typo
STARTING_SAMPLE = 2000      # rows searched for the starting points: a few ms at any table size
FAR_SHARE = 0.6             # A and B start farther apart on the map than this share of pairs of rows
# A bias-corrected vector is offered only against a label correlated at least this much (|phi|).
MIN_CONFOUNDER_CORRELATION = 0.1
# Below this cosine distance two directions count as parallel and slerp falls back to lerp.
_PARALLEL_EPS = 1e-6


# ---- the array contract ----------------------------------------------------------------------------
def finite_array(x, what: str, max_abs: Optional[float] = MAX_ABS_LATENT) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be numbers")
    if a.size == 0:
        raise UserError(f"{what} is empty")
    if not np.all(np.isfinite(a)):
        raise UserError(f"{what} holds NaN or infinite values")
    if max_abs is not None and np.abs(a).max() > max_abs:
        raise UserError(f"{what} is out of range (|value| > {max_abs:g})")
    return a


def _latents(run: LoadedRun, z, what: str = "latent") -> np.ndarray:
    """z as float32 (B, D) for this run; accepts (D,) or (B, D)."""
    a = finite_array(z, what)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != run.latent_dim:
        raise UserError(f"{what} has shape {tuple(np.shape(z))}, expected ({run.latent_dim},) or (B, {run.latent_dim})")
    if a.shape[0] > MAX_BATCH:
        raise UserError(f"too many latents at once ({a.shape[0]} > {MAX_BATCH})")
    return a.astype(np.float32)


def one_vector(x, what: str) -> np.ndarray:
    a = finite_array(x, what)
    if a.ndim != 1:
        raise UserError(f"{what} must be one vector, got shape {a.shape}")
    return a


def _same_shape(*arrays: np.ndarray, names: tuple) -> None:
    if len({a.shape for a in arrays}) != 1:
        raise UserError(f"{', '.join(names)} must have the same shape, got {', '.join(str(a.shape) for a in arrays)}")


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] -> (B, H, W, C) uint8."""
    x = images.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


# ---- images in --------------------------------------------------------------------------------------
def image_batch(run: LoadedRun, images) -> torch.Tensor:
    """Images for this run as a float tensor (B, C, H, W) in [0, 1].

    Accepts uint8 (0..255) or float (0..1) arrays/tensors shaped (B, C, H, W), (C, H, W), (B, H, W, C),
    (H, W, C) or, for one-channel runs, (H, W) / (B, H, W); the size must already be the run's. Pictures
    of any other size or format go through `explorer.pictures.prepare_image` first.
    """
    m = run.config.model
    c, s = m.channels, m.image_size
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    a = np.asarray(images)
    if a.dtype == np.uint8:
        x = a.astype(np.float32) / 255.0
    else:
        x = finite_array(a, "image", max_abs=None).astype(np.float32)
        if x.min() < 0.0 or x.max() > 1.0:
            raise UserError("float images must have values in [0, 1]")
    if c == 1 and x.ndim == 2 and x.shape == (s, s):
        x = x[None, None]
    elif c == 1 and x.ndim == 3 and x.shape[1:] == (s, s):
        x = x[:, None]  # (B, H, W) greyscale; (1, H, W) reads the same either way
    elif x.ndim == 3:
        x = x[None]
    expected = f"expected (B, {c}, {s}, {s}) or (B, {s}, {s}, {c})"
    if x.ndim != 4:
        raise UserError(f"images have shape {a.shape}, {expected}")
    if x.shape[1:] == (s, s, c):
        x = x.transpose(0, 3, 1, 2)
    elif x.shape[1:] != (c, s, s):
        raise UserError(f"images have shape {a.shape}, {expected} for this run")
    if x.shape[0] > MAX_BATCH:
        raise UserError(f"too many images at once ({x.shape[0]} > {MAX_BATCH})")
    return torch.from_numpy(np.ascontiguousarray(x))


# ---- encode / decode ---------------------------------------------------------------------------------
@torch.inference_mode()
def encode_images(run: LoadedRun, images) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar) flattened float32 (B, D). AE / VQ-VAE: logvar is zeros (as in latents.npz);
    VQ-VAE: mu is the pre-quantised encoder output."""
    x = image_batch(run, images)
    enc = run.model.encode(x)
    mu = enc.mean.reshape(x.shape[0], -1).float()
    logvar = enc.logvar.reshape(x.shape[0], -1).float() if enc.logvar is not None else torch.zeros_like(mu)
    return mu.numpy().copy(), logvar.numpy().copy()


@torch.inference_mode()
def decode(run: LoadedRun, z) -> np.ndarray:
    """Latents (D,) or (B, D) -> uint8 images (B, H, W, C). VQ-VAE: the latent is quantised first."""
    zz = torch.from_numpy(_latents(run, z)).reshape(-1, *run.latent_shape)
    latent = run.model.latent_for_decode(Encoding(mean=zz))
    return _to_uint8(run.model.decode_image(latent))


@torch.inference_mode()
def reconstruct(run: LoadedRun, image) -> np.ndarray:
    """Image(s) (see `image_batch`) -> uint8 reconstructions (B, H, W, C)."""
    return _to_uint8(run.model.reconstruct(image_batch(run, image)))


# ---- interpolation -----------------------------------------------------------------------------------
def _ts(t) -> tuple[np.ndarray, bool]:
    a = finite_array(t, "t")
    return a.reshape(-1), a.ndim == 0


def lerp(z0, z1, t) -> np.ndarray:
    """Straight line: (1 - t) z0 + t z1. t scalar -> (D,); t array (n,) -> (n, D)."""
    a, b = one_vector(z0, "z0"), one_vector(z1, "z1")
    _same_shape(a, b, names=("z0", "z1"))
    ts, scalar = _ts(t)
    out = (1.0 - ts)[:, None] * a[None] + ts[:, None] * b[None]
    return (out[0] if scalar else out).astype(np.float32)


def slerp(z0, z1, t) -> np.ndarray:
    """Spherical interpolation (White 2016): stays near the shell where Gaussian samples live.

    Between two vectors of the same norm r every point has norm r. Near-parallel or anti-parallel
    vectors (no unique great circle) and zero vectors fall back to lerp.
    """
    a, b = one_vector(z0, "z0"), one_vector(z1, "z1")
    _same_shape(a, b, names=("z0", "z1"))
    ts, scalar = _ts(t)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(np.clip(np.dot(a / na, b / nb), -1.0, 1.0)) if na and nb else 1.0
    if 1.0 - abs(cos) < _PARALLEL_EPS:
        return lerp(a, b, ts[0] if scalar else ts)
    omega = np.arccos(cos)
    so = np.sin(omega)
    w0 = np.sin((1.0 - ts) * omega) / so
    w1 = np.sin(ts * omega) / so
    out = w0[:, None] * a[None] + w1[:, None] * b[None]
    return (out[0] if scalar else out).astype(np.float32)


INTERPOLATORS = {"linear": lerp, "slerp": slerp}


def interpolate(z0, z1, n: int, method: str = "slerp") -> np.ndarray:
    """n >= 2 evenly spaced points from z0 to z1 (both included), (n, D) float32, along one of
    INTERPOLATORS."""
    return INTERPOLATORS[method](z0, z1, np.linspace(0.0, 1.0, n))


def interpolate_at(z0, z1, t: float, method: str = "slerp") -> np.ndarray:
    """The point at position t in [0, 1] on the path from z0 to z1, (D,) float32."""
    return INTERPOLATORS[method](z0, z1, t)


# ---- nearest neighbours and the map ---------------------------------------------------------------------
def nearest_neighbours(run: LoadedRun, z, k: int = PLACEMENT_NEIGHBOURS) -> np.ndarray:
    """Indices into the latent table of the k nearest points (Euclidean on mu), nearest first.
    z (D,) -> (k,); z (B, D) -> (B, k)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UserError(f"k must be a whole number of at least 1, got {k!r}")
    idx, _ = run.latent_index.neighbours(_latents(run, z), k)
    return idx[0] if np.ndim(z) == 1 else idx


def place_on_map(run: LoadedRun, z) -> np.ndarray:
    """Map coordinates (B, 2) for latents (D,) or (B, D): the inverse-distance weighting of the positions
    of their nearest exported means (training.latent_map). A latent equal to a table point lands exactly
    on that point."""
    return run.latent_index.place(run.latents["xy"], _latents(run, z))


def table_latent(run: LoadedRun, index: int) -> np.ndarray:
    """mu of one point of the latent table (D,) float32."""
    return run.latents["mu"][index].astype(np.float32)


def table_images(run: LoadedRun, indices) -> np.ndarray:
    """The stored thumbnails of table points, uint8 (B, h, w, C)."""
    return np.ascontiguousarray(run.latents["thumbs"][np.asarray(indices, dtype=np.int64)].transpose(0, 2, 3, 1))


def mean_latent_of_selection(run: LoadedRun, indices) -> np.ndarray:
    """Mean mu of the selected table points (D,) float32 (e.g. a lasso selection on the map)."""
    idx = np.asarray(indices, dtype=np.int64)
    return run.latents["mu"][idx].astype(np.float64).mean(axis=0).astype(np.float32)


# ---- arithmetic ---------------------------------------------------------------------------------------
def attribute_vector(run: LoadedRun, name: str, corrected: bool = False) -> tuple[np.ndarray, float]:
    """(vector (D,) float32, ROC-AUC or NaN) of an attribute the run offers (`run.attribute_names`).

    A class pair 'digit: 3 → 8' is mean(μ | 8) − mean(μ | 3) over the latent table, its AUC that of z·v
    telling the two classes apart; any other name is a vector of attributes.json, where `corrected` picks
    the confounder-balanced one."""
    if name in run.class_pairs:
        column, a, b = run.class_pairs[name]
        labels = run.latents["labels"][:, column]
        rows = (labels == a) | (labels == b)
        mu, to = run.latents["mu"][rows].astype(np.float64), labels[rows] == b
        v = mu[to].mean(axis=0) - mu[~to].mean(axis=0)
        auc = roc_auc(mu @ v, to)
        return v.astype(np.float32), float("nan") if auc is None else auc
    entry = run.attributes["attributes"][name]
    if corrected:
        entry = entry["corrected"]
    auc = entry.get("auc")
    return np.asarray(entry["vector"], dtype=np.float32), (float(auc) if isinstance(auc, (int, float)) else float("nan"))


def attribute_contrast(run: LoadedRun, name: str) -> Optional[tuple]:
    """(rows that have the attribute, rows that lack it, its vector, each row's label value or None), from
    the labels: a class pair 'digit: 3 → 8' is had at 8 and lacked at 3 (other rows neither), an
    attributes.json vector is had where its label is above the recorded threshold. None when the latent
    table has no label for it."""
    if run.latents is None or "labels" not in run.latents:
        return None
    labels, vector = run.latents["labels"], attribute_vector(run, name)[0]
    if name in run.class_pairs:
        column, without, with_it = run.class_pairs[name]
        return labels[:, column] == with_it, labels[:, column] == without, vector, None
    threshold = run.attributes["attributes"][name].get("threshold")
    if name not in run.label_names or not isinstance(threshold, (int, float)):
        return None
    values = labels[:, run.label_names.index(name)]
    return values > threshold, values <= threshold, vector, values


def confounder_of(run: LoadedRun, name: str) -> Optional[tuple[str, float]]:
    """(the label the bias-corrected vector of `name` balances against, their correlation), or None when
    there is nothing worth balancing: no corrected vector, no confounder, or one correlated by less than
    MIN_CONFOUNDER_CORRELATION (then the corrected vector is the plain one up to noise)."""
    entry = ((run.attributes or {}).get("attributes", {}) if name not in run.class_pairs else {}).get(name)
    corrected = entry.get("corrected") if isinstance(entry, dict) else None
    if not isinstance(corrected, dict) or not corrected.get("confounder"):
        return None
    correlation = corrected.get("correlation")
    if not isinstance(correlation, (int, float)) or abs(correlation) < MIN_CONFOUNDER_CORRELATION:
        return None
    return str(corrected["confounder"]), float(correlation)


def has_corrected_vector(run: LoadedRun, name: str) -> bool:
    return confounder_of(run, name) is not None


def apply_attribute(z, v, alpha: float) -> np.ndarray:
    """z + alpha v (z (D,) or (B, D), v (D,))."""
    zz = finite_array(z, "latent")
    vv = one_vector(v, "attribute vector")
    alpha = float(finite_array(alpha, "attribute strength"))
    if zz.shape[-1] != vv.shape[0] or zz.ndim > 2:
        raise UserError(f"latent shape {zz.shape} does not match attribute vector shape {vv.shape}")
    return (zz + alpha * vv).astype(np.float32)


def analogy(a, b, c) -> np.ndarray:
    """a − b + c ("a is to b as ? is to c"), all (D,)."""
    va, vb, vc = one_vector(a, "a"), one_vector(b, "b"), one_vector(c, "c")
    _same_shape(va, vb, vc, names=("a", "b", "c"))
    return (va - vb + vc).astype(np.float32)


# ---- traversals and samples -----------------------------------------------------------------------------
def starting_points(xy: np.ndarray, mu: np.ndarray, contrast=None) -> tuple[int, int, int]:
    """Rows (A, B, ★) a run opens on, from its latent table (map xy (N, 2), latents mu (N, D)) alone; each
    search runs over an evenly spaced sample of at most STARTING_SAMPLE rows, so it needs no decoding.

    Without `contrast`: A the first row, B the farthest on the map from A, ★ the farthest from both, so the
    interpolation path and its t mark are visible. With `contrast` (`attribute_contrast`): A a row with
    the attribute at its strongest (its label's top value, then z·v), B the row nearest A in latent space
    that lacks it among those farther from A on the map than a FAR_SHARE of the sample's pairs, ★
    another row that lacks it, the farthest on the map from A and B: A − B + ★ adds the attribute to ★.
    """
    n = len(xy)
    if n < 3:
        return 0, min(1, n - 1), 0
    xy = xy.astype(np.float64)

    def spread(rows: np.ndarray) -> np.ndarray:
        return rows[np.unique(np.linspace(0, len(rows) - 1, min(len(rows), STARTING_SAMPLE)).astype(np.int64))]

    def farthest(rows: np.ndarray, *away: int) -> int:
        rows = rows[~np.isin(rows, away)]
        return int(rows[np.argmax(np.linalg.norm(xy[rows, None] - xy[list(away)][None], axis=-1).min(axis=1))])

    everyone = spread(np.arange(n))
    if contrast is not None:
        has, lacks, vector, level = contrast
        having, lacking = spread(np.flatnonzero(has)), spread(np.flatnonzero(lacks))
        if len(having) and len(lacking) >= 2:
            if level is not None:
                having = having[level[having] == level[having].max()]
            a = int(having[np.argmax(mu[having] @ vector)])
            few = everyone[:: max(1, len(everyone) // 400)]
            pairs = np.linalg.norm(xy[few, None] - xy[None, few], axis=-1)[np.triu_indices(len(few), 1)]
            far = lacking[np.linalg.norm(xy[lacking] - xy[a], axis=1) > np.quantile(pairs, FAR_SHARE)]
            far = far if len(far) >= 2 else lacking
            b = int(far[np.argmin(np.linalg.norm(mu[far] - mu[a], axis=1))])
            return a, b, farthest(lacking, a, b)
    b = farthest(everyone, 0)
    return 0, b, farthest(everyone, 0, b)


def kl_per_dim(run: LoadedRun) -> Optional[np.ndarray]:
    """Mean KL per latent dimension (D,) from latents.npz, else metrics.json; None when unknown."""
    if run.latents is not None and "kl_per_dim" in run.latents:
        return run.latents["kl_per_dim"].astype(np.float32)
    return kl_per_dim_from_metrics(run.metrics, run.latent_dim)


def dims_by_kl(run: LoadedRun) -> np.ndarray:
    """Latent dimensions, most informative (largest KL) first; natural order when the KL is unknown."""
    kl = kl_per_dim(run)
    if kl is None:
        return np.arange(run.latent_dim, dtype=np.int64)
    return np.argsort(-kl.astype(np.float64), kind="stable").astype(np.int64)


def traversal(run: LoadedRun, z=None, dims=None, values=None, relative: bool = False) -> np.ndarray:
    """Per-dimension traversal grid: uint8 images (len(dims) * len(values), H, W, C), one row per dim.

    z:        the starting latent (D,); None = the prior mean (zeros).
    dims:     dimensions to vary (default: the 10 with the largest KL).
    values:   values to set each dimension to (default linspace(-3, 3, 9)); with relative=True they
              are added to z[dim] instead.
    Show with figures.image_grid(images, nrow=len(values)).
    """
    base = np.zeros(run.latent_dim, dtype=np.float32) if z is None else _latents(run, z)[0]
    dims = np.asarray(dims_by_kl(run)[: min(10, run.latent_dim)] if dims is None else dims, dtype=np.int64)
    vals = finite_array(np.linspace(-3, 3, 9) if values is None else values, "traversal values", max_abs=100.0)
    if dims.size * vals.size > MAX_GRID:
        raise UserError(f"traversal grid too large ({dims.size}×{vals.size} > {MAX_GRID} images)")
    grid = np.repeat(base[None], dims.size * vals.size, axis=0).astype(np.float64)
    rows = np.repeat(np.arange(dims.size), vals.size)
    cols = np.tile(np.arange(vals.size), dims.size)
    d = dims[rows]
    grid[np.arange(grid.shape[0]), d] = (base[d] if relative else 0.0) + vals[cols]
    return decode(run, grid)


@torch.inference_mode()
def sample_prior(run: LoadedRun, n: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
    """n samples from the model's prior as uint8 images (B, H, W, C), for a run with `has_prior`.

    VAE family: z ~ N(0, temperature² I). VQ-VAE: codes from its PixelCNN prior (softmax temperature).
    """
    g = torch.Generator().manual_seed(seed)
    # VQ-VAE: the attached PixelCNN draws code grids and sample_prior returns them quantised.
    z = run.model.sample_prior(n, generator=g, temperature=temperature)
    return _to_uint8(run.model.decode_image(z))


def sample_latents(run: LoadedRun, n: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
    """n prior latents (n, D) float32 for the VAE family (for random interpolation end points)."""
    g = torch.Generator().manual_seed(seed)
    return (temperature * torch.randn((n, run.latent_dim), generator=g)).numpy()
