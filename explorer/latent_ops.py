"""Latent-space operations behind the explorer: encode, decode, interpolate, place on the map, arithmetic.

Pure functions over NumPy / torch. Latents travel as flattened float32 NumPy arrays, (D,) or (B, D);
images leave as uint8 NumPy arrays (B, H, W, C) ready for display. Every input that can come from a user
is validated: wrong shapes, non-finite numbers and out-of-range values raise `UserError` with a one-line
message. Models are shared by all users of the app, so nothing here changes a model or a run.
"""
from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence

from training.errors import UserError

from .runs import LoadedRun

# Limits that keep one request from tying up the (shared, 2-core) server.
MAX_BATCH = 1024            # latents decoded in one call
MAX_GRID = 400              # images in one traversal grid
MAX_INTERPOLATION_STEPS = 256
MAX_ABS_LATENT = 1e3        # |z| beyond this is not a latent, it is a typo
MAX_PIXELS = 40_000_000     # uploads above 40 megapixels are refused before decoding
MAX_TEMPERATURE = 5.0
KNN_K = 8
# Below this cosine distance two directions count as parallel and slerp falls back to lerp.
_PARALLEL_EPS = 1e-6


# ---- validation helpers -------------------------------------------------------------------------
def _finite_array(x, what: str, max_abs: float = MAX_ABS_LATENT) -> np.ndarray:
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
    a = _finite_array(z, what)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != run.latent_dim:
        raise UserError(f"{what} has shape {tuple(np.shape(z))}, expected ({run.latent_dim},) or (B, {run.latent_dim})")
    if a.shape[0] > MAX_BATCH:
        raise UserError(f"too many latents at once ({a.shape[0]} > {MAX_BATCH})")
    return a.astype(np.float32)


def _vector(x, what: str) -> np.ndarray:
    a = _finite_array(x, what)
    if a.ndim != 1:
        raise UserError(f"{what} must be one vector, got shape {a.shape}")
    return a


def _same_shape(*arrays: np.ndarray, names: Sequence[str]) -> None:
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise UserError(f"{', '.join(names)} must have the same shape, got {', '.join(str(a.shape) for a in arrays)}")


def _int(x, what: str, lo: int, hi: int) -> int:
    if isinstance(x, bool):
        raise UserError(f"{what} must be an integer")
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if not isinstance(x, (int, np.integer)):
        raise UserError(f"{what} must be an integer")
    if not lo <= int(x) <= hi:
        raise UserError(f"{what} must be between {lo} and {hi}, got {x}")
    return int(x)


def _number(x, what: str, lo: float, hi: float) -> float:
    if isinstance(x, bool):
        raise UserError(f"{what} must be a number")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number")
    if not np.isfinite(v) or not lo <= v <= hi:
        raise UserError(f"{what} must be between {lo:g} and {hi:g}, got {x}")
    return v


def _need_latents(run: LoadedRun) -> dict:
    if run.latents is None:
        raise UserError(f"run {run.name!r} has no exported latents (run `python -m training export` on it)")
    return run.latents


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] -> (B, H, W, C) uint8."""
    x = images.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


# ---- images in --------------------------------------------------------------------------------------
def image_batch(run: LoadedRun, images) -> torch.Tensor:
    """Images for this run as a float tensor (B, C, H, W) in [0, 1].

    Accepts uint8 (0..255) or float (0..1) arrays/tensors shaped (B, C, H, W), (C, H, W), (B, H, W, C),
    (H, W, C) or, for one-channel runs, (H, W) / (B, H, W); the size must already be the run's.
    """
    m = run.config.model
    c, s = m.channels, m.image_size
    if isinstance(images, Image.Image):
        return prepare_image(run, images)
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    a = np.asarray(images)
    if a.dtype == np.uint8:
        x = a.astype(np.float32) / 255.0
    else:
        x = _finite_array(a, "image", max_abs=None).astype(np.float32)
        if x.min() < 0.0 or x.max() > 1.0:
            raise UserError("float images must have values in [0, 1]")
    if c == 1 and x.ndim == 2 and x.shape == (s, s):
        x = x[None, None]
    elif c == 1 and x.ndim == 3 and x.shape[1:] == (s, s):
        x = x[:, None]  # (B, H, W) greyscale; (1, H, W) reads the same either way
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise UserError(f"images have shape {a.shape}, expected (B, {c}, {s}, {s}) or (B, {s}, {s}, {c})")
    if x.shape[1:] == (c, s, s):
        pass
    elif x.shape[1:] == (s, s, c):
        x = x.transpose(0, 3, 1, 2)
    else:
        raise UserError(f"images have shape {a.shape}, expected (B, {c}, {s}, {s}) or (B, {s}, {s}, {c}) for this run")
    if x.shape[0] > MAX_BATCH:
        raise UserError(f"too many images at once ({x.shape[0]} > {MAX_BATCH})")
    return torch.from_numpy(np.ascontiguousarray(x))


def prepare_image(run: LoadedRun, pil_image, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Any picture -> float tensor (1, C, H, W) in [0, 1] with the run's channels and size.

    Accepts a PIL image, raw file bytes or an array (H, W[, C]). Handles EXIF rotation, palette,
    transparency (composited on black, the background of the bundled datasets), 16-bit and float
    greyscale, CMYK and animations (first frame). The picture is centre-cropped to a square and
    resized. Images larger than `max_pixels` and anything that is not an image raise UserError.
    """
    m = run.config.model
    return to_model_input(pil_image, m.channels, m.image_size, max_pixels)


def to_model_input(picture, channels: int, size: int, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """`prepare_image` without a run: picture -> (1, channels, size, size) float tensor in [0, 1]."""
    image = _open_picture(picture, max_pixels)
    image = _first_frame(image)
    try:
        image = ImageOps.exif_transpose(image) or image
    except Exception:  # broken EXIF data is not worth refusing the picture for
        pass
    w, h = image.size
    if w < 1 or h < 1:
        raise UserError("the image is empty")
    image = _to_8bit_mode(image)
    image = image.convert("L" if channels == 1 else "RGB")
    image = _centre_square(image)
    if image.size != (size, size):
        # Box filter when shrinking (proper averaging), bicubic when enlarging tiny pictures.
        resample = Image.Resampling.BOX if image.size[0] > size else Image.Resampling.BICUBIC
        image = image.resize((size, size), resample=resample)
    a = np.asarray(image, dtype=np.float32) / 255.0
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


def _open_picture(picture, max_pixels: int) -> Image.Image:
    if isinstance(picture, (bytes, bytearray, memoryview)):
        try:
            picture = Image.open(io.BytesIO(bytes(picture)))
        except Image.DecompressionBombError:
            raise UserError(f"the image is too large (limit {max_pixels / 1e6:g} megapixels)")
        except Exception:  # decoders of untrusted files raise all sorts: UnidentifiedImageError, struct.error...
            raise UserError("the upload is not an image PIL can read")
    elif isinstance(picture, (np.ndarray, torch.Tensor)):
        a = picture.detach().cpu().numpy() if isinstance(picture, torch.Tensor) else picture
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
            raise UserError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {a.shape}")
        if a.shape[0] * a.shape[1] > max_pixels:
            raise UserError(f"the image is too large ({a.shape[1]}×{a.shape[0]}; limit {max_pixels / 1e6:g} megapixels)")
        if a.dtype != np.uint8:
            f = _finite_array(a, "image", max_abs=None)
            if f.min() < 0 or f.max() > 1:
                raise UserError("a float image array must have values in [0, 1]")
            a = np.round(f * 255.0).astype(np.uint8)
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        picture = Image.fromarray(a)
    if not isinstance(picture, Image.Image):
        raise UserError(f"expected an image, got {type(picture).__name__}")
    w, h = picture.size
    # Checked on the header before any pixel is decoded.
    if w * h > max_pixels:
        raise UserError(f"the image is too large ({w}×{h}; limit {max_pixels / 1e6:g} megapixels)")
    return picture


def _first_frame(image: Image.Image) -> Image.Image:
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
            image = next(ImageSequence.Iterator(image)).copy()
        else:
            image.load()
    except Image.DecompressionBombError:
        raise UserError("the image is too large")
    except Exception as e:  # truncated or malformed pixel data, in whatever way the decoder reports it
        raise UserError(f"the image could not be decoded ({' '.join(str(e).split())[:120] or type(e).__name__})")
    return image


def _to_8bit_mode(image: Image.Image) -> Image.Image:
    """Bring exotic modes to L / RGB / RGBA / LA so that convert() gives sensible pixels."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        if mode == "F":
            top = 1.0 if a.size and np.nanmax(a) <= 1.0 else 255.0
        else:
            # 16-bit data (PNG, TIFF) arrives as I;16 or I; scale by its bit depth, not its maximum.
            top = 65535.0 if (mode.startswith("I;16") or (a.size and a.max() > 255)) else 255.0
        a = np.nan_to_num(a, nan=0.0, posinf=top, neginf=0.0)
        return Image.fromarray(np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8), mode="L")
    if mode == "P":
        image = image.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
        image = image.convert("RGB" if mode != "1" else "L")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "La":
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new(image.mode, image.size, (0, 0, 0, 255) if image.mode == "RGBA" else (0, 255))
        image = Image.alpha_composite(background.convert("RGBA"), image.convert("RGBA")).convert("RGB")
    return image


def _centre_square(image: Image.Image) -> Image.Image:
    w, h = image.size
    if w == h:
        return image
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


def corrupt(image, noise_std: float = 0.0, mask_fraction: float = 0.0,
            mask_box: Optional[Sequence[float]] = None, seed: int = 0, fill: float = 0.0) -> torch.Tensor:
    """A damaged copy of `image` (float (B, C, H, W) or (C, H, W) in [0, 1]) for the denoising/inpainting demo.

    noise_std:     std of added Gaussian noise (result clipped to [0, 1]).
    mask_fraction: fraction of pixels (all channels) set to `fill`, chosen at random.
    mask_box:      (x0, y0, x1, y1) as fractions of width/height; that rectangle is set to `fill`.
    seed:          makes the noise and the mask reproducible.
    """
    x = image.detach().float().cpu() if isinstance(image, torch.Tensor) else torch.from_numpy(
        _finite_array(image, "image", max_abs=None).astype(np.float32))
    if not torch.isfinite(x).all():
        raise UserError("image holds NaN or infinite values")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise UserError(f"image must be (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise UserError("image values must be in [0, 1]")
    noise_std = _number(noise_std, "noise std", 0.0, 1.0)
    mask_fraction = _number(mask_fraction, "mask fraction", 0.0, 1.0)
    fill = _number(fill, "fill value", 0.0, 1.0)
    seed = _int(seed, "seed", 0, 2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    out = x.clone()
    if noise_std > 0:
        out = (out + noise_std * torch.randn(out.shape, generator=g)).clamp_(0.0, 1.0)
    hidden = torch.zeros((b, 1, h, w), dtype=torch.bool)
    if mask_fraction > 0:
        hidden |= torch.rand((b, 1, h, w), generator=g) < mask_fraction
    if mask_box is not None:
        box = _vector(mask_box, "mask box")
        if box.shape != (4,) or box.min() < 0 or box.max() > 1 or box[0] > box[2] or box[1] > box[3]:
            raise UserError("mask box must be (x0, y0, x1, y1) fractions in [0, 1] with x0 <= x1 and y0 <= y1")
        x0, x1 = int(round(box[0] * w)), int(round(box[2] * w))
        y0, y1 = int(round(box[1] * h)), int(round(box[3] * h))
        hidden[:, :, y0:y1, x0:x1] = True
    return out.masked_fill(hidden.expand_as(out), fill)


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
    from training.models.base import Encoding

    zz = torch.from_numpy(_latents(run, z)).reshape(-1, *run.latent_shape)
    latent = run.model.latent_for_decode(Encoding(mean=zz))
    return _to_uint8(run.model.decode_image(latent))


@torch.inference_mode()
def reconstruct(run: LoadedRun, image) -> np.ndarray:
    """Image(s) (see `image_batch`; a PIL image is prepared first) -> uint8 reconstructions (B, H, W, C)."""
    x = image_batch(run, image)
    return _to_uint8(run.model.reconstruct(x))


# ---- interpolation -----------------------------------------------------------------------------------
def _ts(t) -> tuple[np.ndarray, bool]:
    a = _finite_array(t, "t", max_abs=1e3)
    return a.reshape(-1), a.ndim == 0


def lerp(z0, z1, t) -> np.ndarray:
    """Straight line: (1 - t) z0 + t z1. t scalar -> (D,); t array (n,) -> (n, D)."""
    a, b = _vector(z0, "z0"), _vector(z1, "z1")
    _same_shape(a, b, names=("z0", "z1"))
    ts, scalar = _ts(t)
    out = (1.0 - ts)[:, None] * a[None] + ts[:, None] * b[None]
    return (out[0] if scalar else out).astype(np.float32)


def slerp(z0, z1, t) -> np.ndarray:
    """Spherical interpolation (White 2016): stays near the shell where Gaussian samples live.

    Between two vectors of the same norm r every point has norm r. Near-parallel or anti-parallel
    vectors (no unique great circle) and zero vectors fall back to lerp.
    """
    a, b = _vector(z0, "z0"), _vector(z1, "z1")
    _same_shape(a, b, names=("z0", "z1"))
    ts, scalar = _ts(t)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return lerp(a, b, ts[0] if scalar else ts)
    cos = float(np.clip(np.dot(a / na, b / nb), -1.0, 1.0))
    if 1.0 - abs(cos) < _PARALLEL_EPS:
        return lerp(a, b, ts[0] if scalar else ts)
    omega = np.arccos(cos)
    so = np.sin(omega)
    w0 = np.sin((1.0 - ts) * omega) / so
    w1 = np.sin(ts * omega) / so
    out = w0[:, None] * a[None] + w1[:, None] * b[None]
    return (out[0] if scalar else out).astype(np.float32)


_INTERPOLATORS = {"linear": lerp, "lerp": lerp, "slerp": slerp, "spherical": slerp}


def interpolate(z0, z1, n: int, mode: str = "slerp") -> np.ndarray:
    """n evenly spaced points from z0 to z1 (both included), (n, D) float32. mode: 'linear' or 'slerp'."""
    n = _int(n, "number of steps", 2, MAX_INTERPOLATION_STEPS)
    fn = _INTERPOLATORS.get(mode) if isinstance(mode, str) else None
    if fn is None:
        raise UserError(f"unknown interpolation mode {mode!r} (use 'linear' or 'slerp')")
    return fn(z0, z1, np.linspace(0.0, 1.0, n))


# ---- the map ------------------------------------------------------------------------------------------
def _knn(run: LoadedRun, z, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (B, k) and Euclidean distances (B, k) of the k nearest rows of latents['mu'], nearest first."""
    lat = _need_latents(run)
    q = _latents(run, z)
    mu = lat["mu"]
    n = mu.shape[0]
    k = min(k, n)
    sqnorm = run.mu_sqnorm if run.mu_sqnorm is not None else np.einsum("ij,ij->i", mu, mu, dtype=np.float64)
    # ||q - m||² - ||q||² = ||m||² - 2 q·m ranks the table (float32 matmul: no copy of a large table);
    # the k candidates are then re-measured exactly in float64.
    d2 = sqnorm[None, :] - 2.0 * (mu @ q.T).T
    q = q.astype(np.float64)
    if k < n:
        cand = np.argpartition(d2, k - 1, axis=1)[:, :k]
    else:
        cand = np.broadcast_to(np.arange(n), (q.shape[0], n))
    exact = np.linalg.norm(mu[cand].astype(np.float64) - q[:, None, :], axis=2)
    order = np.argsort(exact, axis=1, kind="stable")
    return np.take_along_axis(cand, order, 1), np.take_along_axis(exact, order, 1)


def place_on_map(run: LoadedRun, z) -> np.ndarray:
    """Map coordinates (B, 2) for latents (D,) or (B, D): inverse-distance weighted kNN (k = 8) over
    latents['mu'] -> latents['xy']. A latent equal to a table point lands exactly on that point.

    The weighting is the export's own (`training.latent_map.place_on_map`, the reference), applied to the
    8 neighbours found here: the search above never copies the table, which matters for VQ-VAE tables
    of 10,000 × 4,096 values.
    """
    from training.latent_map import place_on_map as reference_placement

    idx, _ = _knn(run, z, KNN_K)
    q = _latents(run, z)
    mu, xy = run.latents["mu"], run.latents["xy"]
    return np.stack([reference_placement(mu[i], xy[i], q[j], k=len(i)) for j, i in enumerate(idx)]).astype(np.float32)


def nearest_neighbours(run: LoadedRun, z, k: int = 8) -> np.ndarray:
    """Indices into the latent table of the k nearest points (Euclidean on mu), nearest first.
    z (D,) -> (k,); z (B, D) -> (B, k)."""
    lat = _need_latents(run)
    k = _int(k, "k", 1, min(1000, lat["mu"].shape[0]))
    single = np.ndim(z) == 1
    idx, _ = _knn(run, z, k)
    return idx[0] if single else idx


def table_latent(run: LoadedRun, index: int) -> np.ndarray:
    """mu of one point of the latent table (D,) float32."""
    lat = _need_latents(run)
    i = _int(index, "point index", 0, lat["mu"].shape[0] - 1)
    return lat["mu"][i].astype(np.float32)


def table_images(run: LoadedRun, indices) -> np.ndarray:
    """The stored thumbnails of table points, uint8 (B, h, w, C)."""
    lat = _need_latents(run)
    if "thumbs" not in lat:
        raise UserError(f"run {run.name!r} has no thumbnails in latents.npz")
    idx = _indices(run, indices)
    return np.ascontiguousarray(lat["thumbs"][idx].transpose(0, 2, 3, 1))


def _indices(run: LoadedRun, indices) -> np.ndarray:
    lat = _need_latents(run)
    a = np.asarray(indices)
    if a.size == 0:
        raise UserError("no points selected")
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise UserError("point indices must be integers")
    a = a.reshape(-1).astype(np.int64)
    n = lat["mu"].shape[0]
    if a.min() < 0 or a.max() >= n:
        raise UserError(f"point index out of range (the table has {n} points)")
    return a


def mean_latent_of_selection(run: LoadedRun, indices) -> np.ndarray:
    """Mean mu of the selected table points (D,) float32 (e.g. a lasso selection on the map)."""
    idx = _indices(run, indices)
    return run.latents["mu"][idx].astype(np.float64).mean(axis=0).astype(np.float32)


# ---- arithmetic ---------------------------------------------------------------------------------------
def attribute_vector(run: LoadedRun, name: str, corrected: bool = False) -> tuple[np.ndarray, float]:
    """(vector (D,) float32, ROC-AUC) of an attribute from attributes.json; `corrected` picks the
    confounder-balanced vector."""
    if not run.attributes or not run.attributes.get("attributes"):
        raise UserError(f"run {run.name!r} has no attribute vectors (run `python -m training export` on it)")
    attrs = run.attributes["attributes"]
    if not isinstance(name, str) or name not in attrs:
        raise UserError(f"unknown attribute {name!r} (this run has: {', '.join(attrs)})")
    entry = attrs[name]
    if corrected:
        if not isinstance(entry.get("corrected"), dict):
            raise UserError(f"attribute {name!r} has no confounder-corrected vector")
        entry = entry["corrected"]
    auc = entry.get("auc")
    return np.asarray(entry["vector"], dtype=np.float32), (float(auc) if isinstance(auc, (int, float)) else float("nan"))


def has_corrected_vector(run: LoadedRun, name: str) -> bool:
    attrs = (run.attributes or {}).get("attributes", {})
    return isinstance(attrs.get(name), dict) and isinstance(attrs[name].get("corrected"), dict)


def apply_attribute(z, v, alpha: float) -> np.ndarray:
    """z + alpha v (z (D,) or (B, D), v (D,))."""
    zz = _finite_array(z, "latent")
    vv = _vector(v, "attribute vector")
    alpha = _number(alpha, "attribute strength", -100.0, 100.0)
    if zz.shape[-1] != vv.shape[0] or zz.ndim > 2:
        raise UserError(f"latent shape {zz.shape} does not match attribute vector shape {vv.shape}")
    return (zz + alpha * vv).astype(np.float32)


def analogy(a, b, c) -> np.ndarray:
    """a − b + c ("a is to b as ? is to c"), all (D,)."""
    va, vb, vc = _vector(a, "a"), _vector(b, "b"), _vector(c, "c")
    _same_shape(va, vb, vc, names=("a", "b", "c"))
    return (va - vb + vc).astype(np.float32)


# ---- traversals and samples -----------------------------------------------------------------------------
def kl_per_dim(run: LoadedRun) -> Optional[np.ndarray]:
    """Mean KL per latent dimension (D,) from latents.npz, else metrics.json; None when unknown."""
    if run.latents is not None and "kl_per_dim" in run.latents:
        return run.latents["kl_per_dim"].astype(np.float32)
    values = (run.metrics or {}).get("kl_per_dim")
    if isinstance(values, list) and len(values) == run.latent_dim:
        a = np.asarray([v if isinstance(v, (int, float)) else np.nan for v in values], dtype=np.float32)
        if np.all(np.isfinite(a)):
            return a
    return None


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
    if z is None:
        base = np.zeros(run.latent_dim, dtype=np.float32)
    else:
        zz = _latents(run, z)
        if zz.shape[0] != 1:
            raise UserError("a traversal starts from one latent, not a batch")
        base = zz[0]
    if dims is None:
        dims = dims_by_kl(run)[: min(10, run.latent_dim)]
    dims = np.asarray(dims)
    if dims.size == 0 or dims.dtype.kind not in "iu" or dims.ndim != 1:
        raise UserError("dims must be a non-empty list of integer dimensions")
    if dims.min() < 0 or dims.max() >= run.latent_dim:
        raise UserError(f"latent dimension out of range (0..{run.latent_dim - 1})")
    vals = _finite_array(np.linspace(-3, 3, 9) if values is None else values, "traversal values", max_abs=100.0)
    if vals.ndim != 1:
        raise UserError("traversal values must be a list of numbers")
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
    """n samples from the model's prior as uint8 images (B, H, W, C).

    VAE family: z ~ N(0, temperature² I). VQ-VAE: codes from its PixelCNN prior (softmax temperature),
    or UserError when the run has no trained prior.
    """
    n = _int(n, "number of samples", 1, 256)
    seed = _int(seed, "seed", 0, 2**63 - 1)
    temperature = _number(temperature, "temperature", 1e-3, MAX_TEMPERATURE)
    g = torch.Generator().manual_seed(seed)
    if not run.has_prior:
        raise UserError(f"run {run.name!r} has no prior to sample from (train one with `python -m training train-prior`)")
    # VQ-VAE: the attached PixelCNN draws code grids and sample_prior returns them quantised.
    z = run.model.sample_prior(n, generator=g, temperature=temperature)
    return _to_uint8(run.model.decode_image(z))


def sample_latents(run: LoadedRun, n: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
    """n prior latents (n, D) float32 for the VAE family (for random interpolation end points)."""
    n = _int(n, "number of samples", 1, MAX_BATCH)
    seed = _int(seed, "seed", 0, 2**63 - 1)
    temperature = _number(temperature, "temperature", 1e-3, MAX_TEMPERATURE)
    if run.is_vq:
        raise UserError("a VQ-VAE has no Gaussian prior to draw latents from")
    g = torch.Generator().manual_seed(seed)
    return (temperature * torch.randn((n, run.latent_dim), generator=g)).numpy()
