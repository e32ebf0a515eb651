"""Pictures into the model: uploads, drawings and arrays of any size and format brought to a run's
input, and the damaged copies of the denoising / inpainting demo.

Uploads are untrusted files: everything here refuses what it cannot read with a one-line `UserError`
(sizes are checked on the header, before any pixel is decoded).
"""
from __future__ import annotations

import io
import os
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence

from training.errors import UserError

from .latent_ops import finite_array, one_vector
from .runs import LoadedRun

MAX_PIXELS = 40_000_000     # uploads above 40 megapixels are refused before decoding
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def read_upload(upload: Any) -> bytes:
    """The uploaded file's bytes (the upload component gives a path in Gradio's upload cache)."""
    path = upload.get("path") if isinstance(upload, dict) else upload
    if not isinstance(path, (str, os.PathLike)):
        raise UserError("the upload is not a file")
    try:
        size = os.path.getsize(path)
        if size > MAX_UPLOAD_BYTES:
            raise UserError(f"the upload is too large ({size / 1e6:.1f} MB; limit {MAX_UPLOAD_BYTES / 1e6:g} MB)")
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise UserError("the upload could not be read")


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
            f = finite_array(a, "image", max_abs=None)
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
        finite_array(image, "image", max_abs=None).astype(np.float32))
    if not torch.isfinite(x).all():
        raise UserError("image holds NaN or infinite values")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise UserError(f"image must be (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise UserError("image values must be in [0, 1]")
    if not 0.0 <= mask_fraction <= 1.0 or not 0.0 <= fill <= 1.0:
        raise UserError("mask fraction and fill value must be in [0, 1]")
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    out = x.clone()
    if noise_std > 0:
        out = (out + noise_std * torch.randn(out.shape, generator=g)).clamp_(0.0, 1.0)
    hidden = torch.zeros((b, 1, h, w), dtype=torch.bool)
    if mask_fraction > 0:
        hidden |= torch.rand((b, 1, h, w), generator=g) < mask_fraction
    if mask_box is not None:
        box = one_vector(mask_box, "mask box")
        if box.shape != (4,) or box.min() < 0 or box.max() > 1 or box[0] > box[2] or box[1] > box[3]:
            raise UserError("mask box must be (x0, y0, x1, y1) fractions in [0, 1] with x0 <= x1 and y0 <= y1")
        x0, x1 = int(round(box[0] * w)), int(round(box[2] * w))
        y0, y1 = int(round(box[1] * h)), int(round(box[3] * h))
        hidden[:, :, y0:y1, x0:x1] = True
    return out.masked_fill(hidden.expand_as(out), fill)
