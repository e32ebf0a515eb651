"""Prior-sample quality as one number: the share of decoded N(0, I) draws that a digit classifier reads
with confidence.

A small CNN is trained (fixed seed) on the run's training images with their class labels, at grey level
(the digits as people see them, whatever binarisation the generative model was trained on); its accuracy
on the held-out images says how far to trust it. Then `n_samples` latents z ~ N(0, I) (fixed seed) are
decoded to images (Bernoulli means / Gaussian means) and the classifier's top softmax probability read:
the share at or above `threshold` is the score. A VAE, whose codes were pulled towards N(0, I), decodes
most draws into something digit-like; an autoencoder, whose codes fill an arbitrary region, decodes many
draws into blends and smudges that the classifier cannot place. The score is the same whatever the model
family, so it compares an AE with a VAE directly; it does not judge diversity (see `class_counts`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError

THRESHOLD = 0.9
N_SAMPLES = 1000
EPOCHS = 4
BATCH_SIZE = 128


class DigitClassifier(nn.Module):
    """Two conv layers and a linear read-out: about 99 % on MNIST after a few epochs, trains in about a
    minute on one CPU core."""

    def __init__(self, channels: int, image_size: int, n_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * (image_size // 4) ** 2, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, n_classes: int, seed: int = 0,
                     epochs: int = EPOCHS, batch_size: int = BATCH_SIZE) -> DigitClassifier:
    """A DigitClassifier fitted to float images (N, C, H, W) in [0, 1] and integer labels (N,)."""
    generator = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))   # the layers' initial weights, without moving the caller's RNG
        classifier = DigitClassifier(int(images.shape[1]), int(images.shape[-1]), n_classes)
    optimiser = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    classifier.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            batch = order[start:start + batch_size]
            loss = F.cross_entropy(classifier(images[batch]), labels[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    classifier.eval()
    return classifier


@torch.no_grad()
def probabilities(classifier: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Softmax class probabilities (N, n_classes) of float images in [0, 1]."""
    parts = [F.softmax(classifier(images[s:s + batch_size].float()), dim=1) for s in range(0, len(images), batch_size)]
    return torch.cat(parts)


def confidence_summary(probs: torch.Tensor, threshold: float = THRESHOLD) -> dict:
    """Share of images whose top probability is >= threshold, the mean top probability, and how many
    confident images each class got."""
    top, label = probs.max(dim=1)
    confident = top >= threshold
    counts = torch.bincount(label[confident], minlength=probs.shape[1])
    return {"confident_share": float(confident.float().mean()), "mean_confidence": float(top.mean()),
            "class_counts": [int(c) for c in counts]}


def grey_images(dataset, indices: np.ndarray) -> torch.Tensor:
    """Float grey-level images of the dataset (the unbinarised pixels of a binarised dataset)."""
    grey = getattr(dataset, "grey", None)
    if grey is None:
        return dataset.get_float(indices)[0]
    return grey.index_select(0, torch.from_numpy(np.asarray(indices, np.int64))).float().div_(255.0)


def class_labels(dataset, indices: np.ndarray) -> torch.Tensor:
    """The dataset's first label as class numbers; UserError for a dataset without a categorical label."""
    kinds = list(getattr(dataset, "label_kinds", []))
    if not kinds or kinds[0] != "categorical":
        raise UserError(f"sample quality needs a dataset whose first label is a class (mnist, fashion-mnist); "
                        f"{dataset.name!r} has {kinds[0] if kinds else 'no'} labels")
    return dataset.get(indices)[1][:, 0].long()


@torch.no_grad()
def decoded_prior_samples(model, n: int, seed: int, device: str = "cpu") -> torch.Tensor:
    """n draws z ~ N(0, I) (a CPU generator, so the draws do not depend on the device) decoded to images."""
    generator = torch.Generator().manual_seed(int(seed))
    z = torch.randn((n, *model.latent_shape), generator=generator).to(device)
    return torch.cat([model.decode_image(z[s:s + 250]).float().cpu() for s in range(0, n, 250)])


def sample_quality(model, dataset, n_samples: int = N_SAMPLES, seed: int = 0, classifier_seed: int = 0,
                   threshold: float = THRESHOLD, epochs: int = EPOCHS, device: str = "cpu") -> dict:
    """The metrics.json `sample_quality` entry of a model with an N(0, I)-shaped latent space (VAE family
    and autoencoders) on a labelled dataset; UserError for a VQ-VAE or an unlabelled dataset."""
    if getattr(model.config, "name", "") == "vqvae":
        raise UserError("sample quality decodes z ~ N(0, I); a VQ-VAE's codes are not drawn that way")
    if n_samples < 1:
        raise UserError(f"sample quality needs at least 1 sample, not {n_samples}")
    train_index = np.asarray(dataset.train_indices, np.int64)
    test_index = np.asarray(dataset.test_indices, np.int64)
    if len(test_index) == 0:
        raise UserError("sample quality needs a test split to report the classifier's accuracy")
    train_labels = class_labels(dataset, train_index)
    n_classes = int(max(train_labels.max(), class_labels(dataset, test_index).max())) + 1
    classifier = train_classifier(grey_images(dataset, train_index), train_labels, n_classes, classifier_seed, epochs)
    test_probs = probabilities(classifier, grey_images(dataset, test_index))
    accuracy = float((test_probs.argmax(1) == class_labels(dataset, test_index)).float().mean())
    samples = decoded_prior_samples(model, n_samples, seed, device)
    out = confidence_summary(probabilities(classifier, samples), threshold)
    out.update(threshold=float(threshold), n_samples=int(n_samples), seed=int(seed),
               test_confident_share=confidence_summary(test_probs, threshold)["confident_share"],
               classifier={"accuracy": accuracy, "seed": int(classifier_seed), "epochs": int(epochs),
                           "train_images": int(len(train_index)), "test_images": int(len(test_index)),
                           "pixels": "grey levels", "architecture": "conv16-pool-conv32-pool-linear"})
    return out
