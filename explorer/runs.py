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

import functools
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from training.config import RunConfig
from training.data import describe_labels
from training.errors import UserError
from training.latent_map import LatentIndex
from training.metrics.mig import factor_entropies, histogram_discretize, mutual_information_matrix
from training.runfolder import (ATTRIBUTES_FILE, LATENTS_FILE, METRICS_FILE, Metrics, check_run_folder,
                                is_finished, is_run_folder, load_attributes, load_latents, load_run, read_metrics)

from . import model_card

# Folder names never searched for runs.
_SKIP_DIRS = {"__pycache__", "node_modules"}
MI_BINS = 20  # bins per latent dimension for the label information, as in MIG's protocol
MAX_PAIR_CLASSES = 12  # a categorical label with more classes offers no class pairs (too many to list)


@dataclass
class LoadedRun:
    """Everything the explorer needs from one run folder, loaded once and shared (treat as read-only).

    latents:    arrays of latents.npz (see docs/run-format.md) or None when the run was not exported.
    attributes: the parsed attributes.json or None.
    metrics:    metrics.json (training.runfolder.Metrics) or None.
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
    metrics: Optional[Metrics]
    has_prior: bool
    latent_dim: int
    label_names: list
    label_kinds: list = field(default_factory=list)
    latent_shape: tuple = ()
    step: Optional[int] = None
    done: bool = False
    prior: Any = None  # the VQ-VAE's PixelCNN prior, or None
    problems: list = field(default_factory=list)

    @property
    def is_vq(self) -> bool:
        return self.config.model.name == "vqvae"

    @property
    def n_points(self) -> int:
        return 0 if self.latents is None else int(self.latents["mu"].shape[0])

    @property
    def attribute_names(self) -> list:
        """The attribute vectors the Attributes tab offers: attributes.json's, except that a categorical
        label (digit, shape) offers a 'from → to' vector per pair of its classes instead of its stored
        class-against-the-rest one, which mixes every other class into 'the rest'."""
        stored = list(self.attributes.get("attributes", {})) if self.attributes else []
        pairs = self.class_pairs
        replaced = {self.label_names[column] for column, _, _ in pairs.values()}
        return [name for name in stored if name not in replaced] + list(pairs)

    @functools.cached_property
    def class_pairs(self) -> dict:
        """{'digit: 3 → 8': (label column, code of 3, code of 8)} for each categorical label of the latent
        table with 2..MAX_PAIR_CLASSES classes present, every ordered pair of its classes."""
        if self.latents is None or "labels" not in self.latents or self.is_vq:
            return {}
        pairs = {}
        for column, label in enumerate(self.labels):
            if label.kind != "categorical":
                continue
            codes = np.unique(self.latents["labels"][:, column])
            if not 2 <= len(codes) <= MAX_PAIR_CLASSES:
                continue
            for a in codes:
                for b in codes:
                    if a != b:
                        pairs[f"{label.title}: {label.format(a)} → {label.format(b)}"] = (column, float(a), float(b))
        return pairs

    @functools.cached_property
    def labels(self) -> list:
        """What each label column means (training.data.LabelInfo): names, kinds, value names and units from
        the dataset named in config.json, so that runs exported before these descriptions get them too."""
        return describe_labels(self.config.data.name, self.label_names, self.label_kinds)

    @functools.cached_property
    def label_information(self) -> Optional[np.ndarray]:
        """(D, labels) share of each label's entropy that each latent dimension carries: the mutual
        information MIG uses (training.metrics.mig: 20 equal-width bins per dimension, nats) divided by the
        label's entropy, on the exported table. Computed once per run; None without labels."""
        if self.latents is None or "labels" not in self.latents or not self.label_names or self.is_vq:
            return None
        labels = self.latents["labels"].astype(np.float64)
        # Labels with many distinct real values are binned like the codes (MI needs discrete classes).
        classes = np.stack([np.unique(labels[:, k], return_inverse=True)[1].reshape(-1)
                            if len(np.unique(labels[:, k])) <= MI_BINS
                            else histogram_discretize(labels[:, k:k + 1], MI_BINS)[:, 0]
                            for k in range(labels.shape[1])], axis=1).astype(np.int64)
        mu = self.latents["mu"].astype(np.float64)
        mi = mutual_information_matrix(histogram_discretize(mu, MI_BINS), classes)
        entropy = factor_entropies(classes)
        return mi / np.where(entropy > 0, entropy, np.inf)[None, :]

    @functools.cached_property
    def latent_index(self) -> LatentIndex:
        """Nearest-neighbour search over latents["mu"], built on first use."""
        if self.latents is None:
            raise UserError(f"run {self.name!r} has no exported latents (run `python -m training export`)")
        return LatentIndex(self.latents["mu"])

    def key_metrics(self) -> dict:
        return model_card.key_metrics(self)

    def card(self) -> dict:
        return model_card.card(self)

    def card_markdown(self) -> str:
        return model_card.card_markdown(self)


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
        new = [(name, path, _folder_problem(path)) for name, path in found if path not in known_paths]
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


def _folder_problem(path: str) -> Optional[str]:
    """check_run_folder's one-line reason, and any failure of the check itself as a reason too: one
    stranger's folder must not stop discovery of the others."""
    try:
        return check_run_folder(path)
    except Exception as e:  # the checks raise UserError; anything else is still this folder's problem
        return _one_line(f"cannot be checked ({type(e).__name__}: {e})".replace(path + os.sep, ""))


# ---- loading one folder -------------------------------------------------------------------------
def load_run_folder(path: str, name: Optional[str] = None) -> LoadedRun:
    """Load a run folder: model (CPU, eval, no gradients), then the optional exported files.

    Raises UserError when the folder cannot be used at all (config or weights). Problems with
    optional files (latents, attributes, metrics) are recorded in `problems` instead.
    """
    path = os.path.abspath(path)
    run = load_run(path, device="cpu")
    model = run.model
    model.requires_grad_(False)
    if run.prior is not None:
        run.prior.requires_grad_(False)
    latent_shape = tuple(int(s) for s in model.latent_shape)
    latent_dim = int(np.prod(latent_shape))
    problems: list[str] = []
    latents = _optional(lambda: load_latents(path, latent_dim), path, LATENTS_FILE, problems)
    if latents is not None:
        for array in latents.values():
            array.flags.writeable = False  # shared by every user of the app
    attributes = _optional(lambda: _attributes_with_notes(path, latent_dim, problems), path, ATTRIBUTES_FILE,
                           problems)
    metrics = _optional(lambda: read_metrics(path), path, METRICS_FILE, problems)
    label_names = [str(s) for s in latents["label_names"]] if latents is not None and "label_names" in latents else []
    label_kinds = [str(s) for s in latents["label_kinds"]] if latents is not None and "label_kinds" in latents else []
    if len(label_kinds) != len(label_names):
        label_kinds = ["continuous"] * len(label_names)
    return LoadedRun(
        name=name or os.path.basename(path), path=path, config=run.config, model=model, latents=latents,
        attributes=attributes, metrics=metrics, has_prior=bool(getattr(model, "has_prior", True)),
        latent_dim=latent_dim, label_names=label_names, label_kinds=label_kinds, latent_shape=latent_shape,
        step=int(run.step), done=is_finished(path), prior=run.prior, problems=problems)


def _optional(load: Callable, path: str, file_name: str, problems: list):
    """What `load` returns, or None with a one-line note when the optional file is absent or unusable."""
    if not os.path.isfile(os.path.join(path, file_name)):
        return None
    try:
        return load()
    except UserError as e:
        problems.append(_one_line(str(e).replace(path + os.sep, "")))
        return None


def _attributes_with_notes(path: str, latent_dim: int, problems: list) -> dict:
    attributes, notes = load_attributes(path, latent_dim)
    problems.extend(notes)
    return attributes


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
