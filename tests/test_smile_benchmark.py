"""The smile-vector benchmark's scoring on sweeps whose answer is known (no model, no regressor)."""
import os
import sys

import numpy as np
import pytest

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
