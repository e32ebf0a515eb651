"""The model zoo: a plain registry from name to (model class, default arch, objective).

    from training.models import build_model
    model = build_model(ModelConfig(name="btcvae", image_size=64, latent_dim=10, beta=6.0))

`build_model` validates the configuration and raises `UserError` with a one-line message
for unknown names and invalid combinations. The model keeps a reference to the caller's
config (`model.config is cfg`), so fields the trainer fills in later (`dataset_size`) are
seen by the loss; the resolved encoder/decoder family is `model.arch`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig
from ..errors import UserError
from ..losses import LIKELIHOODS, TC_ESTIMATORS
from .base import Encoding, LatentModel, LossOutput
from .nets import ACTIVATIONS, ARCHS, KERNEL_PADDING
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

# Objectives in which β appears; elsewhere a β other than 1 is almost certainly a mistake.
USES_BETA = ("beta", "btcvae")


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
    """Raise UserError for a configuration that cannot be built or would silently mislead."""
    name = cfg.name
    if arch not in spec.archs:
        raise UserError(f"model {name!r}: unknown or unsupported arch {arch!r} (choose from: {', '.join(spec.archs)})")
    if cfg.likelihood not in LIKELIHOODS:
        raise UserError(f"unknown likelihood {cfg.likelihood!r} (choose from: {', '.join(LIKELIHOODS)})")
    if cfg.activation not in ACTIVATIONS:
        raise UserError(f"unknown activation {cfg.activation!r} (choose from: {', '.join(ACTIVATIONS)})")
    if cfg.tc_estimator not in TC_ESTIMATORS:
        raise UserError(f"unknown tc_estimator {cfg.tc_estimator!r} (choose from: {', '.join(TC_ESTIMATORS)})")
    if cfg.kernel_size not in KERNEL_PADDING:
        raise UserError(f"kernel_size must be 3 or 4, not {cfg.kernel_size!r}")
    for field_name in ("image_size", "channels", "latent_dim"):
        if not isinstance(getattr(cfg, field_name), int) or getattr(cfg, field_name) < 1:
            raise UserError(f"model {field_name} must be a positive integer, not {getattr(cfg, field_name)!r}")
    if not cfg.hidden or not all(isinstance(h, int) and h > 0 for h in cfg.hidden):
        raise UserError(f"model hidden must be a non-empty list of positive integers, not {cfg.hidden!r}")
    if cfg.fc_dim < 0:
        raise UserError(f"fc_dim must be >= 0 (0 = no extra fully connected layer), not {cfg.fc_dim}")
    if cfg.gaussian_std <= 0:
        raise UserError(f"gaussian_std must be > 0, not {cfg.gaussian_std}")
    if spec.objective not in USES_BETA and cfg.beta != 1.0:
        raise UserError(f"model {name!r} has no β weight (beta={cfg.beta}): use 'beta-vae' or 'btcvae'")
    if cfg.beta < 0 or cfg.alpha < 0 or cfg.tc_gamma < 0 or cfg.gamma < 0 or cfg.c_max < 0:
        raise UserError("loss weights (beta, alpha, tc_gamma, gamma, c_max) must be >= 0")
    if cfg.dataset_size < 0:
        raise UserError(f"dataset_size must be >= 0, not {cfg.dataset_size}")
    stages = len(cfg.hidden)
    if spec.objective == "vq":
        stages = cfg.vq_downsample
        if not 1 <= stages <= len(cfg.hidden):
            raise UserError(f"vq_downsample must be between 1 and len(hidden) = {len(cfg.hidden)}, not {stages}")
        if cfg.num_codes < 2 or cfg.code_dim < 1:
            raise UserError(f"VQ-VAE needs num_codes >= 2 and code_dim >= 1 (got {cfg.num_codes}, {cfg.code_dim})")
        if not 0.0 <= cfg.ema_decay < 1.0 or cfg.ema_eps <= 0 or cfg.commitment < 0:
            raise UserError("VQ-VAE needs 0 <= ema_decay < 1, ema_eps > 0 and commitment >= 0")
    if arch != "mlp" and cfg.image_size < 2 ** stages:
        raise UserError(f"image_size {cfg.image_size} is too small for {stages} stride-2 stages "
                        f"(needs at least {2 ** stages} px): use fewer hidden stages")


__all__ = ["MODELS", "ModelSpec", "build_model", "model_names", "model_spec", "resolve_arch", "check_config",
           "LatentModel", "Encoding", "LossOutput", "VAE", "Autoencoder", "VQVAE"]
