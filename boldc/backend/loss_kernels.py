"""C emission helpers for the loss ops and their gradients (docs/training.md, "Losses and
metrics"): softmax cross-entropy over logits [N, C, *spatial] with an ignore index, and the
elementwise losses (mse, l1). Computed in double from the f32 operands and rounded once to
f32, as the interpreter; the emitters (``emitters/training.py``) pick the helper. The
softmax cross-entropy gradient is ``signal_kernels.softmax_xent_grad``, which reads the
positions and the label check given here."""

from __future__ import annotations

from collections.abc import Callable

from boldc.backend.cblock import Block
from boldc.backend.cexpr import Const, Expr, product
from boldc.backend.ckernel import CKernel, COp


def xent_positions(cop: COp) -> tuple[Expr, Expr, int, Expr, Expr]:
    """(outer, inner, classes, pos_stride, class_stride) of logits [N, C, *spatial] as
    stored: position s of sample k starts at k·C·inner + s·pos_stride, class c is
    class_stride further (channels-last maps: C and 1; row-major [N, C, L]: 1 and L). Its
    label is labels[k·inner + s] (labels [N, *spatial] are row-major)."""
    z = cop.ins[0]
    classes = z.shape[1]
    inner = product(*(z.extent(a) for a in range(2, z.rank)))
    if z.layout.perm[-1] == 1:  # the classes are the last stored axis
        return z.lead, inner, classes, Const(classes), Const(1)
    if z.layout.perm != tuple(range(z.rank)):
        raise cop.fail(f"logits {z.ref} are stored in an order the C loss does not read")
    return z.lead, inner, classes, Const(1), inner


def label_check(cop: COp) -> tuple[str, str]:
    z, t = cop.ins[0], cop.ins[1]
    classes = z.shape[1]
    ignore = cop.attrs["ignore_index"]
    b = Block()
    with b.loop("bd_i", t.layout.count_expr()) as i:
        b(f"if ({t.name}[{i}] != {ignore} && ({t.name}[{i}] < 0 || {t.name}[{i}] >= {classes})) return 1;")
    return b.text(), (f"a label is out of range: there are {classes} classes (0 to {classes - 1}; "
                      f"ignore_index {ignore})")


def softmax_xent(cop: COp) -> CKernel:
    """Softmax cross-entropy of logits [N, C, *spatial] and labels [N, *spatial] (log-softmax
    in double): the loss Σ_k -log p[k, y_k] over the labels that are not ignore_index (/their
    number for "mean", 0 when there is none)."""
    z, t = cop.ins
    outer, inner, classes, pos_stride, class_stride = xent_positions(cop)
    ignore = cop.attrs["ignore_index"]
    b = Block()
    b.decl("double bd_total = 0.0;", "long bd_count = 0;")
    with b.loop("bd_k", outer) as k, b.loop("bd_p", inner) as s:
        b.decl(f"const int32_t bd_y = {t.name}[{k * inner + s}];")
        with b.when(f"bd_y != {ignore}"):
            b.decl(f"const float *bd_z = {z.name} + {k * classes * inner + s * pos_stride};",
                   "double bd_m = -HUGE_VAL, bd_s = 0.0;")
            with b.loop("bd_c", classes) as c:
                v = f"bd_z[{c * class_stride}]"
                b(f"if ((double){v} > bd_m || {v} != {v}) bd_m = (double){v};")
            with b.loop("bd_c", classes) as c:
                b(f"bd_s += exp((double)bd_z[{c * class_stride}] - bd_m);")
            b(f"bd_total -= ((double)bd_z[bd_y * {class_stride.atom()}] - bd_m) - log(bd_s);", "bd_count += 1;")
    mean = cop.attrs["reduction"] == "mean"
    b(f"{cop.out.name}[0] = (float)(bd_total{' / (double)(bd_count > 0 ? bd_count : 1)' if mean else ''});")
    check, message = label_check(cop)
    return CKernel(b.text(), input_check=check, input_check_message=message, input_check_operands=(1,))


def elementwise_loss(cop: COp, per_element: Callable[[str], str]) -> CKernel:
    """loss = Σ f(p - t) over all elements (/their number for "mean"), in double."""
    p, t = cop.ins
    count = p.layout.count_expr()
    mean = cop.attrs["reduction"] == "mean"
    b = Block()
    b.decl("double bd_total = 0.0;")
    with b.loop("bd_i", count) as i:
        b.decl(f"const double bd_d = (double){p.name}[{i}] - (double){t.name}[{i}];")
        b(f"bd_total += {per_element('bd_d')};")
    b(f"{cop.out.name}[0] = (float)(bd_total{f' / (double)({count})' if mean else ''});")
    return CKernel(b.text())


def elementwise_loss_grad(cop: COp, derivative: Callable[[str], str]) -> CKernel:
    """dp = f'(p - t) (/ number of elements for "mean"), in double."""
    p, t = cop.ins
    count = p.layout.count_expr()
    div_ = f" / (double)({count})" if cop.attrs["reduction"] == "mean" else ""
    b = Block()
    with b.loop("bd_i", count) as i:
        b.decl(f"const double bd_d = (double){p.name}[{i}] - (double){t.name}[{i}];")
        b(f"{cop.out.name}[{i}] = (float)(({derivative('bd_d')}){div_});")
    return CKernel(b.text())
