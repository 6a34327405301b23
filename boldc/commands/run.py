"""``boldc run FILE --input x.npy``: run a function with the reference interpreter."""

from __future__ import annotations

import click
import numpy as np

from boldc.commands.common import FILE, load_array_file, save_arrays
from boldc.errors import BoldcError
from boldc.fileio import check_distinct, check_output_file, load
from boldc.interp import run


@click.command("run")
@click.argument("file", type=FILE)
@click.option("--input", "-i", "inputs", type=FILE, multiple=True, required=True,
              help="Input array file: a .npy per function argument, in order, or one .npz "
                   "whose keys are the argument names.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the outputs here (.npy for one output, .npz for several).")
@click.option("--func", default="forward", show_default=True, help="Function to run.")
def command(file, inputs, output, func: str) -> None:
    """Run FUNC of FILE on the input arrays with the reference interpreter."""
    if output:
        check_distinct({"-o": output}, [("FILE", file)] + [("--input", p) for p in inputs])
        check_output_file(output)
    module = load(file)
    fn = module.function(func)
    if len(inputs) == 1 and inputs[0].suffix == ".npz":
        args = load_array_file(inputs[0])
    else:
        arrays = [next(iter(load_array_file(p).values())) for p in inputs]
        args = arrays
    env = run(module, fn, args)
    outs = {v.name: env[v] for v in fn.returns}
    if output:
        save_arrays(output, outs)
        click.echo(f"wrote {len(outs)} output(s) to {output}")
        return
    if not outs:
        raise BoldcError(f"{file}: @{func} returns nothing")
    for name, arr in outs.items():
        click.echo(f"%{name}: {arr.dtype}{list(arr.shape)}")
        click.echo(np.array2string(arr, threshold=200, edgeitems=3))
