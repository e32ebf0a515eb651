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

from typing import Sequence

from ..config import DataConfig
from ..errors import UserError
from .base import ImageDataset, split_indices
from .common import check_common_config
from .dsprites import LABELS as DSPRITES_LABELS
from .dsprites import DSprites, load_dsprites
from .folder import load_folder
from .labels import LabelInfo, plain_label
from .smileys import LABELS as SMILEYS_LABELS
from .smileys import Smileys, load_smileys
from .torchvision_sets import LABELS as TORCHVISION_LABELS
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
# name -> the description of its label columns (training/data/labels.py), each written beside its loader.
LABEL_DESCRIPTIONS = {"dsprites": DSPRITES_LABELS, "smileys": SMILEYS_LABELS, **TORCHVISION_LABELS}


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


def describe_labels(dataset: str, names: Sequence[str], kinds: Sequence[str] = ()) -> list[LabelInfo]:
    """A LabelInfo per label column `names` of dataset `dataset` (its registry name, as in config.json);
    columns the dataset does not describe (or an unknown dataset) get `plain_label` from `kinds`."""
    described = {info.name: info for info in LABEL_DESCRIPTIONS.get(str(dataset), ())}
    kinds = list(kinds) + ["continuous"] * (len(names) - len(kinds))
    return [described.get(str(n)) or plain_label(str(n), str(k)) for n, k in zip(names, kinds)]


__all__ = ["LabelInfo", "describe_labels", "DATASETS", "DSprites", "ImageDataset", "Smileys", "dataset_names", "load_dataset", "split_indices"]
