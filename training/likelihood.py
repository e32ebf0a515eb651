"""Held-out likelihood estimates: ELBO, importance-weighted NLL (Burda et al. 2015), bits/dim.

Everything here talks to the `LatentModel` interface only (encode / decode / config.likelihood), so
the same code scores every model of the VAE family and the tiny exact models of the tests.

Conventions (docs/run-format.md, "metrics.json"):
- log p(x|z) is the full log-density, normalising constants included: Bernoulli log-likelihood of the
  pixel values (the binarised-MNIST convention, also applied to grey levels) or the Gaussian density
  N(x; decoder mean, gaussian_std²) per pixel. Summed over pixels, in nats.
- The prior is N(0, I) unless the model defines `log_prior(z) -> (B,)`.
- bits/dim (continuous data only): the Gaussian density lives on [0, 1]^D; on the 8-bit scale
  [0, 256)^D the density is 256^-D times smaller, so NLL_256 = NLL + D ln 256 and
  bits/dim = (NLL + D ln 256) / (D ln 2). The data are not dequantised, so this is the usual
  continuous-density approximation, not a discrete likelihood.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)
# Active-unit threshold on Cov_x(E[z|x]) (Burda et al. 2015).
ACTIVE_UNIT_THRESHOLD = 0.01


def log_px_given_z(model, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """log p(x | z) per image (B,), summed over pixels, for decoder outputs `params`."""
    cfg = model.config
    if cfg.likelihood == "bernoulli":
        ll = -F.binary_cross_entropy_with_logits(params, x, reduction="none")
    elif cfg.likelihood == "gaussian":
        std = float(cfg.gaussian_std)
        ll = -0.5 * ((x - params) / std) ** 2 - math.log(std) - 0.5 * LOG_2PI
    else:
        raise ValueError(f"unknown likelihood {cfg.likelihood!r}")
    return ll.flatten(1).sum(1)


def log_normal_diag(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(exp(logvar))) summed over the last dimension."""
    return (-0.5 * (LOG_2PI + logvar + (z - mean) ** 2 * torch.exp(-logvar))).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (LOG_2PI + z ** 2)).sum(-1)


def kl_per_dim_gaussian(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per dimension, same shape as mean."""
    return 0.5 * (mean ** 2 + torch.exp(logvar) - 1.0 - logvar)


def log_prior(model, z_flat: torch.Tensor) -> torch.Tensor:
    """log p(z) per row of flattened latents; a model may define its own `log_prior`."""
    custom = getattr(model, "log_prior", None)
    if callable(custom):
        return custom(z_flat.reshape(z_flat.shape[0], *model.latent_shape))
    return log_standard_normal(z_flat)


def has_gaussian_posterior(model) -> bool:
    """True for models with a Gaussian posterior and a samplable prior (ELBO / IW-NLL are defined)."""
    return bool(getattr(model, "has_prior", True)) and getattr(model.config, "name", "") != "vqvae"


@dataclass
class BatchLikelihood:
    """Per-image results for one batch (all in nats, shape (B,))."""
    log_px: torch.Tensor             # importance-weighted estimate of log p(x) with k samples
    recon: torch.Tensor              # -E_q[log p(x|z)], averaged over the k samples
    kl: torch.Tensor                 # KL(q(z|x) || p(z)), analytic for the N(0, I) prior
    kl_per_dim: torch.Tensor         # (B, D) analytic per-dimension KL (N(0, I) prior)
    mean: torch.Tensor               # (B, D) posterior means (for active units)


@torch.no_grad()
def importance_weighted_batch(model, x: torch.Tensor, k: int,
                              generator: Optional[torch.Generator] = None,
                              max_decode: int = 2048) -> BatchLikelihood:
    """IW estimate log p(x) ≈ logsumexp_i [log p(x|z_i) + log p(z_i) − log q(z_i|x)] − log k.

    The k samples are drawn and decoded in chunks of at most `max_decode` images at a time, and the
    logsumexp is accumulated across chunks, so memory stays bounded for any k. Also returns the
    reconstruction term averaged over the same samples and the analytic KL, so ELBO = −(recon + kl).
    The estimate is a lower bound on log p(x) in expectation (its NLL an upper bound) and tightens
    as k grows.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    enc = model.encode(x)
    if enc.logvar is None:
        raise ValueError("the model has no Gaussian posterior (no logvar): likelihood is undefined")
    b = x.shape[0]
    mean = enc.mean.reshape(b, -1)
    logvar = enc.logvar.reshape(b, -1)
    std = torch.exp(0.5 * logvar)
    custom_prior = callable(getattr(model, "log_prior", None))

    chunk = max(1, max_decode // b)
    lse_parts, ll_sum, lq_minus_lp_sum = [], torch.zeros(b, dtype=torch.float64, device=x.device), \
        torch.zeros(b, dtype=torch.float64, device=x.device)
    done = 0
    while done < k:
        s = min(chunk, k - done)
        eps = torch.randn((s, b, mean.shape[1]), generator=generator, dtype=mean.dtype,
                          device=mean.device if generator is None else generator.device).to(mean.device)
        z = (mean + std * eps).reshape(s * b, -1)                      # sample-major: row = i*b + j
        params = model.decode(z.reshape(s * b, *model.latent_shape))
        x_rep = x.unsqueeze(0).expand(s, *x.shape).reshape(s * b, *x.shape[1:])
        ll = log_px_given_z(model, x_rep, params.to(x.dtype)).reshape(s, b)
        lq = log_normal_diag(z, mean.repeat(s, 1), logvar.repeat(s, 1)).reshape(s, b)
        lp = log_prior(model, z).reshape(s, b)
        log_w = (ll + lp - lq).double()
        lse_parts.append(torch.logsumexp(log_w, dim=0))
        ll_sum += ll.double().sum(0)
        lq_minus_lp_sum += (lq - lp).double().sum(0)
        done += s
    log_px = torch.logsumexp(torch.stack(lse_parts), dim=0) - math.log(k)
    kl_dims = kl_per_dim_gaussian(mean, logvar)
    # With a custom prior there is no closed form: use the Monte-Carlo KL over the same samples.
    kl = (lq_minus_lp_sum / k) if custom_prior else kl_dims.double().sum(1)
    return BatchLikelihood(log_px=log_px, recon=-ll_sum / k, kl=kl, kl_per_dim=kl_dims, mean=mean)


def iw_nll(model, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None,
           batch_size: int = 64, max_decode: int = 2048) -> float:
    """Mean importance-weighted NLL estimate (nats per image) over the images in x."""
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        res = importance_weighted_batch(model, x[start:start + batch_size], k, generator, max_decode)
        total += float(-res.log_px.sum())
    return total / x.shape[0]


def bits_per_dim(nll_nats: float, num_dims: int) -> float:
    """Bits per dimension on the 8-bit scale for a density over [0, 1]^D (see the module docstring)."""
    return (nll_nats + num_dims * math.log(256.0)) / (num_dims * math.log(2.0))


def active_units(means: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of latent dimensions whose posterior mean varies across inputs: Cov_x(E[z|x]) > threshold."""
    if means.shape[0] < 2:
        return 0
    return int((np.var(means.astype(np.float64), axis=0) > threshold).sum())


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB of a mean squared error over images in [0, data_range] (inf for a perfect match)."""
    if mse <= 0:
        return float("inf")
    return 10.0 * math.log10(data_range ** 2 / mse)


def code_counts(codes: np.ndarray, num_codes: int) -> np.ndarray:
    """(num_codes,) int64: how many code-grid positions each code is assigned to."""
    return np.bincount(np.asarray(codes, dtype=np.int64).reshape(-1), minlength=num_codes).astype(np.int64)


def codebook_usage_of_counts(counts: np.ndarray) -> dict:
    """Perplexity exp(H(p)) of the code distribution given by per-code counts and share of codes used at
    least once (the `vq` section of metrics.json)."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    p = counts / max(1, counts.sum())
    nz = p[p > 0]
    return {"perplexity": float(np.exp(-(nz * np.log(nz)).sum())),
            "codes_used": float((counts > 0).sum() / counts.size),
            "num_codes": int(counts.size)}


def codebook_usage(codes: np.ndarray, num_codes: int) -> dict:
    """Perplexity exp(H(p)) of the empirical code distribution and share of codes used at least once."""
    return codebook_usage_of_counts(code_counts(codes, num_codes))
