"""Model configurations: a base `ModelConfig` with the fields every model has, one small subclass per
model family that adds only its own fields, and a registry from model name to config class.

    cfg = model_config("btcvae", latent_dim=10, beta=6.0)     # a BTCVAEConfig
    cfg = model_config_from_dict(json_object, where="config.json: model")

Each class checks its own fields (`validate`), so a config is validated in one place; only the
check that needs the model registry (which archs a model can be built with) lives in
training/models. A `config.json` written when every model carried every family's fields still
loads: a field of another family is dropped when it holds that family's default, and is a one-line
`UserError` naming the field and the model when it does not.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import UserError

ARCHS = ("mlp", "conv", "resnet")
LIKELIHOODS = ("bernoulli", "gaussian")
ACTIVATIONS = ("relu", "leaky_relu")
# Conv stages: kernel 4 / stride 2 / padding 1 (Burgess et al.) or kernel 3 (the seed notebook's model).
KERNEL_SIZES = (4, 3)
TC_ESTIMATORS = ("mws", "mss")

# Model fields that the trainer fills in from the dataset: they record the data, not a choice, so a
# run folder's value of one is never an error (every model of a flat config.json has a dataset_size).
FILLED_FROM_DATA = ("image_size", "channels", "dataset_size")

# What one machine can hold, checked from the config before anything is allocated. Training keeps about
# 16 bytes a parameter (weights, gradients, Adam's two moments): 2 billion parameters is 32 GB.
MAX_PARAMETERS = 2_000_000_000
# One batch: its float32 input tensor, and the feature maps a forward pass keeps for the backward pass.
MAX_BATCH_INPUT_BYTES = 4 * 2 ** 30
MAX_BATCH_ACTIVATION_BYTES = 64 * 2 ** 30
# Conv stacks are bounded by the image size (one stride-2 stage halves it); MLP depth by this.
MAX_HIDDEN_LAYERS = 32


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _size(n: float) -> str:
    for unit, scale in (("billion", 1e9), ("million", 1e6)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def _conv_pairs(c_in: int, widths: list) -> int:
    """Sum of c_in * c_out over a chain of layers starting at c_in channels."""
    total = 0
    for c_out in widths:
        total += c_in * c_out
        c_in = c_out
    return total


def _check_weights(cfg: "ModelConfig", names: tuple) -> None:
    if not all(_is_number(getattr(cfg, name)) and getattr(cfg, name) >= 0 for name in names):
        raise UserError(f"loss weights ({', '.join(names)}) must be numbers >= 0 "
                        f"(got {', '.join(f'{n}={getattr(cfg, n)!r}' for n in names)})")


@dataclass
class ModelConfig:
    """What every model has: the encoder/decoder architecture and the likelihood (ae, vae, vae-mlp, resvae)."""
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
    # 4 or 3, see KERNEL_SIZES.
    kernel_size: int = 4
    # "relu" or "leaky_relu".
    activation: str = "relu"

    def __setattr__(self, name: str, value) -> None:
        # A field of another family set here would be ignored by the model: refuse it instead.
        if name not in self.__dataclass_fields__:
            raise AttributeError(f"{type(self).__name__} (model {self.name!r}) has no field {name!r}")
        object.__setattr__(self, name, value)

    def validate(self, arch: str) -> None:
        """Raise a one-line UserError for a value the model cannot be built with; arch is the resolved family."""
        self.check_fields()
        stages = self.stride_stages()
        if arch != "mlp" and self.image_size < 2 ** stages:
            raise UserError(f"image_size {self.image_size} is too small for {stages} stride-2 stages "
                            f"(needs at least {2 ** stages} px): use fewer hidden stages")
        self.check_size(arch)

    def check_fields(self) -> None:
        """This class's own fields; a subclass checks its fields after calling this."""
        if self.likelihood not in LIKELIHOODS:
            raise UserError(f"unknown likelihood {self.likelihood!r} (choose from: {', '.join(LIKELIHOODS)})")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"unknown activation {self.activation!r} (choose from: {', '.join(ACTIVATIONS)})")
        if self.kernel_size not in KERNEL_SIZES or not _is_int(self.kernel_size):
            raise UserError(f"kernel_size must be 3 or 4, not {self.kernel_size!r}")
        for name in ("image_size", "channels", "latent_dim"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise UserError(f"model {name} must be a positive integer, not {value!r}")
        if (not isinstance(self.hidden, (list, tuple)) or not self.hidden
                or not all(_is_int(h) and h > 0 for h in self.hidden)):
            raise UserError(f"model hidden must be a non-empty list of positive integers, not {self.hidden!r}")
        if not _is_int(self.fc_dim) or self.fc_dim < 0:
            raise UserError(f"fc_dim must be >= 0 (0 = no extra fully connected layer), not {self.fc_dim!r}")
        if not _is_number(self.gaussian_std) or self.gaussian_std <= 0:
            raise UserError(f"gaussian_std must be > 0, not {self.gaussian_std!r}")
        if not isinstance(self.batch_norm, bool):
            raise UserError(f"model batch_norm must be true or false, not {self.batch_norm!r}")
        if len(self.hidden) > MAX_HIDDEN_LAYERS:
            raise UserError(f"model hidden has {len(self.hidden)} layers (at most {MAX_HIDDEN_LAYERS})")

    def check_size(self, arch: str) -> None:
        """Refuse a model too large for one machine, from its parameter count estimated without building it."""
        n = self.parameter_estimate(arch)
        if n > MAX_PARAMETERS:
            raise UserError(f"model {self.name!r} would have about {_size(n)} parameters (at most "
                            f"{_size(MAX_PARAMETERS)}): use a smaller latent_dim, hidden, fc_dim or image_size")

    def check_batch(self, batch_size: int, arch: str) -> None:
        """Refuse a batch whose input tensor or activations would not fit in one machine's memory."""
        pixels = self.channels * self.image_size ** 2
        if batch_size * pixels * 4 > MAX_BATCH_INPUT_BYTES:
            raise UserError(f"a batch of {batch_size} images of {self.channels}x{self.image_size}x{self.image_size} "
                            f"needs {_size(batch_size * pixels * 4 / 2 ** 30)} GiB for its input alone (at most "
                            f"{MAX_BATCH_INPUT_BYTES // 2 ** 30} GiB): use a smaller batch_size or image_size")
        activations = batch_size * self.activation_estimate(arch) * 4
        if activations > MAX_BATCH_ACTIVATION_BYTES:
            raise UserError(f"a batch of {batch_size} would keep about {_size(activations / 2 ** 30)} GiB of "
                            f"activations (at most {MAX_BATCH_ACTIVATION_BYTES // 2 ** 30} GiB): use a smaller "
                            f"batch_size, hidden or image_size")

    def _side(self, stages: int) -> int:
        """Side of the feature map after `stages` stride-2 stages (the image is padded up first, see nets.py)."""
        return -(-self.image_size // 2 ** stages)

    def parameter_estimate(self, arch: str) -> int:
        """Weights of the encoder, heads and decoder (biases and norms left out): within a few percent."""
        hidden, latent, fc = [int(h) for h in self.hidden], int(self.latent_dim), int(self.fc_dim)
        pixels = self.channels * self.image_size ** 2
        if arch == "mlp":
            return 2 * _conv_pairs(pixels, hidden) + 3 * hidden[-1] * latent
        k2 = self.kernel_size ** 2
        body = k2 * (2 * _conv_pairs(self.channels, hidden) + hidden[0] ** 2) + 9 * hidden[0] * self.channels
        if arch == "resnet":
            body += 2 * 18 * sum(h * h for h in hidden) + 18 * hidden[0] ** 2
        flat = hidden[-1] * self._side(len(hidden)) ** 2
        heads = 2 * flat * fc + 3 * fc * latent if fc > 0 else 3 * flat * latent
        return body + heads

    def activation_estimate(self, arch: str) -> int:
        """Numbers one image keeps through a forward pass (input, every feature map, output)."""
        pixels = self.channels * self.image_size ** 2
        if arch == "mlp":
            return 2 * pixels + 2 * sum(int(h) for h in self.hidden)
        per_stage = 3 if arch == "resnet" else 1
        maps = sum(int(h) * self._side(i + 1) ** 2 for i, h in enumerate(self.hidden))
        return 2 * pixels + 2 * per_stage * maps

    def stride_stages(self) -> int:
        """Stride-2 stages of the encoder: the smallest image it takes is 2 ** stages px."""
        return len(self.hidden)

    def fill_from_data(self, image_size: int, channels: int, train_size: int) -> None:
        """The dataset decides what the images look like; the model is built for them."""
        self.image_size, self.channels = image_size, channels


@dataclass
class BetaVAEConfig(ModelConfig):
    """β-VAE (Higgins et al. 2017): recon + β·KL."""
    name: str = "beta-vae"
    # Weight on the KL term (β-TCVAE: weight on the total-correlation term).
    beta: float = 1.0
    # Steps over which the whole regulariser (β·KL; β-TCVAE: α·MI + β·TC + γ·dimension-wise KL) is
    # warmed up, its weight rising linearly from 0 to 1 (Bowman et al. 2016; Sønderby et al. 2016): the
    # encoder first learns every factor the reconstruction needs, including small ones, before the
    # penalty can close the latent dimensions they would need. 0: full weight from the start.
    warmup_steps: int = 0

    def check_fields(self) -> None:
        super().check_fields()
        _check_weights(self, ("beta",))
        if not _is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise UserError(f"warmup_steps must be an integer >= 0 (0: no warm-up), not {self.warmup_steps!r}")


@dataclass
class AnnealedVAEConfig(ModelConfig):
    """Capacity annealing (Burgess et al. 2018): recon + gamma * |KL - C|, C: 0 -> c_max over c_steps."""
    name: str = "annealed-vae"
    gamma: float = 1000.0
    c_max: float = 25.0
    c_steps: int = 100_000

    def check_fields(self) -> None:
        super().check_fields()
        _check_weights(self, ("gamma", "c_max"))
        if not _is_int(self.c_steps):
            raise UserError(f"c_steps must be an integer (<= 0: full capacity from the start), not {self.c_steps!r}")


@dataclass
class BTCVAEConfig(BetaVAEConfig):
    """β-TCVAE (Chen et al. 2018): recon + α·MI + β·TC + γ·dimension-wise KL."""
    name: str = "btcvae"
    # "mws" (minibatch weighted) or "mss" (minibatch stratified) estimate of log q(z).
    tc_estimator: str = "mws"
    # Weight on the index-code mutual information.
    alpha: float = 1.0
    # Weight on the dimension-wise KL.
    tc_gamma: float = 1.0
    # Training-set size, filled in by the trainer (the global size under DDP): log q(z) needs it.
    dataset_size: int = 0

    def check_fields(self) -> None:
        if self.tc_estimator not in TC_ESTIMATORS:
            raise UserError(f"unknown tc_estimator {self.tc_estimator!r} (choose from: {', '.join(TC_ESTIMATORS)})")
        super().check_fields()
        _check_weights(self, ("alpha", "tc_gamma"))  # beta: BetaVAEConfig
        if not _is_int(self.dataset_size) or self.dataset_size < 0:
            raise UserError(f"dataset_size must be >= 0, not {self.dataset_size!r}")

    def fill_from_data(self, image_size: int, channels: int, train_size: int) -> None:
        super().fill_from_data(image_size, channels, train_size)
        self.dataset_size = train_size


@dataclass
class VQVAEConfig(ModelConfig):
    """VQ-VAE with an EMA codebook (van den Oord et al. 2017)."""
    name: str = "vqvae"
    # Codebook size and code dimension.
    num_codes: int = 64
    code_dim: int = 16
    # Weight of the commitment loss.
    commitment: float = 0.25
    # EMA decay of the codebook and its Laplace smoothing epsilon.
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    # A code whose EMA cluster size falls below this is restarted from an encoder output.
    dead_code_threshold: float = 1e-3
    # Stride-2 stages of the encoder (latent grid = image_size / 2**vq_downsample).
    vq_downsample: int = 2

    def check_fields(self) -> None:
        super().check_fields()
        if not _is_int(self.vq_downsample) or not 1 <= self.vq_downsample <= len(self.hidden):
            raise UserError(f"vq_downsample must be between 1 and len(hidden) = {len(self.hidden)}, "
                            f"not {self.vq_downsample!r}")
        if not (_is_int(self.num_codes) and _is_int(self.code_dim)) or self.num_codes < 2 or self.code_dim < 1:
            raise UserError(f"VQ-VAE needs num_codes >= 2 and code_dim >= 1 (got {self.num_codes!r}, "
                            f"{self.code_dim!r})")
        if (not all(_is_number(v) for v in (self.ema_decay, self.ema_eps, self.commitment, self.dead_code_threshold))
                or not 0.0 <= self.ema_decay < 1.0 or self.ema_eps <= 0 or self.commitment < 0):
            raise UserError("VQ-VAE needs 0 <= ema_decay < 1, ema_eps > 0 and commitment >= 0")

    def stride_stages(self) -> int:
        return self.vq_downsample

    def parameter_estimate(self, arch: str) -> int:
        hidden = [int(h) for h in self.hidden[:self.vq_downsample]]
        width, k2 = hidden[-1], self.kernel_size ** 2
        body = k2 * (2 * _conv_pairs(self.channels, hidden) + hidden[0] ** 2) + 9 * hidden[0] * self.channels
        if arch == "resnet":
            body += 2 * 18 * sum(h * h for h in hidden) + 18 * hidden[0] ** 2
        middle = 4 * 18 * width * width + width * self.code_dim + 9 * self.code_dim * width
        return body + middle + 3 * self.num_codes * self.code_dim

    def activation_estimate(self, arch: str) -> int:
        pixels = self.channels * self.image_size ** 2
        per_stage = 3 if arch == "resnet" else 1
        hidden = [int(h) for h in self.hidden[:self.vq_downsample]]
        maps = sum(h * self._side(i + 1) ** 2 for i, h in enumerate(hidden))
        grid = self._side(self.vq_downsample) ** 2
        return 2 * pixels + 2 * per_stage * maps + 10 * hidden[-1] * grid + 2 * self.code_dim * grid


# Model name -> its config class; training/models has the same names (tests/test_models.py checks).
MODEL_CONFIGS: dict[str, type] = {
    "ae": ModelConfig,
    "vae": ModelConfig,
    "vae-mlp": ModelConfig,
    "resvae": ModelConfig,
    "beta-vae": BetaVAEConfig,
    "annealed-vae": AnnealedVAEConfig,
    "btcvae": BTCVAEConfig,
    "vqvae": VQVAEConfig,
}


def _defaults(kind: type) -> dict:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(kind)}


# Every model field of any family -> its default (a field two families share has one default in both).
FIELD_DEFAULTS: dict[str, Any] = {}
for _kind in MODEL_CONFIGS.values():
    FIELD_DEFAULTS.update({k: v for k, v in _defaults(_kind).items() if k not in FIELD_DEFAULTS})


def config_class(name) -> type:
    if not isinstance(name, str) or name not in MODEL_CONFIGS:
        raise UserError(f"unknown model {name!r} (choose from: {', '.join(MODEL_CONFIGS)})")
    return MODEL_CONFIGS[name]


def models_with_field(field_name: str) -> list[str]:
    return [name for name, kind in MODEL_CONFIGS.items() if field_name in {f.name for f in dataclasses.fields(kind)}]


def model_config_from_dict(values: dict, where: str = "") -> ModelConfig:
    """The config class of values["name"] (default "vae") built from values.

    A field of another family is dropped when it holds its default (a flat config.json carries every
    family's fields) or when the trainer fills it in from the data; any other value of one is an error,
    as is a field that no family has.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(values, dict):
        raise UserError(f"{prefix}expected a JSON object")
    name = values.get("name", ModelConfig.name)
    try:
        kind = config_class(name)
    except UserError as e:
        raise UserError(f"{prefix}{e}") from None
    unknown = sorted(set(values) - set(FIELD_DEFAULTS))
    if unknown:
        raise UserError(f"{prefix}unknown field(s) {', '.join(unknown)}")
    own = {f.name for f in dataclasses.fields(kind)}
    kept = {}
    for key, value in values.items():
        if key in own:
            kept[key] = value
        elif key not in FILLED_FROM_DATA and value != FIELD_DEFAULTS[key]:
            owners = " or ".join(repr(n) for n in models_with_field(key))
            raise UserError(f"{prefix}model {name!r} has no field {key} ({key}={value!r}): use {owners}, "
                            f"or leave {key} at its default {FIELD_DEFAULTS[key]!r}")
    return kind(**kept)


def model_config(name: str = "vae", **values) -> ModelConfig:
    """The config of model `name`, e.g. model_config("beta-vae", beta=4.0) -> BetaVAEConfig."""
    return model_config_from_dict({"name": name, **values})


def with_model_field(cfg: ModelConfig, field_name: str, value) -> ModelConfig:
    """A copy of cfg with one field set; setting `name` moves the shared fields to the new family's class."""
    return model_config_from_dict({**dataclasses.asdict(cfg), field_name: value})
