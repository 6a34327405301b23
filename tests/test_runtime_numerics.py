"""The runtime's numeric kernels called directly (a cffi module of runtime/, built here per
ISA variant) against the interpreter's op definitions: bit for bit for everything that
reaches the integer signals (docs/training.md, "Integer signals"; issue 10).

Covered: bd_exp / bd_dtanh (common.exp_fixed, tanh_derivative), quantize_signal, the layer
gradients with integer signals (linear and conv, grad_x and grad_w, channel_sum), the
fixed-order double linear layers and f32-signal linear gradients (common.matmul_in_order),
softmax_xent_grad, flip_update with an i16 accumulator, and batchnorm_train with its
gradients (sequential per-channel sums). Inputs are odd shapes and adversarial values: ties
at .5, the largest magnitudes, saturation, zero and non-finite signals, subnormal scales, inputs
where numpy's exp and libm's differ.
"""

from __future__ import annotations

import math
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from boldc.backend import build
from boldc.errors import BoldcError
from boldc.ops import common, norm_ops
from boldc.ops.registry import lookup


def header_cdef() -> str:
    """What cffi reads of runtime/boldc_rt.h: its typedefs, enums and the prototypes of the
    runtime's functions (comments, preprocessor lines and the static inline functions, whose
    bodies cffi cannot read, removed), so this test declares nothing twice."""
    text = re.sub(r"/\*.*?\*/", "", build.runtime_text("boldc_rt.h"), flags=re.S)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    parts, at = [], 0
    while (start := text.find("static inline", at)) >= 0:
        parts.append(text[at:start])
        end, depth = text.index("{", start), 0
        while True:  # to the brace that closes the body
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
            end += 1
        at = end + 1
    return "".join(parts) + text[at:]


CDEF = header_cdef() + """
void t_exp(const double *x, double *y, long n);
void t_dtanh(const double *x, double *y, long n);
"""

# The header's inline functions, over arrays (the generated loops call them the same way).
HELPERS = """
#include "boldc_rt.h"
void t_exp(const double *x, double *y, long n) { for (long i = 0; i < n; ++i) y[i] = bd_exp(x[i]); }
void t_dtanh(const double *x, double *y, long n) { for (long i = 0; i < n; ++i) y[i] = bd_dtanh(x[i]); }
"""

F32, I8, I16, I32, B1 = 0, 1, 2, 3, 4
CODE = {np.float32: F32, np.int8: I8, np.int16: I16, np.int32: I32, np.bool_: B1}
ROUNDING = {"nearest": 0, "stochastic": 1, "log": 2}
THREADS = 2  # the OpenMP build runs every kernel with 1 and with this many threads


def _variants() -> list[tuple[str, str, bool]]:
    """(name, isa, openmp): the portable kernels, this machine's best (with OpenMP), and the
    AVX2 ones where this machine runs them besides."""
    out = [("portable", "portable", False), ("native", "native", True)]
    try:
        build.check_isa("avx2")
        if build.simd_path("native") != "avx2":
            out.append(("avx2", "avx2", False))
    except BoldcError:
        pass  # this CPU or compiler cannot run the AVX2 kernels: native and portable cover it
    return out


VARIANTS = _variants()


class Runtime:
    """One build of the runtime: ``lib``, ``ffi``, and the thread counts to try."""

    def __init__(self, name: str, isa: str, openmp: bool, directory: Path):
        import cffi

        src = directory / "src"
        src.mkdir()
        for f in build.RUNTIME_FILES:
            (src / f).write_text(build.runtime_text(f))
        flags = build.c_flags(isa, openmp=openmp) + build.WARN_FLAGS
        ffi = cffi.FFI()
        ffi.cdef(CDEF)
        modname = f"_rt_numerics_{name}"
        ffi.set_source(modname, HELPERS, sources=[str(src / f) for f in build.RUNTIME_SOURCES],
                       include_dirs=[str(src)], extra_compile_args=flags,
                       extra_link_args=["-fopenmp"] if openmp else [])
        so = ffi.compile(tmpdir=str(directory / "out"))
        sys.path.insert(0, str(Path(so).parent))
        try:
            module = __import__(modname)
        finally:
            sys.path.pop(0)
        self.ffi, self.lib = module.ffi, module.lib
        self.name = name
        self.threads = (1, THREADS) if openmp else (1,)
        self.info = self.ffi.string(self.lib.bd_build_info()).decode()

    def ptr(self, ctype: str, a: np.ndarray):
        """A pointer to a's bytes that keeps a alive (``ctype``: "float *", "void *", ...)."""
        item = "char" if ctype == "void *" else ctype.rstrip(" *")
        return self.ffi.from_buffer(f"{item}[]", a)

    def ex(self, n: int, threads: int):
        return self.ffi.new("bd_exec *", {"n": n, "threads": threads})

    def scratch(self, nbytes: int) -> np.ndarray:
        return np.zeros(max(int(nbytes), 1), np.uint8)


@pytest.fixture(scope="module", params=VARIANTS, ids=[v[0] for v in VARIANTS])
def rt(request, tmp_path_factory):
    name, isa, openmp = request.param
    runtime = Runtime(name, isa, openmp, tmp_path_factory.mktemp(f"rt_{name}"))
    if name == "native":
        assert runtime.info.startswith(f"simd={build.simd_path('native')}"), runtime.info
    return runtime


# --- helpers ------------------------------------------------------------------------------------


def evaluate(op: str, args: list[np.ndarray], **attrs) -> list[np.ndarray]:
    opdef = lookup(op)
    return opdef.evaluate(args, opdef.normalize_attrs(attrs))


def bits(a) -> np.ndarray:
    """The bit patterns of a float array (uint32 / uint64), for exact comparisons."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def assert_bits(c: np.ndarray, ref: np.ndarray, what: str) -> None:
    """Equal bit for bit (floats: NaN payloads aside, a NaN must meet a NaN)."""
    c, ref = np.asarray(c), np.asarray(ref)
    assert c.shape == ref.shape and c.dtype == ref.dtype, f"{what}: {c.shape} {c.dtype} vs {ref.shape} {ref.dtype}"
    if c.dtype.kind == "f":
        nan = np.isnan(ref)
        bad = (np.isnan(c) != nan) | (~nan & (bits(c) != bits(ref)))
    else:
        bad = c != ref
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} differ, first at {at}: C {c[at]!r}, "
                             f"interpreter {ref[at]!r}")


def pack_bits(b: np.ndarray) -> np.ndarray:
    """b1 storage: bits along the last axis in 64-bit words (element c in bit c % 64 of word c / 64)."""
    d = b.shape[-1]
    words = -(-d // 64)
    flat = np.zeros(b.shape[:-1] + (words * 64,), np.bool_)
    flat[..., :d] = b
    packed = np.packbits(flat, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view(np.uint64).reshape(b.shape[:-1] + (words,))


def nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def f32(v: float) -> np.float32:
    return np.float32(v)


# --- exp and the tanh derivative ---------------------------------------------------------------


def exp_inputs(rng) -> np.ndarray:
    """Arguments across exp's range, its ends (underflow through the subnormals, overflow),
    halves of ln 2 (rint ties), non-finite values, and arguments where numpy's exp and the C
    library's differ in the last bit."""
    wide = rng.uniform(-760.0, 720.0, 20000)
    small = rng.standard_normal(20000) * 4.0
    ties = (np.arange(-1100, 1030) + 0.5) * math.log(2.0)
    ends = np.array([0.0, -0.0, -745.1332191019412, -745.1332191019411, -744.44007, -708.3964185322641,
                     -708.39641853226, 709.782712893384, 709.7827128933841, 709.79, 710.0, 710.5, -746.0,
                     -746.5, -1e308, 1e308, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e-300, -1e-17])
    x = np.concatenate([wide, small, ties, ends])
    libm = np.array([math.exp(v) if v < 709.78 else math.inf for v in small])
    differ = small[np.exp(small) != libm]
    assert differ.size > 100, "expected arguments where numpy's exp and libm's differ"
    return np.concatenate([x, differ])


def test_exp_is_exp_fixed(rt):
    x = exp_inputs(np.random.default_rng(0))
    y = np.empty_like(x)
    rt.lib.t_exp(rt.ptr("double *", x), rt.ptr("double *", y), x.size)
    with np.errstate(invalid="ignore"):
        assert_bits(y, common.exp_fixed(x), "bd_exp")


def test_dtanh_is_tanh_derivative(rt):
    rng = np.random.default_rng(1)
    u = np.concatenate([exp_inputs(rng) / -2.0, rng.standard_normal(20000) * 3.0, rng.uniform(-400, 400, 5000)])
    y = np.empty_like(u)
    rt.lib.t_dtanh(rt.ptr("double *", u), rt.ptr("double *", y), u.size)
    with np.errstate(invalid="ignore"):
        ref = common.tanh_derivative(u)
    assert_bits(y, ref, "bd_dtanh")
    with np.errstate(invalid="ignore"):
        libm = np.array([1.0 - math.tanh(v) ** 2 for v in u[np.isfinite(u)][:20000]])
    assert (libm != ref[np.isfinite(u)][:20000]).any(), "libm's tanh gives other bits: the case this guards"


def test_threshold_grad_tanh_through_bd_dtanh(rt):
    """The emitted threshold backward, (float)(dy * bd_dtanh(alpha * (x - tau))), is the
    interpreter's threshold_grad."""
    rng = np.random.default_rng(2)
    dy = (rng.standard_normal((5, 7, 3, 3)) * 10).astype(np.float32)
    x = (rng.standard_normal((5, 7, 3, 3)) * 40).astype(np.float32)
    x.flat[:6] = [0.0, -0.0, 1e30, -1e30, np.nan, np.inf]
    tau = rng.standard_normal(7).astype(np.float32)
    alpha = 0.173
    u = alpha * (x.astype(np.float64) - tau.astype(np.float64).reshape(1, -1, 1, 1))
    d = np.empty(u.size)
    rt.lib.t_dtanh(rt.ptr("double *", np.ascontiguousarray(u.ravel())), rt.ptr("double *", d), u.size)
    with np.errstate(invalid="ignore"):
        c = (dy.astype(np.float64) * d.reshape(u.shape)).astype(np.float32)
        ref = evaluate("threshold_grad", [dy, x, tau], mode="tanh", alpha=alpha)[0]
    assert_bits(c, ref, "threshold_grad")


# --- quantize_signal ----------------------------------------------------------------------------


def quantize_c(rt, z: np.ndarray, threads: int, **attrs):
    """bd_quantize_signal on z (NCHW maps are stored channels-last), results in logical order."""
    bits_, rounding = attrs.get("bits", 16), attrs.get("rounding", "nearest")
    if z.ndim == 4:
        store, hw, c = nhwc(z), z.shape[2] * z.shape[3], z.shape[1]
    else:
        store, hw, c = np.ascontiguousarray(z), 1, int(np.prod(z.shape[1:]))
    g = rt.ffi.new("bd_quant *", {"bits": bits_, "rounding": ROUNDING[rounding], "seed": attrs.get("seed", 0) % 2**64,
                                  "stream": attrs.get("stream", 0) % 2**64, "hw": hw, "C": c, "max_threads": threads})
    q = np.zeros(store.shape, np.int16 if bits_ > 8 else np.int8)
    scale = np.zeros((), np.float32)
    step = np.array(attrs.get("step", 0), np.int32)
    rt.lib.bd_quantize_signal(g, rt.ex(z.shape[0], threads), z.shape[0], rt.ptr("float *", store),
                              rt.ptr("int32_t *", step), rt.ptr("void *", q), rt.ptr("float *", scale))
    return (nchw(q) if z.ndim == 4 else q), scale


def signals(rng) -> list[np.ndarray]:
    """Adversarial signals: ties at .5 of the 16-bit grid, a maximum exactly a power of two or
    just below one, the f32 extremes, subnormals (the scale stops at 2^-126), zeros, -0."""
    ties = ((rng.integers(-32767, 32767, (6, 5)) + 0.5) * 2.0 ** -13).astype(np.float32)
    ties[0, 0] = 4.0  # max |z| = 2^2: f = 1/2, so the grid is 2^(3-15)
    below = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    below[0, 0, 0, 0] = np.nextafter(np.float32(8), np.float32(0))
    huge = (rng.standard_normal((4, 9)) * 1e38).astype(np.float32)
    huge[1, 1] = np.finfo(np.float32).max
    tiny = (rng.standard_normal((2, 3, 2, 2)) * 1e-42).astype(np.float32)  # subnormal f32
    small = (rng.standard_normal((5, 7)) * 2.0 ** -120).astype(np.float32)
    zeros = np.zeros((3, 4), np.float32)
    zeros[1, 2] = -0.0
    odd = rng.standard_normal((1, 3, 1, 7)).astype(np.float32) * 1000
    return [ties, below, huge, tiny, small, zeros, odd, (rng.standard_normal((64, 33)) * 3).astype(np.float32)]


QUANT_MODES = [dict(bits=16), dict(bits=8), dict(bits=4), dict(bits=4, rounding="log"),
               dict(bits=16, rounding="stochastic", seed=7, stream=3, step=11),
               dict(bits=8, rounding="stochastic", seed=-5, stream=2**64 - 1, step=-3)]


@pytest.mark.parametrize("mode", QUANT_MODES, ids=lambda m: "-".join(str(v) for v in m.values()))
def test_quantize_signal(rt, mode):
    rng = np.random.default_rng(3)
    attrs = {k: v for k, v in mode.items() if k != "step"}
    for z in signals(rng):
        step = [np.array(mode.get("step", 0), np.int32)] if mode.get("rounding") == "stochastic" else []
        q_ref, s_ref = evaluate("quantize_signal", [z] + step, **attrs)
        for threads in rt.threads:
            q, s = quantize_c(rt, z, threads, **mode)
            assert_bits(q, q_ref, f"q of {z.shape} {mode}")
            assert_bits(s, s_ref, f"scale of {z.shape} {mode}")


def test_quantize_signal_saturates_and_refuses_non_finite(rt):
    z = np.array([[0.99999994, -0.99999994, 0.5, 0.97]], np.float32)
    q, s = quantize_c(rt, z, 1, bits=4)
    assert_bits(q, evaluate("quantize_signal", [z], bits=4)[0], "4-bit q")
    assert q.max() == 7 and q.min() == -7  # 7.9999995 rounds to 8 units, clamped to the largest level
    for bad in (np.nan, np.inf, -np.inf):
        z = np.array([[1.0, bad, 2.0]], np.float32)
        q, s = quantize_c(rt, z, 1, bits=16)
        q_ref, s_ref = evaluate("quantize_signal", [z], bits=16)
        assert_bits(q, q_ref, "q of a non-finite signal")
        assert np.isnan(s) and np.isnan(s_ref)


def test_quantize_signal_stochastic_ties_and_index(rt):
    """The hash counts logical (NCHW) indices: a channels-last map must draw what numpy draws."""
    rng = np.random.default_rng(4)
    z = ((rng.integers(-200, 200, (2, 5, 3, 4)) + 0.5) * 2.0 ** -8).astype(np.float32)
    z[0, 0, 0, 0] = 1.0
    for step in (0, 1, 2**31 - 1):
        ref = evaluate("quantize_signal", [z, np.array(step, np.int32)], bits=16, rounding="stochastic", seed=123,
                       stream=9)[0]
        q, _ = quantize_c(rt, z, 1, bits=16, rounding="stochastic", seed=123, stream=9, step=step)
        assert_bits(q, ref, f"stochastic q at step {step}")


# --- layer gradients with integer signals --------------------------------------------------------


def int_signal(rng, shape, dtype) -> np.ndarray:
    """Integer signal values with the extremes of the type present (the bound of the exact sums)."""
    info = np.iinfo(dtype)
    q = rng.integers(info.min, info.max + 1, shape).astype(dtype)
    flat = q.reshape(-1)
    flat[: min(4, flat.size)] = [info.max, info.min, info.max, -info.max][: min(4, flat.size)]
    return q


SCALES = [2.0 ** -13, 2.0 ** -126, 2.0 ** -140, 1.0, 2.0 ** 100, math.nan]  # 2^-140: a subnormal f32


def _dy_scales(i: int) -> np.ndarray:
    return np.array(SCALES[i % len(SCALES)], np.float32)


# rows, K (inputs), M (outputs). The integer kernels' edges (bd_gemm.c): reductions (M for grad_x,
# rows for grad_w) of odd lengths (a partial group of 2 or 4 k) and across k-blocks (512 int16
# values, 1024 int8 ones), tiles of 8 rows x 32 columns cut by every size, many row blocks.
LINEAR_INT = [(1, 1, 1), (3, 65, 17), (7, 300, 63), (6, 130, 600), (9, 64, 1), (13, 97, 2101), (1031, 70, 19)]


def linear_grad_int(rt, which: str, g, rows: int, dy, other, ds, threads: int) -> np.ndarray:
    """bd_linear_grad_<which>_int (which: "x" or "w") on a b1 operand, its result."""
    shape = (rows, g.K) if which == "x" else (g.M, g.K)
    out = np.full(shape, np.nan, np.float32)
    scratch = rt.scratch(getattr(rt.lib, f"bd_linear_grad_{which}_int_scratch")(g))
    getattr(rt.lib, f"bd_linear_grad_{which}_int")(g, rt.ex(rows, threads), rows, rt.ptr("void *", dy),
                                                   rt.ptr("uint64_t *", pack_bits(other)), rt.ptr("float *", ds),
                                                   rt.ptr("float *", out), rt.ptr("unsigned char *", scratch))
    return out


def lgrad(rt, m: int, k: int, max_rows: int, dy_type: int, scale: float = 1.0, other=B1):
    return rt.ffi.new("bd_lgrad *", {"M": m, "K": k, "other_type": other, "scale": scale, "max_rows": max_rows,
                                     "max_threads": THREADS, "dy_type": dy_type})


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_linear_grads_int(rt, dtype):
    rng = np.random.default_rng(5)
    for i, (rows, k, m) in enumerate(LINEAR_INT):
        dy = int_signal(rng, (rows, m), dtype)
        w = rng.random((m, k)) < 0.5
        x = rng.random((rows, k)) < 0.5
        ds = _dy_scales(i)
        scale = [-1.0, 0.37, 1.0][i % 3]
        ref_x = evaluate("linear_grad_x", [dy, w, ds], scale=scale)[0]
        ref_w = evaluate("linear_grad_w", [dy, x, ds], scale=scale)[0]
        g = lgrad(rt, m, k, rows + 2, CODE[dtype], scale)
        for threads in rt.threads:
            assert_bits(linear_grad_int(rt, "x", g, rows, dy, w, ds, threads), ref_x,
                        f"linear_grad_x {rows}x{m}->{k} {dtype.__name__}")
            assert_bits(linear_grad_int(rt, "w", g, rows, dy, x, ds, threads), ref_w,
                        f"linear_grad_w {rows}x{m}, {k} {dtype.__name__}")


def test_linear_grad_w_int_wide_sums(rt):
    """Sums past 2^31 (i16 signals over 70000 rows, all at the largest level: the int64 path)."""
    rows, k, m = 70000, 3, 2
    dy = np.full((rows, m), 32767, np.int16)
    dy[::7, 1] = -32768
    x = np.ones((rows, k), np.bool_)
    x[::3, 2] = False
    ds = np.array(2.0 ** -15, np.float32)
    ref = evaluate("linear_grad_w", [dy, x, ds])[0]
    assert np.abs(ref).max() * 2.0 ** 15 > 2 ** 31  # the sums do need 64 bits
    g = lgrad(rt, m, k, rows, I16)
    assert rt.lib.bd_linear_grad_w_int_scratch(g) >= 8 * m * k  # the int64 accumulators
    for threads in rt.threads:
        assert_bits(linear_grad_int(rt, "w", g, rows, dy, x, ds, threads), ref, "linear_grad_w over 70000 rows")


def test_linear_grad_x_int_full_blocks(rt):
    """k-blocks at the float32 limit: 512 products of -32768 by -1 sum to 2^24 exactly."""
    rows, k, m = 3, 70, 1100
    dy = np.full((rows, m), -32768, np.int16)
    dy[1] = 32767
    dy[2, ::2] = -dy[2, ::2]
    w = np.zeros((m, k), np.bool_)
    w[:, 1::3] = True
    ds = np.array(1.0, np.float32)
    ref = evaluate("linear_grad_x", [dy, w, ds])[0]
    assert np.abs(ref).max() >= 2 ** 24
    g = lgrad(rt, m, k, rows, I16)
    for threads in rt.threads:
        assert_bits(linear_grad_int(rt, "x", g, rows, dy, w, ds, threads), ref, "linear_grad_x of extreme signals")


def test_linear_grad_int_empty_batch(rt):
    """No rows: dW = 0 (times the scale: NaN for a NaN scale)."""
    for ds in (np.array(0.5, np.float32), np.array(np.nan, np.float32)):
        dy, x = np.zeros((0, 5), np.int16), np.zeros((0, 9), np.bool_)
        ref = evaluate("linear_grad_w", [dy, x, ds], scale=-1.0)[0]
        g = lgrad(rt, 5, 9, 4, I16, -1.0)
        assert_bits(linear_grad_int(rt, "w", g, 0, dy, x, ds, 1), ref, "linear_grad_w of no rows")


# (N, C, H, W, M, kh, kw, stride, pad [t, l, b, r], dilation, groups)
CONVS = [(2, 3, 5, 5, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
         (1, 70, 4, 6, 130, 3, 3, (2, 1), (1, 0, 2, 1), (1, 1), 1),
         (3, 8, 7, 6, 6, 3, 2, (2, 2), (0, 1, 1, 0), (2, 1), 2),
         (2, 17, 3, 3, 65, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
         (4, 64, 6, 6, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
         (3, 5, 16, 14, 7, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # grad_w sums 672 pixels: two int16 k-blocks
         (2, 5, 24, 24, 12, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # 1152 pixels: two int8 k-blocks, 12 of 8 rows
         (1, 40, 5, 7, 150, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # grad_x sums 1350 taps: two int8 k-blocks
         (4, 6, 24, 24, 10, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1)]  # 2304 pixels: 5 row blocks of 512 for threads


def conv_case(case):
    n, c, h, w, m, kh, kw, stride, pad, dil, groups = case
    attrs = dict(stride=list(stride), pad=list(pad), dilation=list(dil), groups=groups)
    oh = (h + pad[0] + pad[2] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + pad[1] + pad[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    g = {"C": c, "H": h, "W": w, "M": m, "OH": oh, "OW": ow, "kh": kh, "kw": kw, "sh": stride[0], "sw": stride[1],
         "dh": dil[0], "dw": dil[1], "pt": pad[0], "pl": pad[1], "groups": groups}
    return attrs, g, (n, m, oh, ow)


@pytest.mark.parametrize("case", range(len(CONVS)))
def test_conv_grads_int(rt, case):
    rng = np.random.default_rng(6 + case)
    attrs, geo, dy_shape = conv_case(CONVS[case])
    n, c, h, w = CONVS[case][:4]
    m, kh, kw, groups = dy_shape[1], geo["kh"], geo["kw"], geo["groups"]
    for i, dtype in enumerate((np.int16, np.int8)):
        dy = int_signal(rng, dy_shape, dtype)
        wb = rng.random((m, c // groups, kh, kw)) < 0.5
        xb = rng.random((n, c, h, w)) < 0.5
        ds = _dy_scales(case + i)
        pad_value = [-1.0, 0.0, 1.0][(case + i) % 3]
        scale = [1.0, -1.0, 0.3][case % 3]
        ref_x = evaluate("conv2d_grad_x", [dy, wb, ds], input_hw=[h, w], scale=scale, **attrs)[0]
        ref_w = evaluate("conv2d_grad_w", [dy, xb, ds], kernel=[kh, kw], pad_value=pad_value, scale=scale, **attrs)[0]
        cfg = rt.ffi.new("bd_cgrad *", {**geo, "other_type": B1, "scale": scale, "pad_value": pad_value,
                                        "max_batch": n + 1, "max_threads": THREADS, "dy_type": CODE[dtype]})
        w_store = pack_bits(np.ascontiguousarray(wb.transpose(0, 2, 3, 1)))  # [M][kh][kw][Cg] bits
        x_store = pack_bits(nhwc(xb))
        for threads in rt.threads:
            dx = np.full((n, h, w, c), np.nan, np.float32)
            rt.lib.bd_conv2d_grad_x_int(cfg, rt.ex(n, threads), rt.ptr("void *", nhwc(dy)),
                                        rt.ptr("uint64_t *", w_store), rt.ptr("float *", ds), rt.ptr("float *", dx),
                                        rt.ptr("unsigned char *", rt.scratch(rt.lib.bd_conv2d_grad_x_int_scratch(cfg))))
            assert_bits(nchw(dx), ref_x, f"conv2d_grad_x case {case} {dtype.__name__}")
            dw = np.full((m, kh, kw, c // groups), np.nan, np.float32)
            rt.lib.bd_conv2d_grad_w_int(cfg, rt.ex(n, threads), rt.ptr("void *", nhwc(dy)),
                                        rt.ptr("uint64_t *", x_store), rt.ptr("float *", ds), rt.ptr("float *", dw),
                                        rt.ptr("unsigned char *", rt.scratch(rt.lib.bd_conv2d_grad_w_int_scratch(cfg))))
            assert_bits(np.ascontiguousarray(dw.transpose(0, 3, 1, 2)), ref_w,
                        f"conv2d_grad_w case {case} {dtype.__name__}")


def test_channel_sum_int(rt):
    rng = np.random.default_rng(7)
    for shape, dtype in (((6, 300), np.int16), ((3, 5, 4, 7), np.int8), ((2, 130, 3), np.int16), ((1, 1), np.int8)):
        dy = int_signal(rng, shape, dtype)
        for i in range(3):
            ds = _dy_scales(i + 2)
            ref = evaluate("channel_sum", [dy, ds], axis=1)[0]
            if dy.ndim == 4:  # channels-last: [N*H*W][C][1]
                store, outer, inner = nhwc(dy), shape[0] * shape[2] * shape[3], 1
            else:
                store, outer, inner = dy, shape[0], int(np.prod(shape[2:]))
            for threads in rt.threads:
                y = np.full(shape[1], np.nan, np.float32)
                rt.lib.bd_channel_sum_int(rt.ex(shape[0], threads), outer, shape[1], inner, rt.ptr("void *", store),
                                          CODE[dtype], rt.ptr("float *", ds), rt.ptr("float *", y))
                assert_bits(y, ref, f"channel_sum {shape}")


# --- fixed-order double: linear layers and f32-signal linear gradients ---------------------------


def wide_floats(rng, shape) -> np.ndarray:
    """f32 values over many binades, with cancellations: the sum's order shows in its bits."""
    v = rng.standard_normal(shape) * np.exp2(rng.integers(-20, 20, shape))
    return v.astype(np.float32)


def operand(rng, shape, dtype) -> np.ndarray:
    if dtype is np.bool_:
        return rng.random(shape) < 0.5
    if dtype is np.float32:
        return wide_floats(rng, shape)
    info = np.iinfo(dtype)
    v = rng.integers(info.min, info.max, shape, dtype=np.int64).astype(dtype)
    return v  # i32 beyond 2^24: rounded to f32 by the forward layer, exact in the gradients


def stored(a: np.ndarray) -> np.ndarray:
    return pack_bits(a) if a.dtype == np.bool_ else np.ascontiguousarray(a)


LINEAR_F = [(1, 1, 1), (3, 33, 10), (6, 130, 65), (5, 7, 300)]  # rows, K, M


@pytest.mark.parametrize("x_dtype", [np.float32, np.bool_, np.int8, np.int16, np.int32])
def test_linear_forward_in_order(rt, x_dtype):
    rng = np.random.default_rng(8)
    for rows, k, m in LINEAR_F:
        x = operand(rng, (rows, k), x_dtype)
        for w_dtype, op, logic in ((np.float32, "linear", "xnor"), (np.bool_, "mlinear", "xnor"),
                                   (np.bool_, "mlinear", "xor")):
            if op == "mlinear" and x_dtype is np.bool_:
                continue  # mlinear takes a real input
            w = operand(rng, (m, k), w_dtype)
            for bias in (None, wide_floats(rng, (m,))):
                args = [x, w] + ([bias] if bias is not None else [])
                ref = evaluate(op, args, **({"logic": logic} if op == "mlinear" else {}))[0]
                g = rt.ffi.new("bd_flinear *", {"K": k, "M": m, "x_type": CODE[x_dtype], "w_type": CODE[w_dtype],
                                                "sign": 1 if logic == "xnor" else -1, "max_threads": THREADS})
                for threads in rt.threads:
                    y = np.full((rows, m), np.nan, np.float32)
                    rt.lib.bd_flinear_run(g, rt.ex(rows, threads), rows, rt.ptr("void *", stored(x)),
                                          rt.ptr("void *", stored(w)),
                                          rt.ffi.NULL if bias is None else rt.ptr("float *", bias),
                                          rt.ptr("float *", y),
                                          rt.ptr("unsigned char *", rt.scratch(rt.lib.bd_flinear_scratch(g))))
                    assert_bits(y, ref, f"{op} {logic} x {x_dtype.__name__} {rows}x{k}->{m} bias={bias is not None}")


def test_linear_forward_signed_zero(rt):
    """An all-zero sum of an xor layer without bias is -0 (the sign multiplies the sum)."""
    x = np.zeros((2, 5), np.float32)
    w = np.ones((3, 5), np.bool_)
    ref = evaluate("mlinear", [x, w], logic="xor")[0]
    g = rt.ffi.new("bd_flinear *", {"K": 5, "M": 3, "x_type": F32, "w_type": B1, "sign": -1, "max_threads": 1})
    y = np.zeros((2, 3), np.float32)
    rt.lib.bd_flinear_run(g, rt.ex(2, 1), 2, rt.ptr("void *", x), rt.ptr("void *", pack_bits(w)), rt.ffi.NULL,
                          rt.ptr("float *", y), rt.ptr("unsigned char *", rt.scratch(rt.lib.bd_flinear_scratch(g))))
    assert np.signbit(ref).all()
    assert_bits(y, ref, "mlinear xor of zeros")


@pytest.mark.parametrize("other", [np.float32, np.bool_, np.int8, np.int16, np.int32])
def test_linear_grads_f32_in_order(rt, other):
    rng = np.random.default_rng(9)
    for rows, k, m in LINEAR_F:
        dy = wide_floats(rng, (rows, m))
        dy.flat[0] = -0.0
        x = operand(rng, (rows, k), other)
        scale = -1.0 if rows % 2 else 0.7
        g = rt.ffi.new("bd_lgrad *", {"M": m, "K": k, "other_type": CODE[other], "scale": scale, "max_rows": rows,
                                      "max_threads": THREADS})
        ref_w = evaluate("linear_grad_w", [dy, x], scale=scale)[0]
        w = operand(rng, (m, k), other) if other in (np.float32, np.bool_) else None
        for threads in rt.threads:
            dw = np.full((m, k), np.nan, np.float32)
            rt.lib.bd_linear_grad_w(g, rt.ex(rows, threads), rows, rt.ptr("float *", dy), rt.ptr("void *", stored(x)),
                                    rt.ptr("float *", dw),
                                    rt.ptr("unsigned char *", rt.scratch(rt.lib.bd_linear_grad_w_scratch(g))))
            assert_bits(dw, ref_w, f"linear_grad_w f32 x {other.__name__} {rows}x{m}, {k}")
            if w is None:
                continue  # grad_x takes f32 or b1 weights
            dx = np.full((rows, k), np.nan, np.float32)
            rt.lib.bd_linear_grad_x(g, rt.ex(rows, threads), rows, rt.ptr("float *", dy), rt.ptr("void *", stored(w)),
                                    rt.ptr("float *", dx),
                                    rt.ptr("unsigned char *", rt.scratch(rt.lib.bd_linear_grad_x_scratch(g))))
            assert_bits(dx, evaluate("linear_grad_x", [dy, w], scale=scale)[0],
                        f"linear_grad_x f32 w {other.__name__} {rows}x{m}->{k}")


# --- softmax cross-entropy gradient ---------------------------------------------------------------


def test_softmax_xent_grad(rt):
    rng = np.random.default_rng(10)
    cases = [(rng.standard_normal((64, 10)) * 5).astype(np.float32),
             (rng.standard_normal((3, 1000)) * 30).astype(np.float32),
             np.array([[0.0, 0.0, 0.0], [1e30, -1e30, 0.0], [-800.0, -1.0, -1.0], [3.0, 3.0, -0.0]], np.float32),
             np.array([[1.0, np.inf, 0.0], [np.nan, 1.0, 2.0], [-np.inf, -np.inf, 1.0]], np.float32),
             np.zeros((0, 4), np.float32), np.array([[2.5]], np.float32)]
    for z in cases:
        labels = rng.integers(0, z.shape[1], z.shape[0]).astype(np.int32)
        for reduction in ("mean", "sum"):
            with np.errstate(invalid="ignore"):
                ref = evaluate("softmax_xent_grad", [z, labels], reduction=reduction)[0]
            dz = np.full(z.shape, 7.0, np.float32)
            rt.lib.bd_softmax_xent_grad(z.shape[0], z.shape[1], rt.ptr("float *", z), rt.ptr("int32_t *", labels),
                                        int(reduction == "mean"), rt.ptr("float *", dz))
            assert_bits(dz, ref, f"softmax_xent_grad {z.shape} {reduction}")


# --- flip_update with an i16 accumulator ----------------------------------------------------------


def flip_case(rng, shape, m_step):
    w = rng.random(shape) < 0.5
    m = rng.integers(-32767, 32768, shape).astype(np.int16)
    q = (rng.standard_normal(shape) * np.exp2(rng.integers(-12, 6, shape))).astype(np.float32)
    flat_q, flat_m = q.reshape(-1), m.reshape(-1)
    # ties at half a unit (after beta * M = 0), huge and non-finite signals (saturation)
    planted = [0.5 * m_step, 1.5 * m_step, -2.5 * m_step, 1e30, -np.inf, np.nan][: flat_q.size]
    flat_m[: len(planted)] = 0
    flat_q[: len(planted)] = planted
    return w, m, q


@pytest.mark.parametrize("m_step", [2.0 ** -10, 2.0 ** -14, 0.5])
def test_flip_update_i16(rt, m_step):
    rng = np.random.default_rng(11)
    for shape, counter in (((7, 3, 3, 70), 5), ((130, 65), 2**31 - 3), ((1, 1), 0)):
        w, m, q = flip_case(rng, shape, m_step)
        beta, eta = np.array(0.875, np.float32), np.array(1.0 if m_step == 0.5 else 3.0, np.float32)
        sat = np.array(counter, np.int32)
        with np.errstate(invalid="ignore"):
            w_ref, m_ref, beta_ref, sat_ref = evaluate("flip_update", [w, m, beta, q, eta, sat], m_step=m_step)
        nan = np.isnan(q) | np.isnan((beta * (m.astype(np.float32) * np.float32(m_step))).astype(np.float32) +
                                     (eta * q).astype(np.float32))
        for threads in rt.threads:
            w_c = pack_bits(w)
            m_c, beta_c, sat_c = m.copy(), beta.copy(), sat.copy()
            runs = int(np.prod(shape[:-1]))
            rt.lib.bd_flip_update_i16(rt.ex(1, threads), runs, shape[-1], rt.ptr("uint64_t *", w_c),
                                      rt.ptr("int16_t *", m_c), rt.ptr("float *", beta_c), rt.ptr("float *", q),
                                      rt.ptr("float *", eta), m_step, rt.ptr("int32_t *", sat_c))
            assert_bits(w_c, pack_bits(w_ref), f"flipped weights {shape}")
            assert_bits(m_c[~nan], m_ref[~nan], f"accumulator {shape}")  # numpy's NaN -> int16 is undefined
            assert (m_c[nan] == 0).all()
            assert_bits(beta_c, beta_ref, "beta")
            assert_bits(sat_c, sat_ref, "saturation counter")
        if q.size >= 6:  # the planted 1e30 and -inf saturate (the counter stops at 2^31 - 1)
            assert sat_ref == min(counter + 2, 2**31 - 1) or sat_ref > counter + 2


# --- batchnorm in training ---------------------------------------------------------------------------


BN_SHAPES = [(16, 5), (300, 1), (6, 3, 4, 4), (3, 1, 20, 15), (2, 9, 17, 17), (1, 1, 3, 3), (5, 3, 200),
             (7, 2, 1, 1),
             (3, 40, 25, 23), (70, 33, 30)]  # over 65536 values and 16 channels: blocks split across threads


def plant_cancellations(x: np.ndarray) -> None:
    """+-2^60 at a few places of channel 0: the small values summed next to them are lost or
    kept depending on the order of the sum, so the statistics show it in f32."""
    channel = np.moveaxis(x, 1, 0)[0].reshape(-1)  # logical order: sample, then position
    n = channel.size
    for i, v in zip((0, 3, 9, n // 2 + 1, n - 2), (2.0 ** 60, -(2.0 ** 60), 2.0 ** 60, -(2.0 ** 60), 1.0)):
        channel[i % n] = v
    np.moveaxis(x, 1, 0)[0] = channel.reshape(np.moveaxis(x, 1, 0)[0].shape)


def bn_store(a: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Storage (channels-last for rank 4), inner, channels_last."""
    if a.ndim == 4:
        return nhwc(a), a.shape[2] * a.shape[3], 1
    return np.ascontiguousarray(a), int(np.prod(a.shape[2:])), 0


def unstore(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    return nchw(a) if like.ndim == 4 else a


@pytest.mark.parametrize("shape", BN_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("x_dtype", [np.float32, np.int16])
def test_batchnorm_train(rt, shape, x_dtype):
    rng = np.random.default_rng(12)
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(np.float32) if x_dtype is np.float32 else \
        rng.integers(-500, 500, shape).astype(np.int16)
    if x_dtype is np.float32:
        plant_cancellations(x)
    c = shape[1]
    scale, bias = wide_floats(rng, (c,)), wide_floats(rng, (c,))
    rmean, rvar = wide_floats(rng, (c,)), np.abs(wide_floats(rng, (c,)))
    dy = wide_floats(rng, shape)
    attrs = dict(epsilon=1e-5, momentum=0.1)
    y_ref, mean_ref, var_ref = evaluate("batchnorm_train", [x, scale, bias, rmean, rvar], **attrs)
    dx_ref = evaluate("batchnorm_train_grad_x", [dy, x, scale], epsilon=1e-5)[0]
    ds_ref = evaluate("batchnorm_train_grad_scale", [dy, x], epsilon=1e-5)[0]
    xs, inner, last = bn_store(x)
    dys = bn_store(dy)[0]
    g = rt.ffi.new("bd_bnorm *", {"C": c, "inner": inner, "channels_last": last, "x_type": CODE[x_dtype],
                                  "epsilon": 1e-5, "momentum": 0.1, "max_batch": shape[0] + 1,
                                  "max_threads": THREADS})
    for threads in rt.threads:
        ex = rt.ex(shape[0], threads)
        scratch = rt.ptr("unsigned char *", rt.scratch(rt.lib.bd_batchnorm_scratch(g)))
        y = np.full(xs.shape, np.nan, np.float32)
        rm, rv = rmean.copy(), rvar.copy()
        rt.lib.bd_batchnorm_train(g, ex, rt.ptr("void *", xs), rt.ptr("float *", scale), rt.ptr("float *", bias),
                                  rt.ptr("float *", rm), rt.ptr("float *", rv), rt.ptr("float *", y), scratch)
        assert_bits(unstore(y, x), y_ref, f"batchnorm_train y {shape}")
        assert_bits(rm, mean_ref, "running mean")
        assert_bits(rv, var_ref, "running var")
        dx = np.full(xs.shape, np.nan, np.float32)
        rt.lib.bd_batchnorm_train_grad_x(g, ex, rt.ptr("float *", dys), rt.ptr("void *", xs),
                                         rt.ptr("float *", scale), rt.ptr("float *", dx), scratch)
        assert_bits(unstore(dx, x), dx_ref, f"batchnorm_train_grad_x {shape}")
        ds = np.full(c, np.nan, np.float32)
        rt.lib.bd_batchnorm_train_grad_scale(g, ex, rt.ptr("float *", dys), rt.ptr("void *", xs),
                                             rt.ptr("float *", ds), scratch)
        assert_bits(ds, ds_ref, f"batchnorm_train_grad_scale {shape}")



def sequential_sums(a: np.ndarray) -> list[float]:
    """Per channel (axis 1): 0.0 + v0 + v1 + ..., one Python float (double) addition at a time,
    sample by sample and within a sample position by position (row-major)."""
    sums = []
    for c in range(a.shape[1]):
        s = 0.0
        for b in range(a.shape[0]):
            for at in np.ndindex(a.shape[2:]):
                s = s + float(a[(b, c) + at])
        sums.append(s)
    return sums


@pytest.mark.parametrize("shape", [(4, 3, 9, 13), (500, 1), (5, 2, 40)], ids=lambda s: "x".join(map(str, s)))
def test_batchnorm_sums_are_sequential_not_pairwise(shape):
    """The interpreter's batch statistics and gradient sums are the plain sequential double
    sums of norm_ops' docstring, not numpy's pairwise ones: the planted +-2^60 make the two
    orders differ on these shapes (checked), and only the sequential one is accepted. (In the
    messages "C" is the interpreter, "interpreter" the Python loops.)"""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(np.float32)
    dy = wide_floats(rng, shape)
    plant_cancellations(x)
    plant_cancellations(dy)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    chan = (1, -1) + (1,) * (x.ndim - 2)
    n = x.size // shape[1]
    sum_x = np.array(sequential_sums(x64))
    mean = sum_x / n
    var = np.array(sequential_sums((x64 - mean.reshape(chan)) ** 2)) / n
    invstd = 1.0 / np.sqrt(var + 1e-5)
    xhat = (x64 - mean.reshape(chan)) * invstd.reshape(chan)
    sum_dy = np.array(sequential_sums(dy64)).reshape(chan)
    sum_dy_xhat = np.array(sequential_sums(dy64 * xhat)).reshape(chan)
    pairwise = np.moveaxis(x64, 1, 0).reshape(shape[1], -1).sum(axis=1)
    assert pairwise[0] != sum_x[0], "the shape is too small for numpy's pairwise order to show"

    got_mean, got_var, got_invstd, got_n = norm_ops.batch_statistics(x, 1e-5)
    assert got_n == n
    assert_bits(got_mean, mean, "mean")
    assert_bits(got_var, var, "variance")
    assert_bits(got_invstd, invstd, "1 / sqrt(var + eps)")
    # dscale: dy = 1 where x is +-2^60 makes dy·x̂ cancel exactly there, as x does in Σx
    dy_s = dy.copy()
    np.moveaxis(dy_s, 1, 0)[0][np.moveaxis(np.abs(x), 1, 0)[0] == 2.0 ** 60] = 1.0
    ds = evaluate("batchnorm_train_grad_scale", [dy_s, x], epsilon=1e-5)[0]
    assert_bits(ds, np.array(sequential_sums(dy_s.astype(np.float64) * xhat), np.float32),
                "batchnorm_train_grad_scale")
    scale = wide_floats(rng, (shape[1],))
    k = (scale.astype(np.float64) * invstd / n).reshape(chan)
    dx = evaluate("batchnorm_train_grad_x", [dy, x, scale], epsilon=1e-5)[0]
    want = k * (n * dy64 - sum_dy - xhat * sum_dy_xhat)
    assert_bits(dx, want.astype(np.float32), "batchnorm_train_grad_x")


def test_float_bits_helper_sees_a_flipped_bit():
    a = np.array([1.0, 2.0], np.float32)
    b = a.copy()
    b.view(np.uint32)[1] ^= 1
    with pytest.raises(AssertionError, match="1 of 2 differ"):
        assert_bits(b, a, "planted")
    assert struct.pack("<f", b[1]) != struct.pack("<f", a[1])
