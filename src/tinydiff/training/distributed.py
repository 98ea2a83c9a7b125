"""Data-parallel training with PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun --nproc_per_node=N -m tinydiff train ...`` starts N processes with RANK, WORLD_SIZE
and LOCAL_RANK in their environment; :func:`session` joins them into one process group (gloo on
CPU, nccl on CUDA). ``tinydiff train --nproc N`` runs exactly that command (:func:`launch`).

The meaning of a run does not depend on the world size: every rank draws the same global batch
(indices, timesteps, noise, label dropout) from the same seeded generator and computes only its
own contiguous shard of it; DDP averages the gradients, so the update is that of one process
on the whole batch (tests/test_distributed.py checks this to float tolerance). Rank 0 alone
keeps the EMA and writes logs, checkpoints and sample grids, which therefore resume at any
world size.

Stopping: if one rank dies, torchrun terminates the others (SIGTERM) and exits non-zero. A
SIGTERM or SIGINT (which torchrun passes on to every rank) during training asks the loop to stop:
the ranks agree after every step on whether any of them was asked (:meth:`Context.largest`), so
all stop after the same step, rank 0 writes a checkpoint, and each exits 128 + the signal's number
(trainer.py). Outside the training loop :func:`session` makes SIGTERM raise SystemExit in each
rank so that the process group is torn down; a checkpoint being written at that moment is never
the one `latest` points to (checkpoint.py writes atomically). Only rank 0 locks the run directory
(checkpoint.RunLock); the others learn whether it could (:meth:`Context.largest` again).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..config import resolve_device


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous block of a global batch of n (n divisible by world_size)."""
        size = n // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def device(self, name: str) -> torch.device:
        device = resolve_device(name)
        if device.type == "cuda" and device.index is None and self.enabled:
            device = torch.device("cuda", self.local_rank)  # one GPU per process
        return device

    @property
    def joined(self) -> bool:
        """Several processes, joined in a process group (collectives work)."""
        return self.enabled and dist.is_available() and dist.is_initialized()

    def largest(self, value: int, device: torch.device) -> int:
        """The largest of every rank's ``value`` (``value`` itself on one process)."""
        if not self.joined:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor)

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing to wait for on one process)."""
        if self.joined:
            dist.barrier()

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's equally-sized tensor, in rank order (identity on one process)."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)


def context() -> Context:
    """The rank, world size and local rank torchrun put in the environment (1 process without)."""
    return Context(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def _raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def session(device: str = "auto", timeout_s: float = 300.0):
    """Join the process group for the duration of a run (nothing to do on one process)."""
    ctx = context()
    if not ctx.enabled or dist.is_initialized():
        yield ctx
        return
    backend = "nccl" if ctx.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(ctx.local_rank)
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield ctx
        dist.barrier()  # every rank finished before any tears the group down (gloo can abort a late one)
    finally:
        dist.destroy_process_group()
        signal.signal(signal.SIGTERM, previous)


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``tinydiff <argv>`` under torchrun with nproc processes on this machine; its exit code.
    A SIGTERM to this process is passed on to torchrun, which stops the workers."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    proc = subprocess.Popen([*command, "-m", "tinydiff", *argv])
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
