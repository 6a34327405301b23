"""schedule-updates: move each optimizer op of @train_step as early as it may go.

insert-optimizer appends the updates after the whole backward pass, so every weight
signal (as large as its weights) stays alive until the end of the step. An update
may run as soon as its operands exist and every other op that reads a param it
writes has run; this pass moves every op with the trait ``Optimizer`` (schedules,
updates, the step counter) to the first such position, keeping the order of all
other ops. The result is equivalent under the commit-at-end semantics
(docs/training.md): no op reads a param after the op that updates it, which the
verifier checks again. The C backend then frees each weight signal right after its
update, which lowers the arena of a training step.
"""

from __future__ import annotations

from boldc.ir.core import Module, Op, Param
from boldc.ir.rewriter import Rewriter
from boldc.ops.registry import lookup
from boldc.ops.traits import Optimizer
from boldc.passes.manager import NeedsFunction, Option, Pass, register_pass


def _is_optimizer(op: Op) -> bool:
    return lookup(op.name).has(Optimizer)


@register_pass
class ScheduleUpdates(Pass):
    name = "schedule-updates"
    options = {"func": Option(str, "train_step", "the function whose optimizer ops are moved")}
    requires = (NeedsFunction(option="func"),)

    def run(self, module: Module) -> bool:
        fn = module.function(self.opts["func"])
        rw = Rewriter(fn)
        readers: dict[str, list[Op]] = {}
        for op in fn.ops:
            for o in op.operands:
                if isinstance(o, Param):
                    readers.setdefault(o.name, []).append(op)
        order = [op for op in fn.ops if not _is_optimizer(op)]
        for op in (op for op in fn.ops if _is_optimizer(op)):
            must_follow = [rw.producer(o) for o in op.operands if not isinstance(o, Param)]
            for pos in lookup(op.name).updated_positions(len(op.operands)):
                must_follow += [r for r in readers.get(op.operands[pos].name, []) if r is not op]
            index = {o: i for i, o in enumerate(order)}
            at = max((index[d] for d in must_follow if d in index), default=-1) + 1
            while at < len(order) and _is_optimizer(order[at]):  # ties keep their order
                at += 1
            order.insert(at, op)
        return rw.reorder(order)
