"""Base class of the datasets rendered on demand from a discrete factor grid (dsprites, smileys).

The full index space is the grid itself: flat index = mixed-radix number of the factor class
indices, the last factor varying fastest (the dSprites convention). Nothing is stored; `get`
renders the batch from its factors and, if another image size was asked for, resizes it.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import ImageDataset, as_index_array
from .common import resize_uint8

NATIVE_SIZE = 64


class ProceduralDataset(ImageDataset):
    has_factors = True
    # Real value of each factor class, one array per factor (set by subclasses).
    factor_values: list = []

    def _init_grid(self, factor_names: list, factor_values: list, output_size: int | None) -> None:
        self.factor_names = list(factor_names)
        self.factor_values = [np.asarray(v, dtype=np.float64) for v in factor_values]
        self.factor_sizes = [len(v) for v in self.factor_values]
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        # strides[k] = product of the sizes of the factors after k (last factor fastest).
        self._strides = np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)
        self._size = int(np.prod(sizes))
        self.image_size = int(output_size or NATIVE_SIZE)

    def __len__(self) -> int:
        return self._size

    # ---- factor <-> index ----------------------------------------------------------------------------
    def factors_of(self, indices) -> np.ndarray:
        idx = self._checked(as_index_array(indices))
        return (idx[:, None] // self._strides[None, :]) % np.asarray(self.factor_sizes, dtype=np.int64)[None, :]

    def index_of(self, factor_classes: np.ndarray) -> np.ndarray:
        classes = self._checked_classes(factor_classes)
        return classes @ self._strides

    def factor_values_of(self, factor_classes: np.ndarray) -> np.ndarray:
        """Real factor values (B, n_factors) float64 for factor class indices."""
        classes = self._checked_classes(factor_classes)
        return np.stack([self.factor_values[k][classes[:, k]] for k in range(len(self.factor_sizes))], axis=1)

    # ---- images ----------------------------------------------------------------------------------------
    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        classes = self.factors_of(indices)
        images = self.render(classes)
        return images, torch.from_numpy(self.labels_of(classes))

    def render(self, factor_classes: np.ndarray) -> torch.Tensor:
        classes = self._checked_classes(factor_classes)
        images = torch.from_numpy(self.render_native(classes))
        return resize_uint8(images, self.image_size) if self.image_size != NATIVE_SIZE else images

    def render_native(self, classes: np.ndarray) -> np.ndarray:
        """uint8 (B, C, 64, 64) numpy images for validated factor classes. Subclasses implement it."""
        raise NotImplementedError

    def labels_of(self, classes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ---- checks ----------------------------------------------------------------------------------------
    def _checked(self, idx: np.ndarray) -> np.ndarray:
        if idx.size and (idx.min() < 0 or idx.max() >= self._size):
            raise IndexError(f"{self.name}: index out of range 0..{self._size - 1}")
        return idx

    def _checked_classes(self, factor_classes) -> np.ndarray:
        if isinstance(factor_classes, torch.Tensor):
            factor_classes = factor_classes.cpu().numpy()
        classes = np.asarray(factor_classes, dtype=np.int64)
        if classes.ndim == 1:
            classes = classes[None, :]
        if classes.ndim != 2 or classes.shape[1] != len(self.factor_sizes):
            raise ValueError(f"{self.name}: expected factor classes of shape (B, {len(self.factor_sizes)}), "
                             f"got {classes.shape}")
        if classes.size and (classes.min() < 0 or np.any(classes >= np.asarray(self.factor_sizes)[None, :])):
            raise IndexError(f"{self.name}: factor class out of range (sizes {self.factor_sizes})")
        return classes

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, n={len(self)}, factors={dict(zip(self.factor_names, self.factor_sizes))}, "
                f"{self.channels}x{self.image_size}x{self.image_size})")
