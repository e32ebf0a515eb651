"""A gated PixelCNN over a VQ-VAE's grid of code indices (van den Oord et al. 2016).

A VQ-VAE has no prior to sample until one is learned over its code grids (van den Oord et al. 2017).
This one models p(c) = Π_p p(c_p | c_<p) in raster order with two stacks (van den Oord et al. 2016,
"Conditional Image Generation with PixelCNN Decoders"):

- the vertical stack sees every position in the rows strictly above the current one;
- the horizontal stack sees the positions strictly left of the current one in the current row,
  plus the vertical stack at the same position.

Causality comes from shifts instead of weight masks: the vertical stack starts from the input
shifted down one row, and each vertical conv is padded at the top only (kernel (k//2+1) × k), so its
output at row i depends on rows < i. The horizontal stack starts from the input shifted right one
column, and each horizontal conv (kernel 1 × (k//2+1)) is padded on the left only, so its output at
(i, j) depends on (i, < j). Together they cover the whole upper half-plane: no blind spot (the
original single-stack PixelCNN misses a wedge to the upper right). Layers use gated activations
tanh(a) ⊙ σ(b), a 1×1 link from the vertical into the horizontal stack, and residual connections
on the horizontal stack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


@dataclass
class PriorConfig:
    num_codes: int
    height: int
    width: int
    layers: int = 8
    channels: int = 64
    kernel_size: int = 3


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Row i of the result holds row i-1 of x (zeros in row 0)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """Column j of the result holds column j-1 of x (zeros in column 0)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


def gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer of both stacks; causal by padding on the top (vertical) and left (horizontal).

    Split in two halves so that sampling can run the vertical stack once per row and the horizontal
    stack once per position: `vertical(v) -> (v_next, link)` and `horizontal(h, link) -> h_next`.
    """

    def __init__(self, channels: int, kernel_size: int, residual: bool):
        super().__init__()
        half = kernel_size // 2
        self.v_pad = (half, half, half, 0)           # left, right, top, bottom
        self.h_pad = (half, 0, 0, 0)
        self.v_conv = nn.Conv2d(channels, 2 * channels, (half + 1, kernel_size))
        self.h_conv = nn.Conv2d(channels, 2 * channels, (1, half + 1))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.residual = residual

    def vertical(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(next vertical state, the 1x1 link into the horizontal stack)."""
        v_features = self.v_conv(F.pad(v, self.v_pad))
        return gate(v_features), self.v_to_h(v_features)

    def horizontal(self, h: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
        h_next = self.h_out(gate(self.h_conv(F.pad(h, self.h_pad)) + link))
        return h + h_next if self.residual else h_next


class GatedPixelCNN(nn.Module):
    """Autoregressive prior over (h, w) grids of code indices in [0, num_codes)."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        if cfg.kernel_size < 3 or cfg.kernel_size % 2 == 0:
            raise UserError(f"prior kernel_size must be odd and >= 3, not {cfg.kernel_size}")
        if cfg.layers < 1 or cfg.channels < 1:
            raise UserError("the prior needs at least one layer and one channel")
        self.config = cfg
        self.embedding = nn.Embedding(cfg.num_codes, cfg.channels)
        self.layers = nn.ModuleList(
            GatedLayer(cfg.channels, cfg.kernel_size, residual=i > 0) for i in range(cfg.layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(cfg.channels, 4 * cfg.channels, 1), nn.ReLU(),
                                  nn.Conv2d(4 * cfg.channels, cfg.num_codes, 1))

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        return self.embedding(codes.long()).permute(0, 3, 1, 2)

    def vertical_links(self, codes: torch.Tensor) -> list:
        """Every layer's link from the vertical stack, (B, 2C, rows, w) each; row r depends on rows < r."""
        v, links = shift_down(self.embed(codes)), []
        for layer in self.layers:
            v, link = layer.vertical(v)
            links.append(link)
        return links

    def horizontal_logits(self, codes: torch.Tensor, links: list) -> torch.Tensor:
        """Logits for the rows of `codes` given the vertical links of the same rows."""
        h = shift_right(self.embed(codes))
        for layer, link in zip(self.layers, links):
            h = layer.horizontal(h, link)
        return self.head(h)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, h, w); position p depends only on codes before p in raster order."""
        return self.horizontal_logits(codes, self.vertical_links(codes))

    def nll_per_code(self, codes: torch.Tensor) -> torch.Tensor:
        """Mean −log p(code) in nats over every position of every grid in the batch."""
        return F.cross_entropy(self.forward(codes), codes.long())

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    @property
    def context(self) -> int:
        """How far back a position's logits can see: each layer reaches kernel_size // 2 rows further up
        (vertical stack) and columns further left (horizontal stack), plus the initial one-step shift.
        Cropping the grid to this many rows above / columns left of a position leaves its logits
        unchanged (the zero padding at the crop edge cannot reach it)."""
        return self.config.layers * (self.config.kernel_size // 2) + 1

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None,
               temperature: float = 1.0) -> torch.Tensor:
        """n code grids (n, h, w) int64, drawn position by position in raster order.

        The vertical stack does not see the current row, so it runs once per row (on the rows that can
        reach it); per position only the horizontal stack runs, on the part of the row that can reach
        it. Same logits as a full forward pass per position, about 50x less work on a 16x16 grid.
        """
        if temperature <= 0:
            raise UserError(f"temperature must be > 0, not {temperature}")
        cfg = self.config
        codes = torch.zeros((n, cfg.height, cfg.width), dtype=torch.long, device=self.device)
        was_training = self.training
        self.eval()
        for i in range(cfg.height):
            top = max(0, i - self.context)
            links = [link[:, :, -1:] for link in self.vertical_links(codes[:, top:i + 1])]
            for j in range(cfg.width):
                left = max(0, j - self.context)
                logits = self.horizontal_logits(codes[:, i:i + 1, left:j + 1],
                                                [link[..., left:j + 1] for link in links])
                codes[:, i, j] = draw_categorical(logits[:, :, 0, -1] / temperature, generator)
        self.train(was_training)
        return codes


def draw_categorical(logits: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One index per row of logits (B, K); the generator may live on another device than the logits."""
    probs = torch.softmax(logits.float(), dim=1)
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.cpu(), 1, generator=generator).to(probs.device).squeeze(1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
