"""Loss ops and their gradients (docs/training.md).

A loss op maps the prediction and a target to a scalar f32[] loss; ``reduction`` is
"mean" (default) or "sum" over the batch (softmax_xent: over the labels not ignored, one
per sample and position of a dense prediction). It declares ``target_type(prediction type)``
(the type of @train_step's target argument) and its backward rule emits its gradient
op. A loss must be the root of @train_step: its incoming gradient is the seed 1.
Values are computed in float64 and rounded once to f32.
"""

from __future__ import annotations

import numpy as np

from boldc.errors import InterpretError
from boldc.ir.types import DType, TensorType
from boldc.ir.works import ARITH, BACKWARD, FORWARD, stream
from boldc.ops.common import exp_fixed, expect_dtype
from boldc.ops.grad_ops import SECOND_ORDER
from boldc.ops.registry import Attr, OpDef, TypeCheck, lookup, register
from boldc.ops.traits import Gradient, Loss

REDUCTION = Attr("reduction", "str", "mean", choices=("mean", "sum"),
                 doc='"mean": averaged over the batch (and, for mse/l1, over all elements); "sum": summed')
SCALAR = TensorType(DType.f32, ())


class LossOp(OpDef):
    """Base of the losses: operands (prediction, target), the trait Loss (its gradient op)
    and ``target_type(pred)`` in each loss."""

    operands = ("pred", "target")
    attrs = (REDUCTION,)
    nondiff_operands = ("target",)

    def infer(self, types, attrs):
        pred, target = types
        expect_dtype(pred, "float", "prediction")
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
        return [ctx.op(self.trait(Loss).grad_op, list(op.operands), dict(op.attrs), grad_of=pred), None]


class LossGrad(OpDef):
    """Base of the loss gradients: same operands and attributes, result shaped like pred."""

    operands = ("pred", "target")
    attrs = (REDUCTION,)
    traits = (Gradient(),)
    backward = SECOND_ORDER
    loss: str

    per_element_ops: int  # arithmetic operations per element of the prediction

    def cost(self, ctx):
        """``per_element_ops`` arithmetic operations per element of the prediction."""
        pred, target = ctx.operands
        ops = ARITH.times(self.per_element_ops * pred.numel)
        return [stream("loss signal", BACKWARD, (pred, target), ctx.results, ops)]

    def infer(self, types, attrs):
        lookup(self.loss).infer(types, attrs)
        return [types[0]]


IGNORE_INDEX = -100  # PyTorch's default
IGNORE = Attr("ignore_index", "int", IGNORE_INDEX,
              doc="a label equal to it contributes neither loss nor gradient (and is not counted by the mean)")


def _ignore_index_in_i32(cls, attrs) -> None:
    """check_attrs of the cross-entropy ops: ignore_index is compared with i32 labels (and
    passed to the C runtime as one)."""
    if not -2**31 <= attrs["ignore_index"] < 2**31:
        raise TypeCheck(f"ignore_index {attrs['ignore_index']} is outside the range of the i32 labels")


def check_label_shape(pred_shape, target_shape) -> None:
    """One label per sample and position: labels [N, *spatial] for logits [N, C, *spatial]."""
    want = (pred_shape[0], *pred_shape[2:])
    if tuple(target_shape) != want:
        raise InterpretError(f"labels of shape {list(target_shape)} for logits {list(pred_shape)}: one label per "
                             f"sample and position is shape {list(want)}")


def label_out_of_range(label: int, classes: int, ignore_index: int) -> InterpretError:
    return InterpretError(f"label {label} is out of range: there are {classes} classes (0 to {classes - 1}; "
                          f"ignore_index {ignore_index})")


def _positions(pred: np.ndarray, target: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits [P, C], labels [P], kept [P]) of the P = N·(spatial) positions of logits
    [N, C, *spatial] and labels [N, *spatial], in row-major order of the labels; ``kept``
    marks the labels that are not ``ignore_index``. Any other label outside 0..C-1 is an error."""
    classes = pred.shape[1]
    check_label_shape(pred.shape, target.shape)
    labels = target.reshape(-1).astype(np.int64)
    kept = labels != ignore_index
    bad = labels[kept & ((labels < 0) | (labels >= classes))]
    if bad.size:
        raise label_out_of_range(int(bad[0]), classes, ignore_index)
    return np.moveaxis(pred, 1, -1).reshape(-1, classes), labels, kept


def _from_positions(g: np.ndarray, shape: tuple) -> np.ndarray:
    """[P, C] back to logits' [N, C, *spatial]."""
    return np.moveaxis(g.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],)), -1, 1)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _reduce(per_sample_total: float, count: int, reduction: str) -> np.ndarray:
    return np.float32(per_sample_total / count if reduction == "mean" else per_sample_total).reshape(())


@register
class SoftmaxXent(LossOp):
    """Softmax cross-entropy of logits [N, C, *spatial] (spatial rank 0, 1 or 2; the classes
    on axis 1) and integer labels [N, *spatial], over the positions k whose label y_k is not
    ``ignore_index``: loss = Σ_k (log Σ_c exp(z[k, c]) - z[k, y_k]), divided by their number
    for reduction "mean" (0 when every label is ignored)."""

    name = "softmax_xent"
    attrs = (REDUCTION, IGNORE)
    check_attrs = classmethod(_ignore_index_in_i32)
    traits = (Loss("softmax_xent_grad"),)

    def cost(self, ctx):
        """Per element of pred: softmax (5 operations) and the log-likelihood term (1)."""
        pred, target = ctx.operands
        return [stream("loss", FORWARD, (pred, target), ctx.results, ARITH.times(6 * pred.numel))]

    def target_type(self, pred):
        if not 2 <= pred.rank <= 4:
            raise TypeCheck(f"logits must be [N, C], [N, C, L] or [N, C, H, W] (the classes on axis 1), got {pred}")
        return TensorType(DType.i32, (pred.shape[0],) + tuple(pred.shape[2:]))

    def evaluate(self, args, attrs):
        z, labels, kept = _positions(*args, attrs["ignore_index"])
        logp = _log_softmax(z)
        total = 0.0 - logp[np.flatnonzero(kept), labels[kept]].sum()  # 0.0 - : +0 when every label is ignored
        return [_reduce(total, max(int(kept.sum()), 1), attrs["reduction"])]


@register
class SoftmaxXentGrad(LossGrad):
    """dz[k, c] = p[k, c] - 1{c = y_k} at the positions k whose label is not ``ignore_index``
    (0 at the others), divided by their number for reduction "mean", with the softmax
    p[k, c] = e_c / Σ_c' e_c', e_c = exp(z[k, c] - max_c z[k, c]) (``common.exp_fixed``,
    the sum in class order): every step an exactly rounded double operation, so the C
    gives the same bits (this signal reaches the integer signals of the layers below)."""

    name = "softmax_xent_grad"
    attrs = (REDUCTION, IGNORE)
    check_attrs = classmethod(_ignore_index_in_i32)
    loss = "softmax_xent"

    per_element_ops = 7  # Per element: softmax (5), minus the one-hot target (1), the reduction's scale (1).

    def evaluate(self, args, attrs):
        z, labels, kept = _positions(*args, attrs["ignore_index"])
        z = z.astype(np.float64)
        e = exp_fixed(z - z.max(axis=1, keepdims=True))
        total = np.zeros(e.shape[:1])
        for c in range(e.shape[1]):  # in class order, as the C sums
            total = total + e[:, c]
        g = e / total[:, None]
        rows = np.flatnonzero(kept)
        g[rows, labels[kept]] -= 1.0
        g[~kept] = 0.0
        if attrs["reduction"] == "mean" and rows.size:
            g = g / float(rows.size)
        return [_from_positions(g, args[0].shape).astype(np.float32)]


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
    traits = (Loss("mse_grad"),)

    def cost(self, ctx):
        """Per element: difference, square, sum (3)."""
        pred, target = ctx.operands
        return [stream("loss", FORWARD, (pred, target), ctx.results, ARITH.times(3 * pred.numel))]

    def per_element(self, d):
        return d * d


@register
class MSEGrad(_ElementwiseLossGrad):
    """dp = 2 (p - t), divided by the number of elements for "mean"."""

    name = "mse_grad"
    loss = "mse"

    per_element_ops = 2  # Per element: difference and scale (2).

    def derivative(self, d):
        return 2.0 * d


@register
class L1(_ElementwiseLoss):
    """Absolute error: loss = Σ |p - t|, divided by the number of elements for "mean"."""

    name = "l1"
    traits = (Loss("l1_grad"),)

    def cost(self, ctx):
        """Per element: difference, absolute value, sum (3)."""
        pred, target = ctx.operands
        return [stream("loss", FORWARD, (pred, target), ctx.results, ARITH.times(3 * pred.numel))]

    def per_element(self, d):
        return np.abs(d)


@register
class L1Grad(_ElementwiseLossGrad):
    """dp = sign(p - t) (0 where equal), divided by the number of elements for "mean"."""

    name = "l1_grad"
    loss = "l1"

    per_element_ops = 2  # Per element: difference and scaled sign (2).

    def derivative(self, d):
        return np.sign(d)
