"""timeline.npz: how a run's latent space forms during training, drawn from its weight snapshots.

For each snapshot (train.snapshots, runfolder's snapshots/) the export records what the explorer's
Training tab shows: reconstructions of a fixed set of test images and how the latent space is used over
the exported test points. For a model with Gaussian latents that is the KL per latent dimension (as
latents.npz's kl_per_dim) and the decodings of fixed N(0, I) draws (when it has that prior); a VQ-VAE has
neither, so its timeline records the codebook use instead: how many code-grid positions each code takes,
with the perplexity and share of codes used that metrics.json's `vq` section reports. Images are uint8
thumbnails, so the file stays a few hundred KB and the explorer draws every frame without loading a model.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .encoding import encode_indices, make_thumbnails
from .errors import UserError
from .likelihood import code_counts, codebook_usage_of_counts
from .runfolder import is_vq_model, list_snapshots, load_snapshot

# Images the timeline follows: the first test images (as the training grids), and as many prior draws.
TIMELINE_IMAGES = 8


def kl_per_dim(mu: np.ndarray, logvar: Optional[np.ndarray]) -> np.ndarray:
    """Mean KL(q(z_j|x) || N(0, 1)) per dimension over the points (zeros without a posterior variance)."""
    if logvar is None:
        return np.zeros(mu.shape[1], np.float32)
    kl = 0.5 * (mu.astype(np.float64) ** 2 + np.exp(logvar) - 1.0 - logvar)
    return kl.mean(0).astype(np.float32)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] as uint8, rounded as the explorer shows them."""
    return images.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def fixed_inputs(dataset, n: int = TIMELINE_IMAGES) -> np.ndarray:
    """Dataset indices of the images followed: the first test images (training images without a test split)."""
    pool = dataset.test_indices if len(dataset.test_indices) else dataset.train_indices
    return np.asarray(pool[:n], dtype=np.int64)


def followed_images(dataset, device: str) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(dataset indices, uint8 images, model inputs in [0, 1]) of the images every snapshot reconstructs."""
    index = fixed_inputs(dataset)
    images, _ = dataset.get(index)
    return index, images, images.to(device).float().div_(255.0)


@torch.no_grad()
def timeline_arrays(run, dataset, point_index: np.ndarray, seed: int = 0, thumb_size: int = 64,
                    device: str = "cpu", batch_size: int = 256) -> dict:
    """The arrays of timeline.npz (docs/run-format.md) for the run's snapshots; point_index: the dataset
    indices the KL per dimension (a VQ-VAE: the codebook use) is measured over (the exported test points)."""
    steps = list_snapshots(run.path)
    if not steps:
        raise UserError(f"{run.path}: no weight snapshots (train with `--snapshots 10`)")
    if is_vq_model(run.model):
        return vq_timeline_arrays(run, dataset, steps, point_index, thumb_size, device, batch_size)
    index, images, inputs = followed_images(dataset, device)
    with_samples = getattr(run.model, "has_prior", True)
    generator = torch.Generator().manual_seed(int(seed))
    # Drawn once on the CPU: every snapshot decodes the same latents, whatever the device.
    z = torch.randn((TIMELINE_IMAGES, *run.model.latent_shape), generator=generator).to(device)
    split = np.ones(len(point_index), np.int8)
    kls, recons, samples = [], [], []
    for step in steps:
        model = load_snapshot(run.path, step, config=run.config, device=device)
        points = encode_indices(model, dataset, point_index, split, device, batch_size)
        kls.append(kl_per_dim(points.mu, points.logvar))
        recons.append(make_thumbnails(to_uint8(model.reconstruct(inputs)).cpu(), thumb_size))
        if with_samples:
            samples.append(make_thumbnails(to_uint8(model.decode_image(z)).cpu(), thumb_size))
    arrays = {
        "steps": np.asarray(steps, np.int64),
        "kl_per_dim": np.stack(kls).astype(np.float32),
        "index": index,
        "inputs": make_thumbnails(images, thumb_size).numpy().astype(np.uint8),
        "reconstructions": torch.stack(recons).numpy(),
        "kl_points": np.asarray([len(point_index)], np.int64),
    }
    if with_samples:
        arrays["samples"] = torch.stack(samples).numpy()
    return arrays


@torch.no_grad()
def vq_timeline_arrays(run, dataset, steps: list, code_index: np.ndarray, thumb_size: int, device: str,
                       batch_size: int) -> dict:
    """A VQ-VAE's timeline: per snapshot the codebook use over the points of code_index (code counts,
    perplexity, share of codes used) and the reconstructions of the followed images. No KL (the posterior
    is a point) and no prior draws (the prior over codes is a PixelCNN trained after the model)."""
    index, images, inputs = followed_images(dataset, device)
    num_codes = int(run.model.config.num_codes)
    split = np.ones(len(code_index), np.int8)
    counts, recons = [], []
    for step in steps:
        model = load_snapshot(run.path, step, config=run.config, device=device)
        points = encode_indices(model, dataset, code_index, split, device, batch_size)
        counts.append(code_counts(points.codes, num_codes))
        recons.append(make_thumbnails(to_uint8(model.reconstruct(inputs)).cpu(), thumb_size))
    usage = [codebook_usage_of_counts(c) for c in counts]
    return {
        "steps": np.asarray(steps, np.int64),
        "code_counts": np.stack(counts).astype(np.int64),
        "perplexity": np.asarray([u["perplexity"] for u in usage], np.float32),
        "codes_used": np.asarray([u["codes_used"] for u in usage], np.float32),
        "code_points": np.asarray([len(code_index)], np.int64),
        "index": index,
        "inputs": make_thumbnails(images, thumb_size).numpy().astype(np.uint8),
        "reconstructions": torch.stack(recons).numpy(),
    }
