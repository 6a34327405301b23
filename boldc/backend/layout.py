"""How a tensor is stored in generated C (docs/backend.md, "Layouts").

Logical tensors are the IR's: NCHW feature maps, row-major everything. Storage:

- Rank-4 tensors are stored channels-last: physical order [N, H, W, C]
  (``perm = (0, 2, 3, 1)``); every other rank keeps the logical order. A rank-4
  parameter (a filter [M, C, kh, kw]) is thus stored [M, kh, kw, C].
- b1 tensors are bit-packed in 64-bit words along the last physical axis (the
  channel axis of feature maps and filters, the feature axis of matrices): element
  ``c`` of a run is bit ``c % 64`` of word ``c / 64``; a run of D elements takes
  ``ceil(D/64)`` words and its padding bits are always 0 (kernels rely on it).
- Other dtypes are dense arrays of their C type (float, int8_t, int16_t, int32_t).

API buffers (what a caller of the generated functions passes) are logical row-major;
b1 there is one byte per element (0 = F, 1 = T).

Dimensions are ints or the batch symbol, which the generated code names ``n``.
Host byte order must be little-endian for ``pack``/``unpack`` (x86, ARM); the C
itself is byte-order independent except for the weights blob (docs/backend.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from boldc.backend.cexpr import Const, Expr, Var, as_expr, div, mod, product
from boldc.ir.types import DType

WORD_BITS = 64
BATCH = "n"  # the C name every symbolic dimension takes
BATCH_VAR = Var(BATCH, 0, None)  # the batch of a call: >= 0 (generated code holds it in a long)

_CTYPES = {DType.f32: "float", DType.i8: "int8_t", DType.i16: "int16_t", DType.i32: "int32_t", DType.b1: "uint64_t"}
_NUMPY = {"float": np.float32, "int8_t": np.int8, "int16_t": np.int16, "int32_t": np.int32,
          "uint64_t": np.uint64, "uint8_t": np.uint8}


def physical_perm(rank: int) -> tuple[int, ...]:
    """Physical order of logical axes: channels-last for rank 4, else the identity."""
    return (0, 2, 3, 1) if rank == 4 else tuple(range(rank))


def words(d: int) -> int:
    return -(-d // WORD_BITS)


def dim_expr(d) -> Expr:
    """A dimension as an index expression: the number, or the batch variable ``n``."""
    return Const(d) if isinstance(d, int) else BATCH_VAR


def words_expr(d: Expr) -> Expr:
    """Words of a packed run of d elements."""
    return Const(words(d.value)) if isinstance(d, Const) else div(d + (WORD_BITS - 1), WORD_BITS)


class Layout:
    """Storage of one tensor: element type, logical shape, physical order, packing."""

    def __init__(self, dtype: DType, shape: Sequence, api: bool = False):
        self.dtype = dtype
        self.shape = tuple(d if isinstance(d, int) else BATCH for d in shape)
        self.api = api
        self.rank = len(self.shape)
        self.perm = tuple(range(self.rank)) if api else physical_perm(self.rank)
        self.packed = dtype.is_bool and not api and self.rank > 0

    def __eq__(self, other) -> bool:
        return isinstance(other, Layout) and (self.dtype, self.shape, self.api) == (other.dtype, other.shape,
                                                                                    other.api)

    def __hash__(self) -> int:
        return hash((self.dtype, self.shape, self.api))

    def __repr__(self) -> str:
        kind = "api" if self.api else ("packed" if self.packed else "dense")
        return f"Layout({self.dtype}{list(self.shape)}, {kind}, perm={self.perm})"

    # -- types and sizes -------------------------------------------------------------
    @property
    def ctype(self) -> str:
        if self.dtype.is_bool and not self.packed:
            return "uint8_t"
        return _CTYPES[self.dtype]

    @property
    def np_storage(self):
        return _NUMPY[self.ctype]

    @property
    def phys_dims(self) -> tuple:
        """Physical dims in elements (before packing)."""
        return tuple(self.shape[p] for p in self.perm)

    @property
    def extents(self) -> tuple[Expr, ...]:
        """Physical dims in elements, as index expressions."""
        return tuple(dim_expr(d) for d in self.phys_dims)

    @property
    def storage_extents(self) -> tuple[Expr, ...]:
        """Physical dims in storage units (words along the packed axis for b1)."""
        dims = list(self.extents)
        if self.packed:
            dims[-1] = words_expr(dims[-1])
        return tuple(dims)

    @property
    def storage_dims(self) -> tuple:
        """``storage_extents`` as ints (the C text for a symbolic one)."""
        return tuple(d.value if isinstance(d, Const) else str(d) for d in self.storage_extents)

    @property
    def packed_axis(self) -> int | None:
        """The logical axis packed into words (None if not packed)."""
        return self.perm[-1] if self.packed else None

    def concrete_dims(self, n: int) -> tuple[int, ...]:
        return tuple(n if d == BATCH else d for d in self.shape)

    def count(self, n: int) -> int:
        """Storage units (elements or words) for batch ``n``."""
        dims = [n if d == BATCH else d for d in self.phys_dims]
        if self.packed:
            dims[-1] = words(dims[-1])
        return math.prod(dims)

    def nbytes(self, n: int) -> int:
        return self.count(n) * np.dtype(self.np_storage).itemsize

    def count_expr(self) -> Expr:
        """Storage units of this call's tensor."""
        return product(*self.storage_extents)

    @property
    def has_batch(self) -> bool:
        return BATCH in self.shape

    def same_storage(self, other: Layout) -> bool:
        """True if both layouts put every logical element (in row-major order of their
        own shapes) at the same storage position with the same C type: a reshape
        between them is a plain copy. Axes of size 1 do not change positions, so
        [N][1][H][W] and its channels-last storage [N][H][W][1] are the same."""
        if self.ctype != other.ctype or self.packed or other.packed:
            return False
        identity = self.perm == tuple(range(self.rank)) and other.perm == tuple(range(other.rank))
        return identity or (self.shape == other.shape and self._order() == other._order())

    def _order(self) -> tuple[int, ...]:
        """The physical order of the axes longer than 1."""
        return tuple(a for a in self.perm if self.shape[a] != 1)

    # -- addressing ------------------------------------------------------------------
    def strides(self) -> list[Expr]:
        """Storage stride of each physical axis."""
        dims = self.storage_extents
        return [product(*dims[q + 1:]) for q in range(len(dims))]

    def offset(self, idx: Sequence) -> tuple[Expr, Expr | None]:
        """(storage offset, bit index or None) of the logical element ``idx`` (one
        index expression per logical axis): sum of index * stride; along the packed
        axis, word c / 64 and bit c % 64."""
        strides = self.strides()
        off: Expr = Const(0)
        bit = None
        for q, axis in enumerate(self.perm):
            i = as_expr(idx[axis])
            if self.packed and q == self.rank - 1:
                off, bit = off + div(i, WORD_BITS), mod(i, WORD_BITS)
            else:
                off = off + i * strides[q]
        return off, bit

    def load(self, ptr: str, idx: Sequence) -> str:
        """C expression of the element's value: the number, or 0/1 for b1."""
        off, bit = self.offset(idx)
        if bit is None:
            return f"{ptr}[{off}]"
        return f"((int)(({ptr}[{off}] >> {bit.atom()}) & 1u))"

    # -- host-side conversion --------------------------------------------------------
    def pack(self, arr: np.ndarray) -> np.ndarray:
        """Logical numpy array -> storage array (1-D, storage dtype)."""
        arr = np.asarray(arr)
        if self.rank == 0:
            return np.asarray(arr, dtype=self.np_storage).reshape(1)
        t = np.transpose(arr, self.perm)
        if self.dtype.is_bool:
            t = t.astype(bool)
            if not self.packed:
                return np.ascontiguousarray(t, dtype=np.uint8).reshape(-1)
            d = t.shape[-1]
            w = words(d)
            padded = np.zeros(t.shape[:-1] + (w * WORD_BITS,), dtype=bool)
            padded[..., :d] = t
            raw = np.packbits(padded, axis=-1, bitorder="little")
            return np.ascontiguousarray(raw).view("<u8").astype(np.uint64).reshape(-1)
        return np.ascontiguousarray(t, dtype=self.np_storage).reshape(-1)

    def unpack(self, storage: np.ndarray, n: int) -> np.ndarray:
        """Storage array (any shape, storage dtype or bytes) -> logical numpy array."""
        dims = self.concrete_dims(n)
        if self.rank == 0:
            out = np.asarray(storage).view(self.np_storage).reshape(-1)[:1].reshape(())
            return out.astype(self.dtype.numpy)
        phys = tuple(dims[p] for p in self.perm)
        flat = np.asarray(storage).reshape(-1).view(np.uint8)
        inverse = np.argsort(self.perm)
        if self.packed:
            w = words(phys[-1])
            raw = flat[: math.prod(phys[:-1]) * w * 8].view("<u8").reshape(phys[:-1] + (w,))
            bits = np.unpackbits(raw.view(np.uint8).reshape(phys[:-1] + (w * 8,)), axis=-1, bitorder="little")
            t = bits[..., : phys[-1]].astype(bool)
        else:
            item = np.dtype(self.np_storage).itemsize
            t = flat[: math.prod(phys) * item].view(self.np_storage).reshape(phys)
            if self.dtype.is_bool:
                t = t != 0
        return np.ascontiguousarray(np.transpose(t, inverse)).astype(self.dtype.numpy, copy=False)
