"""Likelihoods, KL terms and the VAE-family objectives.

One convention everywhere (see training/models/base.py): every term is summed over
pixels and latent dimensions and averaged over the batch, in nats. β therefore means
the same thing at every resolution and batch size; there is no hidden `kld_weight`
rescaling (mean-over-pixels losses silently change β by 10²–10⁴).

All functions compute in float32 (or float64 when given it), whatever the autocast dtype of their inputs.

Notation: x an image with D pixels, B the batch size, L the latent size, N the dataset
size, q(z|x) = N(μ, diag σ²) the encoder, p(z) = N(0, I) the prior.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .config import AnnealedVAEConfig, BetaVAEConfig, BTCVAEConfig, ModelConfig
from .errors import UserError

LOG_2PI = math.log(2.0 * math.pi)
FULL_PRECISION = (torch.float32, torch.float64)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """Upcast half-precision (autocast) tensors to float32; keep float32/float64 as they are."""
    return t if t.dtype in FULL_PRECISION else t.float()


# ---- likelihoods -------------------------------------------------------------------------------------------
def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """−log p(x | logits) for Bernoulli pixels, summed over pixels, mean over batch (nats).

    Per pixel: −[x log σ(l) + (1 − x) log(1 − σ(l))] = softplus(l) − x·l, computed stably by
    `binary_cross_entropy_with_logits`. x may hold grey levels in [0, 1]; the value is then the
    cross-entropy, not a normalised density of continuous data.
    """
    return F.binary_cross_entropy_with_logits(full_precision(logits), full_precision(x), reduction="sum") / x.shape[0]


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, std: float) -> torch.Tensor:
    """−log N(x; mean, std² I), summed over pixels, mean over batch (nats), normaliser included.

    Per pixel: (x − m)² / (2 std²) + log std + ½ log 2π. With std fixed, the constant
    D·(log std + ½ log 2π) does not change gradients, but keeps the value a true NLL.
    """
    per_image_pixels = x[0].numel()
    squared = F.mse_loss(full_precision(mean), full_precision(x), reduction="sum") / x.shape[0]
    return squared / (2.0 * std * std) + per_image_pixels * (math.log(std) + 0.5 * LOG_2PI)


def reconstruction_nll(params: torch.Tensor, x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The decoder's NLL of x under cfg.likelihood (params: logits or means)."""
    if cfg.likelihood == "bernoulli":
        return bernoulli_nll(params, x)
    return gaussian_nll(params, x, cfg.gaussian_std)


# ---- Gaussian latents --------------------------------------------------------------------------------------
def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per dimension, same shape as mu (nats).

    KL_j = ½ (μ_j² + σ_j² − 1 − log σ_j²). Sum over dims and mean over the batch for the loss
    (`kl_divergence`).
    """
    mu, logvar = full_precision(mu), full_precision(logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Σ_j KL_j averaged over the batch (nats per image)."""
    return gaussian_kl(mu, logvar).sum(dim=1).mean()


def log_density_gaussian(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(x; μ, exp(logvar)) = −½ [log 2π + logvar + (x − μ)² / exp(logvar)].

    Broadcasts, so log_density_gaussian(z[:, None], mu[None], logvar[None]) gives the (B, B, L)
    matrix [i, j, l] = log q(z_il | x_j) that the β-TCVAE estimators need.
    """
    x, mu, logvar = full_precision(x), full_precision(torch.as_tensor(mu)), full_precision(torch.as_tensor(logvar))
    return -0.5 * (LOG_2PI + logvar + (x - mu).pow(2) * torch.exp(-logvar))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: Optional[torch.Tensor] = None) -> torch.Tensor:
    """z = μ + σ·ε, ε ~ N(0, I) (drawn here unless given: data-parallel training supplies its shard of the
    global batch's noise, see training/distributed.py)."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + eps * torch.exp(0.5 * logvar)


# ---- β-TCVAE decomposition (Chen et al. 2018) ---------------------------------------------------------------
@dataclass
class TCTerms:
    """KL decomposition, each term summed over latent dims and averaged over the batch (nats).

    mi   = E[log q(z|x) − log q(z)]            index-code mutual information
    tc   = E[log q(z) − Σ_j log q(z_j)]        total correlation
    dwkl = E[Σ_j log q(z_j) − log p(z)]        dimension-wise KL
    mi + tc + dwkl = E[log q(z|x) − log p(z)], a one-sample estimate of the KL.
    """
    mi: torch.Tensor
    tc: torch.Tensor
    dwkl: torch.Tensor


def log_weights_mws(batch_size: int, dataset_size: int) -> torch.Tensor:
    """(B, B) log weights of minibatch weighted sampling: every w_ij = 1 / (N·B).

    q(z_i) ≈ 1/(N·B) Σ_j q(z_i | x_j)   (Chen et al. 2018). As in the paper, the
    weights sum to 1/N, not 1: the estimator is biased, which is what MSS fixes.
    """
    return torch.full((batch_size, batch_size), -math.log(dataset_size * batch_size), dtype=torch.float64)


def log_weights_mss(batch_size: int, dataset_size: int) -> torch.Tensor:
    """(B, B) log weights of minibatch stratified sampling (Chen et al. 2018, appendix).

    With M = B − 1 other samples in the batch, row i weights
      its own sample x_i:               w_ii = 1/N        (z_i was drawn from q(z|x_i))
      one stratum sample, j = i+1 mod B: (N − M) / (N·M)
      the other M − 1 samples:           1/M
    Each row sums to 1/N + (M−1)/M + (N−M)/(N·M) = 1. (The published reference code indexes
    the self and stratum entries by column instead of along the diagonals; this follows the
    paper's definition.)
    """
    n, m = dataset_size, batch_size - 1
    w = torch.full((batch_size, batch_size), 1.0 / m, dtype=torch.float64)
    rows = torch.arange(batch_size)
    w[rows, (rows + 1) % batch_size] = (n - m) / (n * m)
    w[rows, rows] = 1.0 / n
    return w.log()


def tc_decomposition(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int,
                     estimator: str = "mws") -> TCTerms:
    """Split the KL into MI + TC + dimension-wise KL using the minibatch (z ~ q(z|x) sampled per row).

    log q(z_i)        ≈ logsumexp_j [log w_ij + Σ_l log q(z_il | x_j)]
    Σ_l log q(z_il)   ≈ Σ_l logsumexp_j [log w_ij + log q(z_il | x_j)]
    with w from `log_weights_mws` or `log_weights_mss`.
    """
    if dataset_size <= 0:
        raise UserError("btcvae needs the training set size (model.dataset_size, set by the trainer) "
                        "to estimate log q(z); it is 0")
    batch = z.shape[0]
    if estimator == "mss" and batch < 2:
        raise UserError("btcvae with tc_estimator 'mss' needs a batch of at least 2 images")
    z, mu, logvar = full_precision(z), full_precision(mu), full_precision(logvar)
    pairwise = log_density_gaussian(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # (B, B, L)
    weights = log_weights_mss if estimator == "mss" else log_weights_mws
    log_w = weights(batch, dataset_size).to(device=z.device, dtype=z.dtype)
    log_qz = torch.logsumexp(log_w + pairwise.sum(dim=2), dim=1)
    log_prod_qzj = torch.logsumexp(log_w.unsqueeze(2) + pairwise, dim=1).sum(dim=1)
    log_qz_given_x = log_density_gaussian(z, mu, logvar).sum(dim=1)
    log_pz = log_density_gaussian(z, z.new_zeros(()), z.new_zeros(())).sum(dim=1)
    return TCTerms(mi=(log_qz_given_x - log_qz).mean(),
                   tc=(log_qz - log_prod_qzj).mean(),
                   dwkl=(log_prod_qzj - log_pz).mean())


# ---- objectives --------------------------------------------------------------------------------------------
# An objective maps (recon NLL, closed-form KL, μ, logvar, z, config, step) to (loss, extra terms).
# The model computes "recon" and "kl" once (both are logged); objectives only add what differs.
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, ModelConfig, int],
                     tuple[torch.Tensor, dict]]


def elbo_objective(recon, kl, mu, logvar, z, cfg, step):
    """Negative ELBO: recon + KL."""
    return recon + kl, {}


def warmup_weight(cfg: BetaVAEConfig, step: int) -> float:
    """The regulariser's weight at `step`: linear from 0 to 1 over the first warmup_steps steps, then 1."""
    if cfg.warmup_steps <= 0:
        return 1.0
    return min(1.0, max(step, 0) / cfg.warmup_steps)


def _with_warmup(cfg: BetaVAEConfig, step: int, extra: dict) -> tuple[float, dict]:
    """The warm-up weight, and the logged terms with it added while a warm-up is configured."""
    weight = warmup_weight(cfg, step)
    return weight, ({**extra, "warmup": weight} if cfg.warmup_steps > 0 else extra)


def beta_objective(recon, kl, mu, logvar, z, cfg: BetaVAEConfig, step):
    """β-VAE (Higgins et al. 2017): recon + w(step)·β·KL, w the warm-up weight (1 without one)."""
    weight, extra = _with_warmup(cfg, step, {})
    return recon + weight * cfg.beta * kl, extra


def capacity(cfg: AnnealedVAEConfig, step: int) -> float:
    """C(step): linear from 0 to c_max over the first c_steps steps, then c_max."""
    if cfg.c_steps <= 0:
        return float(cfg.c_max)
    return float(cfg.c_max) * min(1.0, max(step, 0) / cfg.c_steps)


def annealed_objective(recon, kl, mu, logvar, z, cfg: AnnealedVAEConfig, step):
    """Capacity-annealed β-VAE (Burgess et al. 2018): recon + γ·|KL − C(step)|."""
    c = capacity(cfg, step)
    loss = recon + cfg.gamma * (kl - c).abs()
    return loss, {"capacity": c}


def btcvae_objective(recon, kl, mu, logvar, z, cfg: BTCVAEConfig, step):
    """β-TCVAE (Chen et al. 2018): recon + w(step)·(α·MI + β·TC + γ·dimension-wise KL), w the warm-up weight."""
    t = tc_decomposition(z, mu, logvar, cfg.dataset_size, cfg.tc_estimator)
    weight, extra = _with_warmup(cfg, step, {"mi": t.mi.detach(), "tc": t.tc.detach(), "dwkl": t.dwkl.detach()})
    loss = recon + weight * (cfg.alpha * t.mi + cfg.beta * t.tc + cfg.tc_gamma * t.dwkl)
    return loss, extra


OBJECTIVES: dict[str, Objective] = {
    "elbo": elbo_objective,
    "beta": beta_objective,
    "annealed": annealed_objective,
    "btcvae": btcvae_objective,
}
