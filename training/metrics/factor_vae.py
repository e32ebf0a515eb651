"""FactorVAE score (Kim & Mnih 2018), as computed in disentanglement_lib (Locatello et al. 2019).

1. Global variance of every code dimension over `num_variance_estimate` random points; dimensions
   whose standard deviation is below `prune_std` are collapsed and take no part.
2. One vote: fix one random factor at a random value across a batch of `batch_size` points, divide the
   batch's per-dimension variance by the global variance, and vote (factor -> argmin active dimension).
3. A majority-vote classifier maps each dimension to the factor it most often voted for, trained on
   `num_train` votes; the score is its accuracy on `num_eval` fresh votes.
True factors score 1.0, pure noise chance (1 / number of factors).
"""
from __future__ import annotations

import time

import numpy as np

from .sampling import (DEFAULT_POINTS_PER_CALL, GroundTruthSource, RepresentationFn, Seed, base_settings,
                       check_count, check_source, make_rng, represent, sample_codes_and_factors, set_factor)


def count_votes(source: GroundTruthSource, representation_fn: RepresentationFn, rng: np.random.Generator,
                num_votes: int, batch_size: int, global_variance: np.ndarray, active: np.ndarray,
                points_per_call: int) -> np.ndarray:
    """(F, d) vote counts: how often fixing factor k made dimension j the least varying active one."""
    num_factors = len(source.factor_sizes)
    active_dims = np.flatnonzero(active)
    votes = np.zeros((num_factors, global_variance.shape[0]), dtype=np.int64)
    votes_per_call = max(1, points_per_call // batch_size)
    for start in range(0, num_votes, votes_per_call):
        n = min(votes_per_call, num_votes - start)
        fixed = rng.integers(0, num_factors, size=n)
        factors = np.asarray(source.sample_factors(n * batch_size, rng), dtype=np.int64)
        factors = factors.reshape(n, batch_size, num_factors)
        # The fixed factor takes the value of the group's first point: a random value per vote.
        set_factor(factors, fixed, factors[np.arange(n), 0, fixed][:, None])
        codes = represent(source, representation_fn, factors.reshape(n * batch_size, num_factors), rng,
                          points_per_call).reshape(n, batch_size, -1)
        local_variance = np.var(codes[:, :, active_dims], axis=1, ddof=1)
        winner = active_dims[np.argmin(local_variance / global_variance[active_dims], axis=1)]
        np.add.at(votes, (fixed, winner), 1)
    return votes


def majority_vote_accuracy(votes: np.ndarray, classifier: np.ndarray) -> float:
    """Share of votes whose factor is the one the classifier assigns to the voted dimension."""
    total = votes.sum()
    return float(votes[classifier, np.arange(votes.shape[1])].sum() / total) if total else 0.0


def factorvae_score(source: GroundTruthSource, representation_fn: RepresentationFn, seed: Seed = 0,
                    batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                    num_variance_estimate: int = 10_000, prune_std: float = 0.05,
                    points_per_call: int = DEFAULT_POINTS_PER_CALL) -> dict:
    """FactorVAE score. Returns {"score" (= eval_accuracy), "train_accuracy", "eval_accuracy",
    "num_active_dims", "active_dims", "dim_to_factor", "seconds", "settings"} (+ "note" if no dim is active).
    """
    started = time.perf_counter()
    check_source(source)
    batch_size = check_count("batch_size", batch_size, minimum=2)
    num_train = check_count("num_train", num_train)
    num_eval = check_count("num_eval", num_eval)
    num_variance_estimate = check_count("num_variance_estimate", num_variance_estimate, minimum=2)
    points_per_call = check_count("points_per_call", points_per_call)
    rng, seed_record = make_rng(seed)

    codes, _ = sample_codes_and_factors(source, representation_fn, num_variance_estimate, rng, points_per_call)
    global_variance = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(global_variance) >= prune_std
    settings = base_settings(seed_record, source, points_per_call, batch_size=batch_size, num_train=num_train,
                             num_eval=num_eval, num_variance_estimate=num_variance_estimate,
                             prune_std=float(prune_std), representation_dim=codes.shape[1])
    result = {"num_active_dims": int(active.sum()), "active_dims": [int(i) for i in np.flatnonzero(active)]}
    if not active.any():
        result.update(score=0.0, train_accuracy=0.0, eval_accuracy=0.0, dim_to_factor=[],
                      note=f"no code dimension has a standard deviation >= {prune_std}: "
                           "the representation is collapsed, score set to 0")
    else:
        train_votes = count_votes(source, representation_fn, rng, num_train, batch_size, global_variance, active,
                                  points_per_call)
        eval_votes = count_votes(source, representation_fn, rng, num_eval, batch_size, global_variance, active,
                                 points_per_call)
        classifier = np.argmax(train_votes, axis=0)
        eval_accuracy = majority_vote_accuracy(eval_votes, classifier)
        result.update(score=eval_accuracy, train_accuracy=majority_vote_accuracy(train_votes, classifier),
                      eval_accuracy=eval_accuracy,
                      # Only active dims that received votes have a meaningful assignment.
                      dim_to_factor=[int(classifier[j]) if active[j] and train_votes[:, j].any() else None
                                     for j in range(codes.shape[1])])
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["settings"] = settings
    return result
