"""Resizing of feature maps (ONNX Resize and Upsample): ``resize`` and its gradient
``resize_grad``.

Both ops resize H and W of an NCHW map, axis by axis. Each output position o along an
axis reads a few source positions ("taps") with weights; ``axis_taps`` computes them once
per axis (the interpreter, the C emitter and the torch engine all use it, so every backend
reads the same pixels with the same weights):

1. the source coordinate x of o by the ``coordinate_transformation_mode`` (ONNX's formulas,
   with ``scale`` the ``scales`` attribute, or out/in when it is empty):
   half_pixel (o + ½)/scale - ½; pytorch_half_pixel the same, 0 when out = 1;
   align_corners o·(in - 1)/(out - 1), 0 when out = 1; asymmetric o/scale;
   tf_half_pixel_for_nn (o + ½)/scale; half_pixel_symmetric (o + ½)/scale - ½ + (in/2)·(1 - out/(scale·in));
2. nearest: one tap, x rounded by ``nearest_mode`` (round_prefer_floor ⌈x - ½⌉,
   round_prefer_ceil ⌊x + ½⌋, floor, ceil), clamped to [0, in - 1], weight 1;
   linear: x clamped to [0, in - 1], taps i0 = ⌊x⌋ and i1 = min(i0 + 1, in - 1) with the
   weights 1 - (x - i0) and x - i0.

The coordinate is computed exactly: rational arithmetic on the integer sizes and the scale
taken as the decimal number it is written as (``scale_of``: 0.6 is 3/5), so the ties of
``nearest_mode`` are real ties; the weights are then rounded once to float64.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from boldc.ir.types import DType, TensorType
from boldc.ir.works import ARITH, BACKWARD, NO_OPS, add_op, per_element, stream
from boldc.ops.common import expect_dtype, expect_rank, expect_static
from boldc.ops.grad_ops import INPUT_HW, GradOp, as_f32, expect_signal
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import Gradient

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
                    "half_pixel_symmetric")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")

RESIZE_ATTRS = (
    Attr("mode", "str", "nearest", choices=("nearest", "linear"), doc="nearest: a gather; linear: bilinear"),
    Attr("coordinate_transformation_mode", "str", "half_pixel", choices=COORDINATE_MODES,
         doc="how an output position maps to a source coordinate (ONNX's formulas)"),
    Attr("nearest_mode", "str", "round_prefer_floor", choices=NEAREST_MODES, doc="rounding of nearest"),
    Attr("size", "ints", length=2, doc="[OH, OW] of the result"),
    Attr("scales", "floats", [], doc="[sh, sw] of the coordinate transform; [] = size / input size, exactly"),
)


def check_resize_attrs(attrs) -> None:
    if min(attrs["size"]) < 1:
        raise TypeCheck(f"size {attrs['size']} must be >= 1 in both dimensions")
    scales = attrs["scales"]
    if scales and (len(scales) != 2 or not all(math.isfinite(s) and s > 0 for s in scales)):
        raise TypeCheck(f"scales {scales} must be empty or two positive numbers [sh, sw]")


# --- the taps of one axis ------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisTaps:
    """For every output position o of one axis: the source positions ``index[o, t]`` and
    their weights ``weight[o, t]`` (t < taps: 1 for nearest, 2 for linear)."""

    index: np.ndarray  # int64 [out, taps]
    weight: np.ndarray  # float64 [out, taps]

    @property
    def taps(self) -> int:
        return self.index.shape[1]


def source_coordinate(o: int, in_len: int, out_len: int, scale: Fraction, mode: str) -> Fraction:
    """The exact source coordinate of output position ``o`` (the module docstring's formulas)."""
    half = Fraction(1, 2)
    if mode == "align_corners":
        return Fraction(0) if out_len == 1 else Fraction(o * (in_len - 1), out_len - 1)
    if mode == "asymmetric":
        return o / scale
    if mode == "tf_half_pixel_for_nn":
        return (o + half) / scale
    if mode == "pytorch_half_pixel" and out_len == 1:
        return Fraction(0)
    x = (o + half) / scale - half
    if mode == "half_pixel_symmetric":
        x += Fraction(in_len, 2) * (1 - out_len / (scale * in_len))
    return x


def _nearest(x: Fraction, rounding: str) -> int:
    if rounding == "round_prefer_floor":
        return math.ceil(x - Fraction(1, 2))
    if rounding == "round_prefer_ceil":
        return math.floor(x + Fraction(1, 2))
    return math.floor(x) if rounding == "floor" else math.ceil(x)


@functools.lru_cache(maxsize=256)
def _taps(in_len: int, out_len: int, scale: Fraction, mode: str, coord: str, rounding: str) -> AxisTaps:
    index, weight = [], []
    for o in range(out_len):
        x = source_coordinate(o, in_len, out_len, scale, coord)
        if mode == "nearest":
            index.append([min(max(_nearest(x, rounding), 0), in_len - 1)])
            weight.append([1.0])
            continue
        x = min(max(x, Fraction(0)), Fraction(in_len - 1))
        i0 = math.floor(x)
        frac = x - i0
        index.append([i0, min(i0 + 1, in_len - 1)])
        weight.append([float(1 - frac), float(frac)])
    idx, w = np.array(index, dtype=np.int64), np.array(weight, dtype=np.float64)
    idx.flags.writeable = False
    w.flags.writeable = False
    return AxisTaps(idx, w)


def scale_of(value: float) -> Fraction:
    """A scale as the exact decimal it is written as (its shortest repr): the IR text shows
    ``scales = [0.6]`` and the coordinate transform divides by 3/5, not by the binary float
    nearest to it (the ONNX frontend writes the shortest decimal of ONNX's float32)."""
    return Fraction(repr(float(value)))


def axis_scale(attrs, axis: int, in_len: int) -> Fraction:
    """The scale of the coordinate transform along spatial axis ``axis`` (0: H, 1: W)."""
    return scale_of(attrs["scales"][axis]) if attrs["scales"] else Fraction(attrs["size"][axis], in_len)


def axis_taps(attrs, axis: int, in_len: int) -> AxisTaps:
    """The taps of spatial axis ``axis`` (0: H, 1: W) of a resize from ``in_len`` positions."""
    return _taps(in_len, attrs["size"][axis], axis_scale(attrs, axis, in_len), attrs["mode"],
                 attrs["coordinate_transformation_mode"], attrs["nearest_mode"])


def hw_taps(attrs, in_hw) -> tuple[AxisTaps, AxisTaps]:
    """The taps of H and of W."""
    return axis_taps(attrs, 0, in_hw[0]), axis_taps(attrs, 1, in_hw[1])


def interpolate(x: np.ndarray, rows: AxisTaps, cols: AxisTaps) -> np.ndarray:
    """Bilinear interpolation in float64, in the order the C computes it: along W first,
    r[h, ow] = w0·x[h, j0] + w1·x[h, j1], then along H, y[oh, ow] = w0·r[i0, ow] + w1·r[i1, ow]."""
    x = np.asarray(x, dtype=np.float64)
    r = cols.weight[:, 0] * x[..., cols.index[:, 0]] + cols.weight[:, 1] * x[..., cols.index[:, 1]]
    return (rows.weight[:, 0, None] * r[..., rows.index[:, 0], :]
            + rows.weight[:, 1, None] * r[..., rows.index[:, 1], :])


def scatter_back(dy: np.ndarray, rows: AxisTaps, cols: AxisTaps, in_hw) -> np.ndarray:
    """The transpose of the resize, in float64 and in a fixed order: along W first, each
    dy[.., oh, ow] times its tap's weight added into t[.., oh, j] (ow ascending, taps in
    order), then along H, each t[.., oh, j] times its weight added into dx[.., i, j]
    (oh ascending, taps in order)."""
    dy = np.asarray(dy, dtype=np.float64)
    h, w = in_hw
    t = np.zeros(dy.shape[:3] + (w,))
    for ow in range(dy.shape[3]):
        for k in range(cols.taps):
            t[..., cols.index[ow, k]] += cols.weight[ow, k] * dy[..., ow]
    dx = np.zeros(dy.shape[:2] + (h, w))
    for oh in range(dy.shape[2]):
        for k in range(rows.taps):
            dx[:, :, rows.index[oh, k], :] += rows.weight[oh, k] * t[:, :, oh, :]
    return dx


# --- the ops ----------------------------------------------------------------------------------------


def _resize_attrs(op) -> dict:
    return {a.name: op.attrs[a.name] for a in RESIZE_ATTRS}


@register
class Resize(OpDef):
    """y[n, c, oh, ow] = Σ_a Σ_b wh[oh, a] · ww[ow, b] · x[n, c, ih[oh, a], iw[ow, b]] with the
    taps of ``axis_taps`` (the module docstring): ONNX Resize of H and W.

    nearest: a gather (one tap of weight 1) of any element type, the result of the input's
    type; linear: bilinear on f32, in float64 along W then along H (``interpolate``),
    rounded once to f32."""

    name = "resize"
    operands = ("x",)
    attrs = RESIZE_ATTRS

    @classmethod
    def check_attrs(cls, attrs):
        check_resize_attrs(attrs)

    def cost(self, ctx):
        """nearest: a copy; linear: per output 6 multiplications and 3 additions."""
        return per_element(ctx, NO_OPS if ctx.attrs["mode"] == "nearest" else ARITH.times(9))

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def backward(self, ctx, op, dys):
        """The transpose of the interpolation (``resize_grad``)."""
        x = op.operands[0]
        return [ctx.op("resize_grad", [dys[0]], {**_resize_attrs(op), "input_hw": list(x.type.shape[2:])},
                       grad_of=x)]

    def infer(self, types, attrs):
        x = types[0]
        expect_rank(x, 4, "input")
        expect_static(x.shape[2], "input height")
        expect_static(x.shape[3], "input width")
        if attrs["mode"] == "linear":
            expect_dtype(x, "float", "input of linear resize")
        return [x.with_shape((x.shape[0], x.shape[1], *attrs["size"]))]

    def evaluate(self, args, attrs):
        x = args[0]
        rows, cols = hw_taps(attrs, x.shape[2:])
        if attrs["mode"] == "nearest":
            return [np.ascontiguousarray(x[:, :, rows.index[:, 0]][:, :, :, cols.index[:, 0]])]
        return [as_f32(interpolate(x, rows, cols))]


@register
class ResizeGrad(GradOp):
    """dx[n, c, i, j] = Σ over the taps (oh, a), (ow, b) that read x[i, j] of
    wh[oh, a] · ww[ow, b] · dy[n, c, oh, ow]: the transpose of ``resize`` (nearest: each dy
    summed into its source pixel), in float64 along W then along H (``scatter_back``),
    rounded once to f32."""

    name = "resize_grad"
    operands = ("dy",)
    attrs = RESIZE_ATTRS + (INPUT_HW,)
    traits = (Gradient(),)

    @classmethod
    def check_attrs(cls, attrs):
        check_resize_attrs(attrs)
        if min(attrs["input_hw"]) < 1:
            raise TypeCheck(f"input_hw {attrs['input_hw']} must be >= 1 in both dimensions")

    def cost(self, ctx):
        """Along W one multiply-add per signal element and tap, then along H one per
        element of the half-resized signal [N, C, OH, W] and tap (nearest: additions only)."""
        dy, dx = ctx.operands[0], ctx.results[0]
        taps = 1 if ctx.attrs["mode"] == "nearest" else 2
        per = add_op(dx) if taps == 1 else ARITH + add_op(dx)
        half = dy.numel // dy.shape[3] * dx.shape[3]
        return [stream("signal", BACKWARD, (dy,), (dx,), per.times(taps * (dy.numel + half)))]

    def infer(self, types, attrs):
        dy = types[0]
        expect_signal(dy)
        expect_rank(dy, 4, "signal")
        if list(dy.shape[2:]) != list(attrs["size"]):
            raise TypeCheck(f"signal {dy} is not of the resized size {attrs['size']}")
        return [TensorType(DType.f32, (dy.shape[0], dy.shape[1], *attrs["input_hw"]))]

    def evaluate(self, args, attrs):
        rows, cols = hw_taps(attrs, attrs["input_hw"])
        return [as_f32(scatter_back(args[0], rows, cols, attrs["input_hw"]))]
