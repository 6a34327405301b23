"""rematerialize: recompute pre-activations in the backward pass instead of keeping them
alive from the forward pass.

The threshold backward reads the integer pre-activation s of a Boolean layer (docs/method.md §3),
so s (8 to 32 bits per element) would stay alive from the forward pass to the end of
the backward pass. It is cheap to compute again from the layer's b1 input (1 bit per
element, which the weight signal needs anyway) and its weights: this pass gives the uses
of s after the loss a copy of the producing op, placed just before the first of them. The
values are the same (the weights change only when the step commits, and
schedule-updates keeps every update after the ops that read the weights), so the
interpreter's results do not change; the arena of the generated C gets smaller.

Which ops are recomputed: forward ops whose result is at least RATIO times larger than
their value operands (params do not count: they are kept anyway), so that keeping the
inputs instead of the result saves memory, and the recomputation is cheap: the
XNOR/XOR-popcount layers (b1 in, 8 to 32-bit sums out) and first layers that widen a
few input channels into many (e.g. VGG-Small's 3 -> 128 float convolution, whose f32
output is 43 times its input).
"""

from __future__ import annotations

from boldc.ir.builder import unique_name
from boldc.ir.core import Module, Op, Param, Value
from boldc.ir.rewriter import Rewriter
from boldc.ops.registry import lookup
from boldc.ops.traits import Gradient, Loss, Optimizer
from boldc.passes.manager import NeedsFunction, Option, Pass, register_pass

RATIO = 4  # recompute when the result is at least this many times larger than the value operands


def _bytes_per_sample(t) -> float:
    """Bytes of a value per unit of the batch symbol (b1 as 1/8 byte)."""
    n = 1
    for d in t.shape:
        n *= d if isinstance(d, int) else 1
    return n * (t.dtype.bits / 8)


def _recomputable(op: Op) -> bool:
    d = lookup(op.name)
    if d.updates or d.has(Loss) or d.has(Gradient) or d.has(Optimizer) or len(op.results) != 1:
        return False
    inputs = sum(_bytes_per_sample(o.type) for o in op.operands if not isinstance(o, Param))
    return _bytes_per_sample(op.results[0].type) >= RATIO * inputs


@register_pass
class Rematerialize(Pass):
    name = "rematerialize"
    options = {"func": Option(str, "train_step", "the function to rewrite")}
    requires = (NeedsFunction(option="func"),)

    def run(self, module: Module) -> bool:
        fn = module.function(self.opts["func"])
        loss_at = next((i for i, op in enumerate(fn.ops) if lookup(op.name).has(Loss)), None)
        if loss_at is None:
            return False
        producers = {op.results[0]: op for op in fn.ops[:loss_at] if _recomputable(op)}
        rw = Rewriter(fn)
        again: dict[Value, Value] = {}  # one copy per value, before its first use after the loss
        for op in fn.ops[loss_at + 1:]:
            for o in op.operands:
                src = producers.get(o)
                if src is not None and o not in again:
                    name = unique_name(f"{o.name}.again", rw.names, sep="", first=2)
                    clone = Op(src.name, list(src.operands), [Value(name, o.type)], dict(src.attrs), src.loc)
                    rw.insert(clone, before=op)
                    again[o] = clone.results[0]
            if any(o in again for o in op.operands):
                rw.set_operands(op, [again.get(o, o) for o in op.operands])
        return bool(again)
