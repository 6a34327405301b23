"""C emission helpers for the training ops: gradients and optimizer updates
(docs/training.md, "Training through the generated C"). The ops' emitters
(``emitters/training.py``) call them; the integer signals and the training BatchNorm are in
``signal_kernels``, the losses in ``loss_kernels``.

Layer gradients call the runtime's packed float GEMMs (runtime/bd_grad.c); the
optimizer updates call runtime/bd_train.c; everything else is a loop generated here.
Floating-point formulas follow the interpreter's: computed in double from the f32
operands and rounded once to f32; the linear gradients, the loss signal and the flip
update give the interpreter's bits, the convolution gradients of f32 signals agree within
float tolerance (their sums' order differs; docs/training.md, "Determinism"). Nothing here
names an op: the emitters (boldc/backend/emitters/) pick the helper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack

from boldc.backend.cblock import Block, parallel_pragma
from boldc.backend.cexpr import Const, Expr, Var, div, mod, product
from boldc.backend.ckernel import CKernel, COp, CTensor, along, each_row, map_body, scalar_literal
from boldc.backend.kernels import DTYPE_CODE, _r, map_kernel, rows_of, runtime_call, values
from boldc.backend.layout import BATCH
from boldc.ir.types import DType

MR, NR, KC, MC, NC = 8, 32, 256, 128, 256  # the runtime's BD_MR, BD_NR, BD_KC, BD_MC, BD_NC (bd_gemm.c)


def _up(v: int, m: int) -> int:
    return -(-v // m) * m


def gemm_scratch(max_m: int, max_n: int, max_k: int, threads: int, k_block: int = KC, size: int = 4,
                 group: int = 1, b_extra: int = 0, m_block: int = MC) -> int:
    """Bytes of the runtime's bd_gemm_plan_bytes(): one packed B block and an A block (of at
    most ``m_block`` rows) per thread, panels of ``size``-byte values (the k-block rounded up
    to ``group``), each B panel followed by ``b_extra`` bytes. The defaults: the float panels."""
    mc = min(m_block, _up(max(max_m, 1), MR))
    kp = _up(min(k_block, max(max_k, 1)), group)
    nc = min(NC, _up(max(max_n, 1), NR))
    return _r((size * kp * NR + b_extra) * (nc // NR)) + max(threads, 1) * _r(size * kp * mc)


def _concrete(dims, n: int) -> int:
    return math.prod(n if d == BATCH else d for d in dims)


def _dbl(v: float) -> str:
    return scalar_literal(float(v), "double")


def _features_last(cop: COp, t: CTensor) -> None:
    if t.layout.perm[-1] != t.rank - 1:
        raise cop.fail(f"the C backend needs the features on the last stored axis; {t.ref} is rank {t.rank} "
                       "(reshape it to rank 2 first)")


# --- layer gradients (GEMMs) ------------------------------------------------------------------


def linear_grad_x(cop: COp) -> CKernel:
    """dx = scale · dy · e(W) of an f32 signal, each sum in double in order: runtime
    ``bd_linear_grad_x`` (no scratch)."""
    dy, w = cop.ins
    _features_last(cop, dy)
    m, k = w.shape
    max_rows = _concrete(dy.shape[:-1], cop.max_batch)
    fields = {"M": m, "K": k, "other_type": DTYPE_CODE[w.dtype], "scale": _dbl(cop.attrs["scale"]),
              "max_rows": max_rows, "max_threads": cop.max_threads}
    return runtime_call("bd_lgrad", fields, f"bd_linear_grad_x(&cfg, {{ex}}, {rows_of(dy)}, {_args(cop)}, NULL);",
                        0, "bd_linear_grad_x_scratch")


def linear_grad_w(cop: COp) -> CKernel:
    """dW = scale · dyᵀ · e(x) of an f32 signal, each sum in double in order: runtime
    ``bd_linear_grad_w`` (no scratch)."""
    dy, x = cop.ins
    _features_last(cop, dy)
    _features_last(cop, x)
    m, k = cop.out.shape
    max_rows = _concrete(dy.shape[:-1], cop.max_batch)
    fields = {"M": m, "K": k, "other_type": DTYPE_CODE[x.dtype], "scale": _dbl(cop.attrs["scale"]),
              "max_rows": max_rows, "max_threads": cop.max_threads}
    return runtime_call("bd_lgrad", fields, f"bd_linear_grad_w(&cfg, {{ex}}, {rows_of(dy)}, {_args(cop)}, NULL);",
                        0, "bd_linear_grad_w_scratch")


def _conv_fields(cop: COp, x_shape, dy_shape, w_shape, other) -> dict:
    a = cop.attrs
    _, c, h, wd = x_shape
    _, m, oh, ow = dy_shape
    return {"C": c, "H": h, "W": wd, "M": m, "OH": oh, "OW": ow, "kh": w_shape[2], "kw": w_shape[3],
            "sh": a["stride"][0], "sw": a["stride"][1], "dh": a["dilation"][0], "dw": a["dilation"][1],
            "pt": a["pad"][0], "pl": a["pad"][1], "groups": a["groups"], "other_type": DTYPE_CODE[other.dtype],
            # a transposed convolution (conv_transpose2d) has no scale: 1
            "scale": _dbl(a.get("scale", 1.0)), "pad_value": scalar_literal(float(a.get("pad_value", 0.0)), "float"),
            "max_batch": _concrete(dy_shape[:1], cop.max_batch), "max_threads": cop.max_threads}


def conv2d_grad_x(cop: COp) -> CKernel:
    """The transposed convolution dx = scale · Σ dy · e(W): runtime ``bd_conv2d_grad_x``."""
    return _transposed_conv(cop, *cop.ins)


def _transposed_conv(cop: COp, dy: CTensor, w: CTensor) -> CKernel:
    """The result = scale · the transposed convolution of dy with e(W) (the result's size may
    exceed the one that convolves back to dy's: those rows and columns get 0)."""
    f = _conv_fields(cop, cop.out.shape, dy.shape, w.shape, w)
    mg, cg = f["M"] // f["groups"], f["C"] // f["groups"]
    scratch = gemm_scratch(f["max_batch"] * f["H"] * f["W"], cg, f["kh"] * f["kw"] * mg, cop.max_threads)
    return runtime_call("bd_cgrad", f, f"bd_conv2d_grad_x(&cfg, {{ex}}, {dy.name}, {w.name}, {cop.out.name}, scratch);",
                        scratch, "bd_conv2d_grad_x_scratch", dy.lead)


def conv_transpose2d(cop: COp) -> CKernel:
    """The forward transposed convolution y = convᵀ(x, W) + b: the input-signal GEMM of
    ``bd_conv2d_grad_x`` (x in the role of dy, scale 1), then the bias added to each output in
    float (the interpreter adds it in double before its one rounding: within float tolerance)."""
    kernel = _transposed_conv(cop, cop.ins[0], cop.ins[1])
    if len(cop.ins) > 2:
        bias, y = cop.ins[2], cop.out
        kernel.body += map_body(y, lambda idx: f"{y.load(idx)} + {bias.load([idx[1]])}")
    return kernel


def conv2d_grad_w(cop: COp) -> CKernel:
    """The correlation dW = scale · Σ dy · e(xpad): runtime ``bd_conv2d_grad_w``."""
    dy, x = cop.ins
    f = _conv_fields(cop, x.shape, dy.shape, cop.out.shape, x)
    mg, cg = f["M"] // f["groups"], f["C"] // f["groups"]
    scratch = gemm_scratch(mg, f["kh"] * f["kw"] * cg, f["max_batch"] * f["OH"] * f["OW"], cop.max_threads)
    return runtime_call("bd_cgrad", f, f"bd_conv2d_grad_w(&cfg, {{ex}}, {_args(cop)}, scratch);", scratch,
                        "bd_conv2d_grad_w_scratch", dy.lead)


def _args(cop: COp) -> str:
    """A gradient GEMM's pointers: the signal, the other operand, the result."""
    return f"{cop.ins[0].name}, {cop.ins[1].name}, {cop.out.name}"


# --- elementwise gradients ----------------------------------------------------------------------


def unary_grad(cop: COp, derivative: Callable[[str], str]) -> CKernel:
    """dx = dy · f'(v) in double, rounded to f32; ``derivative`` maps the C expression of
    v (the second operand, as a double) to f'(v); further operands broadcast."""
    def expr(dy, v, *rest):
        return f"((double){dy} * ({derivative(f'((double){v})', *rest)}))"

    return _inplace(map_kernel(cop, lambda idx: expr(*values(cop, idx))))


def _inplace(kernel: CKernel) -> CKernel:
    """The result may take over the bytes of the signal dy (operand 0): these loops read
    dy[i] and write the result's element i in the same storage order."""
    kernel.inplace = 0
    return kernel


LUT_ENTRIES = 4096  # the table of threshold_grad on integer pre-activations (scratch: 32 KB); wider: one by one


def _surrogate(mode: str, u: str) -> str:
    """d(u) of the threshold backward, a double C expression (docs/method.md §3,
    grad_ops.ThresholdGrad); NaN stays NaN, as in numpy."""
    if mode == "tanh":
        return f"bd_dtanh({u})"
    if mode == "box":
        return f"(fabs({u}) <= 1.0 ? 1.0 : 0.0)"
    return f"bd_dbireal({u})"


def threshold_grad(cop: COp) -> CKernel:
    """δLoss/δs = dy · d(α(s - τ)) with d the tanh, box or Bi-Real derivative (docs/method.md §3);
    τ the attribute or the per-channel operand; a per-channel ge = F changes the sign.

    On an integer pre-activation with an integer τ, d depends only on the integer
    k = s - τ: the kernel finds the range of k in the call, fills a table of d(k) with
    the same double formula and reads it per element (the same values as computing
    each one, tanh once per distinct k instead of once per element)."""
    dy, x = cop.ins[0], cop.ins[1]
    tau = cop.ins[2] if len(cop.ins) > 2 else None
    ge = cop.ins[3] if len(cop.ins) > 3 else None
    alpha, mode = _dbl(cop.attrs["alpha"]), cop.attrs["mode"]
    scalar = cop.attrs["tau"]
    # (a scalar τ far outside the int32 range would not fit the table's int64 keys: map path)
    integer_tau = tau.dtype.is_int if tau is not None else (float(scalar).is_integer() and abs(scalar) < 2 ** 31)
    if x.dtype.is_int and integer_tau and dy.layout.perm == x.layout.perm:
        return _threshold_grad_table(cop, alpha, mode)
    if (mode == "tanh" and tau is None and ge is None and dy.dtype is x.dtype is cop.out.dtype is DType.f32
            and dy.layout == x.layout == cop.out.layout):
        # the same values with a loop the compiler vectorises (runtime bd_threshold_grad_tanh)
        return _inplace(CKernel(f"bd_threshold_grad_tanh(ex, {x.layout.count_expr()}, {dy.name}, {x.name}, {alpha}, "
                                f"{_dbl(scalar)}, {cop.out.name});\n"))

    def expr(idx: list[Expr]) -> str:
        t = f"(double){tau.load([idx[1]])}" if tau is not None else _dbl(scalar)
        d = _surrogate(mode, f"({alpha} * ((double){x.load(idx)} - {t}))")
        if ge is not None:
            d = f"({d} * ({ge.load([idx[1]])} ? 1.0 : -1.0))"
        return f"((double){dy.load(idx)} * {d})"

    return _inplace(map_kernel(cop, expr))


def _threshold_grad_table(cop: COp, alpha: str, mode: str) -> CKernel:
    dy, x, out = cop.ins[0], cop.ins[1], cop.out
    tau = cop.ins[2] if len(cop.ins) > 2 else None
    ge = cop.ins[3] if len(cop.ins) > 3 else None
    count = out.layout.count_expr()
    i = Var("bd_i", 0, None if count.hi is None else count.hi - 1)  # a flat storage position
    channel = None
    if tau is not None or ge is not None:
        # its channel (axis 1): position / (storage after the channel axis) % channels
        q = x.layout.perm.index(1)
        channel = mod(div(i, product(*x.layout.storage_extents[q + 1:])), x.shape[1])
    if tau is not None:
        key = f"(int64_t){x.name}[{i}] - (int64_t){tau.name}[{channel}]"
    else:
        t = int(cop.attrs["tau"])
        key = f"(int64_t){x.name}[{i}]" + (f" - (int64_t){t}" if t else "")
    sign = f" * ({ge.load([channel])} ? 1.0 : -1.0)" if ge is not None else ""
    each = f"for (long {i} = 0; {i} < {count}; ++{i})"
    lines = [
        "double *bd_lut = (double *)scratch;",
        "int64_t bd_lo = INT64_MAX, bd_hi = INT64_MIN;",
        f"{each} {{",
        f"    const int64_t bd_k = {key};",
        "    if (bd_k < bd_lo) bd_lo = bd_k;",
        "    if (bd_k > bd_hi) bd_hi = bd_k;",
        "}",
        f"if ({count} > 0 && bd_hi - bd_lo < {LUT_ENTRIES}) {{",
        "    for (int64_t bd_k = bd_lo; bd_k <= bd_hi; ++bd_k)",
        f"        bd_lut[bd_k - bd_lo] = {_surrogate(mode, f'({alpha} * (double)bd_k)')};",
        *(["    " + p] if (p := parallel_pragma(count)) else []),
        f"    {each}",
        f"        {out.name}[{i}] = (float)((double){dy.name}[{i}] * bd_lut[({key}) - bd_lo]{sign});",
        "} else {",
        f"    {each}",
        f"        {out.name}[{i}] = (float)((double){dy.name}[{i}] * "
        f"{_surrogate(mode, f'({alpha} * (double)({key}))')}{sign});",
        "}",
    ]
    return _inplace(CKernel("\n".join(lines) + "\n", scratch_bytes=8 * LUT_ENTRIES))


def channel_scale(cop: COp, factor: Callable[[list[Expr]], str]) -> CKernel:
    """dx = dy · factor(channel) in double (``factor`` gives a double C expression of the
    channel index, axis 1)."""
    dy = cop.ins[0]
    return _inplace(map_kernel(cop, lambda idx: f"((double){dy.load(idx)} * {factor([idx[1]])})"))


def global_avgpool_grad(cop: COp) -> CKernel:
    """dx[n, c, h, w] = dy[n, c, 0, 0] / (H·W)."""
    dy, out = cop.ins[0], cop.out
    hw = out.shape[2] * out.shape[3]
    return map_kernel(cop, lambda idx: f"((double){dy.load([idx[0], idx[1], 0, 0])} / {hw}.0)")


def slice_axis(cop: COp) -> CKernel:
    """y[idx] = x[idx + start along axis]. The sliced axis must be static: along the run-time
    batch, a call with fewer samples than ``stop`` would read past them."""
    x = cop.ins[0]
    axis, start = cop.attrs["axis"] % x.rank, cop.attrs["start"]
    if not isinstance(x.extent(axis), Const):
        raise cop.fail(f"slices the run-time batch (axis {axis}), which the C backend cannot check against the "
                       "call's batch; fix the batch (boldc compile --dim N=SIZE, or convert with a fixed batch)")

    def expr(idx: list[Expr]) -> str:
        src = list(idx)
        src[axis] = idx[axis] + start
        return x.load(src)

    return map_kernel(cop, expr)


# --- reductions ---------------------------------------------------------------------------------


def reduce_into(cop: COp, src: CTensor, value: Callable[[list[Expr]], str],
                out_index: Callable[[list[Expr]], list[Expr]]) -> CKernel:
    """y[out_index(idx)] = Σ value(idx) over every element idx of ``src`` (in its
    storage order), summed in double (scratch) and rounded once to f32."""
    y = cop.out
    count = y.layout.count_expr()
    b = Block()
    b.decl("double *bd_acc = (double *)scratch;")
    with b.loop("bd_i", count) as i:
        b(f"bd_acc[{i}] = 0.0;")
    with ExitStack() as loops:
        idx: list[Expr] = [Const(0)] * src.rank
        for axis in src.layout.perm:
            idx[axis] = loops.enter_context(b.loop(f"i{axis}", src.extent(axis)))
        b(f"bd_acc[{y.layout.offset(out_index(idx))[0]}] += {value(idx)};")
    with b.loop("bd_i", count) as i:
        b(f"{y.name}[{i}] = (float)bd_acc[{i}];")
    return CKernel(b.text(), scratch_bytes=_r(8 * y.layout.count(cop.max_batch)))


def broadcast_index(src: CTensor, target_shape) -> Callable[[list[Expr]], list[Expr]]:
    """Index of the target (shape ``target_shape``, right-aligned numpy broadcasting)
    that element ``idx`` of ``src`` is summed into."""
    lead = src.rank - len(target_shape)
    return lambda idx: [Const(0) if d == 1 else idx[lead + a] for a, d in enumerate(target_shape)]


# --- row-wise ops (softmax family; the losses are in loss_kernels) ------------------------------


def softmax_grad(cop: COp, log: bool) -> CKernel:
    """softmax: dx = y · (dy - Σ dy·y); log-softmax: dx = dy - exp(y) · Σ dy (sums in double)."""
    dy, y = cop.ins
    out = cop.out
    axis = cop.attrs["axis"] % y.rank
    b = Block()
    with each_row(b, y, axis) as idx:
        def d(i):
            return f"(double){dy.load(i)}"

        def v(i):
            return f"(double){y.load(i)}"

        def o(i):
            return f"{out.name}[{out.layout.offset(i)[0]}]"

        b.decl("double bd_s = 0.0;")
        if log:
            along(b, y, axis, idx, lambda i: f"bd_s += {d(i)};")
            along(b, y, axis, idx, lambda i: f"{o(i)} = (float)({d(i)} - exp({v(i)}) * bd_s);")
        else:
            along(b, y, axis, idx, lambda i: f"bd_s += {d(i)} * {v(i)};")
            along(b, y, axis, idx, lambda i: f"{o(i)} = (float)({v(i)} * ({d(i)} - bd_s));")
    return CKernel(b.text())


# --- optimizer ----------------------------------------------------------------------------------


def lr_schedule(cop: COp) -> CKernel:
    """η_t in double from the step counter, rounded to f32 (optim_ops.schedule_value)."""
    a = cop.attrs
    step = cop.ins[0]
    base, final = _dbl(a["base"]), _dbl(a["final"])
    if a["schedule"] == "constant":
        value = base
    else:
        total = a["total_steps"]
        t = f"(double)({step.name}[0] < 0 ? 0 : ({step.name}[0] > {total} ? {total} : {step.name}[0]))"
        if a["schedule"] == "cosine":
            value = f"{final} + 0.5 * ({base} - {final}) * (1.0 + cos({_dbl(math.pi)} * {t} / {total}.0))"
        else:
            value = f"{final} + ({base} - {final}) * pow(1.0 - {t} / {total}.0, {_dbl(a['power'])})"
    return CKernel(f"{cop.out.name}[0] = (float)({value});\n")


def flip_runs(cop: COp) -> tuple[Expr, int]:
    """(runs, D): the b1 param of an update stored as runs of D packed bits."""
    w = cop.ins[0]
    if not w.layout.packed:
        raise cop.fail(f"a b1 param of rank 0 ({w.ref}) cannot be trained in C")
    return product(*w.layout.extents[:-1]), w.layout.phys_dims[-1]


def flip_update(cop: COp) -> CKernel:
    """The Boolean optimizer step with an f32 accumulator: runtime ``bd_flip_update`` (in
    place on the params)."""
    w, m, beta, q, eta = cop.ins
    runs, d = flip_runs(cop)
    return CKernel(f"bd_flip_update(ex, {runs}, {d}, {w.name}, {m.name}, {beta.name}, {q.name}, {eta.name});\n")


def adam_update(cop: COp) -> CKernel:
    """Adam in double: runtime ``bd_adam_update`` (p, m, v, g share one layout)."""
    p, m, v, g, lr, step = cop.ins
    a = cop.attrs
    args = ", ".join(_dbl(a[k]) for k in ("beta1", "beta2", "eps", "weight_decay"))
    return CKernel(f"bd_adam_update(ex, {p.layout.count_expr()}, {p.name}, {m.name}, {v.name}, {g.name}, "
                       f"{lr.name}, {step.name}, {args});\n")


def increment(cop: COp) -> CKernel:
    """step <- step + 1, saturating at the i32 maximum."""
    s = cop.ins[0].name
    return CKernel(f"if ({s}[0] < INT32_MAX) {s}[0] += 1;\n")

