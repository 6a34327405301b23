"""C emission helpers the ops' ``emit_c`` hooks call (docs/backend.md, "Emission").

Two kinds of emission:

- calls into the hand-written runtime (runtime/*.c) for the heavy layers: Boolean
  and float convolution/linear, the threshold packer. The config structs are
  filled here, and the arena scratch each call needs is computed here with the
  same formula as the runtime's ``bd_*_scratch`` (the generated ``*_init`` checks
  the two agree, so a drift is caught at the first run, never a buffer overrun);
- loop nests over output elements (``map``) for elementwise, shape and cast ops,
  generated from C expressions of the operands (see ``ckernel.map_body``).

Nothing here names an op: the hooks in boldc/ops/ pick the helper.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from boldc.backend.ckernel import CKernel, COp, CTensor, copy_body, map_body, row_major_remap, scalar_literal
from boldc.backend.layout import cmul, words
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


def _kernel(template: str, macro: str, struct: str, fields: dict, scratch: int, scratch_fn: str, **args) -> CKernel:
    cfg = _init(fields)
    return CKernel(template, macro, {"cfg": cfg, **args}, scratch_bytes=scratch,
                   scratch_check=f"{scratch_fn}(&(const {struct}){cfg})")


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
    return _kernel("boolean.c.j2", "bconv2d", "bd_bconv", fields, scratch, "bd_bconv2d_scratch",
                   bias=_optional(cop, 2), batch=cop.ins[0].lead)


def rows_of(t: CTensor) -> str:
    """Rows of a [..., K] operand: the product of its leading dims."""
    return cmul(*t.shape[:-1])


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
    return _kernel("boolean.c.j2", "blinear", "bd_blinear", fields, scratch, "bd_blinear_scratch",
                   bias=_optional(cop, 2), rows=rows_of(x))


def fconv2d(cop: COp, sign: int = 1) -> CKernel:
    """Float or mixed convolution: runtime ``bd_fconv2d``."""
    g = conv_geometry(cop)
    w = cop.ins[1]
    fields = {**g, "x_type": DTYPE_CODE[cop.ins[0].dtype], "w_type": DTYPE_CODE[w.dtype], "sign": sign,
              "max_threads": cop.max_threads}
    cg, mg = g["C"] // g["groups"], g["M"] // g["groups"]
    kf = g["kh"] * g["kw"] * cg
    scratch = _r(4 * g["groups"] * kf * _up(mg, FM)) + cop.max_threads * _r(4 * FCHUNK * kf)
    return _kernel("float.c.j2", "fconv2d", "bd_fconv", fields, scratch, "bd_fconv2d_scratch",
                   bias=_optional(cop, 2), batch=cop.ins[0].lead)


def flinear(cop: COp, sign: int = 1) -> CKernel:
    """Float or mixed linear layer: runtime ``bd_flinear_run``."""
    x, w = cop.ins[0], cop.ins[1]
    if x.layout.perm[-1] != x.rank - 1:
        raise cop.fail(f"the C backend needs the features on the last stored axis; input {x.ref} is rank "
                       f"{x.rank} (reshape it to rank 2 first)")
    kdim, m = w.shape[1], w.shape[0]
    fields = {"K": kdim, "M": m, "x_type": DTYPE_CODE[x.dtype], "w_type": DTYPE_CODE[w.dtype], "sign": sign,
              "max_threads": cop.max_threads}
    scratch = _r(4 * kdim * _up(m, FM)) + cop.max_threads * _r(4 * FQUAD * kdim)
    return _kernel("float.c.j2", "flinear", "bd_flinear", fields, scratch, "bd_flinear_scratch",
                   bias=_optional(cop, 2), rows=rows_of(x))


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
    pixels = cmul(*y.layout.phys_dims[:-1])
    t_type = "int32_t" if fast_int else "float"
    scratch = _r(4 * c) + _r(c)
    if tau is not None:
        t_value = f"({t_type})" + tau.load(["bd_c"])
    else:
        t_value = scalar_literal(scalar, "float") if t_type == "float" else scalar_literal(scalar, "int32_t")
    le_value = f"(uint8_t)!{ge.load(['bd_c'])}" if ge is not None else "0"
    return CKernel("boolean.c.j2", "threshold", {"c": c, "pixels": pixels, "t_type": t_type, "t_value": t_value,
                                                 "le_value": le_value, "le_offset": _r(4 * c),
                                                 "x_code": DTYPE_CODE[x.dtype]},
                   scratch_bytes=scratch)


def _threshold_cond(x: CTensor, tau, ge, scalar, ct: str, idx: list[str]) -> str:
    v = f"(({ct}){x.load(idx)})"
    t = f"(({ct}){tau.load([idx[1]])})" if tau is not None else scalar_literal(scalar, ct)
    if ge is None:
        return f"{v} >= {t}"
    return f"({ge.load([idx[1]])} ? {v} >= {t} : {v} <= {t})"


# --- loops over output elements ---------------------------------------------------------------


def map_kernel(cop: COp, expr: Callable[[list[str]], str], out: CTensor | None = None) -> CKernel:
    """Every element of the result computed by a C expression of its index."""
    return CKernel("elementwise.c.j2", "body", {"code": map_body(out or cop.out, expr)})


def code_kernel(code: str) -> CKernel:
    return CKernel("elementwise.c.j2", "body", {"code": code})


def values(cop: COp, idx: list[str]) -> list[str]:
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
    return code_kernel(copy_body(cop.out, cop.ins[0], None if cop.out.layout.same_storage(cop.ins[0].layout)
                                 else row_major_remap(cop.out.shape, cop.ins[0].shape)))


def concat(cop: COp, axis: int) -> CKernel:
    """Inputs side by side along ``axis`` (a select chain on the output index)."""
    axis = axis % cop.out.rank

    def expr(idx: list[str]) -> str:
        start, parts = 0, []
        for t in cop.ins:
            shifted = list(idx)
            shifted[axis] = f"({idx[axis]} - {start})" if start else idx[axis]
            start += t.shape[axis]
            parts.append((start, t.load(shifted)))
        text = parts[-1][1]
        for stop, load in reversed(parts[:-1]):
            text = f"({idx[axis]} < {stop} ? {load} : {text})"
        return text

    return map_kernel(cop, expr)


def cast(cop: COp) -> CKernel:
    """numpy's conversions (cast op docstring): b1 -> +-1, number -> b1 as x >= 0,
    f32 -> integer rounding half to even and saturating (NaN gives 0), else C's."""
    x, y = cop.ins[0], cop.out
    if x.dtype == y.dtype:
        return code_kernel(copy_body(y, x))
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


def softmax(cop: COp, axis: int, log: bool = False) -> CKernel:
    """Softmax (or log-softmax) along ``axis`` in double: exp(x - max) / sum."""
    x, y = cop.ins[0], cop.out
    axis = axis % x.rank
    idx = [f"i{a}" for a in range(x.rank)]
    lines, depth = [], 0
    for a in range(x.rank):
        if a != axis:
            lines.append("    " * depth + f"for (long {idx[a]} = 0; {idx[a]} < {_dim(x.shape[a])}; ++{idx[a]}) {{")
            depth += 1
    ia, d = idx[axis], _dim(x.shape[axis])
    pad = "    " * depth
    loop = f"for (long {ia} = 0; {ia} < {d}; ++{ia})"
    v = f"(double){x.load(idx)}"
    yo, _ = y.layout.offset(idx)
    out = f"({v} - bd_m) - log(bd_s)" if log else f"exp({v} - bd_m) / bd_s"
    lines += [pad + "double bd_m = -HUGE_VAL, bd_s = 0.0;",
              pad + f"{loop} if ({v} > bd_m || {v} != {v}) bd_m = {v};",
              pad + f"{loop} bd_s += exp({v} - bd_m);",
              pad + f"{loop} {y.name}[{yo}] = (float)({out});"]
    while depth:
        depth -= 1
        lines.append("    " * depth + "}")
    return code_kernel("\n".join(lines) + "\n")


def _dim(d) -> str:
    return str(d) if isinstance(d, int) else "n"


def pool(cop: COp, mode: str) -> CKernel:
    """Windowed pooling over channels-last maps: ``mode`` "max" (float/int; padding
    never wins), "or" (b1: OR of the words, padding is F) or "avg" (numbers, b1 read
    as +-1, sum in double over the positions inside the input, divided by the
    count the ``count_include_pad`` rule gives)."""
    x, y = cop.ins[0], cop.out
    a = cop.attrs
    _, c, h, w = x.shape
    _, _, oh, ow = y.shape
    dil = a.get("dilation", [1, 1])
    g = {"N": x.lead, "C": c, "H": h, "W": w, "OH": oh, "OW": ow, "kh": a["kernel"][0], "kw": a["kernel"][1],
         "sh": a["stride"][0], "sw": a["stride"][1], "dh": dil[0], "dw": dil[1], "pt": a["pad"][0],
         "pl": a["pad"][1], "pb": a["pad"][2], "pr": a["pad"][3], "CS": y.layout.storage_dims[-1],
         "XS": x.layout.storage_dims[-1]}
    args = {"g": g, "mode": mode, "include_pad": bool(a.get("count_include_pad", False))}
    if mode == "max":
        args["init"] = "-HUGE_VALF" if x.dtype.is_float else f"({x.ctype}){x.dtype.int_range[0]}"
    return CKernel("pool.c.j2", "pool", args)


def global_pool(cop: COp, mode: str) -> CKernel:
    """Mean ("avg", in double) or max over H, W of a channels-last map; the max of a
    b1 map is the OR of its words."""
    x = cop.ins[0]
    _, c, h, w = x.shape
    if mode == "max" and x.dtype.is_bool:
        mode = "or"
    init = "-HUGE_VALF" if x.dtype.is_float else (f"({x.ctype}){x.dtype.int_range[0]}" if x.dtype.is_int else "0")
    return CKernel("pool.c.j2", "global_pool", {"N": x.lead, "C": c, "HW": h * w, "mode": mode, "init": init})


def transpose(cop: COp, perm: list[int]) -> CKernel:
    """y[idx] = x[j] with j[perm[i]] = idx[i]."""

    def source(idx: list[str]) -> list[str]:
        j = ["0"] * len(perm)
        for i, p in enumerate(perm):
            j[p] = idx[i]
        return j

    return code_kernel(copy_body(cop.out, cop.ins[0], source))


def pad(cop: COp, pads: list[int], value: float) -> CKernel:
    """y = x surrounded by ``value`` (pads: befores then afters, per axis)."""
    x, y = cop.ins[0], cop.out
    fill = scalar_literal(value, "float" if y.dtype.is_float else y.ctype)

    def expr(idx: list[str]) -> str:
        inside, src = [], []
        for a, i in enumerate(idx):
            before = pads[a]
            if before or pads[a + x.rank]:
                inside.append(f"{i} >= {before} && {i} < {before} + {x.shape[a]}")
            src.append(f"({i} - {before})" if before else i)
        if not inside:
            return x.load(src)
        return f"(({' && '.join(inside)}) ? {x.load(src)} : {fill})"

    return map_kernel(cop, expr)
