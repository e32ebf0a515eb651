"""The 2-D map of a latent table, and where new latents land on it.

The map is a UMAP of the exported posterior means, fitted once at export time (`fit_map`). A new
latent (an upload, an interpolation step, an arithmetic result) is placed by inverse-distance weighting
of the map positions of its nearest exported means (`LatentIndex.place`), never by running UMAP again:
a fitted UMAP's `transform` costs seconds in a fresh process, nearest neighbours cost milliseconds.
Every neighbour search goes through scikit-learn's exact `NearestNeighbors`.
"""
from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
from sklearn.neighbors import NearestNeighbors

# Neighbours whose map positions are averaged to place a new latent.
PLACEMENT_NEIGHBOURS = 8


class LatentIndex:
    """Exact Euclidean nearest neighbours over the rows of a latent table (N, D)."""

    def __init__(self, table: np.ndarray):
        self.table = np.asarray(table, dtype=np.float32).reshape(len(table), -1)
        # Brute force on squared distances: exact, and on a float32 table it needs no float64 copy
        # (scikit-learn's "euclidean" widens float32 tables chunk by chunk on every query, 3-4x slower
        # for a VQ-VAE's 784-dimensional code grids). The ranking is the same as by distance.
        self.search = NearestNeighbors(algorithm="brute", metric="sqeuclidean").fit(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def neighbours(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices (M, k), distances (M, k)) of the k nearest rows to each query row, nearest first.

        scikit-learn ranks the rows; the chosen distances are then measured again directly in float64,
        so a query equal to a row is at distance exactly 0 (the squared-norm expansion leaves ~1e-8).
        """
        query = np.asarray(query).reshape(-1, self.table.shape[1])
        k = max(1, min(int(k), len(self.table)))
        candidates = self.search.kneighbors(query, n_neighbors=k, return_distance=False)
        exact = np.linalg.norm(self.table[candidates] - query[:, None, :].astype(np.float64), axis=2)
        order = np.argsort(exact, axis=1, kind="stable")
        return np.take_along_axis(candidates, order, 1), np.take_along_axis(exact, order, 1)

    def place(self, xy: np.ndarray, query: np.ndarray, k: int = PLACEMENT_NEIGHBOURS) -> np.ndarray:
        """Map positions (M, 2) float32 of the query rows: the mean of their k nearest rows' `xy`
        weighted by inverse distance. A query equal to a row gets exactly that row's position."""
        query = np.asarray(query).reshape(-1, self.table.shape[1])
        nearest, dist = self.neighbours(query, k)
        scale = 1e-9 * (1.0 + np.linalg.norm(query.astype(np.float64), axis=1, keepdims=True))
        exact = dist <= scale
        weights = np.where(exact.any(1, keepdims=True), exact.astype(np.float64), 1.0 / np.maximum(dist, scale))
        positions = np.asarray(xy, dtype=np.float64)[nearest]
        return ((weights[:, :, None] * positions).sum(1) / weights.sum(1, keepdims=True)).astype(np.float32)


def place_on_map(mu_table: np.ndarray, xy_table: np.ndarray, mu_new: np.ndarray,
                 k: int = PLACEMENT_NEIGHBOURS) -> np.ndarray:
    """Map coordinates for new latents: mu_new (D,) -> (2,), or (M, D) -> (M, 2) (see LatentIndex.place)."""
    index = LatentIndex(mu_table)
    query = np.asarray(mu_new)
    if query.shape[-1] != index.table.shape[1]:
        raise ValueError(f"latent size {query.shape[-1]} does not match the table's {index.table.shape[1]}")
    out = index.place(xy_table, query, k)
    return out[0] if query.ndim == 1 else out


def ensure_numba_cache() -> None:
    """umap imports numba, which fails in read-only installs unless its cache folder is writable."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        path = os.path.join(tempfile.gettempdir(), "vae-explorer-numba-cache")
        os.makedirs(path, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = path


def fit_map(mu: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """2-D UMAP of the rows of mu (float32 (N, 2)). seed < 0: no random_state (parallel, not reproducible).

    The neighbour graph is exact (`LatentIndex`) and handed to UMAP as precomputed_knn: it skips
    pynndescent, whose numba compilation costs about a minute in every fresh process for more than
    4,096 points. The fitted UMAP object is not kept. Fewer than 4 points (or all identical) get a PCA.
    """
    n = mu.shape[0]
    if n < 4 or np.allclose(mu, mu[:1]):
        return pca_2d(mu)
    ensure_numba_cache()
    import umap  # heavy (numba compiles on first import): only export needs it

    k = max(2, min(n_neighbors, n - 1))
    table = np.asarray(mu, dtype=np.float32)
    knn_indices, knn_dists = LatentIndex(table).neighbours(table, k)
    reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist,
                        random_state=None if seed < 0 else seed,
                        precomputed_knn=(knn_indices.astype(np.int32), knn_dists.astype(np.float32), None),
                        # Spectral initialisation needs a graph of some size; tiny tables start at random.
                        init="spectral" if n > 3 * k else "random")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        return reducer.fit_transform(table).astype(np.float32)


def pca_2d(mu: np.ndarray) -> np.ndarray:
    centred = mu.astype(np.float64) - mu.mean(0, keepdims=True)
    out = np.zeros((mu.shape[0], 2), np.float32)
    if mu.shape[0] > 1 and np.any(centred):
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[:2].T
        out[:, :proj.shape[1]] = proj
    return out
