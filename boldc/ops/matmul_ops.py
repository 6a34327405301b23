"""The product of two computed tensors: ``matmul``, numpy's matmul on f32 with
broadcast batch dims, summed in double in k order as the float layers are
(``common.matmul_in_order``), so that the C gives the same bits."""

from __future__ import annotations

import numpy as np

from boldc.ir.types import DType, TensorType
from boldc.ir.works import ARITH, FORWARD, add_op, stream
from boldc.ops.backward_rules import sum_to_operand
from boldc.ops.common import expect_dtype
from boldc.ops.float_ops import _broadcast
from boldc.ops.registry import OpDef, TypeCheck, register
from boldc.ops.traits import RealFeatures


def matmul_shapes(a: TensorType, b: TensorType) -> tuple[tuple, object, object, object]:
    """Checks a [..., M, K] against b [..., K, P] (both rank >= 2, batch dims broadcast);
    returns (batch dims, M, K, P)."""
    for t, what in ((a, "a"), (b, "b")):
        expect_dtype(t, "float", what)
        if t.rank < 2:
            raise TypeCheck(f"{what} must have rank >= 2 (the last two dims are the matrix), got {t}")
    if a.shape[-1] != b.shape[-2]:
        raise TypeCheck(f"a {a} has {a.shape[-1]} columns but b {b} has {b.shape[-2]} rows "
                        "(a [..., M, K] · b [..., K, P])")
    try:
        batch = _broadcast(TensorType(DType.f32, a.shape[:-2]), TensorType(DType.f32, b.shape[:-2]))
    except TypeCheck:
        raise TypeCheck(f"the batch dims of a {a} and b {b} do not broadcast") from None
    return batch, a.shape[-2], a.shape[-1], b.shape[-1]


def swap_last(rank: int) -> list[int]:
    """The perm of ``transpose`` that swaps the last two axes of a rank-``rank`` value."""
    return list(range(rank - 2)) + [rank - 1, rank - 2]


def matmul_in_order_nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [..., M, K] · b [..., K, P] in float64 with numpy broadcasting of the batch dims,
    each sum taken in k order (k = 0, 1, ...) from 0.0: the sequence of exactly rounded
    double additions of ``common.matmul_in_order`` (a product of two f32 is exact in double)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    acc = np.zeros(batch + (a.shape[-2], b.shape[-1]))
    for k in range(a.shape[-1]):
        acc = acc + a[..., :, k, None] * b[..., None, k, :]
    return acc


@register
class MatMul(OpDef):
    """y[..., m, p] = Σ_k a[..., m, k] · b[..., k, p] (numpy matmul; f32 a [..., M, K], b [..., K, P],
    both rank >= 2, the batch dims broadcast); each sum in double in k order from 0, rounded
    once to f32."""

    name = "matmul"
    operands = ("a", "b")
    traits = (RealFeatures(),)

    def fan_in(self, op, fan_in_of):
        """1: a threshold on a product of real features (attention's softmax · v, whose rows
        are averages of v's; the projections' per-output scale keeps v near unit spread) is
        treated like one on unit-variance values (docs/training.md, "Transformers")."""
        return 1

    def cost(self, ctx):
        """numel(y)·K multiply-accumulates, two arithmetic operations each; a and b read once,
        y written once."""
        a, y = ctx.operands[0], ctx.results[0]
        macs = y.numel * a.shape[-1]
        return [stream("forward", FORWARD, ctx.operands, ctx.results, (ARITH + add_op(y)).times(macs))]

    def backward(self, ctx, op, dys):
        """da = dy · bᵀ, db = aᵀ · dy (ᵀ: the last two axes swapped by ``transpose``), each summed
        over the batch dims its operand was broadcast along (``sum_to``)."""
        a, b = op.operands
        grads = [None, None]
        if ctx.needs[0]:
            bt = ctx.op("transpose", [b], {"perm": swap_last(b.type.rank)}, grad_of=a)
            grads[0] = sum_to_operand(ctx, ctx.op("matmul", [dys[0], bt], grad_of=a), a)
        if ctx.needs[1]:
            at = ctx.op("transpose", [a], {"perm": swap_last(a.type.rank)}, grad_of=b)
            grads[1] = sum_to_operand(ctx, ctx.op("matmul", [at, dys[0]], grad_of=b), b)
        return grads

    def infer(self, types, attrs):
        batch, m, _, p = matmul_shapes(types[0], types[1])
        return [TensorType(DType.f32, batch + (m, p))]

    def evaluate(self, args, attrs):
        return [matmul_in_order_nd(args[0], args[1]).astype(np.float32)]
