"""Every op declares everything the generic machinery needs (DESIGN.md)."""

from __future__ import annotations

import pytest

from boldc.ops.registry import HOOKS, Marker, OpDef, all_ops

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
        for key in ("boolean_counterpart", "mixed_counterpart"):
            other = getattr(d, key, None)
            if other is not None:
                assert other in OPS, f"{d.name}.{key} = {other!r} is not an op"


def test_markers_say_why():
    for d in OPS.values():
        for hook in HOOKS:
            value = getattr(d, hook)
            if isinstance(value, Marker):
                assert value.reason and not value
