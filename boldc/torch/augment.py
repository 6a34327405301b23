"""Image augmentation for ``boldc train --engine torch``: random crop with zero padding and
horizontal flip of NCHW batches.

The random numbers of a step come from ``numpy.random.default_rng([seed, epoch, step])`` and
are drawn for the whole (global) batch, so a resumed run and a run on several processes
augment every sample as one uninterrupted process does.
"""

from __future__ import annotations

import numpy as np

from boldc.errors import BoldcError


def check(shape, crop: int, flip: bool) -> None:
    """Augmentation needs image samples [C, H, W] (the model's input after the batch)."""
    if (crop or flip) and len(shape) != 3:
        raise BoldcError(f"image augmentation (crop padding, horizontal flip) needs image inputs [N, C, H, W]; "
                         f"the model's samples are {list(shape)}")
    if crop < 0:
        raise BoldcError(f"crop padding must be >= 0, got {crop}")


def augment(x: np.ndarray, seed: int, epoch: int, step: int, crop: int = 0, flip: bool = False) -> np.ndarray:
    """Each sample of x [B, C, H, W] shifted by a random offset in [-crop, crop] in both axes (the
    zero-padded image cropped back to H x W) and, with ``flip``, mirrored left-right with
    probability 1/2."""
    if not crop and not flip:
        return x
    rng = np.random.default_rng([seed, epoch, step])
    b, _, h, w = x.shape
    offsets = rng.integers(0, 2 * crop + 1, size=(b, 2))
    mirror = rng.random(b) < 0.5 if flip else np.zeros(b, dtype=bool)
    padded = np.pad(x, ((0, 0), (0, 0), (crop, crop), (crop, crop))) if crop else x
    rows = offsets[:, 0, None] + np.arange(h)[None, :]  # [B, H]
    cols = offsets[:, 1, None] + np.arange(w)[None, :]  # [B, W]
    cols = np.where(mirror[:, None], cols[:, ::-1], cols)
    out = padded[np.arange(b)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return np.ascontiguousarray(out, dtype=x.dtype)
