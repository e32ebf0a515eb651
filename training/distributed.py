"""Data-parallel training with PyTorch's own engine: `torchrun ... -m training train ...`.

    torchrun --nproc_per_node 4 -m training train --config training/configs/dsprites_btcvae.json --out runs/x

torchrun starts one process per GPU (or per CPU worker) and sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT. `process_group` reads them, initialises torch.distributed (NCCL on
CUDA, gloo on the CPU, chosen from the training device) and says which rank this process is;
outside torchrun it is a single process and nothing changes.

The contract between ranks, which makes N processes compute what one process would:

- Batches: `train.batch_size` is the *global* batch. Every rank draws the same index batch from the
  same seeded generator and keeps the rank-strided share `indices[rank::world_size]`, so global row
  i lives on rank i % world_size as local row i // world_size. The batch generator's state is global,
  so a checkpoint resumes with any number of processes.
- Gradients: DistributedDataParallel averages them over ranks. Every loss is a mean over the batch and
  the shards are equal, so the average is the gradient of the global batch's loss.
- Randomness: every rank seeds and consumes its random streams identically. Per-image noise is drawn
  for the whole global batch and sliced (`noise_like`), so it equals a single process's noise.
- Whole-batch statistics: objectives that are not means of per-image terms (β-TCVAE's minibatch
  estimate of log q(z), the annealed |KL − C|) see the global batch through `gather_batch` /
  `global_mean`, autograd-aware all-gathers. The VQ-VAE sums its EMA codebook statistics over ranks
  (`all_reduce_sum_`) and restarts dead codes from rows of the global batch (`random_global_rows`).
- Files: rank 0 alone writes checkpoints, grids and metrics.

Models call the helpers below unconditionally: they are exact no-ops unless a data-parallel
training run is in progress in this process (`current()` is not None), so they consume the same
random numbers as plain PyTorch calls, and single-process runs stay bit-identical.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, TypeVar

import torch
import torch.distributed as dist

from .errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the training: rank, number of processes, its device and backend."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None  # "nccl" or "gloo"; None for a single process

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints progress."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch (rows rank, rank + world_size, ...)."""
        return batch[self.rank::self.world_size] if self.is_distributed else batch

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier(device_ids=[self.device.index] if self.backend == "nccl" else None)

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank (a barrier, too)."""
        if not self.is_distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)


SINGLE = Ranks()

# The data-parallel training in progress in this process (set by `process_group`), read by the model helpers.
_current: Optional[Ranks] = None


def current() -> Optional[Ranks]:
    """The ranks of the data-parallel training in progress, or None (a single process)."""
    return _current


# ==== process group ===================================================================================
def launch_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as torchrun sets them; (0, 1, 0) in a plain process."""
    def read(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise UserError(f"environment variable {name}={raw!r} is not an integer (it is set by torchrun)")

    world = read("WORLD_SIZE", 1)
    rank = read("RANK", 0)
    local_rank = read("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise UserError(f"inconsistent launch environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}")
    return rank, world, local_rank


def device_for_rank(device: torch.device, local_rank: int) -> torch.device:
    """The device a rank trains on: cuda:LOCAL_RANK on GPUs (one process per GPU), else `device`."""
    if device.type == "mps":
        raise UserError("several processes on MPS are not supported (no collective backend): use "
                        "train.device cpu, or a single process")
    if device.type != "cuda":
        return device
    if device.index is not None and device.index != local_rank:
        raise UserError(f"train.device is {device} but under torchrun each process uses cuda:LOCAL_RANK: "
                        f"set train.device to cuda or auto (restrict GPUs with CUDA_VISIBLE_DEVICES)")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise UserError(f"LOCAL_RANK is {local_rank} but only {count} CUDA device(s) are visible: start at most "
                        f"{count} process(es) per node (--nproc_per_node {count})")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join the data-parallel group that torchrun set up (if any) for the duration of one training run.

    Yields this process's `Ranks` (its device becomes cuda:LOCAL_RANK on GPUs). The process group is
    created on first use and kept until the process exits (or `teardown()`), so that several runs in one
    process (a sweep under torchrun) reuse it; a group the caller initialised is used as it is.
    """
    global _current
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = launch_env()[2] if "LOCAL_RANK" in os.environ else rank
    else:
        rank, world, local_rank = launch_env()
    if world == 1:
        yield Ranks(device=device)
        return
    if _current is not None:
        raise UserError("a data-parallel training run is already in progress in this process")
    device = device_for_rank(device, local_rank)
    backend = backend_for(device)
    if not dist.is_initialized():
        init_process_group(backend, rank, world, device)
    elif dist.get_backend() != backend:
        raise UserError(f"the process group uses {dist.get_backend()} but training on {device} needs {backend}")
    _current = Ranks(rank=rank, world_size=world, local_rank=local_rank, device=device, backend=backend)
    try:
        yield _current
    finally:
        _current = None


def init_process_group(backend: str, rank: int, world: int, device: torch.device) -> None:
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise UserError(f"WORLD_SIZE={world} is set but {' and '.join(missing)} is not: launch with torchrun "
                        f"(torchrun --nproc_per_node N -m training train ...)")
    # device_id binds NCCL to this rank's GPU up front (barriers and collectives then need no guessing).
    dist.init_process_group(backend, rank=rank, world_size=world,
                            device_id=device if backend == "nccl" else None)
    atexit.register(teardown)


def teardown() -> None:
    """Destroy the process group (called at exit; harmless when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batch_size(batch_size: int, world_size: int) -> None:
    if world_size > 1 and batch_size % world_size:
        lower = batch_size - batch_size % world_size
        raise UserError(f"train.batch_size {batch_size} does not split evenly over {world_size} processes (the "
                        f"global batch is divided between them): use a multiple of {world_size}, e.g. "
                        f"{lower or world_size} or {lower + world_size}")


def local_main_first(ranks: Ranks, load: Callable[[], T]) -> T:
    """`load()` on each node's local rank 0 first (it may download into a shared folder), then on the rest.

    A UserError on a local rank 0 stops every rank with a UserError, instead of leaving them waiting.
    """
    if not ranks.is_distributed:
        return load()
    result, error = None, None
    if ranks.local_rank == 0:
        try:
            result = load()
        except UserError as e:
            error = e
    if ranks.any(error is not None):
        raise error or UserError("the dataset could not be loaded on this node's local rank 0 (see its error)")
    return load() if ranks.local_rank != 0 else result


# ==== model wrapping and logging =======================================================================
def wrap_model(model: torch.nn.Module, ranks: Ranks) -> torch.nn.Module:
    """DistributedDataParallel around `model` (whose forward is its loss); the model itself outside torchrun.

    BatchNorm layers become SyncBatchNorm on GPUs, so that they normalise with the global batch's
    statistics. PyTorch's SyncBatchNorm is GPU-only: on the CPU each process normalises its own shard
    (as plain DDP does), and the run differs slightly from a single-process one.
    """
    if not ranks.is_distributed:
        return model
    has_batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_batch_norm and ranks.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the layers in place
    elif has_batch_norm and ranks.is_main:
        warnings.warn("batch_norm with several CPU processes: SyncBatchNorm needs CUDA, so each process "
                      "normalises with its own shard's statistics (the result differs from one process)",
                      stacklevel=2)
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    # broadcast_buffers (the default) re-sends rank 0's buffers every step: they are equal anyway
    # (VQ statistics are all-reduced), but a drifted buffer can never go unnoticed for long.
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def mean_over_ranks(out):
    """A LossOutput whose loss and scalar tensor terms are averaged over ranks: the global batch's values.

    One all-reduce, no host sync. Every rank then checks (and rank 0 logs) the same numbers. Terms that
    are not batch means (VQ perplexity, codes used) become the mean of the ranks' values.
    """
    ranks = current()
    if ranks is None:
        return out
    names = [k for k, v in out.terms.items() if isinstance(v, torch.Tensor) and v.numel() == 1]
    values = torch.stack([out.loss.detach().float().reshape(())]
                         + [out.terms[k].detach().float().reshape(()) for k in names])
    dist.all_reduce(values)
    values = values / ranks.world_size
    terms = dict(out.terms, **{k: values[i + 1] for i, k in enumerate(names)})
    return dataclasses.replace(out, loss=values[0], terms=terms)


# ==== helpers the models call (no-ops in a single process) ==========================================
def noise_like(t: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like t (a batch): this rank's rows of the global batch's noise.

    In a single process this is `torch.randn_like(t)`, drawing the same numbers.
    """
    ranks = current()
    if ranks is None:
        return torch.randn_like(t)
    full = torch.randn((t.shape[0] * ranks.world_size, *t.shape[1:]), dtype=t.dtype, device=t.device)
    return ranks.shard(full).contiguous()


class _GatherShards(torch.autograd.Function):
    """All-gather of the ranks' shards into the global batch order, with a gradient.

    Every rank computes the same function of the gathered batch, so the gradient for a rank's shard is
    the sum of all ranks' gradients for it (all-reduce, then take the own rows); DDP's average over ranks
    then gives the single-process gradient exactly.
    """

    @staticmethod
    def forward(ctx, shard: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        ctx.rank, ctx.world = rank, world
        shard = shard.contiguous()
        parts = [torch.empty_like(shard) for _ in range(world)]
        dist.all_gather(parts, shard)
        # Global row i*world + r is rank r's local row i.
        return torch.stack(parts, dim=1).flatten(0, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.unflatten(0, (-1, ctx.world))[:, ctx.rank], None, None


def gather_batch(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The global batch of each tensor (this rank's shards, first dimension = batch), in global order.

    One collective for all of them; autograd-aware. In a single process the tensors come back as they are.
    """
    ranks = current()
    if ranks is None:
        return tensors
    batch = tensors[0].shape[0]
    flat = [t.reshape(batch, -1) for t in tensors]
    dtype = flat[0].dtype
    for f in flat[1:]:
        dtype = torch.promote_types(dtype, f.dtype)
    joined = _GatherShards.apply(torch.cat([f.to(dtype) for f in flat], dim=1), ranks.rank, ranks.world_size)
    pieces = joined.split([f.shape[1] for f in flat], dim=1)
    return tuple(p.reshape(-1, *t.shape[1:]).to(t.dtype) for p, t in zip(pieces, tensors))


def global_mean(*scalars: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Batch means over this rank's shard -> the global batch's means (equal shards); autograd-aware."""
    ranks = current()
    if ranks is None:
        return scalars
    (per_rank,) = gather_batch(torch.stack([s.reshape(()) for s in scalars]).unsqueeze(0))
    return tuple(per_rank.mean(dim=0).unbind())


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum t over ranks, in place (no gradient); t itself in a single process."""
    if current() is not None:
        dist.all_reduce(t)
    return t


def random_global_rows(rows: torch.Tensor, batch: int, k: int) -> torch.Tensor:
    """k rows drawn uniformly from the global batch's rows: the same on every rank.

    rows: this rank's (batch * R, D) rows, R consecutive rows per image (e.g. a VQ code grid). The draw
    uses the RNG exactly as `rows[torch.randint(len(rows), (k,))]` does in one process holding the whole
    batch, and returns the rows that process would get.
    """
    ranks = current()
    if ranks is None:
        return rows[torch.randint(0, rows.shape[0], (k,), device=rows.device)]
    world = ranks.world_size
    per_image = rows.shape[0] // batch
    picks = torch.randint(0, rows.shape[0] * world, (k,), device=rows.device)
    image, offset = picks // per_image, picks % per_image
    local = (image // world) * per_image + offset
    mine = (image % world == ranks.rank).unsqueeze(1)
    # Each rank fills in the rows it holds (zeros elsewhere); the sum over ranks is the exact row.
    picked = torch.where(mine, rows[local], torch.zeros((), dtype=rows.dtype, device=rows.device))
    dist.all_reduce(picked)
    return picked
