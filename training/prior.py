"""Training a PixelCNN prior over a VQ-VAE run's code grids (the network: training/models/pixelcnn.py).

A VQ-VAE has no prior to sample until one is learned over its code grids (van den Oord et al. 2017).
`train_prior` encodes the run's training split once, fits the gated PixelCNN to those code grids, scores it
in bits per code on held-out grids (beside the uniform log2 K and the codes' marginal frequencies), and
writes `prior.safetensors` and `prior.json` into the run folder (docs/run-format.md).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict

import torch

from .device import resolve_device
from .encoding import encode_split, open_dataset
from .errors import UserError
from .models.pixelcnn import GatedPixelCNN, PriorConfig
from .runfolder import PRIOR_FORMAT_VERSION, is_vq_model, load_run, save_prior


def grid_of(model) -> tuple[int, int]:
    _, height, width = model.latent_shape
    return int(height), int(width)


@torch.no_grad()
def bits_per_code(prior: GatedPixelCNN, codes: torch.Tensor, batch_size: int = 256) -> float:
    """Mean −log2 p(code) over every position of the given grids (the held-out score of prior.json)."""
    was_training = prior.training
    prior.eval()
    total, count = 0.0, 0
    for start in range(0, codes.shape[0], batch_size):
        batch = codes[start:start + batch_size].to(prior.device)
        total += float(prior.nll_per_code(batch)) * batch.numel()
        count += batch.numel()
    prior.train(was_training)
    return total / max(1, count) / math.log(2.0)


def marginal_bits_per_code(train_codes: torch.Tensor, test_codes: torch.Tensor, num_codes: int) -> float:
    """Baseline without context: cross-entropy (bits) of the test codes under the training codes'
    frequencies (add-one smoothed). A prior that beats it uses the spatial context, not just usage."""
    counts = torch.bincount(train_codes.reshape(-1), minlength=num_codes).double() + 1.0
    log_p = torch.log2(counts / counts.sum())
    return float(-log_p[test_codes.reshape(-1)].mean())


def fit_prior(prior: GatedPixelCNN, train_codes: torch.Tensor, steps: int, batch_size: int, lr: float,
              seed: int = 0, log_every: int = 0, verbose: bool = False) -> list:
    """Adam on −log p(codes) over random batches of the training grids; returns the losses logged every
    `log_every` steps (printed too when verbose)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(prior.parameters(), lr=lr)
    prior.train()
    history = []
    for step in range(1, steps + 1):
        batch = train_codes[torch.randint(0, train_codes.shape[0], (batch_size,), generator=generator)]
        loss = prior.nll_per_code(batch.to(prior.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        optimizer.step()
        if log_every and (step % log_every == 0 or step == steps):
            bits = float(loss.detach()) / math.log(2.0)
            history.append({"step": step, "bits_per_code": bits})
            if verbose:
                print(f"prior step {step}/{steps}: {bits:.3f} bits/code", flush=True)
    prior.eval()
    return history


def train_prior(run_dir: str, steps: int = 2000, batch_size: int = 64, lr: float = 1e-3, layers: int = 8,
                channels: int = 64, kernel_size: int = 3, n_train: int = 50_000, n_test: int = 2_000,
                seed: int = 0, device: str = "auto", progress: bool = True) -> dict:
    """Train a gated PixelCNN on the code grids of a VQ-VAE run's training split; write prior.*.

    Codes are computed once for up to `n_train` training images (seeded choice) and `n_test` test
    images; the held-out score is bits per code on the test codes, next to the uniform baseline log2 K.
    Returns the prior.json summary.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("n_train", n_train), ("n_test", n_test)):
        if value < 1:
            raise UserError(f"train-prior: {name} must be >= 1, not {value}")
    if lr <= 0:
        raise UserError(f"train-prior: lr must be > 0, not {lr}")
    device = str(resolve_device(device))
    run = load_run(run_dir, device=device)
    if not is_vq_model(run.model):
        raise UserError(f"{run_dir}: train-prior needs a VQ-VAE run, this is a {run.config.model.name!r} run "
                        "(only a VQ-VAE needs a learned prior over its code grid)")
    dataset = open_dataset(run)
    started = time.time()
    torch.manual_seed(seed)
    train_codes = encode_split(run.model, dataset, "train", n_train, seed, device).codes
    test_codes = encode_split(run.model, dataset, "test", n_test, seed, device).codes
    if test_codes is None or train_codes is None:
        raise UserError(f"{run_dir}: the model returned no code indices")
    height, width = grid_of(run.model)
    cfg = PriorConfig(num_codes=int(run.config.model.num_codes), height=height, width=width,
                      layers=layers, channels=channels, kernel_size=kernel_size)
    prior = GatedPixelCNN(cfg).to(device)
    train_codes, test_codes = torch.from_numpy(train_codes).long(), torch.from_numpy(test_codes).long()
    history = fit_prior(prior, train_codes, steps, batch_size, lr, seed, log_every=max(1, steps // 10),
                        verbose=progress)
    summary = {
        "format_version": PRIOR_FORMAT_VERSION,
        "config": asdict(cfg),
        "bits_per_code": bits_per_code(prior, test_codes),
        "train_bits_per_code": bits_per_code(prior, train_codes[:n_test]),
        "uniform_bits_per_code": math.log2(cfg.num_codes),
        "marginal_bits_per_code": marginal_bits_per_code(train_codes, test_codes, cfg.num_codes),
        "model_step": run.step,
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                  "n_train_codes": int(train_codes.shape[0]), "n_test_codes": int(test_codes.shape[0]),
                  "seconds": round(time.time() - started, 2), "device": device},
        "history": history,
    }
    save_prior(run_dir, prior, summary)
    run.model.attach_prior(prior)
    return summary
