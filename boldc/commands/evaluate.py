"""``boldc eval MODEL.bir --data DATA.npz``: the loss and a metric (accuracy, mIoU or PSNR)
through the generated C, or on PyTorch with ``--engine torch``."""

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
@click.option("--metric", type=click.Choice(["accuracy", "miou", "psnr"]),
              help="Metric [default: accuracy for class labels, none for mse/l1].")
@click.option("--psnr-peak", default=1.0, show_default=True, type=float,
              help="The peak value of --metric psnr (1 for images in [0, 1], 255 for 8-bit values).")
@click.option("--ignore-index", type=int,
              help="(softmax_xent) The label left out of the loss and the metric [default: the model's @train_step "
                   "loss's, else -100].")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Threads of the C kernels (OpenMP), or of torch.")
@click.option("--engine", default="c", show_default=True, type=click.Choice(["c", "torch"]),
              help="Run @forward in the generated C, or on PyTorch (needs boldc[torch]).")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]),
              help="(--engine torch) Where @forward runs; auto: CUDA when present.")
def command(model, data, batch, loss, metric, psnr_peak, ignore_index, threads, engine, device) -> None:
    """Print the loss and a metric of MODEL (.bir) on DATA, running the compiled @forward
    (accuracy: the argmax of the prediction equals the label; miou: the mean IoU of the
    classes; both for class labels. psnr: the mean PSNR of the samples, for float targets)."""
    import boldc
    from boldc.commands.data import data_dims, load_data, model_input
    from boldc.commands.train import loss_ignore_index, metric_text, resolve_metric, target_type
    from boldc.errors import BoldcError
    from boldc.fileio import load
    from boldc.passes.bind_dims import describe

    module = load(model)
    if not module.has_weights:
        raise BoldcError(f"{model}: the module has no weights (a structure-only file cannot be evaluated)")
    model_input(module, model)
    if loss and "train_step" in module.functions:
        raise BoldcError(f"--loss: {model} has @train_step, whose loss is used")
    if ignore_index is not None and "train_step" in module.functions:
        raise BoldcError(f"--ignore-index: {model} has @train_step, whose loss's ignore_index is used")
    target = target_type(module, loss or "softmax_xent")
    metric = resolve_metric(metric, target, psnr_peak)
    ignored = loss_ignore_index(module, loss or "softmax_xent", ignore_index)
    x, y = load_data(data, module, target, ignored)
    if engine == "torch":
        from boldc.torch.cli_support import model as torch_model

        cm = torch_model(module, False, max_batch=min(batch, len(x)), threads=threads, device=device)
    else:
        from boldc.commands.common import check_c_engine_options

        check_c_engine_options({"device": device})
        dims = data_dims(module, x)  # the C code keeps only the batch symbolic: the others take the data's sizes
        if dims:
            click.echo(f"binding {describe(dims)} from the shape of 'x' in {data} (the C code is compiled for "
                       "these sizes)", err=True)
        cm = boldc.compile(module, max_batch=min(batch, len(x)), threads=threads, dims=dims)
    cm.set_threads(threads)
    value, measured = cm.evaluate(x, y, loss=None if "train_step" in module.functions else loss, metric=metric,
                                  psnr_peak=psnr_peak, ignore_index=ignore_index)
    text = f"loss {value:.4f}"
    if measured is not None:
        text += f"  {metric_text(metric, measured)}"
        if metric == "accuracy" and y.ndim == 1 and not (y == ignored).any():  # whole samples: how many
            text += f" ({int(round(measured * len(x)))}/{len(x)})"
    click.echo(f"{text}  on {len(x)} samples of {data}")
