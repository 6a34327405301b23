"""``boldc convert MODEL.onnx -o MODEL.bir``: float ONNX -> Boolean IR, with a summary."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

import click

from boldc.commands.common import FILE
from boldc.errors import BoldcError


def _status(console, text: str):
    """A spinner on a terminal; nothing when stderr is a file or a pipe."""
    return console.status(text) if console.is_terminal else nullcontext()


@click.command("convert")
@click.argument("model", type=FILE)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Output IR file [default: MODEL with the suffix .bir, in the current directory].")
@click.option("--keep-bn", is_flag=True,
              help="Keep BatchNormalization (float, trainable) and LRN between each Boolean layer and its "
                   "threshold instead of removing them.")
@click.option("--fold-bn", is_flag=True,
              help="Keep BatchNormalization and fold each one that feeds a threshold into per-channel integer "
                   "thresholds (for inference; exact).")
@click.option("--logic", type=click.Choice(["xnor", "xor"]), default="xnor", show_default=True,
              help="Logic of the Boolean neurons.")
@click.option("--float-layers", default="first,last", show_default=True, metavar="LIST",
              help="Arithmetic layers kept float, comma-separated: first, last, none, all, indices "
                   "(0-based, negative from the end) or layer names (weight names, as the summary prints).")
@click.option("--init", type=click.Choice(["sign", "random"]), default="sign", show_default=True,
              help="Initial Boolean weights: the sign of the float weights (w >= 0 -> T) or random bits.")
@click.option("--seed", type=int, help="Seed of --init random (only with it)  [default: 0]")
@click.option("--no-lower", is_flag=True, help="Import only: write the float IR.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
              help="Shape of an input with dynamic dimensions other than the batch, e.g. x=1x3x32x32 "
                   "(N keeps the batch symbolic: x=Nx3x32x32; another name keeps a size symbolic: ids=NxL). "
                   "Repeatable.")
@click.option("--binarize-activations", is_flag=True,
              help="Transformers: threshold the real input of the projections that read LayerNorm or attention "
                   "outputs, so that they are Boolean (blinear) instead of mixed (mlinear).")
@click.option("--no-layer-scale", is_flag=True,
              help="Transformers: no per-output scale mean|W_j| after the Boolean-weight projections whose output "
                   "reaches LayerNorm or attention.")
@click.option("--no-fuse", is_flag=True,
              help="Keep every op apart: do not fuse layers with the elementwise ops after them (docs/ir.md).")
def command(model, output, keep_bn, fold_bn, logic, float_layers, init, seed, no_lower, input_shapes,
            binarize_activations, no_layer_scale, no_fuse) -> None:
    """Convert a float ONNX MODEL into a Boolean network (.bir) and print a summary.

    Arithmetic layers (Conv, Gemm, MatMul) become Boolean except the first and the
    last; ReLU-like activations become thresholds; BatchNorm and Dropout are removed
    (see --keep-bn). See docs/convert.md."""
    from rich.console import Console

    from boldc.fileio import check_distinct, check_output_file, save
    from boldc.frontend.api import fuse_layers, import_onnx, lower, parse_input_shape
    from boldc.frontend.summary import render

    lowering = {"--keep-bn": keep_bn, "--fold-bn": fold_bn, "--logic": logic != "xnor",
                "--float-layers": float_layers != "first,last", "--init": init != "sign", "--seed": seed is not None,
                "--no-fuse": no_fuse, "--binarize-activations": binarize_activations,
                "--no-layer-scale": no_layer_scale}
    if no_lower and any(lowering.values()):
        given = ", ".join(k for k, v in lowering.items() if v)
        raise BoldcError(f"--no-lower writes the float IR; it cannot be combined with {given}")
    if seed is not None and init != "random":
        raise BoldcError("--seed only seeds --init random: add --init random, or drop --seed (--init sign "
                         "takes no randomness)")
    seed = 0 if seed is None else seed
    shapes = dict(parse_input_shape(s) for s in input_shapes)
    output = output or Path(Path(model).stem + ".bir")
    check_distinct({"-o": output}, {"MODEL": model})
    check_output_file(output)  # before the import, which may take minutes
    err = Console(stderr=True)
    start = time.perf_counter()
    with _status(err, f"importing {model}"):
        before = import_onnx(model, shapes)
    if no_lower:
        after = before
    else:
        with _status(err, "lowering to Boolean"):
            after = lower(before.copy(), keep_bn=keep_bn, logic=logic, float_layers=float_layers, init=init,
                          seed=seed, fold_bn=fold_bn, binarize_activations=binarize_activations,
                          layer_scale=not no_layer_scale)
    written = after if no_lower or no_fuse else fuse_layers(after.copy())
    with _status(err, f"writing {output}"):
        save(written, output)
    out = Console(file=sys.stdout, width=max(100, Console().width))
    render(before, after, out)
    if written is not after:
        out.print(f"fused {_composites(written)} layers with the elementwise ops after them "
                  f"({len(after.function('forward').ops) - len(written.function('forward').ops)} ops fewer; "
                  "--no-fuse keeps them apart)")
    out.print(f"wrote {output} in {time.perf_counter() - start:.2f} s")


def _composites(module) -> int:
    """How many ops of @forward stand for several (fused ops)."""
    from boldc.ops.registry import lookup
    from boldc.ops.traits import Composite

    return sum(lookup(op.name).has(Composite) for op in module.function("forward").ops)
