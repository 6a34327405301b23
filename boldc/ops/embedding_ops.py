"""Table lookups: ``embedding`` gathers rows of a table [V, D] by integer ids
(ONNX Gather on axis 0 with computed indices), and its gradient ``embedding_grad``
scatters the signal back onto the rows, in the ids' order."""

from __future__ import annotations

import numpy as np

from boldc.errors import InterpretError
from boldc.ir.types import DType, TensorType
from boldc.ir.works import BACKWARD, NO_OPS, add_op, per_element, stream
from boldc.ops.common import expect_dtype, expect_rank, expect_static
from boldc.ops.grad_ops import GradOp, as_f32, expect_signal
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import Gradient, RealFeatures


def row_indices(ids: np.ndarray, rows: int, op: str) -> np.ndarray:
    """The ids as row numbers in [0, rows) (int64, same shape): a negative id counts from the
    end (id + rows, as ONNX Gather); an id outside [-rows, rows) is an error naming it."""
    flat = np.asarray(ids).astype(np.int64)
    bad = flat[(flat < -rows) | (flat >= rows)]
    if bad.size:
        raise InterpretError(f"{op}: id {int(bad.reshape(-1)[0])} is out of range for a table of {rows} rows "
                             f"(ids must be in [-{rows}, {rows}))")
    return np.where(flat < 0, flat + rows, flat)


def _check_ids(ids: TensorType) -> None:
    expect_dtype(ids, "int", "ids")


@register
class Embedding(OpDef):
    """y[i..., d] = table[r(ids[i...]), d] with r(k) = k for 0 <= k < V and k + V for -V <= k < 0
    (ONNX Gather on axis 0); f32 table [V, D] (normally a param; V may be a symbol), integer ids
    of any shape, y f32 [*ids.shape, D]. An id outside [-V, V) is an error."""

    name = "embedding"
    operands = ("table", "ids")
    traits = (RealFeatures(),)
    nondiff_operands = ("ids",)  # integer indices: no gradient

    def cost(self, ctx):
        """A copy of the gathered rows (the ids read once)."""
        return per_element(ctx, NO_OPS)

    def fan_in(self, op, fan_in_of):
        """1: embedding rows are real features at unit scale (nn.Embedding draws N(0, 1)), as a
        LayerNorm's output (docs/training.md, "Transformers")."""
        return 1

    def backward(self, ctx, op, dys):
        """d table = embedding_grad(dy, ids) {rows = V}: each row of dy added onto the row its id
        selects."""
        table, ids = op.operands
        rows = expect_static(table.type.shape[0], "the rows of a table that is trained")
        return [ctx.op("embedding_grad", [dys[0], ids], {"rows": rows}, grad_of=table), None]

    def infer(self, types, attrs):
        table, ids = types
        expect_dtype(table, "float", "table")
        expect_rank(table, 2, "table")
        expect_static(table.shape[1], "table columns")  # the rows may be a symbol (a gather from a computed tensor)
        _check_ids(ids)
        return [TensorType(DType.f32, tuple(ids.shape) + (table.shape[1],))]

    def evaluate(self, args, attrs):
        table, ids = args
        rows = row_indices(ids, table.shape[0], "embedding")
        return [np.ascontiguousarray(table[rows], dtype=np.float32)]


@register
class EmbeddingGrad(GradOp):
    """d table[v, d] = Σ over the positions i with r(ids[i]) = v of dy[i, d] (r as in ``embedding``),
    dy f32 [*ids.shape, D] -> f32 [rows, D]: added in double in row-major order of the ids
    (a scatter-add, deterministic), rounded once to f32."""

    name = "embedding_grad"
    operands = ("dy", "ids")
    attrs = (Attr("rows", "int", doc="V, the rows of the table"),)
    traits = (Gradient(),)

    def cost(self, ctx):
        """One addition per element of dy."""
        dy, out = ctx.operands[0], ctx.results[0]
        return [stream("signal", BACKWARD, ctx.operands, ctx.results, add_op(out).times(dy.numel))]

    def infer(self, types, attrs):
        dy, ids = types
        expect_signal(dy)
        _check_ids(ids)
        if attrs["rows"] < 1:
            raise TypeCheck(f"rows must be >= 1, got {attrs['rows']}")
        if dy.rank != ids.rank + 1 or tuple(dy.shape[:-1]) != tuple(ids.shape):
            raise TypeCheck(f"signal {dy} must be [*ids.shape, D] for ids {ids}")
        d = expect_static(dy.shape[-1], "embedding width")
        return [TensorType(DType.f32, (attrs["rows"], d))]

    def evaluate(self, args, attrs):
        dy, ids = args
        rows = row_indices(ids, attrs["rows"], "embedding_grad").reshape(-1)
        acc = np.zeros((attrs["rows"], dy.shape[-1]))
        np.add.at(acc, rows, dy.reshape(-1, dy.shape[-1]).astype(np.float64))  # unbuffered, in index order
        return [as_f32(acc)]
