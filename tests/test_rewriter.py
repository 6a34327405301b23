"""Use-def on a function (Function.producer/users/replace_all_uses) and the Rewriter the
passes share: its maps follow every edit, new ops are typed and uniquely named."""

from __future__ import annotations

import numpy as np
import pytest

from boldc import FunctionBuilder, Module, tensor
from boldc.ir.rewriter import Rewriter
from boldc.ir.verifier import verify


def _module():
    """y = linear(x, w); a = relu(y); r = add(y, a); return r."""
    m = Module()
    w = m.add_param("w", tensor("f32", 4, 3), np.ones((4, 3), np.float32))
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 3))])
    y = fb.op("linear", [fb.args[0], w], name="y")
    a = fb.op("relu", [y], name="a")
    fb.ret(fb.op("add", [y, a], name="r"))
    return m


def test_function_use_def():
    m = _module()
    fn = m.function("forward")
    linear, relu, add = fn.ops
    y = linear.results[0]
    assert fn.producer(y) is linear and fn.producer(fn.args[0]) is None
    assert fn.users(y) == [relu, add] and fn.users(add.results[0]) == []
    assert fn.replace_all_uses(y, fn.args[0]) == 2  # relu's operand and add's first one
    assert fn.users(y) == [] and relu.operands[0] is fn.args[0]


def test_rewriter_maps_follow_the_edits():
    m = _module()
    fn = m.function("forward")
    rw = Rewriter(fn)
    linear, relu, add = fn.ops
    y = linear.results[0]
    assert rw.producer(y) is linear and rw.users(y) == [relu, add]
    clip = rw.op("clip", [y], {"min": 0.0, "max": 1.0}, "a", before=relu)  # "a" is taken
    assert clip.name == "a.1" and rw.producer(clip) is not None
    rw.replace_all_uses(relu.results[0], clip)
    assert rw.users(clip) == [add] and not rw.is_used(relu.results[0])
    rw.erase(relu)
    assert relu not in fn.ops and rw.users(y) == [rw.producer(clip), add]
    verify(m)


def test_replace_op_keeps_names_and_uses_and_erase_refuses_a_used_op():
    m = _module()
    fn = m.function("forward")
    rw = Rewriter(fn)
    linear, relu, add = fn.ops
    new = rw.replace_op(relu, "clip", [linear.results[0]], {"min": 0.0, "max": 6.0})
    assert new.name == "a" and add.operands[1] is new and rw.users(new) == [add]
    with pytest.raises(AssertionError, match="still used"):
        rw.erase(linear)
    verify(m)
