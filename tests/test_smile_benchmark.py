"""The smile-vector benchmark's scoring on sweeps whose answer is known (no model, no regressor)."""
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import smile_vector as sv  # noqa: E402


def sweep_of(smile: np.ndarray, faces: int, others=None) -> np.ndarray:
    """(n_alpha, faces, 6) readings: the given smile per (α, face); other attributes fixed unless given."""
    n_alpha = len(sv.ALPHAS)
    measured = np.zeros((n_alpha, faces, 6))
    measured[:, :, 0] = smile
    measured[:, :, 1] = 0.2   # glasses probability
    measured[:, :, 2] = 0.3   # hue
    measured[:, :, 3] = 0.85  # size
    measured[:, :, 4:] = 0.5  # position
    if others is not None:
        measured[:, :, 1:] += others
    return measured


def test_a_clean_monotone_sweep_meets_the_targets():
    faces = 20
    smile = np.clip(sv.ALPHAS[:, None] / 2 + np.zeros(faces), -1, 1)
    result = sv.summarise_sweep(sweep_of(smile, faces))
    assert result["spearman_pooled"] == pytest.approx(1.0)
    assert result["spearman_per_face_median"] == pytest.approx(1.0)
    assert max(result["other_movement_pct"].values()) == pytest.approx(0.0)
    assert result["smile_gain_pct_of_range"] == pytest.approx(100.0)
    assert result["meets_targets"] and result["meets_targets_per_face"]


def test_faces_starting_at_different_smiles_lower_only_the_pooled_reading():
    faces = 40
    start = np.linspace(-1, 1, faces)
    smile = start[None, :] + 0.05 * sv.ALPHAS[:, None]   # monotone per face, small next to the spread
    result = sv.summarise_sweep(sweep_of(smile, faces))
    assert result["spearman_per_face_median"] == pytest.approx(1.0)
    assert result["spearman_pooled"] < 0.5
    assert result["meets_targets_per_face"] and not result["meets_targets"]


def test_a_size_that_moves_with_alpha_fails_the_leakage_target():
    faces = 10
    smile = np.repeat(sv.ALPHAS[:, None] / 2, faces, axis=1)
    others = np.zeros((len(sv.ALPHAS), faces, 5))
    others[:, :, 2] = 0.03 * sv.ALPHAS[:, None]          # size: ±0.06 = 20 % of its 0.3 range
    result = sv.summarise_sweep(sweep_of(smile, faces, others))
    assert result["other_movement_pct"]["size"] == pytest.approx(20.0)
    assert result["other_movement_pct"]["glasses"] == pytest.approx(0.0)
    assert not result["meets_targets"] and not result["meets_targets_per_face"]


def test_a_smile_unrelated_to_alpha_scores_near_zero():
    faces = 200
    smile = np.random.default_rng(0).uniform(-1, 1, (len(sv.ALPHAS), faces))
    result = sv.summarise_sweep(sweep_of(smile, faces))
    assert abs(result["spearman_pooled"]) < 0.1
    assert result["faces_with_spearman_ge_095_pct"] < 5


# ---- the pixel meter, on renders whose attributes are known ---------------------------------------------

@pytest.fixture(scope="module")
def grid():
    from training.data.smileys import Smileys
    return Smileys()


def random_classes(grid, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, size, n) for size in grid.factor_sizes], axis=1)


def render(grid, classes):
    return grid.render(classes).float().div_(255.0)


def test_pixel_meter_reads_the_true_attributes_of_renders(grid):
    classes = random_classes(grid, 300, seed=5)
    truth = grid.labels_of(classes)
    meter = sv.PixelMeter()
    read = meter(render(grid, classes))
    assert np.isnan(read[:, 0]).all()                       # the smile is the regressor's job
    assert np.abs(read[:, 3] - truth[:, 3]).max() < 0.01    # size, range 0.3
    assert np.abs(read[:, 4:6] - truth[:, 4:6]).max() < 0.01
    hue_error = sv.attribute_error(read[:, 2], truth[:, 2], "hue")
    assert np.abs(hue_error).max() < 0.005
    ink = read[:, 1]
    with_glasses = truth[:, 1] > 0.5
    # A rendered pair reads 1 (the lens pattern is the renderer's), no glasses 0, at every face size.
    assert ink[~with_glasses].max() < 0.01
    assert np.abs(ink[with_glasses] - 1.0).max() < 0.03


def test_pixel_meter_readings_follow_one_factor_and_only_that_one(grid):
    base = random_classes(grid, 100, seed=6)
    meter = sv.PixelMeter()
    for factor, column in ((3, 3), (4, 4), (0, None)):      # size, pos_x, smile (read by none of its columns)
        low, high = base.copy(), base.copy()
        low[:, factor], high[:, factor] = 0, grid.factor_sizes[factor] - 1
        a, b = meter(render(grid, low)), meter(render(grid, high))
        for k in range(1, 6):
            moved = np.abs(sv.attribute_error(b[:, k], a[:, k], sv.ATTRIBUTES[k]))
            if k == column:
                expected = grid.factor_values[factor][-1] - grid.factor_values[factor][0]
                assert np.abs(b[:, k] - a[:, k] - expected).max() < 0.01
            else:
                assert moved.max() < 0.02, (factor, sv.ATTRIBUTES[k])


def test_pixel_meter_is_not_fooled_by_blur_or_a_background_that_is_off_grey(grid):
    classes = random_classes(grid, 100, seed=7)
    images = render(grid, classes)
    meter = sv.PixelMeter()
    clean = meter(images)
    soft = torch.nn.functional.avg_pool2d(images, 3, 1, 1, count_include_pad=False)
    face = (images - images[:, :, :1, :1]).abs().amax(1, keepdim=True) > 0.01   # corner pixel = background
    tinted = torch.where(face, images, images - 0.04)                              # background 10 levels darker
    for other in (meter(soft), meter(tinted)):
        assert np.abs(other[:, 3:6] - clean[:, 3:6]).max() < 0.01
        assert np.abs(sv.attribute_error(other[:, 2], clean[:, 2], "hue")).max() < 0.01


def test_a_blank_image_reads_no_glasses_and_does_not_crash():
    blank = torch.full((2, 3, 64, 64), 235.0 / 255.0)
    read = sv.PixelMeter()(blank)
    assert np.isfinite(read[:, 1:]).all()
    assert (read[:, 1] == 0).all() and (read[:, 3] < 0.05).all()
