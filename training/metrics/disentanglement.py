"""All four disentanglement metrics under the disentanglement_lib protocol, and the adapters that
connect them to the project's datasets and models.

    source = DatasetSource(load_dataset(cfg.data))         # dsprites: shape, scale, orientation, posX, posY
    represent = model_representation(run.model, device)    # images -> posterior means (numpy)
    result = evaluate_all(source, represent, seed=0)       # {"protocol", "mig", "factorvae", "dci", ...}

`evaluate_all` returns the layout of `disentanglement` in metrics.json (docs/run-format.md): headline
scores at the top level and each metric's full result (per-factor parts, accuracies, settings) under
"details". `scale` multiplies every sample count for quick runs; a scale below 1 is flagged "reduced".
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import UserError
from .beta_vae import betavae_score
from .dci import dci
from .factor_vae import factorvae_score
from .mig import mig
from .sampling import (DEFAULT_POINTS_PER_CALL, GroundTruthSource, RepresentationFn, check_source,
                       library_versions, uniform_factors)

PROTOCOL = "disentanglement_lib (Locatello et al. 2019)"
METRIC_NAMES = ("mig", "factorvae", "dci", "betavae")
# FactorVAE votes and BetaVAE pair batches: 64 points each in the protocol.
VOTE_BATCH_SIZE = 64

# Sample counts of the protocol (Locatello et al. 2019); `scale` multiplies all of them.
PROTOCOL_COUNTS = {
    "mig": {"num_train": 10_000},
    "factorvae": {"num_train": 10_000, "num_eval": 5_000, "num_variance_estimate": 10_000},
    "dci": {"num_train": 10_000, "num_test": 5_000},
    "betavae": {"num_train": 10_000, "num_eval": 5_000},
}
# Fewest points a count may shrink to, so tiny scales still give defined (if noisy) numbers.
_MINIMUM_COUNTS = {"num_variance_estimate": 64, "num_train": 50, "num_eval": 20, "num_test": 20}


class DatasetSource:
    """A ground-truth source over an `ImageDataset` with factors; observations are float images in [0, 1].

    Factors with a single value (dSprites' colour) are held at 0 and left out of `factor_sizes`, as in
    disentanglement_lib: a constant factor carries no information for any metric.
    """

    def __init__(self, dataset):
        if not getattr(dataset, "has_factors", False):
            raise UserError(f"dataset {getattr(dataset, 'name', '?')!r} has no ground-truth factors; "
                            "disentanglement metrics need a procedural dataset such as dsprites")
        self.dataset = dataset
        all_sizes = [int(s) for s in dataset.factor_sizes]
        all_names = list(getattr(dataset, "factor_names", []) or [f"factor{i}" for i in range(len(all_sizes))])
        self._all_sizes = all_sizes
        self._varying = [i for i, s in enumerate(all_sizes) if s > 1]
        self.factor_sizes = [all_sizes[i] for i in self._varying]
        self.factor_names = [str(all_names[i]) for i in self._varying] if len(all_names) == len(all_sizes) else None
        check_source(self)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return uniform_factors(self.factor_sizes, n, rng)

    def observations_from_factors(self, factors: np.ndarray, rng: np.random.Generator):
        """Float32 torch images (n, C, H, W) in [0, 1] rendered from the varying factors' classes."""
        full = np.zeros((factors.shape[0], len(self._all_sizes)), dtype=np.int64)
        full[:, self._varying] = factors
        return self.dataset.render(full).float().div_(255.0)


def model_representation(model, device: Any = "cpu", batch_size: int = 256) -> RepresentationFn:
    """A representation function: float images (torch or numpy, (n, C, H, W)) -> posterior means as a
    numpy float32 array (n, D), D the flattened latent size. Runs in eval mode without gradients, in
    batches of `batch_size` on `device`, and restores the model's train/eval mode afterwards.
    """
    device = torch.device(device)

    def represent(images) -> np.ndarray:
        images = torch.as_tensor(images, dtype=torch.float32)
        was_training = model.training
        model.eval()
        means = []
        try:
            with torch.no_grad():
                for start in range(0, images.shape[0], batch_size):
                    batch = images[start:start + batch_size].to(device)
                    mean = model.encode(batch).mean
                    means.append(mean.reshape(mean.shape[0], -1).float().cpu().numpy())
        finally:
            model.train(was_training)
        if not means:
            return np.zeros((0, int(np.prod(model.latent_shape))), dtype=np.float32)
        return np.concatenate(means, axis=0)

    return represent


def scaled_counts(scale: float) -> dict:
    """The protocol's sample counts multiplied by `scale` (rounded, never below a small floor)."""
    return {metric: {name: max(_MINIMUM_COUNTS[name], int(round(count * scale))) for name, count in counts.items()}
            for metric, counts in PROTOCOL_COUNTS.items()}


def evaluate_all(source: GroundTruthSource, representation_fn: RepresentationFn, seed: int = 0,
                 scale: float = 1.0, n_jobs: int = 1,
                 points_per_call: int = DEFAULT_POINTS_PER_CALL,
                 metrics: Sequence[str] = METRIC_NAMES) -> dict:
    """MIG, FactorVAE, DCI and BetaVAE under the protocol's settings.

    Each metric draws from its own generator (children of `seed` through np.random.SeedSequence), so
    one metric's result does not depend on the others; its seed is recorded in its settings.
    `n_jobs` parallelises DCI's per-factor classifiers (the slow part: minutes on a CPU for a
    continuous 10-dim code at the protocol's counts). `metrics` picks a subset; a metric left out
    is None in the result and listed in settings["skipped"].

    Returns {"protocol", "mig": float, "factorvae": float, "betavae": float,
             "dci": {"disentanglement", "completeness", "informativeness"},
             "details": {metric: full result}, "settings": {...}}; everything JSON-serialisable.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UserError(f"evaluate_all: seed must be an integer, got {seed!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
        raise UserError(f"evaluate_all: scale must be a positive number, got {scale!r}")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown or not metrics:
        raise UserError(f"evaluate_all: unknown metric(s) {unknown or list(metrics)}; choose from {list(METRIC_NAMES)}")
    check_source(source)
    started = time.perf_counter()
    counts = scaled_counts(float(scale))
    seeds = dict(zip(METRIC_NAMES, (int(s) for s in np.random.SeedSequence(int(seed)).generate_state(4))))
    runners = {
        "mig": lambda: mig(source, representation_fn, seed=seeds["mig"], batch_size=points_per_call,
                           **counts["mig"]),
        "factorvae": lambda: factorvae_score(source, representation_fn, seed=seeds["factorvae"],
                                             batch_size=VOTE_BATCH_SIZE, points_per_call=points_per_call, **counts["factorvae"]),
        "dci": lambda: dci(source, representation_fn, seed=seeds["dci"], batch_size=points_per_call,
                           n_jobs=n_jobs, **counts["dci"]),
        "betavae": lambda: betavae_score(source, representation_fn, seed=seeds["betavae"],
                                         batch_size=VOTE_BATCH_SIZE, points_per_call=points_per_call, **counts["betavae"]),
    }
    details = {name: runners[name]() for name in METRIC_NAMES if name in metrics}
    any_result = next(iter(details.values()))
    settings = {
        "seed": int(seed),
        "metric_seeds": {name: seeds[name] for name in details},
        "scale": float(scale),
        "reduced": bool(scale < 1),
        "counts": {name: counts[name] for name in details},
        "skipped": [name for name in METRIC_NAMES if name not in details],
        "num_bins": details["mig"]["settings"]["num_bins"] if "mig" in details else None,
        "batch_size": VOTE_BATCH_SIZE,
        "prune_std": details["factorvae"]["settings"]["prune_std"] if "factorvae" in details else None,
        "factor_sizes": [int(s) for s in source.factor_sizes],
        "representation_dim": any_result["settings"]["representation_dim"],
        "versions": library_versions(),
        "seconds": {name: result["seconds"] for name, result in details.items()},
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    names = getattr(source, "factor_names", None)
    if names:
        settings["factor_names"] = [str(n) for n in names]
    dci_result = details.get("dci")
    return {
        "protocol": PROTOCOL,
        "mig": details["mig"]["score"] if "mig" in details else None,
        "factorvae": details["factorvae"]["score"] if "factorvae" in details else None,
        "dci": None if dci_result is None else {
            "disentanglement": dci_result["disentanglement"], "completeness": dci_result["completeness"],
            "informativeness": dci_result["informativeness"]},
        "betavae": details["betavae"]["score"] if "betavae" in details else None,
        "details": details,
        "settings": settings,
    }
