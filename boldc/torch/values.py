"""How the torch engine holds IR values: every value is a float tensor that autograd can
carry a signal through.

- ``f32``: a float32 tensor;
- ``b1``: its signed embedding e(b) (docs/method.md §1), +1.0 for T and -1.0 for F, in float32,
  so a Boolean layer is a ±1 matmul or convolution and a float layer reads b1 as ±1 as the IR
  says;
- integers (pre-activations, per-channel thresholds, quantized signals): their values in
  float32, exact (|v| < 2^24: a pre-activation is at most the fan-in + 1 in magnitude).

Optimizer state that is an integer in the IR (an i16 accumulator, the step counter) stays an
integer tensor in the optimizer (boldc.torch.optim).
"""

from __future__ import annotations

import numpy as np
import torch

from boldc.ir.types import DType, TensorType

CARRIER = torch.float32


def to_tensor(arr: np.ndarray, dtype: DType, device=None) -> torch.Tensor:
    """An IR array as the engine holds it (see the module docstring)."""
    arr = np.asarray(arr)
    if dtype.is_bool:
        data = np.where(arr, np.float32(1), np.float32(-1))
    else:
        data = arr.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(data)).to(device)


def to_array(t: torch.Tensor, dtype: DType) -> np.ndarray:
    """A tensor of the engine back as the IR array of ``dtype``."""
    arr = t.detach().to("cpu").numpy()
    if dtype.is_bool:
        return arr > 0
    if dtype.is_int:
        return np.rint(arr).astype(dtype.numpy)
    return arr.astype(np.float32)


def state_tensor(arr: np.ndarray, device=None) -> torch.Tensor:
    """Optimizer state in its own dtype (f32, i16, i32)."""
    return torch.from_numpy(np.ascontiguousarray(arr).copy()).to(device)


def is_signal_type(t: TensorType) -> bool:
    """An integer signal (i8/i16 from quantize_signal) rather than an f32 one."""
    return t.dtype in (DType.i8, DType.i16)
