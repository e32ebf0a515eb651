"""The VAE family (one class, pluggable objective) and the deterministic autoencoder baseline.

`vae`, `vae-mlp`, `resvae`, `beta-vae`, `annealed-vae` and `btcvae` are all `VAE`: they
differ only in the encoder/decoder family (`arch`) and in the objective the registry
picks (training/losses.py OBJECTIVES). `ae` is `Autoencoder`: one code head instead of
μ/logvar heads, reconstruction loss only.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..distributed import gather_batch, global_mean, noise_like
from ..losses import OBJECTIVES, kl_divergence, reconstruction_nll, reparameterize
from .base import Encoding, LatentModel, LossOutput
from .nets import build_decoder, build_encoder


class EncoderDecoder(LatentModel):
    """An encoder, linear heads from its features to the latent, and a decoder: what both classes share.

    The modules are created in this order (encoder, heads, decoder), so a seed gives the same initial
    weights whatever the class."""

    def __init__(self, cfg: ModelConfig, arch: str, objective: str, heads: tuple):
        super().__init__()
        self.config = cfg  # the caller's object: the trainer may fill in fields from the data after building
        self.arch = arch
        self.objective_name = objective
        self.encoder = build_encoder(cfg, arch)
        for head in heads:
            setattr(self, head, nn.Linear(self.encoder.out_features, cfg.latent_dim))
        self.decoder = build_decoder(cfg, arch)

    @property
    def latent_shape(self) -> tuple:
        return (self.config.latent_dim,)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, step: int = 0) -> LossOutput:
        # forward = loss, so that DistributedDataParallel (which hooks forward) sees the training pass.
        return self.loss(x, step)


class VAE(EncoderDecoder):
    """Gaussian encoder q(z|x) = N(μ, diag σ²), prior N(0, I), decoder p(x|z) per cfg.likelihood."""

    def __init__(self, cfg: ModelConfig, arch: str, objective: str = "elbo"):
        super().__init__(cfg, arch, objective, heads=("fc_mu", "fc_logvar"))
        self.objective = OBJECTIVES[objective]

    def encode(self, x: torch.Tensor) -> Encoding:
        h = self.encoder(x)
        return Encoding(mean=self.fc_mu(h), logvar=self.fc_logvar(h))

    def loss(self, x: torch.Tensor, step: int = 0) -> LossOutput:
        enc = self.encode(x)
        z = reparameterize(enc.mean, enc.logvar, noise_like(enc.mean))
        recon = reconstruction_nll(self.decode(z), x, self.config)
        kl = kl_divergence(enc.mean, enc.logvar)
        # Under data-parallel training x is this process's shard of the batch: the objective sees the
        # whole batch (β-TCVAE's estimate of log q(z) and the annealed |KL − C| are not per-image means).
        # Both helpers are no-ops in a single process (training/distributed.py).
        recon, kl = global_mean(recon, kl)
        mean, logvar, z = gather_batch(enc.mean, enc.logvar, z)
        loss, extra = self.objective(recon, kl, mean, logvar, z, self.config, step)
        terms = {"recon": recon.detach(), "kl": kl.detach(), **extra}
        return LossOutput(loss=loss, terms=terms)


class Autoencoder(EncoderDecoder):
    """Deterministic autoencoder baseline: z = f(x), loss = reconstruction NLL only.

    `sample_prior` still draws N(0, I) (the base class behaviour) on purpose: decoding those
    draws shows why an AE's latent space cannot be sampled — nothing pulled the codes towards
    that distribution, so most draws land where the decoder has never been trained.
    """

    def __init__(self, cfg: ModelConfig, arch: str, objective: str = "ae"):
        super().__init__(cfg, arch, objective, heads=("fc_code",))

    def encode(self, x: torch.Tensor) -> Encoding:
        return Encoding(mean=self.fc_code(self.encoder(x)))

    def loss(self, x: torch.Tensor, step: int = 0) -> LossOutput:
        recon = reconstruction_nll(self.decode(self.encode(x).mean), x, self.config)
        return LossOutput(loss=recon, terms={"recon": recon.detach(), "kl": torch.zeros((), device=x.device)})
