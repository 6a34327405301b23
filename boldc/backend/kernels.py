"""C emission helpers the ops' emitters call (``emitters/forward.py``; docs/backend.md, "Emission").

Two kinds of emission:

- calls into the hand-written runtime (runtime/*.c) for the heavy layers: Boolean
  and float convolution/linear, the threshold packer. The config structs are
  filled here, and the arena scratch each call needs is computed here with the
  same formula as the runtime's ``bd_*_scratch`` (the generated ``*_init`` checks
  the two agree, so a drift is caught at the first run, never a buffer overrun);
- loop nests over output elements (``map``) for elementwise, shape and cast ops,
  generated from C expressions of the operands (see ``ckernel.map_body``).

Nothing here names an op: the emitters (boldc/backend/emitters/) pick the helper.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from boldc.backend.cblock import Block
from boldc.backend.cexpr import Const, Expr, inside, product
from boldc.backend.ckernel import (
    CKernel,
    COp,
    CTensor,
    along,
    copy_body,
    each_row,
    map_body,
    row_major_remap,
    scalar_literal,
)
from boldc.backend.layout import BATCH_VAR, words
from boldc.ir.types import DType

DTYPE_CODE = {DType.f32: "BD_F32", DType.i8: "BD_I8", DType.i16: "BD_I16", DType.i32: "BD_I32", DType.b1: "BD_B1"}
ALIGN = 64
CHUNK, QUAD, FCHUNK, FQUAD, FM = 32, 4, 16, 4, 32  # the runtime's BD_CHUNK, BD_QUAD, BD_FCHUNK, ...


def _r(nbytes: int) -> int:
    """BD_SCRATCH_ROUND: up to a multiple of 64 bytes."""
    return -(-nbytes // ALIGN) * ALIGN


def _up(v: int, m: int) -> int:
    return -(-v // m) * m


def _init(fields: dict) -> str:
    """A C99 designated initializer."""
    return "{" + ", ".join(f".{k} = {v}" for k, v in fields.items()) + "}"


def runtime_call(struct: str, fields: dict, call: str, scratch: int, scratch_fn: str, batch: Expr | None = None
                 ) -> CKernel:
    """A runtime kernel's call: ``static const <struct> cfg = {fields};`` then ``call``,
    a format string whose ``{ex}`` is the execution context. With ``batch`` (the
    kernel's leading dim) not the call's ``n``, the kernel gets a copy of ``ex`` with
    that batch (a fixed-shape tensor in a function without a batch, where ``n`` is 1)."""
    cfg = _init(fields)
    b = Block()
    b.decl(f"static const {struct} cfg = {cfg};")
    ex = "ex"
    if batch is not None and batch != BATCH_VAR:
        b.decl("bd_exec bd_ex = *ex;")
        b(f"bd_ex.n = {batch};")
        ex = "&bd_ex"
    b(call.format(ex=ex))
    return CKernel(b.text(), scratch_bytes=scratch, scratch_check=f"{scratch_fn}(&(const {struct}){cfg})")


def _optional(cop: COp, position: int) -> str:
    return cop.ins[position].name if len(cop.ins) > position else "NULL"


# --- convolution and linear layers ---------------------------------------------------------


def conv_geometry(cop: COp) -> dict:
    x, w, y = cop.ins[0], cop.ins[1], cop.out
    a = cop.attrs
    _, c, h, wd = x.shape
    _, m, oh, ow = y.shape
    return {"C": c, "H": h, "W": wd, "M": m, "OH": oh, "OW": ow, "kh": w.shape[2], "kw": w.shape[3],
            "sh": a["stride"][0], "sw": a["stride"][1], "dh": a["dilation"][0], "dw": a["dilation"][1],
            "pt": a["pad"][0], "pl": a["pad"][1], "groups": a["groups"]}


def logic_sign(attrs: dict) -> int:
    return 1 if attrs.get("logic", "xnor") == "xnor" else -1


def bconv2d(cop: COp) -> CKernel:
    """Boolean convolution: runtime ``bd_bconv2d`` (bias operand 2 optional)."""
    g = conv_geometry(cop)
    neutral = cop.attrs["pad_mode"] == "neutral"
    fields = {**g, "sign": logic_sign(cop.attrs), "neutral": int(neutral), "out_type": DTYPE_CODE[cop.out.dtype],
              "max_threads": cop.max_threads}
    cg, mg, taps = g["C"] // g["groups"], g["M"] // g["groups"], g["kh"] * g["kw"]
    k = taps * words(cg)
    mgp = _up(mg, 8)
    scratch = (_r(8 * g["groups"] * k * mgp) + (_r(4 * g["M"] * taps) if neutral else 0) + _r(4 * g["M"])
               + cop.max_threads * (_r(8 * CHUNK * k) + _r(4 * CHUNK * mgp)))
    return runtime_call("bd_bconv", fields, f"bd_bconv2d(&cfg, {{ex}}, {_args(cop)}, scratch);", scratch,
                        "bd_bconv2d_scratch", cop.ins[0].lead)


def _args(cop: COp) -> str:
    """The layer's pointers: input, weights, bias (or NULL), result."""
    return f"{cop.ins[0].name}, {cop.ins[1].name}, {_optional(cop, 2)}, {cop.out.name}"


def rows_of(t: CTensor) -> Expr:
    """Rows of a [..., K] operand: the product of its leading dims."""
    return product(*(t.extent(a) for a in range(t.rank - 1)))


def blinear(cop: COp) -> CKernel:
    """Boolean linear layer: runtime ``bd_blinear_run``."""
    x, w = cop.ins[0], cop.ins[1]
    if x.layout.packed_axis != x.rank - 1:
        raise cop.fail(f"the C backend needs the features on the last stored axis; input {x.ref} is rank "
                       f"{x.rank} (reshape it to rank 2 first)")
    kdim, m = w.shape[1], w.shape[0]
    fields = {"K": kdim, "M": m, "sign": logic_sign(cop.attrs), "out_type": DTYPE_CODE[cop.out.dtype],
              "max_threads": cop.max_threads}
    scratch = _r(8 * words(kdim) * _up(m, 8)) + _r(8 * QUAD * words(kdim)) + _r(4 * m)
    return runtime_call("bd_blinear", fields, f"bd_blinear_run(&cfg, {{ex}}, {rows_of(x)}, {_args(cop)}, scratch);",
                        scratch, "bd_blinear_scratch")


def fconv2d(cop: COp) -> CKernel:
    """Float or mixed convolution (a mixed layer's logic sets the sign): runtime ``bd_fconv2d``."""
    sign = logic_sign(cop.attrs)
    g = conv_geometry(cop)
    w = cop.ins[1]
    fields = {**g, "x_type": DTYPE_CODE[cop.ins[0].dtype], "w_type": DTYPE_CODE[w.dtype], "sign": sign,
              "max_threads": cop.max_threads}
    cg, mg = g["C"] // g["groups"], g["M"] // g["groups"]
    kf = g["kh"] * g["kw"] * cg
    scratch = _r(4 * g["groups"] * kf * _up(mg, FM)) + cop.max_threads * _r(4 * FCHUNK * kf)
    return runtime_call("bd_fconv", fields, f"bd_fconv2d(&cfg, {{ex}}, {_args(cop)}, scratch);", scratch,
                        "bd_fconv2d_scratch", cop.ins[0].lead)


def flinear(cop: COp) -> CKernel:
    """Float or mixed linear layer (a mixed layer's logic sets the sign): runtime ``bd_flinear_run``."""
    sign = logic_sign(cop.attrs)
    x, w = cop.ins[0], cop.ins[1]
    if x.layout.perm[-1] != x.rank - 1:
        raise cop.fail(f"the C backend needs the features on the last stored axis; input {x.ref} is rank "
                       f"{x.rank} (reshape it to rank 2 first)")
    kdim, m = w.shape[1], w.shape[0]
    fields = {"K": kdim, "M": m, "x_type": DTYPE_CODE[x.dtype], "w_type": DTYPE_CODE[w.dtype], "sign": sign,
              "max_threads": cop.max_threads}
    scratch = _r(4 * kdim * _up(m, FM)) + cop.max_threads * _r(4 * FQUAD * kdim)
    return runtime_call("bd_flinear", fields, f"bd_flinear_run(&cfg, {{ex}}, {rows_of(x)}, {_args(cop)}, scratch);",
                        scratch, "bd_flinear_scratch")


# --- threshold --------------------------------------------------------------------------------


def compare_ctype(x: DType, tau) -> str:
    """C type in which numpy compares ``x >= tau`` (tau a DType or a Python number):
    float32 for f32 x with f32/i8/i16 tau or a Python number, float64 when an i32
    meets an f32 or an integer meets a Python float, exact integers otherwise."""
    if isinstance(tau, DType):
        kind = np.result_type(x.numpy, tau.numpy)
    elif x.is_float:
        kind = np.dtype(np.float32)
    else:
        kind = np.dtype(np.float64) if isinstance(tau, float) else np.dtype(np.int64)
    if kind == np.float32:
        return "float"
    if kind == np.float64:
        return "double"
    return "int64_t"


def threshold(cop: COp) -> CKernel:
    """y = T if x >= tau (per channel along axis 1, direction per ``ge``): the runtime
    packers when the comparison is int32 or float32 and the channels are the packed
    axis, else a loop with numpy's comparison type."""
    x, y = cop.ins[0], cop.out
    tau = cop.ins[1] if len(cop.ins) > 1 else None
    ge = cop.ins[2] if len(cop.ins) > 2 else None
    scalar = cop.attrs["tau"]
    ct = compare_ctype(x.dtype, tau.dtype if tau else scalar)
    # per-channel operands need the channels (axis 1) to be the packed axis; a scalar does not
    channels_packed = tau is None and ge is None or y.layout.packed_axis == 1
    fast_int = ct == "int64_t" and (tau is not None or -2**31 <= scalar < 2**31)
    fast = x.rank >= 2 and channels_packed and all(isinstance(d, int) for d in x.shape[1:]) and \
        (fast_int or (ct == "float" and x.dtype.is_float))
    if not fast:
        return map_kernel(cop, lambda idx: _threshold_cond(x, tau, ge, scalar, ct, idx))
    c = y.layout.phys_dims[-1]
    pixels = product(*y.layout.extents[:-1])
    t_type = "int32_t" if fast_int else "float"
    b = Block()
    b.decl(f"{t_type} *bd_t = ({t_type} *)scratch;", f"uint8_t *bd_le = (uint8_t *)(scratch + {_r(4 * c)});")
    with b.loop("bd_c", c) as ch:
        if tau is not None:
            t_value = f"({t_type})" + tau.load([ch])
        else:
            t_value = scalar_literal(scalar, "float") if t_type == "float" else scalar_literal(scalar, "int32_t")
        le_value = f"(uint8_t)!{ge.load([ch])}" if ge is not None else "0"
        b(f"bd_t[{ch}] = {t_value};", f"bd_le[{ch}] = {le_value};")
    if t_type == "float":
        b(f"bd_threshold_f32(ex, {x.name}, {pixels}, {c}, bd_t, bd_le, {y.name});")
    else:
        b(f"bd_threshold_int(ex, {x.name}, {DTYPE_CODE[x.dtype]}, {pixels}, {c}, bd_t, bd_le, {y.name});")
    return CKernel(b.text(), scratch_bytes=_r(4 * c) + _r(c))


def _threshold_cond(x: CTensor, tau, ge, scalar, ct: str, idx: list[str]) -> str:
    v = f"(({ct}){x.load(idx)})"
    t = f"(({ct}){tau.load([idx[1]])})" if tau is not None else scalar_literal(scalar, ct)
    if ge is None:
        return f"{v} >= {t}"
    return f"({ge.load([idx[1]])} ? {v} >= {t} : {v} <= {t})"


# --- loops over output elements ---------------------------------------------------------------


def map_kernel(cop: COp, expr: Callable[[list[Expr]], str], out: CTensor | None = None) -> CKernel:
    """Every element of the result computed by a C expression of its index."""
    return CKernel(map_body(out or cop.out, expr))


def values(cop: COp, idx: list[Expr]) -> list[str]:
    """Each operand's element for output index ``idx`` (numpy broadcasting); b1
    operands read as e(b) = +-1 (an int)."""
    out = []
    for t in cop.ins:
        v = t.load(t.at(idx, cop.out.rank))
        out.append(f"(2 * {v} - 1)" if t.dtype.is_bool else v)
    return out


def elementwise(cop: COp, fn: Callable[..., str]) -> CKernel:
    """Result[idx] = fn(operand values...) as a C expression (a condition for b1 results)."""
    return map_kernel(cop, lambda idx: fn(*values(cop, idx)))


def wide_ctype(dtype: DType) -> str:
    """The C type numpy-exact arithmetic of this result uses: double for f32 (one
    rounding at the end), int64_t for integers."""
    return "double" if dtype.is_float else "int64_t"


def reshape(cop: COp) -> CKernel:
    """Same elements in row-major order, new shape (a copy between storages)."""
    return CKernel(copy_body(cop.out, cop.ins[0], None if cop.out.layout.same_storage(cop.ins[0].layout)
                             else row_major_remap(cop.out.shape, cop.ins[0].shape)))


def concat(cop: COp, axis: int) -> CKernel:
    """Inputs side by side along ``axis`` (a select chain on the output index); into an
    integer result a b1 input enters as e(b) = ±1."""
    axis = axis % cop.out.rank
    signs = not cop.out.dtype.is_bool

    def expr(idx: list[Expr]) -> str:
        start, parts = 0, []
        for t in cop.ins:
            shifted = list(idx)
            shifted[axis] = idx[axis] - start
            start += t.shape[axis]
            load = t.load(shifted)
            parts.append((start, f"(2 * {load} - 1)" if signs and t.dtype.is_bool else load))
        text = parts[-1][1]
        for stop, load in reversed(parts[:-1]):
            text = f"({idx[axis]} < {stop} ? {load} : {text})"
        return text

    return map_kernel(cop, expr)


def expand(cop: COp) -> CKernel:
    """y[idx] = x at idx under numpy broadcasting (a copy into the larger result)."""
    x = cop.ins[0]
    return CKernel(copy_body(cop.out, x, lambda idx: x.at(idx, cop.out.rank)))


def cast(cop: COp) -> CKernel:
    """numpy's conversions (cast op docstring): b1 -> +-1, number -> b1 as x >= 0,
    f32 -> integer rounding half to even and saturating (NaN gives 0), else C's."""
    x, y = cop.ins[0], cop.out
    if x.dtype == y.dtype:
        return CKernel(copy_body(y, x))
    if y.dtype.is_bool:
        zero = "0.0f" if x.dtype.is_float else "0"
        return map_kernel(cop, lambda idx: f"{x.load(idx)} >= {zero}")
    if x.dtype.is_float and y.dtype.is_int:
        lo, hi = y.dtype.int_range
        return map_kernel(cop, lambda idx: f"bd_rint_sat((double){x.load(idx)}, {lo}.0, {hi}.0)")
    return elementwise(cop, lambda v: v)


def batchnorm(cop: COp, epsilon: float) -> CKernel:
    """y = (x - mean) * (scale / sqrt(var + eps)) + bias per channel (axis 1), in
    double as the reference computes it, rounded once to f32."""
    x, scale, bias, mean, var = cop.ins
    eps = scalar_literal(epsilon, "double")

    def expr(idx: list[str]) -> str:
        c = [idx[1]]
        k = f"((double){scale.load(c)} / sqrt((double){var.load(c)} + {eps}))"
        return f"((double){x.load(idx)} - (double){mean.load(c)}) * {k} + (double){bias.load(c)}"

    return map_kernel(cop, expr)


ROW_CACHE = 4096  # the longest softmax row whose exponentials are kept (doubles on the stack)


def softmax(cop: COp, axis: int, log: bool = False) -> CKernel:
    """Softmax (or log-softmax) along ``axis`` in double: exp(x - max) / sum, the sum in row
    order. exp is the runtime's bd_exp_nonpos (x - max <= 0; no libm call, so the loop of
    exponentials vectorizes). Rows are split over threads; a static row of at most ROW_CACHE
    keeps its exponentials, so each is computed once."""
    x, y = cop.ins[0], cop.out
    axis = axis % x.rank
    extent = x.extent(axis)
    cache = not log and isinstance(extent, Const) and extent.value <= ROW_CACHE
    b = Block()
    with each_row(b, x, axis, work=x.layout.count_expr()) as idx:
        b.decl("double bd_m = -HUGE_VAL, bd_s = 0.0;")
        if cache:
            b.decl(f"double bd_e[{extent.value}];")

        def v(i):
            return f"(double){x.load(i)}"

        along(b, x, axis, idx, lambda i: f"if ({v(i)} > bd_m || {v(i)} != {v(i)}) bd_m = {v(i)};")
        if cache:
            along(b, x, axis, idx, lambda i: f"bd_e[{i[axis]}] = bd_exp_nonpos({v(i)} - bd_m);")
            along(b, x, axis, idx, lambda i: f"bd_s += bd_e[{i[axis]}];")
            out = "bd_e[{j}] / bd_s"
        else:
            along(b, x, axis, idx, lambda i: f"bd_s += bd_exp_nonpos({v(i)} - bd_m);")
            out = "({v} - bd_m) - log(bd_s)" if log else "bd_exp_nonpos({v} - bd_m) / bd_s"
        along(b, x, axis, idx,
              lambda i: f"{y.name}[{y.layout.offset(i)[0]}] = (float)({out.format(v=v(i), j=i[axis])});")
    return CKernel(b.text())


def transpose(cop: COp, perm: list[int]) -> CKernel:
    """y[idx] = x[j] with j[perm[i]] = idx[i]."""

    def source(idx: list[Expr]) -> list[Expr]:
        j = list(idx)
        for i, p in enumerate(perm):
            j[p] = idx[i]
        return j

    return CKernel(copy_body(cop.out, cop.ins[0], source))


def pad(cop: COp, pads: list[int], value: float) -> CKernel:
    """y = x surrounded by ``value`` (pads: befores then afters, per axis)."""
    x, y = cop.ins[0], cop.out
    fill = scalar_literal(value, "float" if y.dtype.is_float else y.ctype)

    def expr(idx: list[Expr]) -> str:
        tests, src = [], []
        for a, i in enumerate(idx):
            before = pads[a]
            test = inside(i, before, x.extent(a) + before)
            if test is not True:
                tests.append("0" if test is False else test)  # False: an empty input, all padding
            src.append(i - before)
        if not tests:
            return x.load(src)
        return f"(({' && '.join(tests)}) ? {x.load(src)} : {fill})"

    return map_kernel(cop, expr)
