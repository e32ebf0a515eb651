"""BetaVAE score (Higgins et al. 2017), as computed in disentanglement_lib (Locatello et al. 2019).

One training point: pick a factor at random; draw `batch_size` pairs of points that share that factor's
value (each pair its own value) and differ at random elsewhere; the feature is the mean over pairs of
|z1 - z2| per code dimension, the label the fixed factor. A logistic regression (scikit-learn defaults)
is fitted on `num_train` points; the score is its accuracy on `num_eval` fresh points.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from .sampling import (DEFAULT_POINTS_PER_CALL, GroundTruthSource, RepresentationFn, Seed, base_settings,
                       check_count, check_source, make_rng, represent, set_factor)


def pair_difference_features(source: GroundTruthSource, representation_fn: RepresentationFn,
                             rng: np.random.Generator, num_points: int, batch_size: int,
                             points_per_call: int) -> tuple[np.ndarray, np.ndarray]:
    """(features (num_points, d), labels (num_points,)): mean |z1 - z2| over pairs sharing one factor."""
    num_factors = len(source.factor_sizes)
    # Both halves of a pair go through the representation in the same call.
    points_per_group = 2 * batch_size
    groups_per_call = max(1, points_per_call // points_per_group)
    features, labels = [], []
    for start in range(0, num_points, groups_per_call):
        n = min(groups_per_call, num_points - start)
        fixed = rng.integers(0, num_factors, size=n)
        first = np.asarray(source.sample_factors(n * batch_size, rng), dtype=np.int64)
        second = np.asarray(source.sample_factors(n * batch_size, rng), dtype=np.int64)
        first = first.reshape(n, batch_size, num_factors)
        second = second.reshape(n, batch_size, num_factors)
        set_factor(second, fixed, first[np.arange(n), :, fixed])
        both = np.concatenate([first.reshape(-1, num_factors), second.reshape(-1, num_factors)])
        codes = represent(source, representation_fn, both, rng, points_per_call)
        z1 = codes[:n * batch_size].reshape(n, batch_size, -1)
        z2 = codes[n * batch_size:].reshape(n, batch_size, -1)
        features.append(np.mean(np.abs(z1 - z2), axis=1))
        labels.append(fixed)
    return np.concatenate(features), np.concatenate(labels)


def betavae_score(source: GroundTruthSource, representation_fn: RepresentationFn, seed: Seed = 0,
                  batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                  points_per_call: int = DEFAULT_POINTS_PER_CALL) -> dict:
    """BetaVAE score. Returns {"score" (= eval_accuracy), "train_accuracy", "eval_accuracy", "converged",
    "seconds", "settings"}."""
    started = time.perf_counter()
    check_source(source)
    batch_size = check_count("batch_size", batch_size)
    num_train = check_count("num_train", num_train, minimum=2)
    num_eval = check_count("num_eval", num_eval)
    points_per_call = check_count("points_per_call", points_per_call)
    rng, seed_record = make_rng(seed)

    train_x, train_y = pair_difference_features(source, representation_fn, rng, num_train, batch_size,
                                                points_per_call)
    eval_x, eval_y = pair_difference_features(source, representation_fn, rng, num_eval, batch_size,
                                              points_per_call)
    result = {}
    if np.unique(train_y).size < 2:
        # Only possible with a single factor or tiny num_train: nothing to discriminate.
        train_accuracy = eval_accuracy = float(np.mean(eval_y == train_y[0]))
        converged = True
        result["note"] = "only one factor among the training votes: constant classifier"
    else:
        model = LogisticRegression(random_state=int(rng.integers(2**31 - 1)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(train_x, train_y)
        # The protocol keeps sklearn's defaults (lbfgs, 100 iterations); record whether that sufficed.
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn(w.message, w.category)
        train_accuracy = float(model.score(train_x, train_y))
        eval_accuracy = float(model.score(eval_x, eval_y))
    result.update(score=eval_accuracy, train_accuracy=train_accuracy, eval_accuracy=eval_accuracy,
                  converged=converged, seconds=round(time.perf_counter() - started, 3))
    result["settings"] = base_settings(seed_record, source, points_per_call, batch_size=batch_size,
                                       num_train=num_train, num_eval=num_eval,
                                       representation_dim=train_x.shape[1])
    return result
