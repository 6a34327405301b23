"""Training on several processes with torch.distributed (gloo on the CPU, NCCL on CUDA).

A run is N processes with torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``): started by ``torchrun --nproc-per-node N -m boldc train ...``
or by ``boldc train --nproc N`` (``launch``, which starts them the same way). Every rank holds
the whole model; each step's global batch is split across the ranks, and
DistributedDataParallel all-reduces the gradients (the weight signals q of the b1 params, the
ordinary gradients of the f32 ones) before the optimizers run, so every rank flips the same bits.

So that N processes compute what one process computes on the whole batch:

- the gradients are **summed** over the ranks (a comm hook; DDP's default averages), and a
  mean loss divides by the size of the whole batch (``Runtime.loss_count``): for softmax_xent
  the number of labels of the whole batch that are not ignored (one all-reduce of a scalar in
  the loss and one in its gradient, ``Comm.all_sum``);
- an integer signal's scale comes from the largest magnitude over the whole batch (one
  all-reduce of a scalar per Boolean layer, ``Comm.all_max``), so its integers are the ones
  one process quantizes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from boldc.errors import BoldcError

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT = timedelta(minutes=10)


@dataclass
class Comm:
    """This process's place in a distributed run and the collectives the engine uses."""

    rank: int
    world: int
    local_rank: int
    signal_group: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, count: int) -> slice:
        """This rank's contiguous part of a global batch of ``count`` samples."""
        return slice(self.rank * count // self.world, (self.rank + 1) * count // self.world)

    def all_max(self, value: torch.Tensor) -> torch.Tensor:
        """The largest of every rank's ``value`` (a scalar)."""
        out = value.detach().clone().reshape(1)
        dist.all_reduce(out, op=dist.ReduceOp.MAX, group=self.signal_group)
        return out.reshape(())

    def all_sum_tensor(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over the ranks of ``value`` (a tensor of the same shape on every rank)."""
        out = value.detach().clone()
        dist.all_reduce(out, group=self.signal_group)
        return out

    def all_sum(self, value: float, device) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, group=self.signal_group)
        return float(t)

    def barrier(self) -> None:
        dist.barrier(group=self.signal_group)


def environment() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's variables, or None outside a run of several."""
    world = os.environ.get("WORLD_SIZE")
    if world is None or int(world) <= 1:
        return None
    missing = [k for k in ENV_KEYS if k not in os.environ]
    if missing:
        raise BoldcError(f"WORLD_SIZE={world} but {', '.join(missing)} is not set: start the processes with torchrun "
                         "or boldc train --nproc")
    return int(os.environ["RANK"]), int(world), int(os.environ["LOCAL_RANK"])


def init(device: torch.device) -> Comm | None:
    """Join the process group of this run (gloo on the CPU, NCCL on CUDA), or None for one process."""
    env = environment()
    if env is None:
        return None
    rank, world, local_rank = env
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": torch.device("cuda", local_rank)} if device.type == "cuda" else {}
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT, **kwargs)
    return Comm(rank, world, local_rank, dist.new_group(backend=backend))


def _sum_hook(state, bucket):
    """DDP comm hook: the gradients summed over the ranks (not averaged)."""
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def data_parallel(net, comm: Comm):
    """``net`` wrapped in DistributedDataParallel with summed gradients."""
    from torch.nn.parallel import DistributedDataParallel

    dev = net.device
    ddp = DistributedDataParallel(net, device_ids=[dev] if dev.type == "cuda" else None, forward_sync_buffers=False)
    ddp.register_comm_hook(None, _sum_hook)
    return ddp


def cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def check_nproc(nproc: int, device: torch.device) -> None:
    """At most one process per CPU core (on the CPU) or per GPU (on CUDA)."""
    if nproc < 1:
        raise BoldcError(f"--nproc {nproc}: give at least 1 process")
    if device.type == "cuda":
        have = torch.cuda.device_count()
        if nproc > have:
            raise BoldcError(f"--nproc {nproc}: this machine has {have} GPU(s); run at most {have} processes on CUDA")
    elif nproc > cores():
        raise BoldcError(f"--nproc {nproc}: this machine has {cores()} CPU core(s); run at most {cores()} processes "
                         "on the CPU")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, args: list[str], device: torch.device, threads: int | None = None) -> int:
    """Run ``python -m boldc ARGS`` as ``nproc`` processes with torchrun's environment, as
    torchrun would; returns the exit code (0, or the first failing rank's; 130 on Ctrl-C).
    Rank 0 keeps this terminal; the other ranks' output is shown only when they fail."""
    check_nproc(nproc, device)
    per_rank = threads or max(1, cores() // nproc)
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc), "OMP_NUM_THREADS": str(per_rank)}
    procs, logs = [], []
    try:
        for rank in range(nproc):
            env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            log = None if rank == 0 else tempfile.TemporaryFile()
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, "-m", "boldc", *args], env=env, stdout=log or None,
                                          stderr=subprocess.STDOUT if log else None))
        return _wait(procs, logs)
    except KeyboardInterrupt:
        # every rank got the SIGINT too: rank 0 finishes writing its last finished epoch and
        # exits; stopping it now could leave the files of two epochs (a bounded wait)
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
        _stop(procs)
        return 130
    finally:
        _stop(procs)
        for log in logs:
            if log is not None:
                log.close()


def _wait(procs, logs) -> int:
    """Wait for every rank; the first that fails stops the others (they would wait for it)."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            rank = failed[0]
            _stop(procs)
            if rank != 0:
                logs[rank].seek(0)
                lines = [ln for ln in logs[rank].read().decode(errors="replace").splitlines() if ln.strip()]
                print(f"boldc: rank {rank} failed: {lines[-1] if lines else f'exit code {codes[rank]}'}",
                      file=sys.stderr)
            return codes[rank]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.05)


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
