"""``boldc energy FILE``: the energy report of SPEC §6 (docs/energy.md)."""

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


@click.command("energy")
@click.argument("file", type=FILE)
@click.option("--phase", type=click.Choice(["inference", "training"]), default="inference", show_default=True,
              help="One inference pass, or one training step (forward, backward, optimizer update).")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Samples per step (binds the batch dimension N)  [default: 32, or the model's fixed batch]")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
              help="For an .onnx FILE: size of a dynamic input dimension, as in 'boldc convert'.")
@click.option("--hw", default="ascend", show_default=True, metavar="NAME|FILE",
              help="Hardware description: a shipped one (ascend, edge_example) or a JSON file (docs/energy.md).")
@click.option("--signal-bits", type=click.IntRange(1, 64), default=16, show_default=True,
              help="Width of the backward signals of a Boolean model (training; the method's W/A/G = 1/1/16).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help="table: per-op table and totals; json: the whole report (boldc.energymodel.Report); "
                   "csv: one line per item of the model and of the baseline.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the json/csv report to this file instead of standard output.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a plot (PNG) of the energy per op by memory level, Boolean and float side by side "
                   "(needs matplotlib).")
def command(file, phase, batch, input_shapes, hw, signal_bits, fmt, output, plot) -> None:
    """Energy of one inference pass or training step of FILE (.bir or .onnx) on an
    analytic model of an accelerator core, per op and in total, and its ratio to the
    float baseline (the same network in float32, ordinary backprop and Adam).

    An .onnx file is converted with the default options of 'boldc convert'; its float
    import is the baseline. The model and how to read the report: docs/energy.md."""
    from rich.console import Console

    from boldc.energymodel.api import energy
    from boldc.energymodel.hardware import load_hardware
    from boldc.fileio import atomic_write

    if output is not None and fmt == "table":
        raise BoldcError("-o/--output writes a json or csv report: add --format json or --format csv")
    err = Console(stderr=True)
    hardware = load_hardware(hw)  # bad files fail before the model is read
    from boldc.frontend.api import parse_input_shape

    shapes = dict(parse_input_shape(s) for s in input_shapes) or None
    if shapes and Path(file).suffix.lower() != ".onnx":
        raise BoldcError(f"{file}: --input-shape applies to .onnx files only")
    module, baseline = load_model(Path(file), err, shapes)
    with _status(err, f"costing {file} ({phase}, batch {batch or 'default'})"):
        report = energy(module, batch=batch, phase=phase, hw=hardware, signal_bits=signal_bits,
                        baseline=baseline, source=Path(file).name)
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
