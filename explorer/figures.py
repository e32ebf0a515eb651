"""Pictures and payloads for the explorer: image grids, GIFs, small charts, map data, downloads.

Everything is drawn with Pillow (no plotting library is needed on the server); the interactive map is
drawn in the browser from `map_payload`'s JSON. The charts live in `charts.py` (re-exported here).
"""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from training.errors import UserError

from .charts import PALETTE, TEXT_PX, text_font
from .latent_ops import dims_by_kl, kl_per_dim
from .runs import LoadedRun

MAX_CATEGORIES = len(PALETTE)
MAX_CSV_VALUES = 20_000_000  # N * D above this is too big for a CSV download; use latents.npz
MAX_DISPLAY_SIDE = 2048
# Sizes for a projector at the back of a classroom: single images at least IMAGE_PX, every tile of a grid
# or strip at least TILE_PX, always by a whole nearest-neighbour factor (crisp pixels, no smoothing).
IMAGE_PX = 192
TILE_PX = 96
LABEL_BG = "#f2f2f2"      # label bands: a light band of their own, readable on a light and a dark page
LABEL_INK = "#1a1a1a"
GRID_LINE = (64, 64, 64)  # the grey between tiles (image_grid's pad_value)
STRIP_MAX_PX = 740        # strips wrap into rows this wide: the tab column beside the map at 1440 px


# ---- image grids ---------------------------------------------------------------------------------------
def _as_uint8_batch(images) -> np.ndarray:
    """uint8 (B, H, W, C) with C in {1, 3} from an array / list of arrays / list of PIL images."""
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise UserError("no images to show")
        images = np.stack([_as_uint8_image(im) for im in images])
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise UserError(f"images must be uint8, got {a.dtype}")
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3) or a.shape[0] == 0:
        raise UserError(f"images must be (B, H, W, 1|3), got {a.shape}")
    return a


def _as_uint8_image(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = image.convert("RGB") if image.mode not in ("L", "RGB") else image
        image = np.asarray(image)
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise UserError(f"images must be uint8, got {a.dtype}")
    return a if a.ndim == 3 else a[..., None]


def image_grid(images_uint8, nrow: int = 8, padding: int = 2, pad_value: int = 64) -> Image.Image:
    """Tile images (B, H, W, C) uint8 into one picture with `nrow` images per row (torchvision's
    convention) and `padding` pixels of grey between and around them."""
    a = _as_uint8_batch(images_uint8)
    b, h, w, c = a.shape
    nrow = max(1, min(int(nrow), b))
    rows = math.ceil(b / nrow)
    H = rows * h + (rows + 1) * padding
    W = nrow * w + (nrow + 1) * padding
    canvas = np.full((H, W, c), pad_value, dtype=np.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        y = padding + r * (h + padding)
        x = padding + col * (w + padding)
        canvas[y:y + h, x:x + w] = a[i]
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")


def to_pil(image) -> Image.Image:
    """uint8 (H, W, C) / (H, W) / (1, H, W, C) array or PIL image -> PIL image (L or RGB)."""
    if isinstance(image, Image.Image):
        return image
    a = np.asarray(image)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    a = _as_uint8_image(a)
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise UserError(f"an image must be (H, W, 1|3), got {a.shape}")
    return Image.fromarray(a[..., 0] if a.shape[2] == 1 else a, mode="L" if a.shape[2] == 1 else "RGB")


def factor_for(side: int, minimum: int) -> int:
    """The smallest whole factor that brings `side` pixels to at least `minimum` (1 when already there)."""
    return max(1, -(-int(minimum) // max(1, int(side))))


def enlarge(image, minimum: int) -> Image.Image:
    """Nearest-neighbour enlargement by the smallest whole factor that makes the longer side >= minimum."""
    im = to_pil(image)
    factor = min(factor_for(max(im.size), minimum), max(1, MAX_DISPLAY_SIDE // max(im.size)))
    if factor == 1:
        return im
    return im.resize((im.size[0] * factor, im.size[1] * factor), resample=Image.Resampling.NEAREST)


def upscale(image, size: int) -> Image.Image:
    """Nearest-neighbour enlargement by the largest integer factor that keeps the longer side <= size
    (at least 1): small images stay crisp instead of blurry."""
    im = to_pil(image)
    size = max(1, min(int(size), MAX_DISPLAY_SIDE))
    factor = max(1, size // max(im.size))
    if factor == 1:
        return im
    return im.resize((im.size[0] * factor, im.size[1] * factor), resample=Image.Resampling.NEAREST)


def to_png_bytes(image) -> bytes:
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def show(image, size: int = IMAGE_PX) -> Image.Image:
    """One image as shown in the app: uint8 (H, W, C) enlarged with nearest neighbour to at least `size` px."""
    return enlarge(image, size)


def enlarged_tiles(images, tile: int = TILE_PX) -> np.ndarray:
    """uint8 (B, H, W, C) with every image repeated by the whole factor that makes it >= `tile` px."""
    a = _as_uint8_batch(images)
    f = factor_for(max(a.shape[1:3]), tile)
    return a if f == 1 else a.repeat(f, axis=1).repeat(f, axis=2)


def grid(images, nrow: int, tile: int = TILE_PX) -> Image.Image:
    """A grid or strip of images as shown in the app: each tile enlarged (nearest neighbour, a whole factor)
    to at least `tile` px, thin grey lines between them."""
    return image_grid(enlarged_tiles(images, tile), nrow=nrow, padding=3, pad_value=GRID_LINE[0])


def labelled_grid(images, nrow: int, row_labels: Sequence[str], column_labels: Sequence[str],
                  tile: int = TILE_PX) -> Image.Image:
    """A grid (rows of `nrow` tiles, as `grid`) with a label band above each row ('z3 · KL 2.31 · moves x')
    and the column values under the last row: the picture says what it shows, also when it is downloaded
    and pasted into a slide. Bands above the rows, not beside them, keep it as narrow as its tiles."""
    a = enlarged_tiles(images, tile)
    n, side = a.shape[0], a.shape[1]
    cols = max(1, min(int(nrow), n))
    rows = math.ceil(n / cols)
    pad, band = 3, TEXT_PX + 8
    width = cols * (side + pad) + pad
    sheet = Image.new("RGB", (width, rows * (band + side + pad) + pad + band), LABEL_BG)
    draw = ImageDraw.Draw(sheet)
    font = text_font(TEXT_PX)
    for r in range(rows):
        top = r * (band + side + pad)
        if r < len(row_labels):
            draw.text((pad + 2, top + 4), str(row_labels[r]), fill=LABEL_INK, font=font)
        draw.rectangle([0, top + band, width - 1, top + band + side + 2 * pad - 1], fill=GRID_LINE)
        for c in range(cols):
            k = r * cols + c
            if k < n:
                sheet.paste(to_pil(a[k]).convert("RGB"), (pad + c * (side + pad), top + band + pad))
    foot = rows * (band + side + pad) + pad
    for c, text in enumerate(list(column_labels)[:cols]):
        centre = pad + c * (side + pad) + side / 2
        draw.text((centre - draw.textlength(str(text), font=font) / 2, foot + 3), str(text), fill=LABEL_INK, font=font)
    return sheet


def strip(images, tile: int = TILE_PX, max_width: int = STRIP_MAX_PX, per_row: Optional[int] = None) -> Image.Image:
    """A sequence of images (a path, strengths, samples) in order, left to right, `per_row` to a row (default:
    all) but in rows no wider than `max_width`: it fits its column at full tile size instead of being shrunk
    or scrolled."""
    a = enlarged_tiles(images, tile)
    fit = max(1, (max_width - 3) // (a.shape[2] + 3))
    return image_grid(a, nrow=max(1, min(a.shape[0], per_row or a.shape[0], fit)), padding=3, pad_value=GRID_LINE[0])


def captioned_grid(images, captions: Sequence[str], nrow: int, tile: int = TILE_PX,
                   max_width: int = STRIP_MAX_PX) -> Image.Image:
    """Thumbnails (B, h, w, C) uint8 in rows of `nrow` (fewer where that is wider than `max_width`), each
    enlarged (a whole nearest-neighbour factor) to at least `tile` px with its caption below. One picture
    instead of a gallery of files: a click sends three images, not ten."""
    font = text_font(TEXT_PX)
    a = enlarged_tiles(images, tile)
    n, side = a.shape[0], max(a.shape[1:3])
    cols = max(1, min(nrow, n, (max_width - 4) // (side + 4)))
    rows = int(math.ceil(n / cols))
    pad, text_h = 4, TEXT_PX + 6
    sheet = Image.new("RGB", (cols * (side + pad) + pad, rows * (side + text_h + pad) + pad), LABEL_BG)
    draw = ImageDraw.Draw(sheet)
    for k, caption in enumerate(list(captions)[:n]):
        r, c = divmod(k, cols)
        x, y = pad + c * (side + pad), pad + r * (side + text_h + pad)
        thumb = to_pil(a[k]).convert("RGB")
        sheet.paste(thumb, (x + (side - thumb.size[0]) // 2, y + (side - thumb.size[1]) // 2))
        width = draw.textlength(caption, font=font)
        draw.text((x + (side - width) / 2, y + side + 2), caption, fill=LABEL_INK, font=font)
    return sheet


def make_gif(frames, fps: float = 10.0, pingpong: bool = False, size: Optional[int] = None) -> bytes:
    """An animated GIF (loops forever) from frames: uint8 (T, H, W, C) or a list of images.

    pingpong: play forwards then backwards (without repeating the end frames).
    size:     nearest-neighbour enlargement of each frame to at least this many pixels (see `enlarge`).
    """
    a = _as_uint8_batch(frames)
    fps = float(fps)
    if not math.isfinite(fps) or not 0.5 <= fps <= 50:
        raise UserError("fps must be between 0.5 and 50")
    if a.shape[0] > 512:
        raise UserError("too many frames for a GIF (max 512)")
    order = list(range(a.shape[0]))
    if pingpong and len(order) > 2:
        order += order[-2:0:-1]
    images = [to_pil(a[i]) for i in order]
    if size:
        images = [enlarge(im, size) for im in images]
    images = [im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT) if im.mode == "RGB" else im
              for im in images]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, int(round(1000.0 / fps))), optimize=False, disposal=1)
    return buf.getvalue()


# ---- map payload and downloads -------------------------------------------------------------------------
def color_choices(run: LoadedRun) -> list[tuple[str, str]]:
    """The colour menu as (title, value) pairs: 'none', 'split (train/test)', each label under its title in
    the dataset's description (LabelInfo) and latent dimensions 'z<d> (KL 2.1)' (the 10 most informative,
    or all when D <= 32). The values are the column names the API and lesson files use."""
    if run.latents is None:
        return [("none", "none")]
    choices = [("none", "none")]
    if "split" in run.latents:
        choices.append(("split (train/test)", "split"))
    choices += [(info.title or name, name) for name, info in zip(run.label_names, run.labels)]
    if not run.is_vq:  # a VQ-VAE's flattened code grid has no meaningful single coordinates
        dims = dims_by_kl(run)
        kl = kl_per_dim(run)
        for d in (dims if run.latent_dim <= 32 else dims[:10]):
            choices.append((f"z{d}" + (f" (KL {kl[d]:.1f})" if kl is not None else ""), f"z{d}"))
    return choices


def color_options(run: LoadedRun) -> list[str]:
    """The values of the colour menu (`color_choices`): 'none', 'split', label columns, 'z<d>'."""
    return [value for _, value in color_choices(run)]


def _color_values(run: LoadedRun, color_by: str) -> tuple[Optional[np.ndarray], str]:
    """(values (N,), kind) for a colour option; kind in none / binary / categorical / continuous."""
    lat = run.latents
    if color_by in (None, "", "none"):
        return None, "none"
    if color_by == "split" and "split" in lat:
        return lat["split"].astype(np.float64), "categorical"
    if color_by in run.label_names and "labels" in lat:
        info = run.labels[run.label_names.index(color_by)]
        codes = lat["labels"][:, run.label_names.index(color_by)]
        # Ordered factors stored as class indices (dSprites' position, scale...) are coloured by their real value.
        return (codes.astype(np.float64), info.kind) if info.is_categorical else (info.real(codes), "continuous")
    if isinstance(color_by, str) and color_by.startswith("z") and color_by[1:].isdigit():
        d = int(color_by[1:])
        if d < run.latent_dim:
            return lat["mu"][:, d].astype(np.float64), "continuous"
    raise UserError(f"cannot colour the map by {color_by!r} (choose one of: {', '.join(color_options(run))})")


def _category_label(run: LoadedRun, color_by: str, value: float) -> str:
    """The legend's name of a category: 'train', 'heart', '7', 'glasses'."""
    if color_by == "split":
        return {0: "train", 1: "test"}.get(int(value), str(value))
    if color_by in run.label_names:
        return run.labels[run.label_names.index(color_by)].format(value)
    return f"{int(value)}" if float(value).is_integer() else f"{value:g}"


def map_payload(run: LoadedRun, color_by: str = "none") -> dict:
    """JSON-serialisable data for the WebGL scatter of the latent map.

    Keys: run, n, x, y (lists of floats, 4 decimals), index (row of the latent table for each point:
    what a click sends back), dataset_index, color_by, color_kind ('none' | 'categorical' | 'binary' |
    'continuous'), color (per point: category code for categorical/binary, the value for continuous,
    absent for none), legend (categorical: [{code, label, color, count}]), color_range (continuous:
    [min, max]), bounds [xmin, xmax, ymin, ymax]. About 0.3 MB of JSON for 10,000 points.
    """
    lat = run.latents
    xy = lat["xy"].astype(np.float64)
    n = xy.shape[0]
    payload = {
        "run": run.name,
        "n": int(n),
        "x": np.round(xy[:, 0], 4).tolist(),
        "y": np.round(xy[:, 1], 4).tolist(),
        "index": list(range(n)),
        "dataset_index": lat["index"].astype(np.int64).tolist() if "index" in lat else list(range(n)),
        "bounds": [float(xy[:, 0].min()), float(xy[:, 0].max()), float(xy[:, 1].min()), float(xy[:, 1].max())],
        "color_by": color_by or "none",
    }
    values, kind = _color_values(run, color_by)
    if values is not None and kind in ("categorical", "binary"):
        categories, codes = np.unique(values, return_inverse=True)
        if len(categories) > MAX_CATEGORIES:
            kind = "continuous"  # too many classes for a legend: show as a colour scale
        else:
            counts = np.bincount(codes, minlength=len(categories))
            payload["color"] = codes.astype(np.int64).tolist()
            payload["legend"] = [{"code": i, "label": _category_label(run, color_by, c), "color": PALETTE[i],
                                  "count": int(counts[i])} for i, c in enumerate(categories)]
    if values is not None and kind == "continuous":
        payload["color"] = np.round(values, 4).tolist()
        payload["color_range"] = [float(values.min()), float(values.max())]
    payload["color_kind"] = kind
    return payload


def latents_csv(run: LoadedRun) -> bytes:
    """The latent table as CSV: point, index (dataset), split, x, y, one column per label, mu_0..mu_{D-1}."""
    lat = run.latents
    mu = lat["mu"]
    n, d = mu.shape
    if n * d > MAX_CSV_VALUES:
        raise UserError(f"the latent table is too large for CSV ({n}×{d}); download latents.npz instead")
    columns = ["point", "index", "split", "x", "y"] + list(run.label_names) + [f"mu_{i}" for i in range(d)]
    head = io.StringIO()
    csv.writer(head, lineterminator="\n").writerow(columns)
    index = lat["index"].astype(np.int64) if "index" in lat else np.arange(n)
    split = lat["split"].astype(np.int64) if "split" in lat else np.zeros(n, dtype=np.int64)
    ints = np.stack([np.arange(n), index, split], axis=1)
    floats = [lat["xy"].astype(np.float64)]
    if run.label_names and "labels" in lat:
        floats.append(lat["labels"].astype(np.float64))
    floats.append(mu.astype(np.float64))
    body = io.StringIO()
    table = np.concatenate([ints.astype(np.float64)] + floats, axis=1)
    fmt = ["%d", "%d", "%d"] + ["%.7g"] * (table.shape[1] - 3)
    np.savetxt(body, table, fmt=fmt, delimiter=",", newline="\n")
    return (head.getvalue() + body.getvalue()).encode("utf-8")


def attributes_json(run: LoadedRun) -> bytes:
    """attributes.json of the run, pretty-printed."""
    return (json.dumps(run.attributes, indent=1) + "\n").encode("utf-8")
