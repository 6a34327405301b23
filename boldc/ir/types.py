"""Element types and tensor types of the IR.

A tensor type is an element type and a shape. A dimension is a non-negative int or
a symbol (an identifier such as ``N``, the batch, or ``L``, a sequence length) that
stands for a size bound at run time, in any position; a dimension is never a product of
symbols (``passes/bind_dims.py`` gives symbols fixed sizes).

Text form: ``f32[N, 64]``, ``b1[256, 256]``, ``i32[]`` (a scalar).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

Dim = int | str


class DType(enum.Enum):
    """Element types. ``b1`` is one bit: 1 = T = +1, 0 = F = -1 (docs/method.md §1)."""

    f32 = "f32"
    i8 = "i8"
    i16 = "i16"
    i32 = "i32"
    b1 = "b1"

    @property
    def bits(self) -> int:
        return _BITS[self]

    @property
    def is_bool(self) -> bool:
        return self is DType.b1

    @property
    def is_int(self) -> bool:
        return self in (DType.i8, DType.i16, DType.i32)

    @property
    def is_float(self) -> bool:
        return self is DType.f32

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype the interpreter uses (bool for b1: one byte per bit)."""
        return np.dtype(_NUMPY[self])

    @property
    def int_range(self) -> tuple[int, int]:
        info = np.iinfo(self.numpy)
        return int(info.min), int(info.max)

    def __str__(self) -> str:
        return self.value


_BITS = {DType.f32: 32, DType.i8: 8, DType.i16: 16, DType.i32: 32, DType.b1: 1}
_NUMPY = {DType.f32: "float32", DType.i8: "int8", DType.i16: "int16", DType.i32: "int32", DType.b1: "bool"}
INT_DTYPES = (DType.i8, DType.i16, DType.i32)


def dtype_from_str(text: str) -> DType:
    try:
        return DType(text)
    except ValueError:
        names = ", ".join(d.value for d in DType)
        raise ValueError(f"unknown element type '{text}' (known: {names})") from None


def dtype_of_numpy(arr: np.ndarray) -> DType | None:
    """The IR dtype whose numpy storage is ``arr.dtype`` exactly, or None."""
    for d in DType:
        if arr.dtype == d.numpy:
            return d
    return None


def narrowest_int(lo: int, hi: int) -> DType:
    """The narrowest integer dtype holding every value in [lo, hi]."""
    for d in INT_DTYPES:
        dmin, dmax = d.int_range
        if dmin <= lo and hi <= dmax:
            return d
    raise ValueError(f"integer range [{lo}, {hi}] does not fit in i32")


def wider(a: DType, b: DType) -> DType:
    """The wider of two integer dtypes."""
    return a if a.bits >= b.bits else b


def promote_int_sum(a: DType, b: DType) -> DType:
    """Result dtype of an integer sum: one step wider than the wider operand (i32 stays
    i32 and wraps), so that sums of pre-activations (|s| <= m+1) stay exact."""
    w = wider(a, b)
    return {DType.i8: DType.i16, DType.i16: DType.i32, DType.i32: DType.i32}[w]


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        for d in self.shape:
            if isinstance(d, bool) or not isinstance(d, (int, str)):
                raise ValueError(f"bad dimension {d!r}")
            if isinstance(d, int) and d < 0:
                raise ValueError(f"negative dimension {d}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(d for d in self.shape if isinstance(d, str))

    def numel(self) -> int:
        """Number of elements; only for static shapes."""
        if not self.is_static:
            raise ValueError(f"{self} has symbolic dimensions")
        return math.prod(self.shape)  # type: ignore[arg-type]

    def with_shape(self, shape) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def concrete(self, bindings: dict[str, int]) -> tuple[int, ...]:
        """The shape with symbols replaced by their bound sizes."""
        return tuple(d if isinstance(d, int) else bindings[d] for d in self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{', '.join(str(d) for d in self.shape)}]"


def tensor(dtype: DType | str, *shape: Dim) -> TensorType:
    """Shorthand: ``tensor("f32", "N", 64)``."""
    if isinstance(dtype, str):
        dtype = dtype_from_str(dtype)
    return TensorType(dtype, tuple(shape))


# --- symbolic sizes -----------------------------------------------------------------
# A size is a product of an integer coefficient and symbols. This is all the symbolic
# arithmetic reshape/flatten need: sizes such as N*512 divided by 512.


def size_product(dims) -> tuple[int, tuple[str, ...]]:
    """(coefficient, sorted symbols) of the product of ``dims``."""
    coeff, syms = 1, []
    for d in dims:
        if isinstance(d, str):
            syms.append(d)
        else:
            coeff *= d
    return coeff, tuple(sorted(syms))
