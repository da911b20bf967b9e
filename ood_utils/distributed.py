"""Several processes, one result: what ``train.fit`` and the Stable Diffusion generation need to run under
``accelerate launch --num_processes N`` (or ``torchrun``) and give what one process gives.

The launcher starts N copies of a script and tells each one who it is through environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`processes` reads them and
joins the process group: NCCL between GPUs, gloo on CPU (the tests run two CPU processes). Without a launcher
everything here is a no-op, so a notebook, a single-process script and the tests share one code path.

How training is shared (``train.fit``): every process reads the SAME global batch from the same loader
(same seed, same shuffle, same augmentation draws) and keeps its own contiguous rows (:func:`local_share`);
:func:`average_gradients` averages the gradients, as DistributedDataParallel does. One step of N processes
is then one step of one process on the whole batch, up to float rounding, and every process's random
streams stay identical to those of a single-process run, so the checkpoint the main process writes resumes
every process exactly. The price is that each process loads the whole batch: cheap for tensors in memory
(CIFAR, the mini data); for large decoded images, mind the loader workers per process.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place in the launch: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints, logs and draws progress bars."""
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world > 1


def processes() -> Processes:
    """Who this process is; joins the process group on first use when a launcher started several.

    With CUDA the process takes GPU ``LOCAL_RANK`` as its current device, so every ``"cuda"`` in the kit
    (models, feature extraction, the SD pipeline) means this process's own GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2:
        return Processes()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        # gloo for CPU tensors (tests, device="cpu"), NCCL for GPU tensors
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank)


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@contextmanager
def main_first():
    """Run the block in the main process first, then in the others: the main process fills a cache that
    the others then read instead of computing it again."""
    procs = processes()
    if not procs.is_main:
        barrier()
    yield procs
    if procs.is_main:
        barrier()


def agree(value: int, what: str, procs: Processes) -> None:
    """Stop every process with the same error when they hold different ``value`` s (e.g. the epoch they
    resume from: machines that do not share the cache folder see different checkpoints), instead of
    letting them wait for each other forever."""
    if not procs.several:
        return
    t = torch.tensor([value, -value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if t[0].item() != -t[1].item():
        raise RuntimeError(f"the {procs.world} processes disagree on {what} (from {int(-t[1].item())} to "
                           f"{int(t[0].item())}): every process must see the same files; with several machines "
                           "put the cache (OOD_KIT_CACHE) on a folder they all share")


def _rows(batch: Any) -> int | None:
    """The number of rows of the first tensor of a (nested) batch."""
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.ndim else None
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        n = _rows(item)
        if n is not None:
            return n
    return None


def _slice(batch: Any, rank: int, world: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return torch.tensor_split(batch, world)[rank] if batch.ndim else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(_slice(b, rank, world) for b in batch)
    if isinstance(batch, dict):
        return {k: _slice(v, rank, world) for k, v in batch.items()}
    return batch


def local_share(batch: Any, procs: Processes) -> tuple[Any, float]:
    """This process's contiguous share of every tensor of a global batch, and the weight of its loss.

    The gradients of the processes are averaged. When the batch does not divide evenly
    (the last batch of a loader without ``drop_last``) the shares differ by one row; the weight
    ``world * rows_here / rows_total`` (of the batch's first tensor) makes the average of the weighted
    per-process mean losses the mean over the whole batch."""
    if not procs.several:
        return batch, 1.0
    total = _rows(batch)
    if total is None:
        raise ValueError("cannot share a batch without tensors between processes")
    if total < procs.world:
        raise ValueError(f"a batch of {total} rows cannot be shared by {procs.world} processes: use a larger batch "
                         "or drop_last=True in the loader")
    share = _slice(batch, procs.rank, procs.world)
    return share, procs.world * _rows(share) / total


def global_mean(value: torch.Tensor, weight: float, procs: Processes) -> tuple[float, bool]:
    """The whole batch's mean loss from each process's weighted share, and whether every process's loss is
    finite (one collective call: a process that stopped alone would leave the others waiting)."""
    v = value.detach().float().reshape(())
    if not procs.several:
        return v.item(), bool(torch.isfinite(v))
    finite = torch.isfinite(v)
    packed = torch.stack([torch.where(finite, v * weight, torch.zeros_like(v)), (~finite).float()]).cpu()
    dist.all_reduce(packed)
    return (packed[0] / procs.world).item(), packed[1].item() == 0


def _state_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]


def broadcast_model(model: torch.nn.Module, procs: Processes) -> None:
    """Give every process the main process's parameters and buffers (the start of training)."""
    if procs.several:
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def average_gradients(model: torch.nn.Module, procs: Processes) -> None:
    """Average the gradients (and the floating-point buffers: BatchNorm's running statistics) of the
    processes, in one collective call, after ``backward`` and before the optimiser step.

    This is what DistributedDataParallel does, written out: DDP's gradient hooks would in addition require
    every parameter to be reached from ``forward`` exactly once (BOOD's phi is applied to the energies in
    the loss, outside the network's forward, and is unused in its cross-entropy baseline), and they are not
    needed here: GReg's double backward leaves first- and second-order terms summed in ``.grad`` like any
    other backward. A parameter without a gradient in every process keeps ``grad = None``, as in one
    process (SGD then leaves it alone, weight decay included)."""
    if not procs.several:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    device = (params or buffers)[0].device
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
    parts += [b.reshape(-1).float() for b in buffers]
    sizes = [len(t) for t in parts]
    has_grad = torch.tensor([float(p.grad is not None) for p in params], device=device)
    packed = torch.cat(parts + [has_grad])
    dist.all_reduce(packed)
    packed /= procs.world
    values = torch.split(packed[:sum(sizes)], sizes)
    for p, v, has in zip(params, values, packed[sum(sizes):].tolist()):
        if has > 0:
            p.grad = v.view_as(p).to(p.dtype).clone()
    for b, v in zip(buffers, values[len(params):]):
        b.copy_(v.view_as(b))
