"""Data files of ``boldc train`` and ``boldc eval``: an .npz with ``x`` and ``y``.

``x`` holds the samples, numbers of shape [N, ...] matching the model's input (its
dimensions after the batch); ``y`` the targets: integer class labels for a classification
loss (softmax_xent): [N] for logits [N, C], one per position for dense logits ([N, H, W]
for [N, C, H, W]), in 0..C-1 or the ignore index; or numbers shaped like the prediction for
a regression loss (mse, l1; images for an image-to-image model). A symbol of the input after
the batch (a sequence length L of i32[N, L]) takes its size from ``x`` (``data_dims``); the
C engine is then compiled for that size. Samples of an integer input (token ids) stay
integers. Every mistake is a one-line error naming the file and the array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from boldc.commands.common import load_array_file
from boldc.errors import ArtefactError, BoldcError
from boldc.ir.core import Module
from boldc.ir.types import TensorType


def _dims(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _tail(shape) -> str:
    """The dimensions after the batch, as ", 3, 4" (nothing for none)."""
    return "".join(f", {d}" for d in shape[1:])


def model_input(module: Module, model="the model") -> TensorType:
    """The type of the model's one input; ``model`` (its file) names it in errors."""
    fn = module.function("forward")
    if len(fn.args) != 1 or len(fn.returns) != 1:
        raise BoldcError(f"{model}: training and evaluation need a @forward with one input and one output; it has "
                         f"{len(fn.args)} and {len(fn.returns)}")
    t = fn.args[0].type
    if not t.shape or not isinstance(t.shape[0], str) or t.shape[0] in t.shape[1:]:
        raise BoldcError(f"{model}: its input %{fn.args[0].name} is {t}: training and evaluation need a batch "
                         "dimension first (other symbols, such as a sequence length L, are bound from the data)")
    return t


def data_dims(module: Module, x: np.ndarray) -> dict[str, int]:
    """The sizes the data give the symbols of the model's input after its batch (an input
    i32[N, L] and samples x of shape [n, 64] give {"L": 64}); ``load_data`` has checked x."""
    want = model_input(module)
    out: dict[str, int] = {}
    for d, size in zip(want.shape[1:], x.shape[1:]):
        if isinstance(d, str):
            out[d] = int(size)
    return out


def _sample_shape_matches(want: TensorType, shape) -> bool:
    """``shape`` (x's, batch first) fits ``want``: equal ranks and sizes, each symbol after the
    batch one positive size wherever it appears."""
    if len(shape) != want.rank:
        return False
    seen: dict[str, int] = {}
    for d, size in zip(want.shape[1:], shape[1:]):
        if isinstance(d, str):
            if size < 1 or seen.setdefault(d, size) != size:
                return False
        elif d != size:
            return False
    return True


def load_data(path, module: Module, target: TensorType, ignore_index: int | None = None) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """(x as float32, or as the input's integer type; y as the target dtype) from ``path``,
    checked against ``module``'s input and the loss's ``target`` type (a type of the batch;
    its symbols after the batch take the sizes of x); a label equal to ``ignore_index`` is
    allowed besides 0..C-1."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ArtefactError(f"{path}: a data file is an .npz with the arrays x (samples) and y (targets)")
    arrays = load_array_file(path)
    for key in ("x", "y"):
        if key not in arrays:
            have = ", ".join(sorted(arrays)) or "none"
            raise ArtefactError(f"{path}: no array '{key}' (the file has: {have}); a data file holds x (samples) "
                                "and y (targets)")
    x, y = arrays["x"], arrays["y"]
    want = model_input(module)
    if x.dtype.kind not in "fiu":
        raise ArtefactError(f"{path}: 'x' must hold numbers (floats), got {x.dtype}")
    if not _sample_shape_matches(want, x.shape):
        raise ArtefactError(f"{path}: 'x' has shape {_dims(x.shape)}; the model takes samples of "
                            f"{_dims(want.shape[1:])} (input {want})")
    if len(x) == 0:
        raise ArtefactError(f"{path}: 'x' holds no samples")
    x = _integers(x, want, path) if want.dtype.is_int else _finite_f32(x, "x", path)
    sizes = data_dims(module, x)
    target = target.with_shape(target.shape[:1] + tuple(sizes.get(d, d) if isinstance(d, str) else d
                                                        for d in target.shape[1:]))
    if y.ndim == 0 or len(y) != len(x):
        raise ArtefactError(f"{path}: 'y' has {y.shape[0] if y.ndim else 'no'} entries but 'x' has {len(x)} samples")
    if target.dtype.is_int:
        if y.dtype.kind not in "iu":
            raise ArtefactError(f"{path}: 'y' must hold integer class labels, got {y.dtype}")
        if tuple(y.shape[1:]) != tuple(target.shape[1:]):
            each = "sample" if target.rank == 1 else "sample and position of the prediction"
            raise ArtefactError(f"{path}: 'y' must be one label per {each} (shape [N{_tail(target.shape)}]), got "
                                f"shape {_dims(y.shape)}")
        classes = module.function("forward").returns[0].type.shape[1]
        bad = y[((y < 0) | (y >= classes)) & (y != ignore_index if ignore_index is not None else True)]
        if bad.size:
            ignored = f"; ignore index {ignore_index}" if ignore_index is not None else ""
            raise ArtefactError(f"{path}: label {int(bad[0])} in 'y' is out of range: the model has {classes} "
                                f"classes (0 to {classes - 1}{ignored})")
        return x, y.astype(target.dtype.numpy)
    if y.dtype.kind not in "fiu" or tuple(y.shape[1:]) != tuple(target.shape[1:]):
        raise ArtefactError(f"{path}: 'y' must hold numbers of shape [N{_tail(target.shape)}] (the prediction's), "
                            f"got {y.dtype} {_dims(y.shape)}")
    return x, _finite_f32(y, "y", path)


def _integers(x: np.ndarray, want: TensorType, path: Path) -> np.ndarray:
    """Samples of an integer input (token ids): integers in the range of its type, as that type."""
    if x.dtype.kind not in "iu":
        raise ArtefactError(f"{path}: 'x' must hold integers for the model's input {want}, got {x.dtype}")
    lo, hi = want.dtype.int_range
    if x.size and (int(x.min()) < lo or int(x.max()) > hi):
        raise ArtefactError(f"{path}: 'x' holds values outside [{lo}, {hi}], the range of the model's input {want}")
    return x.astype(want.dtype.numpy)


def _finite_f32(a: np.ndarray, key: str, path: Path) -> np.ndarray:
    """``a`` as float32; NaN, infinities and values beyond float32's range are refused."""
    with np.errstate(over="ignore"):
        out = a.astype(np.float32)
    if not np.all(np.isfinite(out)):
        what = "NaN or infinite values" if not np.all(np.isfinite(a)) else "values beyond the float32 range"
        raise ArtefactError(f"{path}: '{key}' holds {what}")
    return out


def split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int, path) -> tuple:
    """(x_train, y_train, x_val, y_val): the last ``round(N·fraction)`` samples of a
    permutation drawn from ``seed`` are held out (none for fraction 0)."""
    if not 0.0 <= fraction < 1.0:
        raise BoldcError(f"--val-split must be in [0, 1), got {fraction}")
    n = len(x)
    n_val = int(round(n * fraction))
    if fraction > 0 and (n_val < 1 or n - n_val < 1):
        raise ArtefactError(f"{path}: {n} samples are too few for --val-split {fraction}: it needs at least one "
                            "sample for training and one for validation")
    if n_val == 0:
        return x, y, x[:0], y[:0]
    order = np.random.default_rng(seed).permutation(n)
    tr, va = order[:n - n_val], order[n - n_val:]
    return x[tr], y[tr], x[va], y[va]
