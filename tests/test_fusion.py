"""fuse-epilogues: a layer and its elementwise chain as one fused op, which computes exactly
what its parts computed (docs/ir.md, "Fusion")."""

from __future__ import annotations

import numpy as np
import pytest

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.errors import VerifyError
from boldc.passes import PassManager

from conftest import GOLDEN
from onnxgraph import example_input, example_model


def convert_unfused(*args, **options):
    """boldc.convert without fusion: these tests look at the lowered ops themselves."""
    return boldc.convert(*args, fuse=False, **options)


MODELS = ["digits_mlp", "digits_cnn", "vgg_small", "resnet18"]


def fused(module: Module) -> Module:
    out = module.copy()
    PassManager("fuse-epilogues").run(out)
    return out


def _names(module: Module, func: str = "forward") -> list[str]:
    return [op.name for op in module.ops(func)]


@pytest.mark.parametrize("keep_bn", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_fused_equals_unfused_bit_for_bit_on_every_example(name, keep_bn):
    m = convert_unfused(example_model(name), keep_bn=keep_bn)
    f = fused(m)
    assert "fused" in _names(f) and len(f.ops()) < len(m.ops())
    text = boldc.dumps(f)
    assert boldc.dumps(boldc.parse(text)) == text  # printed, parsed, verified
    x = example_input(name, 3)
    assert np.array_equal(boldc.interpret(f, x), boldc.interpret(m, x))


@pytest.mark.parametrize("name", ["boolean_mlp", "boolean_cnn", "float_mlp"])
def test_golden_models_fuse_and_agree(name):
    m = boldc.load(GOLDEN / f"{name}.bir")
    f = fused(m)
    arg = m.function().args[0]
    x = np.random.default_rng(0).random([4, *arg.type.shape[1:]]) < 0.5 if arg.type.dtype.is_bool else \
        np.random.default_rng(0).standard_normal([4, *arg.type.shape[1:]]).astype(np.float32)
    assert np.array_equal(boldc.interpret(f, x), boldc.interpret(m, x))


def _chain_module(extra_reader: bool, reader_first: bool = False):
    """x -> blinear -> threshold -> out, optionally with another reader of the pre-activation."""
    rng = np.random.default_rng(1)
    m = Module()
    w = m.add_param("w", tensor("b1", 5, 8), rng.random((5, 8)) < 0.5)
    fb = FunctionBuilder(m, "forward", [("x", tensor("b1", "N", 8))])
    s = fb.op("blinear", [fb.args[0], w], name="s")
    outs = []
    if extra_reader and reader_first:
        outs.append(fb.op("cast", [s], {"to": "f32"}, name="early"))
    h = fb.op("threshold", [s], name="h")
    outs.insert(0, h)
    if extra_reader and not reader_first:
        outs.append(fb.op("cast", [s], {"to": "f32"}, name="late"))
    fb.ret(*outs)
    return m


def test_a_value_read_after_the_chain_is_kept_as_an_extra_result():
    m = _chain_module(extra_reader=True)
    f = fused(m)
    op = next(op for op in f.ops() if op.name == "fused")
    assert [r.name for r in op.results] == ["h", "s"] and op.attrs["body"][0].get("keep") is True
    x = np.random.default_rng(2).random((3, 8)) < 0.5
    for got, want in zip(boldc.interpret(f, x), boldc.interpret(m, x)):
        assert np.array_equal(got, want)


def test_a_value_read_before_the_chain_ends_stops_the_chain():
    m = _chain_module(extra_reader=True, reader_first=True)
    # the cast reads s before the threshold: s must exist then, so the cast joins the chain
    # (it is an epilogue) and the threshold does not
    f = fused(m)
    body = next(op for op in f.ops() if op.name == "fused").attrs["body"]
    assert [p["op"] for p in body] == ["blinear", "cast"] and "threshold" in _names(f)


def test_a_kept_value_read_between_later_epilogues_stops_the_chain():
    """y = linear; a = relu(y); r = add(y, y); c = clip(a): y is kept, and the fused op may
    not move past r (which reads y), so clip stays out of the chain."""
    rng = np.random.default_rng(3)
    m = Module()
    w = m.add_param("w", tensor("f32", 4, 6), rng.standard_normal((4, 6)).astype(np.float32))
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 6))])
    y = fb.op("linear", [fb.args[0], w], name="y")
    a = fb.op("relu", [y], name="a")
    r = fb.op("add", [y, y], name="r")
    c = fb.op("clip", [a], {"min": -1.0, "max": 0.5}, name="c")
    fb.ret(c, r)
    f = fused(m)  # verified after the pass
    body = next(op for op in f.ops() if op.name == "fused").attrs["body"]
    assert [p["op"] for p in body] == ["linear", "relu"]
    x = rng.standard_normal((3, 6)).astype(np.float32)
    for got, want in zip(boldc.interpret(f, x), boldc.interpret(m, x)):
        assert np.array_equal(got, want)


def test_the_fused_op_is_verified():
    m = fused(_chain_module(extra_reader=False))
    text = boldc.dumps(m)
    bad = text.replace('{op = "threshold", args = [-1]', '{op = "threshold", args = [0]')
    with pytest.raises(VerifyError, match="an epilogue takes the previous result"):
        boldc.parse(bad)
    with pytest.raises(VerifyError, match="not an epilogue"):
        boldc.parse(text.replace('op = "threshold"', 'op = "softmax"'))


def test_a_training_step_built_from_a_fused_forward_trains_as_the_unfused_one():
    m = convert_unfused(example_model("digits_cnn"))
    f = fused(m)
    for module in (m, f):
        PassManager("autodiff{signal-bits=16},insert-optimizer{eta=10}").run(module)
    x = example_input("digits_cnn", 16)
    y = np.arange(16, dtype=np.int32) % 10
    for _ in range(3):
        assert boldc.interpret(f, [x, y], "train_step") == boldc.interpret(m, [x, y], "train_step")
        for name, p in m.params.items():
            assert np.array_equal(f.params[name].data, p.data), name
    assert "fused" not in _names(f, "train_step")  # autodiff expanded the fused ops


def test_fusing_a_training_step_keeps_its_values():
    m = convert_unfused(example_model("digits_cnn"))
    PassManager("autodiff{signal-bits=16},insert-optimizer{eta=10}").run(m)
    f = fused(m)
    assert "fused" in _names(f, "train_step")
    x = example_input("digits_cnn", 8)
    y = np.arange(8, dtype=np.int32) % 10
    assert boldc.interpret(f, [x, y], "train_step") == boldc.interpret(m, [x, y], "train_step")
    for name, p in m.params.items():
        assert np.array_equal(f.params[name].data, p.data), name


@pytest.mark.parametrize("name", MODELS)
def test_unfuse_gives_the_unfused_module_back(name):
    """The same ops with the same names (a chain fused where its last op was comes back
    there: independent ops may have changed places)."""
    m = convert_unfused(example_model(name), keep_bn=True)
    f = fused(m)
    PassManager("unfuse").run(f)
    assert sorted(boldc.dumps(f).splitlines()) == sorted(boldc.dumps(m).splitlines())
    boldc.verify(f)
