"""The float baseline of a Boolean module: the same network in float32 (docs/energy.md).

``float_baseline(module)`` builds it from @forward, op by op:

- an op that is the Boolean or mixed counterpart of a float op (``BooleanCounterpart`` /
  ``MixedCounterpart`` of that float op: bconv2d, mconv2d -> conv2d, blinear, mlinear ->
  linear, bmaxpool2d -> maxpool2d) becomes that float op, with the attributes it declares;
- the threshold (the ``Binarize`` op) becomes the float activation it stands for (its
  trait's ``float_form``, relu) on its input;
- b1 params and b1 inputs become f32, integer pre-activations f32 through the ops above;
- every other op stays, re-typed on its float operands.

The result is a model of the float network's costs, not a network to run: its values are
not those of any trained float model (a folded threshold's τ, for example, is dropped).
Its training step is built like the model's (autodiff, then Adam for every param).
"""

from __future__ import annotations

import numpy as np

from boldc.errors import BoldcError
from boldc.ir.builder import FunctionBuilder
from boldc.ir.core import Module, Op, Param, Value
from boldc.ir.types import DType
from boldc.ops.fused_ops import run_parts
from boldc.ops.registry import TypeCheck, all_ops, lookup, the_op_with
from boldc.ops.traits import Binarize, BooleanCounterpart, Cast, Composite, MixedCounterpart
from boldc.passes.dce import DeadCodeElimination


def float_forms() -> dict[str, str]:
    """Boolean or mixed op -> the float op whose counterpart it is."""
    out: dict[str, str] = {}
    for d in all_ops().values():
        for kind in (BooleanCounterpart, MixedCounterpart):
            t = d.trait(kind)
            if t is not None:
                out.setdefault(t.op, d.name)
    return out


def _f32_type(t):
    return t.with_dtype(DType.f32) if t.dtype.is_bool else t


def float_baseline(module: Module) -> Module:
    """The float network of ``module``'s @forward (see the module docstring)."""
    forms = float_forms()
    out = Module()
    out.attrs = dict(module.attrs)
    for p in module.params.values():
        out.add_param(p.name, _f32_type(p.type), None if p.data is None else _f32_data(p), dict(p.attrs))
    fn = module.function("forward")
    fb = FunctionBuilder(out, "forward", [(a.name, _f32_type(a.type)) for a in fn.args])
    values: dict[Value, Value] = dict(zip(fn.args, fb.args))
    for p in module.params.values():
        values[p] = out.params[p.name]
    try:
        for op in fn.ops:
            new = _float_op(fb, op, [values[o] for o in op.operands], forms)
            values.update(zip(op.results, new))
    except TypeCheck as exc:
        raise BoldcError(f"cannot build the float baseline of this module: {exc}") from None
    fb.ret(*[values[v] for v in fn.returns])
    DeadCodeElimination().run(out)  # params only the Boolean form read (a folded threshold's τ)
    return out


def _float_op(fb: FunctionBuilder, op: Op, ins: list[Value], forms: dict[str, str]) -> list[Value]:
    opdef = lookup(op.name)
    if opdef.has(Composite):  # a fused op: its parts, each made float (the baseline is fused again later)
        names = iter(opdef.part_names(op))

        def emit(part_def, args, attrs):
            part = Op(part_def.name, list(args), [Value(next(names), op.results[0].type)], attrs)
            return _float_op(fb, part, args, forms)

        return run_parts(opdef.parts(op), ins, emit)
    names = [r.name for r in op.results]
    hint = names if len(names) != 1 else names[0]
    binarize = opdef.trait(Binarize)
    if binarize is not None:
        x = ins[0]
        if not x.type.dtype.is_float:
            x = fb.op(the_op_with(Cast).name, [x], {"to": "f32"}, name=f"{x.name}.f32")
        return [fb.op(binarize.float_form, [x], name=hint)]
    name = forms.get(op.name, op.name)
    target = lookup(name)
    attrs = {k: v for k, v in op.attrs.items() if target.attr_spec(k) is not None}
    new = fb.op(name, ins, attrs, name=hint)
    return new if isinstance(new, list) else [new]


def _f32_data(p: Param) -> np.ndarray:
    return np.where(p.data, np.float32(1), np.float32(-1)) if p.type.dtype.is_bool else p.data
