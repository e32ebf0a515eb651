"""Tests of the datasets package (training/data): grids, geometry, determinism, file parsing, errors."""
from __future__ import annotations

import colorsys
import gzip
import math
import os
import struct
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from training.config import DataConfig
from training.data import dataset_names, load_dataset
from training.data.smileys import LAYOUT, MOUTH_COLOURS, Smileys
from training.errors import UserError

SHARED_MNIST = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
# The official split where this machine has it, else the stand-in tests/conftest.py writes.
SHARED_MNIST_DIR = os.environ.get("VAE_TEST_MNIST_DIR") or SHARED_MNIST


@pytest.fixture(scope="module")
def dsprites():
    return load_dataset(DataConfig(name="dsprites"))


@pytest.fixture(scope="module")
def smileys():
    return load_dataset(DataConfig(name="smileys"))


def _disjoint(a: np.ndarray, b: np.ndarray) -> bool:
    seen = np.zeros(max(a.max(), b.max()) + 1, dtype=bool)
    seen[a] = True
    return not seen[b].any()


# ---- registry and config checks ---------------------------------------------------------------------------
def test_registry_lists_every_dataset():
    assert dataset_names() == ["dsprites", "smileys", "mnist", "fashion-mnist", "celeba", "folder:PATH"]


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(UserError) as e:
        load_dataset(DataConfig(name="imagenet"))
    message = str(e.value)
    assert "imagenet" in message and "dsprites" in message and "folder:PATH" in message


@pytest.mark.parametrize("bad", [
    DataConfig(name="dsprites", test_fraction=1.5),
    DataConfig(name="dsprites", subset=0),
    DataConfig(name="dsprites", image_size=2),
    DataConfig(name="dsprites", options={"colour": "red"}),
    DataConfig(name="smileys", options={"correlate": ["smile", "moustache"]}),
    DataConfig(name="smileys", options={"correlate": ["smile", "glasses"], "correlation": 2}),
])
def test_bad_config_values_are_user_errors(bad):
    with pytest.raises(UserError):
        load_dataset(bad)


# ---- dsprites -------------------------------------------------------------------------------------------------
def test_dsprites_grid(dsprites):
    assert len(dsprites) == 737_280
    assert dsprites.factor_sizes == [3, 6, 40, 32, 32]
    assert dsprites.factor_names == ["shape", "scale", "orientation", "posX", "posY"]
    assert dsprites.has_factors and dsprites.channels == 1 and dsprites.image_size == 64
    # Mixed radix with posY fastest: the strides of the original .npz.
    unit = np.eye(5, dtype=np.int64)
    assert dsprites.index_of(unit).tolist() == [245760, 40960, 1024, 32, 1]
    assert dsprites.factors_of([len(dsprites) - 1]).tolist() == [[2, 5, 39, 31, 31]]
    np.testing.assert_allclose(dsprites.factor_values[1], np.linspace(0.5, 1, 6))
    np.testing.assert_allclose(dsprites.factor_values[2], np.linspace(0, 2 * np.pi, 40))


def test_dsprites_index_round_trip_and_labels(dsprites):
    idx = np.random.default_rng(0).integers(0, len(dsprites), 500)
    classes = dsprites.factors_of(idx)
    assert np.array_equal(dsprites.index_of(classes), idx)
    images, labels = dsprites.get(idx[:50])
    assert labels.dtype == torch.float32 and np.array_equal(labels.numpy(), classes[:50].astype(np.float32))
    assert dsprites.label_names == dsprites.factor_names and set(dsprites.label_kinds) == {"categorical"}
    assert images.dtype == torch.uint8 and images.shape == (50, 1, 64, 64)
    assert set(np.unique(images.numpy())) <= {0, 255}
    with pytest.raises(IndexError):
        dsprites.get([len(dsprites)])


def test_dsprites_split_is_fixed_and_complete(dsprites):
    train, test = dsprites.train_indices, dsprites.test_indices
    assert _disjoint(train, test) and len(train) + len(test) == len(dsprites)
    assert abs(len(test) - 0.1 * len(dsprites)) <= 1
    again = load_dataset(DataConfig(name="dsprites", subset=1000))
    assert np.array_equal(again.test_indices, test) and len(again.train_indices) == 1000
    assert np.all(np.isin(again.train_indices, train))


def test_dsprites_is_deterministic_across_objects(dsprites):
    other = load_dataset(DataConfig(name="dsprites"))
    idx = np.random.default_rng(1).integers(0, len(dsprites), 300)
    assert torch.equal(dsprites.get(idx)[0], other.get(idx)[0])
    # Rendering one at a time gives the same images as a batch (no cross-talk inside a chunk).
    assert torch.equal(dsprites.get(idx[:5])[0], torch.cat([dsprites.get([i])[0] for i in idx[:5]]))


def test_dsprites_orientation_0_and_39_render_the_same(dsprites):
    grid = np.array([[s, k, 0, x, y] for s in range(3) for k in (0, 5) for x in (0, 13, 31) for y in (4, 31)])
    last = grid.copy()
    last[:, 2] = 39
    assert torch.equal(dsprites.render(grid), dsprites.render(last))
    quarter = grid.copy()
    quarter[:, 2] = 7   # ~ 65 deg: really rotates (the test above is not vacuous)
    assert not torch.equal(dsprites.render(grid), dsprites.render(quarter))


def _blob_stats(image: torch.Tensor):
    mask = image[0].numpy() > 0
    rows, cols = np.nonzero(mask)
    return mask.sum(), cols.mean() + 0.5, rows.mean() + 0.5, cols.max() - cols.min() + 1, rows.max() - rows.min() + 1


@pytest.mark.parametrize("pos_x,pos_y", [(0, 0), (31, 31), (10, 20), (16, 5)])
def test_dsprites_square_geometry(dsprites, pos_x, pos_y):
    image = dsprites.render(np.array([[0, 5, 0, pos_x, pos_y]]))[0]
    area, cx, cy, width, height = _blob_stats(image)
    assert abs(area - 400) <= 20 and width in (20, 21) and height in (20, 21)
    assert abs(cx - 64 * (0.25 + 0.5 * pos_x / 31)) < 0.6
    assert abs(cy - 64 * (0.25 + 0.5 * pos_y / 31)) < 0.6
    small = dsprites.render(np.array([[0, 0, 0, pos_x, pos_y]]))[0]
    assert abs(_blob_stats(small)[0] - 100) <= 10          # side 20 * 0.5


def test_dsprites_ellipse_and_heart_geometry(dsprites):
    area, _, _, width, height = _blob_stats(dsprites.render(np.array([[1, 5, 0, 15, 15]]))[0])
    assert abs(area - math.pi * 13 * 7) < 15 and abs(width - 26) <= 1 and abs(height - 14) <= 1
    # Orientation class 10 is ~92 degrees: the long axis is now vertical.
    _, _, _, width, height = _blob_stats(dsprites.render(np.array([[1, 5, 10, 15, 15]]))[0])
    assert abs(width - 14) <= 1 and abs(height - 26) <= 1
    heart = dsprites.render(np.array([[2, 5, 0, 15, 15]]))[0][0].numpy() > 0
    area, _, _, width, height = _blob_stats(dsprites.render(np.array([[2, 5, 0, 15, 15]]))[0])
    assert abs(width - 19.5) <= 1.5 and abs(height - 18.5) <= 1.5
    rows = np.nonzero(heart.any(axis=1))[0]
    row_widths = heart[rows].sum(axis=1)
    # Lobes up, tip down: the widest rows are in the top half, the bottom row is a narrow tip, and the
    # top row has a notch between the two lobes (two separate runs of pixels).
    assert np.argmax(row_widths) < len(rows) / 2 and row_widths[-1] <= 3
    top_rows = heart[rows[1]]
    assert np.count_nonzero(np.diff(top_rows.astype(np.int8)) == 1) == 2


def test_dsprites_other_image_size(dsprites):
    small = load_dataset(DataConfig(name="dsprites", image_size=32))
    images, labels = small.get([0, 12345])
    assert images.shape == (2, 1, 32, 32) and images.dtype == torch.uint8 and small.image_size == 32
    assert images.float().mean() > 0


# ---- smileys ----------------------------------------------------------------------------------------------------
def test_smileys_grid_and_labels(smileys):
    assert smileys.factor_names == ["smile", "glasses", "hue", "size", "pos_x", "pos_y"]
    assert smileys.factor_sizes == [10, 2, 8, 4, 10, 10] and len(smileys) == 64_000
    assert smileys.label_kinds[:2] == ["continuous", "binary"]
    idx = np.random.default_rng(2).integers(0, len(smileys), 400)
    assert np.array_equal(smileys.index_of(smileys.factors_of(idx)), idx)
    images, labels = smileys.get(idx)
    assert images.shape == (400, 3, 64, 64) and images.dtype == torch.uint8
    labels = labels.numpy()
    assert labels[:, 0].min() >= -1 and labels[:, 0].max() <= 1 and set(np.unique(labels[:, 1])) <= {0.0, 1.0}
    np.testing.assert_allclose(labels, smileys.factor_values_of(smileys.factors_of(idx)), rtol=1e-6)
    assert len(np.unique(smileys.factor_values[0])) >= 8


def test_smileys_face_area_and_position(smileys):
    # The face is the only big non-background blob: its area is pi * 0.9 R * R, its centroid the centre.
    for classes in ([4, 0, 3, 3, 0, 9], [5, 1, 6, 0, 9, 0], [0, 0, 1, 2, 5, 2]):
        image = smileys.render(np.array([classes])).numpy()[0].astype(int)
        size, pos_x, pos_y = smileys.factor_values_of(np.array([classes]))[0, 3:]
        R = 20 * size
        # A pixel belongs to the face when it is at least half-way from the background to the face colour
        # (in the channel where they differ most; the dark features inside count as face too).
        colour = np.array(colorsys.hsv_to_rgb(smileys.factor_values[2][classes[2]], 0.5, 0.95)) * 255
        c = np.argmax(np.abs(colour - 235))
        face = np.abs(image[c] - 235) >= 0.5 * abs(colour[c] - 235)
        rows, cols = np.nonzero(face)
        assert abs(face.sum() / (math.pi * 0.9 * R * R) - 1) < 0.03
        assert abs(cols.mean() + 0.5 - (22 + 20 * pos_x)) < 0.5 and abs(rows.mean() + 0.5 - (22 + 20 * pos_y)) < 1.5


def test_smileys_is_deterministic_across_objects(smileys):
    idx = np.random.default_rng(3).integers(0, len(smileys), 200)
    assert torch.equal(smileys.get(idx)[0], Smileys().get(idx)[0])


def _face_frame(size: float, pos_x: float, pos_y: float):
    """Pixel-centre coordinates relative to the face centre, and R, from the documented geometry."""
    cx, cy, R = 22 + 20 * pos_x, 22 + 20 * pos_y, 20 * size
    centres = np.arange(64) + 0.5
    return centres[None, :] - cx, centres[:, None] - cy, R


def _regions(size, pos_x, pos_y, margin=1.0):
    """Boolean (64, 64) masks of the claimed regions, computed from LAYOUT (not from the renderer)."""
    x, y, R = _face_frame(size, pos_x, pos_y)
    L = LAYOUT
    half_t = L["mouth_thickness"] / 2
    # A stroke of half-thickness t around a curve of slope s reaches t * sqrt(1 + s^2) vertically;
    # the parabola is steepest at its ends (slope 4 * bend / half_width).
    reach = half_t * np.hypot(1.0, 4.0 * L["mouth_bend"] / L["mouth_half_width"])
    mouth = ((np.abs(x) <= (L["mouth_half_width"] + half_t) * R + margin)
             & (y >= (L["mouth_y"] - L["mouth_bend"] - reach) * R - margin)
             & (y <= (L["mouth_y"] + L["mouth_bend"] + reach) * R + margin))
    reach = L["ring_radius"] + L["ring_thickness"] / 2
    eyes = ((np.abs(x) <= (L["eye_x"] + reach) * R + margin)
            & (np.abs(y - L["eye_y"] * R) <= reach * R + margin))
    a, b = L["face_half_width"] * R + margin, L["face_half_height"] * R + margin
    face = (x / a) ** 2 + (y / b) ** 2 <= 1.0
    return {"mouth": mouth, "eyes": eyes, "face": face}


def _changed(ds, base, factor, new_class):
    other = base.copy()
    other[:, ds.factor_names.index(factor)] = new_class
    a, b = ds.render(base).numpy(), ds.render(other).numpy()
    return np.any(a != b, axis=1)   # (B, 64, 64): pixels where any channel differs


BASES = np.array([
    # smile, glasses, hue, size, pos_x, pos_y
    [0, 0, 0, 0, 0, 0],
    [9, 1, 3, 3, 9, 9],
    [2, 0, 5, 1, 4, 7],
    [7, 1, 7, 3, 0, 9],
    [5, 0, 1, 0, 9, 0],
])


def test_smileys_regions_are_disjoint_and_inside_the_face(smileys):
    for size in smileys.factor_values[3]:
        r = _regions(size, 0.5, 0.5)
        assert not np.any(r["mouth"] & r["eyes"])
        tight = _regions(size, 0.5, 0.5, margin=0)
        assert not np.any((tight["mouth"] | tight["eyes"]) & ~tight["face"])


@pytest.mark.parametrize("factor,new_class,region", [
    ("smile", 0, "mouth"), ("smile", 9, "mouth"), ("smile", 4, "mouth"),
    ("glasses", 1, "eyes"), ("glasses", 0, "eyes"),
    ("hue", 2, "face"), ("hue", 6, "face"),
])
def test_smileys_each_attribute_changes_only_its_pixels(smileys, factor, new_class, region):
    changed = _changed(smileys, BASES, factor, new_class)
    values = smileys.factor_values_of(BASES)
    k = smileys.factor_names.index(factor)
    for i, base in enumerate(BASES):
        if base[k] == new_class:
            assert not changed[i].any()
            continue
        claimed = _regions(values[i, 3], values[i, 4], values[i, 5])[region]
        assert changed[i].any(), f"{factor} changed nothing for base {base}"
        outside = changed[i] & ~claimed
        assert not outside.any(), f"{factor} changed {outside.sum()} pixels outside the {region} region"


@pytest.fixture(scope="module")
def smileys_v2():
    return load_dataset(DataConfig(name="smileys", options={"version": 2}))


def test_smileys_version_2_draws_the_exact_distance_to_the_arc():
    from training.data.smileys import _arc_distance_exact
    rng = np.random.default_rng(0)
    half_width, n = 8.4, 4000
    bend = rng.uniform(-4.0, 4.0, (n, 1, 1))
    x = rng.uniform(-12.0, 12.0, (n, 1, 1)).astype(np.float32)
    y = rng.uniform(-8.0, 8.0, (n, 1, 1)).astype(np.float32)
    got = _arc_distance_exact(x, y, half_width, bend)[:, 0, 0]
    t = np.linspace(-half_width, half_width, 20001)[None, :]             # the arc sampled every 0.0008 px
    curve = bend[:, 0] * (1.0 - 2.0 * (t / half_width) ** 2)
    brute = np.sqrt((t - x[:, 0]) ** 2 + (curve - y[:, 0]) ** 2).min(axis=1)
    assert np.abs(got - brute).max() < 2e-3


@pytest.fixture(scope="module")
def smileys_v3():
    return load_dataset(DataConfig(name="smileys", options={"version": 3}))


def test_smileys_version_2_has_a_thicker_mouth(smileys, smileys_v2):
    assert smileys_v2.version == 2 and smileys_v2.layout["mouth_thickness"] == 2 * LAYOUT["mouth_thickness"]
    assert "version 2" in smileys_v2.source_note and smileys.version == 1
    idx = smileys.index_of(BASES)
    v1, v2 = smileys.get(idx)[0].numpy().astype(int), smileys_v2.get(idx)[0].numpy().astype(int)
    assert np.array_equal(smileys.get(idx)[1], smileys_v2.get(idx)[1])
    def mouth_pixels(images):
        return ((images[:, 0] - images[:, 1] > 60) & (images[:, 2] < 120)).sum(axis=(1, 2))
    ratio = mouth_pixels(v2) / mouth_pixels(v1)
    assert np.all((ratio > 1.4) & (ratio < 3.0)) and 1.8 < ratio.mean() < 2.4, ratio


def _smile_variance(ds) -> np.ndarray:
    """Per base face: the variance across the 10 smile levels, summed over pixels (what not encoding the smile costs)."""
    classes = np.repeat(BASES, 10, axis=0)
    classes[:, 0] = np.tile(np.arange(10), len(BASES))
    images = ds.render(classes).numpy().astype(np.float64).reshape(len(BASES), 10, -1) / 255.0
    return images.var(axis=1).sum(axis=1)


def test_smileys_version_3_moves_about_twice_the_pixels_of_version_2(smileys_v2, smileys_v3):
    assert smileys_v3.version == 3 and "version 3" in smileys_v3.source_note
    ratio = _smile_variance(smileys_v3) / _smile_variance(smileys_v2)
    assert np.all(ratio > 1.4) and 1.6 < ratio.mean() < 2.4, ratio


@pytest.mark.parametrize("version", [2, 3])
def test_smileys_later_versions_change_only_the_mouth_in_its_own_box_inside_the_face(smileys, version):
    later = load_dataset(DataConfig(name="smileys", options={"version": version}))
    idx = smileys.index_of(BASES)
    v1, new = smileys.get(idx)[0].numpy().astype(int), later.get(idx)[0].numpy().astype(int)
    # Everything but the mouth is drawn as in version 1.
    x0, x1, y0, y1 = later.mouth_box
    frown, smile = BASES.copy(), BASES.copy()
    frown[:, 0], smile[:, 0] = 0, 9
    frowns, smiles = later.render(frown).numpy().astype(int), later.render(smile).numpy().astype(int)
    for i, (size, pos_x, pos_y) in enumerate(smileys.factor_values_of(BASES)[:, 3:]):
        x, y, R = _face_frame(size, pos_x, pos_y)
        box = (x >= x0 * R - 1) & (x <= x1 * R + 1) & (y >= y0 * R - 1) & (y <= y1 * R + 1)
        assert not np.any((v1[i] != new[i]).any(axis=0) & ~box)
        # The smile changes only pixels of this version's mouth box, which stays clear of the eye band.
        assert not np.any((frowns[i] != smiles[i]).any(axis=0) & ~box)
        # A full frown and a full smile stay inside the face (1 px inside its edge: anti-aliasing).
        inside = (x / (0.9 * R - 1)) ** 2 + (y / (R - 1)) ** 2 <= 1.0
        for image in (frowns[i], smiles[i]):
            mouth = (np.abs(image - np.asarray(MOUTH_COLOURS[version])[:, None, None]) < 8).all(axis=0)
            assert mouth.any() and not np.any(mouth & ~inside), (version, i)
    assert y0 > later.eye_box[3]


@pytest.mark.parametrize("version", [4, 0, "2", True, None])
def test_smileys_unknown_version_is_a_user_error(version):
    with pytest.raises(UserError, match="'version' must be one of 1, 2, 3"):
        load_dataset(DataConfig(name="smileys", options={"version": version}))


def test_smileys_hue_keeps_feature_colours(smileys):
    # The centre of each eye is feature colour, not face colour: a hue change leaves it alone.
    base = np.array([[9, 0, 0, 3, 5, 5]])
    other = base.copy()
    other[0, 2] = 4
    a, b = smileys.render(base).numpy()[0], smileys.render(other).numpy()[0]
    x, y, R = _face_frame(1.0, 5 / 9, 5 / 9)
    eye = np.unravel_index(np.argmin((x - LAYOUT["eye_x"] * R) ** 2 + (y - LAYOUT["eye_y"] * R) ** 2), (64, 64))
    assert np.array_equal(a[:, eye[0], eye[1]], b[:, eye[0], eye[1]])
    assert not np.array_equal(a[:, 32, 32], b[:, 32, 32])   # the face centre (skin) changes colour


def test_smileys_mouth_curvature_follows_smile(smileys):
    # Smile > 0: mouth corners higher than the middle (y down: the middle row is lower on screen).
    def mouth_rows(smile_class):
        image = smileys.render(np.array([[smile_class, 0, 3, 3, 5, 5]])).numpy()[0].astype(int)
        dark_red = (image[0] - image[1] > 60) & (image[2] < 120)
        cols = np.nonzero(dark_red.any(axis=0))[0]
        middle = np.nonzero(dark_red[:, (cols.min() + cols.max()) // 2])[0].mean()
        corner = np.nonzero(dark_red[:, cols.min() + 1])[0].mean()
        return middle, corner
    middle, corner = mouth_rows(9)
    assert middle > corner + 2
    middle, corner = mouth_rows(0)
    assert middle < corner - 2


def test_smileys_correlate_option_gives_the_stated_association():
    cfg = DataConfig(name="smileys", options={"correlate": ["smile", "glasses"], "correlation": 0.8})
    ds = load_dataset(cfg)
    index_set = np.union1d(ds.train_indices, ds.test_indices)
    assert _disjoint(ds.train_indices, ds.test_indices)
    values = ds.factor_values_of(ds.factors_of(index_set))
    smiling, glasses = values[:, 0] > 0, values[:, 1] > 0.5
    assert abs(glasses[smiling].mean() - 0.9) < 0.005 and abs(glasses[~smiling].mean() - 0.1) < 0.005
    assert abs(smiling.mean() - 0.5) < 0.005
    assert abs(np.corrcoef(smiling, glasses)[0, 1] - 0.8) < 0.01
    # The same on the training split alone (what training and export see), and deterministic.
    train = ds.factor_values_of(ds.factors_of(ds.train_indices))
    assert abs((train[:, 1][train[:, 0] > 0] > 0.5).mean() - 0.9) < 0.02
    assert np.array_equal(load_dataset(cfg).train_indices, ds.train_indices)
    # The grid itself is unchanged: metrics still sample every factor combination.
    assert len(ds) == 64_000
    plain = load_dataset(DataConfig(name="smileys"))
    values = plain.factor_values_of(plain.factors_of(plain.train_indices))
    assert abs((values[:, 1][values[:, 0] > 0] > 0.5).mean() - 0.5) < 0.02


def test_smileys_correlate_split_test_resamples_only_the_test_faces():
    options = {"correlate": ["smile", "glasses"], "correlation": 0.8, "correlate_split": "test"}
    ds = load_dataset(DataConfig(name="smileys", options=options))
    plain = load_dataset(DataConfig(name="smileys"))
    # Training sees the whole grid's training split, the same images as without the option.
    assert np.array_equal(ds.train_indices, plain.train_indices)
    # The test faces are a subsample of the grid's test split with the stated association.
    assert np.isin(ds.test_indices, plain.test_indices).all() and _disjoint(ds.train_indices, ds.test_indices)
    assert 0.5 * len(plain.test_indices) < len(ds.test_indices) < len(plain.test_indices)
    values = ds.factor_values_of(ds.factors_of(ds.test_indices))
    smiling, glasses = values[:, 0] > 0, values[:, 1] > 0.5
    assert abs(glasses[smiling].mean() - 0.9) < 0.005 and abs(glasses[~smiling].mean() - 0.1) < 0.005
    assert abs(np.corrcoef(smiling, glasses)[0, 1] - 0.8) < 0.01
    assert np.array_equal(load_dataset(DataConfig(name="smileys", options=options)).test_indices, ds.test_indices)
    # "all" is the default: the same split as without correlate_split.
    both = load_dataset(DataConfig(name="smileys", options={**options, "correlate_split": "all"}))
    default = load_dataset(DataConfig(name="smileys", options={"correlate": ["smile", "glasses"], "correlation": 0.8}))
    assert np.array_equal(both.train_indices, default.train_indices)
    assert np.array_equal(both.test_indices, default.test_indices)


@pytest.mark.parametrize("options, message", [
    ({"correlate": ["smile", "glasses"], "correlate_split": "train"}, "'all' or 'test'"),
    ({"correlate_split": "test"}, "needs 'correlate'"),
])
def test_smileys_correlate_split_refuses_bad_values(options, message):
    with pytest.raises(UserError, match=message):
        load_dataset(DataConfig(name="smileys", options=options))


def test_smileys_other_image_size():
    ds = load_dataset(DataConfig(name="smileys", image_size=32))
    images, _ = ds.get([0, 1, 2])
    assert images.shape == (3, 3, 32, 32)


# ---- MNIST ------------------------------------------------------------------------------------------------------
needs_shared_mnist = pytest.mark.skipif(
    not any(os.path.isfile(os.path.join(SHARED_MNIST, "MNIST", "raw", "t10k-images-idx3-ubyte" + ext))
            for ext in ("", ".gz")),
    reason="the official MNIST test split is not in ../shared/data on this machine")


@needs_shared_mnist
def test_mnist_from_the_official_test_split():
    ds = load_dataset(DataConfig(name="mnist", data_dir=SHARED_MNIST, options={"download": False}))
    assert len(ds) == 10_000 and ds.channels == 1 and ds.image_size == 28
    images, labels = ds.get(np.arange(len(ds)))
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.uint8
    assert sorted(np.unique(labels.numpy()).tolist()) == list(range(10))
    assert ds.label_names == ["digit"] and ds.label_kinds == ["categorical"]
    assert "test split" in ds.source_note
    assert len(ds.test_indices) == 1000 and len(np.union1d(ds.train_indices, ds.test_indices)) == 10_000
    # The first official test digits are 7, 2, 1, 0, 4.
    assert labels[:5, 0].tolist() == [7, 2, 1, 0, 4]
    assert 25 < images.float().mean() < 40      # MNIST's mean intensity is ~33/255


@needs_shared_mnist
def test_mnist_resized_to_32():
    ds = load_dataset(DataConfig(name="mnist", data_dir=SHARED_MNIST, image_size=32, subset=500))
    images, _ = ds.get(ds.train_indices[:10])
    assert images.shape == (10, 1, 32, 32) and ds.image_size == 32 and len(ds.train_indices) == 500


def _write_idx(path, array, compress):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.tobytes()
    with (gzip.open(path + ".gz", "wb") if compress else open(path, "wb")) as f:
        f.write(data)


def test_mnist_official_split_when_both_splits_exist(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    train_x, test_x = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    train_y, test_y = rng.integers(0, 10, 30).astype(np.uint8), rng.integers(0, 10, 12).astype(np.uint8)
    _write_idx(str(raw / "train-images-idx3-ubyte"), train_x, compress=True)
    _write_idx(str(raw / "train-labels-idx1-ubyte"), train_y, compress=True)
    _write_idx(str(raw / "t10k-images-idx3-ubyte"), test_x, compress=False)
    _write_idx(str(raw / "t10k-labels-idx1-ubyte"), test_y, compress=False)
    ds = load_dataset(DataConfig(name="fashion-mnist", data_dir=str(tmp_path), options={"download": False}))
    assert np.array_equal(ds.train_indices, np.arange(30)) and np.array_equal(ds.test_indices, np.arange(30, 42))
    images, labels = ds.get(np.arange(42))
    assert np.array_equal(images[:, 0].numpy(), np.concatenate([train_x, test_x]))
    assert np.array_equal(labels[:, 0].numpy(), np.concatenate([train_y, test_y]).astype(np.float32))
    assert "official" in ds.source_note and ds.label_names == ["class"]


def test_mnist_missing_files_name_the_files(tmp_path):
    with pytest.raises(UserError) as e:
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path), options={"download": False}))
    message = str(e.value)
    assert "t10k-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert os.path.join(str(tmp_path), "MNIST", "raw") in message


def test_corrupt_idx_file_is_a_user_error(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(UserError, match="t10k"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path), options={"download": False}))


# ---- CelebA -----------------------------------------------------------------------------------------------------
CELEBA_ATTRS = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
                "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
                "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
                "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
                "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
                "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
                "Wearing_Necktie", "Young"]


def _fake_celeba(root, n=8):
    """A tiny CelebA in the real layout and file formats: 178x218 JPEGs whose central 148x148 square is
    one colour and whose border another, the attribute file with +-1 columns, the partition file."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(5)
    attributes = rng.choice([-1, 1], size=(n, 40))
    partition = [0, 0, 0, 1, 0, 2, 2, 0][:n]
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        pixels = np.zeros((218, 178, 3), dtype=np.uint8)
        pixels[:] = (0, 0, 255)
        top, left = (218 - 148) // 2, (178 - 148) // 2
        pixels[top:top + 148, left:left + 148] = (200, 30 * i, 0)
        Image.fromarray(pixels).save(folder / "img_align_celeba" / name, quality=95)
    lines = [str(n), " ".join(CELEBA_ATTRS)]
    lines += [name + " " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, attributes)]
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{name} {p}\n" for name, p in zip(names, partition)))
    return attributes, partition


def test_celeba_from_a_fake_folder_in_the_real_format(tmp_path):
    attributes, partition = _fake_celeba(tmp_path)
    ds = load_dataset(DataConfig(name="celeba", data_dir=str(tmp_path), options={"download": False}))
    assert len(ds) == 8 and ds.channels == 3 and ds.image_size == 64
    assert ds.label_names == CELEBA_ATTRS and set(ds.label_kinds) == {"binary"}
    # Training split = partitions 0 and 1, test = 2; rows keep file order within each split.
    train_rows = [i for i, p in enumerate(partition) if p != 2]
    test_rows = [i for i, p in enumerate(partition) if p == 2]
    assert ds.source_rows.tolist() == train_rows + test_rows
    assert len(ds.train_indices) == 6 and len(ds.test_indices) == 2
    images, labels = ds.get(np.arange(8))
    assert np.array_equal(labels.numpy(), (attributes[train_rows + test_rows] > 0).astype(np.float32))
    # Centre crop 148: only the central colour is left, none of the blue border (the outermost pixel
    # ring may catch a little blue from JPEG chroma subsampling and the resize filter).
    pixels = images.numpy().astype(int)[:, :, 1:-1, 1:-1]
    assert pixels[:, 2].max() < 20 and pixels[:, 0].min() > 180
    row_of_file_2 = (train_rows + test_rows).index(2)
    assert abs(pixels[row_of_file_2, 1].mean() - 60) < 8


def test_celeba_caps_and_size(tmp_path):
    _fake_celeba(tmp_path)
    ds = load_dataset(DataConfig(name="celeba", data_dir=str(tmp_path), image_size=32,
                                 options={"download": False, "max_images": 4}))
    assert len(ds) == 4 and ds.get([0])[0].shape == (1, 3, 32, 32)
    assert len(ds.test_indices) == 1   # 4 * 2/8 official test share


def test_celeba_missing_files_name_them(tmp_path):
    with pytest.raises(UserError) as e:
        load_dataset(DataConfig(name="celeba", data_dir=str(tmp_path), options={"download": False}))
    message = str(e.value)
    assert "list_attr_celeba.txt" in message and "list_eval_partition.txt" in message
    assert "img_align_celeba" in message and os.path.join(str(tmp_path), "celeba") in message


# ---- folder:PATH ------------------------------------------------------------------------------------------------
def _save(path, pixels, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)


def test_folder_with_labels_csv(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        _save(tmp_path / f"img{i}.png", rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    _save(tmp_path / "sub" / "deep.jpg", rng.integers(0, 256, (50, 50, 3), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "labels.csv").write_text(
        "filename,age,smiling,comment\n"
        "img0.png,31.5,1,nice\nimg1.png,20,0,x\nimg2.png,44,true,y\nsub/deep.jpg,9,0,z\nimg3.png,60,1,w\n"
        "img4.png,18,0,v\nbroken.png,1,1,u\nghost.png,3,0,t\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(DataConfig(name=f"folder:{tmp_path}", image_size=16, test_fraction=0.0))
    text = " ".join(str(w.message) for w in caught)
    assert "comment" in text and "skipped 1 unreadable" in text and "1 row(s) name no image" in text
    assert ds.label_names == ["age", "smiling"] and ds.label_kinds == ["continuous", "binary"]
    assert ds.channels == 3 and ds.image_size == 16 and len(ds) == 6
    assert ds.source_files == ["img0.png", "img1.png", "img2.png", "img3.png", "img4.png", "sub/deep.jpg"]
    images, labels = ds.get(np.arange(6))
    assert images.shape == (6, 3, 16, 16)
    assert labels.numpy().tolist() == [[31.5, 1], [20, 0], [44, 1], [60, 1], [18, 0], [9, 0]]


def test_folder_grey_images_centre_crop_and_options(tmp_path):
    wide = np.zeros((20, 60), dtype=np.uint8)
    wide[:, 20:40] = 200                    # the central square is bright, the sides dark
    _save(tmp_path / "a.png", wide, "L")
    _save(tmp_path / "b.bmp", np.full((30, 30), 90, dtype=np.uint8), "L")
    ds = load_dataset(DataConfig(name=f"folder:{tmp_path}", image_size=8))
    assert ds.channels == 1 and ds.label_names == []
    images, labels = ds.get([0, 1])
    assert images[0].min() == 200 and images[1].unique().tolist() == [90] and labels.shape == (2, 0)
    rgb = load_dataset(DataConfig(name=f"folder:{tmp_path}", image_size=8, options={"channels": "RGB"}))
    assert rgb.channels == 3
    with pytest.raises(UserError, match="labels"):
        load_dataset(DataConfig(name=f"folder:{tmp_path}", options={"labels": "missing.csv"}))


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_dataset(DataConfig(name=f"folder:{tmp_path / 'nope'}"))
    with pytest.raises(UserError, match="no images"):
        load_dataset(DataConfig(name=f"folder:{tmp_path}"))
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(UserError, match="could be read"):
        load_dataset(DataConfig(name=f"folder:{tmp_path}"))


def test_folder_decompression_bomb_is_skipped(tmp_path, monkeypatch):
    _save(tmp_path / "big.png", np.zeros((100, 100), dtype=np.uint8), "L")
    _save(tmp_path / "ok.png", np.zeros((10, 10), dtype=np.uint8), "L")
    # Lower PIL's own limit so that a small file stands in for a huge one: 10,000 px > 2 x 1,000.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = load_dataset(DataConfig(name=f"folder:{tmp_path}"))
    assert len(ds) == 1 and ds.source_files == ["ok.png"]


# ---- MNIST binarisation (data.options.binarize) -------------------------------------------------------------
def test_dynamic_binarisation_fixed_for_reads_fresh_for_training_draws():
    grey = load_dataset(DataConfig(name="mnist", data_dir=SHARED_MNIST_DIR, test_fraction=0.1))
    binary = load_dataset(DataConfig(name="mnist", data_dir=SHARED_MNIST_DIR, test_fraction=0.1,
                                     options={"binarize": "dynamic"}))
    assert binary.binarize == "dynamic" and binary.binarize_seed == 0 and grey.binarize == "none"
    assert "binarised" in binary.source_note
    index = np.asarray(binary.test_indices[:200])
    first, again = binary.get(index)[0], binary.get(index)[0]
    # Every read outside training sees the same binary images, drawn from the grey levels.
    assert torch.equal(first, again) and set(first.unique().tolist()) <= {0, 255}
    assert abs(first.float().mean() - grey.get(index)[0].float().mean()) < 2.0
    assert torch.equal(binary.grey, grey.images)
    # Training draws binarise afresh from the uniform noise they are given.
    generator = torch.Generator().manual_seed(0)
    draws = [binary.draw_float(index, torch.rand((200, 1, 28, 28), generator=generator)) for _ in range(2)]
    assert set(draws[0].unique().tolist()) <= {0.0, 1.0} and not torch.equal(draws[0], draws[1])
    mean_grey = grey.get(index)[0].float().div(255)
    assert torch.all((draws[0] == 0) | (mean_grey > 0))        # a black pixel is never drawn white
    assert torch.equal(grey.draw_float(index, torch.zeros(1)), grey.get_float(index)[0])


@pytest.mark.parametrize("options, message", [
    ({"binarize": "static"}, "binarize must be one of 'none', 'dynamic'"),
    ({"binarize": True}, "binarize must be one of"),
])
def test_bad_binarize_option_is_a_one_line_error(options, message):
    with pytest.raises(UserError, match=message):
        load_dataset(DataConfig(name="mnist", data_dir=SHARED_MNIST_DIR, options=options))


def test_binarize_is_refused_where_it_does_not_apply():
    with pytest.raises(UserError, match="unknown data option"):
        load_dataset(DataConfig(name="dsprites", options={"binarize": "dynamic"}))
