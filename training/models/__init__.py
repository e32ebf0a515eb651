"""The model zoo: a plain registry from name to (model class, default arch, objective).

    from training.models import build_model
    model = build_model(model_config("btcvae", image_size=64, latent_dim=10, beta=6.0))

`build_model` validates the configuration and raises `UserError` with a one-line message
for unknown names and invalid combinations. The model keeps a reference to the caller's
config (`model.config is cfg`), so fields the trainer fills in later (`dataset_size`) are
seen by the loss; the resolved encoder/decoder family is `model.arch`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig, config_class
from ..errors import UserError
from ..model_configs import ARCHS
from .base import Encoding, LatentModel, LossOutput
from .vae import VAE, Autoencoder
from .vqvae import VQVAE


@dataclass(frozen=True)
class ModelSpec:
    model_class: type
    default_arch: str
    # Key into training.losses.OBJECTIVES for the VAE family; "ae" / "vq" for the others.
    objective: str
    description: str
    # Families this model can be built with.
    archs: tuple = ARCHS


MODELS: dict[str, ModelSpec] = {
    "ae": ModelSpec(Autoencoder, "conv", "ae", "deterministic autoencoder baseline (no KL, no prior)"),
    "vae": ModelSpec(VAE, "conv", "elbo", "VAE, convolutional"),
    "vae-mlp": ModelSpec(VAE, "mlp", "elbo", "VAE, fully connected"),
    "resvae": ModelSpec(VAE, "resnet", "elbo", "VAE, residual conv blocks"),
    "beta-vae": ModelSpec(VAE, "conv", "beta", "β-VAE (Higgins et al. 2017): recon + β·KL"),
    "annealed-vae": ModelSpec(VAE, "conv", "annealed",
                              "capacity-annealed β-VAE (Burgess et al. 2018): recon + γ·|KL − C|"),
    "btcvae": ModelSpec(VAE, "conv", "btcvae", "β-TCVAE (Chen et al. 2018): recon + α·MI + β·TC + γ·dim-wise KL"),
    "vqvae": ModelSpec(VQVAE, "conv", "vq", "VQ-VAE with an EMA codebook (van den Oord et al. 2017)",
                       archs=("conv", "resnet")),
}


def model_names() -> list[str]:
    return list(MODELS)


def resolve_arch(cfg: ModelConfig) -> str:
    return cfg.arch if cfg.arch is not None else model_spec(cfg.name).default_arch


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r} (choose from: {', '.join(MODELS)})")
    return MODELS[name]


def build_model(cfg: ModelConfig) -> LatentModel:
    """Validate cfg and build the untrained model it describes (CPU, train mode)."""
    spec = model_spec(cfg.name)
    arch = resolve_arch(cfg)
    check_config(cfg, spec, arch)
    return spec.model_class(cfg, arch, spec.objective)


def check_config(cfg: ModelConfig, spec: ModelSpec, arch: str) -> None:
    """Raise UserError for a configuration that cannot be built or would silently mislead.

    The config validates its own fields; what needs this registry (the archs a model is built with) is here.
    """
    name = cfg.name
    if type(cfg) is not config_class(name):
        raise UserError(f"model {name!r} takes a {config_class(name).__name__}, not a {type(cfg).__name__} "
                        f"(build it with training.config.model_config)")
    if arch not in spec.archs:
        raise UserError(f"model {name!r}: unknown or unsupported arch {arch!r} (choose from: {', '.join(spec.archs)})")
    cfg.validate(arch)


__all__ = ["MODELS", "ModelSpec", "build_model", "model_names", "model_spec", "resolve_arch", "check_config",
           "LatentModel", "Encoding", "LossOutput", "VAE", "Autoencoder", "VQVAE"]
