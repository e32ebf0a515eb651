"""The points A, B and ★ a run opens on (`latent_ops.starting_points`, `MapPanel.first_points`): three distinct
points, A and B far apart on the map, and on a run with attributes an A with the default attribute and a B
and ★ without it, so that the interpolation and the analogy A − B + ★ show something at once."""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

from explorer import latent_ops as ops
from explorer.points import Points
from explorer.runs import RunRegistry
from explorer.tabs.map_panel import MapPanel

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
BUNDLED = sorted(n for n in os.listdir(ASSETS) if os.path.isfile(os.path.join(ASSETS, n, "latents.npz"))) \
    if os.path.isdir(ASSETS) else []


def tiny_table():
    """Two clusters on the map and in latent space; the label 'smile' is high on the left of each cluster."""
    xy = np.array([[0, 0], [0.1, 0], [0.2, 0], [10, 0], [10.1, 0], [10.2, 0]], dtype=np.float32)
    mu = np.array([[0, 0], [0.1, 0], [0.2, 0], [5, 5], [5.1, 5], [5.2, 5]], dtype=np.float32)
    smile = np.array([1.0, 0.0, 0.0, 0.9, 0.0, 0.0])
    return xy, mu, smile


def test_without_an_attribute_a_b_and_star_are_distinct_and_a_b_far_apart():
    xy, mu, _ = tiny_table()
    a, b, star = ops.starting_points(xy, mu)
    assert len({a, b, star}) == 3
    assert a == 0 and xy[b][0] >= 10


def test_with_an_attribute_a_has_it_b_is_a_similar_point_without_it_and_star_another_without_it():
    xy, mu, smile = tiny_table()
    vector = np.array([1.0, 0.0], dtype=np.float32)
    a, b, star = ops.starting_points(xy, mu, (smile > 0.5, smile <= 0.5, vector, smile))
    assert a == 0                       # the strongest smile
    assert smile[b] <= 0.5 and smile[star] <= 0.5
    assert len({a, b, star}) == 3
    assert np.linalg.norm(xy[a] - xy[b]) > np.median(np.abs(xy[:, None, 0] - xy[None, :, 0]))


def test_tiny_tables_and_a_large_one():
    xy, mu, _ = tiny_table()
    assert ops.starting_points(xy[:1], mu[:1]) == (0, 0, 0)
    assert ops.starting_points(xy[:2], mu[:2])[:2] == (0, 1)
    rng = np.random.default_rng(0)
    big_xy, big_mu = rng.normal(size=(100_000, 2)).astype(np.float32), rng.normal(size=(100_000, 10)).astype(np.float32)
    level = big_mu[:, 0]
    contrast = (level > 0, level <= 0, np.eye(10, dtype=np.float32)[0], level)
    ops.starting_points(big_xy, big_mu, contrast)
    start = time.perf_counter()
    a, b, star = ops.starting_points(big_xy, big_mu, contrast)
    assert time.perf_counter() - start < 0.2   # a few ms; generous for a shared CPU
    assert level[a] > 0 >= level[b] and level[star] <= 0 and len({a, b, star}) == 3


@pytest.fixture(scope="module")
def panel():
    return MapPanel(SimpleNamespace(points=Points(RunRegistry([ASSETS]))))


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_runs_open_on_distinct_points_far_apart(panel, name):
    run = panel.points.run(name)
    point, a, b, star, trav, recon, selection = panel.first_points(name)
    assert len({a, b, star}) == 3 and selection == ""
    assert max(point, a, b, star, trav, recon) < run.n_points
    xy = run.latents["xy"].astype(np.float64)
    pairs = np.linalg.norm(xy[:, None] - xy[None], axis=-1)[np.triu_indices(len(xy), 1)]
    assert np.linalg.norm(xy[a] - xy[b]) > np.median(pairs)


def test_smileys_opens_on_a_smile_added_to_a_face_without_one(panel):
    if "smileys-btcvae" not in BUNDLED:
        pytest.skip("needs assets/smileys-btcvae")
    run = panel.points.run("smileys-btcvae")
    assert run.attribute_names[0] == "smile"
    _, a, b, star, *_ = panel.first_points("smileys-btcvae")
    smile = run.latents["labels"][:, run.label_names.index("smile")]
    threshold = run.attributes["attributes"]["smile"]["threshold"]
    assert smile[a] == smile.max()
    assert smile[b] <= threshold and smile[star] <= threshold
