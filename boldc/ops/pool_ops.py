"""Pooling ops beyond those of ``float_ops``: ``global_maxpool``."""

from __future__ import annotations

from boldc.backend import kernels as K
from boldc.energymodel import works as E
from boldc.ops import common as C
from boldc.ops import grad_ops as G
from boldc.ops.registry import OpDef, register


@register
class GlobalMaxPool(OpDef):
    """y[n,c,0,0] = max over h, w of x[n,c,h,w]; output [N, C, 1, 1] as in ONNX.

    Any element type; on b1 the max of ±1 values is the OR of the bits, so the
    op needs no Boolean counterpart."""

    name = "global_maxpool"
    operands = ("x",)
    traits = frozenset({"pool"})

    def cost(self, ctx):
        """H·W - 1 comparisons per output; backward: maxpool2d_grad over the whole map."""
        x = ctx.operands[0]
        return E.max_pool(ctx, x.shape[2] * x.shape[3], E.add_op(x))

    def backward(self, ctx, op, dys):
        """The window is the whole map: the max-pool rule (first maximum gets dy)."""
        x = op.operands[0]
        return [ctx.op("maxpool2d_grad", [dys[0], x], {"kernel": G.spatial(x)}, grad_of=x)]

    def infer(self, types, attrs):
        x = types[0]
        C.expect_rank(x, 4, "input")
        return [x.with_shape((x.shape[0], x.shape[1], 1, 1))]

    def emit_c(self, cop):
        return K.global_pool(cop, "max")

    def evaluate(self, args, attrs):
        return [args[0].max(axis=(2, 3), keepdims=True)]
