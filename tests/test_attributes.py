"""Attribute vectors (training/attributes.py) on synthetic latents with a known leak."""
import json

import numpy as np
import pytest

from training.attributes import (attribute_vectors, balanced_vector, binary_correlation,
                                 choose_threshold, plain_vector)
from training.runfolder import ATTRIBUTES_FILE, save_attributes


def leaky_latents(n=4000, correlation_flip=0.1, seed=0):
    """z = [smile + noise, glasses + noise, perfect-attribute axis, noise...]; smile ~ glasses (r = 0.8)."""
    rng = np.random.default_rng(seed)
    smile = rng.random(n) < 0.5
    glasses = np.where(rng.random(n) < correlation_flip, ~smile, smile)
    z = rng.normal(0, 0.3, size=(n, 8))
    z[:, 0] += smile
    z[:, 1] += glasses
    z[:, 2] = rng.normal(0, 1, size=n)
    perfect = z[:, 2] > 0
    noise_label = rng.random(n) < 0.5
    labels = np.stack([smile, glasses, perfect, noise_label], axis=1).astype(np.float32)
    return z, labels, ["smile", "glasses", "perfect", "noise"], ["binary"] * 4


def test_corrected_vector_removes_the_confounder_leak():
    z, labels, names, kinds = leaky_latents()
    assert binary_correlation(labels[:, 0] > 0.5, labels[:, 1] > 0.5) == pytest.approx(0.8, abs=0.04)
    doc = attribute_vectors(z, labels, names, kinds)
    smile = doc["attributes"]["smile"]
    plain, corrected = np.array(smile["vector"]), np.array(smile["corrected"]["vector"])
    assert smile["corrected"]["confounder"] == "glasses"
    assert smile["corrected"]["balanced"] is True
    # The plain vector picks up P(glasses|smile) - P(glasses|no smile) = 0.8 on the glasses axis.
    assert plain[1] == pytest.approx(0.8, abs=0.06)
    assert abs(corrected[1]) < 0.08 and abs(corrected[1]) < plain[1] / 8
    # Both keep the smile axis.
    assert plain[0] == pytest.approx(1.0, abs=0.06) and corrected[0] == pytest.approx(1.0, abs=0.06)


def test_auc_of_a_perfect_attribute_is_one_and_of_noise_one_half():
    z, labels, names, kinds = leaky_latents()
    doc = attribute_vectors(z, labels, names, kinds)
    assert doc["attributes"]["perfect"]["auc"] > 0.99
    assert abs(doc["attributes"]["noise"]["auc"] - 0.5) < 0.05
    assert doc["attributes"]["smile"]["auc"] > 0.95
    for entry in doc["attributes"].values():
        assert entry["n_pos"] + entry["n_neg"] == len(z)
        assert len(entry["vector"]) == z.shape[1] == len(entry["corrected"]["vector"])


def test_balanced_vector_equals_replicating_cells_to_equal_counts():
    rng = np.random.default_rng(1)
    counts = {(0, 0): 10, (0, 1): 20, (1, 0): 40, (1, 1): 5}   # replicate to 40 each: x4, x2, x1, x8
    mus, pos, conf, reps = [], [], [], []
    for (a, c), n in counts.items():
        mus.append(rng.normal(a * 2 + c * 3, 1, size=(n, 3)))
        pos += [bool(a)] * n
        conf += [bool(c)] * n
        reps += [40 // n] * n
    mu, pos, conf, reps = np.concatenate(mus), np.array(pos), np.array(conf), np.array(reps)
    replicated = np.repeat(np.arange(len(mu)), reps)
    expected = plain_vector(mu[replicated], pos[replicated])
    np.testing.assert_allclose(balanced_vector(mu, pos, conf), expected, rtol=1e-10, atol=1e-12)


def test_thresholds_per_kind_and_constant_labels_skipped():
    rng = np.random.default_rng(2)
    n = 600
    z = rng.normal(size=(n, 4))
    size = rng.uniform(0, 10, n)                     # continuous: median split
    shape = rng.integers(0, 3, n).astype(float)      # categorical 0/1/2: most balanced cut
    colour = np.zeros(n)                             # constant: skipped
    labels = np.stack([size, shape, colour], 1)
    doc = attribute_vectors(z, labels, ["size", "shape", "color"], ["continuous", "categorical", "categorical"])
    assert doc["attributes"]["size"]["threshold"] == pytest.approx(np.median(size))
    assert doc["attributes"]["shape"]["threshold"] in (0.5, 1.5)
    assert abs(doc["attributes"]["size"]["n_pos"] - n / 2) <= 1
    assert "color" not in doc["attributes"] and "color" in doc["skipped"]
    assert choose_threshold(np.array([0.0, 1.0, 1.0]), "binary") == 0.5
    assert choose_threshold(np.array([2.0, 2.0]), "continuous") is None
    # Median tied with the maximum: fall back to a cut that leaves both sides non-empty.
    assert choose_threshold(np.array([0.0, 1.0, 1.0, 1.0]), "continuous") == 0.5


def test_single_label_has_no_confounder_and_document_is_json(tmp_path):
    z, labels, names, kinds = leaky_latents(n=500)
    doc = attribute_vectors(z, labels[:, :1], names[:1], kinds[:1])
    corrected = doc["attributes"]["smile"]["corrected"]
    assert corrected["confounder"] is None and corrected["vector"] == doc["attributes"]["smile"]["vector"]
    path = tmp_path / ATTRIBUTES_FILE
    save_attributes(str(tmp_path), doc)
    assert json.loads(path.read_text()) == json.loads(json.dumps(doc))
