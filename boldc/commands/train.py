"""``boldc train MODEL.bir --data DATA.npz -o TRAINED.bir``: train through the generated C
(``--engine c``, the default) or on PyTorch (``--engine torch``: CPU or CUDA, ``--nproc N``
processes with DistributedDataParallel; boldc.torch, docs/torch.md).

The model is compiled with a training step (``boldc.compile(train=True)``; autodiff
and insert-optimizer with the options below when it has none) and trained for
``--epochs`` epochs of shuffled batches. After every epoch the command writes, each
atomically: the checkpoint (every param and the optimizer state, by the C runtime),
the trained model (.bir: the input module with the trained params; the optimizer
state stays in the checkpoint) and the metrics (JSON). Ctrl-C keeps the files of the
last finished epoch, says which, and exits with code 130; ``--resume CHECKPOINT``
continues from them. A loss or a param that becomes NaN or infinite stops the run
with an error (exit 2) before anything of that epoch is written: the files keep the
last good epoch.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import click

from boldc.commands.common import FILE, f32_rate
from boldc.errors import ArtefactError, BoldcError

# Options that only build a new training step (a module with @train_step keeps its own).
STEP_OPTIONS = ("eta", "lr", "schedule", "freeze_float", "threshold_grad", "loss", "ignore_index", "signal_bits",
                "rounding", "accumulator")
DEFAULTS = {"eta": 3.0, "lr": 1e-3, "schedule": "cosine", "freeze_float": False, "threshold_grad": "tanh",
            "loss": "softmax_xent", "ignore_index": -100, "signal_bits": "16", "rounding": "nearest",
            "accumulator": "f32"}
# Meta of the checkpoint that must match to resume: they fix the schedule and the batches.
RESUME_KEYS = ("epochs", "batch", "seed", "val_split", "steps_per_epoch")


def target_type(module, loss: str):
    """The type of the targets the loss takes for this model's prediction."""
    from boldc.backend.training import loss_op
    from boldc.ops.registry import lookup
    from boldc.ops.traits import Loss

    pred = module.function("forward").returns[0].type
    if "train_step" in module.functions:
        return lookup(loss_op(module).name).target_type(pred)
    d = lookup(loss)
    if d is None or not d.has(Loss):
        raise BoldcError(f"--loss {loss}: not a loss (softmax_xent, mse, l1)")
    from boldc.ops.registry import TypeCheck

    try:
        return d.target_type(pred)
    except TypeCheck as exc:
        raise BoldcError(f"--loss {loss} does not apply to the model's prediction {pred}: {exc}") from None


def loss_ignore_index(module, loss: str, given: int | None = None) -> int | None:
    """The label the loss ignores: @train_step's loss's, else ``given`` (default -100) when
    ``loss`` has an ignore_index, else None (mse, l1: no labels)."""
    from boldc.backend.training import loss_op
    from boldc.ops.registry import lookup

    if "train_step" in module.functions:
        return loss_op(module).attrs.get("ignore_index")
    spec = lookup(loss).attr_spec("ignore_index")
    if spec is None:
        if given is not None:
            raise BoldcError(f"--ignore-index: the loss {loss} takes no class labels")
        return None
    return spec.default if given is None else given


def resolve_metric(metric: str | None, target, psnr_peak: float) -> str | None:
    """The metric to report for the loss's ``target`` type: ``metric`` checked against it,
    or the default (accuracy for class labels, none for float targets)."""
    from boldc.metrics import check_metric, check_peak, default_metric

    labels = target.dtype.is_int
    for flag, check in ((f"--metric {metric}", lambda: metric is None or check_metric(metric, labels)),
                        ("--psnr-peak", lambda: check_peak(psnr_peak))):
        try:
            check()
        except BoldcError as exc:
            raise BoldcError(f"{flag}: {exc}") from None
    return metric or default_metric(labels)


def metric_text(metric: str, value: float) -> str:
    """A metric's value as the commands print it."""
    if metric == "psnr":
        return f"PSNR {value:.2f} dB"
    return f"{'mIoU' if metric == 'miou' else metric} {100 * value:.2f}%"


@click.command("train")
@click.argument("model", type=FILE)
@click.option("--data", required=True, type=FILE, help="Training data: an .npz with x (samples) and y (labels).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The trained model [default: MODEL_trained.bir in the current directory].")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1), help="Epochs to train.")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=1), help="Samples per step.")
@click.option("--eta", type=click.FloatRange(min=0, min_open=True), callback=f32_rate,
              help="Boolean learning rate η (docs/training.md) [default: 3].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), callback=f32_rate,
              help="Adam learning rate of the float params [default: 1e-3].")
@click.option("--schedule", type=click.Choice(["cosine", "constant", "poly"]),
              help="Schedule of η and lr over the run [default: cosine].")
@click.option("--freeze-float", is_flag=True, default=None, help="Train the Boolean weights only.")
@click.option("--threshold-grad", type=click.Choice(["tanh", "box", "bireal"]),
              help="Backward of the threshold activation [default: tanh].")
@click.option("--loss", type=click.Choice(["softmax_xent", "mse", "l1"]), help="Loss [default: softmax_xent].")
@click.option("--ignore-index", type=int,
              help="(softmax_xent) The label that gives no loss and no gradient, e.g. unlabelled pixels "
                   "[default: -100].")
@click.option("--metric", type=click.Choice(["accuracy", "miou", "psnr"]),
              help="Metric reported after every epoch [default: accuracy for class labels, none for mse/l1].")
@click.option("--psnr-peak", default=1.0, show_default=True, type=float,
              help="The peak value of --metric psnr (1 for images in [0, 1], 255 for 8-bit values).")
@click.option("--signal-bits", type=click.Choice(["16", "8", "4", "f32"]),
              help="Backward signals of the Boolean layers: 16-, 8- or 4-bit integers with a power-of-two scale "
                   "(exact sums, the same bits on every CPU), or f32 [default: 16].")
@click.option("--rounding", type=click.Choice(["nearest", "stochastic", "log"]),
              help="Rounding of integer signals (log: logarithmic, for --signal-bits 4) [default: nearest].")
@click.option("--accumulator", type=click.Choice(["f32", "i16"]),
              help="Storage of the Boolean optimizer's accumulators: f32, or i16 fixed point (half the memory) "
                   "[default: f32].")
@click.option("--val-split", default=0.0, show_default=True, type=float,
              help="Fraction of the data held out for validation (0: none).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the shuffling and the split.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint written after every epoch [default: OUTPUT with the suffix .ckpt].")
@click.option("--metrics", type=click.Path(dir_okay=False, path_type=Path),
              help="Per-epoch metrics (JSON) [default: OUTPUT with the suffix .metrics.json].")
@click.option("--resume", type=FILE, help="Continue from this checkpoint (same model, data and options).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Threads of the C kernels (OpenMP), or of torch per process.")
@click.option("--engine", default="c", show_default=True, type=click.Choice(["c", "torch"]),
              help="Run the steps in the generated C, or on PyTorch (needs boldc[torch]).")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]),
              help="(--engine torch) Where the steps run; auto: CUDA when present.")
@click.option("--nproc", default=1, show_default=True, type=click.IntRange(min=1),
              help="(--engine torch) Processes of a distributed run (DistributedDataParallel).")
@click.option("--fast", is_flag=True, help="(--engine torch) float32 kernels instead of the interpreter's exact "
                                           "arithmetic (Boolean layers stay exact).")
@click.option("--amp", is_flag=True, help="(--engine torch, CUDA) Float layers in bfloat16.")
@click.option("--crop-pad", default=0, show_default=True, type=click.IntRange(min=0),
              help="(--engine torch) Random crop of image inputs padded by this many pixels (0: none).")
@click.option("--flip", is_flag=True, help="(--engine torch) Random horizontal flip of image inputs.")
def command(model, data, output, epochs, batch, eta, lr, schedule, freeze_float, threshold_grad, loss, ignore_index,
            metric, psnr_peak, signal_bits, rounding, accumulator, val_split, seed, checkpoint, metrics, resume,
            threads, engine, device, nproc, fast, amp, crop_pad, flip) -> None:
    """Train MODEL (.bir) on DATA through the generated C (or on PyTorch with --engine torch)
    and write the trained model.

    Prints a progress bar with the loss, and after every epoch the loss and the metric
    (--metric) on the training data (and on the held-out part with --val-split). Defaults
    are the tested ones of docs/training.md."""
    from rich.console import Console

    import boldc
    from boldc.commands.data import data_dims, load_data, model_input, split
    from boldc.fileio import check_distinct, check_output_file, load
    from boldc.passes.bind_dims import describe

    engine_options = dict(device=device, nproc=nproc, fast=fast, amp=amp, crop_pad=crop_pad, flip=flip)
    if engine != "torch":
        from boldc.commands.common import check_c_engine_options

        check_c_engine_options(engine_options)
    err = Console(stderr=True)
    given = {k: v for k, v in dict(eta=eta, lr=lr, schedule=schedule, freeze_float=freeze_float,
                                     threshold_grad=threshold_grad, loss=loss, ignore_index=ignore_index,
                                     signal_bits=signal_bits, rounding=rounding, accumulator=accumulator).items()
             if v is not None}
    output = output or Path(Path(model).stem + "_trained.bir")
    checkpoint = checkpoint or output.with_suffix(".ckpt")
    metrics = metrics or output.with_suffix(".metrics.json")
    # --resume may name the checkpoint it continues: it is read whole before the first write
    check_distinct({"-o": output, "--checkpoint": checkpoint, "--metrics": metrics},
                   {"MODEL": model, "--data": data, "--resume": resume}, allowed=(("--checkpoint", "--resume"),))
    for path in (output, checkpoint, metrics):  # before any work: they are first written after an epoch
        check_output_file(path)
    if engine == "torch":  # after the checks of the paths: one error line, not one per process
        from boldc.torch.cli_support import launch_if_needed

        code = launch_if_needed(click.get_current_context(), nproc, device)
        if code is not None:  # the processes of --nproc ran the command
            raise click.exceptions.Exit(code)
    module = load(model)
    if not module.has_weights:
        raise BoldcError(f"{model}: the module has no weights (a structure-only file cannot be trained)")
    model_input(module, model)
    has_step = "train_step" in module.functions
    if has_step and given:
        raise BoldcError(f"{model} already has @train_step with its optimizer: "
                         f"{', '.join('--' + k.replace('_', '-') for k in given)} do not apply")
    opts = {**DEFAULTS, **given}
    target = target_type(module, opts["loss"])
    metric = resolve_metric(metric, target, psnr_peak)
    ignored = loss_ignore_index(module, opts["loss"], ignore_index)
    if ignored is None:
        opts.pop("ignore_index")  # the loss takes no labels
    x, y = load_data(data, module, target, ignored)
    x_tr, y_tr, x_val, y_val = split(x, y, val_split, seed, data)
    if batch > len(x_tr):
        batch = len(x_tr)  # one batch per epoch: the whole training set
    steps = math.ceil(len(x_tr) / batch)
    step_opts = {} if has_step else {**opts, "total_steps": steps * epochs}
    if engine == "torch":
        from boldc.torch.cli_support import model as torch_model

        engine_options.pop("nproc")
        cm = torch_model(module, True, max_batch=batch, threads=threads, seed=seed, **engine_options, **step_opts)
    else:
        dims = data_dims(module, x)  # the C code keeps only the batch symbolic: the others take the data's sizes
        if dims:
            click.echo(f"binding {describe(dims)} from the shape of 'x' in {data} (the C code is compiled for "
                       "these sizes)", err=True)
        with err.status("compiling the training step") if err.is_terminal else nullcontext():
            cm = boldc.compile(module, train=True, max_batch=batch, threads=threads, seed=seed, dims=dims,
                               **step_opts)
    cm.set_threads(threads)
    main = getattr(cm, "is_main", True)  # one process of several writes the files and reports
    run = {"model": str(model), "data": str(data), "epochs": epochs, "batch": batch, "seed": seed,
           "val_split": val_split, "steps_per_epoch": steps, "train_samples": len(x_tr), "val_samples": len(x_val),
           "metric": metric, **({"psnr_peak": psnr_peak} if metric == "psnr" else {}),
           **({} if has_step else {k: opts[k] for k in DEFAULTS if k in opts})}
    history, start = [], 0
    if resume:
        start, history = _resume(cm, resume, run, metrics)
    saved = {"checkpoint": (start, resume) if resume else None, "model": None}
    try:
        _train(cm, module, run, (x_tr, y_tr, x_val, y_val), start, history, saved, output, checkpoint, metrics, err,
               main)
    except KeyboardInterrupt:
        if main:
            click.echo(f"boldc: interrupted; {_saved_text(saved)}", err=True)
        raise click.exceptions.Exit(130) from None
    last = history[-1] if history else {}
    if main:
        click.echo(f"trained {epochs} epochs: " + _epoch_text(last) + f"; wrote {output}, {checkpoint}, {metrics}")


def _diverged(saved: dict, what: str) -> BoldcError:
    return BoldcError(f"training diverged: {what}; {_saved_text(saved)}; try a smaller --lr or --eta")


def _check_finite(saved: dict, epoch: int, entry: dict, trained) -> None:
    """Refuse to write an epoch whose float params or metrics are NaN or infinite."""
    import numpy as np

    for name, p in trained.params.items():
        if p.type.dtype.is_float and not np.all(np.isfinite(p.data)):
            raise _diverged(saved, f"after epoch {epoch + 1} param @{name} holds NaN or infinite values")
    for key, value in entry.items():
        if key.endswith("_psnr") and value == math.inf:
            continue  # predictions equal to their targets: an infinite PSNR is no divergence
        if isinstance(value, float) and not math.isfinite(value):
            raise _diverged(saved, f"after epoch {epoch + 1} the {key.replace('_', ' ')} is {value}")


@contextmanager
def _deferred_interrupt():
    """Ctrl-C inside the block is held until the block ends (then raised), so the files
    written at the end of an epoch and the record of them stay consistent."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield  # SIGINT ignored or fatal: nothing to hold
        return
    pending = []
    signal.signal(signal.SIGINT, lambda *_: pending.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        previous(signal.SIGINT, None)  # the held Ctrl-C, delivered as the handler would have


def _saved_text(saved: dict) -> str:
    if saved["checkpoint"] is None:
        return "no epoch had finished: nothing was written"
    epoch, path = saved["checkpoint"]
    text = f"the last good checkpoint is {path} (epoch {epoch}; continue with --resume {path})"
    if saved["model"] is not None:
        text += f", the trained model {saved['model'][1]} (epoch {saved['model'][0]})"
    return text


def _epoch_text(e: dict) -> str:
    from boldc.metrics import METRICS

    parts = [f"loss {e['train_loss']:.4f}"]
    for split, prefix in (("train", ""), ("val", "val ")):
        if split == "val" and "val_loss" in e:
            parts.append(f"val loss {e['val_loss']:.4f}")
        parts += [prefix + metric_text(m, e[f"{split}_{m}"]) for m in METRICS if e.get(f"{split}_{m}") is not None]
    return ", ".join(parts)


def _resume(cm, path, run: dict, metrics: Path) -> tuple[int, list]:
    meta = cm.load_checkpoint(path)
    epoch = meta.get("epoch") if isinstance(meta, dict) else None
    before = meta.get("run") if isinstance(meta, dict) else None
    if type(epoch) is not int or epoch < 1 or not isinstance(before, dict):
        raise ArtefactError(f"{path}: not a checkpoint of boldc train: its meta must be a JSON object with the "
                            "'epoch' it ends (a whole number >= 1) and the 'run' it belongs to")
    for key in RESUME_KEYS:
        if before.get(key) != run[key]:
            raise BoldcError(f"--resume {path}: that run had {key.replace('_', '-')}={before.get(key)}, this one "
                             f"{run[key]}; resume with the same model, data and options")
    if epoch >= run["epochs"]:
        raise BoldcError(f"--resume {path}: that run already finished its {run['epochs']} epochs")
    _check_steps(cm, path, epoch, run["steps_per_epoch"])
    history = []
    if metrics.exists():
        try:
            history = [e for e in json.loads(metrics.read_text())["epochs"] if e["epoch"] <= epoch]
        except (OSError, ValueError, KeyError, TypeError):
            history = []
    return epoch, history


def _check_steps(cm, path, epoch: int, steps_per_epoch: int) -> None:
    """The optimizer's step counter in the loaded state must be where ``epoch`` epochs
    of the run leave it: its value in the model plus epoch·steps_per_epoch (a meta
    that contradicts the state would repeat or skip epochs of the schedule)."""
    for name, p in cm.module.params.items():
        if (p.attrs or {}).get("role") != "step counter":
            continue
        want = int(p.data) + epoch * steps_per_epoch
        got = int(cm.get_param(name))
        if got != want:
            raise ArtefactError(f"{path}: its meta says epoch {epoch} ({want} steps of @{name}), but its state has "
                                f"taken {got} steps: the meta contradicts the state (an edited or corrupt checkpoint)")


def _train(cm, module, run, sets, start, history, saved, output, checkpoint, metrics, err, main=True) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from boldc.commands.common import save_json
    from boldc.fileio import save
    from boldc.passes.insert_optimizer import SATURATION_ROLE

    x_tr, y_tr, x_val, y_val = sets
    epochs, steps = run["epochs"], run["steps_per_epoch"]
    losses: list[float] = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err, disable=not (err.is_terminal and main)) as progress:
        task = progress.add_task("training", total=(epochs - start) * steps)
        t0 = time.perf_counter()

        def on_step(epoch, step, loss):
            if not math.isfinite(loss):
                raise _diverged(saved, f"the loss of step {step + 1} of epoch {epoch + 1} is {loss}")
            losses.append(loss)
            text = f"epoch {epoch + 1}/{epochs} loss {sum(losses) / len(losses):.4f}"
            progress.update(task, advance=1, description=text + (f" | {_epoch_text(history[-1])}" if history else ""))

        def on_epoch(epoch, mean_loss):
            nonlocal t0
            entry = {"epoch": epoch + 1, "steps": steps, "train_loss": mean_loss}
            measured = {"metric": run["metric"], "psnr_peak": run.get("psnr_peak", 1.0)}
            name = run["metric"] or "accuracy"  # no metric (mse, l1): train_accuracy null, as before metrics
            entry["train_eval_loss"], entry[f"train_{name}"] = cm.evaluate(x_tr, y_tr, **measured)
            if len(x_val):
                entry["val_loss"], entry[f"val_{name}"] = cm.evaluate(x_val, y_val, **measured)
            saturations = [int(cm.get_param(n)) for n, p in cm.module.params.items()
                           if str((p.attrs or {}).get("role", "")).startswith(SATURATION_ROLE)]
            if saturations:  # the i16 accumulators' entries that saturated, since the start
                entry["accumulator_saturations"] = sum(saturations)
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            losses.clear()
            trained = module.copy()
            for name, p in trained.params.items():
                p.data = cm.get_param(name)
            _check_finite(saved, epoch, entry, trained)
            with _deferred_interrupt():
                history.append(entry)
                cm.save_checkpoint(checkpoint, {"epoch": epoch + 1, "run": run})  # rank 0 of several writes it
                saved["checkpoint"] = (epoch + 1, checkpoint)
                if main:
                    save(trained, output)
                    save_json(metrics, {"run": run, "epochs": history})
                saved["model"] = (epoch + 1, output)
            if main and not err.is_terminal:
                print(f"epoch {epoch + 1}/{epochs}: {_epoch_text(entry)}", file=sys.stderr)
            t0 = time.perf_counter()

        cm.fit(x_tr, y_tr, epochs=epochs, batch=run["batch"], start_epoch=start, on_step=on_step, on_epoch=on_epoch)
