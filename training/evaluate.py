"""Evaluate trained runs on held-out data and write metrics.json (`python -m training evaluate`).

For each run, on `n_test` points of the test split (a seeded choice):
- ELBO = −(recon + KL) in nats per image (recon averaged over the k importance samples, KL analytic),
  the importance-weighted NLL estimate with k samples (Burda et al. 2015; batched over k, so memory is
  bounded), and bits/dim for the Gaussian likelihood: (NLL + D ln 256) / (D ln 2), NLL = IW-NLL
  (see training/likelihood.py for the conventions);
- reconstruction MSE per pixel of the posterior-mean reconstruction, and PSNR = 10 log10(1 / MSE)
  computed from that MSE (images in [0, 1]);
- KL per latent dimension and active units (Cov_x(E[z|x]) > 0.01);
- on single-channel images with a `shape` factor (dSprites): reconstruction IoU per shape, original and
  posterior-mean reconstruction both thresholded at 0.5, averaged over the images of each shape (does a
  square come back a square, or as a round blob);
- VQ-VAE: codebook perplexity and share of codes used. There is no ELBO or IW-NLL (no prior over codes
  in the model itself); with a trained PixelCNN prior, the NLL bound −log p(x|c) − log p_prior(c) is
  reported under "vq";
- datasets with ground-truth factors: MIG, FactorVAE, DCI and BetaVAE under the disentanglement_lib
  protocol (training.metrics.evaluate_all), sample counts scaled by --metric-scale, with seeds and
  library versions recorded. Published scores spread with the evaluation seed, so `extra_seeds` scores
  MIG and FactorVAE again with other seeds and records every seed's value and their mean
  (`disentanglement_seeds`; the `disentanglement` section stays the first seed's full result).

Several runs print one table with a column per run (e.g. VAE vs β-TCVAE side by side);
`--from-saved` prints that table from existing metrics.json files without evaluating again.
"""
from __future__ import annotations

import math
import os
import time
from typing import Optional, Sequence

import numpy as np
import sklearn
import torch

from .data import describe_labels
from .device import resolve_device
from .encoding import choose_indices, open_dataset
from .errors import UserError
from .likelihood import (active_units, bits_per_dim, codebook_usage, has_gaussian_posterior,
                         importance_weighted_batch, log_px_given_z, psnr_from_mse)
from .metrics import METRIC_NAMES, DatasetSource, evaluate_all, model_representation
from .runfolder import Metrics, load_run, write_metrics
from .sample_quality import sample_quality as score_samples

FORMAT_VERSION = 1


def library_versions() -> dict:
    return {"torch": torch.__version__, "sklearn": sklearn.__version__, "numpy": np.__version__}


# Reconstruction IoU per value of this factor, on single-channel images, at this threshold.
SHAPE_FACTOR = "shape"
IOU_THRESHOLD = 0.5


class HeldOutAccumulator:
    """Per-batch results over the test images; `summarise` turns them into metrics.json fields."""

    def __init__(self):
        self.n = 0
        self.iou: list = []          # per-image reconstruction IoU (shape datasets)
        self.shape_class: list = []  # the image's shape class index
        self.pixels = 0
        self.squared_error = 0.0
        self.log_px, self.recon, self.kl = [], [], []
        self.kl_per_dim_sum: Optional[np.ndarray] = None
        self.means: list = []
        self.codes: list = []
        self.prior_nll: list = []

    def add_reconstruction(self, x: torch.Tensor, recon_image: torch.Tensor) -> None:
        self.n += x.shape[0]
        self.pixels += x.numel()
        self.squared_error += float((recon_image.double() - x.double()).pow(2).sum())

    def add_shape_iou(self, x: torch.Tensor, recon_image: torch.Tensor, shape_class: np.ndarray) -> None:
        original, recon = x > IOU_THRESHOLD, recon_image > IOU_THRESHOLD
        intersection = (original & recon).flatten(1).sum(1).double()
        union = (original | recon).flatten(1).sum(1).double()
        # An empty original reconstructed empty is a perfect match.
        self.iou.append(torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union)).cpu())
        self.shape_class.append(np.asarray(shape_class))


@torch.no_grad()
def held_out_metrics(model, dataset, index: np.ndarray, k: int, seed: int, device: str,
                     batch_size: int = 64, prior=None, progress: bool = False) -> dict:
    """Likelihood / reconstruction / latent-usage metrics over the given test indices."""
    acc = HeldOutAccumulator()
    generator = torch.Generator(device=device).manual_seed(seed)
    gaussian = has_gaussian_posterior(model)
    is_vq = getattr(model.config, "name", "") == "vqvae"
    shape_names = shape_class_names(dataset)
    started = time.perf_counter()
    for start in range(0, len(index), batch_size):
        batch_index = index[start:start + batch_size]
        images, _ = dataset.get(batch_index)
        x = images.to(device).float().div_(255.0)
        enc = model.encode(x)
        params = model.decode(model.latent_for_decode(enc)).float()    # from the posterior mean / the code
        recon_image = model.to_image(params)
        acc.add_reconstruction(x, recon_image)
        if shape_names:
            shape_class = dataset.factors_of(batch_index)[:, dataset.factor_names.index(SHAPE_FACTOR)]
            acc.add_shape_iou(x, recon_image, shape_class)
        if gaussian and enc.logvar is not None:
            res = importance_weighted_batch(model, x, max(k, 1), generator)
            acc.log_px.append(res.log_px.cpu())
            acc.recon.append(res.recon.cpu())
            acc.kl.append(res.kl.cpu())
            per_dim = res.kl_per_dim.double().sum(0).cpu().numpy()
            acc.kl_per_dim_sum = per_dim if acc.kl_per_dim_sum is None else acc.kl_per_dim_sum + per_dim
            acc.means.append(res.mean.float().cpu().numpy())
        else:
            acc.means.append(enc.mean.reshape(x.shape[0], -1).float().cpu().numpy())
            # Deterministic encoders: the reconstruction NLL of the decoded code.
            acc.recon.append((-log_px_given_z(model, x, params)).double().cpu())
        if enc.codes is not None:
            acc.codes.append(enc.codes.cpu().numpy())
            if prior is not None:
                acc.prior_nll.append(prior_nll_per_grid(prior, enc.codes))
        if progress and (start // batch_size) % 10 == 0:
            done = min(start + batch_size, len(index))
            print(f"  {done}/{len(index)} test images ({time.perf_counter() - started:.0f} s)", flush=True)
    out = summarise(model, acc, k, gaussian, is_vq)
    out["shape_iou"] = shape_iou_summary(acc, shape_names) if shape_names else None
    return out


def shape_class_names(dataset) -> list:
    """The names of the `shape` factor's classes on a single-channel factor dataset, else []."""
    if not getattr(dataset, "has_factors", False) or dataset.channels != 1:
        return []
    if SHAPE_FACTOR not in getattr(dataset, "factor_names", []):
        return []
    size = dataset.factor_sizes[dataset.factor_names.index(SHAPE_FACTOR)]
    names = describe_labels(dataset.name, [SHAPE_FACTOR], ["categorical"])[0].value_names
    return list(names) if len(names) == size else [str(k) for k in range(size)]


def shape_iou_summary(acc: HeldOutAccumulator, names: list) -> dict:
    """Mean reconstruction IoU per shape (over that shape's images), the worst shape's, and the counts."""
    iou, shape_class = torch.cat(acc.iou).numpy(), np.concatenate(acc.shape_class)
    by_shape = {name: float(iou[shape_class == k].mean()) for k, name in enumerate(names)
                if np.any(shape_class == k)}
    return {"threshold": IOU_THRESHOLD, "n": int(len(iou)), "by_shape": by_shape,
            "count": {name: int(np.count_nonzero(shape_class == k)) for k, name in enumerate(names)},
            "worst": min(by_shape.values()) if by_shape else None}


def prior_nll_per_grid(prior, codes: torch.Tensor) -> torch.Tensor:
    """−log p_prior(c) in nats per code grid."""
    logits = prior(codes.to(prior.device))
    nll = torch.nn.functional.cross_entropy(logits, codes.to(prior.device).long(), reduction="none")
    return nll.flatten(1).sum(1).double().cpu()


def summarise(model, acc: HeldOutAccumulator, k: int, gaussian: bool, is_vq: bool) -> dict:
    num_dims = int(np.prod(model.config.channels * model.config.image_size ** 2))
    mse = acc.squared_error / max(1, acc.pixels)
    out = {"mse": mse, "psnr": psnr_from_mse(mse), "elbo": None, "recon": None, "kl": None, "iw_nll": None,
           "iw_k": None, "bits_per_dim": None, "kl_per_dim": None, "active_units": None, "latent_size": None,
           "vq": None, "notes": []}
    means = np.concatenate(acc.means) if acc.means else np.zeros((0, 0))
    out["latent_size"] = int(means.shape[1]) if means.size else int(np.prod(model.latent_shape))
    recon = float(torch.cat(acc.recon).mean()) if acc.recon else None
    out["recon"] = recon
    if gaussian and acc.log_px:
        kl = float(torch.cat(acc.kl).mean())
        out.update(kl=kl, elbo=-(recon + kl),
                   kl_per_dim=[float(v) for v in acc.kl_per_dim_sum / acc.n],
                   active_units=active_units(means))
        nll = None
        if k >= 1:
            nll = float(-torch.cat(acc.log_px).mean())
            out.update(iw_nll=nll, iw_k=int(k))
        else:
            out["notes"].append("--k 0: no importance-weighted NLL; ELBO from one sample per image")
        if model.config.likelihood == "gaussian":
            out["bits_per_dim"] = bits_per_dim(nll if nll is not None else -out["elbo"], num_dims)
            out["bits_per_dim_from"] = "iw_nll" if nll is not None else "elbo"
        else:
            out["notes"].append("Bernoulli likelihood: NLL reported in nats per image, no bits/dim")
    elif is_vq:
        out["notes"].append("VQ-VAE: no ELBO or IW-NLL (the model has no prior over codes; with a PixelCNN "
                            "prior, vq.nll_with_prior is the bound -log p(x|c) - log p_prior(c))")
    else:
        out["notes"].append("deterministic autoencoder: no ELBO, IW-NLL or KL (no posterior, no prior); "
                            "recon is the NLL of the decoded code")
        out["active_units"] = active_units(means)
    if acc.codes:
        codes = np.concatenate(acc.codes)
        out["vq"] = codebook_usage(codes, int(model.config.num_codes))
        if acc.prior_nll:
            prior_nll = float(torch.cat(acc.prior_nll).mean())
            grid_size = int(np.prod(codes.shape[1:]))
            out["vq"]["prior_bits_per_code"] = prior_nll / grid_size / math.log(2.0)
            out["vq"]["nll_with_prior"] = recon + prior_nll
            if model.config.likelihood == "gaussian":
                out["vq"]["bits_per_dim_with_prior"] = bits_per_dim(recon + prior_nll, num_dims)
    return out


def disentanglement_metrics(model, dataset, seed: int, scale: float, device: str,
                            metrics: Optional[Sequence[str]] = None, jobs: int = 1) -> dict:
    return evaluate_all(DatasetSource(dataset), model_representation(model, device), seed=seed, scale=scale,
                        n_jobs=jobs, metrics=list(metrics) if metrics else list(METRIC_NAMES))


# The scores repeated over evaluation seeds: the ones targets and papers quote as a mean over seeds.
SEED_MEAN_METRICS = ("mig", "factorvae")


def evaluate_run(run_dir: str, k: int = 1000, n_test: int = 1000, disentanglement: Optional[bool] = None,
                 metric_scale: float = 1.0, seed: int = 0, device: str = "cpu", batch_size: int = 64,
                 write: bool = True, progress: bool = False, metrics: Optional[Sequence[str]] = None,
                 jobs: int = 1, sample_quality: bool = False, extra_seeds: Sequence[int] = ()) -> dict:
    """Evaluate one run folder; returns the metrics.json document (and writes it unless write=False).

    disentanglement: None = when the dataset has ground-truth factors; True = required (UserError for a
    dataset without factors); False = skipped. metrics: a subset of MIG / FactorVAE / DCI / BetaVAE
    (default all; the others are null and listed under settings.skipped). jobs: processes for DCI's
    per-factor classifiers. sample_quality: also score decoded N(0, I) draws with a digit classifier
    (training/sample_quality.py; labelled datasets such as MNIST). extra_seeds: evaluation seeds other than
    `seed` with which MIG and FactorVAE are scored again (`disentanglement_seeds`).
    """
    if k < 0:
        raise UserError(f"--k must be >= 0 (0 skips the importance-weighted NLL), not {k}")
    if n_test < 1:
        raise UserError(f"--n-test must be >= 1, not {n_test}")
    if not (metric_scale > 0 and math.isfinite(metric_scale)):
        raise UserError(f"--metric-scale must be a positive number, not {metric_scale}")
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, not {jobs}")
    metrics = parse_metric_names(metrics)
    extra_seeds = [int(s) for s in extra_seeds]
    if seed in extra_seeds or len(set(extra_seeds)) != len(extra_seeds):
        raise UserError(f"--extra-seeds must differ from each other and from --seed {seed}, got "
                        f"{','.join(map(str, extra_seeds))}")
    if extra_seeds and (disentanglement is False or not set(SEED_MEAN_METRICS) <= set(metrics or METRIC_NAMES)):
        raise UserError("--extra-seeds repeats MIG and FactorVAE: it needs both in --metrics and the "
                        "disentanglement metrics on")
    device = str(resolve_device(device))
    started = time.perf_counter()
    run = load_run(run_dir, device=device)
    dataset = open_dataset(run)
    has_factors = bool(getattr(dataset, "has_factors", False))
    if disentanglement and not has_factors:
        raise UserError(f"dataset {run.config.data.name} has no ground-truth factors: "
                        "disentanglement metrics need dsprites or smileys (drop --disentanglement)")
    if len(dataset.test_indices) == 0:
        raise UserError(f"{run_dir}: dataset {run.config.data.name!r} has an empty test split "
                        "(data.test_fraction is 0)")
    index, _ = choose_indices(dataset, "test", n_test, seed)
    if progress:
        print(f"evaluating {run_dir} on {len(index)} test images (k = {k})", flush=True)
    prior = run.prior
    result = {"format_version": FORMAT_VERSION, "run": os.path.basename(os.path.normpath(run_dir)),
              "model": run.config.model.name, "dataset": run.config.data.name,
              "likelihood": run.config.model.likelihood, "step": int(run.step), "split": "test",
              "n_test": int(len(index)), "seed": int(seed), "versions": library_versions(),
              "data": data_description(dataset)}
    t = time.perf_counter()
    result.update(held_out_metrics(run.model, dataset, index, k, seed, device, batch_size, prior, progress))
    seconds = {"held_out": round(time.perf_counter() - t, 2)}
    if disentanglement is not False and has_factors:
        t = time.perf_counter()
        if progress:
            print("disentanglement metrics (MIG, FactorVAE, DCI, BetaVAE)...", flush=True)
        result["disentanglement"] = disentanglement_metrics(run.model, dataset, seed, metric_scale, device,
                                                            metrics, jobs)
        seconds["disentanglement"] = round(time.perf_counter() - t, 2)
        if extra_seeds:
            t = time.perf_counter()
            if progress:
                print(f"MIG and FactorVAE with evaluation seeds {', '.join(map(str, extra_seeds))}...", flush=True)
            repeats = [disentanglement_metrics(run.model, dataset, s, metric_scale, device, SEED_MEAN_METRICS, jobs)
                       for s in extra_seeds]
            result["disentanglement_seeds"] = seed_summary([seed, *extra_seeds], [result["disentanglement"], *repeats])
            seconds["disentanglement_seeds"] = round(time.perf_counter() - t, 2)
    else:
        result["disentanglement"] = None
        if not has_factors:
            result["notes"].append(f"dataset {run.config.data.name} has no ground-truth factors: "
                                   "no disentanglement metrics")
    if sample_quality:
        t = time.perf_counter()
        if progress:
            print("sample quality (digit classifier on decoded N(0, I) draws)...", flush=True)
        result["sample_quality"] = score_samples(run.model, dataset, seed=seed, device=device)
        seconds["sample_quality"] = round(time.perf_counter() - t, 2)
    seconds["total"] = round(time.perf_counter() - started, 2)
    result["seconds"] = seconds
    result = json_safe(result)
    if write:
        write_metrics(run_dir, result)
    return result


def seed_summary(seeds: list, results: list) -> dict:
    """MIG and FactorVAE of each evaluation seed, with their mean (all under the same protocol and scale)."""
    scores = {name: [float(r[name]) for r in results] for name in SEED_MEAN_METRICS}
    return {"seeds": list(seeds), **scores, "mean": {name: float(np.mean(v)) for name, v in scores.items()}}


def data_description(dataset) -> dict:
    """What the scores were computed on: the split sizes and the binarisation (data.options.binarize),
    with the seed of the fixed binarisation that the held-out images were read with."""
    return {"n_train": int(len(dataset.train_indices)), "n_test_split": int(len(dataset.test_indices)),
            "binarize": getattr(dataset, "binarize", "none"),
            "binarize_seed": getattr(dataset, "binarize_seed", None)}


def json_safe(value):
    """Replace NaN/inf (not valid JSON) by None, recursively; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---- the table ----------------------------------------------------------------------------------------------
def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value)


# (row label, what to show for a run's Metrics); a plain string names a score of runfolder.SCORE_PATHS.
TABLE_ROWS = [
    ("model", lambda m: m.field("model")),
    ("dataset", lambda m: m.field("dataset")),
    ("step", lambda m: m.step),
    ("test images", lambda m: m.field("n_test")),
    ("ELBO (nats)", "elbo"),
    ("  recon (nats)", "recon"),
    ("  KL (nats)", "kl"),
    ("IW-NLL (nats)", "iw_nll"),
    ("  IW samples k", "iw_k"),
    ("binarisation", lambda m: m.binarize),
    ("confident samples", "sample_confident_share"),
    ("  classifier accuracy", "sample_classifier_accuracy"),
    ("bits/dim", "bits_per_dim"),
    ("MSE", "mse"),
    ("PSNR (dB)", "psnr"),
    ("active units", lambda m: None if m.score("active_units") is None
        else f"{m.score('active_units')}/{m.score('latent_size')}"),
    ("codebook perplexity", "perplexity"),
    ("codes used", "codes_used"),
    ("prior bits/code", "prior_bits_per_code"),
    ("NLL with prior (nats)", "nll_with_prior"),
    ("MIG", "mig"),
    ("FactorVAE score", "factorvae"),
    ("DCI disentanglement", "dci_disentanglement"),
    ("DCI completeness", "dci_completeness"),
    ("DCI informativeness", "dci_informativeness"),
    ("BetaVAE score", "betavae"),
    ("metric scale", "metric_scale"),
]


def format_table(results: list, names: Optional[list] = None) -> str:
    """One row per metric, one column per run (rows that are empty for every run are left out).
    results: metrics.json documents or their runfolder.Metrics."""
    results = [r if isinstance(r, Metrics) else Metrics(r) for r in results]
    names = names or [r.field("run") or f"run{i}" for i, r in enumerate(results)]
    rows = []
    for label, getter in TABLE_ROWS:
        cells = [r.score(getter) if isinstance(getter, str) else getter(r) for r in results]
        if all(c is None for c in cells):
            continue
        rows.append([label] + [_fmt(c) for c in cells])
    header = ["metric"] + list(names)
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def column_names(run_dirs: list) -> list:
    """Short, distinct column titles: the folder names (with the parent folder when two clash)."""
    base = [os.path.basename(os.path.normpath(p)) for p in run_dirs]
    if len(set(base)) == len(base):
        return base
    return [os.path.normpath(p) for p in run_dirs]


def parse_metric_names(metrics) -> Optional[list]:
    """None (all) or a list of known metric names, from a list or a comma-separated string."""
    if metrics is None:
        return None
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown or not names:
        raise UserError(f"--metrics: unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                        f"choose from {','.join(METRIC_NAMES)}")
    return names
