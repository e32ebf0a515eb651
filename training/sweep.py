"""Train and evaluate a grid of runs, then tabulate their scores: `python -m training sweep ...`.

    python -m training sweep --config training/configs/dsprites_btcvae.json \\
        --grid beta=1,4,6 seed=0,1 --out runs/sweep [--parallel-gpus]

Each grid point is one run folder, `<out>/beta-4_seed-1/`, trained with `training.trainer.train` and
scored with `training.evaluate.evaluate_run` (its metrics.json). The runs go one after another in this
process, or with --parallel-gpus one per GPU at a time, each in its own process that sees one GPU.

In `<out>`: sweep.json (the base config, the grid, the runs), summary.csv (one row per run: the grid
values, status and scores) and summary.md (the same table; when seed is a grid key, also the mean ± sd
over seeds). Running the same command again continues the sweep: finished runs are kept, interrupted
ones resume from their checkpoint, and only runs without up-to-date scores are evaluated.

Grid keys are the `train` command's flag names (beta, seed, lr, batch-size, latent-dim, model, ...) or
any SECTION.FIELD of training/config.py (model.tc_estimator, train.betas, ...). Values are JSON
(plain words are strings), separated by commas outside brackets: `hidden=[32,32],[64,64]`.
"""
from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import math
import os
import queue
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from .config import FLAG_FIELDS, RunConfig, parse_value, same_run, set_fields
from .errors import UserError
from .evaluate import evaluate_run
from .models import check_config, model_spec, resolve_arch
from .runfolder import (CONFIG_FILE, DONE_FILE, METRICS_FILE, WEIGHTS_FILE, Metrics, atomic_write_text, holds_run,
                        read_config, read_metrics)
from .trainer import train, validate_train_config

SWEEP_FILE = "sweep.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
LOG_FOLDER = "logs"
SEED_FIELD = "train.seed"

# Summary columns: scores of metrics.json by their runfolder.SCORE_PATHS names. Columns empty for every run
# are dropped.
SCORE_COLUMNS = ("elbo", "iw_nll", "recon", "kl", "mse", "psnr", "active_units", "perplexity", "codes_used", "mig",
                 "factorvae", "dci_disentanglement", "dci_completeness", "dci_informativeness", "betavae")


@dataclass
class Axis:
    key: str          # as written on the command line ("beta")
    target: str       # the config field ("model.beta")
    values: list


@dataclass
class PlannedRun:
    name: str
    values: dict      # axis key -> value
    config: RunConfig
    path: str


@dataclass
class EvalOptions:
    """What `evaluate_run` gets for every run (see `python -m training evaluate --help`)."""
    k: int = 1000
    n_test: int = 1000
    disentanglement: Optional[bool] = None
    metric_scale: float = 1.0
    seed: int = 0
    device: str = "auto"


# ==== the grid ==========================================================================================
def split_values(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes: '1,[2,3],"a,b"' -> ['1', '[2,3]', '"a,b"']."""
    parts, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return [p.strip() for p in parts]


def target_of(key: str) -> str:
    """A train flag name (beta, batch-size) or SECTION.FIELD -> the config field it sets."""
    if "." in key:
        return key
    flag = key.replace("-", "_")
    if flag not in FLAG_FIELDS:
        raise UserError(f"--grid {key}: unknown key; use a train flag name ({', '.join(sorted(FLAG_FIELDS))}) "
                        f"or SECTION.FIELD, e.g. model.tc_estimator")
    return FLAG_FIELDS[flag]


def parse_grid(specs: list) -> list[Axis]:
    axes: list[Axis] = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise UserError(f"--grid {spec!r}: expected KEY=VALUE[,VALUE...], e.g. beta=1,4,6")
        values = [parse_value(v, f"--grid {key[:80]}") for v in split_values(raw)]
        if any(v == "" for v in values):
            raise UserError(f"--grid {spec!r}: empty value")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise UserError(f"--grid {spec!r}: a value is repeated")
        target = target_of(key)
        if any(a.target == target for a in axes):
            raise UserError(f"--grid: {target} is given twice")
        axes.append(Axis(key, target, values))
    if not axes:
        raise UserError("--grid: give at least one KEY=VALUE[,VALUE...]")
    return axes


def run_name(values: dict) -> str:
    """Folder name of a grid point: beta-4_seed-1 (characters other than letters, digits, . + - dropped)."""
    def text(v) -> str:
        raw = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        return re.sub(r"[^A-Za-z0-9.+-]+", "-", raw).strip("-") or "x"
    return "_".join(f"{key.split('.')[-1]}-{text(v)}" for key, v in values.items())


def plan_runs(base: RunConfig, axes: list[Axis], out: str) -> list[PlannedRun]:
    """One run per grid point, configs checked before anything trains (a typo fails now, not hours later)."""
    plans = []
    for combination in itertools.product(*(axis.values for axis in axes)):
        cfg = copy.deepcopy(base)
        values = {axis.key: value for axis, value in zip(axes, combination)}
        where = ", ".join(f"{k}={v}" for k, v in values.items())
        try:
            set_fields(cfg, [(axis.target, value) for axis, value in zip(axes, combination)])
            model = copy.deepcopy(cfg.model)
            model.image_size = cfg.data.image_size or model.image_size  # as the trainer will set it
            validate_train_config(cfg.train)
            check_config(model, model_spec(model.name), resolve_arch(model))
        except (UserError, TypeError) as e:
            raise UserError(f"grid point {where}: {e}")
        name = run_name(values)
        plans.append(PlannedRun(name, values, cfg, os.path.join(out, name)))
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise UserError("--grid: two grid points get the same folder name; use values that differ in letters/digits")
    return plans


# ==== one run: train (or continue) and evaluate ===========================================================
def config_differences(wanted: RunConfig, saved: RunConfig) -> list[str]:
    return [f"{d.field} is {d.saved!r} there, {d.requested!r} in this sweep" for d in same_run(saved, wanted)]


def finished_step(run_dir: str) -> Optional[int]:
    try:
        with open(os.path.join(run_dir, DONE_FILE)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def train_run(cfg: RunConfig, run_dir: str, overwrite: bool, progress: bool) -> str:
    """Train, continue or keep the run in run_dir; returns what was done ("trained", "resumed", "kept")."""
    if overwrite or not holds_run(run_dir):
        train(cfg, run_dir, progress=progress, overwrite=overwrite)
        return "trained"
    saved_path = os.path.join(run_dir, CONFIG_FILE)
    if os.path.isfile(saved_path):
        diffs = config_differences(cfg, read_config(saved_path))
        if diffs:
            raise UserError(f"{run_dir} holds a run with another config ({'; '.join(diffs[:2])}): pass "
                            f"--overwrite to train it again, or use another --out")
    if finished_step(run_dir) == cfg.train.steps:
        return "kept"
    train(cfg, run_dir, resume=True, progress=progress)
    return "resumed"


def scores_are_current(run_dir: str, options: EvalOptions) -> bool:
    """metrics.json exists, is newer than the weights and was computed with these options."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path) or os.path.getmtime(path) < os.path.getmtime(os.path.join(run_dir, WEIGHTS_FILE)):
        return False
    try:
        metrics = read_metrics(run_dir)
    except UserError:
        return False
    wanted_k = options.k if options.k >= 1 else None
    return (metrics.field("seed") == options.seed and metrics.score("iw_k") in (None, wanted_k)
            and metrics.step == finished_step(run_dir))


def train_and_evaluate(cfg: RunConfig, run_dir: str, options: EvalOptions, overwrite: bool = False,
                       progress: bool = False) -> str:
    """The whole job of one grid point; returns a one-line account of it."""
    done = train_run(cfg, run_dir, overwrite, progress)
    if done != "trained" and scores_are_current(run_dir, options):
        return f"{done}, scores kept"
    evaluate_run(run_dir, k=options.k, n_test=options.n_test, disentanglement=options.disentanglement,
                 metric_scale=options.metric_scale, seed=options.seed, device=options.device)
    return f"{done}, evaluated"


# ==== running the grid ======================================================================================
def run_one_by_one(plans: list[PlannedRun], options: EvalOptions, overwrite: bool, progress: bool) -> dict:
    """Every run in this process, in order. A run that fails (UserError) is reported; the others go on."""
    status = {}
    for i, plan in enumerate(plans, 1):
        print(f"[{i}/{len(plans)}] {plan.name}", flush=True)
        try:
            status[plan.name] = "ok"
            print(f"  {train_and_evaluate(plan.config, plan.path, options, overwrite, progress)}", flush=True)
        except UserError as e:
            status[plan.name] = f"failed: {e}"
            print(f"  failed: {e}", flush=True)
    return status


def run_in_slots(plans: list[PlannedRun], slots: list, options: EvalOptions, overwrite: bool, log_dir: str) -> dict:
    """One run per slot at a time, each in its own process (`python -m training.sweep JOB`).

    A slot is the environment a process gets on top of ours; one per GPU: {"CUDA_VISIBLE_DEVICES": "3"}.
    Each process's output goes to log_dir/<run>.log.
    """
    os.makedirs(log_dir, exist_ok=True)
    free: queue.Queue = queue.Queue()
    for slot in slots:
        free.put(slot)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def job(plan: PlannedRun) -> tuple[str, str]:
        slot = free.get()
        try:
            env = dict(os.environ, **slot)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
            blob = json.dumps({"config": plan.config.to_dict(), "run_dir": plan.path, "options": asdict(options),
                               "overwrite": overwrite})
            print(f"start {plan.name} ({', '.join(f'{k}={v}' for k, v in slot.items()) or 'this machine'})",
                  flush=True)
            log_path = os.path.join(log_dir, f"{plan.name}.log")
            with open(log_path, "w", encoding="utf-8") as log:
                code = subprocess.run([sys.executable, "-m", "training.sweep", blob], env=env, stdout=log,
                                      stderr=subprocess.STDOUT).returncode
            if code == 0:
                outcome = "ok"
            else:
                outcome = f"failed: {last_error_line(log_path) or f'exit code {code}'} (log: {log_path})"
            print(f"done  {plan.name}: {outcome}", flush=True)
            return plan.name, outcome
        finally:
            free.put(slot)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        return dict(pool.map(job, plans))


def last_error_line(log_path: str) -> Optional[str]:
    with open(log_path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [None])[-1]


def gpu_slots() -> list:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UserError("--parallel-gpus needs CUDA GPUs and none is visible: drop it to run one after another")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")][:count] if visible else [str(i) for i in range(count)]
    return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in ids]


# ==== the summary ============================================================================================
def summary_rows(plans: list[PlannedRun], status: dict) -> list[dict]:
    rows = []
    for plan in plans:
        row = {"run": plan.name, **plan.values, "status": status.get(plan.name, "not run"), "step": None}
        metrics = Metrics({})
        if row["status"] == "ok":
            try:
                metrics = read_metrics(plan.path)
            except UserError as e:
                row["status"] = f"failed: no readable scores ({e})"
        row["step"] = metrics.step
        row.update({name: metrics.score(name) for name in SCORE_COLUMNS})
        rows.append(row)
    return rows


def score_columns(rows: list[dict]) -> list[str]:
    return [name for name in SCORE_COLUMNS if any(row.get(name) is not None for row in rows)]


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header))] + [line(r) for r in rows])


def mean_over_seeds(rows: list[dict], axes: list[Axis], scores: list[str]) -> Optional[str]:
    """Mean ± sd (over seeds, successful runs) per setting of the other grid keys; None without a seed axis."""
    seed_axes = [a for a in axes if a.target == SEED_FIELD]
    if not seed_axes or len(seed_axes[0].values) < 2:
        return None
    others = [a.key for a in axes if a.target != SEED_FIELD]
    groups: dict = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault(tuple(json.dumps(row[k]) for k in others), []).append(row)
    table = []
    for key, members in groups.items():
        cells = [cell(members[0][k]) for k in others] + [str(len(members))]
        for name in scores:
            values = [m[name] for m in members if m.get(name) is not None]
            if not values:
                cells.append("-")
                continue
            mean = sum(values) / len(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
            cells.append(f"{mean:.4g} ± {sd:.2g}" if sd is not None else f"{mean:.4g}")
        table.append(cells)
    if not table:
        return None
    return markdown_table(others + ["seeds"] + scores, table)


def write_summary(out: str, axes: list[Axis], rows: list[dict]) -> str:
    """summary.csv (raw numbers) and summary.md; returns the markdown text."""
    scores = score_columns(rows)
    columns = ["run"] + [a.key for a in axes] + ["status", "step"] + scores
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else
                         (json.dumps(row[c]) if isinstance(row[c], (list, dict)) else row[c]) for c in columns])
    atomic_write_text(os.path.join(out, SUMMARY_CSV), buffer.getvalue())
    text = markdown_table(columns, [[cell(row.get(c)) for c in columns] for row in rows])
    by_seed = mean_over_seeds(rows, axes, scores)
    if by_seed:
        text += "\n\nMean ± sd over seeds:\n\n" + by_seed
    atomic_write_text(os.path.join(out, SUMMARY_MD), text + "\n")
    return text


# ==== the command ============================================================================================
def sweep(base: RunConfig, grid: list, out: str, options: EvalOptions, parallel_gpus: bool = False,
          overwrite: bool = False, progress: bool = True, config_source: str = "") -> list[dict]:
    """Plan, run and summarise a sweep; returns the summary rows (also written to out/summary.*)."""
    axes = parse_grid(grid)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out}: exists and is not a folder")
    if parallel_gpus:
        base = copy.deepcopy(base)
        base.train.device = "cuda"  # every run's process sees one GPU
        if options.device == "auto":
            options = EvalOptions(**{**asdict(options), "device": "cuda"})
    plans = plan_runs(base, axes, out)
    slots = gpu_slots() if parallel_gpus else None
    os.makedirs(out, exist_ok=True)
    manifest = {"config": config_source, "base": base.to_dict(), "grid": {a.key: a.values for a in axes},
                "evaluation": asdict(options), "runs": [{"name": p.name, "values": p.values} for p in plans]}
    atomic_write_text(os.path.join(out, SWEEP_FILE), json.dumps(manifest, indent=2) + "\n")
    print(f"sweep: {len(plans)} runs in {out}" + (f", {len(slots)} at a time (one per GPU)" if slots else ""),
          flush=True)
    if slots:
        status = run_in_slots(plans, slots, options, overwrite, os.path.join(out, LOG_FOLDER))
    else:
        status = run_one_by_one(plans, options, overwrite, progress)
    rows = summary_rows(plans, status)
    print(write_summary(out, axes, rows))
    print(f"wrote {os.path.join(out, SUMMARY_CSV)} and {os.path.join(out, SUMMARY_MD)}")
    return rows


# ==== one run in its own process (--parallel-gpus) ============================================================
def run_job(blob: str) -> int:
    job = json.loads(blob)
    cfg = RunConfig.from_dict(job["config"], source="sweep job")
    try:
        print(train_and_evaluate(cfg, job["run_dir"], EvalOptions(**job["options"]), job["overwrite"]), flush=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run_job(sys.argv[1]))
