"""The dataset interface: batch-oriented, in-memory or rendered on demand.

Training draws random index batches and calls `get(indices)`; there is no
per-sample PIL work and no DataLoader in the hot loop. Small datasets keep
their images as one uint8 tensor; procedural sets (dsprites: 737,280 images =
3 GB as uint8) render a batch from its factors in vectorised code instead.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


class ImageDataset:
    """Base class.

    Attributes every dataset sets:
      name:          registry name ("dsprites", "mnist", "folder:/path", ...)
      channels, image_size
      label_names:   names of the label columns (list of str; may be empty)
      label_kinds:   per label "binary", "categorical" or "continuous"
      train_indices, test_indices: int64 numpy arrays into the full index space (fixed split)

    Procedural datasets with ground-truth factors (dsprites, smileys) also set
      factor_names, factor_sizes (list[int]) and implement `factors_of(indices)`,
      `index_of(factor_classes)` and `render(factor_classes)`; `has_factors` is True.
    """

    name: str = ""
    channels: int = 1
    image_size: int = 64
    label_names: list = []
    label_kinds: list = []
    has_factors: bool = False
    factor_names: list = []
    factor_sizes: list = []
    # Where the images and the split came from (e.g. "only
    # the official MNIST test split was found; divided 9000/1000 with a fixed seed"), and optional names
    # of categorical label values ({"digit": ["0", ..., "9"]}, {"shape": ["square", "ellipse", "heart"]}).
    source_note: str = ""
    label_value_names: dict = {}

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8 (B, C, H, W), labels float32 (B, len(label_names))) for the given indices."""
        raise NotImplementedError

    def get_float(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float32 in [0, 1] (what models take), labels as float32."""
        images, labels = self.get(indices)
        return images.float().div_(255.0), labels

    # ---- ground-truth factors (procedural datasets) ----------------------------------------------
    def factors_of(self, indices) -> np.ndarray:
        """Factor class indices (B, n_factors) int64 for flat dataset indices."""
        raise NotImplementedError(f"{self.name} has no ground-truth factors")

    def index_of(self, factor_classes: np.ndarray) -> np.ndarray:
        """Flat dataset indices for factor class indices (B, n_factors)."""
        raise NotImplementedError(f"{self.name} has no ground-truth factors")

    def render(self, factor_classes: np.ndarray) -> torch.Tensor:
        """uint8 images (B, C, H, W) for factor class indices (B, n_factors)."""
        raise NotImplementedError(f"{self.name} has no ground-truth factors")

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n factor vectors drawn uniformly from the grid (B, n_factors) int64."""
        return np.stack([rng.integers(0, s, size=n) for s in self.factor_sizes], axis=1).astype(np.int64)


def split_indices(n: int, test_fraction: float, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Fixed train/test split of range(n) by a seeded permutation (independent of the training seed)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def as_index_array(indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        indices = indices.cpu().numpy()
    return np.asarray(indices, dtype=np.int64).reshape(-1)
