"""`export`: latents.npz / attributes.json exactly as docs/run-format.md says, kNN map placement, bad input."""
import json
import os
import shutil
import time

import numpy as np
import pytest
import torch

from helpers_eval import assert_one_line_user_error, copy_run, python_m_training
from training.config import DataConfig, RunConfig, TrainConfig, model_config
from training.encoding import choose_indices, make_thumbnails
from training.export import export_run
from training.latent_map import place_on_map
from training.runfolder import ATTRIBUTES_FILE, LATENTS_FILE, load_latents, load_run


# ---- place_on_map ----------------------------------------------------------------------------------------------
def brute_force_idw(table, xy, query, k):
    out = []
    for q in query:
        d = np.sqrt(((table - q) ** 2).sum(1))
        nearest = np.argsort(d)[:k]
        if d[nearest[0]] == 0:
            out.append(xy[nearest[0]])
            continue
        w = 1.0 / d[nearest]
        out.append((w[:, None] * xy[nearest]).sum(0) / w.sum())
    return np.array(out)


def test_place_on_map_matches_a_brute_force_idw_and_is_fast():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(10_000, 10)).astype(np.float32)
    xy = rng.normal(size=(10_000, 2)).astype(np.float32)
    query = rng.normal(size=(50, 10))
    np.testing.assert_allclose(place_on_map(table, xy, query, k=8),
                               brute_force_idw(table.astype(np.float64), xy, query, 8), rtol=1e-5, atol=1e-5)
    place_on_map(table, xy, query[:1])
    started = time.perf_counter()
    for _ in range(5):
        single = place_on_map(table, xy, query[0])
    seconds = (time.perf_counter() - started) / 5
    assert single.shape == (2,) and seconds < 0.05, f"{seconds * 1000:.1f} ms per placement"


def test_place_on_map_known_cases():
    table = np.array([[0.0, 0.0], [10.0, 0.0], [100.0, 100.0]])
    xy = np.array([[1.0, 1.0], [3.0, 1.0], [50.0, 50.0]])
    # An exported point lands exactly on its own xy.
    np.testing.assert_allclose(place_on_map(table, xy, table, k=2), xy)
    # Midway between two points with k = 2: the mean of their xy.
    np.testing.assert_allclose(place_on_map(table, xy, np.array([5.0, 0.0]), k=2), [2.0, 1.0], atol=1e-6)
    # A quarter of the way: weights 1/2.5 and 1/7.5 -> 3:1.
    np.testing.assert_allclose(place_on_map(table, xy, np.array([2.5, 0.0]), k=2), [1.5, 1.0], atol=1e-6)
    # k larger than the table uses every point.
    assert place_on_map(table, xy, np.array([5.0, 0.0]), k=50).shape == (2,)


# ---- export of real tiny runs --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported_vae(tmp_path_factory):
    path = copy_run("vae-mnist", str(tmp_path_factory.mktemp("export") / "vae"))
    # The tiny MNIST run holds out 1,000 test images: 1,200 points = all of them, then 200 training ones.
    summary = export_run(path, n=1200, split="both", umap_neighbors=10, umap_min_dist=0.2, seed=3, thumb_size=64)
    return path, summary


def test_latents_npz_has_exactly_the_documented_arrays(exported_vae):
    path, summary = exported_vae
    with np.load(os.path.join(path, LATENTS_FILE), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    n, d = 1200, 4
    expected = {"index": ((n,), np.int64), "split": ((n,), np.int8), "mu": ((n, d), np.float32),
                "logvar": ((n, d), np.float32), "label_names": ((1,), None), "label_kinds": ((1,), None),
                "labels": ((n, 1), np.float32), "thumbs": ((n, 1, 28, 28), np.uint8), "xy": ((n, 2), np.float32),
                "kl_per_dim": ((d,), np.float32), "umap_params": ((4,), np.float32)}
    assert set(arrays) == set(expected)          # no "codes" for a VAE
    for key, (shape, dtype) in expected.items():
        assert arrays[key].shape == shape, key
        if dtype is not None:
            assert arrays[key].dtype == dtype, key
    assert arrays["label_names"].dtype.kind == "U" and list(arrays["label_kinds"]) == ["categorical"]
    # Test split first (all 1,000 test images), then training images.
    assert (arrays["split"][:1000] == 1).all() and (arrays["split"][1000:] == 0).all()
    assert summary["n_test"] == 1000 and summary["n_train"] == 200
    assert len(np.unique(arrays["index"])) == n
    np.testing.assert_allclose(arrays["umap_params"], [10, 0.2, 3, n])
    assert np.isfinite(arrays["xy"]).all() and arrays["xy"].std(0).min() > 0
    # The arrays are what the model and dataset give for those indices.
    run = load_run(path)
    from training.data import load_dataset
    dataset = load_dataset(run.config.data)
    images, labels = dataset.get(arrays["index"][:5])
    with torch.no_grad():
        enc = run.model.encode(images.float() / 255)
    np.testing.assert_allclose(arrays["mu"][:5], enc.mean.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(arrays["logvar"][:5], enc.logvar.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(arrays["thumbs"][:5], images.numpy())
    np.testing.assert_array_equal(arrays["labels"][:5], labels.numpy())
    kl = 0.5 * (arrays["mu"] ** 2 + np.exp(arrays["logvar"]) - 1 - arrays["logvar"])
    np.testing.assert_allclose(arrays["kl_per_dim"], kl.mean(0), rtol=1e-4)


def test_map_keeps_neighbours_close(exported_vae):
    # UMAP preserves local structure: a point's nearest neighbour in mu is near it on the map too.
    path, _ = exported_vae
    arrays = load_latents(path)
    mu, xy = arrays["mu"].astype(np.float64), arrays["xy"].astype(np.float64)
    d_mu = ((mu[:300, None] - mu[None]) ** 2).sum(-1)
    np.fill_diagonal(d_mu[:, :300], np.inf)
    nn_xy = np.sqrt(((xy[:300] - xy[d_mu.argmin(1)]) ** 2).sum(1))
    random_xy = np.sqrt(((xy[:300] - xy[np.random.default_rng(0).permutation(len(xy))[:300]]) ** 2).sum(1))
    assert np.median(nn_xy) < 0.25 * np.median(random_xy)


def test_attributes_json_for_the_digit_label(exported_vae):
    path, _ = exported_vae
    doc = json.loads(open(os.path.join(path, ATTRIBUTES_FILE)).read())
    assert doc["format_version"] == 1
    digit = doc["attributes"]["digit"]
    assert digit["kind"] == "categorical" and 0 <= digit["threshold"] <= 9
    assert len(digit["vector"]) == 4 and digit["n_pos"] + digit["n_neg"] == 1200
    # (Whether "digit > threshold" is linear in a 60-step model's latents is not this test's business: the
    # vectors' quality is tested on known latents in test_attributes.py.)
    assert 0.0 <= digit["auc"] <= 1.0
    assert digit["corrected"]["confounder"] is None      # a single label has nothing to be confounded with


def test_vq_export_has_codes_and_zero_logvar(tmp_path):
    path = copy_run("vq-mnist", str(tmp_path / "vq"))
    export_run(path, n=200, split="test", umap_neighbors=5, seed=0, thumb_size=14)
    arrays = load_latents(path)
    assert arrays["codes"].shape == (200, 7, 7) and arrays["codes"].dtype == np.int16
    assert arrays["mu"].shape == (200, 4 * 7 * 7)
    assert not arrays["logvar"].any() and not arrays["kl_per_dim"].any()
    assert arrays["thumbs"].shape == (200, 1, 14, 14) and arrays["thumbs"].dtype == np.uint8
    assert (arrays["split"] == 1).all()


def test_thumbnails_average_areas_and_never_upscale():
    images = torch.zeros((1, 1, 4, 4), dtype=torch.uint8)
    images[0, 0, :2, :2] = 200
    assert torch.equal(make_thumbnails(images, 2)[0, 0], torch.tensor([[200, 0], [0, 0]], dtype=torch.uint8))
    assert make_thumbnails(images, 64).shape == (1, 1, 4, 4)


def test_choose_indices_is_seeded_and_test_first():
    class Split:
        name = "toy"
        train_indices = np.arange(0, 50)
        test_indices = np.arange(50, 60)

    index, split = choose_indices(Split, "both", 15, seed=1)
    assert list(index[:10]) == list(range(50, 60)) and (split[:10] == 1).all() and (split[10:] == 0).all()
    assert np.array_equal(index, choose_indices(Split, "both", 15, seed=1)[0])
    assert not np.array_equal(choose_indices(Split, "train", 5, 1)[0], choose_indices(Split, "train", 5, 2)[0])


# ---- bad input ------------------------------------------------------------------------------------------------
def test_export_with_a_missing_mnist_data_dir_is_a_one_line_error(tmp_path):
    path = copy_run("vae-mnist", str(tmp_path / "run"))
    config_path = os.path.join(path, "config.json")
    config = json.loads(open(config_path).read())
    config["data"]["data_dir"] = str(tmp_path / "no-such-data")
    open(config_path, "w").write(json.dumps(config))
    result = python_m_training("export", path, "--n", "50")
    assert_one_line_user_error(result, "mnist")
    assert not os.path.exists(os.path.join(path, LATENTS_FILE))


def test_export_of_a_folder_run_whose_folder_was_deleted_is_a_one_line_error(tmp_path):
    from PIL import Image

    from training.trainer import train

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = RunConfig(data=DataConfig(name=f"folder:{folder}"),
                    model=model_config(name="vae", hidden=[4, 4], fc_dim=8, latent_dim=2),
                    train=TrainConfig(steps=2, batch_size=8, device="cpu", amp=False, log_every=1, sample_every=2,
                                      checkpoint_every=2, grid_n=4))
    run_dir = str(tmp_path / "run")
    train(cfg, run_dir, progress=False)
    shutil.rmtree(folder)
    result = python_m_training("export", run_dir)
    assert_one_line_user_error(result, str(folder))
    assert not os.path.exists(os.path.join(run_dir, LATENTS_FILE))


@pytest.mark.slow
def test_dsprites_export_gives_readable_position_vectors(tmp_path):
    # A VAE learns position first: after 300 steps, "posX > median" is read off its latents almost perfectly.
    path = copy_run("vae-dsprites", str(tmp_path / "run"))
    export_run(path, n=2000, split="test", seed=0)
    arrays = load_latents(path)
    assert list(arrays["label_names"]) == ["shape", "scale", "orientation", "posX", "posY"]
    doc = json.loads(open(os.path.join(path, ATTRIBUTES_FILE)).read())
    assert sorted(doc["attributes"]) == sorted(arrays["label_names"])
    for name in ("posX", "posY"):
        entry = doc["attributes"][name]
        # 32 position classes: the most balanced cut lies between classes 14 and 17 for 2,000 points.
        assert 14 < entry["threshold"] < 17 and entry["auc"] > 0.85, (name, entry["auc"])
        assert entry["corrected"]["auc"] > 0.85
