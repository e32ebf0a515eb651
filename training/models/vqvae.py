"""VQ-VAE (van den Oord et al. 2017) with an EMA codebook.

Encoder: cfg.vq_downsample stride-2 conv stages (channels cfg.hidden[:vq_downsample], plus a
residual block after each stage for arch "resnet"), two residual blocks, a 1x1 conv to
code_dim channels: z_e of shape (B, code_dim, h, w), h = w = image_size / 2**vq_downsample
(rounded up: sides that do not divide are padded, see nets.py). The decoder mirrors it.

Loss = recon NLL + commitment loss (see quantizer.py); "kl" is reported as 0.

There is no prior to sample until one is learned over code grids (a PixelCNN, `python -m
training train-prior RUN`) and attached with `attach_prior`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..config import VQVAEConfig
from ..errors import UserError
from ..losses import reconstruction_nll
from .base import Encoding, LatentModel, LossOutput
from .nets import DownStack, ResidualBlock, UpStack, padded_size
from .quantizer import VectorQuantizer, codebook_usage

NO_PRIOR_MESSAGE = "this VQ-VAE has no learned prior yet: run `python -m training train-prior RUN`"


class VQVAE(LatentModel):
    def __init__(self, cfg: VQVAEConfig, arch: str = "conv", objective: str = "vq"):
        super().__init__()
        self.config = cfg
        self.arch = arch
        self.objective_name = objective
        stages = cfg.vq_downsample
        hidden = list(cfg.hidden[:stages])
        width = hidden[-1]
        residual = arch == "resnet"
        self.grid = padded_size(cfg.image_size, stages) // 2 ** stages
        self.encoder = nn.Sequential(
            DownStack(cfg.channels, cfg.image_size, hidden, cfg.kernel_size, cfg.batch_norm, cfg.activation,
                      residual),
            ResidualBlock(width, cfg.batch_norm, cfg.activation),
            ResidualBlock(width, cfg.batch_norm, cfg.activation),
            nn.Conv2d(width, cfg.code_dim, 1))
        self.quantizer = VectorQuantizer(cfg.num_codes, cfg.code_dim, cfg.commitment, cfg.ema_decay, cfg.ema_eps,
                                         cfg.dead_code_threshold)
        self.decoder = nn.Sequential(
            nn.Conv2d(cfg.code_dim, width, 3, padding=1),
            ResidualBlock(width, cfg.batch_norm, cfg.activation),
            ResidualBlock(width, cfg.batch_norm, cfg.activation),
            UpStack(cfg.channels, cfg.image_size, hidden, cfg.kernel_size, cfg.batch_norm, cfg.activation,
                    residual, cfg.likelihood))
        # Kept out of the module tree on purpose: the prior has its own weights file, and
        # model.safetensors must load into a VQVAE with or without one.
        object.__setattr__(self, "_prior", None)

    @property
    def latent_shape(self) -> tuple:
        return (self.config.code_dim, self.grid, self.grid)

    @property
    def has_prior(self) -> bool:
        return self._prior is not None

    def attach_prior(self, prior) -> None:
        """Attach a learned prior over code grids: `prior.sample(n, generator, temperature)` must return
        code indices, a LongTensor (n, h, w). Pass None to detach. The prior is not moved with `.to()`."""
        if prior is not None and not callable(getattr(prior, "sample", None)):
            raise UserError("a VQ-VAE prior must have a sample(n, generator, temperature) method")
        object.__setattr__(self, "_prior", prior)

    def encode(self, x: torch.Tensor) -> Encoding:
        z_e = self.encoder(x)
        return Encoding(mean=z_e, codes=self.quantizer.quantize(z_e))

    def latent_for_decode(self, enc: Encoding) -> torch.Tensor:
        codes = enc.codes if enc.codes is not None else self.quantizer.quantize(enc.mean)
        return self.quantizer.lookup(codes)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: a (quantised) code grid (B, code_dim, h, w)."""
        return self.decoder(z)

    def decode_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, h, w) -> likelihood parameters (B, C, H, W)."""
        return self.decode(self.quantizer.lookup(indices.long()))

    def sample_prior(self, n: int, generator: Optional[torch.Generator] = None,
                     temperature: float = 1.0) -> torch.Tensor:
        """Code grids (n, code_dim, h, w) drawn from the attached prior (decode them with `decode`)."""
        if self._prior is None:
            raise UserError(NO_PRIOR_MESSAGE)
        indices = self._prior.sample(n, generator, temperature)
        return self.quantizer.lookup(indices.to(self.quantizer.codebook.device).long())

    def loss(self, x: torch.Tensor, step: int = 0) -> LossOutput:
        z_e = self.encoder(x)
        quantized, indices, vq_loss = self.quantizer(z_e)
        recon = reconstruction_nll(self.decoder(quantized), x, self.config)
        perplexity, codes_used = codebook_usage(indices, self.config.num_codes)
        terms = {"recon": recon.detach(), "kl": torch.zeros((), device=x.device), "vq": vq_loss.detach(),
                 "perplexity": perplexity, "codes_used": codes_used}
        return LossOutput(loss=recon + vq_loss, terms=terms)

    def forward(self, x: torch.Tensor, step: int = 0) -> LossOutput:
        return self.loss(x, step)
