"""Run discovery and loading for the explorer.

A `RunRegistry` finds run folders under a few root folders once, lists them by a display name, and loads
a run (model, latent table, attributes, metrics, prior) the first time someone asks for it. Loaded runs
are cached for the life of the process and shared by every user of the app, so loading is guarded by a
lock and the loaded objects are treated as read-only.

Security: the UI passes run *names*, never paths. A name is looked up in the dictionary built at
discovery; anything else (`../x`, `/etc`, a typo) is refused with `UserError`. No user string is ever
joined into a path. Run folders are only read, never written.
"""
from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from training.config import RunConfig
from training.errors import UserError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LATENTS_FILE = "latents.npz"
ATTRIBUTES_FILE = "attributes.json"
METRICS_FILE = "metrics.json"
PRIOR_FILE = "prior.safetensors"
DONE_FILE = "DONE"

# Folder names never searched for runs.
_SKIP_DIRS = {"__pycache__", "node_modules"}

# Metrics shown on the model card, in this order: (label, path into metrics.json, format).
_CARD_METRICS = [
    ("ELBO (nats)", ("elbo",), "{:.2f}"),
    ("reconstruction (nats)", ("recon",), "{:.2f}"),
    ("KL (nats)", ("kl",), "{:.2f}"),
    ("IW NLL (nats)", ("iw_nll",), "{:.2f}"),
    ("bits/dim", ("bits_per_dim",), "{:.3f}"),
    ("MSE", ("mse",), "{:.4f}"),
    ("PSNR (dB)", ("psnr",), "{:.2f}"),
    ("active units", ("active_units",), "{}"),
    ("codebook perplexity", ("vq", "perplexity"), "{:.1f}"),
    ("codes used", ("vq", "codes_used"), "{:.0%}"),
    ("MIG", ("disentanglement", "mig"), "{:.3f}"),
    ("FactorVAE score", ("disentanglement", "factorvae"), "{:.3f}"),
    ("DCI disentanglement", ("disentanglement", "dci", "disentanglement"), "{:.3f}"),
    ("BetaVAE score", ("disentanglement", "betavae"), "{:.3f}"),
]


@dataclass
class LoadedRun:
    """Everything the explorer needs from one run folder, loaded once and shared (treat as read-only).

    latents:    arrays of latents.npz (see docs/run-format.md) or None when the run was not exported.
    attributes: the parsed attributes.json or None.
    metrics:    the parsed metrics.json or None.
    has_prior:  True when samples can be drawn (VAE family: N(0, I); VQ-VAE: a trained PixelCNN prior).
    latent_dim: flattened latent size D (VQ-VAE: code_dim * h * w).
    problems:   one-line notes about optional files that could not be used (shown on the card).
    """
    name: str
    path: str
    config: RunConfig
    model: Any  # training.models.base.LatentModel, eval mode, on the CPU
    latents: Optional[dict]
    attributes: Optional[dict]
    metrics: Optional[dict]
    has_prior: bool
    latent_dim: int
    label_names: list
    label_kinds: list = field(default_factory=list)
    latent_shape: tuple = ()
    step: Optional[int] = None
    done: bool = False
    prior: Any = None  # the VQ-VAE's PixelCNN prior (training.prior), or None
    problems: list = field(default_factory=list)
    # Squared norms of latents["mu"] rows, precomputed for fast nearest-neighbour search.
    mu_sqnorm: Optional[np.ndarray] = None

    @property
    def is_vq(self) -> bool:
        return self.config.model.name == "vqvae"

    @property
    def n_points(self) -> int:
        return 0 if self.latents is None else int(self.latents["mu"].shape[0])

    @property
    def attribute_names(self) -> list:
        if not self.attributes:
            return []
        return list(self.attributes.get("attributes", {}))

    def card(self) -> dict:
        """Model card: what was trained on what, and how well it does (JSON-serialisable)."""
        m = self.config.model
        card = {
            "name": self.name,
            "dataset": self.config.data.name,
            "image size": m.image_size,
            "channels": m.channels,
            "model": m.name,
            "arch": m.arch or getattr(self.model, "arch", None),
            "latent size": self.latent_dim,
            "latent shape": list(self.latent_shape),
            "likelihood": m.likelihood,
            "training steps": self.step,
            "finished": self.done,
            "batch size": self.config.train.batch_size,
            "exported points": self.n_points,
            "attributes": self.attribute_names,
            "samples": _samples_note(m.name, self.has_prior),
        }
        if m.name in ("beta-vae", "btcvae"):
            card["beta"] = m.beta
        if m.name == "annealed-vae":
            card["capacity"] = f"gamma={m.gamma:g}, C_max={m.c_max:g}"
        if m.name == "vqvae":
            card["codebook"] = f"{m.num_codes} codes of dim {m.code_dim}"
        card["metrics"] = self.key_metrics()
        if self.problems:
            card["problems"] = list(self.problems)
        return card

    def key_metrics(self) -> dict:
        """The headline numbers of metrics.json that exist for this run (label -> formatted string)."""
        out = {}
        if not self.metrics:
            return out
        for label, keys, fmt in _CARD_METRICS:
            value = _dig(self.metrics, keys)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            out[label] = fmt.format(value)
        if out and "split" in self.metrics:
            out["evaluated on"] = f"{self.metrics.get('split')} split ({self.metrics.get('n_test', '?')} images)"
        return out

    def card_markdown(self) -> str:
        c = self.card()
        lines = [f"### {_md(c['name'])}", "", "| | |", "|---|---|"]
        arch = f" ({c['arch']})" if c["arch"] else ""
        lines.append(f"| model | {_md(c['model'])}{_md(arch)} |")
        lines.append(f"| dataset | {_md(c['dataset'])}, {c['image size']}×{c['image size']}×{c['channels']} |")
        shape = "×".join(str(s) for s in c["latent shape"])
        lines.append(f"| latent | {c['latent size']}" + (f" ({shape})" if len(c["latent shape"]) > 1 else "") + " |")
        lines.append(f"| likelihood | {_md(c['likelihood'])} |")
        for key in ("beta", "capacity", "codebook"):
            if key in c:
                lines.append(f"| {key} | {_md(str(c[key]))} |")
        steps = "?" if c["training steps"] is None else f"{c['training steps']:,}"
        lines.append(f"| training steps | {steps}" + ("" if c["finished"] else " (not finished)") + " |")
        lines.append(f"| exported points | {c['exported points']:,} |" if self.latents is not None
                     else "| exported points | not exported (run `python -m training export`) |")
        lines.append(f"| samples | {_md(c['samples'])} |")
        if c["attributes"]:
            lines.append(f"| attributes | {_md(', '.join(c['attributes']))} |")
        for label, value in c["metrics"].items():
            lines.append(f"| {_md(label)} | {_md(value)} |")
        if not c["metrics"]:
            lines.append("| metrics | not evaluated (run `python -m training evaluate`) |")
        for problem in c.get("problems", []):
            lines.append(f"| note | {_md(problem)} |")
        return "\n".join(lines) + "\n"


@dataclass
class RunEntry:
    """A discovered run folder: its display name, path and, for a broken folder, the reason."""
    name: str
    path: str
    error: Optional[str] = None


class RunRegistry:
    """Discovers run folders under `roots` and loads them lazily, once per process."""

    def __init__(self, roots: list[str]):
        if isinstance(roots, str):
            roots = [roots]
        self.roots = [os.path.abspath(r) for r in roots]
        self.missing_roots: list[str] = []
        self._lock = threading.Lock()
        self._entries: dict[str, RunEntry] = {}
        self._cache: dict[str, LoadedRun] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self.rescan()

    # ---- discovery --------------------------------------------------------------------------------
    def rescan(self) -> list[str]:
        """Search the roots again; new folders are added, loaded runs stay cached. Returns names()."""
        found: list[tuple[str, str]] = []
        missing = []
        for root in self.roots:
            if not os.path.isdir(root):
                missing.append(root)
                continue
            for path in _find_run_folders(root):
                rel = os.path.relpath(path, root)
                found.append((os.path.basename(root) if rel == "." else rel.replace(os.sep, "/"), path))
        with self._lock:
            known_paths = {e.path for e in self._entries.values()}
        new = [(name, path, _quick_check(path)) for name, path in found if path not in known_paths]
        with self._lock:
            self.missing_roots = missing
            known_paths = {e.path for e in self._entries.values()}
            for name, path, error in new:
                if path in known_paths:  # another rescan got there first
                    continue
                unique = name
                n = 2
                while unique in self._entries:
                    unique = f"{name} ({n})"
                    n += 1
                self._entries[unique] = RunEntry(unique, path, error)
                known_paths.add(path)
            return sorted(self._entries)

    def names(self) -> list[str]:
        """Display names of every discovered run, broken ones included (sorted)."""
        with self._lock:
            return sorted(self._entries)

    def ok_names(self) -> list[str]:
        """Names of runs without a known error."""
        with self._lock:
            return sorted(n for n, e in self._entries.items() if e.error is None)

    def entries(self) -> list[RunEntry]:
        with self._lock:
            return [self._entries[n] for n in sorted(self._entries)]

    def error(self, name: str) -> Optional[str]:
        """The one-line reason a run cannot be loaded, or None (as far as is known before loading)."""
        return self._entry(name).error

    def is_loaded(self, name: str) -> bool:
        self._entry(name)
        with self._lock:
            return name in self._cache

    # ---- loading ----------------------------------------------------------------------------------
    def get(self, name: str) -> LoadedRun:
        """The loaded run called `name` (a name from names()); loads it on first use, then shares it."""
        entry = self._entry(name)
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None:
                return cached
            load_lock = self._load_locks.setdefault(name, threading.Lock())
        # One loader per run; other runs load in parallel.
        with load_lock:
            with self._lock:
                cached = self._cache.get(name)
                error = entry.error
            if cached is not None:
                return cached
            if error is not None:
                raise UserError(f"run {name!r} cannot be loaded: {error}")
            try:
                run = load_run_folder(entry.path, name)
            except Exception as e:  # a corrupt folder must not break the app: report it in one line
                reason = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                # Users of a public app see this message: name files relative to the run folder.
                reason = _one_line(reason.replace(entry.path + os.sep, "").replace(entry.path, name))
                self._mark_broken(entry, reason)
                raise UserError(f"run {name!r} cannot be loaded: {reason}") from None
            with self._lock:
                self._cache[name] = run
            return run

    def _mark_broken(self, entry: RunEntry, message: str) -> None:
        with self._lock:
            entry.error = _one_line(message)

    def _entry(self, name: Any) -> RunEntry:
        # Only exact names from discovery are accepted: the name is a dictionary key, never a path.
        if not isinstance(name, str):
            raise UserError("unknown run: a run name must be a string")
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            shown = name if len(name) <= 80 else name[:77] + "..."
            raise UserError(f"unknown run {shown!r}")
        return entry


# ---- folder discovery ---------------------------------------------------------------------------
def is_run_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isfile(os.path.join(path, WEIGHTS_FILE))


def _find_run_folders(root: str) -> list[str]:
    """The root itself if it is a run, else run folders one or two levels below it (sorted)."""
    if is_run_folder(root):
        return [root]
    found = []
    for child in _subdirs(root):
        if is_run_folder(child):
            found.append(child)
            continue
        found.extend(g for g in _subdirs(child) if is_run_folder(g))
    return found


def _subdirs(path: str) -> list[str]:
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return []
    return [os.path.join(path, n) for n in names
            if not n.startswith(".") and n not in _SKIP_DIRS and os.path.isdir(os.path.join(path, n))]


def _quick_check(path: str) -> Optional[str]:
    """Cheap checks at discovery (config parses, weights header readable); None when the folder looks fine."""
    try:
        RunConfig.load(os.path.join(path, CONFIG_FILE))
    except UserError as e:
        return _one_line(str(e).replace(path + os.sep, ""))
    except OSError as e:
        return f"{CONFIG_FILE}: {e.strerror or e}"
    try:
        _read_safetensors_header(os.path.join(path, WEIGHTS_FILE))
    except UserError as e:
        return str(e)
    return None


def _read_safetensors_header(path: str) -> dict:
    """Parse the JSON header of a safetensors file (8-byte little-endian length, then JSON)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise UserError(f"{os.path.basename(path)}: truncated file")
            n = int.from_bytes(head, "little")
            if n <= 0 or 8 + n > size or n > 100_000_000:
                raise UserError(f"{os.path.basename(path)}: not a safetensors file (bad header length)")
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as e:
        raise UserError(f"{os.path.basename(path)}: cannot be read ({e.strerror or e})")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{os.path.basename(path)}: not a safetensors file (header is not JSON)")
    if not isinstance(header, dict):
        raise UserError(f"{os.path.basename(path)}: not a safetensors file")
    end = max((int(v["data_offsets"][1]) for k, v in header.items()
               if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
    if 8 + n + end > size:
        raise UserError(f"{os.path.basename(path)}: truncated file ({size} bytes, header promises {8 + n + end})")
    return header


# ---- loading one folder -------------------------------------------------------------------------
def load_run_folder(path: str, name: Optional[str] = None) -> LoadedRun:
    """Load a run folder: model (CPU, eval, no gradients), then the optional exported files.

    Raises UserError when the folder cannot be used at all (config or weights). Problems with
    optional files (latents, attributes, metrics, prior) are recorded in `problems` instead.
    """
    from training.runfolder import load_run  # engineer C's loader: config + model + weights

    path = os.path.abspath(path)
    run = load_run(path, device="cpu")
    model = run.model
    model.eval()
    model.requires_grad_(False)
    latent_shape = tuple(int(s) for s in model.latent_shape)
    latent_dim = int(np.prod(latent_shape))
    problems: list[str] = []

    latents = _load_latents(os.path.join(path, LATENTS_FILE), latent_dim, problems)
    attributes = _load_attributes(os.path.join(path, ATTRIBUTES_FILE), latent_dim, problems)
    metrics = _load_json_object(os.path.join(path, METRICS_FILE), problems)

    # A VQ-VAE samples through the PixelCNN prior that load_run found (prior.safetensors); the VAE
    # family samples N(0, I) without one.
    prior = getattr(run, "prior", None)
    if prior is not None:
        if isinstance(prior, torch.nn.Module):
            prior.eval()
            prior.requires_grad_(False)
        attach = getattr(model, "attach_prior", None)
        if callable(attach) and not getattr(model, "has_prior", False):
            attach(prior)
    elif os.path.isfile(os.path.join(path, PRIOR_FILE)) and run.config.model.name == "vqvae":
        problems.append(f"{PRIOR_FILE} present but could not be loaded (training.prior missing?)")
    has_prior = bool(getattr(model, "has_prior", True))

    label_names = [str(s) for s in latents["label_names"]] if latents is not None and "label_names" in latents else []
    label_kinds = [str(s) for s in latents["label_kinds"]] if latents is not None and "label_kinds" in latents else []
    if len(label_kinds) != len(label_names):
        label_kinds = ["continuous"] * len(label_names)

    mu_sqnorm = None
    if latents is not None:
        mu_sqnorm = np.einsum("ij,ij->i", latents["mu"], latents["mu"], dtype=np.float64)

    step = getattr(run, "step", None)
    return LoadedRun(
        name=name or os.path.basename(path),
        path=path,
        config=run.config,
        model=model,
        latents=latents,
        attributes=attributes,
        metrics=metrics,
        has_prior=has_prior,
        latent_dim=latent_dim,
        label_names=label_names,
        label_kinds=label_kinds,
        latent_shape=latent_shape,
        step=int(step) if step is not None else None,
        done=os.path.isfile(os.path.join(path, DONE_FILE)),
        prior=prior,
        problems=problems,
        mu_sqnorm=mu_sqnorm,
    )


def _load_latents(path: str, latent_dim: int, problems: list) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    try:
        # allow_pickle=False: a run folder may come from anywhere; never unpickle.
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as e:  # zip/format errors, object arrays refused by allow_pickle=False, ...
        problems.append(f"{LATENTS_FILE} unreadable ({_one_line(type(e).__name__ + ': ' + str(e))})")
        return None
    reason = _latents_problem(arrays, latent_dim)
    if reason:
        problems.append(f"{LATENTS_FILE} ignored: {reason}")
        return None
    for array in arrays.values():
        array.flags.writeable = False  # shared by every user of the app
    return arrays


def _latents_problem(a: dict, latent_dim: int) -> Optional[str]:
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
    a["mu"] = mu.astype(np.float32, copy=False)
    a["xy"] = xy.astype(np.float32, copy=False)
    return None


def _load_attributes(path: str, latent_dim: int, problems: list) -> Optional[dict]:
    data = _load_json_object(path, problems)
    if data is None:
        return None
    attrs = data.get("attributes")
    if not isinstance(attrs, dict):
        problems.append(f"{ATTRIBUTES_FILE} ignored: no 'attributes' object")
        return None
    kept = {}
    for name, entry in attrs.items():
        reason = _attribute_problem(entry, latent_dim)
        if reason:
            problems.append(f"attribute {name!r} ignored: {reason}")
            continue
        kept[str(name)] = entry
    data = dict(data)
    data["attributes"] = kept
    return data


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


def _load_json_object(path: str, problems: list) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        problems.append(f"{os.path.basename(path)} unreadable ({_one_line(str(e))})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{os.path.basename(path)} ignored: not a JSON object")
        return None
    return data


# ---- small helpers --------------------------------------------------------------------------------
def _samples_note(model_name: str, has_prior: bool) -> str:
    if model_name == "ae":
        return "N(0, I) draws (an autoencoder has no prior: expect poor samples)"
    if model_name == "vqvae":
        return "from the PixelCNN prior" if has_prior else "no (VQ-VAE without a trained prior)"
    return "N(0, I) prior" if has_prior else "no"


def _dig(d: Any, keys: tuple) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _md(text: Any) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
