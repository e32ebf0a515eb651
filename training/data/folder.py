"""`folder:PATH`: any folder of images, decoded once into a uint8 tensor.

Files: png, jpg, jpeg, bmp, webp, gif (first frame), found recursively, sorted by relative path; names
starting with "." are skipped. Each image is centre-cropped to a square and resized (bilinear with
antialiasing) to `image_size` (default 64). Transparent images are composited over black.

Options:
  channels    "auto" (default: 1 channel if every image is grey, else 3), "L"/1 or "RGB"/3
  labels      a CSV file (relative to the folder, or absolute) with a `filename` column (the path relative
              to the folder, or just the file name when that is unique) and numeric label columns;
              `labels.csv` inside the folder is used when present. Columns with a non-numeric or empty
              cell are left out (with a warning); true/false count as 1/0. Images without a CSV row are
              left out (with a warning), so that every label is a real number.
  max_images  decode only the first N images (in sorted order)

Corrupt or unreadable files are skipped with a warning giving their count; if none can be read, or the
folder holds no images, the loader raises UserError. PIL's decompression-bomb limit
(Image.MAX_IMAGE_PIXELS) stays on: a file over it counts as unreadable.
"""
from __future__ import annotations

import csv
import os
import warnings
from typing import Optional

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..config import DataConfig
from ..errors import UserError
from .common import InMemoryDataset, check_options, data_dir_of, fixed_split, label_kind_of

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
DEFAULT_SIZE = 64
LABELS_FILE = "labels.csv"
PROGRESS_FROM = 5000   # show a progress bar when decoding at least this many images
CHANNEL_CHOICES = {"auto": None, "L": 1, "l": 1, 1: 1, "RGB": 3, "rgb": 3, 3: 3}
BOOLEAN_WORDS = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0}


def list_images(folder: str) -> list:
    """Relative paths (with '/') of the image files under `folder`, recursively, sorted."""
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(directory, name), folder).replace(os.sep, "/"))
    return sorted(found)


def decode_image(path: str, size: int) -> np.ndarray:
    """uint8 (size, size, 3): centre square crop, resized with antialiasing. Raises on unreadable files."""
    with Image.open(path) as img:
        side = min(img.width, img.height)
        if side <= 0:
            raise ValueError("empty image")
        # JPEG: let the decoder shrink by a power of two while the short side stays >= size.
        img.draft("RGB", (max(1, img.width * size // side), max(1, img.height * size // side)))
        img = _to_rgb(img)
        side = min(img.width, img.height)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        # Crop first, then resize: a resize `box` would let the filter reach pixels outside the crop.
        img = img.crop((left, top, left + side, top + side))
        img = img.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if not has_alpha:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")


def read_labels_csv(path: str) -> tuple[dict, list]:
    """{filename: [values]} and the numeric column names of a labels CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read labels CSV ({e})")
    if "filename" not in columns:
        raise UserError(f"{path}: labels CSV needs a 'filename' column (columns: {', '.join(columns) or 'none'})")
    numeric, skipped = [], []
    for column in columns:
        if column == "filename" or column is None:
            continue
        parsed = [_number(row.get(column)) for row in rows]
        (numeric if rows and all(v is not None for v in parsed) else skipped).append(column)
    if skipped:
        warnings.warn(f"{path}: column(s) {', '.join(skipped)} are not numeric in every row and are not used as labels")
    if not numeric:
        raise UserError(f"{path}: labels CSV has no numeric label column besides 'filename'")
    table = {}
    for row in rows:
        name = (row.get("filename") or "").strip().replace("\\", "/")
        if name:
            table[name] = [_number(row[c]) for c in numeric]
    return table, numeric


def _number(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    text = text.strip()
    if text.lower() in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[text.lower()]
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _match_labels(files: list, table: dict, csv_path: str) -> tuple[list, list]:
    """Keep the files that have a CSV row (by relative path, else by unique base name): (files, rows)."""
    file_set = set(files)
    by_base = {}
    for rel in files:
        by_base.setdefault(os.path.basename(rel), []).append(rel)
    row_of = {}
    for name, values in table.items():
        if name in file_set:
            row_of[name] = values
        elif len(by_base.get(name, [])) == 1:
            row_of[by_base[name][0]] = values
    kept = [rel for rel in files if rel in row_of]
    if not kept:
        raise UserError(f"{csv_path}: no 'filename' entry matches an image of the folder")
    if len(kept) < len(files):
        warnings.warn(f"{csv_path}: {len(files) - len(kept)} image(s) have no row in the labels CSV and are left out")
    if len(row_of) < len(table):
        warnings.warn(f"{csv_path}: {len(table) - len(row_of)} row(s) name no image of the folder")
    return kept, [row_of[rel] for rel in kept]


def _resolve_folder(path: str, cfg: DataConfig) -> str:
    if not path:
        raise UserError("folder dataset needs a path: use 'folder:PATH'")
    candidates = [path] if os.path.isabs(path) else [path, os.path.join(data_dir_of(cfg), path)]
    for candidate in candidates:
        if os.path.isdir(candidate):
            return candidate
    raise UserError(f"folder:{path}: no such folder")


def _channels_option(options: dict) -> Optional[int]:
    value = options.get("channels", "auto")
    if isinstance(value, bool) or value not in CHANNEL_CHOICES:
        raise UserError(f"folder: option 'channels' must be 'auto', 'L' or 'RGB', got {value!r}")
    return CHANNEL_CHOICES[value]


def load_folder(cfg: DataConfig, path: str) -> InMemoryDataset:
    options = cfg.options
    check_options("folder", options, ["channels", "labels", "max_images"])
    channels = _channels_option(options)
    max_images = options.get("max_images")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise UserError(f"folder: option 'max_images' must be a positive integer, got {max_images!r}")
    folder = _resolve_folder(path, cfg)
    files = list_images(folder)
    if not files:
        raise UserError(f"folder:{path}: no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) found")

    csv_path = _labels_path(folder, options)
    label_rows, label_names = None, []
    if csv_path:
        table, label_names = read_labels_csv(csv_path)
        files, label_rows = _match_labels(files, table, csv_path)
    if max_images is not None:
        files = files[:max_images]
        label_rows = label_rows[:max_images] if label_rows is not None else None

    size = cfg.image_size or DEFAULT_SIZE
    images, kept, failures = [], [], []
    for i, rel in enumerate(tqdm(files, desc=f"decoding {folder}", unit="img", disable=len(files) < PROGRESS_FROM)):
        try:
            images.append(decode_image(os.path.join(folder, rel), size))
            kept.append(i)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            failures.append(f"{rel} ({type(e).__name__})")
    if not images:
        raise UserError(f"folder:{path}: none of the {len(files)} image file(s) could be read (first: {failures[0]})")
    if failures:
        warnings.warn(f"folder:{path}: skipped {len(failures)} unreadable image(s) (first: {failures[0]})")

    rgb = np.stack(images)                                         # (N, size, size, 3)
    if channels is None:
        channels = 1 if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]) else 3
    if channels == 1:
        # ITU-R 601 luma, as PIL's convert("L"); exact for grey images.
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        array = np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, None]
    else:
        array = rgb.transpose(0, 3, 1, 2)
    if label_rows is not None:
        labels = np.array([label_rows[i] for i in kept], dtype=np.float32).reshape(len(kept), len(label_names))
    else:
        labels = np.zeros((len(kept), 0), dtype=np.float32)
    train, test = fixed_split(len(kept), cfg.test_fraction, cfg.subset)
    ds = InMemoryDataset(f"folder:{path}", torch.from_numpy(np.ascontiguousarray(array)), torch.from_numpy(labels),
                         label_names, [label_kind_of(labels[:, k]) for k in range(len(label_names))], train, test,
                         f"{len(kept)} images from {folder}" + (f", labels from {csv_path}" if csv_path else ""))
    ds.source_files = [files[i] for i in kept]
    return ds


def _labels_path(folder: str, options: dict) -> Optional[str]:
    if "labels" in options:
        value = options["labels"]
        if not isinstance(value, str) or not value:
            raise UserError(f"folder: option 'labels' must be a CSV file name, got {value!r}")
        path = value if os.path.isabs(value) else os.path.join(folder, value)
        if not os.path.isfile(path):
            raise UserError(f"folder: labels file {path} not found")
        return path
    default = os.path.join(folder, LABELS_FILE)
    return default if os.path.isfile(default) else None
