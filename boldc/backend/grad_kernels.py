"""C emission helpers for the training ops: gradients, losses, optimizer updates
(docs/training.md, "The training step in C"). The ops' ``emit_c`` hooks call them.

Layer gradients call the runtime's packed float GEMMs (runtime/bd_grad.c); the
optimizer updates call runtime/bd_train.c; everything else is a loop generated here.
Floating-point formulas follow the interpreter's: computed in double from the f32
operands and rounded once to f32, so the results agree within float tolerance (the
sums' order differs), and the flip update bit for bit (docs/training.md,
"Determinism"). Nothing here names an op: the hooks in boldc/ops/ pick the helper.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from boldc.backend.ckernel import CKernel, COp, CTensor, scalar_literal
from boldc.backend.kernels import DTYPE_CODE, _init, _r, code_kernel, map_kernel, rows_of, values
from boldc.backend.layout import BATCH, cmul

MR, NR, KC, MC, NC = 8, 32, 256, 128, 256  # the runtime's BD_MR, BD_NR, BD_KC, BD_MC, BD_NC (bd_grad.c)


def _up(v: int, m: int) -> int:
    return -(-v // m) * m


def gemm_scratch(max_m: int, max_n: int, max_k: int, threads: int) -> int:
    """Bytes of the runtime's gemm_scratch(): one packed B block and an A block per thread."""
    mc = min(MC, _up(max(max_m, 1), MR))
    kc = min(KC, max(max_k, 1))
    nc = min(NC, _up(max(max_n, 1), NR))
    return _r(4 * kc * nc) + max(threads, 1) * _r(4 * mc * kc)


def _concrete(dims, n: int) -> int:
    return math.prod(n if d == BATCH else d for d in dims)


def _dbl(v: float) -> str:
    return scalar_literal(float(v), "double")


def _call(macro: str, struct: str, fields: dict, scratch: int, scratch_fn: str, **args) -> CKernel:
    cfg = _init(fields)
    return CKernel("grad.c.j2", macro, {"cfg": cfg, **args}, scratch_bytes=scratch,
                   scratch_check=f"{scratch_fn}(&(const {struct}){cfg})")


def _features_last(cop: COp, t: CTensor) -> None:
    if t.layout.perm[-1] != t.rank - 1:
        raise cop.fail(f"the C backend needs the features on the last stored axis; {t.ref} is rank {t.rank} "
                       "(reshape it to rank 2 first)")


# --- layer gradients (GEMMs) ------------------------------------------------------------------


def linear_grad_x(cop: COp) -> CKernel:
    """dx = scale · dy · e(W): runtime ``bd_linear_grad_x``."""
    dy, w = cop.ins
    _features_last(cop, dy)
    m, k = w.shape
    max_rows = _concrete(dy.shape[:-1], cop.max_batch)
    fields = {"M": m, "K": k, "other_type": DTYPE_CODE[w.dtype], "scale": _dbl(cop.attrs["scale"]),
              "max_rows": max_rows, "max_threads": cop.max_threads}
    return _call("linear_grad_x", "bd_lgrad", fields, gemm_scratch(max_rows, k, m, cop.max_threads),
                 "bd_linear_grad_x_scratch", rows=rows_of(dy))


def linear_grad_w(cop: COp) -> CKernel:
    """dW = scale · dyᵀ · e(x): runtime ``bd_linear_grad_w``."""
    dy, x = cop.ins
    _features_last(cop, dy)
    _features_last(cop, x)
    m, k = cop.out.shape
    max_rows = _concrete(dy.shape[:-1], cop.max_batch)
    fields = {"M": m, "K": k, "other_type": DTYPE_CODE[x.dtype], "scale": _dbl(cop.attrs["scale"]),
              "max_rows": max_rows, "max_threads": cop.max_threads}
    return _call("linear_grad_w", "bd_lgrad", fields, gemm_scratch(m, k, max_rows, cop.max_threads),
                 "bd_linear_grad_w_scratch", rows=rows_of(dy))


def _conv_fields(cop: COp, x_shape, dy_shape, w_shape, other) -> dict:
    a = cop.attrs
    _, c, h, wd = x_shape
    _, m, oh, ow = dy_shape
    return {"C": c, "H": h, "W": wd, "M": m, "OH": oh, "OW": ow, "kh": w_shape[2], "kw": w_shape[3],
            "sh": a["stride"][0], "sw": a["stride"][1], "dh": a["dilation"][0], "dw": a["dilation"][1],
            "pt": a["pad"][0], "pl": a["pad"][1], "groups": a["groups"], "other_type": DTYPE_CODE[other.dtype],
            "scale": _dbl(a["scale"]), "pad_value": scalar_literal(float(a.get("pad_value", 0.0)), "float"),
            "max_batch": _concrete(dy_shape[:1], cop.max_batch), "max_threads": cop.max_threads}


def conv2d_grad_x(cop: COp) -> CKernel:
    """The transposed convolution dx = scale · Σ dy · e(W): runtime ``bd_conv2d_grad_x``."""
    dy, w = cop.ins
    f = _conv_fields(cop, cop.out.shape, dy.shape, w.shape, w)
    mg, cg = f["M"] // f["groups"], f["C"] // f["groups"]
    scratch = gemm_scratch(f["max_batch"] * f["H"] * f["W"], cg, f["kh"] * f["kw"] * mg, cop.max_threads)
    return _call("conv2d_grad_x", "bd_cgrad", f, scratch, "bd_conv2d_grad_x_scratch", batch=dy.lead)


def conv2d_grad_w(cop: COp) -> CKernel:
    """The correlation dW = scale · Σ dy · e(xpad): runtime ``bd_conv2d_grad_w``."""
    dy, x = cop.ins
    f = _conv_fields(cop, x.shape, dy.shape, cop.out.shape, x)
    mg, cg = f["M"] // f["groups"], f["C"] // f["groups"]
    scratch = gemm_scratch(mg, f["kh"] * f["kw"] * cg, f["max_batch"] * f["OH"] * f["OW"], cop.max_threads)
    return _call("conv2d_grad_w", "bd_cgrad", f, scratch, "bd_conv2d_grad_w_scratch", batch=dy.lead)


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
    """d(u) of the threshold backward, a double C expression (SPEC §3, grad_ops.ThresholdGrad)."""
    if mode == "tanh":
        return f"bd_dtanh({u})"
    if mode == "box":
        return f"(fabs({u}) <= 1.0 ? 1.0 : 0.0)"
    return f"fmax(0.0, 2.0 - 2.0 * fabs({u}))"


def threshold_grad(cop: COp) -> CKernel:
    """δLoss/δs = dy · d(α(s - τ)) with d the tanh, box or Bi-Real derivative (SPEC §3);
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
    integer_tau = tau.dtype.is_int if tau is not None else float(scalar).is_integer()
    if x.dtype.is_int and integer_tau and dy.layout.perm == x.layout.perm:
        return _threshold_grad_table(cop, alpha, mode)

    def expr(idx: list[str]) -> str:
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
    channel = "0"
    if tau is not None or ge is not None:  # the channel (axis 1) of flat storage element bd_i
        q = x.layout.perm.index(1)
        inner = cmul(*x.layout.storage_dims[q + 1:])
        channel = f"((bd_i / ({inner})) % {x.shape[1]})" if inner != "1" else f"(bd_i % {x.shape[1]})"
    key = f"(int64_t){x.name}[bd_i]" + (f" - (int64_t){tau.name}[{channel}]" if tau is not None
                                         else f" - (int64_t){int(cop.attrs['tau'])}")
    sign = f" * ({ge.load([channel])} ? 1.0 : -1.0)" if ge is not None else ""
    lines = [
        "double *bd_lut = (double *)scratch;",
        "int64_t bd_lo = INT64_MAX, bd_hi = INT64_MIN;",
        f"for (long bd_i = 0; bd_i < {count}; ++bd_i) {{",
        f"    const int64_t bd_k = {key};",
        "    if (bd_k < bd_lo) bd_lo = bd_k;",
        "    if (bd_k > bd_hi) bd_hi = bd_k;",
        "}",
        f"if ({count} > 0 && bd_hi - bd_lo < {LUT_ENTRIES}) {{",
        "    for (int64_t bd_k = bd_lo; bd_k <= bd_hi; ++bd_k)",
        f"        bd_lut[bd_k - bd_lo] = {_surrogate(mode, f'({alpha} * (double)bd_k)')};",
        f"    BD_OMP_FOR_IF({count} > 32768)",
        f"    for (long bd_i = 0; bd_i < {count}; ++bd_i)",
        f"        {out.name}[bd_i] = (float)((double){dy.name}[bd_i] * bd_lut[({key}) - bd_lo]{sign});",
        "} else {",
        f"    for (long bd_i = 0; bd_i < {count}; ++bd_i)",
        f"        {out.name}[bd_i] = (float)((double){dy.name}[bd_i] * "
        f"{_surrogate(mode, f'({alpha} * (double)({key}))')}{sign});",
        "}",
    ]
    return _inplace(CKernel("elementwise.c.j2", "body", {"code": "\n".join(lines) + "\n"},
                            scratch_bytes=8 * LUT_ENTRIES))


def channel_scale(cop: COp, factor: Callable[[list[str]], str]) -> CKernel:
    """dx = dy · factor(channel) in double (``factor`` gives a double C expression of the
    channel index, axis 1)."""
    dy = cop.ins[0]
    return _inplace(map_kernel(cop, lambda idx: f"((double){dy.load(idx)} * {factor([idx[1]])})"))


def global_avgpool_grad(cop: COp) -> CKernel:
    """dx[n, c, h, w] = dy[n, c, 0, 0] / (H·W)."""
    dy, out = cop.ins[0], cop.out
    hw = out.shape[2] * out.shape[3]
    return map_kernel(cop, lambda idx: f"((double){dy.load([idx[0], idx[1], '0', '0'])} / {hw}.0)")


def slice_axis(cop: COp) -> CKernel:
    """y[idx] = x[idx + start along axis]."""
    x = cop.ins[0]
    axis, start = cop.attrs["axis"] % x.rank, cop.attrs["start"]

    def expr(idx: list[str]) -> str:
        src = list(idx)
        src[axis] = f"({idx[axis]} + {start})" if start else idx[axis]
        return x.load(src)

    return map_kernel(cop, expr)


# --- reductions ---------------------------------------------------------------------------------


def _loops(t: CTensor, idx: list[str], body: list[str]) -> list[str]:
    """A loop nest over every logical element of ``t`` in its storage order."""
    lines, depth = [], 0
    for axis in t.layout.perm:
        d = t.shape[axis]
        lines.append("    " * depth + f"for (long {idx[axis]} = 0; {idx[axis]} < {d if isinstance(d, int) else 'n'};"
                     f" ++{idx[axis]}) {{")
        depth += 1
    lines += ["    " * depth + b for b in body]
    while depth:
        depth -= 1
        lines.append("    " * depth + "}")
    return lines


def reduce_into(cop: COp, src: CTensor, value: Callable[[list[str]], str],
                out_index: Callable[[list[str]], list[str]]) -> CKernel:
    """y[out_index(idx)] = Σ value(idx) over every element idx of ``src``, summed in
    double (scratch) and rounded once to f32."""
    y = cop.out
    idx = [f"i{a}" for a in range(src.rank)]
    off, _ = y.layout.offset(out_index(idx))
    count = y.layout.count_expr()
    lines = ["double *bd_acc = (double *)scratch;",
             f"for (long bd_i = 0; bd_i < {count}; ++bd_i) bd_acc[bd_i] = 0.0;"]
    lines += _loops(src, idx, [f"bd_acc[{off}] += {value(idx)};"])
    lines.append(f"for (long bd_i = 0; bd_i < {count}; ++bd_i) {y.name}[bd_i] = (float)bd_acc[bd_i];")
    scratch = _r(8 * y.layout.count(cop.max_batch))
    return CKernel("elementwise.c.j2", "body", {"code": "\n".join(lines) + "\n"}, scratch_bytes=scratch)


def broadcast_index(src: CTensor, target_shape) -> Callable[[list[str]], list[str]]:
    """Index of the target (shape ``target_shape``, right-aligned numpy broadcasting)
    that element ``idx`` of ``src`` is summed into."""
    lead = src.rank - len(target_shape)
    return lambda idx: ["0" if d == 1 else idx[lead + a] for a, d in enumerate(target_shape)]


# --- row-wise ops (softmax family, losses) ------------------------------------------------------


def _rows(x: CTensor, axis: int, body: Callable[[list[str], str], list[str]]) -> str:
    """Loops over every axis but ``axis``; ``body(idx, loop)`` gives the statements of one
    row, ``loop`` the for-header over ``axis`` (idx[axis] is its variable)."""
    idx = [f"i{a}" for a in range(x.rank)]
    lines, depth = [], 0
    for a in range(x.rank):
        if a != axis:
            d = x.shape[a]
            lines.append("    " * depth + f"for (long {idx[a]} = 0; {idx[a]} < {d if isinstance(d, int) else 'n'}; "
                         f"++{idx[a]}) {{")
            depth += 1
    d = x.shape[axis]
    loop = f"for (long {idx[axis]} = 0; {idx[axis]} < {d if isinstance(d, int) else 'n'}; ++{idx[axis]})"
    lines += ["    " * depth + s for s in body(idx, loop)]
    while depth:
        depth -= 1
        lines.append("    " * depth + "}")
    return "\n".join(lines) + "\n"


def softmax_grad(cop: COp, log: bool) -> CKernel:
    """softmax: dx = y · (dy - Σ dy·y); log-softmax: dx = dy - exp(y) · Σ dy (sums in double)."""
    dy, y = cop.ins
    out = cop.out
    axis = cop.attrs["axis"] % y.rank

    def body(idx, loop):
        d, v = f"(double){dy.load(idx)}", f"(double){y.load(idx)}"
        o, _ = out.layout.offset(idx)
        if log:
            return ["double bd_s = 0.0;", f"{loop} bd_s += {d};",
                    f"{loop} {out.name}[{o}] = (float)({d} - exp({v}) * bd_s);"]
        return ["double bd_s = 0.0;", f"{loop} bd_s += {d} * {v};",
                f"{loop} {out.name}[{o}] = (float)({v} * ({d} - bd_s));"]

    return code_kernel(_rows(y, axis, body))


def _label_check(cop: COp) -> tuple[str, str]:
    z, t = cop.ins[0], cop.ins[1]
    classes = z.shape[1]
    code = (f"for (long bd_i = 0; bd_i < {rows_of(z)}; ++bd_i)\n"
            f"    if ({t.name}[bd_i] < 0 || {t.name}[bd_i] >= {classes}) return 1;\n")
    return code, f"a label is out of range: there are {classes} classes (0 to {classes - 1})"


def softmax_xent(cop: COp, grad: bool) -> CKernel:
    """Softmax cross-entropy of logits [N, C] and labels [N] (log-softmax in double):
    the loss Σ_k -log p[k, y_k] (/N for "mean") or its gradient p - onehot (/N)."""
    z, t = cop.ins
    classes = z.shape[1]
    mean = cop.attrs["reduction"] == "mean"
    rows = rows_of(z)
    lines = [] if grad else ["double bd_total = 0.0;"]
    lines += [f"for (long bd_k = 0; bd_k < {rows}; ++bd_k) {{",
              f"    const float *bd_z = {z.name} + bd_k * {classes};",
              "    double bd_m = -HUGE_VAL, bd_s = 0.0;",
              f"    for (long bd_c = 0; bd_c < {classes}; ++bd_c) if ((double)bd_z[bd_c] > bd_m || bd_z[bd_c] != "
              "bd_z[bd_c]) bd_m = (double)bd_z[bd_c];",
              f"    for (long bd_c = 0; bd_c < {classes}; ++bd_c) bd_s += exp((double)bd_z[bd_c] - bd_m);",
              "    const double bd_log_s = log(bd_s);"]
    if grad:
        scale = f" / (double)({rows})" if mean else ""
        lines += [f"    for (long bd_c = 0; bd_c < {classes}; ++bd_c) {{",
                  "        double bd_g = exp(((double)bd_z[bd_c] - bd_m) - bd_log_s);",
                  f"        if (bd_c == {t.name}[bd_k]) bd_g -= 1.0;",
                  f"        {cop.out.name}[bd_k * {classes} + bd_c] = (float)(bd_g{scale});",
                  "    }", "}"]
    else:
        scale = f" / (double)({rows})" if mean else ""
        lines += [f"    bd_total -= ((double)bd_z[{t.name}[bd_k]] - bd_m) - bd_log_s;", "}",
                  f"{cop.out.name}[0] = (float)(bd_total{scale});"]
    check, message = _label_check(cop)
    return CKernel("elementwise.c.j2", "body", {"code": "\n".join(lines) + "\n"}, input_check=check,
                   input_check_message=message, input_check_operands=(1,))


def elementwise_loss(cop: COp, per_element: Callable[[str], str]) -> CKernel:
    """loss = Σ f(p - t) over all elements (/their number for "mean"), in double."""
    p, t = cop.ins
    count = p.layout.count_expr()
    mean = cop.attrs["reduction"] == "mean"
    lines = ["double bd_total = 0.0;",
             f"for (long bd_i = 0; bd_i < {count}; ++bd_i) {{",
             f"    const double bd_d = (double){p.name}[bd_i] - (double){t.name}[bd_i];",
             f"    bd_total += {per_element('bd_d')};", "}",
             f"{cop.out.name}[0] = (float)(bd_total{f' / (double)({count})' if mean else ''});"]
    return code_kernel("\n".join(lines) + "\n")


def elementwise_loss_grad(cop: COp, derivative: Callable[[str], str]) -> CKernel:
    """dp = f'(p - t) (/ number of elements for "mean"), in double."""
    p, t = cop.ins
    count = p.layout.count_expr()
    div = f" / (double)({count})" if cop.attrs["reduction"] == "mean" else ""
    return code_kernel(f"for (long bd_i = 0; bd_i < {count}; ++bd_i) {{\n"
                       f"    const double bd_d = (double){p.name}[bd_i] - (double){t.name}[bd_i];\n"
                       f"    {cop.out.name}[bd_i] = (float)(({derivative('bd_d')}){div});\n}}\n")


# --- pooling gradients --------------------------------------------------------------------------


def _pool_geometry(cop: COp, x_hw, y_hw) -> dict:
    a = cop.attrs
    dil = a.get("dilation", [1, 1])
    c = cop.out.shape[1]
    return {"N": cop.ins[0].lead, "C": c, "H": x_hw[0], "W": x_hw[1], "OH": y_hw[0], "OW": y_hw[1],
            "kh": a["kernel"][0], "kw": a["kernel"][1], "sh": a["stride"][0], "sw": a["stride"][1],
            "dh": dil[0], "dw": dil[1], "pt": a["pad"][0], "pl": a["pad"][1], "pb": a["pad"][2], "pr": a["pad"][3]}


def maxpool2d_grad(cop: COp) -> CKernel:
    """Each dy to the first maximal element of its window (row-major; b1 read as ±1;
    positions outside the input never win); overlapping windows add up."""
    dy, x = cop.ins
    g = _pool_geometry(cop, x.shape[2:], dy.shape[2:])
    value = x.load(["bd_b", "bd_c", "bd_ih", "bd_iw"])
    if x.dtype.is_bool:
        value = f"(2.0 * {value} - 1.0)"
    disjoint = g["sh"] >= (g["kh"] - 1) * g["dh"] + 1 and g["sw"] >= (g["kw"] - 1) * g["dw"] + 1
    return CKernel("grad.c.j2", "maxpool2d_grad", {"g": g, "value": f"(double){value}", "parallel": disjoint})


def avgpool2d_grad(cop: COp) -> CKernel:
    """Each dy / count (the forward's count) added to the counted positions of its window."""
    dy = cop.ins[0]
    g = _pool_geometry(cop, cop.out.shape[2:], dy.shape[2:])
    return CKernel("grad.c.j2", "avgpool2d_grad", {"g": g, "include_pad": bool(cop.attrs["count_include_pad"])})


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
    return code_kernel(f"{cop.out.name}[0] = (float)({value});\n")


def flip_update(cop: COp) -> CKernel:
    """The Boolean optimizer step: runtime ``bd_flip_update`` (in place on the params)."""
    w, m, beta, q, eta = cop.ins
    if not w.layout.packed:
        raise cop.fail(f"a b1 param of rank 0 ({w.ref}) cannot be trained in C")
    d = w.layout.phys_dims[-1]
    runs = cmul(*w.layout.phys_dims[:-1])
    return code_kernel(f"bd_flip_update(ex, {runs}, {d}, {w.name}, {m.name}, {beta.name}, {q.name}, {eta.name});\n")


def adam_update(cop: COp) -> CKernel:
    """Adam in double: runtime ``bd_adam_update`` (p, m, v, g share one layout)."""
    p, m, v, g, lr, step = cop.ins
    a = cop.attrs
    args = ", ".join(_dbl(a[k]) for k in ("beta1", "beta2", "eps", "weight_decay"))
    return code_kernel(f"bd_adam_update(ex, {p.layout.count_expr()}, {p.name}, {m.name}, {v.name}, {g.name}, "
                       f"{lr.name}, {step.name}, {args});\n")


def increment(cop: COp) -> CKernel:
    """step <- step + 1, saturating at the i32 maximum."""
    s = cop.ins[0].name
    return code_kernel(f"if ({s}[0] < INT32_MAX) {s}[0] += 1;\n")

