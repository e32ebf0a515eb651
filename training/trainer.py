"""Train one model into a run folder: `train(cfg, out_dir)` (the `train` command calls it).

The loop is nanoGPT-style: draw a random index batch, one optimiser step, and every so often log,
draw sample grids and checkpoint. Everything needed to continue a killed run exactly (weights,
optimiser, every random number generator, the AMP scaler) goes into `checkpoint.pt`, so a run killed
at step k and resumed with `--resume` ends with the same weights as one that was never interrupted.

Nothing is written until the dataset and the model have been built: a typo in a model name or a
missing dataset never leaves a half-made run folder behind.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import random
import sys
import time
from typing import Optional

import numpy as np
import torch

from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

from . import distributed
from .config import FORMAT_VERSION, RunConfig, TrainConfig, same_run
from .data import load_dataset
from .data.common import check_common_config
from .device import resolve_device
from .errors import UserError
from .models import build_model, model_names, resolve_arch
from .runfolder import (CHECKPOINT_FILE, RECONSTRUCTIONS_IMAGE, SAMPLES_IMAGE, WEIGHTS_FILE, Run,
                        append_log, clear_finished, holds_run, load_checkpoint, load_state_checked,
                        mark_finished, remove_run_files, remove_snapshots_after, remove_stale_temp_files,
                        save_checkpoint, save_config, save_snapshot, save_weights, truncate_log, write_grid_png)

# Seed offset of the batch generator, so that its stream differs from the global RNG's (model init,
# reparameterisation noise), which is seeded with the plain seed.
BATCH_SEED_OFFSET = 7919

# Weight snapshots (train.snapshots) are log-spaced from this step (or from a tenth of a shorter run) to
# the last step: a latent space changes fastest early on, so early steps get more snapshots.
SNAPSHOT_FIRST_STEP = 100
MAX_SNAPSHOTS = 100


def snapshot_steps(steps: int, snapshots: int) -> list[int]:
    """The steps at which a run of `steps` steps with train.snapshots=`snapshots` saves its weights.

    `snapshots` steps log-spaced (geometric) from min(SNAPSHOT_FIRST_STEP, steps // 10) (at least 1) to the
    last step, rounded to whole steps; rounding can merge neighbours in a short run, so there may be a few
    fewer. The last step is always one of them. The schedule depends on the config alone, so a resumed run
    saves at the same steps as one that was never interrupted.
    """
    if snapshots <= 0 or steps <= 0:
        return []
    first = max(1, min(SNAPSHOT_FIRST_STEP, steps // 10))
    if snapshots == 1 or first >= steps:
        return [steps]
    chosen = np.round(np.geomspace(first, steps, snapshots)).astype(np.int64)
    return sorted({int(s) for s in chosen} | {steps})


# ==== the training run ============================================================================
def train(cfg: RunConfig, out_dir: str, resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> Run:
    """Train `cfg` into `out_dir` (or continue the run there with resume=True); returns the finished Run.

    Under torchrun every process calls this and trains its shard of each batch (training/distributed.py).
    """
    with distributed.process_group(resolve_device(cfg.train.device, "train.device")) as ranks:
        return train_ranks(ranks, cfg, out_dir, resume, progress, overwrite)


def train_ranks(ranks: distributed.Ranks, cfg: RunConfig, out_dir: str, resume: bool, progress: bool,
                overwrite: bool) -> Run:
    cfg = copy.deepcopy(cfg)  # the dataset fills in image size, channels and dataset_size below
    validate_train_config(cfg.train)
    distributed.check_batch_size(cfg.train.batch_size, ranks.world_size)
    check_out_dir(out_dir, resume, overwrite)
    device = ranks.device  # resolved by train(); cuda:LOCAL_RANK under torchrun

    # Build everything before writing anything: bad names and missing data fail here.
    dataset = distributed.local_main_first(ranks, lambda: load_training_dataset(cfg))
    model = build_seeded_model(cfg, device)
    optimizer = make_optimizer(model, cfg.train)
    amp = Amp(device, cfg.train.amp)
    batches = BatchSampler(dataset, cfg.train.batch_size, cfg.train.seed, device,
                           channels_last=cfg.train.channels_last and has_convs(model), ranks=ranks)
    step, elapsed = 0, 0.0
    if resume:
        checkpoint = load_checkpoint(os.path.join(out_dir, CHECKPOINT_FILE))
        check_resume_compatible(cfg, checkpoint, out_dir)
        step, elapsed = restore_checkpoint(checkpoint, model, optimizer, amp, batches, cfg.train, out_dir)
        del checkpoint
    training_model = distributed.wrap_model(model, ranks)  # DDP under torchrun, else the model itself

    if ranks.is_main:  # rank 0 alone writes files
        open_run_folder(out_dir, cfg, resume, step)
    last_checkpoint = step if resume else None
    t = cfg.train
    snapshot_at = set(snapshot_steps(t.steps, t.snapshots))
    # A host sync per step costs nothing on the CPU but stalls an accelerator: there, losses are
    # checked for NaN/inf in batches, always before anything is logged, drawn or saved.
    check_every_step = device.type == "cpu"
    pending: list[tuple[int, torch.Tensor, dict]] = []  # (step, loss, terms) not yet checked
    clock = Clock(elapsed, step)

    model.train()
    with subnormals_flushed(device), progress_bar(progress and ranks.is_main, step, t.steps, out_dir) as bar:
        while step < t.steps:
            try:
                out = train_step(training_model, optimizer, amp, batches.next(), step, t.grad_clip)
            except RuntimeError as e:
                raise_if_overflow(e, step + 1, pending, last_checkpoint)
                raise
            step += 1
            pending.append((step, out.loss.detach(), detach_terms(out.terms)))
            bar.update(1)

            is_last = step == t.steps
            is_log, is_sample = step % t.log_every == 0 or is_last, step % t.sample_every == 0 or is_last
            is_checkpoint = step % t.checkpoint_every == 0 or is_last
            is_snapshot = step in snapshot_at
            if check_every_step or is_log or is_sample or is_checkpoint or is_snapshot:
                raise_if_nonfinite(pending, last_checkpoint)
                pending.clear()
            if is_log and ranks.is_main:
                record = metrics_record(step, out, clock.images_per_s(step, t.batch_size), clock.seconds())
                append_log(out_dir, record)
                bar.set_postfix({k: f"{record[k]:.4g}" for k in ("loss", "recon", "kl") if k in record},
                                refresh=False)
            with clock.paused():  # file writes do not count against training throughput
                if is_sample and ranks.is_main:
                    save_grids(model, dataset, cfg, out_dir, step, device)
                if is_checkpoint or is_snapshot:
                    raise_if_weights_nonfinite(model, step, last_checkpoint)
                if is_snapshot and ranks.is_main:
                    save_snapshot(out_dir, model, step)
                if is_checkpoint:
                    if ranks.is_main:
                        save_run_state(out_dir, step, model, optimizer, amp, batches, cfg, clock.seconds())
                    last_checkpoint = step

    if ranks.is_main:
        mark_finished(out_dir, step)
    ranks.barrier()  # every rank returns once the run folder is complete
    model.__dict__.pop("loss", None)  # drop the compiled loss: the Run gets the plain model
    model.to(memory_format=torch.contiguous_format).eval()
    return Run(path=out_dir, config=cfg, model=model, step=step)


@contextlib.contextmanager
def subnormals_flushed(device: torch.device):
    """Within: the CPU treats subnormal floats as zero (x86 FTZ/DAZ), so a training keeps its speed.

    A weight whose gradient is exactly zero (one feeding a dead ReLU unit) keeps an Adam first moment
    that shrinks by beta1 every step until it is subnormal, and x86 arithmetic on subnormals is
    many times slower: on dSprites such moments halve a conv network's training throughput within a few
    hundred steps. Flushing them drops optimiser updates far below what a float32 weight can resolve;
    benchmarks/subnormals.py measures the speed-up and compares the weights bit for bit. x86 keeps the
    flag per thread and torch sets it for the calling thread only, so with several torch threads the
    intra-op workers still see subnormals (the bundled runs train on one). Accelerators handle subnormals
    at full speed, so nothing changes there.
    """
    if device.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def train_step(model, optimizer, amp: "Amp", x: torch.Tensor, step: int, grad_clip: Optional[float]):
    """One optimiser step on batch x; returns the model's LossOutput. No host sync in here.

    model(x, step) is the loss (every model's forward); under torchrun, model is the DDP wrapper, x this
    rank's shard, and the returned loss and terms are those of the global batch.
    """
    with amp.autocast():
        out = model(x, step)
    amp.scaler.scale(out.loss).backward()
    if grad_clip:
        amp.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], grad_clip, foreach=True)
    amp.scaler.step(optimizer)
    amp.scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return distributed.mean_over_ranks(out)


# ==== building blocks ===============================================================================
def validate_train_config(t: TrainConfig) -> None:
    def positive_int(name):
        value = getattr(t, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"train.{name} must be a positive integer (got {value!r})")

    for name in ("steps", "batch_size", "log_every", "sample_every", "checkpoint_every", "grid_n"):
        positive_int(name)
    for name in ("amp", "channels_last", "compile"):
        if not isinstance(getattr(t, name), bool):
            raise UserError(f"train.{name} must be true or false (got {getattr(t, name)!r})")
    if not isinstance(t.snapshots, int) or isinstance(t.snapshots, bool) or not 0 <= t.snapshots <= MAX_SNAPSHOTS:
        raise UserError(f"train.snapshots must be a whole number from 0 to {MAX_SNAPSHOTS} (got {t.snapshots!r})")
    if not isinstance(t.seed, int) or isinstance(t.seed, bool) or t.seed < 0:
        raise UserError(f"train.seed must be a non-negative integer (got {t.seed!r})")
    for name in ("lr", "weight_decay"):
        value = getattr(t, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise UserError(f"train.{name} must be a non-negative number (got {value!r})")
    if t.lr == 0:
        raise UserError("train.lr must be positive (got 0)")
    if (not isinstance(t.betas, (list, tuple)) or len(t.betas) != 2
            or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in t.betas)):
        raise UserError(f"train.betas must be two numbers in [0, 1) (got {t.betas!r})")
    if t.grad_clip is not None and (not isinstance(t.grad_clip, (int, float)) or t.grad_clip <= 0):
        raise UserError(f"train.grad_clip must be a positive number or null (got {t.grad_clip!r})")


def check_out_dir(out_dir: str, resume: bool, overwrite: bool) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"{out_dir}: exists and is not a folder")
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: choose one")
    if resume and not os.path.isfile(os.path.join(out_dir, CHECKPOINT_FILE)):
        raise UserError(f"{out_dir}: nothing to resume (no {CHECKPOINT_FILE}); start the run without --resume")
    if not resume and not overwrite and holds_run(out_dir):
        raise UserError(f"{out_dir} already holds a run: pass --resume to continue it or --overwrite to replace it")


def load_training_dataset(cfg: RunConfig):
    """Load the data and make the model config agree with it (image size, channels, dataset size)."""
    # Check the (cheap) model name before loading a possibly large dataset.
    if not isinstance(cfg.model.name, str) or cfg.model.name not in model_names():
        raise UserError(f"unknown model {cfg.model.name!r}; choose from {', '.join(model_names())}")
    check_sizes(cfg)
    dataset = load_dataset(cfg.data)
    if len(dataset.train_indices) == 0:
        raise UserError(f"dataset {cfg.data.name!r}: the training split is empty")
    # The dataset decides what the images look like; the model is built for them. β-TCVAE's
    # estimator of log q(z) needs the size of the training set.
    cfg.model.fill_from_data(int(dataset.image_size), int(dataset.channels), int(len(dataset.train_indices)))
    cfg.model.check_batch(cfg.train.batch_size, resolve_arch(cfg.model))
    return dataset


def check_sizes(cfg: RunConfig) -> None:
    """The model's parameter count and one batch's memory against what a machine holds, from the config
    alone: a size typed by mistake fails here, before the data or the model is allocated. The image size
    is the requested one (the dataset's own size is checked again once it is known)."""
    check_common_config(cfg.data)
    model = copy.copy(cfg.model)
    if cfg.data.image_size is not None:
        model.image_size = cfg.data.image_size
    model.check_fields()
    arch = resolve_arch(model)
    model.check_size(arch)
    model.check_batch(cfg.train.batch_size, arch)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def build_seeded_model(cfg: RunConfig, device: torch.device):
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model).to(device)
    if cfg.train.channels_last and has_convs(model):
        model = model.to(memory_format=torch.channels_last)
    if cfg.train.compile:
        # Only the training step is compiled; the weights keep their names (no wrapper module).
        model.loss = torch.compile(model.loss)
    return model


def has_convs(model: torch.nn.Module) -> bool:
    return any(p.dim() == 4 for p in model.parameters())


def make_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # The fused kernel updates every parameter in one pass instead of ~10 small ops per tensor.
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, fused=fused)


class Amp:
    """Mixed precision on CUDA only: bf16 autocast where supported, else fp16 with a GradScaler."""

    def __init__(self, device: torch.device, enabled: bool):
        self.enabled = bool(enabled) and device.type == "cuda"
        self.dtype = (torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.dtype)


class BatchSampler:
    """Random index batches from the training split, drawn by a seeded generator (saved in checkpoints).

    Images come as whole batches from `dataset.get_float` (in-memory uint8 -> float, or rendered):
    no DataLoader and no per-sample work. Under torchrun every rank draws the same global batch and
    loads only its rank-strided share, so the generator's state does not depend on the number of ranks.
    """

    def __init__(self, dataset, batch_size: int, seed: int, device: torch.device, channels_last: bool,
                 ranks: distributed.Ranks = distributed.SINGLE):
        self.dataset = dataset
        self.ranks = ranks
        self.batch_size = batch_size
        self.train_indices = np.asarray(dataset.train_indices, dtype=np.int64)
        self.generator = torch.Generator().manual_seed(seed + BATCH_SEED_OFFSET)
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def next(self) -> torch.Tensor:
        picks = torch.randint(len(self.train_indices), (self.batch_size,), generator=self.generator)
        local = self.train_indices[self.ranks.shard(picks).numpy()]
        if getattr(self.dataset, "binarize", "none") == "dynamic":
            # Uniform noise for the whole global batch from the same generator: a fresh binarisation at every
            # draw that a resumed run repeats exactly, and the same generator state on every rank.
            size = int(self.dataset.image_size)
            noise = torch.rand((self.batch_size, int(self.dataset.channels), size, size), generator=self.generator)
            images = self.dataset.draw_float(local, self.ranks.shard(noise))
        else:
            images, _ = self.dataset.get_float(local)
        return images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)


@contextlib.contextmanager
def progress_bar(enabled: bool, start: int, total: int, out_dir: str):
    bar = tqdm(total=total, initial=start, disable=not enabled, desc=os.path.basename(os.path.normpath(out_dir)),
               unit="step", dynamic_ncols=True, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


class Clock:
    """Training time across resumes (`seconds`) and images/s between log lines, file writes excluded."""

    def __init__(self, elapsed_before: float, step: int):
        self.start = time.perf_counter() - elapsed_before
        self.last_time, self.last_step, self.paused_seconds = time.perf_counter(), step, 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def images_per_s(self, step: int, batch_size: int) -> float:
        now = time.perf_counter()
        busy = max(now - self.last_time - self.paused_seconds, 1e-9)
        rate = (step - self.last_step) * batch_size / busy
        self.last_time, self.last_step, self.paused_seconds = now, step, 0.0
        return rate

    @contextlib.contextmanager
    def paused(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.paused_seconds += time.perf_counter() - began


# ==== non-finite losses ===============================================================================
def detach_terms(terms: dict) -> dict:
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in terms.items()}


def raise_if_nonfinite(pending: list, last_checkpoint: Optional[int]) -> None:
    """Stop at the first NaN/inf loss, before it reaches a log line, a grid or a checkpoint."""
    if not pending:
        return
    finite = torch.isfinite(torch.stack([loss.float() for _, loss, _ in pending]))
    if bool(finite.all()):
        return
    first = int((~finite).nonzero()[0, 0])
    step, loss, terms = pending[first]
    values = ", ".join(f"{k}={float(v):.4g}" for k, v in [("loss", loss), *terms.items()] if _is_scalar(v))
    raise_non_finite(step, values, last_checkpoint)


def raise_if_overflow(error: RuntimeError, step: int, pending: list, last_checkpoint: Optional[int]) -> None:
    """An lr so large that Adam's step size lr / (1 - beta1^t) no longer fits a float fails inside the step."""
    if "overflow" in str(error):
        raise_if_nonfinite(pending, last_checkpoint)
        raise_non_finite(step, f"optimiser step overflowed: {str(error).splitlines()[0]}", last_checkpoint)


def raise_if_weights_nonfinite(model, step: int, last_checkpoint: Optional[int]) -> None:
    """A finite loss can still come with an update that overflowed the weights: never checkpoint those."""
    if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
        raise_non_finite(step, "the weights are no longer finite", last_checkpoint)


def raise_non_finite(step: int, details: str, last_checkpoint: Optional[int]) -> None:
    if last_checkpoint is None:
        kept = "no checkpoint had been written yet; start again"
    else:
        kept = f"the last good checkpoint at step {last_checkpoint} is intact; continue from it with --resume"
    raise UserError(f"non-finite loss at step {step} ({details}): {kept} after lowering the learning rate "
                    f"(--lr) or setting a gradient clip (--grad-clip)")


def _is_scalar(v) -> bool:
    return isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)


# ==== run folder: logs, grids, checkpoints ===========================================================
def open_run_folder(out_dir: str, cfg: RunConfig, resume: bool, step: int) -> None:
    """Model and data are built: now create the folder, clear what is stale and write config.json."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out_dir}: {e.strerror or e}") from None
    if not os.access(out_dir, os.W_OK):
        raise UserError(f"cannot write to {out_dir}: the folder is read-only")
    if resume:
        remove_stale_temp_files(out_dir)
        truncate_log(out_dir, step)
        remove_snapshots_after(out_dir, step)
        clear_finished(out_dir)
    else:
        # check_out_dir allowed this: the folder is new, holds a run that never checkpointed,
        # or --overwrite was given. No file of an older run may survive next to the new one.
        remove_run_files(out_dir)
    save_config(out_dir, cfg)


def metrics_record(step: int, out, images_per_s: float, seconds: float) -> dict:
    record = {"step": step, "loss": float(out.loss.detach())}
    for name, value in out.terms.items():
        if _is_scalar(value):
            record[name] = float(value)
    record["images_per_s"] = round(images_per_s, 1)
    record["time"] = round(seconds, 3)
    return record


@torch.no_grad()
def save_grids(model, dataset, cfg: RunConfig, out_dir: str, step: int, device: torch.device) -> None:
    """samples.png (prior samples; none for a VQ-VAE without a prior) and reconstructions.png.

    Both use fixed inputs (a generator seeded from the run's seed, the first test images), so grids
    of different steps are comparable, and neither touches the training RNGs (resume stays exact).
    """
    was_training = model.training
    model.eval()
    try:
        n = cfg.train.grid_n
        if getattr(model, "has_prior", True):
            generator = torch.Generator(device=device).manual_seed(cfg.train.seed)
            images = model.decode_image(model.sample_prior(n, generator=generator)).float()
            write_png(images, out_dir, SAMPLES_IMAGE, step, nrow=max(1, int(math.sqrt(n))))
        indices = dataset.test_indices if len(dataset.test_indices) else dataset.train_indices
        pairs = max(1, min(n // 2, len(indices)))
        width = min(8, pairs)
        pairs -= pairs % width
        inputs, _ = dataset.get_float(np.asarray(indices[:pairs], dtype=np.int64))
        inputs = inputs.to(device)
        recon = model.reconstruct(inputs).float()
        # Rows alternate: `width` inputs, then their reconstructions.
        shape = inputs.shape[1:]
        rows = torch.stack([inputs.view(-1, width, *shape), recon.reshape(-1, width, *shape)], dim=1)
        write_png(rows.reshape(-1, *shape), out_dir, RECONSTRUCTIONS_IMAGE, step, nrow=width)
    finally:
        model.train(was_training)


def write_png(images: torch.Tensor, out_dir: str, name: str, step: int, nrow: int) -> None:
    buffer = io.BytesIO()
    save_image(make_grid(images.cpu(), nrow=nrow, padding=2, pad_value=0.5), buffer, format="png")
    write_grid_png(out_dir, name, step, buffer.getvalue())


def save_run_state(out_dir, step, model, optimizer, amp, batches, cfg, elapsed) -> None:
    """checkpoint.pt (resume state) then model.safetensors (inference weights), each atomic."""
    state = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "elapsed": float(elapsed),
        "config": cfg.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": amp.scaler.state_dict(),
        "rng": capture_rng(batches.generator, batches.device),
    }
    save_checkpoint(state, os.path.join(out_dir, CHECKPOINT_FILE))
    save_weights(model, os.path.join(out_dir, WEIGHTS_FILE), step)


def capture_rng(batch_generator: torch.Generator, device: torch.device) -> dict:
    """Every RNG the loop draws from, as tensors / numbers / lists (loadable with weights_only=True)."""
    version, mt_state, gauss_next = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    return {
        "python": [version, list(mt_state), gauss_next],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "cuda_device": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "mps": torch.mps.get_rng_state() if device.type == "mps" else None,
        "batches": batch_generator.get_state(),
    }


def restore_rng(rng: dict, batch_generator: torch.Generator, device: torch.device) -> None:
    version, mt_state, gauss_next = rng["python"]
    random.setstate((version, tuple(mt_state), gauss_next))
    np_state = rng["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and rng.get("cuda_device") is not None:
        # The training device's own stream: right whatever number of GPUs the resumed run sees; under
        # torchrun every rank continues rank 0's stream (all ranks draw alike, see distributed.py).
        torch.cuda.set_rng_state(rng["cuda_device"], device)
    elif device.type == "cuda" and rng.get("cuda"):
        torch.cuda.set_rng_state_all(rng["cuda"])
    if device.type == "mps" and rng.get("mps") is not None:
        torch.mps.set_rng_state(rng["mps"])
    batch_generator.set_state(rng["batches"])


def check_resume_compatible(cfg: RunConfig, checkpoint: dict, out_dir: str) -> None:
    """The checkpoint's run must be the requested one (config.same_run); optimiser settings may change."""
    saved = RunConfig.from_dict(checkpoint["config"], source=f"{out_dir}/{CHECKPOINT_FILE}")
    where = f"{out_dir}/{CHECKPOINT_FILE} (step {checkpoint['step']})"
    changed = [f"{d.field} is {d.requested!r} but the checkpoint has {d.saved!r}"
               for d in same_run(saved, cfg, resuming=True)]
    if changed:
        raise UserError(f"cannot resume {where}: {'; '.join(changed[:3])}; resume with the run's own "
                        f"config, or start a new run in another folder")
    if checkpoint["step"] > cfg.train.steps:
        raise UserError(f"cannot resume {where}: it is already past train.steps={cfg.train.steps}")


def restore_checkpoint(checkpoint: dict, model, optimizer, amp: Amp, batches: BatchSampler,
                       cfg_train: TrainConfig, out_dir: str) -> tuple[int, float]:
    where = f"{out_dir}/{CHECKPOINT_FILE}"
    load_state_checked(model, checkpoint["model"], where)
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
        # load_state_dict also restores the saved lr / betas: the config's train settings win, so that
        # "lower the learning rate and --resume" does what it says.
        for group in optimizer.param_groups:
            group.update(lr=cfg_train.lr, betas=tuple(cfg_train.betas), weight_decay=cfg_train.weight_decay)
        if checkpoint.get("scaler"):
            amp.scaler.load_state_dict(checkpoint["scaler"])
        restore_rng(checkpoint["rng"], batches.generator, batches.device)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise UserError(f"{where}: the optimiser or RNG state cannot be restored ({str(e).splitlines()[0][:200]})")
    return int(checkpoint["step"]), float(checkpoint.get("elapsed", 0.0))
