"""MNIST, Fashion-MNIST and CelebA, read from the files torchvision downloads, held in memory as uint8.

MNIST / Fashion-MNIST: the IDX files are parsed here (gzip or not) from `<data_dir>/MNIST/raw`
(`FashionMNIST/raw`), the torchvision layout, or from `<data_dir>` itself. With both splits present
the official split is used (index space = 60,000 train then 10,000 test); with only one split, that
split is divided by `test_fraction` with a fixed seed, and `source_note` says so. With no files, the
loader tries torchvision's download (`options={"download": False}` skips it) and otherwise raises a
UserError naming the files and the folder.

CelebA: the torchvision layout `<data_dir>/celeba/` with `img_align_celeba/*.jpg`,
`list_attr_celeba.txt` and `list_eval_partition.txt`. Images are centre-cropped to 148x148 (the usual
convention for 64x64 CelebA) and resized once, with antialiasing, to `image_size` (default 64); the 40
binary attributes are the labels (0/1). Partitions 0 and 1 (train, valid) form the training split,
2 the test split.

Memory and time on a laptop: all 202,599 images take 2.5 GB as 64x64 uint8 and a few minutes to decode.
Options cap that: `max_images` (decode a fixed random sample of that many images, keeping the
official split proportions) and the usual `subset` (decode only `subset` training images plus the test
split); `max_test` caps the test images (default: all). Options: download (default true), max_images,
max_test.

MNIST / Fashion-MNIST option `binarize`: "none" (default: grey levels) or "dynamic" (training draws every
pixel ~ Bernoulli(grey level) afresh each time an image is drawn, as Burda et al. 2015; evaluation and
export read one fixed binarisation, seed common.BINARIZE_SEED).
"""
from __future__ import annotations

import gzip
import os
from typing import Optional

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..config import DataConfig
from ..errors import UserError
from .common import (InMemoryDataset, binarize_mode, check_options, data_dir_of, fixed_split, resize_uint8,
                     take_subset)
from .labels import LabelInfo

# ---- IDX (MNIST) ------------------------------------------------------------------------------------------
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]

MNIST_KINDS = {
    # registry name: (torchvision folder, torchvision class name, label name, value names)
    "mnist": ("MNIST", "MNIST", "digit", [str(d) for d in range(10)]),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST", "class", FASHION_CLASSES),
}

# What the label columns mean, per registry name (CelebA's 40 binary attributes need no more than their names).
LABELS = {kind: [LabelInfo(label, label, "categorical", value_names=tuple(names))]
          for kind, (_, _, label, names) in MNIST_KINDS.items()}


def read_idx(path: str) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed): magic 0x0000 <dtype> <ndim>, big-endian dims, data."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read IDX file ({e})")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    dtype = np.dtype(IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4")) if ndim else ()
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise UserError(f"{path}: IDX file is truncated or corrupt ({len(data) - header} data bytes, expected {expected})")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _find_file(folders: list, stem: str) -> Optional[str]:
    for folder in folders:
        for name in (stem, stem + ".gz"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def _find_mnist_splits(folders: list) -> dict:
    """{split: (images path, labels path)} for each split whose two files are both present."""
    found = {}
    for split, (images, labels) in MNIST_FILES.items():
        image_path, label_path = _find_file(folders, images), _find_file(folders, labels)
        if image_path and label_path:
            found[split] = (image_path, label_path)
    return found


def _read_mnist_split(image_path: str, label_path: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{image_path}: expected N x H x W images with N labels in {label_path}, got "
                        f"{images.shape} and {labels.shape}")
    return images.astype(np.uint8), labels.astype(np.int64)


def _try_torchvision_download(class_name: str, root: str) -> Optional[str]:
    """Let torchvision fetch the dataset into `root`; returns the error text when that fails."""
    try:
        import torchvision.datasets as tvd  # only for a download: importing torchvision takes seconds
        getattr(tvd, class_name)(root, train=False, download=True)
        getattr(tvd, class_name)(root, train=True, download=True)
        return None
    except Exception as e:   # no network, mirror down, disk full: all mean "not available"
        return _one_line(e)


def load_mnist_like(cfg: DataConfig, kind: str) -> InMemoryDataset:
    check_options(kind, cfg.options, ["binarize", "download"])
    binarize = binarize_mode(kind, cfg.options)
    folder_name, class_name, label_name, value_names = MNIST_KINDS[kind]
    root = data_dir_of(cfg)
    raw = os.path.join(root, folder_name, "raw")
    folders = [raw, root]
    found = _find_mnist_splits(folders)
    download_error = None
    if not found and cfg.options.get("download", True):
        download_error = _try_torchvision_download(class_name, root)
        found = _find_mnist_splits(folders)
    if not found:
        wanted = ", ".join(f"{stem}[.gz]" for pair in MNIST_FILES.values() for stem in pair)
        why = f" (download failed: {download_error})" if download_error else ""
        raise UserError(f"{kind}: no IDX files found; put {wanted} into {raw}/ (the torchvision layout) or "
                        f"{root}/{why}")

    parts = {split: _read_mnist_split(*paths) for split, paths in found.items()}
    if "train" in parts and "test" in parts:
        images = np.concatenate([parts["train"][0], parts["test"][0]])
        labels = np.concatenate([parts["train"][1], parts["test"][1]])
        n_train = len(parts["train"][0])
        train_indices = take_subset(np.arange(n_train, dtype=np.int64), cfg.subset)
        test_indices = np.arange(n_train, len(images), dtype=np.int64)
        note = f"official {kind} split ({n_train} train, {len(images) - n_train} test) from {os.path.dirname(found['test'][0])}"
    else:
        split = next(iter(parts))
        images, labels = parts[split]
        train_indices, test_indices = fixed_split(len(images), cfg.test_fraction, cfg.subset)
        note = (f"only the official {split} split of {kind} was found ({os.path.dirname(found[split][0])}); it is "
                f"divided {len(images) - len(test_indices)}/{len(test_indices)} into train/test with a fixed seed")

    tensor = torch.from_numpy(images.copy())[:, None]
    if cfg.image_size is not None:
        tensor = resize_uint8(tensor, cfg.image_size)
    ds = InMemoryDataset(kind, tensor, torch.from_numpy(labels.astype(np.float32))[:, None], [label_name],
                         ["categorical"], train_indices, test_indices, note)
    ds.label_value_names = {label_name: value_names}
    if binarize == "dynamic":
        ds.use_dynamic_binarization()
    return ds


def load_mnist(cfg: DataConfig) -> InMemoryDataset:
    """MNIST digits (labels: digit 0..9). See the module docstring for where the files are looked for."""
    return load_mnist_like(cfg, "mnist")


def load_fashion_mnist(cfg: DataConfig) -> InMemoryDataset:
    """Fashion-MNIST (labels: class 0..9, names in `label_value_names`)."""
    return load_mnist_like(cfg, "fashion-mnist")


# ---- CelebA ---------------------------------------------------------------------------------------------------
CELEBA_FOLDER = "celeba"
CELEBA_IMAGES = "img_align_celeba"
CELEBA_ATTR = "list_attr_celeba.txt"
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_CROP = 148
CELEBA_SEED = 777
# Show a progress bar when decoding at least this many images.
PROGRESS_FROM = 5000


def _read_celeba_attributes(path: str) -> tuple[list, list, np.ndarray]:
    """list_attr_celeba.txt: line 1 = count, line 2 = 40 names, then `<file> <40 x +-1>` per image."""
    with open(path, encoding="utf-8") as f:
        lines = [line.split() for line in f if line.strip()]
    if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise UserError(f"{path}: not a CelebA attribute file (first line must be the image count)")
    names = lines[1]
    rows = lines[2:]
    if int(lines[0][0]) != len(rows):
        raise UserError(f"{path}: header says {lines[0][0]} images but the file lists {len(rows)}")
    files = [row[0] for row in rows]
    try:
        values = np.array([[int(v) for v in row[1:]] for row in rows], dtype=np.int64)
    except ValueError:
        raise UserError(f"{path}: attribute values must be 1 or -1")
    if values.shape != (len(rows), len(names)) or not np.all(np.isin(values, (-1, 1))):
        raise UserError(f"{path}: each image line needs {len(names)} values of 1 or -1")
    return files, names, (values > 0).astype(np.float32)


def _read_celeba_partition(path: str) -> dict:
    """list_eval_partition.txt: `<file> <0|1|2>` per line (train, valid, test)."""
    partition = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise UserError(f"{path}:{number}: expected '<file> <0|1|2>'")
            partition[parts[0]] = int(parts[1])
    return partition


def decode_celeba_image(path: str, size: int) -> np.ndarray:
    """Centre 148x148 crop of an aligned CelebA image, resized to size x size: uint8 (3, size, size)."""
    with Image.open(path) as img:
        original_width = img.width
        # JPEG draft mode decodes at 1/2, 1/4, ... scale straight from the DCT; used only while the crop
        # still has at least `size` pixels, so the result is the same crop, several times faster.
        scale = 1
        while CELEBA_CROP // (scale * 2) >= size and scale < 8:
            scale *= 2
        if scale > 1:
            img.draft("RGB", (img.width // scale, img.height // scale))
        img = img.convert("RGB")
        crop = int(round(CELEBA_CROP * img.width / original_width))
        left, top = int(round((img.width - crop) / 2)), int(round((img.height - crop) / 2))
        # Crop first, then resize (a resize `box` would let the filter reach pixels outside the crop).
        # PIL's bilinear resize widens its filter when shrinking, i.e. it antialiases.
        img = img.crop((left, top, left + crop, top + crop))
        img = img.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def load_celeba(cfg: DataConfig) -> InMemoryDataset:
    """CelebA 64x64 (centre crop 148, resize) with its 40 binary attributes; see the module docstring."""
    options = cfg.options
    check_options("celeba", options, ["download", "max_images", "max_test"])
    for key in ("max_images", "max_test"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"celeba: option {key!r} must be a positive integer, got {value!r}")
    root = data_dir_of(cfg)
    folder = os.path.join(root, CELEBA_FOLDER)
    needed = [os.path.join(folder, CELEBA_ATTR), os.path.join(folder, CELEBA_PARTITION), os.path.join(folder, CELEBA_IMAGES)]
    missing = [p for p in needed if not os.path.exists(p)]
    if missing and options.get("download", True):
        error = _try_celeba_download(root)
        missing = [p for p in needed if not os.path.exists(p)]
        if missing and error:
            raise UserError(f"celeba: missing {', '.join(os.path.basename(p) for p in missing)} in {folder}/ and the "
                            f"torchvision download failed ({error}); put img_align_celeba/ (the *.jpg images), "
                            f"{CELEBA_ATTR} and {CELEBA_PARTITION} into {folder}/")
    if missing:
        raise UserError(f"celeba: missing {', '.join(os.path.basename(p) for p in missing)}; put img_align_celeba/ "
                        f"(the *.jpg images), {CELEBA_ATTR} and {CELEBA_PARTITION} into {folder}/")

    files, attr_names, attributes = _read_celeba_attributes(needed[0])
    partition = _read_celeba_partition(needed[1])
    unassigned = [f for f in files if f not in partition]
    if unassigned:
        raise UserError(f"celeba: {len(unassigned)} images of {CELEBA_ATTR} are not in {CELEBA_PARTITION} "
                        f"(first: {unassigned[0]})")
    split = np.array([partition[f] for f in files])
    chosen_train, chosen_test = _choose_celeba_images(split, cfg.subset, options)
    chosen = np.concatenate([chosen_train, chosen_test])

    size = cfg.image_size or 64
    images = np.empty((len(chosen), 3, size, size), dtype=np.uint8)
    unreadable = []
    for row, index in enumerate(tqdm(chosen, desc="decoding CelebA", unit="img", disable=len(chosen) < PROGRESS_FROM)):
        path = os.path.join(needed[2], files[index])
        try:
            images[row] = decode_celeba_image(path, size)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            unreadable.append((row, f"{files[index]}: {e}"))
    if unreadable:
        raise UserError(f"celeba: {len(unreadable)} image(s) could not be read from {needed[2]} (first: "
                        f"{unreadable[0][1]})")
    n_train = len(chosen_train)
    note = (f"CelebA from {folder}: {n_train} training (partitions train+valid) and {len(chosen_test)} test images "
            f"of {len(files)}; centre crop {CELEBA_CROP}, resized to {size}")
    ds = InMemoryDataset("celeba", torch.from_numpy(images), torch.from_numpy(attributes[chosen]), attr_names,
                         ["binary"] * len(attr_names), np.arange(n_train, dtype=np.int64),
                         np.arange(n_train, len(chosen), dtype=np.int64), note)
    # Row i of the dataset is line `source_rows[i]` of the attribute file (file name `files[...]`).
    ds.source_rows = chosen
    ds.source_files = [files[i] for i in chosen]
    return ds


def _choose_celeba_images(split: np.ndarray, subset: Optional[int], options: dict) -> tuple[np.ndarray, np.ndarray]:
    """Which attribute-file rows to decode: (training rows, test rows), each in file order."""
    train = np.nonzero(split != 2)[0]
    test = np.nonzero(split == 2)[0]
    rng = np.random.default_rng(CELEBA_SEED)
    max_images = options.get("max_images")
    if max_images is not None and max_images < len(train) + len(test):
        # Keep the official train/test proportions inside the cap.
        n_test = int(round(max_images * len(test) / (len(train) + len(test))))
        train = np.sort(rng.choice(train, size=max_images - n_test, replace=False))
        test = np.sort(rng.choice(test, size=n_test, replace=False))
    if options.get("max_test") is not None and options["max_test"] < len(test):
        test = np.sort(rng.choice(test, size=options["max_test"], replace=False))
    return take_subset(train, subset), test


def _try_celeba_download(root: str) -> Optional[str]:
    try:
        import torchvision.datasets as tvd  # only for a download: importing torchvision takes seconds
        tvd.CelebA(root, split="all", target_type="attr", download=True)
        return None
    except Exception as e:   # Google Drive quota, no network, missing gdown: all mean "not available"
        return _one_line(e)


def _one_line(error: Exception) -> str:
    """First and last line of an exception message (torchvision lists every mirror it tried)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if len(lines) <= 1 else f"{lines[0]} ... {lines[-1]}"
    return f"{type(error).__name__}: {text}"
