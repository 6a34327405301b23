"""Emitters of the forward ops: layers, activations, elementwise arithmetic, pooling and
shapes. The heavy layers call the runtime through ``kernels``; elementwise ops are a C
expression of their operands' values (``kernels.elementwise``), computed as numpy does."""

from __future__ import annotations

from boldc.backend import grad_kernels, kernels, lrn_kernels, pool_kernels, resize_kernels, shuffle_kernels
from boldc.backend.emitters.registry import emits

# --- layers and the threshold: the runtime kernels ------------------------------------------------

emits("conv2d", "mconv2d")(kernels.fconv2d)
emits("linear", "mlinear")(kernels.flinear)
emits("conv_transpose2d")(grad_kernels.conv_transpose2d)  # the GEMM of conv2d_grad_x, x as the signal
emits("bconv2d")(kernels.bconv2d)
emits("blinear")(kernels.blinear)
emits("threshold")(kernels.threshold)
emits("cast")(kernels.cast)
emits("flatten", "reshape")(kernels.reshape)
emits("resize")(resize_kernels.resize)
emits("depth_to_space")(shuffle_kernels.depth_to_space)
emits("space_to_depth")(shuffle_kernels.space_to_depth)
emits("expand")(kernels.expand)
emits("lrn")(lrn_kernels.lrn)


@emits("batchnorm")
def batchnorm(cop):
    return kernels.batchnorm(cop, cop.attrs["epsilon"])


# --- elementwise -----------------------------------------------------------------------------------


@emits("relu")
def relu(cop):
    return kernels.elementwise(cop, lambda x: f"({x} < 0 ? 0 : {x})")


@emits("leaky_relu")
def leaky_relu(cop):
    alpha = kernels.scalar_literal(cop.attrs["alpha"], "float")  # numpy multiplies by float32(alpha)
    return kernels.elementwise(cop, lambda x: f"({x} >= 0.0f ? {x} : {x} * {alpha})")


@emits("prelu")
def prelu(cop):
    return kernels.elementwise(cop, lambda x, slope: f"({x} >= 0.0f ? {x} : {x} * {slope})")


@emits("clip")
def clip(cop):
    lo, hi = (kernels.scalar_literal(cop.attrs[k], "float") for k in ("min", "max"))
    return kernels.elementwise(cop, lambda x: f"(({x} < {lo} ? {lo} : {x}) > {hi} ? {hi} : ({x} < {lo} ? {lo} : {x}))")


@emits("sigmoid")
def sigmoid(cop):
    return kernels.elementwise(cop, lambda x: f"(0.5 * (1.0 + tanh(0.5 * (double){x})))")


@emits("tanh")
def tanh(cop):
    return kernels.elementwise(cop, lambda x: f"tanh((double){x})")


@emits("exp")
def exp(cop):
    return kernels.elementwise(cop, lambda x: f"exp((double){x})")


def wide_arith(symbol: str):
    """The emitter of ``a symbol b`` with ``add``'s element types: both operands cast to the
    result's wide type (an exact integer result, or one f32 rounding of the double one)."""

    def emit(cop):
        wide = kernels.wide_ctype(cop.out.dtype)
        return kernels.elementwise(cop, lambda a, b: f"(({wide}){a} {symbol} ({wide}){b})")

    return emit


def f32_arith(symbol: str):
    """The emitter of ``a symbol b`` in f32, both operands cast to float (as numpy computes
    ``mul`` and ``div``)."""
    return lambda cop: kernels.elementwise(cop, lambda a, b: f"((float){a} {symbol} (float){b})")


emits("add")(wide_arith("+"))
emits("mul")(f32_arith("*"))


@emits("softmax")
def softmax(cop):
    return kernels.softmax(cop, cop.attrs["axis"])


@emits("log_softmax")
def log_softmax(cop):
    return kernels.softmax(cop, cop.attrs["axis"], log=True)


# --- pooling and shapes ----------------------------------------------------------------------------


@emits("maxpool2d")
def maxpool2d(cop):
    return pool_kernels.pool(cop, "max")


@emits("bmaxpool2d")
def bmaxpool2d(cop):
    return pool_kernels.pool(cop, "or")


@emits("avgpool2d")
def avgpool2d(cop):
    return pool_kernels.pool(cop, "avg")


@emits("global_avgpool")
def global_avgpool(cop):
    return pool_kernels.global_pool(cop, "avg")


@emits("global_maxpool")
def global_maxpool(cop):
    return pool_kernels.global_pool(cop, "max")


@emits("concat")
def concat(cop):
    return kernels.concat(cop, cop.attrs["axis"])


@emits("transpose")
def transpose(cop):
    return kernels.transpose(cop, cop.attrs["perm"])


@emits("pad")
def pad(cop):
    return kernels.pad(cop, cop.attrs["pads"], cop.attrs["value"])
