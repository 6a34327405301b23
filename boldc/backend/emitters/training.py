"""Emitters of the training ops: gradients, losses and optimizer updates, rendered by the
helpers of ``grad_kernels``."""

from __future__ import annotations

from boldc.backend import grad_kernels, loss_kernels, lrn_kernels, pool_kernels, resize_kernels, signal_kernels
from boldc.backend.emitters.registry import MustLower, emits, not_emitted

# --- the runtime GEMMs (an f32 or an integer signal), the optimizer, the kernels with a helper -----


def _by_signal(f32, integer):
    """The emitter of a layer gradient: ``integer`` for an integer signal (operand 0), else ``f32``."""
    return lambda cop: (integer if signal_kernels.is_integer_signal(cop.ins[0]) else f32)(cop)


emits("linear_grad_x")(_by_signal(grad_kernels.linear_grad_x, signal_kernels.linear_grad_x_int))
emits("linear_grad_w")(_by_signal(grad_kernels.linear_grad_w, signal_kernels.linear_grad_w_int))
emits("conv2d_grad_x")(_by_signal(grad_kernels.conv2d_grad_x, signal_kernels.conv2d_grad_x_int))
emits("conv2d_grad_w")(_by_signal(grad_kernels.conv2d_grad_w, signal_kernels.conv2d_grad_w_int))
emits("quantize_signal")(signal_kernels.quantize_signal)
emits("batchnorm_train")(signal_kernels.batchnorm_train)
emits("batchnorm_train_grad_x")(signal_kernels.batchnorm_train_grad_x)
emits("batchnorm_train_grad_scale")(signal_kernels.batchnorm_train_grad_scale)
emits("threshold_grad")(grad_kernels.threshold_grad)
emits("slice_axis")(grad_kernels.slice_axis)
emits("maxpool2d_grad")(pool_kernels.maxpool2d_grad)
emits("avgpool2d_grad")(pool_kernels.avgpool2d_grad)
emits("global_avgpool_grad")(grad_kernels.global_avgpool_grad)
emits("resize_grad")(resize_kernels.resize_grad)
emits("lrn_grad")(lrn_kernels.lrn_grad)
emits("lr_schedule")(grad_kernels.lr_schedule)
emits("adam_update")(grad_kernels.adam_update)
emits("increment")(grad_kernels.increment)


# --- grad ops ---------------------------------------------------------------------

not_emitted("param_grad", MustLower("param_grad only hands gradients over: run insert-optimizer, which turns it "
                                    "into optimizer updates"))


@emits("channel_sum")
def channel_sum(cop):
    dy = cop.ins[0]
    axis = cop.attrs["axis"] % dy.rank
    if signal_kernels.is_integer_signal(dy):
        return signal_kernels.channel_sum_int(cop, axis)
    return grad_kernels.reduce_into(cop, dy, lambda idx: f"(double){dy.load(idx)}", lambda idx: [idx[axis]])


def summed_to_output(cop, term):
    """Σ of ``term(dy value)`` (a double C expression) over the axes along which the output's
    shape was broadcast to dy's: ``sum_to`` and its negation ``sub_grad_b``."""
    dy = cop.ins[0]
    into = grad_kernels.broadcast_index(dy, cop.out.shape)
    return grad_kernels.reduce_into(cop, dy, lambda idx: term(dy.load(idx)), into)


@emits("sum_to")
def sum_to(cop):
    return summed_to_output(cop, lambda v: f"(double){v}")


# --- float grad ops ---------------------------------------------------------------


@emits("relu_grad")
def relu_grad(cop):
    return grad_kernels.unary_grad(cop, lambda x: f"({x} > 0.0 ? 1.0 : 0.0)")


@emits("softmax_grad")
def softmax_grad(cop):
    return grad_kernels.softmax_grad(cop, log=False)


@emits("leaky_relu_grad")
def leaky_relu_grad(cop):
    alpha = grad_kernels.scalar_literal(float(cop.attrs["alpha"]), "double")
    return grad_kernels.unary_grad(cop, lambda x: f"({x} >= 0.0 ? 1.0 : {alpha})")


@emits("clip_grad")
def clip_grad(cop):
    lo, hi = (grad_kernels.scalar_literal(float(cop.attrs[k]), "double") for k in ("min", "max"))
    return grad_kernels.unary_grad(cop, lambda x: f"({x} >= {lo} && {x} <= {hi} ? 1.0 : 0.0)")


@emits("sigmoid_grad")
def sigmoid_grad(cop):
    return grad_kernels.unary_grad(cop, lambda y: f"{y} * (1.0 - {y})")


@emits("tanh_grad")
def tanh_grad(cop):
    return grad_kernels.unary_grad(cop, lambda y: f"1.0 - {y} * {y}")


@emits("prelu_grad_x")
def prelu_grad_x(cop):
    return grad_kernels.unary_grad(cop, lambda x, slope: f"({x} >= 0.0 ? 1.0 : (double){slope})")


@emits("prelu_grad_slope")
def prelu_grad_slope(cop):
    dy, x, slope = cop.ins

    def value(idx):
        v = f"(double){x.load(idx)}"
        return f"((double){dy.load(idx)} * ({v} < 0.0 ? {v} : 0.0))"

    return grad_kernels.reduce_into(cop, dy, value, grad_kernels.broadcast_index(dy, slope.shape))


@emits("log_softmax_grad")
def log_softmax_grad(cop):
    return grad_kernels.softmax_grad(cop, log=True)


@emits("batchnorm_grad_x")
def batchnorm_grad_x(cop):
    _, scale, var = cop.ins
    eps = grad_kernels.scalar_literal(float(cop.attrs["epsilon"]), "double")
    return grad_kernels.channel_scale(cop, lambda c: f"((double){scale.load(c)} / sqrt((double){var.load(c)} + {eps}))")


@emits("batchnorm_grad_scale")
def batchnorm_grad_scale(cop):
    dy, x, mean, var = cop.ins
    eps = grad_kernels.scalar_literal(float(cop.attrs["epsilon"]), "double")

    def value(idx):
        c = [idx[1]]
        xhat = f"(((double){x.load(idx)} - (double){mean.load(c)}) / sqrt((double){var.load(c)} + {eps}))"
        return f"((double){dy.load(idx)} * {xhat})"

    return grad_kernels.reduce_into(cop, dy, value, lambda idx: [idx[1]])


# --- loss ops ---------------------------------------------------------------------


@emits("softmax_xent")
def softmax_xent(cop):
    return loss_kernels.softmax_xent(cop)


@emits("softmax_xent_grad")
def softmax_xent_grad(cop):
    return signal_kernels.softmax_xent_grad(cop, loss_kernels.xent_positions(cop), loss_kernels.label_check(cop))


@emits("mse")
def mse(cop):
    return loss_kernels.elementwise_loss(cop, lambda d: f"{d} * {d}")


@emits("mse_grad")
def mse_grad(cop):
    return loss_kernels.elementwise_loss_grad(cop, lambda d: f"2.0 * {d}")


@emits("l1")
def l1(cop):
    return loss_kernels.elementwise_loss(cop, lambda d: f"fabs({d})")


@emits("l1_grad")
def l1_grad(cop):
    return loss_kernels.elementwise_loss_grad(cop, lambda d: f"({d} > 0.0 ? 1.0 : ({d} < 0.0 ? -1.0 : 0.0))")


# --- optim ops --------------------------------------------------------------------


@emits("flip_update")
def flip_update(cop):
    accumulator = cop.ins[1]
    return (signal_kernels.flip_update_i16 if accumulator.dtype.is_int else grad_kernels.flip_update)(cop)
