"""``boldc compile FILE -o DIR``: write a standalone C folder (Makefile, main.c, weights)."""

from __future__ import annotations

import click

from boldc.commands.common import FILE, f32_rate
from boldc.errors import BoldcError

TRAIN_ONLY = ("eta", "lr", "schedule", "total_steps", "freeze_float")


@click.command("compile")
@click.argument("file", type=FILE)
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Folder to write (created; must not exist or be empty unless --force).")
@click.option("--name", default="model", show_default=True,
              help="C prefix of the generated symbols and files.")
@click.option("--max-batch", type=click.IntRange(min=1),
              help="Largest batch one call handles, up to 65536 (the arena, at most 4 GiB, is planned for it) "
                   "[default: 1, or 64 with --train].")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Threads the kernels may use; > 1 needs OpenMP (make OPENMP=-fopenmp).")
@click.option("--func", default="forward", show_default=True, help="Function the example main.c runs.")
@click.option("--force", is_flag=True, help="Replace the output folder if it is an earlier export (or empty).")
@click.option("--train", is_flag=True,
              help="Also emit the training step (built by autodiff and insert-optimizer when FILE has none), "
                   "the checkpoint functions and an example training program (train_main.c).")
@click.option("--eta", type=click.FloatRange(min=0, min_open=True), callback=f32_rate,
              help="With --train: Boolean learning rate [3].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), callback=f32_rate,
              help="With --train: Adam learning rate [1e-3].")
@click.option("--schedule", type=click.Choice(["constant", "cosine", "poly"]),
              help="With --train: schedule of eta and lr [cosine with --total-steps, else constant].")
@click.option("--total-steps", type=click.IntRange(min=1), help="With --train: steps of the schedule.")
@click.option("--freeze-float", is_flag=True, default=None, help="With --train: train the Boolean weights only.")
@click.option("--no-fuse", is_flag=True,
              help="Keep every op its own C function: do not fuse layers with the elementwise ops after them.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
              help="Size of a symbolic dimension, fixed at compile time (repeatable): every symbol but the batch N "
                   "needs one, e.g. --dim L=64; --dim N=32 fixes the batch too.")
def command(file, outdir, name: str, max_batch, threads: int, func: str, force: bool, train: bool, no_fuse: bool,
            dims, **training) -> None:
    """Compile FILE (.bir) to portable C in folder DIR: the model, the runtime, the
    weights, a Makefile and an example main.c. `make` in DIR builds it without Python."""
    from boldc.backend.export import export
    from boldc.backend.training import TrainOptions, training_module
    from boldc.fileio import check_outside, load
    from boldc.passes.bind_dims import bound_copy, parse_dims

    given = {k: v for k, v in training.items() if v is not None}
    if given and not train:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise BoldcError(f"{flags} given without --train (training options apply only with --train)")
    check_outside(outdir, "-o", {"FILE": file})  # --force replaces the folder whole
    sizes = parse_dims(dims)
    module = load(file)
    if not module.has_weights:
        raise BoldcError(f"{file}: the module has no weights (a structure-only file cannot be compiled)")
    module = bound_copy(module, sizes)
    if train:
        module = training_module(module, TrainOptions.from_kwargs(given))
    out = export(module, outdir, name=name, max_batch=max_batch or (64 if train else 1), threads=threads, func=func,
                 force=force, train=train, fuse=not no_fuse)
    click.echo(f"wrote {out}/ (build it with: make -C {out}{_kernels_note()})")


def _kernels_note() -> str:
    """Which kernels `make` builds, and which `make ARCH=-march=native` gives on this machine."""
    from boldc.backend.build import find_compiler, kernels_selected

    try:
        cc = find_compiler()
        return (f"; kernels: {kernels_selected((), cc)}, or {kernels_selected(('-march=native',), cc)} "
                "with make ARCH=-march=native on this machine")
    except BoldcError:
        return ""
