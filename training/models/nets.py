"""Encoder/decoder families shared by every model: "mlp", "conv" and "resnet".

Conv stacks are resolution-agnostic: an image whose side is not a multiple of
2**stages (28 px MNIST through 4 stride-2 stages) is zero-padded symmetrically
to the next multiple on the way in, and the decoder's output is cropped back,
so shapes always come out exactly (B, C, H, W).

Conv stage: Conv2d(kernel k, stride 2) [+ BatchNorm] + activation
  k = 4: padding 1 (Burgess et al.); k = 3: padding 1, and the transposed conv uses
  output_padding 1 (the seed notebook's model). Both halve / double the side exactly.
Decoder: mirror stages (ConvTranspose2d) down to hidden[0], one more ConvTranspose2d
at hidden[0] channels back to full size, then a 3x3 Conv2d to the image channels.
Activations inside stages work in place (stage_activation).
"resnet" adds a residual block (two 3x3 convs + identity skip) after every stage.

fc_dim = 0 is the seed notebook's layout: the latent heads read the flattened conv
features directly, and the decoder projects z linearly onto the feature map.
fc_dim > 0 inserts one fully connected layer (+ activation) on both sides.

The decoder returns likelihood parameters: logits for "bernoulli" (no output
activation: the loss applies the sigmoid inside a stable BCE), means squashed
by a sigmoid into the data range [0, 1] for "gaussian".
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig

# Keyed by model_configs.ACTIVATIONS / KERNEL_SIZES, the values a config accepts (tests check both agree).
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}
# kernel -> (padding, output_padding) for a stride-2 conv that halves / a transposed conv that doubles.
KERNEL_PADDING = {4: (1, 0), 3: (1, 1)}


def activation(name: str, inplace: bool = False) -> nn.Module:
    return ACTIVATIONS[name](inplace=inplace)


def stage_activation(name: str) -> nn.Module:
    """The activation after a conv or BatchNorm inside a stage: in place, since neither layer's backward
    reads its own output (autograd would refuse otherwise), which saves one feature-map-sized buffer
    per stage and a pass over memory."""
    return activation(name, inplace=True)


def padded_size(image_size: int, stages: int) -> int:
    """Smallest multiple of 2**stages that is >= image_size (the side the conv stack runs at)."""
    step = 2 ** stages
    return int(math.ceil(image_size / step)) * step


def output_activation(likelihood: str) -> nn.Module:
    # Gaussian means must live in the data range [0, 1]; Bernoulli parameters stay logits.
    return nn.Sigmoid() if likelihood == "gaussian" else nn.Identity()


class ResidualBlock(nn.Module):
    """x -> act(x + BN(conv3x3(act(BN(conv3x3(x)))))): same channels, same size."""

    def __init__(self, channels: int, batch_norm: bool, act: str):
        super().__init__()
        layers = [nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        layers += [stage_activation(act), nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        self.body = nn.Sequential(*layers)
        self.act = stage_activation(act)  # acts on the fresh sum x + body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def down_stage(c_in: int, c_out: int, kernel: int, batch_norm: bool, act: str, residual: bool) -> nn.Sequential:
    padding, _ = KERNEL_PADDING[kernel]
    # The conv keeps its bias even before BatchNorm so that the seed notebook's model is reproduced exactly.
    return stage(nn.Conv2d(c_in, c_out, kernel, 2, padding), c_out, batch_norm, act, residual)


def up_stage(c_in: int, c_out: int, kernel: int, batch_norm: bool, act: str, residual: bool) -> nn.Sequential:
    padding, output_padding = KERNEL_PADDING[kernel]
    conv = nn.ConvTranspose2d(c_in, c_out, kernel, 2, padding, output_padding=output_padding)
    return stage(conv, c_out, batch_norm, act, residual)


def stage(conv: nn.Module, c_out: int, batch_norm: bool, act: str, residual: bool) -> nn.Sequential:
    """conv, then batch norm, the activation and a residual block where asked for."""
    layers = [conv]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(stage_activation(act))
    if residual:
        layers.append(ResidualBlock(c_out, batch_norm, act))
    return nn.Sequential(*layers)


class DownStack(nn.Module):
    """Image (B, C, H, W) -> feature map (B, hidden[-1], s, s), s = padded side / 2**len(hidden)."""

    def __init__(self, channels: int, image_size: int, hidden: list, kernel: int, batch_norm: bool,
                 act: str, residual: bool):
        super().__init__()
        side = padded_size(image_size, len(hidden))
        extra = side - image_size
        # (left, right, top, bottom) for F.pad; None when the image already fits (no needless op).
        self.pad = (extra // 2, extra - extra // 2, extra // 2, extra - extra // 2) if extra else None
        self.out_channels = hidden[-1]
        self.out_side = side // 2 ** len(hidden)
        stages, c_in = [], channels
        for c_out in hidden:
            stages.append(down_stage(c_in, c_out, kernel, batch_norm, act, residual))
            c_in = c_out
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = nn.functional.pad(x, self.pad)
        return self.stages(x)


class UpStack(nn.Module):
    """Feature map (B, hidden[-1], s, s) -> likelihood parameters (B, C, H, W) (mirror of DownStack)."""

    def __init__(self, channels: int, image_size: int, hidden: list, kernel: int, batch_norm: bool,
                 act: str, residual: bool, likelihood: str):
        super().__init__()
        side = padded_size(image_size, len(hidden))
        extra = side - image_size
        self.crop = (extra // 2, extra // 2 + image_size) if extra else None
        rev = list(hidden)[::-1]
        self.stages = nn.Sequential(*[up_stage(a, b, kernel, batch_norm, act, residual)
                                      for a, b in zip(rev[:-1], rev[1:])])
        self.final = nn.Sequential(
            up_stage(rev[-1], rev[-1], kernel, batch_norm, act, residual),
            nn.Conv2d(rev[-1], channels, 3, padding=1),
            output_activation(likelihood))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.final(self.stages(h))
        if self.crop is not None:
            a, b = self.crop
            out = out[:, :, a:b, a:b]
        return out


# ---- vector encoders/decoders (VAE family, AE) -------------------------------------------------------------
class ConvEncoder(nn.Module):
    """Image -> feature vector (B, out_features): DownStack, flatten, optional FC layer."""

    def __init__(self, cfg: ModelConfig, residual: bool):
        super().__init__()
        self.trunk = DownStack(cfg.channels, cfg.image_size, cfg.hidden, cfg.kernel_size, cfg.batch_norm,
                               cfg.activation, residual)
        flat = self.trunk.out_channels * self.trunk.out_side ** 2
        if cfg.fc_dim > 0:
            self.fc = nn.Sequential(nn.Linear(flat, cfg.fc_dim), activation(cfg.activation))
            self.out_features = cfg.fc_dim
        else:
            self.fc = None
            self.out_features = flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(self.trunk(x), 1)
        return self.fc(h) if self.fc is not None else h


class ConvDecoder(nn.Module):
    """z (B, latent_dim) -> likelihood parameters (B, C, H, W)."""

    def __init__(self, cfg: ModelConfig, residual: bool):
        super().__init__()
        self.c = cfg.hidden[-1]
        self.s = padded_size(cfg.image_size, len(cfg.hidden)) // 2 ** len(cfg.hidden)
        flat = self.c * self.s * self.s
        if cfg.fc_dim > 0:
            self.project = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.fc_dim), activation(cfg.activation),
                                         nn.Linear(cfg.fc_dim, flat), activation(cfg.activation))
        else:
            # The seed notebook's layout: a plain linear map onto the feature map.
            self.project = nn.Linear(cfg.latent_dim, flat)
        self.up = UpStack(cfg.channels, cfg.image_size, cfg.hidden, cfg.kernel_size, cfg.batch_norm,
                          cfg.activation, residual, cfg.likelihood)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, self.c, self.s, self.s)
        return self.up(h)


class MLPEncoder(nn.Module):
    """Image -> feature vector: flatten, then Linear [+ BatchNorm1d] + activation per width in hidden."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers, d_in = [nn.Flatten()], cfg.channels * cfg.image_size ** 2
        for width in cfg.hidden:
            layers.append(nn.Linear(d_in, width))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(activation(cfg.activation))
            d_in = width
        self.net = nn.Sequential(*layers)
        self.out_features = d_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """z -> likelihood parameters (B, C, H, W): the encoder's widths reversed, then a linear map to pixels."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers, d_in = [], cfg.latent_dim
        for width in list(cfg.hidden)[::-1]:
            layers.append(nn.Linear(d_in, width))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(activation(cfg.activation))
            d_in = width
        layers += [nn.Linear(d_in, cfg.channels * cfg.image_size ** 2), output_activation(cfg.likelihood)]
        self.net = nn.Sequential(*layers)
        self.shape = (cfg.channels, cfg.image_size, cfg.image_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)


def build_encoder(cfg: ModelConfig, arch: str) -> nn.Module:
    """Image -> feature vector; the module has `out_features`."""
    if arch == "mlp":
        return MLPEncoder(cfg)
    return ConvEncoder(cfg, residual=(arch == "resnet"))


def build_decoder(cfg: ModelConfig, arch: str) -> nn.Module:
    """z (B, latent_dim) -> likelihood parameters (B, C, H, W)."""
    if arch == "mlp":
        return MLPDecoder(cfg)
    return ConvDecoder(cfg, residual=(arch == "resnet"))
