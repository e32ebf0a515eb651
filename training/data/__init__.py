"""Datasets: a plain registry from name to loader, and `load_dataset(DataConfig)`.

    dsprites        procedural dSprites-style grid (737,280 binary 64x64 images, rendered on demand)
    smileys         procedural RGB faces on a 64,000-image factor grid (smile, glasses, hue, size, pos_x, pos_y)
    mnist           MNIST IDX files (torchvision layout under data_dir); option binarize: "none" | "dynamic"
    fashion-mnist   Fashion-MNIST IDX files (same options)
    celeba          CelebA aligned images + 40 attributes (torchvision layout under data_dir)
    folder:PATH     any folder of images, optional labels CSV

Every loader honours DataConfig.image_size, subset, test_fraction and its own options (unknown
options are refused); every dataset has fixed `train_indices` / `test_indices` and a `source_note`.
"""
from __future__ import annotations

from ..config import DataConfig
from ..errors import UserError
from .base import ImageDataset, split_indices
from .common import check_common_config
from .dsprites import DSprites, load_dsprites
from .folder import load_folder
from .smileys import Smileys, load_smileys
from .torchvision_sets import load_celeba, load_fashion_mnist, load_mnist

# name -> loader(cfg) -> ImageDataset. "folder:PATH" is handled by its prefix (the path is not a name).
DATASETS = {
    "dsprites": load_dsprites,
    "smileys": load_smileys,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "celeba": load_celeba,
}
FOLDER_PREFIX = "folder:"


def dataset_names() -> list:
    """Registered names, plus the pattern 'folder:PATH' (not a name one can load as is)."""
    return list(DATASETS) + [FOLDER_PREFIX + "PATH"]


def load_dataset(cfg: DataConfig) -> ImageDataset:
    """Build the dataset that `cfg` describes; raises UserError for unknown names and bad options/files."""
    if not isinstance(cfg.name, str):
        raise UserError(f"data.name must be a string, got {cfg.name!r}")
    check_common_config(cfg)
    if cfg.name.startswith(FOLDER_PREFIX):
        return load_folder(cfg, cfg.name[len(FOLDER_PREFIX):])
    loader = DATASETS.get(cfg.name)
    if loader is None:
        raise UserError(f"unknown dataset {cfg.name!r}; known: {', '.join(dataset_names())}")
    return loader(cfg)


__all__ = ["DATASETS", "DSprites", "ImageDataset", "Smileys", "dataset_names", "load_dataset", "split_indices"]
