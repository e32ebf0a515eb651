"""Prior-sample quality (training/sample_quality.py) and what evaluate records with it: the classifier
reads real held-out digits with confidence and noise without; a binarised run's metrics.json says how its
images were binarised and scores its decoded N(0, I) draws."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from helpers_eval import SHARED_DATA, tiny_run
from training.config import DataConfig, RunConfig, TrainConfig, model_config
from training.data import load_dataset
from training.errors import UserError
from training.evaluate import evaluate_run
from training.runfolder import Metrics
from training.sample_quality import (class_labels, confidence_summary, grey_images, probabilities,
                                     train_classifier)
from training.trainer import train


@pytest.fixture(scope="module")
def mnist():
    return load_dataset(DataConfig(name="mnist", data_dir=SHARED_DATA, test_fraction=0.1))


@pytest.fixture(scope="module")
def classifier(mnist):
    index = np.asarray(mnist.train_indices[:3000])
    return train_classifier(grey_images(mnist, index), class_labels(mnist, index), 10, seed=0, epochs=3, batch_size=64)


def test_real_digits_score_high_and_noise_low(mnist, classifier):
    test = np.asarray(mnist.test_indices)
    probs = probabilities(classifier, grey_images(mnist, test))
    accuracy = float((probs.argmax(1) == class_labels(mnist, test)).float().mean())
    real = confidence_summary(probs)
    generator = torch.Generator().manual_seed(0)
    noise = confidence_summary(probabilities(classifier, torch.rand((500, 1, 28, 28), generator=generator)))
    blank = confidence_summary(probabilities(classifier, torch.zeros((20, 1, 28, 28))))
    assert accuracy > 0.85
    assert real["confident_share"] > 0.6 and sum(real["class_counts"]) == round(real["confident_share"] * len(test))
    assert noise["confident_share"] < 0.1 and blank["confident_share"] < 0.1
    assert real["mean_confidence"] > noise["mean_confidence"]


def test_confidence_summary_on_known_probabilities():
    probs = torch.tensor([[0.95, 0.05], [0.5, 0.5], [0.1, 0.9], [0.2, 0.8]])
    summary = confidence_summary(probs, threshold=0.9)
    assert summary["confident_share"] == 0.5 and summary["class_counts"] == [1, 1]
    assert summary["mean_confidence"] == pytest.approx((0.95 + 0.5 + 0.9 + 0.8) / 4)


def test_a_dataset_without_class_labels_is_a_one_line_error():
    smileys = load_dataset(DataConfig(name="smileys", subset=100))    # first label: smile, a continuous one
    with pytest.raises(UserError, match="needs a dataset whose first label is a class"):
        class_labels(smileys, np.asarray(smileys.test_indices[:4]))


@pytest.fixture(scope="module")
def binarised_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("binarised") / "vae")
    config = RunConfig(data=DataConfig(name="mnist", data_dir=SHARED_DATA, subset=1000, options={"binarize": "dynamic"}),
                       model=model_config(name="vae", hidden=[8, 16], fc_dim=32, latent_dim=4),
                       train=TrainConfig(steps=30, batch_size=32, lr=2e-3, device="cpu", seed=1, amp=False,
                                         log_every=10, sample_every=30, checkpoint_every=30, grid_n=16))
    train(config, path, progress=False)
    return path, evaluate_run(path, k=4, n_test=100, seed=0, sample_quality=True)


def test_evaluate_records_binarisation_and_sample_quality(binarised_run):
    path, result = binarised_run
    with open(os.path.join(path, "metrics.json"), encoding="utf-8") as f:
        assert json.load(f) == result
    metrics = Metrics(result)
    assert metrics.binarize == "dynamic" and metrics.score("binarize_seed") == 0
    assert metrics.score("n_train") == 1000 and metrics.score("iw_k") == 4
    quality = result["sample_quality"]
    assert quality["n_samples"] == 1000 and quality["threshold"] == 0.9 and quality["seed"] == 0
    assert quality["classifier"]["train_images"] == 1000 and quality["classifier"]["test_images"] == 1000
    assert 0 <= metrics.score("sample_confident_share") <= 1
    assert sum(quality["class_counts"]) == round(quality["confident_share"] * 1000)
    # Four epochs on 1,000 images: far better than chance (the real-against-noise test above uses more).
    assert metrics.score("sample_classifier_accuracy") > 0.5
    assert 0 <= quality["test_confident_share"] <= 1


def test_evaluation_of_a_grey_level_run_says_so():
    result = evaluate_run(tiny_run("vae-mnist"), k=2, n_test=20, write=False)
    assert Metrics(result).binarize == "none" and Metrics(result).score("binarize_seed") is None
    assert "sample_quality" not in result
