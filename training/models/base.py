"""The one interface every model in the zoo implements.

Models differ only where they really differ (disentangling-vae's lesson): the
encoder/decoder pair is pluggable (`arch`), and the objective is chosen by the
registry name. Everything downstream (trainer, evaluation, export, explorer)
talks to this interface only.

Conventions (one loss convention everywhere): every loss term is summed over
pixels and latent dimensions and averaged over the batch, in nats.
Images are float tensors in [0, 1], shape (B, C, H, W).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ..config import ModelConfig


@dataclass
class Encoding:
    """What `encode` returns.

    mean:    posterior mean (VAE), the code (AE), or the pre-quantised encoder output (VQ-VAE),
             shape (B, *latent_shape).
    logvar:  posterior log-variance, same shape as mean; None for AE and VQ-VAE.
    codes:   VQ-VAE code indices, shape (B, h, w); None otherwise.
    """
    mean: torch.Tensor
    logvar: Optional[torch.Tensor] = None
    codes: Optional[torch.Tensor] = None


@dataclass
class LossOutput:
    """What `loss` returns: the scalar to minimise plus named scalar terms for logging.

    terms always holds "recon" (NLL in nats per image) and "kl" (nats per image; 0 for AE,
    the VQ codebook + commitment loss is reported as "vq"). Extra terms are model-specific
    (e.g. "tc", "mi", "dwkl", "capacity", "perplexity").
    """
    loss: torch.Tensor
    terms: dict = field(default_factory=dict)


class LatentModel(nn.Module):
    """Base class. Subclasses set `self.config` and implement encode / decode / loss."""

    config: ModelConfig
    # True for models whose prior can be sampled without anything extra (VAE family).
    has_prior: bool = True

    @property
    def latent_shape(self) -> tuple:
        """Shape of one latent (without batch): (latent_dim,) or (code_dim, h, w) for VQ-VAE."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> Encoding:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters: logits (Bernoulli) or means (Gaussian), shape (B, C, H, W)."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor, step: int = 0) -> LossOutput:
        raise NotImplementedError

    # ---- shared helpers --------------------------------------------------------------------------
    def to_image(self, params: torch.Tensor) -> torch.Tensor:
        """Decoder output -> displayable image in [0, 1] (the likelihood's mean)."""
        if self.config.likelihood == "bernoulli":
            return torch.sigmoid(params)
        return params.clamp(0.0, 1.0)

    def decode_image(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_image(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean (deterministic reconstruction)."""
        enc = self.encode(x)
        return self.decode_image(self.latent_for_decode(enc))

    def latent_for_decode(self, enc: Encoding) -> torch.Tensor:
        """The latent that `decode` expects for this encoding (VQ-VAE overrides: quantise first)."""
        return enc.mean

    def sample_prior(self, n: int, generator: Optional[torch.Generator] = None,
                     temperature: float = 1.0) -> torch.Tensor:
        """Latents drawn from the prior N(0, temperature² I). VQ-VAE needs a learned prior (raises)."""
        device = next(self.parameters()).device
        return temperature * torch.randn((n, *self.latent_shape), generator=generator, device=device)
