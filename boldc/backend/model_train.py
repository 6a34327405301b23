"""Training, evaluation and checkpoints of a ``CompiledModel`` (docs/training.md).

``train_step`` runs the generated @train_step once (one batch, params updated in place
in the params image); ``fit`` runs epochs of them; ``evaluate`` runs the compiled
@forward over a data set and applies the loss op (its reference definition, in
float64) and a metric (``boldc.metrics``) to the predictions. ``save_checkpoint`` / ``load_checkpoint`` call the C
runtime (runtime/bd_ckpt.c), which writes and reads the same files as
``boldc.save_checkpoint``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from boldc.epochs import epoch_order, evaluate_predictions, run_epochs
from boldc.errors import ArtefactError, BoldcError
from boldc.fileio import check_output_file
from boldc.metrics import DEFAULT_PSNR_PEAK
from boldc.ops.registry import lookup
from boldc.ops.traits import Loss

CK_MODEL, CK_META, CK_OPEN = 8, 9, 1  # runtime BD_CK_* codes the messages refine
ERR_INPUT = 4


class TrainingMixin:
    """Methods of CompiledModel for training; see the module docstring."""

    # -- one step -------------------------------------------------------------------------
    def train_step(self, x, y) -> float:
        """One training step on the batch (x, y) (at most ``max_batch`` samples): forward,
        loss, backward and the optimizer updates, in C. Returns the loss."""
        if "train_step" not in self.program.functions:
            raise BoldcError("this model was compiled without @train_step (use boldc.compile(module, train=True))")
        code = self._code("train_step")
        args = self._bind(code, [x, y])
        n = self._batch(code, args)
        if n > self.max_batch:
            raise BoldcError(f"a training step takes one batch of at most max_batch={self.max_batch} samples, "
                             f"got {n}")
        if n < 1:
            raise BoldcError("a training step needs at least one sample")
        out = self._call(code, args, n)
        return float(out[0])

    def _input_error(self) -> str:
        k = self._ctx.error_check
        return self._ffi.string(getattr(self._lib, f"{self._prefix}_input_check_message")(k)).decode()

    # -- epochs ---------------------------------------------------------------------------
    def epoch_order(self, count: int, epoch: int) -> np.ndarray:
        """The sample order of epoch ``epoch`` (0-based; ``boldc.epochs.epoch_order``)."""
        return epoch_order(self.train_options.seed, count, epoch)

    def fit(self, x, y, epochs: int = 1, batch: int | None = None, start_epoch: int = 0,
            on_step: Callable[[int, int, float], None] | None = None,
            on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
        """Epochs ``start_epoch`` .. ``epochs - 1`` of shuffled batches (``boldc.epochs.run_epochs``:
        the last batch of an epoch may be smaller; a model with a fixed batch trains on full
        batches of it only, the remainder of each epoch's shuffle left out). ``on_step(epoch, step, loss)`` runs after
        every step, ``on_epoch(epoch, mean loss)`` after every epoch. Returns the mean losses."""
        fixed = self._fixed_batch("train_step")
        batch = batch or fixed or self.max_batch
        if fixed is not None and batch != fixed:
            raise BoldcError(f"the model was converted with a fixed batch of {fixed}: fit needs batch={fixed}, "
                             f"got {batch} (convert with a symbolic batch to train on others)")
        if not 1 <= batch <= self.max_batch:
            raise BoldcError(f"batch must be in 1..{self.max_batch} (max_batch), got {batch}")
        return run_epochs(self.train_step, x, y, seed=self.train_options.seed, batch=batch, epochs=epochs,
                          start_epoch=start_epoch, on_step=on_step, on_epoch=on_epoch, drop_last=fixed is not None)

    def _fixed_batch(self, func: str) -> int | None:
        """The batch of ``func`` when it has no symbolic batch (a model converted with a fixed
        one): the first dimension of its first input; None when the batch is symbolic."""
        x = self.module.function(func).args[0].type
        return x.shape[0] if x.is_static and x.rank else None

    # -- evaluation -----------------------------------------------------------------------
    def loss_definition(self, loss: str | None = None):
        """(op definition, attributes) of the loss: @train_step's, else ``loss`` (default
        softmax_xent) with mean reduction."""
        if "train_step" in self.module.functions:
            from boldc.backend.training import loss_op

            if loss is not None:
                raise BoldcError("the model's @train_step already defines its loss")
            op = loss_op(self.module)
            return lookup(op.name), dict(op.attrs)
        name = loss or "softmax_xent"
        d = lookup(name)
        if d is None or not d.has(Loss):
            raise BoldcError(f"unknown loss {name!r}")
        return d, d.normalize_attrs({})

    def evaluate(self, x, y, batch: int | None = None, loss: str | None = None, metric: str | None = None,
                 psnr_peak: float = DEFAULT_PSNR_PEAK, ignore_index: int | None = None) -> tuple[float, float | None]:
        """(loss, metric) of the model on (x, y): the compiled @forward in batches, then the
        loss op and the metric on all predictions (``boldc.epochs.evaluate_predictions``).
        ``metric``: accuracy, miou or psnr (``boldc.metrics``); None is accuracy for integer
        labels and no metric (None) for float targets. ``ignore_index`` replaces the loss's. A
        model with a fixed batch runs on chunks of it (``_infer_padded``)."""
        opdef, attrs = self.loss_definition(loss)
        fixed = self._fixed_batch("forward")
        if fixed is not None:
            pred = self._infer_padded(x, fixed)
        else:
            pred = self.infer(x) if batch is None else self._infer_in(x, batch)
        target = opdef.target_type(_type_of(self.module))
        return evaluate_predictions(opdef, attrs, target, pred, y, metric, psnr_peak, ignore_index)

    def _infer_in(self, x, batch: int):
        if not 1 <= batch <= self.max_batch:
            raise BoldcError(f"batch must be in 1..{self.max_batch} (max_batch), got {batch}")
        x = np.asarray(x)
        parts = [self.infer(x[s:s + batch]) for s in range(0, len(x), batch)]
        return np.concatenate(parts, axis=0)

    def _infer_padded(self, x, fixed: int):
        """@forward of a model with a fixed batch on any number of samples: chunks of ``fixed``,
        the last one filled up with copies of its last sample, whose outputs are dropped (the
        samples of an inference pass do not interact)."""
        x = np.asarray(x)
        if len(x) == 0:
            raise BoldcError("evaluate needs at least one sample")
        parts = []
        for s in range(0, len(x), fixed):
            chunk = x[s:s + fixed]
            if len(chunk) < fixed:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - len(chunk), axis=0)])
            parts.append(self.infer(chunk)[:min(fixed, len(x) - s)])
        return np.concatenate(parts, axis=0)

    # -- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike, meta: dict | None = None) -> None:
        """Write every param (weights and optimizer state) to ``path``, atomically, with the
        C runtime; ``meta`` (JSON) is stored alongside (docs/training.md)."""
        path = Path(path)
        check_output_file(path)
        raw = json.dumps(meta, sort_keys=True).encode("utf-8") if meta else b""
        rc = getattr(self._lib, f"{self._prefix}_checkpoint_save")(
            self._ctx, os.fsencode(path), raw if raw else self._ffi.NULL, len(raw))
        if rc != 0:
            raise ArtefactError(f"{path}: cannot write the checkpoint: {self._ck_message(rc)}")

    def load_checkpoint(self, path: str | os.PathLike) -> dict:
        """Read ``path`` (written by this model, ``boldc.save_checkpoint`` or the exported C)
        into the params; returns its meta. A missing, truncated, corrupt or foreign file
        raises ArtefactError and the params keep their values."""
        path = Path(path)
        if not path.is_file():
            raise ArtefactError(f"{path}: no such checkpoint" if not path.exists() else f"{path}: not a file")
        kept = self._params.copy()  # restored on any failure: a refused file changes nothing
        try:
            return self._load_checkpoint(path)
        except BaseException:
            self._params[:] = kept
            raise

    def _load_checkpoint(self, path: Path) -> dict:
        cap = 1 << 16
        for _ in range(2):
            meta = self._ffi.new("unsigned char[]", cap)
            length = self._ffi.new("size_t *")
            rc = getattr(self._lib, f"{self._prefix}_checkpoint_load")(self._ctx, os.fsencode(path), meta, cap,
                                                                          length)
            if rc != CK_META:
                break
            cap = int(length[0])
        if rc == CK_MODEL:
            from boldc.checkpoint import decode_checkpoint

            try:  # the Python reader names the param that differs
                decode_checkpoint(self.module, path.read_bytes(), str(path))
            except ArtefactError as exc:
                raise ArtefactError(str(exc)) from None
        if rc != 0:
            raise ArtefactError(f"{path}: {self._ck_message(rc)}")
        from boldc.checkpoint import decode_meta

        return decode_meta(bytes(self._ffi.buffer(meta, int(length[0]))), str(path))

    def _ck_message(self, rc: int) -> str:
        return self._ffi.string(self._lib.bd_checkpoint_error(rc)).decode()


def _type_of(module):
    return module.function("forward").returns[0].type
