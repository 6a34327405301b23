"""``boldc energy FILE``: the energy report of the method's accelerator model (docs/energy.md)."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import click

from boldc.commands.common import FILE
from boldc.errors import BoldcError


def _status(console, text: str):
    """A spinner on a terminal; nothing when stderr is a file or a pipe."""
    return console.status(text) if console.is_terminal else nullcontext()


def load_model(path: Path, console, input_shapes: dict | None = None):
    """(model, float baseline or None): a .bir as it is; an .onnx imported (the float
    baseline) and lowered to a Boolean network with the default options of convert."""
    suffix = path.suffix.lower()
    if suffix == ".bir":
        from boldc.fileio import load

        with _status(console, f"reading {path}"):
            return load(path), None
    if suffix == ".onnx":
        from boldc.frontend.api import import_onnx, lower

        with _status(console, f"importing {path}"):
            float_module = import_onnx(path, input_shapes=input_shapes)
        with _status(console, "lowering to Boolean (default options of boldc convert)"):
            return lower(float_module.copy()), float_module
    raise BoldcError(f"{path}: expected a .bir (Boolean IR) or an .onnx (float model) file")


def _bounded_batch(ctx, param, value):
    from boldc.energymodel.api import MAX_BATCH, batch_bound_message

    if value is not None and value > MAX_BATCH:
        raise click.BadParameter(batch_bound_message(value))
    return value


@click.command("energy")
@click.argument("file", type=FILE)
@click.option("--phase", type=click.Choice(["inference", "training"]), default="inference", show_default=True,
              help="One inference pass, or one training step (forward, backward, optimizer update).")
@click.option("--batch", type=click.IntRange(min=1), default=None, callback=_bounded_batch,
              help="Samples per step (binds the batch dimension N), at most 2^24  [default: 32, or the model's "
                   "fixed batch]")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
              help="For an .onnx FILE: size of a dynamic input dimension, as in 'boldc convert'.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
              help="Size of a symbolic dimension other than the batch (repeatable), e.g. --dim L=64 for a "
                   "sequence length; every such symbol needs one. --dim N=32 fixes the batch like --batch.")
@click.option("--hw", default="ascend", show_default=True, metavar="NAME|FILE",
              help="Hardware description: a shipped one (ascend, edge_example) or a JSON file (docs/energy.md).")
@click.option("--signal-bits", type=click.Choice(["16", "8", "4", "f32", "32"]), default="16", show_default=True,
              help="Backward signals of a Boolean model's layers (training): 16-, 8- or 4-bit integers (the "
                   "method's W/A/G = 1/1/16), or f32 (also spelled 32), as for 'boldc train'.")
@click.option("--no-fuse", is_flag=True,
              help="Cost every op on its own, each intermediate through memory, as before fusion (docs/energy.md).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help="table: per-op table and totals; json: the whole report (boldc.energymodel.Report); "
                   "csv: one line per item of the model and of the baseline.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the json/csv report to this file instead of standard output.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a plot (PNG) of the energy per op by memory level, Boolean and float side by side "
                   "(needs matplotlib).")
def command(file, phase, batch, input_shapes, dims, hw, signal_bits, no_fuse, fmt, output, plot) -> None:
    """Energy of one inference pass or training step of FILE (.bir or .onnx) on an
    analytic model of an accelerator core, per op and in total, and its ratio to the
    float baseline (the same network in float32, ordinary backprop and Adam).

    An .onnx file is converted with the default options of 'boldc convert'; its float
    import is the baseline. The model and how to read the report: docs/energy.md."""
    from rich.console import Console

    from boldc.energymodel.api import energy
    from boldc.energymodel.hardware import load_hardware
    from boldc.fileio import atomic_write, check_distinct, check_output_file
    from boldc.passes.bind_dims import describe, parse_dims

    if output is not None and fmt == "table":
        raise BoldcError("--output: writes a json or csv report only: add --format json or --format csv")
    check_distinct({"-o": output, "--plot": plot}, {"FILE": file, "--hw": hw if Path(hw).is_file() else None})
    for path in (output, plot):
        if path is not None:
            check_output_file(path)
    err = Console(stderr=True)
    hardware = load_hardware(hw)  # bad files fail before the model is read
    sizes = parse_dims(dims)
    from boldc.frontend.api import parse_input_shape

    shapes = dict(parse_input_shape(s) for s in input_shapes) or None
    if shapes and Path(file).suffix.lower() != ".onnx":
        raise BoldcError(f"{file}: --input-shape applies to .onnx files only")
    module, baseline = load_model(Path(file), err, shapes)
    bound = f", {describe(sizes)}" if sizes else ""
    with _status(err, f"costing {file} ({phase}, batch {batch or 'default'}{bound})"):
        bits = 32 if signal_bits == "f32" else int(signal_bits)
        report = energy(module, batch=batch, phase=phase, hw=hardware, signal_bits=bits, baseline=baseline,
                        source=Path(file).name, fuse=not no_fuse, dims=sizes)
    if plot is not None:
        from boldc.energymodel.render import save_plot

        save_plot(report, plot)
    if fmt == "table":
        from boldc.energymodel.render import print_table

        out = Console(file=sys.stdout, width=max(160, Console().width))
        print_table(report, out)
        if plot is not None:
            out.print(f"wrote {plot}")
        return
    text = report.to_json() + "\n" if fmt == "json" else report.to_csv()
    if output is not None:
        atomic_write(output, text)
    else:
        click.echo(text, nl=False)
