"""``TorchModel``: the torch engine behind ``boldc train --engine torch`` and ``boldc eval
--engine torch``, with the methods of the C engine's ``CompiledModel`` that the commands use
(``train_step``, ``fit``, ``evaluate``, ``infer``, ``save_checkpoint``, ``load_checkpoint``,
``get_param``, ``set_threads``, ``module``), so one training loop serves both engines.

``boldc.torch.engine.compile(module, train=True, ...)`` takes the options of
``boldc.compile(train=True)`` (``eta``, ``lr``, ``schedule``, ``total_steps``, ``eta_final``,
``freeze_float``, ``frozen``, ``loss``, ``reduction``, ``threshold_grad``, ``alpha``,
``rescale``, ``signal_bits``, ``rounding``, ``accumulator``, ``seed``) and builds the same @train_step, so
its checkpoints have the C engine's param table (either engine resumes the other's) and
``fit`` draws the same batches. Besides: ``device``, ``exact``, ``amp`` and the image
augmentation ``crop`` (padding of the random crop) and ``flip``.

Under torchrun's environment (``WORLD_SIZE`` > 1) the model joins the process group and
trains with DistributedDataParallel (boldc.torch.distributed); ``is_main`` is rank 0, which
alone writes checkpoints.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from boldc.epochs import epoch_order, evaluate_predictions, run_epochs
from boldc.errors import BoldcError
from boldc.fileio import check_output_file
from boldc.ir.core import Module
from boldc.metrics import DEFAULT_PSNR_PEAK
from boldc.ops.registry import lookup
from boldc.ops.traits import Loss
from boldc.torch import augment as aug
from boldc.torch import build, distributed

TRAIN_KEYS = ("loss", "reduction", "ignore_index", "threshold_grad", "alpha", "rescale", "signal_bits", "rounding",
              "frozen", "freeze_float", "eta", "lr", "schedule", "total_steps", "eta_final", "accumulator", "seed")
EVAL_CHUNK = 1024


def step_options(options: dict) -> dict:
    """``boldc.compile(train=True)``'s options as autodiff's and insert-optimizer's: the schedule
    (cosine when total_steps is given, else constant) drives η and lr alike, ``seed`` also
    seeds stochastic rounding (as ``boldc.backend.training.TrainOptions``)."""
    unknown = sorted(set(options) - set(TRAIN_KEYS))
    if unknown:
        raise BoldcError(f"unknown training option(s) {', '.join(unknown)} (options: {', '.join(TRAIN_KEYS)})")
    opts = {k: v for k, v in options.items() if v is not None}
    total = opts.get("total_steps", 0)
    schedule = opts.pop("schedule", None) or ("cosine" if total > 0 else "constant")
    opts.update(schedule=schedule, lr_schedule=schedule)
    if "signal_bits" in opts:
        opts["signal_bits"] = str(opts["signal_bits"])
    for name in ("eta", "lr"):
        v = opts.get(name)
        if v is not None and (isinstance(v, bool) or not math.isfinite(v) or v <= 0):
            raise BoldcError(f"training option {name} must be a finite number > 0, got {v!r}")
    return opts


def loss_of(module: Module, loss: str | None):
    """(op definition, attributes) of the loss: @train_step's, else ``loss`` (softmax_xent) with mean."""
    if "train_step" in module.functions:
        if loss is not None:
            raise BoldcError("the model's @train_step already defines its loss")
        op = next(op for op in module.function("train_step").ops if lookup(op.name).has(Loss))
        return lookup(op.name), dict(op.attrs)
    d = lookup(loss or "softmax_xent")
    if d is None or not d.has(Loss):
        raise BoldcError(f"unknown loss {loss!r}")
    return d, d.normalize_attrs({})


class TorchModel:
    """See the module docstring."""

    def __init__(self, module: Module, train: bool = True, max_batch: int = 64, threads: int | None = None,
                 device=None, exact: bool | None = None, amp: bool = False, crop: int = 0, flip: bool = False,
                 **options):
        dev = build.resolve_device(device)
        self.comm = distributed.init(dev)
        if self.comm is not None and dev.type == "cuda":
            dev = torch.device("cuda", self.comm.local_rank)
            torch.cuda.set_device(dev)
        if threads:
            self.set_threads(threads)
        self.max_batch = max_batch
        self.crop, self.flip = crop, flip
        self.seed = int(options.get("seed") or 0)
        if train:
            self.net = build.to_torch(module, dev, exact=exact, amp=amp, **step_options(options))
            self.net.rt.comm = self.comm
            self.module = self.net.step_ir
            self.optimizer = self.net.make_optimizer()
            self._forward = distributed.data_parallel(self.net, self.comm) if self.comm else self.net
        else:
            if options:
                raise BoldcError(f"training option(s) {', '.join(sorted(options))} need train=True")
            self.net = build.to_torch(module, dev, train=False, exact=exact, amp=amp)
            self.module = module
            self._forward = self.net
        fn = module.function("forward")
        aug.check(fn.args[0].type.shape[1:] if len(fn.args) == 1 else (), crop, flip)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the outputs (rank 0, or the only process)."""
        return self.comm is None or self.comm.is_main

    def set_threads(self, threads: int) -> None:
        torch.set_num_threads(max(1, int(threads)))

    # -- training -------------------------------------------------------------------------------
    def train_step(self, x, y) -> float:
        """One step on the global batch (x, y) (this rank takes its part of it); the loss of the whole batch."""
        if self.module is None or "train_step" not in self.module.functions:
            raise BoldcError("this model was built without training (train=False)")
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y) or len(x) == 0:
            raise BoldcError(f"a training step needs as many targets as samples (at least one): {len(x)} and {len(y)}")
        if len(x) > self.max_batch:
            raise BoldcError(f"a training step takes one batch of at most max_batch={self.max_batch} samples, "
                             f"got {len(x)}")
        if self.comm is not None:
            part = self.comm.shard(len(x))
            self.net.rt.loss_count = len(x)
            x, y = x[part], y[part]
        self.optimizer.zero_grad()
        loss = self.net.loss(self._forward(x), y)
        loss.backward()
        self.optimizer.step()
        value = float(loss.detach())
        return self.comm.all_sum(value, self.net.device) if self.comm is not None else value

    def epoch_order(self, count: int, epoch: int) -> np.ndarray:
        """The sample order of epoch ``epoch``, as the C engine draws it (``boldc.epochs``)."""
        return epoch_order(self.seed, count, epoch)

    def fit(self, x, y, epochs: int = 1, batch: int | None = None, start_epoch: int = 0,
            on_step: Callable[[int, int, float], None] | None = None,
            on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
        """Epochs ``start_epoch`` .. ``epochs - 1`` of shuffled batches (the C engine's order,
        ``boldc.epochs.run_epochs``; the last batch may be smaller), each augmented as the
        options say. Returns the mean losses."""
        def prepare(xb, epoch, step):
            return aug.augment(xb, self.seed, epoch, step, self.crop, self.flip)

        return run_epochs(self.train_step, x, y, seed=self.seed, batch=batch or self.max_batch, epochs=epochs,
                          start_epoch=start_epoch, prepare=prepare, on_step=on_step, on_epoch=on_epoch)

    # -- inference and evaluation ---------------------------------------------------------------
    def infer(self, x) -> np.ndarray:
        """@forward on x (numpy), in chunks; float32 predictions."""
        x = np.asarray(x)
        parts = []
        with torch.no_grad():
            for s in range(0, len(x), EVAL_CHUNK):
                parts.append(self.net(x[s:s + EVAL_CHUNK]).detach().cpu().numpy())
        return np.concatenate(parts, axis=0) if parts else np.zeros((0,), np.float32)

    def evaluate(self, x, y, batch: int | None = None, loss: str | None = None, metric: str | None = None,
                 psnr_peak: float = DEFAULT_PSNR_PEAK, ignore_index: int | None = None) -> tuple[float, float | None]:
        """(loss, metric) on (x, y) as ``CompiledModel.evaluate``: the loss op's reference
        definition and the metric on all predictions (``boldc.epochs.evaluate_predictions``)."""
        opdef, attrs = loss_of(self.module, loss)
        pred = self.infer(x)
        target = opdef.target_type(self.module.function("forward").returns[0].type)
        return evaluate_predictions(opdef, attrs, target, pred, y, metric, psnr_peak, ignore_index)

    # -- params and checkpoints -----------------------------------------------------------------
    def get_param(self, name: str) -> np.ndarray:
        """The current value of the IR param ``name`` (weights and optimizer state)."""
        if name in self.net._where and name != self.net.step_name:
            return self.net.ir_array(name)
        state = self.optimizer.state_arrays() if self.module is not None and "train_step" in self.module.functions \
            else {}
        if name in state:
            return state[name]
        raise BoldcError(f"no param @{name}")

    def params(self) -> dict[str, np.ndarray]:
        return {name: self.get_param(name) for name in self.module.params}

    def save_checkpoint(self, path: str | os.PathLike, meta: dict | None = None) -> None:
        """Weights and optimizer state in boldc's checkpoint format, written by rank 0, atomically."""
        if self.is_main:
            check_output_file(Path(path))
            build.save_checkpoint(self.net, path, meta)
        if self.comm is not None:
            self.comm.barrier()

    def load_checkpoint(self, path: str | os.PathLike) -> dict:
        """Read a checkpoint (the torch or the C engine's) into every rank; returns its meta."""
        return build.load_checkpoint(self.net, path)


def compile(module: Module, train: bool = False, *, max_batch: int | None = None, threads: int = 1, device=None,
            exact: bool | None = None, amp: bool = False, crop: int = 0, flip: bool = False, **training) -> TorchModel:
    """The torch engine's counterpart of ``boldc.compile`` (see the module docstring)."""
    if not isinstance(module, Module):
        raise BoldcError(f"the torch engine needs a boldc Module, got {type(module).__name__}")
    if training and not train:
        raise BoldcError(f"training option(s) {', '.join(sorted(training))} need train=True")
    return TorchModel(module, train, max_batch or 64, threads, device, exact, amp, crop, flip, **training)
