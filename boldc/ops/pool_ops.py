"""Pooling ops beyond those of ``float_ops``: ``global_maxpool``."""

from __future__ import annotations

from boldc.ir.works import add_op, per_element, window_ops
from boldc.ops.backward_rules import spatial
from boldc.ops.common import expect_rank
from boldc.ops.registry import OpDef, register


@register
class GlobalMaxPool(OpDef):
    """y[n,c,0,0] = max over h, w of x[n,c,h,w]; output [N, C, 1, 1] as in ONNX.

    Any element type; on b1 the max of ±1 values is the OR of the bits, so the
    op needs no Boolean counterpart."""

    name = "global_maxpool"
    operands = ("x",)

    def cost(self, ctx):
        """H·W - 1 comparisons per output."""
        x = ctx.operands[0]
        return per_element(ctx, window_ops(x.shape[2] * x.shape[3], add_op(x)))

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def backward(self, ctx, op, dys):
        """The window is the whole map: the max-pool rule (first maximum gets dy)."""
        x = op.operands[0]
        return [ctx.op("maxpool2d_grad", [dys[0], x], {"kernel": spatial(x)}, grad_of=x)]

    def infer(self, types, attrs):
        x = types[0]
        expect_rank(x, 4, "input")
        return [x.with_shape((x.shape[0], x.shape[1], 1, 1))]

    def evaluate(self, args, attrs):
        return [args[0].max(axis=(2, 3), keepdims=True)]
