"""Dead-code elimination: drop ops none of whose results are used.

Ops with the trait ``side_effect`` (parameter updates) are always kept; params no
function uses any more are dropped with ``drop-params``."""

from __future__ import annotations

from boldc.ir.core import Module, Param
from boldc.ops.registry import lookup
from boldc.passes.manager import Option, Pass, register_pass


@register_pass
class DeadCodeElimination(Pass):
    name = "dce"
    options = {"drop-params": Option(bool, True, "remove params that no function uses")}

    def run(self, module: Module) -> bool:
        changed = False
        for fn in module.functions.values():
            live = {id(v) for v in fn.returns}
            kept = []
            for op in reversed(fn.ops):
                opdef = lookup(op.name)
                effect = opdef is not None and "side_effect" in opdef.traits
                if effect or any(id(r) in live for r in op.results):
                    kept.append(op)
                    live.update(id(o) for o in op.operands)
                else:
                    changed = True
            fn.ops = kept[::-1]
        if self.opts["drop-params"]:
            used = {o.name for fn in module.functions.values() for op in fn.ops
                    for o in op.operands if isinstance(o, Param)}
            used |= {v.name for fn in module.functions.values() for v in fn.returns if isinstance(v, Param)}
            for name in [n for n in module.params if n not in used]:
                del module.params[name]
                changed = True
        return changed
