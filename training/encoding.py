"""Encoding a run's dataset: the shared first step of export, evaluate and train-prior.

`open_dataset` loads the data a run was trained on (a one-line error when it is missing or does not fit
the model); `encode_split` runs the encoder over a seeded choice of points of one split and returns their
posterior means, log-variances, VQ code indices, labels and thumbnails.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .data import load_dataset
from .errors import UserError

SPLITS = ("both", "test", "train")
SPLIT_CODE = {"train": 0, "test": 1}


def open_dataset(run):
    """The dataset a run was trained on, checked against the model; UserError when it cannot be loaded."""
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
