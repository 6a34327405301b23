"""Dead-code elimination: drop ops none of whose results are used.

Ops with the trait ``SideEffect`` (parameter updates, gradient declarations) are always
kept; params no function uses any more are dropped with ``drop-params``."""

from __future__ import annotations

from boldc.ir.core import Module, Param
from boldc.ir.rewriter import Rewriter
from boldc.ops.registry import lookup
from boldc.ops.traits import SideEffect
from boldc.passes.manager import Option, Pass, register_pass


def eliminate_dead_ops(rw: Rewriter) -> bool:
    """Erase, from the last op to the first, every op without effect whose results nobody
    reads (so the producers of a dead op's operands die in the same walk)."""
    changed = False
    for op in reversed(list(rw.fn.ops)):
        if not lookup(op.name).has(SideEffect) and not any(rw.is_used(r) for r in op.results):
            rw.erase(op)
            changed = True
    return changed


def used_params(module: Module) -> set[str]:
    """Names of the params some function reads or returns."""
    used = {o.name for fn in module.functions.values() for op in fn.ops for o in op.operands if isinstance(o, Param)}
    return used | {v.name for fn in module.functions.values() for v in fn.returns if isinstance(v, Param)}


@register_pass
class DeadCodeElimination(Pass):
    name = "dce"
    options = {"drop-params": Option(bool, True, "remove params that no function uses")}

    def run(self, module: Module) -> bool:
        changed = False
        for fn in module.functions.values():
            changed |= eliminate_dead_ops(Rewriter(fn))
        if self.opts["drop-params"]:
            used = used_params(module)
            for name in [n for n in module.params if n not in used]:
                del module.params[name]
                changed = True
        return changed
