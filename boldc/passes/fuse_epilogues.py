"""fuse-epilogues: a layer and the chain of elementwise ops after it become one ``fused`` op.

A head is an op with the trait ``FusionHead`` (a convolution or linear layer, float,
Boolean or mixed, or a layer's input or weight gradient). Its chain grows while the
value it computes is read by an op with the trait ``Epilogue`` through one of that op's
chain operands (inference BatchNorm, threshold, ReLU/clip, residual add, cast, the
threshold backward): the first such reader in program order joins the chain. A value of
the chain that other ops read as well stays available as an extra result of the fused op
(``keep``), provided they all come after the chain's last op: the fused op takes the place
of the last one, so the chain stops before an op that would put it after such a reader.
Nothing is fused into a chain of one.

The fused op computes exactly what its parts computed (``boldc/ops/fused_ops.py``), so
the pass changes no value; the energy model and the C backend run the epilogues on the
head's output tile (docs/energy.md, docs/backend.md).
"""

from __future__ import annotations

from boldc.ir.builder import typed_op, unique_name
from boldc.ir.core import Module, Op, Param, Value
from boldc.ir.rewriter import Rewriter
from boldc.ops.fused_ops import PREVIOUS
from boldc.ops.registry import is_annotation, lookup, the_op_with
from boldc.ops.traits import Composite, Epilogue, FusionHead
from boldc.passes.manager import Option, Pass, register_pass


def _chain_position(op: Op, value: Value) -> int | None:
    """The operand position through which the epilogue ``op`` reads ``value``, or None if it
    cannot (not an epilogue, not through a chain operand, or reading it twice)."""
    epilogue = lookup(op.name).trait(Epilogue)
    if epilogue is None or len(op.results) != 1 or sum(o is value for o in op.operands) != 1:
        return None
    names = lookup(op.name).operand_names(len(op.operands))
    pos = next(i for i, o in enumerate(op.operands) if o is value)
    return pos if names[pos] in epilogue.chain else None


def fusion_chain(rw: Rewriter, head: Op) -> list[tuple[Op, int]]:
    """The head and its epilogues, each with the position of its chained operand (-1 for the
    head), as far as the rules of the module docstring allow."""
    chain = [(head, -1)]
    current = head.results[0]
    position = {op: i for i, op in enumerate(rw.fn.ops)}
    first_other = len(rw.fn.ops)  # the earliest reader, outside the chain, of a kept value
    while True:
        readers = sorted(rw.users(current), key=position.__getitem__)
        nxt = next((r for r in readers if _chain_position(r, current) is not None), None)
        if nxt is None or position[nxt] > first_other:
            return chain  # the fused op, at nxt's place, would come after a reader of a kept value
        others = [position[r] for r in readers if r is not nxt]
        if any(p < position[nxt] for p in others):
            return chain
        if _updated_between(rw, position[chain[-1][0]], position[nxt], [op for op, _ in chain] + [nxt]):
            return chain
        chain.append((nxt, _chain_position(nxt, current)))
        first_other = min([first_other, *others])
        current = nxt.results[0]


def _updated_between(rw: Rewriter, start: int, stop: int, ops: list[Op]) -> bool:
    """Whether an op between positions ``start`` and ``stop`` updates a param that ``ops``
    read: the fused op, at ``stop``, would read it after its update."""
    read = {o.name for op in ops for o in op.operands if isinstance(o, Param)}
    for op in rw.fn.ops[start + 1:stop]:
        opdef = lookup(op.name)
        if any(op.operands[p].name in read for p in opdef.updated_positions(len(op.operands))):
            return True
    return False


@register_pass
class FuseEpilogues(Pass):
    name = "fuse-epilogues"
    options = {"functions": Option(list, [], "functions to fuse (default: all)")}

    def run(self, module: Module) -> bool:
        fused_name = the_op_with(Composite).name
        self.parts: dict[Op, list[Op]] = {}  # each fused op made -> the ops it replaced
        for fn in module.functions.values():
            if self.opts["functions"] and fn.name not in self.opts["functions"]:
                continue
            rw = Rewriter(fn)
            for head in list(fn.ops):
                if head not in rw.fn.ops or not lookup(head.name).has(FusionHead) or len(head.results) != 1:
                    continue
                chain = fusion_chain(rw, head)
                if len(chain) > 1:
                    fused = self._fuse(rw, chain, fused_name)
                    self.parts[fused] = [op for op, _ in chain]
        return bool(self.parts)

    @staticmethod
    def _fuse(rw: Rewriter, chain: list[tuple[Op, int]], fused_name: str) -> Op:
        operands: list[Value] = []

        def index(v: Value) -> int:
            for i, o in enumerate(operands):
                if o is v:
                    return i
            operands.append(v)
            return len(operands) - 1

        body, kept = [], []
        last = chain[-1][0]
        for op, chained in chain:
            args = [PREVIOUS if pos == chained else index(o) for pos, o in enumerate(op.operands)]
            attrs = {k: v for k, v in lookup(op.name).printed_attrs(op.attrs).items() if not is_annotation(k)}
            part = {"op": op.name, "args": args, "attrs": attrs}
            if op is not last:
                part["name"] = op.results[0].name  # unfuse and autodiff name the part's result so again
                if len(rw.users(op.results[0])) > 1 or any(v is op.results[0] for v in rw.fn.returns):
                    part["keep"] = True
                    kept.append(op.results[0])
            body.append(part)
        return rw.replace_ops([op for op, _ in chain], fused_name, operands, {"body": body}, [last.results[0], *kept])


def expand_composites(fn) -> dict[Op, Op]:
    """Every composite op of ``fn`` (a fused op) as its parts again, in its place, the parts'
    results named by the op's ``part_names``; returns each new part -> the op it came from."""
    rw = Rewriter(fn)
    origins: dict[Op, Op] = {}
    for op in list(fn.ops):
        opdef = lookup(op.name)
        if not opdef.has(Composite):
            continue
        made: list[Op] = []  # the parts, named as the op's results (free once it is erased)
        for part_def, args, attrs in _part_calls(opdef.parts(op), list(op.operands), made):
            made.append(typed_op(part_def.name, args, attrs, None, lambda h: h))
        rw.names.difference_update(r.name for r in op.results)  # the op's names pass to its parts
        for new, name in zip(made, opdef.part_names(op)):
            new.results[0].name = unique_name(name, rw.names)
            rw.insert(new, before=op)
        results = [made[-1].results[0]] + [new.results[0] for new, part in zip(made, opdef.parts(op))
                                           if part.get("keep")]
        rw.replace_with(op, results)
        origins.update((new, op) for new in made)
    return origins


@register_pass
class Unfuse(Pass):
    """The inverse of fuse-epilogues: every fused op as its parts (the unfused form)."""

    name = "unfuse"

    def run(self, module: Module) -> bool:
        self.origins: dict[Op, Op] = {}  # each part made -> the fused op it came from
        for fn in module.functions.values():
            self.origins.update(expand_composites(fn))
        return bool(self.origins)


def _part_calls(parts: list[dict], operands: list[Value], made: list[Op]):
    """(definition, args, attrs) of each part in order; an epilogue's previous result is
    the first result of the last op in ``made`` (the caller appends each part's op)."""
    for part in parts:
        opdef = lookup(part["op"])
        args = [made[-1].results[0] if a == PREVIOUS else operands[a] for a in part["args"]]
        yield opdef, args, part["attrs"]
