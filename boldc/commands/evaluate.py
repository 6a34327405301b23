"""``boldc eval MODEL.bir --data DATA.npz``: loss and accuracy through the generated C, or
on PyTorch with ``--engine torch``."""

from __future__ import annotations

import click

from boldc.commands.common import FILE


@click.command("eval")
@click.argument("model", type=FILE)
@click.option("--data", required=True, type=FILE, help="An .npz with x (samples) and y (labels).")
@click.option("--batch", default=256, show_default=True, type=click.IntRange(min=1),
              help="Samples per call of the compiled forward.")
@click.option("--loss", type=click.Choice(["softmax_xent", "mse", "l1"]),
              help="Loss [default: the model's @train_step loss, else softmax_xent].")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Threads of the C kernels (OpenMP), or of torch.")
@click.option("--engine", default="c", show_default=True, type=click.Choice(["c", "torch"]),
              help="Run @forward in the generated C, or on PyTorch (needs boldc[torch]).")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]),
              help="(--engine torch) Where @forward runs; auto: CUDA when present.")
def command(model, data, batch, loss, threads, engine, device) -> None:
    """Print the loss and the accuracy of MODEL (.bir) on DATA, running the compiled
    @forward (accuracy: the argmax of the prediction equals the label; classification
    losses only)."""
    import boldc
    from boldc.commands.data import load_data, model_input
    from boldc.commands.train import target_type
    from boldc.errors import BoldcError
    from boldc.fileio import load

    module = load(model)
    if not module.has_weights:
        raise BoldcError(f"{model}: the module has no weights (a structure-only file cannot be evaluated)")
    model_input(module, model)
    if loss and "train_step" in module.functions:
        raise BoldcError(f"--loss: {model} has @train_step, whose loss is used")
    x, y = load_data(data, module, target_type(module, loss or "softmax_xent"))
    if engine == "torch":
        from boldc.torch.cli_support import model as torch_model

        cm = torch_model(module, False, max_batch=min(batch, len(x)), threads=threads, device=device)
    else:
        from boldc.commands.common import check_c_engine_options

        check_c_engine_options({"device": device})
        cm = boldc.compile(module, max_batch=min(batch, len(x)), threads=threads)
    cm.set_threads(threads)
    value, accuracy = cm.evaluate(x, y, loss=None if "train_step" in module.functions else loss)
    text = f"loss {value:.4f}"
    if accuracy is not None:
        text += f"  accuracy {100 * accuracy:.2f}% ({int(round(accuracy * len(x)))}/{len(x)})"
    click.echo(f"{text}  on {len(x)} samples of {data}")
