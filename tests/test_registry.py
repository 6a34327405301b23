"""Every op declares everything the generic machinery needs (docs/architecture.md), and the registry
refuses a definition that does not."""

from __future__ import annotations

import numpy as np
import pytest

from boldc.ops.registry import HOOKS, REGISTRY, Marker, NotDifferentiable, OpDef, all_ops, register
from boldc.ops.traits import BooleanCounterpart, Layer, Loss, MixedCounterpart, PerChannelAffine

OPS = all_ops()

REQUIRED_OPS = {
    # float
    "conv2d", "linear", "batchnorm", "relu", "maxpool2d", "avgpool2d", "global_avgpool", "add", "flatten",
    "reshape", "concat", "softmax",
    # Boolean and mixed
    "bconv2d", "blinear", "threshold", "bmaxpool2d", "mconv2d", "mlinear",
    # casts
    "cast",
}


def test_required_ops_are_registered():
    missing = REQUIRED_OPS - set(OPS)
    assert not missing, f"ops missing from the registry: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_declares_everything(name):
    d = OPS[name]
    cls = type(d)
    assert d.name == name
    assert cls.doc(), f"{name}: no docstring giving its meaning"
    assert cls.infer is not OpDef.infer, f"{name}: no type inference"
    assert cls.evaluate is not OpDef.evaluate, f"{name}: no numpy semantics"
    for hook in HOOKS:
        value = getattr(d, hook)
        assert isinstance(value, Marker) or callable(value), \
            f"{name}: hook {hook} is neither implemented nor an explicit marker"
    for attr in cls.attrs:
        if not attr.required:
            attr.check(attr.default)  # defaults are valid values of their own kind


def test_counterparts_are_registered_ops():
    for d in OPS.values():
        for kind in (BooleanCounterpart, MixedCounterpart):
            t = d.trait(kind)
            if t is not None:
                assert t.op in OPS, f"{d.name}: {kind.__name__}({t.op!r}) is not an op"
        loss = d.trait(Loss)
        if loss is not None:
            assert loss.grad_op in OPS, f"{d.name}: Loss({loss.grad_op!r}) is not an op"


def test_markers_say_why():
    for d in OPS.values():
        for hook in HOOKS:
            value = getattr(d, hook)
            if isinstance(value, Marker):
                assert value.reason and not value


# --- registration refuses incomplete definitions ---------------------------------------------------


def _throwaway(**body):
    """A fresh OpDef subclass named 'throwaway' with the given class body."""
    base = {"__doc__": "y = x (a test op).", "name": "throwaway", "operands": ("x",),
            "infer": lambda self, types, attrs: [types[0]], "evaluate": lambda self, args, attrs: [args[0]]}
    base.update(body)
    return type("Throwaway", (OpDef,), base)


@pytest.fixture
def clean_registry():
    yield
    REGISTRY.pop("throwaway", None)


@pytest.mark.parametrize("missing", HOOKS)
def test_an_op_without_a_hook_is_refused(clean_registry, missing):
    hooks = {"backward": NotDifferentiable("a test op"), "cost": lambda self, ctx: []}
    del hooks[missing]
    with pytest.raises(TypeError, match=f"op 'throwaway' declares no {missing} hook"):
        register(_throwaway(**hooks))
    assert "throwaway" not in REGISTRY


def test_a_complete_op_is_registered(clean_registry):
    register(_throwaway(backward=NotDifferentiable("a test op"), cost=lambda self, ctx: []))
    assert REGISTRY["throwaway"].evaluate([np.ones(2)], {})[0].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("body,message", [
    ({"infer": OpDef.infer}, "defines no infer"),
    ({"__doc__": None}, "has no docstring"),
    ({"traits": ("layer",)}, "is not a boldc.ops.traits.Trait"),
    ({"traits": (Layer(),)}, r"a Layer has the operands \(x, w, bias\?\)"),
    ({"traits": (Loss("nope"),)}, "a Loss implements target_type"),
    ({"traits": (PerChannelAffine(("scale",)),)}, r"a PerChannelAffine has the operands \(x, scale\)"),
])
def test_trait_contracts_and_parts_are_checked(clean_registry, body, message):
    hooks = {"backward": NotDifferentiable("a test op"), "cost": lambda self, ctx: []}
    with pytest.raises(TypeError, match=message):
        register(_throwaway(**hooks, **body))
