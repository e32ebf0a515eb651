"""Disentanglement metrics on known cases, as disentanglement_lib tests them.

A synthetic ground-truth source with dSprites-like factor sizes (no images) gives representations whose
scores are known: the true factors, pure noise, a random rotation of the standardised factors, and the
true factors with a duplicated and a nuisance dimension. MIG, FactorVAE and BetaVAE run at the full
protocol counts (they are vectorised: well under a second each); DCI's gradient-boosted trees are slow
(about a minute at 10,000 points), so DCI runs on reduced counts or a smaller grid.
"""
import json

import numpy as np
import pytest
import torch
from torch import nn

from training.config import ModelConfig
from training.data.base import ImageDataset
from training.errors import UserError
from training.metrics import (DatasetSource, SyntheticSource, betavae_score, dci, evaluate_all, factorvae_score,
                              histogram_discretize, mig, model_representation)
from training.metrics.dci import completeness_score, disentanglement_score
from training.models.base import Encoding, LatentModel

DSPRITES_SIZES = [3, 6, 40, 32, 32]
NUM_FACTORS = len(DSPRITES_SIZES)
NOISE_DIMS = 10


@pytest.fixture(scope="module")
def source():
    return SyntheticSource(DSPRITES_SIZES, noise_dims=NOISE_DIMS)


def true_factors(observations):
    return observations[:, :NUM_FACTORS]


def pure_noise(observations):
    return observations[:, NUM_FACTORS:]


def standardise(factors, sizes=DSPRITES_SIZES):
    sizes = np.asarray(sizes, dtype=np.float64)
    # Mean and std of a uniform variable on {0, ..., s-1}.
    return (factors - (sizes - 1) / 2) / np.sqrt((sizes ** 2 - 1) / 12)


def rotation_of_factors(seed=123, sizes=DSPRITES_SIZES):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(sizes), len(sizes))))
    return lambda observations: standardise(observations[:, :len(sizes)], sizes) @ q


def duplicate_and_nuisance(observations):
    """True factors, a copy of factor 2 (orientation) and one noise dimension."""
    return np.concatenate([observations[:, :NUM_FACTORS], observations[:, 2:3],
                           observations[:, NUM_FACTORS:NUM_FACTORS + 1]], axis=1)


# ---- MIG, FactorVAE, BetaVAE at the protocol's counts ---------------------------------------------------------
def test_true_factors_score_the_ceiling(source):
    result = mig(source, true_factors, seed=0)  # full 10,000 points, 20 bins
    assert result["settings"]["num_train"] == 10_000 and result["settings"]["num_bins"] == 20
    # 20 bins cannot hold 40 orientations or 32 positions: ≈ 0.895, not 1.
    assert abs(result["score"] - 0.895) < 0.03
    shape, scale, orientation, pos_x, pos_y = result["per_factor"]
    assert shape > 0.99 and scale > 0.99
    assert orientation < 0.85 and pos_x < 0.9 and pos_y < 0.9
    assert result["best_dim"] == list(range(NUM_FACTORS))

    factorvae = factorvae_score(source, true_factors, seed=0)
    assert factorvae["score"] == 1.0 and factorvae["train_accuracy"] == 1.0
    assert factorvae["num_active_dims"] == NUM_FACTORS
    assert factorvae["dim_to_factor"] == list(range(NUM_FACTORS))

    betavae = betavae_score(source, true_factors, seed=0)
    assert betavae["score"] > 0.9


def test_pure_noise_scores_chance(source):
    assert mig(source, pure_noise, seed=0)["score"] < 0.02
    factorvae = factorvae_score(source, pure_noise, seed=0)
    assert abs(factorvae["score"] - 1 / NUM_FACTORS) < 0.07
    assert factorvae["num_active_dims"] == NOISE_DIMS
    assert betavae_score(source, pure_noise, seed=0)["score"] < 1 / NUM_FACTORS + 0.07


def test_random_rotation_scores_in_between(source):
    rotated = rotation_of_factors()
    truth_mig = mig(source, true_factors, seed=0)["score"]
    noise_mig = mig(source, pure_noise, seed=0)["score"]
    rotated_mig = mig(source, rotated, seed=0)["score"]
    assert 0.10 <= rotated_mig <= 0.33
    assert noise_mig < rotated_mig < truth_mig

    noise_fv = factorvae_score(source, pure_noise, seed=0)["score"]
    rotated_fv = factorvae_score(source, rotated, seed=0)["score"]
    assert noise_fv + 0.2 < rotated_fv < 0.98


def test_duplicate_dimension_is_penalised_by_mig_only(source):
    truth = mig(source, true_factors, seed=0)
    duplicated = mig(source, duplicate_and_nuisance, seed=0)
    # Two identical codes share the top MI: the gap for that factor vanishes.
    assert duplicated["per_factor"][2] < 0.01
    others = [k for k in range(NUM_FACTORS) if k != 2]
    assert np.allclose(np.take(duplicated["per_factor"], others), np.take(truth["per_factor"], others), atol=0.01)
    expected = truth["score"] - truth["per_factor"][2] / NUM_FACTORS
    assert abs(duplicated["score"] - expected) < 0.01

    factorvae = factorvae_score(source, duplicate_and_nuisance, seed=0)
    assert factorvae["score"] == 1.0
    assert factorvae["num_active_dims"] == NUM_FACTORS + 2


# ---- determinism --------------------------------------------------------------------------------------------------
def test_same_seed_same_scores_and_other_seed_other_sample(source):
    rotated = rotation_of_factors()
    small = dict(num_train=2000, num_eval=1000)
    first = (mig(source, rotated, seed=7, num_train=3000),
             factorvae_score(source, rotated, seed=7, num_variance_estimate=2000, **small),
             betavae_score(source, rotated, seed=7, **small))
    again = (mig(source, rotated, seed=7, num_train=3000),
             factorvae_score(source, rotated, seed=7, num_variance_estimate=2000, **small),
             betavae_score(source, rotated, seed=7, **small))
    other = (mig(source, rotated, seed=8, num_train=3000),
             factorvae_score(source, rotated, seed=8, num_variance_estimate=2000, **small),
             betavae_score(source, rotated, seed=8, **small))
    for a, b, c in zip(first, again, other):
        assert a["score"] == b["score"]
        assert a["settings"]["seed"] == 7 and c["settings"]["seed"] == 8
    assert first[0]["mutual_information"] == again[0]["mutual_information"]
    # Another seed draws other points: the MI matrix moves, the score only slightly.
    assert first[0]["mutual_information"] != other[0]["mutual_information"]
    assert abs(first[0]["score"] - other[0]["score"]) < 0.05
    # A Generator is accepted too and consumed like the seed it came from.
    assert mig(source, rotated, seed=np.random.default_rng(7), num_train=3000)["score"] == first[0]["score"]


def test_chunking_does_not_change_mig(source):
    whole = mig(source, true_factors, seed=3, num_train=3000, batch_size=4096)
    chunked = mig(source, true_factors, seed=3, num_train=3000, batch_size=256)
    # SyntheticSource's true-factor columns do not depend on the noise draws, so chunking is invisible.
    assert whole["score"] == chunked["score"]


# ---- DCI ------------------------------------------------------------------------------------------------------------
def test_dci_importance_formulas_on_known_matrices():
    identity = np.eye(4)
    assert disentanglement_score(identity)[0] == pytest.approx(1.0, abs=1e-6)
    assert completeness_score(identity)[0] == pytest.approx(1.0, abs=1e-6)
    uniform = np.ones((4, 4))
    assert disentanglement_score(uniform)[0] == pytest.approx(0.0, abs=1e-6)
    assert completeness_score(uniform)[0] == pytest.approx(0.0, abs=1e-6)
    # Factor 0 spread evenly over codes 0 and 1 (4 codes, 3 factors): every code still serves one
    # factor (D = 1); factor 0's completeness is 1 - log 2 / log 4 = 0.5, weighted by its share 1/2.
    split = np.array([[0.5, 0, 0], [0.5, 0, 0], [0, 1, 0], [0, 0, 0]])
    assert disentanglement_score(split)[0] == pytest.approx(1.0, abs=1e-6)
    completeness, per_factor = completeness_score(split)
    assert per_factor[0] == pytest.approx(0.5, abs=1e-6)
    assert completeness == pytest.approx(0.5 * 0.5 + 1.0 * 0.5, abs=1e-6)
    # All-zero importance (nothing predicts anything) is defined, not NaN.
    assert np.isfinite(disentanglement_score(np.zeros((3, 2)))[0])


def test_dci_orders_truth_rotation_and_noise():
    # DCI's trees fit one model per class and stage: a small grid keeps this test to seconds.
    sizes = [3, 4, 5]
    small = SyntheticSource(sizes, noise_dims=3)
    truth = dci(small, lambda o: o[:, :3], seed=0, num_train=400, num_test=200)
    rotated = dci(small, rotation_of_factors(seed=5, sizes=sizes), seed=0, num_train=400, num_test=200)
    noise = dci(small, lambda o: o[:, 3:], seed=0, num_train=400, num_test=200)
    assert truth["disentanglement"] > 0.9 and truth["completeness"] > 0.9 and truth["informativeness"] > 0.99
    assert noise["disentanglement"] < rotated["disentanglement"] < truth["disentanglement"]
    assert noise["informativeness"] < 0.5 < rotated["informativeness"]
    assert np.asarray(truth["importance_matrix"]).shape == (3, 3)
    assert truth["score"] == truth["disentanglement"]
    assert truth["settings"]["num_train"] == 400 and "scikit-learn" in truth["settings"]["versions"]
    again = dci(small, lambda o: o[:, :3], seed=0, num_train=400, num_test=200)
    assert again["importance_matrix"] == truth["importance_matrix"]


# ---- evaluate_all ----------------------------------------------------------------------------------------------------
def test_evaluate_all_reduced_on_true_factors():
    # All four metrics; a small grid because DCI fits one tree per class and stage (113 classes for
    # dSprites' sizes cost ~10 s of trees even on a few hundred points).
    small = SyntheticSource([3, 4, 5], factor_names=["a", "b", "c"])
    result = evaluate_all(small, lambda o: o, seed=0, scale=0.03)
    assert result["protocol"] == "disentanglement_lib (Locatello et al. 2019)"
    settings = result["settings"]
    assert settings["reduced"] is True and settings["scale"] == 0.03 and settings["skipped"] == []
    assert settings["counts"]["mig"]["num_train"] == 300
    assert result["details"]["mig"]["settings"]["num_train"] == 300
    assert result["details"]["dci"]["settings"]["num_train"] == 300
    assert result["details"]["factorvae"]["settings"]["num_variance_estimate"] == 300
    assert set(settings["versions"]) == {"numpy", "scikit-learn"} and settings["factor_names"] == ["a", "b", "c"]
    # Each metric is reproducible on its own from the seed recorded for it.
    alone = mig(small, lambda o: o, seed=settings["metric_seeds"]["mig"], num_train=300)
    assert result["mig"] == alone["score"] > 0.95
    assert result["factorvae"] == 1.0 and result["betavae"] > 0.9
    assert result["dci"]["disentanglement"] > 0.9 and result["dci"]["completeness"] > 0.9
    assert result["dci"]["informativeness"] > 0.99
    json.dumps(result)  # goes into metrics.json as is
    assert evaluate_all(small, lambda o: o, seed=0, scale=0.03)["dci"] == result["dci"]


def test_evaluate_all_can_skip_metrics(source):
    result = evaluate_all(source, true_factors, seed=0, scale=0.03, metrics=["mig", "factorvae", "betavae"])
    assert result["dci"] is None and result["settings"]["skipped"] == ["dci"]
    assert set(result["details"]) == {"mig", "factorvae", "betavae"}
    assert result["factorvae"] == 1.0 and result["betavae"] > 0.9
    with pytest.raises(UserError, match="unknown metric"):
        evaluate_all(source, true_factors, metrics=["sap"])


@pytest.mark.slow
def test_full_protocol_on_true_factors(source):
    # About 100 s on 2 cores, nearly all of it DCI's gradient-boosted trees.
    result = evaluate_all(source, true_factors, seed=0)
    assert result["settings"]["reduced"] is False
    assert result["settings"]["counts"]["dci"] == {"num_train": 10_000, "num_test": 5_000}
    assert abs(result["mig"] - 0.895) < 0.03
    assert result["factorvae"] == 1.0 and result["betavae"] > 0.9
    assert result["dci"]["disentanglement"] > 0.9 and result["dci"]["completeness"] > 0.9
    assert result["dci"]["informativeness"] > 0.99


def test_protocol_counts_unreduced():
    from training.metrics import scaled_counts

    counts = scaled_counts(1.0)
    assert counts["factorvae"] == {"num_train": 10_000, "num_eval": 5_000, "num_variance_estimate": 10_000}
    assert counts["dci"] == {"num_train": 10_000, "num_test": 5_000}


# ---- bad input -------------------------------------------------------------------------------------------------------
def test_collapsed_representation_scores_zero_with_a_note(source):
    result = factorvae_score(source, lambda o: np.zeros((len(o), 4)), seed=0, num_train=100, num_eval=50)
    assert result["score"] == 0.0 and result["num_active_dims"] == 0 and "collapsed" in result["note"]


def test_bad_inputs_raise_user_errors(source):
    with pytest.raises(UserError, match="NaN"):
        mig(source, lambda o: np.full((len(o), 3), np.nan), num_train=100)
    with pytest.raises(UserError, match="rows"):
        mig(source, lambda o: np.zeros((3, 3)), num_train=100)
    with pytest.raises(UserError, match="fewer than two values"):
        mig(SyntheticSource([1, 5]), lambda o: o, num_train=100)
    with pytest.raises(UserError, match="scale"):
        evaluate_all(source, true_factors, scale=0)
    with pytest.raises(UserError, match="num_train"):
        mig(source, true_factors, num_train=0)


def test_histogram_discretize_matches_equal_width_bins():
    codes = np.array([[0.0], [0.49], [0.5], [1.0], [2.0]])
    # 4 bins of width 0.5 on [0, 2]: the maximum lands in the top bin, not a fifth one.
    assert histogram_discretize(codes, 4)[:, 0].tolist() == [1, 1, 2, 3, 4]


# ---- adapters: an image dataset with factors and a model's posterior mean ----------------------------------------------
class SquaresDataset(ImageDataset):
    """A 2x2 white square on a 16x16 black image at (x, y) = 2 * factor; colour is a constant factor."""

    name = "squares"
    channels = 1
    image_size = 16
    has_factors = True
    factor_names = ["color", "x", "y"]
    factor_sizes = [1, 8, 8]

    def render(self, factor_classes):
        factor_classes = np.asarray(factor_classes)
        images = torch.zeros((len(factor_classes), 1, 16, 16), dtype=torch.uint8)
        for i, (_, x, y) in enumerate(factor_classes):
            images[i, 0, 2 * y:2 * y + 2, 2 * x:2 * x + 2] = 255
        return images


class CentroidModel(LatentModel):
    """Encoder whose posterior mean is the image's centre of mass (x, y): a perfect disentangler."""

    def __init__(self):
        super().__init__()
        self.config = ModelConfig(image_size=16, channels=1, latent_dim=2)
        coords = torch.arange(16, dtype=torch.float32)
        self.register_buffer("coords", coords)
        self.scale = nn.Parameter(torch.ones(()))  # so the model has a parameter and a train/eval mode

    @property
    def latent_shape(self):
        return (2,)

    def encode(self, x):
        assert not torch.is_grad_enabled() and not self.training
        mass = x.sum(dim=(1, 2, 3)).clamp_min(1e-6)
        cx = (x.sum(dim=(1, 2)) * self.coords).sum(dim=1) / mass
        cy = (x.sum(dim=(1, 3)) * self.coords).sum(dim=1) / mass
        return Encoding(mean=self.scale * torch.stack([cx, cy], dim=1), logvar=torch.zeros(len(x), 2))


def test_dataset_source_and_model_representation():
    source = DatasetSource(SquaresDataset())
    assert source.factor_sizes == [8, 8] and source.factor_names == ["x", "y"]
    rng = np.random.default_rng(0)
    factors = source.sample_factors(5, rng)
    images = source.observations_from_factors(factors, rng)
    assert images.shape == (5, 1, 16, 16) and images.dtype == torch.float32 and float(images.max()) == 1.0

    model = CentroidModel()
    model.train()
    represent = model_representation(model, "cpu", batch_size=3)
    codes = represent(images)
    assert isinstance(codes, np.ndarray) and codes.shape == (5, 2)
    assert np.allclose(codes, 2 * factors + 0.5)
    assert model.training  # mode restored

    assert mig(source, represent, seed=0, num_train=2000)["score"] > 0.95
    assert factorvae_score(source, represent, seed=0, num_train=300, num_eval=100,
                           num_variance_estimate=500)["score"] == 1.0


def test_dataset_without_factors_is_refused():
    class Plain(ImageDataset):
        name = "plain"

    with pytest.raises(UserError, match="no ground-truth factors"):
        DatasetSource(Plain())
