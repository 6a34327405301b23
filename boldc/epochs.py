"""The epoch loop of training, shared by the engines (the generated C's ``CompiledModel.fit``
and the torch engine's): the same shuffled batches from the same seed, so a run can move
between engines and a resumed run repeats the batches it would have seen; and the loss and
metric (``boldc.metrics``) their ``evaluate`` reports."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from boldc import metrics
from boldc.errors import BoldcError, InterpretError
from boldc.ir.catalog import TypeCheck


def epoch_order(seed: int, count: int, epoch: int) -> np.ndarray:
    """The sample order of epoch ``epoch`` (0-based): a permutation drawn from the training
    seed and the epoch number (``default_rng([seed, epoch])``)."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def run_epochs(train_step: Callable[[np.ndarray, np.ndarray], float], x, y, *, seed: int, batch: int,
               epochs: int, start_epoch: int = 0,
               prepare: Callable[[np.ndarray, int, int], np.ndarray] | None = None,
               on_step: Callable[[int, int, float], None] | None = None,
               on_epoch: Callable[[int, float], None] | None = None, drop_last: bool = False) -> list[float]:
    """Epochs ``start_epoch`` .. ``epochs - 1`` of ``train_step(x_batch, y_batch)`` on shuffled
    batches of ``batch`` samples (the last batch of an epoch may be smaller; with ``drop_last``
    it is left out, for a step compiled for one fixed batch). ``prepare(x_batch,
    epoch, step)`` may transform a batch first (augmentation); ``on_step(epoch, step, loss)`` runs
    after every step, ``on_epoch(epoch, mean loss)`` after every epoch. Returns the mean losses."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise BoldcError(f"fit needs as many targets as samples (and at least one): {len(x)} and {len(y)}")
    end = len(x) - len(x) % batch if drop_last else len(x)
    if end == 0:
        raise BoldcError(f"fit needs at least one full batch of {batch} samples for a model with a fixed batch, "
                         f"got {len(x)}")
    means = []
    for epoch in range(start_epoch, epochs):
        order = epoch_order(seed, len(x), epoch)
        losses = []
        for step, s in enumerate(range(0, end, batch)):
            idx = order[s:s + batch]
            xb = x[idx] if prepare is None else prepare(x[idx], epoch, step)
            losses.append(train_step(xb, y[idx]))
            if on_step is not None:
                on_step(epoch, step, losses[-1])
        means.append(float(np.mean(losses)))
        if on_epoch is not None:
            on_epoch(epoch, means[-1])
    return means


def evaluate_predictions(loss, attrs: dict, target_type, pred: np.ndarray, y, metric: str | None = None,
                         psnr_peak: float = metrics.DEFAULT_PSNR_PEAK,
                         ignore_index: int | None = None) -> tuple[float, float | None]:
    """(loss, metric) of an engine's predictions on a whole evaluation set, as both engines'
    ``evaluate`` report them: the loss op ``loss`` (its reference definition, float64) with
    ``attrs`` on all predictions and targets (y as ``target_type``, the loss's target type),
    and ``metric`` (``boldc.metrics``; None: its default for the targets, which is no metric
    for float targets) with the loss's ignore_index, or ``ignore_index`` when given."""
    if ignore_index is not None:
        if loss.attr_spec("ignore_index") is None:
            raise BoldcError(f"ignore_index is for a loss of class labels; {loss.name} has none")
        try:
            attrs = loss.normalize_attrs({**attrs, "ignore_index": ignore_index})
        except TypeCheck as exc:
            raise BoldcError(f"ignore_index: {exc}") from None
    y = np.asarray(y)
    labels = target_type.dtype.is_int
    if metric is None:
        metric = metrics.default_metric(labels)
    if metric is not None:
        metrics.check_metric(metric, labels)
    if not isinstance(pred, np.ndarray):
        raise BoldcError("evaluate needs a model with one output (the prediction)")
    if y.shape[:1] != pred.shape[:1]:
        raise InterpretError(f"{pred.shape[0]} samples but {y.shape[0] if y.ndim else 'no'} targets")
    y = y.astype(target_type.dtype.numpy)
    value = float(loss.evaluate([pred, y], attrs)[0])
    if metric is None:
        return value, None
    return value, metrics.measure(metric, pred, y, ignore_index=attrs.get("ignore_index"), peak=psnr_peak)
