"""The run folder (docs/run-format.md): every file name, every write and every loader, in one place.

Train, evaluate, export, train-prior, sweep and the explorer read and write run folders only through
this module. Writes are atomic (temp file in the same folder, fsync, rename), so a reader, or a run
killed half-way through a write, sees a complete old file or a complete new one. Weights are read with
safetensors, checkpoints with `torch.load(weights_only=True)`, latent tables with `allow_pickle=False`:
no file of a run folder is ever unpickled, wherever it came from.
"""
from __future__ import annotations

import contextlib
import glob
import io
import json
import math
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save

from .config import RunConfig
from .errors import UserError
from .models import build_model, check_config, model_spec, resolve_arch
from .models.pixelcnn import GatedPixelCNN, PriorConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_LOG_FILE = "metrics.jsonl"
DONE_FILE = "DONE"
METRICS_FILE = "metrics.json"
LATENTS_FILE = "latents.npz"
ATTRIBUTES_FILE = "attributes.json"
PRIOR_WEIGHTS_FILE = "prior.safetensors"
PRIOR_JSON_FILE = "prior.json"
DECODER_FILE = "decoder.onnx"
SNAPSHOTS_DIR = "snapshots"
TIMELINE_FILE = "timeline.npz"
SAMPLES_IMAGE = "samples"
RECONSTRUCTIONS_IMAGE = "reconstructions"

PRIOR_FORMAT_VERSION = 1

# The most points a latent table may hold (docs/run-format.md): export refuses more, and a latents.npz
# with more is not loaded. The arrays of latents.npz together may declare at most MAX_LATENTS_BYTES.
MAX_LATENT_POINTS = 100_000
MAX_LATENTS_BYTES = 2 * 2 ** 30
# The arrays of timeline.npz together may declare at most this much (a few hundred KB is the usual size).
MAX_TIMELINE_BYTES = 256 * 2 ** 20

# snapshots/step_000100.safetensors: the step, zero-padded so that names sort by step.
_SNAPSHOT_NAME = re.compile(r"step_(\d{6,})\.safetensors")

# Everything a run writes (train, evaluate, export, train-prior): removed by `--overwrite`, so that no
# file of the old run survives next to the new weights.
RUN_FILE_PATTERNS = (
    CONFIG_FILE, WEIGHTS_FILE, CHECKPOINT_FILE, METRICS_LOG_FILE, DONE_FILE,
    f"{SAMPLES_IMAGE}.png", f"{RECONSTRUCTIONS_IMAGE}.png", f"{SAMPLES_IMAGE}_*.png", f"{RECONSTRUCTIONS_IMAGE}_*.png",
    METRICS_FILE, PRIOR_WEIGHTS_FILE, PRIOR_JSON_FILE, LATENTS_FILE, ATTRIBUTES_FILE, DECODER_FILE,
    TIMELINE_FILE, f"{SNAPSHOTS_DIR}/step_*.safetensors", f"{SNAPSHOTS_DIR}/*.tmp-*",
    "*.tmp-*",
)


@dataclass
class Run:
    """A trained run: its folder, its config, its model (eval mode) and the step its weights are from."""
    path: str
    config: RunConfig
    model: Any  # training.models.base.LatentModel
    step: int
    # The learned PixelCNN prior of a VQ-VAE, when train-prior wrote one.
    prior: Optional[GatedPixelCNN] = None


# ---- atomic writes -----------------------------------------------------------------------------------
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


def write_json(path: str, obj: Any, indent: Optional[int] = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


# ---- the folder as a whole ---------------------------------------------------------------------------
def holds_run(path: str) -> bool:
    """True when `path` holds weights or a checkpoint (a config.json alone is a run that never started)."""
    return any(os.path.exists(os.path.join(path, name)) for name in (WEIGHTS_FILE, CHECKPOINT_FILE))


def is_run_folder(path: str) -> bool:
    """A folder the explorer can show: a config and inference weights."""
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isfile(os.path.join(path, WEIGHTS_FILE))


def is_finished(path: str) -> bool:
    return os.path.isfile(os.path.join(path, DONE_FILE))


def mark_finished(path: str, step: int) -> None:
    atomic_write_text(os.path.join(path, DONE_FILE), f"{step}\n")


def clear_finished(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(path, DONE_FILE))


def remove_run_files(path: str) -> None:
    for pattern in RUN_FILE_PATTERNS:
        for file in glob.glob(os.path.join(glob.escape(path), pattern)):
            if os.path.isfile(file):
                os.remove(file)
    with contextlib.suppress(OSError):  # only when empty: a file someone else put there stays
        os.rmdir(os.path.join(path, SNAPSHOTS_DIR))


def remove_stale_temp_files(path: str) -> None:
    """Temp files of a write that a killed process never finished."""
    for folder in (path, os.path.join(path, SNAPSHOTS_DIR)):
        for file in glob.glob(os.path.join(glob.escape(folder), "*.tmp-*")):
            if os.path.isfile(file):
                os.remove(file)


def check_run_folder(path: str) -> Optional[str]:
    """Cheap checks before loading (the config parses and describes a model one machine can hold, the
    weights file is sound safetensors); the one-line reason a folder cannot be loaded, or None."""
    try:
        config = load_config(path)
    except UserError as e:
        return " ".join(str(e).replace(path + os.sep, "").split())
    except OSError as e:
        return f"{CONFIG_FILE}: {e.strerror or e}"
    try:
        check_model_config(config.model)
    except UserError as e:
        return f"{CONFIG_FILE}: {' '.join(str(e).split())}"
    try:
        read_weights_metadata(os.path.join(path, WEIGHTS_FILE))
        check_weights_fit(config.model, os.path.join(path, WEIGHTS_FILE))
    except UserError as e:
        return " ".join(str(e).replace(path + os.sep, "").split())
    return None


def check_model_config(cfg) -> None:
    """Every check building the model would make (sizes included), without allocating it."""
    check_config(cfg, model_spec(cfg.name), resolve_arch(cfg))


def check_weights_fit(cfg, weights_path: str) -> None:
    """Refuse a config whose model could not fit in its weights file, before the model is built: every
    parameter takes at least 2 bytes on disk, so a model estimated larger than the file in bytes is not
    the model the weights are for (and building it would allocate for nothing)."""
    estimate = cfg.parameter_estimate(resolve_arch(cfg))
    size = os.path.getsize(weights_path) if os.path.isfile(weights_path) else None
    if size is not None and estimate > size:
        raise UserError(f"{weights_path}: the weights do not match the model in the config (the config describes "
                        f"about {estimate:,} parameters, the file holds {size:,} bytes)")


# ---- weights (safetensors) -----------------------------------------------------------------------------
def save_weights(model: torch.nn.Module, path: str, step: int) -> None:
    """The model's state_dict (buffers included) as safetensors, metadata {"step": "<step>"}."""
    # clone(): safetensors refuses tensors that share storage (tied weights); contiguous: channels_last.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    atomic_write_bytes(path, safetensors_save(tensors, metadata={"step": str(int(step))}))


def _open_safetensors(path: str, read_tensors: bool) -> tuple[dict, dict]:
    """(tensors or {}, metadata) of a safetensors file; the library validates the header and offsets."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such weights file")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if read_tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable safetensors file ({first_line[:200]})") from None
    return tensors, metadata


def read_weights_metadata(path: str) -> dict:
    return _open_safetensors(path, read_tensors=False)[1]


def read_weights(path: str) -> tuple[dict, int]:
    """(tensors, step) from a safetensors file; UserError when it is missing or not a safetensors file."""
    tensors, metadata = _open_safetensors(path, read_tensors=True)
    try:
        step = int(metadata.get("step", 0))
    except ValueError:
        raise UserError(f"{path}: metadata 'step' is not an integer ({metadata.get('step')!r})") from None
    return tensors, step


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


# ---- checkpoints (torch.save, read back with weights_only=True) -------------------------------------------
def save_checkpoint(state: dict, path: str) -> None:
    """Resume state (tensors, numbers, strings, lists, dicts only) written atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"{path}: no checkpoint to resume from")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of a foreign file; the refusal below says all there is.
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: corrupt or unreadable checkpoint ({_unpickling_reason(str(e))})") from None
    except Exception as e:  # torch raises many types for truncated / foreign / pickled files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: corrupt or unreadable checkpoint ({first_line[:200]})") from None
    required = ("step", "model", "optimizer", "config", "rng")
    if not isinstance(state, dict) or any(k not in state for k in required):
        raise UserError(f"{path}: not a checkpoint written by this trainer (expected keys {', '.join(required)})")
    return state


def _unpickling_reason(message: str) -> str:
    """Our own reason for a refused pickle. torch's message advises loading with weights_only=False,
    which would run the file's code: that advice is never passed on."""
    detail = re.search(r"Unsupported (global: GLOBAL \S+|operand \d+)", message)
    what = f": {detail.group(0).replace(' was', '')}" if detail else ""
    return f"it holds Python objects other than tensors, numbers and strings{what}; checkpoints are never unpickled"


# ---- the training log (metrics.jsonl) and image grids --------------------------------------------------------
def append_log(run_dir: str, record: dict) -> None:
    path = os.path.join(run_dir, METRICS_LOG_FILE)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def truncate_log(run_dir: str, step: int) -> None:
    """Drop log lines past the checkpoint's step (and a line torn by a kill) so one history remains."""
    path = os.path.join(run_dir, METRICS_LOG_FILE)
    if not os.path.exists(path):
        return
    kept = [json.dumps(r) for r in read_log(run_dir) if isinstance(r.get("step"), int) and r["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_log(run_dir: str) -> list[dict]:
    """The records of metrics.jsonl, oldest first ([] when there is none); a line torn by a kill is skipped."""
    path = os.path.join(run_dir, METRICS_LOG_FILE)
    if not os.path.isfile(path):
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def logged_images_per_s(records: list[dict], after_step: int, batch_size: int) -> float:
    """Training throughput over the logged steps after `after_step`, from the records' `images_per_s`.

    Each record's images_per_s covers the steps since the record before it, so the windows are added up.
    """
    images = seconds = 0.0
    previous = after_step
    for record in records:
        if record["step"] > after_step:
            window = (record["step"] - previous) * batch_size
            images, seconds, previous = images + window, seconds + window / record["images_per_s"], record["step"]
    if not seconds:
        raise ValueError(f"no logged steps after step {after_step}")
    return images / seconds


def write_grid_png(run_dir: str, name: str, step: int, png: bytes) -> None:
    """`<name>_<step>.png` (the history) and `<name>.png` (the latest)."""
    atomic_write_bytes(os.path.join(run_dir, f"{name}_{step}.png"), png)
    atomic_write_bytes(os.path.join(run_dir, f"{name}.png"), png)


# ---- config --------------------------------------------------------------------------------------------------
def write_config(path: str, config: RunConfig) -> None:
    write_json(path, config.to_dict())


def read_config(path: str) -> RunConfig:
    """A RunConfig JSON file: a run's config.json or a preset. UserError when it cannot be used."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such config file")
    return RunConfig.from_dict(read_json_object(path), source=path)


def save_config(run_dir: str, config: RunConfig) -> None:
    write_config(os.path.join(run_dir, CONFIG_FILE), config)


def load_config(run_dir: str) -> RunConfig:
    return read_config(os.path.join(run_dir, CONFIG_FILE))


# ---- metrics.json ----------------------------------------------------------------------------------------------
# Every score of metrics.json by one name, and where it sits in the document (docs/run-format.md).
SCORE_PATHS = {
    "elbo": ("elbo",), "recon": ("recon",), "kl": ("kl",), "iw_nll": ("iw_nll",), "iw_k": ("iw_k",),
    "bits_per_dim": ("bits_per_dim",), "mse": ("mse",), "psnr": ("psnr",), "active_units": ("active_units",),
    "latent_size": ("latent_size",),
    "perplexity": ("vq", "perplexity"), "codes_used": ("vq", "codes_used"),
    "prior_bits_per_code": ("vq", "prior_bits_per_code"), "nll_with_prior": ("vq", "nll_with_prior"),
    "mig": ("disentanglement", "mig"), "factorvae": ("disentanglement", "factorvae"),
    "dci_disentanglement": ("disentanglement", "dci", "disentanglement"),
    "dci_completeness": ("disentanglement", "dci", "completeness"),
    "dci_informativeness": ("disentanglement", "dci", "informativeness"),
    "dci_informativeness_test": ("disentanglement", "dci", "informativeness_test"),
    "betavae": ("disentanglement", "betavae"), "metric_scale": ("disentanglement", "settings", "scale"),
    "shape_iou_square": ("shape_iou", "by_shape", "square"), "shape_iou_ellipse": ("shape_iou", "by_shape", "ellipse"),
    "shape_iou_heart": ("shape_iou", "by_shape", "heart"), "shape_iou_worst": ("shape_iou", "worst"),
    "mig_seed_mean": ("disentanglement_seeds", "mean", "mig"),
    "factorvae_seed_mean": ("disentanglement_seeds", "mean", "factorvae"),
    "sample_confident_share": ("sample_quality", "confident_share"),
    "sample_classifier_accuracy": ("sample_quality", "classifier", "accuracy"),
    "n_train": ("data", "n_train"), "binarize_seed": ("data", "binarize_seed"),
}


@dataclass(frozen=True)
class Metrics:
    """metrics.json, read through named accessors (the document itself stays in `doc`)."""
    doc: dict

    def score(self, name: str) -> Optional[float]:
        """A finite number, or None where the run has no such score (or the value is not a number)."""
        value: Any = self.doc
        for key in SCORE_PATHS[name]:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return value

    def scores(self) -> dict:
        """Every score this run has: name -> number."""
        found = {name: self.score(name) for name in SCORE_PATHS}
        return {name: value for name, value in found.items() if value is not None}

    def field(self, name: str) -> Any:
        """A top-level entry that is not a score (run, model, dataset, step, seed, split, n_test, versions)."""
        return self.doc.get(name)

    @property
    def step(self) -> Optional[int]:
        step = self.doc.get("step")
        return step if isinstance(step, int) and not isinstance(step, bool) else None

    @property
    def disentanglement(self) -> Optional[dict]:
        value = self.doc.get("disentanglement")
        return value if isinstance(value, dict) else None

    @property
    def binarize(self) -> Optional[str]:
        """How the images were binarised ("none", "dynamic"; data.options.binarize), None when not recorded."""
        data = self.doc.get("data")
        value = data.get("binarize") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    @property
    def kl_per_dim(self) -> Optional[list]:
        value = self.doc.get("kl_per_dim")
        return value if isinstance(value, list) else None


def write_metrics(run_dir: str, doc: dict) -> None:
    write_json(os.path.join(run_dir, METRICS_FILE), doc)


def read_metrics(run_dir: str) -> Metrics:
    """metrics.json of a run; UserError when it is missing or not a JSON object."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{run_dir}: no {METRICS_FILE} yet (run `python -m training evaluate {run_dir}`)")
    doc = read_json_object(path)
    return Metrics(doc)


def read_json_object(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise UserError(f"{os.path.basename(path)}: cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"{path}: not valid JSON ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a JSON object")
    return doc


# ---- latents.npz and attributes.json ------------------------------------------------------------------------
def save_latents(run_dir: str, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(os.path.join(run_dir, LATENTS_FILE), buffer.getvalue())


def load_latents(run_dir: str, latent_dim: Optional[int] = None) -> dict:
    """latents.npz as a dict of arrays (never unpickled); with latent_dim, checked against the layout of
    docs/run-format.md (UserError naming the first problem). mu and xy come back as float32."""
    path = os.path.join(run_dir, LATENTS_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (run `python -m training export RUN`)")
    arrays = read_npz(path, check_latents_size)
    if latent_dim is not None:
        problem = latents_problem(arrays, latent_dim)
        if problem:
            raise UserError(f"{LATENTS_FILE} ignored: {problem}")
    if "mu" in arrays:
        arrays["mu"] = arrays["mu"].astype(np.float32, copy=False)  # float16 for VQ-VAE grids on disk
    if "xy" in arrays:
        arrays["xy"] = arrays["xy"].astype(np.float32, copy=False)
    return arrays


def npz_shapes(path: str) -> dict:
    """name -> (shape, dtype) of every array in an .npz, read from the .npy headers of its zip members
    without reading (or decompressing) any array data."""
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
            shapes[info.filename.removesuffix(".npy")] = (tuple(int(s) for s in shape), dtype)
    return shapes


def read_npz(path: str, check_headers: Callable[[dict], None]) -> dict:
    """Every array of an .npz (never unpickled), after `check_headers` has seen the (shape, dtype) its
    headers declare: it raises UserError to refuse the file before any array is read."""
    try:
        check_headers(npz_shapes(path))
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except UserError:
        raise
    except Exception as e:  # zip/format errors, object arrays refused by allow_pickle=False, ...
        text = " ".join((type(e).__name__ + ": " + str(e)).split())[:200]
        raise UserError(f"{os.path.basename(path)} unreadable ({text})") from None


def declared_bytes(shapes: dict) -> int:
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in shapes.values())


def check_latents_size(shapes: dict) -> None:
    """Refuse a latent table with more than MAX_LATENT_POINTS rows or more than MAX_LATENTS_BYTES in all,
    from the sizes its headers declare: a small file declaring a huge array never gets allocated."""
    for key in ("mu", "xy"):
        shape = shapes.get(key, ((),))[0]
        if shape and shape[0] > MAX_LATENT_POINTS:
            raise UserError(f"{LATENTS_FILE} ignored: {key} holds {shape[0]:,} points (at most "
                            f"{MAX_LATENT_POINTS:,}; export fewer with `python -m training export --n`)")
    declared = declared_bytes(shapes)
    if declared > MAX_LATENTS_BYTES:
        raise UserError(f"{LATENTS_FILE} ignored: its arrays declare {declared / 2 ** 30:.3g} GiB (at most "
                        f"{MAX_LATENTS_BYTES / 2 ** 30:.3g} GiB)")


def latents_problem(a: dict, latent_dim: int) -> Optional[str]:
    """What makes a latent table unusable for a model with `latent_dim` latents, or None."""
    for key in ("mu", "xy"):
        if key not in a:
            return f"missing array {key!r}"
    mu, xy = a["mu"], a["xy"]
    if mu.ndim != 2 or mu.shape[1] != latent_dim:
        return f"mu has shape {mu.shape}, expected (N, {latent_dim})"
    n = mu.shape[0]
    if n == 0:
        return "no points"
    if xy.shape != (n, 2):
        return f"xy has shape {xy.shape}, expected ({n}, 2)"
    for key in ("mu", "xy", "logvar", "labels", "kl_per_dim"):
        if key in a and (a[key].dtype.kind not in "fiu" or not np.all(np.isfinite(a[key]))):
            return f"{key} holds non-numeric or non-finite values"
    if "logvar" in a and a["logvar"].shape != mu.shape:
        return f"logvar has shape {a['logvar'].shape}, expected {mu.shape}"
    for key in ("index", "split", "labels", "thumbs", "codes"):
        if key in a and (a[key].ndim == 0 or a[key].shape[0] != n):
            return f"{key} has {a[key].shape[0] if a[key].ndim else 0} rows, expected {n}"
    if "kl_per_dim" in a and a["kl_per_dim"].shape != (latent_dim,):
        return f"kl_per_dim has shape {a['kl_per_dim'].shape}, expected ({latent_dim},)"
    if "labels" in a:
        k = len(a.get("label_names", []))
        if a["labels"].ndim != 2 or a["labels"].shape[1] != k:
            return f"labels has shape {a['labels'].shape}, expected ({n}, {k})"
    if "thumbs" in a and (a["thumbs"].ndim != 4 or a["thumbs"].dtype != np.uint8):
        return "thumbs must be uint8 (N, C, h, w)"
    return None


def save_attributes(run_dir: str, doc: dict) -> None:
    write_json(os.path.join(run_dir, ATTRIBUTES_FILE), doc, indent=None)


def load_attributes(run_dir: str, latent_dim: int) -> tuple[dict, list]:
    """attributes.json with only the usable vectors, and a one-line note for each one left out."""
    path = os.path.join(run_dir, ATTRIBUTES_FILE)
    doc = read_json_object(path)
    attrs = doc.get("attributes")
    if not isinstance(attrs, dict):
        raise UserError(f"{ATTRIBUTES_FILE} ignored: no 'attributes' object")
    kept, notes = {}, []
    for name, entry in attrs.items():
        reason = _attribute_problem(entry, latent_dim)
        if reason:
            notes.append(f"attribute {name!r} ignored: {reason}")
        else:
            kept[str(name)] = entry
    return {**doc, "attributes": kept}, notes


def _attribute_problem(entry: Any, latent_dim: int) -> Optional[str]:
    if not isinstance(entry, dict):
        return "not an object"
    for part in (entry, entry.get("corrected")):
        if part is None:
            continue
        if not isinstance(part, dict):
            return "'corrected' is not an object"
        v = part.get("vector")
        if not isinstance(v, list) or len(v) != latent_dim:
            return f"vector must hold {latent_dim} numbers"
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
            return "vector holds non-finite or non-numeric values"
    return None


# ---- decoder.onnx ----------------------------------------------------------------------------------------------
# The first bytes of every ONNX file the exporter writes: a protobuf ModelProto starts with its ir_version field
# (field 1, varint). A cheap check that a file is not something else renamed, without needing the onnx package.
_ONNX_FIRST_BYTE = 0x08


def save_decoder(run_dir: str, data: bytes) -> None:
    """decoder.onnx: the bytes of `training.onnx_decoder.export_decoder`."""
    atomic_write_bytes(os.path.join(run_dir, DECODER_FILE), data)


def has_decoder_file(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, DECODER_FILE))


def load_decoder(run_dir: str) -> bytes:
    """decoder.onnx as bytes (for onnxruntime or a browser); UserError when it is missing or not ONNX."""
    path = os.path.join(run_dir, DECODER_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (run `python -m training export RUN --decoder-only`)")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"{DECODER_FILE}: cannot be read ({e.strerror or e})") from None
    if not data or data[0] != _ONNX_FIRST_BYTE:
        raise UserError(f"{path}: not an ONNX model")
    return data


# ---- weight snapshots (snapshots/step_NNNNNN.safetensors) and timeline.npz ----------------------------------
def snapshot_path(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, SNAPSHOTS_DIR, f"step_{int(step):06d}.safetensors")


def save_snapshot(run_dir: str, model: torch.nn.Module, step: int) -> None:
    """The model's state_dict at `step` in float16 (half the bytes of the weights; the timeline only draws
    from it). A tensor that float16 cannot hold (a value beyond 65504, e.g. a
    large EMA statistic) stays float32; integer buffers stay as they are. Metadata {"step"}."""
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous().clone()
        if t.is_floating_point():
            half = t.to(torch.float16)
            t = half if bool(torch.isfinite(half).all()) or not bool(torch.isfinite(t).all()) else t.float()
        tensors[name] = t
    folder = os.path.join(run_dir, SNAPSHOTS_DIR)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {folder}: {e.strerror or e}") from None
    # One metadata key: safetensors writes the metadata map in no fixed order, and a resumed run must write
    # the same bytes as one never interrupted.
    atomic_write_bytes(snapshot_path(run_dir, step), safetensors_save(tensors, metadata={"step": str(int(step))}))


def list_snapshots(run_dir: str) -> list[int]:
    """The steps of the run's snapshots, ascending (from the file names; [] without a snapshots folder)."""
    try:
        names = os.listdir(os.path.join(run_dir, SNAPSHOTS_DIR))
    except OSError:
        return []
    found = (_SNAPSHOT_NAME.fullmatch(name) for name in names)
    return sorted(int(m.group(1)) for m in found if m)


def remove_snapshots_after(run_dir: str, step: int) -> None:
    """Drop snapshots past a checkpoint's step on resume: a killed run wrote them in a history that the
    resumed run computes again (with the settings it resumes with), as truncate_log does for the log."""
    for later in (s for s in list_snapshots(run_dir) if s > step):
        with contextlib.suppress(FileNotFoundError):
            os.remove(snapshot_path(run_dir, later))


def load_snapshot(run_dir: str, step: int, config: Optional[RunConfig] = None, device: str = "cpu"):
    """The run's model with the weights of its snapshot at `step`, widened to float32, in eval mode.
    config: the run's config when the caller has it (else config.json is read and checked)."""
    if config is None:
        config = load_config(run_dir)
        check_model_config(config.model)
    path = snapshot_path(run_dir, step)
    tensors, saved_step = read_weights(path)
    if saved_step != int(step):
        raise UserError(f"{path}: its metadata says step {saved_step}, its name step {int(step)}")
    model = build_model(config.model)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    load_state_checked(model, tensors, path)
    return model.to(device).eval()


def has_timeline_file(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, TIMELINE_FILE))


def save_timeline(run_dir: str, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(os.path.join(run_dir, TIMELINE_FILE), buffer.getvalue())


def check_timeline_size(shapes: dict) -> None:
    declared = declared_bytes(shapes)
    if declared > MAX_TIMELINE_BYTES:
        raise UserError(f"{TIMELINE_FILE} ignored: its arrays declare {declared / 2 ** 20:.3g} MiB (at most "
                        f"{MAX_TIMELINE_BYTES / 2 ** 20:.3g} MiB)")


def load_timeline(run_dir: str) -> dict:
    """timeline.npz as a dict of arrays (never unpickled), checked against docs/run-format.md's layout;
    UserError naming the first problem. Sizes are checked from the headers before anything is read."""
    path = os.path.join(run_dir, TIMELINE_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (train with `--snapshots 10`, then run `python -m training export RUN`)")
    arrays = read_npz(path, check_timeline_size)
    problem = timeline_problem(arrays)
    if problem:
        raise UserError(f"{TIMELINE_FILE} ignored: {problem}")
    return arrays


def is_codebook_timeline(arrays: dict) -> bool:
    """A VQ-VAE's timeline: codebook use (code_counts) instead of KL per dimension, no prior draws."""
    return "code_counts" in arrays


def timeline_problem(a: dict) -> Optional[str]:
    """What makes a timeline unusable, or None. Two kinds: a model with Gaussian latents records
    kl_per_dim, a VQ-VAE code_counts with its perplexity and codes_used; a file holds exactly one."""
    for key in ("steps", "inputs", "reconstructions"):
        if key not in a:
            return f"missing array {key!r}"
    steps = a["steps"]
    if steps.ndim != 1 or steps.size == 0 or steps.dtype.kind not in "iu" or np.any(np.diff(steps) <= 0):
        return "steps must be a non-empty increasing list of whole numbers"
    s = steps.size
    if ("kl_per_dim" in a) == is_codebook_timeline(a):
        return "it must hold either kl_per_dim (Gaussian latents) or code_counts (a VQ-VAE), one of the two"
    problem = codebook_timeline_problem(a, s) if is_codebook_timeline(a) else kl_timeline_problem(a, s)
    if problem:
        return problem
    inputs = a["inputs"]
    if inputs.ndim != 4 or inputs.dtype != np.uint8 or inputs.shape[0] == 0 or inputs.shape[1] not in (1, 3):
        return "inputs must be uint8 (K, C, h, w) with C 1 or 3"
    for key in ("reconstructions", "samples"):
        if key in a:
            x = a[key]
            if x.dtype != np.uint8 or x.ndim != 5 or x.shape[0] != s or x.shape[2:] != inputs.shape[1:] \
                    or x.shape[1] == 0:
                return f"{key} must be uint8 ({s}, n, {', '.join(map(str, inputs.shape[1:]))}), got {x.shape}"
    if a["reconstructions"].shape[1] != inputs.shape[0]:
        return f"reconstructions must hold one image per input ({inputs.shape[0]})"
    return None


def kl_timeline_problem(a: dict, s: int) -> Optional[str]:
    kl = a["kl_per_dim"]
    if kl.ndim != 2 or kl.shape[0] != s or kl.dtype.kind != "f" or not np.all(np.isfinite(kl)):
        return f"kl_per_dim must be finite numbers of shape ({s}, D), got {kl.shape}"
    return None


def codebook_timeline_problem(a: dict, s: int) -> Optional[str]:
    counts = a["code_counts"]
    if counts.ndim != 2 or counts.shape[0] != s or counts.shape[1] == 0 or counts.dtype.kind not in "iu" \
            or np.any(counts < 0):
        return f"code_counts must be whole numbers >= 0 of shape ({s}, K), got {counts.shape} {counts.dtype}"
    if "samples" in a:
        return "a VQ-VAE timeline (code_counts) has no samples: the model has no N(0, I) prior"
    num_codes = counts.shape[1]
    # perplexity lies in [1, K] and codes_used in [0, 1]; the slack absorbs their float32 rounding.
    for key, low, high in (("perplexity", 1.0, num_codes), ("codes_used", 0.0, 1.0)):
        if key not in a:
            return f"missing array {key!r} (a VQ-VAE timeline records it next to code_counts)"
        x = a[key]
        if x.shape != (s,) or x.dtype.kind != "f" or not np.all(np.isfinite(x)) \
                or np.any(x < low - 1e-3) or np.any(x > high + 1e-3):
            return f"{key} must be ({s},) numbers in [{low:g}, {high:g}], got shape {x.shape}"
    return None


# ---- the PixelCNN prior of a VQ-VAE -------------------------------------------------------------------------
def save_prior(run_dir: str, prior: GatedPixelCNN, summary: dict) -> None:
    """prior.safetensors (weights + config in its metadata) then prior.json, each atomically."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in prior.state_dict().items()}
    metadata = {"format_version": str(PRIOR_FORMAT_VERSION), "config": json.dumps(vars(prior.config)),
                "bits_per_code": repr(summary.get("bits_per_code"))}
    atomic_write_bytes(os.path.join(run_dir, PRIOR_WEIGHTS_FILE), safetensors_save(tensors, metadata=metadata))
    write_json(os.path.join(run_dir, PRIOR_JSON_FILE), summary)


def has_prior_file(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, PRIOR_WEIGHTS_FILE))


def load_prior(run_dir: str, model) -> GatedPixelCNN:
    """Rebuild the prior from prior.safetensors, check it fits the model's codebook and grid, attach it."""
    path = os.path.join(run_dir, PRIOR_WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{run_dir}: no {PRIOR_WEIGHTS_FILE} (run `python -m training train-prior RUN`)")
    if not is_vq_model(model):
        raise UserError(f"{path}: a PixelCNN prior belongs to a VQ-VAE run, this model has no code grid")
    state, metadata = _open_safetensors(path, read_tensors=True)
    try:
        if metadata.get("format_version") != str(PRIOR_FORMAT_VERSION):
            raise UserError(f"{path}: prior format version {metadata.get('format_version')!r} is not supported")
        cfg = PriorConfig(**json.loads(metadata["config"]))
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise UserError(f"{path}: not a prior written by train-prior ({type(e).__name__}: {e})") from None
    _, height, width = model.latent_shape
    expected = (int(model.config.num_codes), int(height), int(width))
    if (cfg.num_codes, cfg.height, cfg.width) != expected:
        raise UserError(f"{path}: the prior is for {cfg.num_codes} codes on a {cfg.height}x{cfg.width} grid, "
                        f"the model has {expected[0]} codes on a {expected[1]}x{expected[2]} grid")
    prior = GatedPixelCNN(cfg)
    try:
        prior.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{path}: the weights do not match the prior's config ({str(e).splitlines()[0]})") from None
    prior.to(next(model.parameters()).device).eval()
    model.attach_prior(prior)
    return prior


def is_vq_model(model) -> bool:
    return callable(getattr(model, "attach_prior", None)) and callable(getattr(model, "decode_codes", None))


# ---- load a finished (or in-progress) run -----------------------------------------------------------------
def load_run(path: str, device: str = "cpu") -> Run:
    """Rebuild a run's model from config.json + model.safetensors (safetensors only), in eval mode, with
    its PixelCNN prior attached when the folder has one."""
    if not os.path.isdir(path):
        raise UserError(f"{path}: no such run folder")
    if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
        raise UserError(f"{path}: not a run folder (no {CONFIG_FILE})")
    config = load_config(path)
    weights_path = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights_path):
        raise UserError(f"{path}: no {WEIGHTS_FILE} yet (the run has not written its first checkpoint)")
    check_model_config(config.model)
    read_weights_metadata(weights_path)  # a file that is not safetensors is named as such, whatever its size
    check_weights_fit(config.model, weights_path)
    model = build_model(config.model)
    step = load_weights(model, weights_path)
    model.to(device).eval()
    prior = load_prior(path, model) if has_prior_file(path) else None
    return Run(path=path, config=config, model=model, step=step, prior=prior)
