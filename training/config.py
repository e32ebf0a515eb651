"""Typed run configuration that saves and loads as JSON (the `config.json` of a run folder).

A run is fully described by three parts kept apart, as in pythae:
`DataConfig` (which images), `ModelConfig` (architecture + objective) and
`TrainConfig` (optimisation). `RunConfig` bundles them with a format version
so that the explorer can refuse a folder written by an incompatible version.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import UserError

FORMAT_VERSION = 1


@dataclass
class DataConfig:
    # "dsprites", "smileys", "mnist", "fashion-mnist", "celeba" or "folder:PATH".
    name: str = "dsprites"
    # Where torchvision datasets / image folders live; None means the default (./data).
    data_dir: Optional[str] = None
    # Output resolution; None keeps the dataset's native size (28 for MNIST, 64 for dsprites/smileys/celeba).
    image_size: Optional[int] = None
    # Use only the first N training examples (after the fixed shuffle); None = all.
    subset: Optional[int] = None
    # Fraction of examples held out as the test split (procedural sets and folders; torchvision sets
    # use their official split when it is present).
    test_fraction: float = 0.1
    # Dataset-specific options, e.g. smileys {"correlate": ["smile", "glasses"], "correlation": 0.8}.
    options: dict = field(default_factory=dict)


@dataclass
class ModelConfig:
    # Registry name: ae, vae, vae-mlp, resvae, beta-vae, annealed-vae, btcvae, vqvae.
    name: str = "vae"
    # Encoder/decoder family: "mlp", "conv" or "resnet". Filled from the registry default when None.
    arch: Optional[str] = None
    image_size: int = 64
    channels: int = 1
    latent_dim: int = 10
    # Conv channels per stride-2 stage (conv/resnet) or hidden widths (mlp).
    hidden: list = field(default_factory=lambda: [32, 32, 64, 64])
    # Width of the fully connected layer between the conv stack and the latent.
    fc_dim: int = 256
    # "bernoulli" (decoder outputs logits) or "gaussian" (decoder outputs means, fixed std below).
    likelihood: str = "bernoulli"
    gaussian_std: float = 0.1
    batch_norm: bool = False
    # Conv stages: kernel 4 / stride 2 / padding 1 (Burgess et al.) or kernel 3 (the seed notebook's model).
    kernel_size: int = 4
    # "relu" or "leaky_relu".
    activation: str = "relu"
    # β-VAE weight on the KL term (β-TCVAE: weight on the total-correlation term).
    beta: float = 1.0
    # Capacity annealing (Burgess et al. 2018): loss = recon + gamma * |KL - C|, C: 0 -> c_max over c_steps.
    gamma: float = 1000.0
    c_max: float = 25.0
    c_steps: int = 100_000
    # β-TCVAE: "mws" (minibatch weighted) or "mss" (minibatch stratified); alpha weights index-code MI,
    # tc_gamma the dimension-wise KL. dataset_size is filled in by the trainer (global size under DDP).
    tc_estimator: str = "mws"
    alpha: float = 1.0
    tc_gamma: float = 1.0
    dataset_size: int = 0
    # VQ-VAE: codebook size, code dimension, commitment weight, EMA decay, Laplace epsilon, dead-code
    # threshold (an EMA cluster size below it gets restarted from an encoder output).
    num_codes: int = 64
    code_dim: int = 16
    commitment: float = 0.25
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    dead_code_threshold: float = 1e-3
    # Number of stride-2 stages that the VQ encoder applies (latent grid = image_size / 2**vq_downsample).
    vq_downsample: int = 2


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    seed: int = 0
    grad_clip: Optional[float] = 10.0
    # "auto" picks cuda, then mps, then cpu.
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 500
    # Sample/reconstruction grid size.
    grid_n: int = 64
    # torch.compile the training step (model.loss): faster steps after a compile of tens of seconds;
    # needs a working C++ compiler (CPU) or Triton (CUDA).
    compile: bool = False


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    format_version: int = FORMAT_VERSION

    # ---- JSON round trip -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "RunConfig":
        if not isinstance(d, dict):
            raise UserError(f"{source}: expected a JSON object")
        version = d.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise UserError(
                f"{source}: run format version {version!r} is not supported (this version reads {FORMAT_VERSION})")
        return cls(
            data=_build(DataConfig, d.get("data", {}), f"{source}: data"),
            model=_build(ModelConfig, d.get("model", {}), f"{source}: model"),
            train=_build(TrainConfig, d.get("train", {}), f"{source}: train"),
            format_version=FORMAT_VERSION,
        )

    def save(self, path: str) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str) -> "RunConfig":
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such config file")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not valid JSON ({e.msg if hasattr(e, 'msg') else e})")
        return cls.from_dict(d, source=path)


def _build(kind, values: Any, where: str):
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a JSON object")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}")
    return kind(**values)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write, fsync, then rename: a reader sees the old file or the new one, never a torn one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        # Disk full, read-only folder, no permission: the old file (if any) stays as it was and no
        # torn temp file is left next to it.
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
