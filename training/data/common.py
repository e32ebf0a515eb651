"""Helpers shared by the dataset loaders: config checks, the fixed split, subsets, resizing.

Nothing here knows about a particular dataset; `InMemoryDataset` is the base for every set whose
images are decoded once into a uint8 tensor (MNIST, Fashion-MNIST, CelebA, image folders).
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from ..errors import UserError
from .base import ImageDataset, as_index_array, split_indices

# Seed of the shuffle that picks `subset` training examples: fixed, independent of the training seed,
# so that two runs with the same DataConfig see the same examples.
SUBSET_SEED = 4321
DEFAULT_DATA_DIR = "./data"
# data.options.binarize: "dynamic" (Burda et al. 2015) draws every pixel ~ Bernoulli(grey level) afresh each
# time training draws an image; every other read (evaluation, export, grids) gets one fixed binarisation
# drawn with BINARIZE_SEED, so held-out likelihoods are computed on the same binary test images every time.
BINARIZE_MODES = ("none", "dynamic")
BINARIZE_SEED = 0


def check_common_config(cfg: DataConfig) -> None:
    """Reject config values that no dataset can honour, with a message naming the field."""
    if cfg.image_size is not None:
        if isinstance(cfg.image_size, bool) or not isinstance(cfg.image_size, int) or not 4 <= cfg.image_size <= 1024:
            raise UserError(f"data.image_size must be an integer between 4 and 1024 (or null), got {cfg.image_size!r}")
    if cfg.subset is not None:
        if isinstance(cfg.subset, bool) or not isinstance(cfg.subset, int) or cfg.subset < 1:
            raise UserError(f"data.subset must be a positive integer (or null), got {cfg.subset!r}")
    if isinstance(cfg.test_fraction, bool) or not isinstance(cfg.test_fraction, (int, float)) \
            or not 0.0 <= float(cfg.test_fraction) < 1.0:
        raise UserError(f"data.test_fraction must be a number in [0, 1), got {cfg.test_fraction!r}")
    if not isinstance(cfg.options, dict):
        raise UserError(f"data.options must be a JSON object, got {type(cfg.options).__name__}")


def check_options(dataset: str, options: dict, known: Iterable[str]) -> None:
    known = sorted(known)
    unknown = sorted(set(options) - set(known))
    if unknown:
        allowed = ", ".join(known) if known else "none"
        raise UserError(f"{dataset}: unknown data option(s) {', '.join(unknown)} (allowed: {allowed})")


def binarize_mode(dataset: str, options: dict) -> str:
    """The validated data.options.binarize value ("none" when absent)."""
    mode = options.get("binarize", "none")
    if mode not in BINARIZE_MODES:
        raise UserError(f"{dataset}: data option binarize must be one of {', '.join(map(repr, BINARIZE_MODES))}, "
                        f"got {mode!r}")
    return mode


def fixed_binarization(images: torch.Tensor, seed: int = BINARIZE_SEED) -> torch.Tensor:
    """uint8 images (values 0/255) with every pixel ~ Bernoulli(grey / 255), drawn by a seeded generator."""
    generator = torch.Generator().manual_seed(int(seed))
    out = torch.empty_like(images)
    for start in range(0, images.shape[0], 4096):   # chunks: no float copy of a whole large dataset
        part = images[start:start + 4096].float().div_(255.0)
        noise = torch.rand(part.shape, generator=generator)
        out[start:start + 4096] = (noise < part).to(torch.uint8).mul_(255)
    return out


def data_dir_of(cfg: DataConfig) -> str:
    return cfg.data_dir if cfg.data_dir else DEFAULT_DATA_DIR


def take_subset(train_indices: np.ndarray, subset: Optional[int]) -> np.ndarray:
    """The first `subset` training indices after a fixed shuffle (sorted again); all of them if None."""
    if subset is None or subset >= len(train_indices):
        return train_indices
    perm = np.random.default_rng(SUBSET_SEED).permutation(len(train_indices))
    return np.sort(train_indices[perm[:subset]])


def fixed_split(n: int, test_fraction: float, subset: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    train, test = split_indices(n, float(test_fraction))
    return take_subset(train, subset), test


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize a uint8 batch (B, C, H, W) to size x size: bilinear with antialiasing, rounded back to uint8.

    Works in chunks so that resizing a whole in-memory dataset never makes one huge float copy.
    """
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def label_kind_of(values: np.ndarray) -> str:
    """binary if values are all 0/1, categorical if few distinct integers, else continuous."""
    finite = values[np.isfinite(values)]
    if finite.size and np.all((finite == 0) | (finite == 1)):
        return "binary"
    if finite.size and np.all(finite == np.round(finite)) and len(np.unique(finite)) <= 50:
        return "categorical"
    return "continuous"


class InMemoryDataset(ImageDataset):
    """Images held as one uint8 tensor (N, C, H, W) with float32 labels (N, K).

    `source_note` says where the images and the split came from (e.g. "official MNIST test split only,
    split 90/10 with a fixed seed"), so that a run folder can record it.
    """

    def __init__(self, name: str, images: torch.Tensor, labels: torch.Tensor, label_names: list,
                 label_kinds: list, train_indices: np.ndarray, test_indices: np.ndarray, source_note: str):
        assert images.dtype == torch.uint8 and images.ndim == 4
        assert labels.shape == (images.shape[0], len(label_names))
        self.name = name
        self.images = images.contiguous()
        self.labels = labels.to(torch.float32).contiguous()
        self.channels = int(images.shape[1])
        self.image_size = int(images.shape[-1])
        self.label_names = list(label_names)
        self.label_kinds = list(label_kinds)
        self.train_indices = np.asarray(train_indices, dtype=np.int64)
        self.test_indices = np.asarray(test_indices, dtype=np.int64)
        self.source_note = source_note
        # Grey levels kept for dynamic binarisation (None: training draws the stored images as they are).
        self.grey: Optional[torch.Tensor] = None
        self.binarize = "none"
        self.binarize_seed: Optional[int] = None

    def use_dynamic_binarization(self, seed: int = BINARIZE_SEED) -> None:
        """Keep the grey levels for training draws and store one fixed binarisation (seed) for every other read."""
        self.grey = self.images
        self.images = fixed_binarization(self.grey, seed)
        self.binarize = "dynamic"
        self.binarize_seed = int(seed)
        self.source_note += (f"; binarised: training draws pixels ~ Bernoulli(grey level) afresh each time (dynamic), "
                             f"evaluation and export read one fixed binarisation (seed {seed})")

    def draw_float(self, indices, noise: torch.Tensor) -> torch.Tensor:
        """Training images as float32: with dynamic binarisation, pixel = 1 where noise (uniform [0, 1), one
        value per pixel) is below the grey level, freshly binarised at each draw; otherwise get_float's images."""
        if self.grey is None:
            return self.get_float(indices)[0]
        idx = torch.from_numpy(as_index_array(indices))
        grey = self.grey.index_select(0, idx).float().div_(255.0)
        return (noise < grey).float()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(as_index_array(indices))
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"{self.name}: index out of range 0..{len(self) - 1}")
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, n={len(self)}, {self.channels}x{self.image_size}x"
                f"{self.image_size}, train={len(self.train_indices)}, test={len(self.test_indices)})")
