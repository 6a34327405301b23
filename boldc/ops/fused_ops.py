"""The fused op: a layer (or a layer's gradient) and the elementwise ops that follow it, as
one op (docs/ir.md, "Fusion"; the fuse-epilogues pass makes them).

    %h: b1[N, 64, 8, 8] = fused(%x, @w) {body = [{op = "bconv2d", args = [0, 1], attrs = {pad = [1, 1, 1, 1]}},
                                                 {op = "threshold", args = [-1], attrs = {}}]}

Each part of ``body`` is {op, args, attrs} (and ``keep = true`` for an intermediate result
the fused op also returns, ``name`` for the name its result had before fusion). The head's
args index the fused op's operands; an epilogue's args index them too, with -1 for the
result of the part before it. The results are the last part's result, then the kept
intermediates in part order.

A fused op computes exactly what its parts compute one after the other (the interpreter
runs their definitions), so fusing changes no value. What fusion changes is where the
epilogues run: on the head's output tile, in the output buffer of the matrix unit, so only
the results leave it (the energy model, the C kernels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from boldc.ir.works import ConvWork, NoWork, Ops
from boldc.ops.registry import Attr, NotDifferentiable, OpDef, TypeCheck, lookup, register
from boldc.ops.traits import Composite, Epilogue, FusionHead

PREVIOUS = -1  # an epilogue's argument that is the previous part's result


def _parts(body: Any) -> list[dict]:
    """The parts of ``body`` with their definitions checked (a TypeCheck otherwise)."""
    if not isinstance(body, list) or len(body) < 2:
        raise TypeCheck("body must list the head and at least one epilogue")
    for i, part in enumerate(body):
        if not isinstance(part, dict) or not {"op", "args", "attrs"} <= set(part) or set(part) - {
                "op", "args", "attrs", "keep", "name"}:
            raise TypeCheck(f"body part {i} must be {{op, args, attrs[, keep, name]}}, got {part!r}")
        opdef = lookup(part["op"]) if isinstance(part["op"], str) else None
        if opdef is None:
            raise TypeCheck(f"body part {i}: unknown op {part['op']!r}")
        if i == 0 and not opdef.has(FusionHead):
            raise TypeCheck(f"body part 0 ({opdef.name}) is not a fusion head")
        if i > 0 and not opdef.has(Epilogue):
            raise TypeCheck(f"body part {i} ({opdef.name}) is not an epilogue")
        args = part["args"]
        if not isinstance(args, list) or not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise TypeCheck(f"body part {i}: args must be operand indices, got {args!r}")
        if (PREVIOUS in args) != (i > 0) or args.count(PREVIOUS) > 1:
            raise TypeCheck(f"body part {i}: an epilogue takes the previous result (-1) once, the head never")
        lo, hi = opdef.arity()
        if len(args) < lo or (hi is not None and len(args) > hi):
            want = f"{lo}" if hi == lo else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            raise TypeCheck(f"body part {i} ({opdef.name}) takes {want} operands, got {len(args)}")
        if not isinstance(part["attrs"], dict) or not isinstance(part.get("keep", False), bool) or \
                not isinstance(part.get("name", ""), str):
            raise TypeCheck(f"body part {i}: attrs must be a dict, keep a bool and name a string")
    if body[-1].get("keep"):
        raise TypeCheck("the last part's result is the fused op's first result; it is not 'kept'")
    return body


def run_parts(body: list[dict], operands: list, call: Callable[[Any, list, dict], list]) -> list:
    """The fused op's results: each part ``call(definition, its operands, its attrs)`` in
    order, on the fused op's operands and the previous part's first result; then the last
    result and the kept ones."""
    previous, kept = None, []
    for i, part in enumerate(body):
        opdef = lookup(part["op"])
        args = []
        for a in part["args"]:
            if a == PREVIOUS:
                args.append(previous)
            elif 0 <= a < len(operands):
                args.append(operands[a])
            else:
                raise TypeCheck(f"body part {i}: operand index {a} out of range ({len(operands)} operands)")
        results = call(opdef, args, part["attrs"])
        if len(results) != 1:
            raise TypeCheck(f"body part {i} ({opdef.name}) must have one result, it has {len(results)}")
        previous = results[0]
        if part.get("keep"):
            kept.append(previous)
    return [previous, *kept]


@register
class Fused(OpDef):
    """A head and its epilogues as one op: y = e_k(...e_1(head(...))...), the parts of
    ``body`` applied in order (see the module docstring); results: y, then the kept
    intermediates."""

    name = "fused"
    operands = ("inputs*",)
    attrs = (Attr("body", "any", doc="the parts: [{op, args, attrs[, keep]}, ...]"),)
    traits = (Composite(),)
    backward = NotDifferentiable("autodiff expands a fused op into its parts first")

    @classmethod
    def check_attrs(cls, attrs):
        _parts(attrs["body"])

    def parts(self, op) -> list[dict]:
        return _parts(op.attrs["body"])

    def part_names(self, op) -> list[str]:
        """Names for the parts' results when the op is expanded: the last part's and the
        kept ones are the op's results; the others their ``name``, else ``<first result>.<op>``."""
        parts = self.parts(op)
        kept = iter(op.results[1:])
        return [op.results[0].name if k == len(parts) - 1 else
                next(kept).name if part.get("keep") else part.get("name", f"{op.results[0].name}.{part['op']}")
                for k, part in enumerate(parts)]

    def infer(self, types, attrs):
        def infer(opdef, args, part_attrs):
            return opdef.infer(args, opdef.normalize_attrs(part_attrs))

        return run_parts(_parts(attrs["body"]), types, infer)

    def evaluate(self, args, attrs):
        return run_parts(_parts(attrs["body"]), args, lambda d, a, at: d.evaluate(a, d.normalize_attrs(at)))

    def cost(self, ctx):
        """The head's convolution with its epilogues on the output tile (docs/energy.md,
        "Fusion"): the epilogues' operations are added to it and their other operands are
        read once; what the epilogues read and write in the output buffer costs nothing more;
        what leaves it is the fused op's results, at their widths."""
        body = _parts(ctx.attrs["body"])
        head_def, head_args, head_attrs, head_out = types_of_part(body, 0, ctx.operand_types)
        works = head_def.cost(ctx.part(head_args, head_out, head_def.normalize_attrs(head_attrs)))
        convs = [w for w in works if isinstance(w, ConvWork)]
        if len(convs) != 1:
            raise TypeCheck(f"the head {head_def.name} declares {len(convs)} convolutions; a fused head has one")
        conv = convs[0]
        extra, ops, previous = list(conv.extra), Ops(), head_out[0]
        for i in range(1, len(body)):
            opdef, args, attrs, out = types_of_part(body, i, ctx.operand_types, previous)
            part = ctx.part(args, out, opdef.normalize_attrs(attrs))
            for w in opdef.cost(part):
                if not isinstance(w, NoWork):  # an epilogue that computes nothing here (a cast to the same form)
                    ops = ops + w.ops
            extra += [info for a, info in zip(body[i]["args"], part.operands) if a != PREVIOUS]
            previous = out[0]
        fused = ConvWork(conv.label, conv.phase, conv.kind, conv.geom, conv.i, conv.f, conv.o, conv.ops + ops,
                         tuple(extra), tuple(ctx.results), tuple(part["op"] for part in body[1:]))
        return [fused if w is conv else w for w in works]


def types_of_part(body: list[dict], i: int, operand_types: list, previous=None) -> tuple:
    """(definition, argument types, attrs, result types) of part ``i``."""
    part = body[i]
    opdef = lookup(part["op"])
    args = [previous if a == PREVIOUS else operand_types[a] for a in part["args"]]
    return opdef, args, part["attrs"], opdef.infer(args, opdef.normalize_attrs(part["attrs"]))
