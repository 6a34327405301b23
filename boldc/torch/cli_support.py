"""What ``boldc train --engine torch`` and ``boldc eval --engine torch`` call (boldc/commands
parses the options and hands them over): the engine's model, and the launch of a run on
several processes (``--nproc``)."""

from __future__ import annotations

import click

from boldc.errors import BoldcError
from boldc.torch import distributed
from boldc.torch.build import resolve_device
from boldc.torch.engine import TorchModel
from boldc.torch.engine import compile as engine_compile


def command_args(ctx: click.Context, drop: tuple[str, ...] = ("nproc",)) -> list[str]:
    """The command line of the running click command (name, arguments, options), without the
    options ``drop``: what each process of ``--nproc`` runs."""
    args = [ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in drop or value is None:
            continue
        if isinstance(param, click.Argument):
            args.append(str(value))
        elif param.is_flag:
            if value and value != param.default:
                args.append(param.opts[0])
        elif value != param.default:
            for v in (value if param.multiple else [value]):
                args += [param.opts[0], str(v)]
    return args


def launch_if_needed(ctx: click.Context, nproc: int, device: str) -> int | None:
    """With ``--nproc N`` > 1 (and not already one of N processes): run the command as N
    processes and return the exit code; else None (this process trains)."""
    if distributed.environment() is not None:
        if nproc > 1:
            raise BoldcError("--nproc: this process is already one of a distributed run (torchrun started it); "
                             "torchrun --nproc-per-node sets the number of processes")
        return None
    if nproc <= 1:
        return None
    return distributed.launch(nproc, command_args(ctx), resolve_device(device))


def model(module, train: bool, *, max_batch: int, threads: int, device: str, fast: bool = False, amp: bool = False,
          crop_pad: int = 0, flip: bool = False, **training) -> TorchModel:
    """The torch engine's model for the commands (``--fast``: float32 kernels, not exact)."""
    return engine_compile(module, train, max_batch=max_batch, threads=threads, device=device,
                          exact=False if (fast or amp) else None, amp=amp, crop=crop_pad, flip=flip, **training)
