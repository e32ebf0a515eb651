"""Reading and writing run folders (docs/run-format.md).

Every file goes through `training.config.atomic_write_bytes` (temp file in the same folder, fsync,
rename), so a reader, or a run killed half-way through a write, sees a complete old file or a complete
new one. Weights are read with safetensors and checkpoints with `torch.load(weights_only=True)`: no
user file is ever unpickled.
"""
from __future__ import annotations

import glob
import importlib.util
import io
import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from .config import RunConfig, atomic_write_bytes, atomic_write_text
from .errors import UserError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_LOG_FILE = "metrics.jsonl"
DONE_FILE = "DONE"
PRIOR_WEIGHTS_FILE = "prior.safetensors"

# Everything a run writes (train, evaluate, export, train-prior): removed by `--overwrite`, so that no
# file of the old run survives next to the new weights.
RUN_FILE_PATTERNS = (
    CONFIG_FILE, WEIGHTS_FILE, CHECKPOINT_FILE, METRICS_LOG_FILE, DONE_FILE,
    "samples.png", "reconstructions.png", "samples_*.png", "reconstructions_*.png",
    "metrics.json", PRIOR_WEIGHTS_FILE, "prior.json", "latents.npz", "attributes.json",
    "*.tmp-*",
)


@dataclass
class Run:
    """A trained run: its folder, its config, its model (eval mode) and the step its weights are from."""
    path: str
    config: RunConfig
    model: Any  # training.models.base.LatentModel
    step: int
    # The learned prior of a VQ-VAE, when train-prior wrote one (whatever training.prior.load_prior returns).
    prior: Optional[Any] = None


def holds_run(path: str) -> bool:
    """True when `path` holds weights or a checkpoint (a config.json alone is a run that never started)."""
    return any(os.path.exists(os.path.join(path, name)) for name in (WEIGHTS_FILE, CHECKPOINT_FILE))


def remove_run_files(path: str) -> None:
    for pattern in RUN_FILE_PATTERNS:
        for file in glob.glob(os.path.join(glob.escape(path), pattern)):
            if os.path.isfile(file):
                os.remove(file)


def remove_stale_temp_files(path: str) -> None:
    """Temp files of a write that a killed process never finished."""
    for file in glob.glob(os.path.join(glob.escape(path), "*.tmp-*")):
        if os.path.isfile(file):
            os.remove(file)


# ---- weights (safetensors) -----------------------------------------------------------------------
def save_weights(model: torch.nn.Module, path: str, step: int) -> None:
    """The model's state_dict (buffers included) as safetensors, metadata {"step": "<step>"}."""
    # clone(): safetensors refuses tensors that share storage (tied weights); contiguous: channels_last.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    atomic_write_bytes(path, safetensors_save(tensors, metadata={"step": str(int(step))}))


def read_weights(path: str) -> tuple[dict, int]:
    """(tensors, step) from a safetensors file; UserError when it is missing or not a safetensors file."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such weights file")
    try:
        with open(path, "rb") as f:
            data = f.read()
        tensors = safetensors_load(data)
        metadata = _safetensors_metadata(data)
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})")
    try:
        step = int(metadata.get("step", 0))
    except ValueError:
        raise UserError(f"{path}: metadata 'step' is not an integer ({metadata.get('step')!r})")
    return tensors, step


def _safetensors_metadata(data: bytes) -> dict:
    # safetensors layout: 8-byte little-endian header length, then a JSON header whose
    # "__metadata__" holds the string metadata.
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    return header.get("__metadata__", {}) or {}


def load_weights(model: torch.nn.Module, path: str) -> int:
    """Load model.safetensors into `model` (in place); returns the step. Mismatches raise UserError."""
    tensors, step = read_weights(path)
    load_state_checked(model, tensors, path)
    return step


def load_state_checked(model: torch.nn.Module, state: dict, source: str) -> None:
    """load_state_dict with a one-line UserError naming the first mismatches instead of a RuntimeError."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                   for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if wrong_shape:
        problems.append(f"shapes differ (saved vs config): {'; '.join(wrong_shape[:3])}"
                        + (f" and {len(wrong_shape) - 3} more" if len(wrong_shape) > 3 else ""))
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else ""))
    if problems:
        raise UserError(f"{source}: the weights do not match the model in the config ({'; '.join(problems)})")
    model.load_state_dict(state, strict=True)


# ---- checkpoints (torch.save, read back with weights_only=True) -----------------------------------
def save_checkpoint(state: dict, path: str) -> None:
    """Resume state (tensors, numbers, strings, lists, dicts only) written atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign / pickled files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: corrupt or unreadable checkpoint ({first_line[:200]})")
    required = ("step", "model", "optimizer", "config", "rng")
    if not isinstance(state, dict) or any(k not in state for k in required):
        raise UserError(f"{path}: not a checkpoint written by this trainer (expected keys {', '.join(required)})")
    return state


# ---- small atomic helpers --------------------------------------------------------------------------
def write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_text(path: str, text: str) -> None:
    atomic_write_text(path, text)


# ---- load a finished (or in-progress) run ---------------------------------------------------------
def load_run(path: str, device: str = "cpu") -> Run:
    """Rebuild a run's model from config.json + model.safetensors (safetensors only), in eval mode."""
    from .models import build_model  # lazily: the model zoo imports more than a config reader needs

    if not os.path.isdir(path):
        raise UserError(f"{path}: no such run folder")
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise UserError(f"{path}: not a run folder (no {CONFIG_FILE})")
    config = RunConfig.load(config_path)
    weights_path = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights_path):
        raise UserError(f"{path}: no {WEIGHTS_FILE} yet (the run has not written its first checkpoint)")
    model = build_model(config.model)
    step = load_weights(model, weights_path)
    model.to(device).eval()
    return Run(path=path, config=config, model=model, step=step, prior=_load_prior_if_any(path, model))


def _load_prior_if_any(path: str, model) -> Optional[Any]:
    # The PixelCNN prior (training/prior.py) is optional: a run folder without prior.safetensors, or a
    # checkout without training/prior.py, loads fine without it.
    if not os.path.isfile(os.path.join(path, PRIOR_WEIGHTS_FILE)):
        return None
    if importlib.util.find_spec("training.prior") is None:
        return None
    from .prior import load_prior
    return load_prior(path, model)
