"""Typed run configuration, as the JSON document of a run folder's `config.json` (read and written by
training/runfolder.py).

A run is fully described by three parts kept apart, as in pythae:
`DataConfig` (which images), a `ModelConfig` (architecture + objective; one class per model
family, see training/model_configs.py) and `TrainConfig` (optimisation). `RunConfig` bundles
them with a format version so that the explorer can refuse a folder written by an incompatible
version. `same_run` says whether a run folder holds the run a config asks for.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, Optional

from .errors import UserError
from .model_configs import (FIELD_DEFAULTS, FILLED_FROM_DATA, MODEL_CONFIGS, AnnealedVAEConfig, BetaVAEConfig,
                            BTCVAEConfig, ModelConfig, VQVAEConfig, config_class, model_config,
                            model_config_from_dict, with_model_field)

FORMAT_VERSION = 1

# A config is a few levels deep; a document nested deeper than this is refused before anything walks it
# (copying, comparing or printing a deeply nested value recurses once per level and can exhaust the stack).
MAX_JSON_DEPTH = 32

# The model config classes live in model_configs.py; they are imported from here with the rest.
__all__ = ["FORMAT_VERSION", "DataConfig", "TrainConfig", "RunConfig", "ModelConfig", "BetaVAEConfig",
           "AnnealedVAEConfig", "BTCVAEConfig", "VQVAEConfig", "MODEL_CONFIGS", "config_class", "model_config",
           "model_config_from_dict", "set_field", "set_fields", "Difference", "same_run"]


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
    # Dataset-specific options, e.g. smileys {"version": 3, "correlate": ["smile", "glasses"], "correlation": 0.8,
    # "correlate_split": "test"} (training/data/smileys.py).
    options: dict = field(default_factory=dict)


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
    # Weight snapshots at about this many log-spaced steps (float16, in snapshots/), for the explorer's view
    # of how the latent space forms during training; 0 = none. See trainer.snapshot_steps.
    snapshots: int = 0


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
        check_json_depth(d, source)
        version = d.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise UserError(
                f"{source}: run format version {version!r} is not supported (this version reads {FORMAT_VERSION})")
        return cls(
            data=_build(DataConfig, d.get("data", {}), f"{source}: data"),
            model=model_config_from_dict(d.get("model", {}), f"{source}: model"),
            train=_build(TrainConfig, d.get("train", {}), f"{source}: train"),
            format_version=FORMAT_VERSION,
        )


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply lists and dicts nest in value, counted without recursion and up to limit + 1."""
    depth, level = 0, [value]
    while level and depth <= limit:
        children = [c for v in level if isinstance(v, (list, tuple, dict))
                    for c in (v.values() if isinstance(v, dict) else v)]
        if any(isinstance(v, (list, tuple, dict)) for v in level):
            depth += 1
        level = children
    return depth


def check_json_depth(value: Any, where: str) -> None:
    if json_depth(value) > MAX_JSON_DEPTH:
        raise UserError(f"{where}: nested more than {MAX_JSON_DEPTH} levels deep")


def _build(kind, values: Any, where: str):
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a JSON object")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}")
    return kind(**values)


# ---- setting fields by name (flags, --set, sweep grids) ------------------------------------------------------
# Short names of config fields: the train command's flags and the sweep's grid keys (a flag that is not
# given keeps the config's value).
FLAG_FIELDS = {
    "model": "model.name", "dataset": "data.name", "data_dir": "data.data_dir", "image_size": "data.image_size",
    "subset": "data.subset", "arch": "model.arch", "latent_dim": "model.latent_dim", "hidden": "model.hidden",
    "likelihood": "model.likelihood", "beta": "model.beta",
    "steps": "train.steps", "batch_size": "train.batch_size", "lr": "train.lr", "seed": "train.seed",
    "grad_clip": "train.grad_clip", "device": "train.device", "amp": "train.amp",
    "channels_last": "train.channels_last", "compile": "train.compile", "log_every": "train.log_every",
    "sample_every": "train.sample_every", "checkpoint_every": "train.checkpoint_every",
    "snapshots": "train.snapshots",
}


def parse_value(raw: str, where: str = "value") -> Any:
    """A value written on the command line: JSON, or the text itself when it is not JSON."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    except RecursionError:
        raise UserError(f"{where}: nested more than {MAX_JSON_DEPTH} levels deep") from None
    check_json_depth(value, where)
    return value


def parse_assignment(text: str) -> tuple[str, Any]:
    """"SECTION.FIELD=VALUE" -> (target, value)."""
    target, sep, raw = text.partition("=")
    if not sep:
        raise UserError(f"--set {text[:80]!r}: expected SECTION.FIELD=VALUE")
    return target.strip(), parse_value(raw, f"--set {target.strip()[:80]}")


SECTIONS = {"data": DataConfig, "train": TrainConfig}


def set_field(cfg: RunConfig, target: str, value) -> None:
    """Set SECTION.FIELD; a model field the chosen model does not have is an error unless value is its default."""
    section, _, name = target.partition(".")
    known = FIELD_DEFAULTS if section == "model" else {f.name for f in fields(SECTIONS[section])} \
        if section in SECTIONS else ()
    if name not in known:
        raise UserError(f"unknown config field {target!r} (fields are data.* and train.* of training/config.py, "
                        f"model.* of training/model_configs.py)")
    if section == "model":
        cfg.model = with_model_field(cfg.model, name, value)
    else:
        setattr(getattr(cfg, section), name, value)


def set_fields(cfg: RunConfig, assignments: list) -> None:
    """set_field for each (target, value), model.name first: the model decides which other fields exist."""
    first = [(t, v) for t, v in assignments if t == "model.name"]
    for target, value in first[-1:] + [(t, v) for t, v in assignments if t != "model.name"]:
        set_field(cfg, target, value)


# ---- the same run ----------------------------------------------------------------------------------------------
class Difference(NamedTuple):
    field: str        # "model.latent_dim"
    saved: Any        # the run folder's value (MISSING: the saved model has no such field)
    requested: Any


MISSING = "<absent>"

# Fields that do not change what a run computes: where the data lives, where and how fast it trains,
# how often it logs, draws and saves. train.steps is apart: more steps continue a run, fewer than the
# run has done are the caller's error to report.
NOT_PART_OF_A_RUN = {"data.data_dir", "train.device", "train.steps", "train.log_every", "train.sample_every",
                     "train.checkpoint_every", "train.grid_n", "train.compile", "train.channels_last",
                     "train.snapshots"}
# Optimiser settings that continuing a run from its checkpoint may change: from there on they steer only
# the rest of the training ("lower the learning rate and --resume"). The seed may not: the checkpoint's
# random state, not the seed, drives the rest of the run.
MAY_CHANGE_ON_RESUME = {"train.lr", "train.betas", "train.weight_decay", "train.grad_clip", "train.batch_size",
                        "train.amp"}


def same_run(saved: RunConfig, requested: RunConfig, resuming: bool = False) -> list[Difference]:
    """Differences that make the run in a folder (its config `saved`) another run than `requested`.

    An empty list: the folder holds this run (finished, or to be continued). Model fields that the trainer
    fills in from the dataset are left out (a requested config has not been filled in yet; the data
    fields that decide them are compared). With resuming=True the optimiser settings may differ too.
    """
    ignored = NOT_PART_OF_A_RUN | (MAY_CHANGE_ON_RESUME if resuming else set())
    ignored |= {f"model.{name}" for name in FILLED_FROM_DATA}
    diffs = []
    for section in ("model", "data", "train"):
        then, now = dataclasses.asdict(getattr(saved, section)), dataclasses.asdict(getattr(requested, section))
        for name in list(then) + [n for n in now if n not in then]:
            key = f"{section}.{name}"
            if key not in ignored and then.get(name, MISSING) != now.get(name, MISSING):
                diffs.append(Difference(key, then.get(name, MISSING), now.get(name, MISSING)))
    return diffs
