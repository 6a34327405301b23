"""``boldc compile FILE -o DIR``: write a standalone C folder (Makefile, main.c, weights)."""

from __future__ import annotations

import click

from boldc.commands.common import FILE
from boldc.errors import BoldcError
from boldc.fileio import load


@click.command("compile")
@click.argument("file", type=FILE)
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Folder to write (created; must not exist or be empty unless --force).")
@click.option("--name", default="model", show_default=True,
              help="C prefix of the generated symbols and files.")
@click.option("--max-batch", default=1, show_default=True, type=click.IntRange(min=1),
              help="Largest batch one call handles (the arena is planned for it).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Threads the kernels may use; > 1 needs OpenMP (make OPENMP=-fopenmp).")
@click.option("--func", default="forward", show_default=True, help="Function the example main.c runs.")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--train", is_flag=True, help="Also emit the training step (not available yet).")
def command(file, outdir, name: str, max_batch: int, threads: int, func: str, force: bool, train: bool) -> None:
    """Compile FILE (.bir) to portable C in folder DIR: the model, the runtime, the
    weights, a Makefile and an example main.c. `make` in DIR builds it without Python."""
    from boldc.backend.export import export

    if train:
        raise BoldcError("--train: training is not available yet in the C backend")
    module = load(file)
    if not module.has_weights:
        raise BoldcError(f"{file}: the module has no weights (a structure-only file cannot be compiled)")
    out = export(module, outdir, name=name, max_batch=max_batch, threads=threads, func=func, force=force)
    click.echo(f"wrote {out}/ (build it with: make -C {out})")
