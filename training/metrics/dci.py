"""DCI disentanglement / completeness / informativeness (Eastwood & Williams 2018), as computed in
disentanglement_lib (Locatello et al. 2019).

One gradient-boosted tree classifier per factor (scikit-learn defaults) predicts the factor from the
code. Their feature importances form R (d codes x F factors). With H_B the entropy in base B of a
normalised row or column:
  disentanglement D = sum_i rho_i (1 - H_F(R_i.)),  rho_i = share of all importance on code i,
  completeness    C = sum_k rho_k (1 - H_d(R_.k)),  rho_k = share of all importance on factor k,
  informativeness   = mean test accuracy of the classifiers.
Cost: the default 100 boosting stages fit one tree per class, so 40- and 32-valued factors dominate
(about a minute for 10,000 points of five true factors on one core).
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier

from ..errors import UserError
from .sampling import (DEFAULT_POINTS_PER_CALL, GroundTruthSource, RepresentationFn, Seed, base_settings,
                       check_count, check_source, make_rng, sample_codes_and_factors)

# Added to every importance before taking entropies so an all-zero row is uniform, not NaN.
_EPSILON = 1e-11


def normalised_entropy(weights: np.ndarray, base: int) -> np.ndarray:
    """Entropy in base `base` of each row of `weights`, each row normalised to sum 1."""
    p = weights + _EPSILON
    p = p / p.sum(axis=1, keepdims=True)
    if base < 2:
        return np.zeros(p.shape[0])  # one outcome: no uncertainty
    return -np.sum(p * np.log(p), axis=1) / np.log(base)


def disentanglement_score(importance: np.ndarray) -> tuple[float, np.ndarray]:
    """(D, per-code disentanglement) for an importance matrix (d codes, F factors)."""
    per_code = 1.0 - normalised_entropy(importance, base=importance.shape[1])
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    code_share = weights.sum(axis=1) / weights.sum()
    return float(np.sum(per_code * code_share)), per_code


def completeness_score(importance: np.ndarray) -> tuple[float, np.ndarray]:
    """(C, per-factor completeness) for an importance matrix (d codes, F factors)."""
    per_factor = 1.0 - normalised_entropy(importance.T, base=importance.shape[0])
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    factor_share = weights.sum(axis=0) / weights.sum()
    return float(np.sum(per_factor * factor_share)), per_factor


def _fit_factor(train_codes, train_y, test_codes, test_y, random_state: int) -> tuple[np.ndarray, float, float]:
    """(feature importances, train accuracy, test accuracy) of one factor's gradient-boosted trees."""
    # sklearn defaults; the random_state only makes tie-breaking between equal splits reproducible.
    model = GradientBoostingClassifier(random_state=random_state)
    model.fit(train_codes, train_y)
    return (np.abs(model.feature_importances_), float(np.mean(model.predict(train_codes) == train_y)),
            float(np.mean(model.predict(test_codes) == test_y)))


def dci_from_codes(train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray,
                   test_factors: np.ndarray, rng: np.random.Generator, n_jobs: int = 1) -> dict:
    """DCI and its parts from already sampled codes and factors."""
    num_factors = train_factors.shape[1]
    for k in range(num_factors):
        if np.unique(train_factors[:, k]).size < 2:
            raise UserError(f"DCI: factor {k} takes a single value among the training points; use more points")
    seeds = [int(s) for s in rng.integers(2**31 - 1, size=num_factors)]
    jobs = [(train_codes, train_factors[:, k], test_codes, test_factors[:, k], seeds[k]) for k in range(num_factors)]
    if n_jobs == 1:
        fits = [_fit_factor(*job) for job in jobs]
    else:
        from joblib import Parallel, delayed  # ships with scikit-learn

        fits = Parallel(n_jobs=n_jobs)(delayed(_fit_factor)(*job) for job in jobs)
    importance = np.stack([f[0] for f in fits], axis=1)  # (d, F)
    train_accuracy = np.array([f[1] for f in fits])
    test_accuracy = np.array([f[2] for f in fits])
    disentanglement, per_code = disentanglement_score(importance)
    completeness, per_factor = completeness_score(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness": float(test_accuracy.mean()),
        "informativeness_train": float(train_accuracy.mean()),
        "per_code_disentanglement": [float(v) for v in per_code],
        "per_factor_completeness": [float(v) for v in per_factor],
        "per_factor_test_accuracy": [float(v) for v in test_accuracy],
        "per_factor_train_accuracy": [float(v) for v in train_accuracy],
        "importance_matrix": importance.tolist(),
    }


def dci(source: GroundTruthSource, representation_fn: RepresentationFn, seed: Seed = 0,
        num_train: int = 10_000, num_test: int = 5_000, batch_size: int = DEFAULT_POINTS_PER_CALL,
        n_jobs: int = 1) -> dict:
    """DCI on `num_train` / `num_test` random points. `batch_size` = observations per representation_fn
    call; `n_jobs` fits the factors' classifiers in parallel (same result for any value).

    Returns {"score" (= disentanglement), "disentanglement", "completeness", "informativeness" (mean test
    accuracy), "informativeness_train", per-code/per-factor parts, "importance_matrix" (d x F), "seconds",
    "settings"}.
    """
    started = time.perf_counter()
    check_source(source)
    num_train = check_count("num_train", num_train, minimum=2)
    num_test = check_count("num_test", num_test)
    batch_size = check_count("batch_size", batch_size)
    n_jobs = int(n_jobs)
    rng, seed_record = make_rng(seed)
    train_codes, train_factors = sample_codes_and_factors(source, representation_fn, num_train, rng, batch_size)
    test_codes, test_factors = sample_codes_and_factors(source, representation_fn, num_test, rng, batch_size)
    result = dci_from_codes(train_codes, train_factors, test_codes, test_factors, rng, n_jobs)
    result = {"score": result["disentanglement"], **result, "seconds": round(time.perf_counter() - started, 3)}
    result["settings"] = base_settings(seed_record, source, batch_size, num_train=num_train, num_test=num_test,
                                       model="sklearn GradientBoostingClassifier (defaults)",
                                       representation_dim=train_codes.shape[1])
    return result
