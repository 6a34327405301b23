"""Loss ops and their gradients (docs/training.md).

A loss op maps the prediction and a target to a scalar f32[] loss; ``reduction`` is
"mean" (default) or "sum" over the batch. It declares ``target_type(prediction type)``
(the type of @train_step's target argument) and its backward rule emits its gradient
op. A loss must be the root of @train_step: its incoming gradient is the seed 1.
Values are computed in float64 and rounded once to f32.
"""

from __future__ import annotations

import numpy as np

from boldc.backend import grad_kernels as GK
from boldc.energymodel import works as E
from boldc.errors import InterpretError
from boldc.ir.types import DType, TensorType
from boldc.ops import common as C
from boldc.ops.grad_ops import SECOND_ORDER
from boldc.ops.registry import Attr, OpDef, TypeCheck, register

REDUCTION = Attr("reduction", "str", "mean", choices=("mean", "sum"),
                 doc='"mean": averaged over the batch (and, for mse/l1, over all elements); "sum": summed')
SCALAR = TensorType(DType.f32, ())


class LossOp(OpDef):
    """Base of the losses: operands (prediction, target); trait "loss"."""

    operands = ("pred", "target")
    attrs = (REDUCTION,)
    traits = frozenset({"loss"})
    nondiff_operands = ("target",)
    grad_op: str

    def target_type(self, pred: TensorType) -> TensorType:
        raise NotImplementedError

    def infer(self, types, attrs):
        pred, target = types
        C.expect_dtype(pred, "float", "prediction")
        want = self.target_type(pred)
        if target.dtype.is_int and want.dtype.is_int and target.shape == want.shape:
            return [SCALAR]
        if target != want:
            raise TypeCheck(f"target must be {want}, got {target}")
        return [SCALAR]

    def backward(self, ctx, op, dys):
        if dys[0] is not None:
            raise ctx.error(op, "a loss must be the root of @train_step (its gradient is the seed 1)")
        pred = op.operands[0]
        return [ctx.op(self.grad_op, list(op.operands), dict(op.attrs), grad_of=pred), None]


class LossGrad(OpDef):
    """Base of the loss gradients: same operands and attributes, result shaped like pred."""

    operands = ("pred", "target")
    attrs = (REDUCTION,)
    traits = frozenset({"gradient", "loss"})
    backward = SECOND_ORDER
    loss: str

    def infer(self, types, attrs):
        from boldc.ops.registry import lookup

        lookup(self.loss).infer(types, attrs)
        return [types[0]]


def _labels(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    classes = pred.shape[1]
    if target.size and (target.min() < 0 or target.max() >= classes):
        bad = target[(target < 0) | (target >= classes)][0]
        raise InterpretError(f"label {int(bad)} is out of range: there are {classes} classes (0 to {classes - 1})")
    return target.astype(np.int64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _reduce(per_sample_total: float, count: int, reduction: str) -> np.ndarray:
    return np.float32(per_sample_total / count if reduction == "mean" else per_sample_total).reshape(())


@register
class SoftmaxXent(LossOp):
    """Softmax cross-entropy of logits [N, C] and integer labels [N]:
    loss = Σ_k (log Σ_c exp(z[k, c]) - z[k, y_k]), divided by N for reduction "mean"."""

    name = "softmax_xent"
    grad_op = "softmax_xent_grad"

    def cost(self, ctx):
        """Per element of pred: softmax (5 operations) and the log-likelihood term (1)."""
        return [E.loss(*ctx.operands, ctx.results[0], 6)]

    def emit_c(self, cop):
        return GK.softmax_xent(cop, grad=False)

    def target_type(self, pred):
        C.expect_rank(pred, 2, "logits")
        return TensorType(DType.i32, (pred.shape[0],))

    def evaluate(self, args, attrs):
        z, y = args
        labels = _labels(z, y)
        logp = _log_softmax(z)
        total = -logp[np.arange(len(labels)), labels].sum()
        return [_reduce(total, len(labels), attrs["reduction"])]


@register
class SoftmaxXentGrad(LossGrad):
    """dz[k, c] = softmax(z[k])[c] - 1{c = y_k}, divided by N for reduction "mean"."""

    name = "softmax_xent_grad"
    loss = "softmax_xent"

    def cost(self, ctx):
        """Per element: softmax (5), minus the one-hot target (1), the reduction's scale (1)."""
        return [E.loss_grad(*ctx.operands, ctx.results[0], 7)]

    def emit_c(self, cop):
        return GK.softmax_xent(cop, grad=True)

    def evaluate(self, args, attrs):
        z, y = args
        labels = _labels(z, y)
        g = np.exp(_log_softmax(z))
        g[np.arange(len(labels)), labels] -= 1.0
        if attrs["reduction"] == "mean":
            g /= len(labels)
        return [g.astype(np.float32)]


class _ElementwiseLoss(LossOp):
    """loss = Σ f(p - t) over all elements, divided by their number for "mean"."""

    def target_type(self, pred):
        return pred

    def evaluate(self, args, attrs):
        d = args[0].astype(np.float64) - args[1].astype(np.float64)
        count = d.size if attrs["reduction"] == "mean" else 1
        return [_reduce(self.per_element(d).sum(), count, "mean")]


class _ElementwiseLossGrad(LossGrad):
    """dp = f'(p - t), divided by the number of elements for "mean"."""

    def evaluate(self, args, attrs):
        d = args[0].astype(np.float64) - args[1].astype(np.float64)
        count = d.size if attrs["reduction"] == "mean" else 1
        return [(self.derivative(d) / count).astype(np.float32)]


@register
class MSE(_ElementwiseLoss):
    """Mean squared error: loss = Σ (p - t)², divided by the number of elements for "mean"."""

    name = "mse"
    grad_op = "mse_grad"

    def cost(self, ctx):
        """Per element: difference, square, sum (3)."""
        return [E.loss(*ctx.operands, ctx.results[0], 3)]

    def emit_c(self, cop):
        return GK.elementwise_loss(cop, lambda d: f"{d} * {d}")

    def per_element(self, d):
        return d * d


@register
class MSEGrad(_ElementwiseLossGrad):
    """dp = 2 (p - t), divided by the number of elements for "mean"."""

    name = "mse_grad"
    loss = "mse"

    def cost(self, ctx):
        """Per element: difference and scale (2)."""
        return [E.loss_grad(*ctx.operands, ctx.results[0], 2)]

    def emit_c(self, cop):
        return GK.elementwise_loss_grad(cop, lambda d: f"2.0 * {d}")

    def derivative(self, d):
        return 2.0 * d


@register
class L1(_ElementwiseLoss):
    """Absolute error: loss = Σ |p - t|, divided by the number of elements for "mean"."""

    name = "l1"
    grad_op = "l1_grad"

    def cost(self, ctx):
        """Per element: difference, absolute value, sum (3)."""
        return [E.loss(*ctx.operands, ctx.results[0], 3)]

    def emit_c(self, cop):
        return GK.elementwise_loss(cop, lambda d: f"fabs({d})")

    def per_element(self, d):
        return np.abs(d)


@register
class L1Grad(_ElementwiseLossGrad):
    """dp = sign(p - t) (0 where equal), divided by the number of elements for "mean"."""

    name = "l1_grad"
    loss = "l1"

    def cost(self, ctx):
        """Per element: difference and scaled sign (2)."""
        return [E.loss_grad(*ctx.operands, ctx.results[0], 2)]

    def emit_c(self, cop):
        return GK.elementwise_loss_grad(cop, lambda d: f"({d} > 0.0 ? 1.0 : ({d} < 0.0 ? -1.0 : 0.0))")

    def derivative(self, d):
        return np.sign(d)
