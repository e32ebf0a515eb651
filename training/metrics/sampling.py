"""What every disentanglement metric shares: the ground-truth source protocol and seeded sampling.

The metrics never see a torch model or a dataset class. They talk to
  * a ground-truth source: `factor_sizes`, `sample_factors(n, rng)` and
    `observations_from_factors(factors, rng)` (observations are whatever the representation takes), and
  * a representation function: observations -> (n, d) array (the posterior mean).
All randomness comes from one seeded `np.random.Generator`, so the same seed gives the same score.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Sequence, Union

import numpy as np
import sklearn

from ..errors import UserError

# Observations handed to the representation function per call. Bounds memory for image sources
# (4096 float 64x64 images = 64 MB); the model adapter batches further for the device.
DEFAULT_POINTS_PER_CALL = 4096

RepresentationFn = Callable[[Any], np.ndarray]
Seed = Union[int, np.random.Generator]


class GroundTruthSource(Protocol):
    """A data source whose observations are generated from known discrete factors."""

    factor_sizes: Sequence[int]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, F) int64 factor classes drawn uniformly from the grid."""
        ...

    def observations_from_factors(self, factors: np.ndarray, rng: np.random.Generator) -> Any:
        """Observations (anything the representation function accepts) for (n, F) factor classes."""
        ...


class SyntheticSource:
    """A ground-truth source without images, for calibrating and testing the metrics.

    Observations are float64 rows `[factor classes..., noise...]`: the first F columns are the factor
    class indices, the next `noise_dims` columns standard normal noise drawn from the metric's rng.
    A representation function picks or mixes columns (true factors, a rotation, pure noise).
    """

    def __init__(self, factor_sizes: Sequence[int], noise_dims: int = 0,
                 factor_names: Optional[Sequence[str]] = None):
        self.factor_sizes = [int(s) for s in factor_sizes]
        self.noise_dims = int(noise_dims)
        self.factor_names = list(factor_names) if factor_names is not None else [
            f"factor{i}" for i in range(len(self.factor_sizes))]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return uniform_factors(self.factor_sizes, n, rng)

    def observations_from_factors(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        factors = np.asarray(factors, dtype=np.float64)
        noise = rng.standard_normal((factors.shape[0], self.noise_dims))
        return np.concatenate([factors, noise], axis=1)


def uniform_factors(factor_sizes: Sequence[int], n: int, rng: np.random.Generator) -> np.ndarray:
    """n factor vectors drawn uniformly and independently from the grid, (n, F) int64."""
    if not factor_sizes:
        return np.zeros((n, 0), dtype=np.int64)
    return np.stack([rng.integers(0, s, size=n) for s in factor_sizes], axis=1).astype(np.int64)


def make_rng(seed: Seed) -> tuple[np.random.Generator, Any]:
    """(generator, what to record as the seed). A Generator passed in is used as is (recorded as such)."""
    if isinstance(seed, np.random.Generator):
        return seed, "generator"
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)):
        raise UserError(f"metric seed must be an integer or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed)), int(seed)


def check_source(source: GroundTruthSource) -> list[int]:
    """The source's factor sizes, validated: at least one factor, each with at least two values."""
    sizes = [int(s) for s in getattr(source, "factor_sizes", [])]
    if not sizes:
        raise UserError("disentanglement metrics need a source with ground-truth factors (factor_sizes is empty)")
    constant = [i for i, s in enumerate(sizes) if s < 2]
    if constant:
        # A constant factor has zero entropy: MIG would divide by zero and no vote could identify it.
        raise UserError(f"factor(s) {constant} have fewer than two values; drop constant factors from the source")
    return sizes


def check_count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def represent(source: GroundTruthSource, representation_fn: RepresentationFn, factors: np.ndarray,
              rng: np.random.Generator, points_per_call: int = DEFAULT_POINTS_PER_CALL) -> np.ndarray:
    """Representations (n, d) float64 of observations generated from `factors`, in chunks."""
    n = factors.shape[0]
    chunks = []
    for start in range(0, n, points_per_call):
        part = factors[start:start + points_per_call]
        observations = source.observations_from_factors(part, rng)
        chunks.append(_as_codes(representation_fn(observations), len(part)))
    if not chunks:
        raise UserError("no points to represent (sample count is 0)")
    dims = {c.shape[1] for c in chunks}
    if len(dims) != 1:
        raise UserError(f"the representation function returned different widths across calls: {sorted(dims)}")
    return np.concatenate(chunks, axis=0)


def _as_codes(codes: Any, n: int) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim == 1:
        codes = codes[:, None]
    elif codes.ndim > 2:
        codes = codes.reshape(codes.shape[0], -1)
    if codes.shape[0] != n:
        raise UserError(f"the representation function returned {codes.shape[0]} rows for {n} observations")
    if codes.shape[1] == 0:
        raise UserError("the representation function returned zero-width codes")
    if not np.all(np.isfinite(codes)):
        raise UserError("the representation contains NaN or infinite values (did training diverge?)")
    return codes


def sample_codes_and_factors(source: GroundTruthSource, representation_fn: RepresentationFn, n: int,
                             rng: np.random.Generator,
                             points_per_call: int = DEFAULT_POINTS_PER_CALL) -> tuple[np.ndarray, np.ndarray]:
    """n random points: (codes (n, d) float64, factors (n, F) int64)."""
    factors = np.asarray(source.sample_factors(n, rng), dtype=np.int64)
    return represent(source, representation_fn, factors, rng, points_per_call), factors


def set_factor(factors: np.ndarray, factor_index: np.ndarray, values: np.ndarray) -> None:
    """In place, for every group v: factors[v, :, factor_index[v]] = values[v] (broadcast over the group).

    factors is (V, B, F): V groups of B points; factor_index is (V,); values is (V, B) or (V, 1).
    """
    groups = np.arange(factors.shape[0])
    factors[groups, :, factor_index] = values


def library_versions() -> dict:
    return {"numpy": np.__version__, "scikit-learn": sklearn.__version__}


def base_settings(seed_record: Any, source: GroundTruthSource, points_per_call: int, **counts) -> dict:
    """The `settings` dict every metric result carries: counts, seed, factor sizes, library versions."""
    settings = {k: (int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v)
                for k, v in counts.items()}
    settings.update({
        "seed": seed_record,
        "factor_sizes": [int(s) for s in source.factor_sizes],
        "points_per_call": int(points_per_call),
        "versions": library_versions(),
    })
    names = getattr(source, "factor_names", None)
    if names:
        settings["factor_names"] = [str(n) for n in names]
    return settings
