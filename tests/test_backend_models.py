"""Generated C against the interpreter on whole models, and the CompiledModel API.

Models: the golden IR files, the digits MLP and CNN converted from their shipped
ONNX files, VGG-Small and ResNet-18 exported untrained from PyTorch
(examples/export_large.py) and converted, and a small residual CNN. Every value of a
run is compared (see backend_check.py), on the SIMD and the portable path, and the
shipped build (trace=False: arena reuse, in-place kernels) is checked too: its outputs
and its arena plan, against liveness the test computes itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import boldc
from boldc.backend.emit import Options, generate
from boldc.backend.training import TrainOptions, training_module
from boldc.errors import BoldcError, InterpretError

from backend_check import FLIPS, arena_problems, check_all, compile_variant
from conftest import GOLDEN
from trainutil import digits_mlp, small_cnn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _input(module, batch, seed=0):
    arg = module.function().args[0]
    shape = [batch] + list(arg.type.shape[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def large_models(tmp_path_factory):
    """VGG-Small and ResNet-18 as converted Boolean modules (exported once per session)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from export_large import build
        from onnx_export import export_onnx
    finally:
        sys.path.remove(str(EXAMPLES))
    out = {}
    for name in ("vgg_small", "resnet18"):
        model, shape = build(name)
        path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
        export_onnx(model, shape, path)
        out[name] = boldc.convert(path)
    return out


def _check(module, variant, batch, max_batch=None, seed=0):
    """Every value of the traced build, and the shipped build's outputs and arena plan
    (backend_check.check_all); no threshold may have flipped by float rounding."""
    builds = compile_variant(module, variant, max_batch=max_batch or batch)
    before = len(FLIPS)
    problems = check_all(module, builds, "forward", [_input(module, batch, seed)])
    assert not problems, "; ".join(problems)
    assert not FLIPS[before:], f"float rounding flipped a threshold: {FLIPS[before:]}"


def residual_cnn() -> boldc.Module:
    """A small residual Boolean CNN: float conv 3->16 and threshold, then two blocks
    s = bconv(h) + bconv(threshold(bconv(h))) (the first sum read again after the second
    conv: a buffer that must outlive its first reader), OR-pool, flatten, float linear."""
    rng = np.random.default_rng(12)
    m = boldc.Module()
    fb = boldc.FunctionBuilder(m, "forward", [("x", boldc.tensor("f32", "N", 3, 8, 8))])
    pad = {"pad": [1, 1, 1, 1]}
    w0 = m.add_param("c0.w", boldc.tensor("f32", 16, 3, 3, 3), (rng.standard_normal((16, 3, 3, 3)) / 3).astype("f4"))
    h = fb.op("threshold", [fb.op("conv2d", [fb.args[0], w0], pad)])
    for k in range(2):
        wa = m.add_param(f"b{k}.a.w", boldc.tensor("b1", 16, 16, 3, 3), rng.random((16, 16, 3, 3)) < 0.5)
        wb = m.add_param(f"b{k}.b.w", boldc.tensor("b1", 16, 16, 3, 3), rng.random((16, 16, 3, 3)) < 0.5)
        a = fb.op("bconv2d", [h, wa], pad)
        b = fb.op("bconv2d", [fb.op("threshold", [a]), wb], pad)
        h = fb.op("threshold", [fb.op("add", [a, b])])
    h = fb.op("flatten", [fb.op("bmaxpool2d", [h], {"kernel": [2, 2], "stride": [2, 2]})])
    w3 = m.add_param("fc.w", boldc.tensor("f32", 10, 256), (rng.standard_normal((10, 256)) / 16).astype("f4"))
    fb.ret(fb.op("linear", [h, w3]))
    return m


@pytest.mark.parametrize("variant", ["simd", "avx2", "portable", "portable-popcount"])
@pytest.mark.parametrize("name", ["float_mlp", "boolean_mlp", "boolean_cnn"])
def test_golden_models(name, variant):
    _check(boldc.load(GOLDEN / f"{name}.bir"), variant, batch=5)


@pytest.mark.parametrize("variant", ["simd", "avx2", "portable"])
def test_residual_cnn(variant):
    _check(residual_cnn(), variant, batch=4)


@pytest.mark.parametrize("variant", ["simd", "avx2", "portable"])
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_converted_digits_models(name, variant):
    _check(boldc.convert(EXAMPLES / f"{name}.onnx"), variant, batch=9)


@pytest.mark.parametrize("variant", ["simd", "portable"])
@pytest.mark.parametrize("name,batch", [("vgg_small", 2), ("resnet18", 1)])
def test_converted_large_models(large_models, name, batch, variant):
    _check(large_models[name], variant, batch=batch)


@pytest.mark.parametrize("variant", ["simd", "avx2", "portable"])
@pytest.mark.parametrize("batch", [1, 3])
def test_digits_cnn_with_a_fixed_batch(batch, variant):
    """Converted with a fixed input shape (no batch symbol): every sample is computed,
    not only the first (the kernels take the batch from the shapes)."""
    m = boldc.convert(EXAMPLES / "digits_cnn.onnx", input_shapes={"x": [batch, 1, 8, 8]})
    assert m.function().args[0].type.is_static
    _check(m, variant, batch, seed=4)


def test_digits_cnn_accuracy_path_is_bit_exact_on_real_digits():
    """The shipped digits CNN on the real digits images: the outputs (float logits from
    Boolean features) agree with the interpreter, and so do the predicted classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:200] / 16.0).astype(np.float32)[:, None]
    m = boldc.convert(EXAMPLES / "digits_cnn.onnx")
    got = boldc.compile(m, max_batch=64).infer(x)
    want = boldc.interpret(m, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert np.array_equal(got.argmax(1), want.argmax(1))


# --- the CompiledModel API ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn():
    return boldc.load(GOLDEN / "boolean_cnn.bir")


def test_infer_splits_batches_larger_than_max_batch(cnn):
    cm = boldc.compile(cnn, max_batch=4)
    x = _input(cnn, 11, seed=3)
    whole = cm.infer(x)
    assert whole.shape == (11, 10)
    assert np.array_equal(whole, np.concatenate([cm.infer(x[i:i + 3]) for i in range(0, 11, 3)]))
    np.testing.assert_allclose(whole, boldc.interpret(cnn, x), rtol=1e-5, atol=1e-4)
    with pytest.raises(BoldcError, match="max_batch"):
        cm.run("forward", [x])


def test_two_contexts_and_two_models_live_in_one_process(cnn):
    a, b = boldc.compile(cnn), boldc.compile(cnn)
    mlp = boldc.compile(boldc.load(GOLDEN / "boolean_mlp.bir"))
    x = _input(cnn, 3)
    before = a.infer(x)
    w = b.get_param("conv2.w")
    b.set_param("conv2.w", ~w)
    assert np.array_equal(a.infer(x), before), "changing one context's params changed another's"
    assert not np.array_equal(b.infer(x), before)
    changed = cnn.copy()
    changed.param("conv2.w").data = ~w
    np.testing.assert_allclose(b.infer(x), boldc.interpret(changed, x), rtol=1e-5, atol=1e-4)
    assert mlp.infer(np.ones((2, 64), np.float32)).shape == (2, 10)


def test_params_round_trip(cnn):
    cm = boldc.compile(cnn)
    for name, p in cnn.params.items():
        got = cm.get_param(name)
        assert got.dtype == p.data.dtype and np.array_equal(got, p.data), name
    with pytest.raises(BoldcError, match="no param"):
        cm.get_param("nope")
    with pytest.raises(BoldcError, match="bool array"):
        cm.set_param("conv2.w", np.zeros((16, 8, 3, 3), np.float32))
    with pytest.raises(BoldcError, match="shape"):
        cm.set_param("conv2.w", np.zeros((16, 8, 3), bool))


def test_reused_arena_gives_the_trace_build_results(cnn):
    x = _input(cnn, 6, seed=5)
    planned, traced = boldc.compile(cnn), boldc.compile(cnn, trace=True)
    assert planned.arena_bytes < traced.arena_bytes
    assert np.array_equal(planned.infer(x), traced.infer(x))


def _planned(name: str):
    """(module, program) of a golden model, the residual CNN or a training step (whose
    signal kernels work in place), planned for a batch of 7 without building."""
    if name.endswith("_step"):
        build = {"mlp_step": lambda: digits_mlp(0), "cnn_step": lambda: small_cnn("xor", "neutral")}[name]
        module = training_module(build(), TrainOptions())
    else:
        module = residual_cnn() if name == "residual_cnn" else boldc.load(GOLDEN / f"{name}.bir")
    return module, generate(module, Options(max_batch=7))


@pytest.mark.parametrize("name", ["boolean_cnn", "boolean_mlp", "float_mlp", "residual_cnn", "mlp_step", "cnn_step"])
def test_arena_plan_never_overlaps_live_buffers(name):
    """Liveness computed by the test from each function (backend_check.arena_problems),
    not by the planner; the shipped builds of the model tests are checked the same way."""
    module, program = _planned(name)
    for fname, code in program.functions.items():
        assert not arena_problems(program, module, fname)
        assert code.arena_bytes <= program.arena_bytes
    if name.endswith("_step"):  # the in-place exception is exercised: some results take an operand's bytes
        slots = program.functions["train_step"].slots
        assert any(slots[id(r)].buffer is slots[id(o)].buffer for op in module.function("train_step").ops
                   for r in op.results for o in op.operands if id(o) in slots)


def test_arena_check_finds_a_buffer_reused_while_live():
    """The planted liveness bug's shape: the residual CNN's first sum (op 2), read by
    op 3 and again by the add at op 5, given the bytes of op 4's result."""
    module, program = _planned("residual_cnn")
    fn, slots = module.function(), program.functions["forward"].slots
    first_sum, second = fn.ops[2].results[0], fn.ops[4].results[0]
    assert [op.name for op in fn.ops[2:6]] == ["bconv2d", "threshold", "bconv2d", "add"]
    slots[id(second)].buffer.offset = slots[id(first_sum)].buffer.offset
    problems = arena_problems(program, module, "forward")
    assert problems and f"{first_sum.ref} (ops 2..5" in problems[0] and second.ref in problems[0], problems


def test_threads_build_matches_single_thread(cnn):
    x = _input(cnn, 8, seed=9)
    one = boldc.compile(cnn, threads=1)
    two = boldc.compile(cnn, threads=2)
    assert "openmp=yes" in two.build_info
    two.set_threads(2)
    assert np.array_equal(one.infer(x), two.infer(x))
    with pytest.raises(BoldcError, match="threads"):
        two.set_threads(3)


def test_user_errors(cnn, monkeypatch, tmp_path):
    with pytest.raises(BoldcError, match="need train=True"):
        boldc.compile(cnn, eta=3.0)
    cm = boldc.compile(cnn)
    with pytest.raises(InterpretError, match="must be f32"):
        cm.infer(np.zeros((2, 1, 8, 9), np.float32))
    with pytest.raises(InterpretError, match="takes 1 inputs"):
        cm.infer([np.zeros((2, 1, 8, 8)), np.zeros(3)])
    with pytest.raises(BoldcError, match="unknown isa"):
        boldc.compile(cnn, isa="sparc")
    with pytest.raises(BoldcError, match="C identifier"):
        boldc.compile(cnn, name="my model")
    monkeypatch.setenv("CC", "no-such-compiler-here")
    with pytest.raises(BoldcError, match="no C compiler found"):
        boldc.compile(cnn, cache_dir=tmp_path)


@pytest.mark.parametrize("how", ["env", "argument"])
def test_an_unusable_build_cache_is_one_error_naming_it(cnn, monkeypatch, tmp_path, how):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cache = blocker / "cache"  # under a regular file: cannot be created, even by root
    if how == "env":
        monkeypatch.setenv("BOLDC_CACHE_DIR", str(cache))
        kwargs = {}
    else:
        kwargs = {"cache_dir": cache}
    # a name no other test builds, so that no extension of this process is reused
    with pytest.raises(BoldcError, match="cannot write the build cache") as info:
        boldc.compile(cnn, name=f"cache_probe_{how}", **kwargs)
    message = str(info.value)
    assert str(cache) in message and ("BOLDC_CACHE_DIR" if how == "env" else "cache_dir") in message
    assert "\n" not in message


def test_buffers_that_cannot_be_allocated_are_one_error(monkeypatch):
    from boldc.backend import model

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(model.np, "empty", no_memory)
    with pytest.raises(BoldcError, match="cannot allocate 5,000,000,000 bytes .* smaller max_batch"):
        model._aligned(5_000_000_000)


def test_ops_without_c_say_which_pass_to_run(cnn, monkeypatch):
    from boldc.backend.emitters import EMITTERS, NOT_EMITTED, MustLower

    monkeypatch.delitem(EMITTERS, "bconv2d")
    monkeypatch.setitem(NOT_EMITTED, "bconv2d", MustLower("run the 'example' pass first"))
    with pytest.raises(BoldcError, match=r"op 'bconv2d' \(%s2\) must be rewritten .* run the 'example' pass"):
        boldc.compile(cnn, fuse=False)
    # fused (the default), the error names the fused op and its part
    with pytest.raises(BoldcError, match=r"op 'fused' \(%h2\): part 0 \(bconv2d\) has no C .* 'example' pass"):
        boldc.compile(cnn)


def test_inference_compiles_forward_only_unless_asked(cnn, monkeypatch):
    """A module with another function whose ops have no C (a training step, say) still
    compiles for inference; asking for that function names the op that cannot be emitted."""
    from boldc.backend.emitters import EMITTERS, NOT_EMITTED, NoEmitter

    m = cnn.copy()
    fb = boldc.FunctionBuilder(m, "other", [("x", boldc.tensor("f32", "N", 4))])
    fb.ret(fb.op("relu", [fb.args[0]], name="r"))
    cm = boldc.compile(m)
    assert list(cm.program.functions) == ["forward"]
    both = boldc.compile(m, functions=["forward", "other"])
    assert np.array_equal(both.infer(np.array([[-1, 2, -3, 4]], np.float32), func="other"), [[0, 2, 0, 4]])
    monkeypatch.delitem(EMITTERS, "relu")
    monkeypatch.setitem(NOT_EMITTED, "relu", NoEmitter("a test says so"))
    boldc.compile(m)
    with pytest.raises(BoldcError, match=r"op 'relu' \(%r\) has no C implementation: a test says so"):
        boldc.compile(m, functions=["other"])
    with pytest.raises(BoldcError, match="no function @nope"):
        boldc.compile(m, functions=["nope"])


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


@pytest.mark.parametrize("isa,popcount,expect", [
    ("native", "builtin", "simd=avx512-vpopcntdq popcount=builtin"),  # "avx512-amx" on a CPU with AMX-INT8
    ("avx512", "builtin", "simd=avx512-vpopcntdq popcount=builtin"),
    ("avx2", "builtin", "simd=avx2 popcount=builtin"),
    ("portable", "builtin", "simd=portable popcount=builtin"),
    ("portable", "portable", "simd=portable popcount=portable"),
])
def test_build_variants_select_the_path_they_say(cnn, isa, popcount, expect):
    """The bit-exactness tests' variants must really run the kernels they are named after."""
    needs = {"native": {"avx512_vpopcntdq"}, "avx512": {"avx512_vpopcntdq", "avx512bw", "avx512vl"},
             "avx2": {"avx2", "fma", "popcnt"}}.get(isa, set())
    if not needs <= _cpu_flags():
        pytest.skip(f"this CPU lacks {sorted(needs - _cpu_flags())}: the {isa} build cannot run here")
    if isa == "native" and {"amx_tile", "amx_int8"} <= _cpu_flags():
        expect = expect.replace("avx512-vpopcntdq", "avx512-amx")
    cm = boldc.compile(cnn, isa=isa, popcount=popcount)
    assert cm.build_info.startswith(expect)
    x = _input(cnn, 5, seed=11)
    np.testing.assert_allclose(cm.infer(x), boldc.interpret(cnn, x), rtol=1e-5, atol=1e-4)
