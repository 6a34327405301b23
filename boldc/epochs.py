"""The epoch loop of training, shared by the engines (the generated C's ``CompiledModel.fit``
and the torch engine's): the same shuffled batches from the same seed, so a run can move
between engines and a resumed run repeats the batches it would have seen."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from boldc.errors import BoldcError


def epoch_order(seed: int, count: int, epoch: int) -> np.ndarray:
    """The sample order of epoch ``epoch`` (0-based): a permutation drawn from the training
    seed and the epoch number (``default_rng([seed, epoch])``)."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def run_epochs(train_step: Callable[[np.ndarray, np.ndarray], float], x, y, *, seed: int, batch: int,
               epochs: int, start_epoch: int = 0,
               prepare: Callable[[np.ndarray, int, int], np.ndarray] | None = None,
               on_step: Callable[[int, int, float], None] | None = None,
               on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Epochs ``start_epoch`` .. ``epochs - 1`` of ``train_step(x_batch, y_batch)`` on shuffled
    batches of ``batch`` samples (the last batch of an epoch may be smaller). ``prepare(x_batch,
    epoch, step)`` may transform a batch first (augmentation); ``on_step(epoch, step, loss)`` runs
    after every step, ``on_epoch(epoch, mean loss)`` after every epoch. Returns the mean losses."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise BoldcError(f"fit needs as many targets as samples (and at least one): {len(x)} and {len(y)}")
    means = []
    for epoch in range(start_epoch, epochs):
        order = epoch_order(seed, len(x), epoch)
        losses = []
        for step, s in enumerate(range(0, len(x), batch)):
            idx = order[s:s + batch]
            xb = x[idx] if prepare is None else prepare(x[idx], epoch, step)
            losses.append(train_step(xb, y[idx]))
            if on_step is not None:
                on_step(epoch, step, losses[-1])
        means.append(float(np.mean(losses)))
        if on_epoch is not None:
            on_epoch(epoch, means[-1])
    return means
