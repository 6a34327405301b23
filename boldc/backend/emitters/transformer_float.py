"""Emitters of the transformer's float ops: ``sub``, ``div``, ``erf``, ``gelu``,
``layernorm``, ``reduce_sum``, ``reduce_mean`` and their gradient ops. The elementwise ones
are a C expression of the operands' values (``kernels.elementwise``, numpy broadcasting),
with the double formula of the op's ``evaluate`` written in the same order and with the same
constants (their ``repr``); the row-wise ones are in ``layernorm_kernels``."""

from __future__ import annotations

from boldc.backend import grad_kernels, kernels, layernorm_kernels
from boldc.backend.ckernel import scalar_literal
from boldc.backend.emitters.forward import f32_arith, wide_arith
from boldc.backend.emitters.registry import emits
from boldc.backend.emitters.training import summed_to_output
from boldc.ops.activation_ops import GELU_CUBIC, GELU_CUBIC3, INV_SQRT_2PI, SQRT1_2, SQRT_2_OVER_PI
from boldc.ops.float_grad_ops import TWO_OVER_SQRT_PI
from boldc.ops.reduce_ops import normalized_axes


def _d(value: float) -> str:
    return scalar_literal(value, "double")


# --- forward -------------------------------------------------------------------------------------


emits("sub")(wide_arith("-"))
emits("div")(f32_arith("/"))


@emits("erf")
def erf(cop):
    return kernels.elementwise(cop, lambda x: f"erf((double){x})")


def _gelu_argument(x: str) -> str:
    """u = √(2/π)·(x + 0.044715·(x·x·x)) of the tanh form, of a double expression ``x``."""
    return f"({_d(SQRT_2_OVER_PI)} * ({x} + {_d(GELU_CUBIC)} * ({x} * {x} * {x})))"


@emits("gelu")
def gelu(cop):
    """``activation_ops.gelu_values``: 0.5·x·erfc(-(x·SQRT1_2)), or x / (1 + bd_exp(-2u))."""
    tanh_form = cop.attrs["approximate"] == "tanh"

    def value(v):
        x = f"((double){v})"
        if tanh_form:
            return f"({x} / (1.0 + bd_exp(-2.0 * {_gelu_argument(x)})))"
        return f"(0.5 * {x} * erfc(-({x} * {_d(SQRT1_2)})))"

    return kernels.elementwise(cop, value)


@emits("layernorm")
def layernorm(cop):
    return layernorm_kernels.layernorm(cop)


@emits("reduce_sum")
def reduce_sum(cop):
    return layernorm_kernels.reduce(cop, normalized_axes(cop.attrs["axes"], cop.ins[0].rank), mean=False)


@emits("reduce_mean")
def reduce_mean(cop):
    return layernorm_kernels.reduce(cop, normalized_axes(cop.attrs["axes"], cop.ins[0].rank), mean=True)


# --- gradients -----------------------------------------------------------------------------------


@emits("erf_grad")
def erf_grad(cop):
    return grad_kernels.unary_grad(cop, lambda x: f"{_d(TWO_OVER_SQRT_PI)} * bd_exp(-({x} * {x}))")


@emits("gelu_grad")
def gelu_grad(cop):
    form = _tanh_form if cop.attrs["approximate"] == "tanh" else _exact_form
    return grad_kernels.unary_grad(cop, form)


def _exact_form(x: str) -> str:
    """gelu'(x) = 0.5·erfc(-(x·SQRT1_2)) + x·(bd_exp(-0.5·(x·x))·INV_SQRT_2PI) of a double ``x``."""
    return f"0.5 * erfc(-({x} * {_d(SQRT1_2)})) + {x} * (bd_exp(-0.5 * ({x} * {x})) * {_d(INV_SQRT_2PI)})"


def _tanh_form(x: str) -> str:
    """gelu'(x) of the tanh form (``GeluGrad``): 1/(1 + bd_exp(-2u)) + 0.5·x·bd_dtanh(u)·(...)."""
    u = _gelu_argument(x)
    return (f"1.0 / (1.0 + bd_exp(-2.0 * {u})) + 0.5 * {x} * bd_dtanh({u}) * "
            f"({_d(SQRT_2_OVER_PI)} * (1.0 + {_d(GELU_CUBIC3)} * ({x} * {x})))")


@emits("sub_grad_b")
def sub_grad_b(cop):
    return summed_to_output(cop, lambda v: f"(-(double){v})")


@emits("div_grad_b")
def div_grad_b(cop):
    dy, a, b = cop.ins

    def operand(t, idx):
        v = t.load(t.at(idx, dy.rank))
        return f"(double)(2 * {v} - 1)" if t.dtype.is_bool else f"(double){v}"

    def value(idx):
        bv = operand(b, idx)
        return f"(-((double){dy.load(idx)} * {operand(a, idx)}) / ({bv} * {bv}))"

    return grad_kernels.reduce_into(cop, dy, value, grad_kernels.broadcast_index(dy, b.shape))


@emits("layernorm_grad_x")
def layernorm_grad_x(cop):
    return layernorm_kernels.layernorm_grad_x(cop)


@emits("layernorm_grad_scale")
def layernorm_grad_scale(cop):
    return layernorm_kernels.layernorm_grad_scale(cop)


@emits("reduce_mean_grad")
def reduce_mean_grad(cop):
    return layernorm_kernels.reduce_mean_grad(cop, normalized_axes(cop.attrs["axes"], cop.out.rank))
