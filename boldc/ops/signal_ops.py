"""Integer backward signals (docs/training.md, "Integer signals"): ``quantize_signal``.

The method trains with 16-bit backward signals (W/A/G = 1/1/16). A real signal z (the
signal at the pre-activation of a Boolean layer, an f32 tensor) becomes integers q and a
per-tensor power-of-two scale, z ≈ q · scale, chosen from the largest magnitude so that
q fills the signed range of ``bits``. The layer's gradient ops then sum integer products
(exact, identical on every machine) and apply the scale once (exact: a power of two).

Every step of ``evaluate`` is an exactly rounded IEEE operation or an integer one, so the
generated C computes the same bits on any CPU.
"""

from __future__ import annotations

import numpy as np

from boldc.ir.types import DType, TensorType
from boldc.ir.works import ARITH, BACKWARD, add_op, stream
from boldc.ops.common import expect_dtype
from boldc.ops.registry import Attr, NotDifferentiable, OpDef, TypeCheck, register
from boldc.ops.traits import Gradient

ROUNDINGS = ("nearest", "stochastic", "log")
SIGNAL_BITS = (16, 8, 4)
F32_MIN_EXP = -126  # the scale stays a normal f32: 2^-126 at the least


def signal_dtype(bits: int) -> DType:
    """The integer type of a ``bits``-bit signal."""
    return DType.i16 if bits > 8 else DType.i8


def span(bits: int, rounding: str) -> int:
    """log2 of the magnitude range of a quantized signal: |q| < 2^span (linear rounding,
    span = bits - 1) or |q| <= 2^span (logarithmic: the 2^(bits-1) - 1 nonzero levels are
    2^0 .. 2^span, span = 2^(bits-1) - 2)."""
    return (1 << (bits - 1)) - 2 if rounding == "log" else bits - 1


def largest_level(bits: int, rounding: str) -> int:
    """The largest |q|: 2^span - 1, or 2^span for logarithmic rounding."""
    top = 1 << span(bits, rounding)
    return top if rounding == "log" else top - 1


def scale_exponent(m: np.float32, bits: int, rounding: str) -> int:
    """e with scale = 2^e: the largest magnitude m = f·2^E (f in [0.5, 1), frexp; E = 0 for
    m = 0) maps to m / 2^e = f·2^span, so e = E - span, and at least -126 (a normal f32)."""
    _, big = np.frexp(np.float32(m))
    return max(int(big) - span(bits, rounding), F32_MIN_EXP)


def uniform(seed: int, stream_id: int, step: int, count: int) -> np.ndarray:
    """u in [0, 1) for elements 0..count-1 of one signal: a SplitMix64 hash of (seed,
    stream, step, element index), its top 24 bits / 2^24 (exact in f32 and in double)."""
    with np.errstate(over="ignore"):
        key = (np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
               + np.uint64(stream_id % 2**64) * np.uint64(0xD1B54A32D192ED03)
               + np.uint64(step % 2**64) * np.uint64(0x8CB92BA72F3D8DD7)
               + np.arange(count, dtype=np.uint64))
        z = (key ^ (key >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def log_round(v: np.ndarray, kmax: int) -> np.ndarray:
    """±2^k with k = round(log2 |v|) (|v| = f·2^E, f in [0.5, 1): k = E if f >= √½, else
    E - 1; √½ rounded to double), 0 where k < 0, 2^kmax where k is larger."""
    f, big = np.frexp(np.abs(v))
    k = np.where(f >= np.sqrt(0.5), big, big - 1)
    mag = np.where(k < 0, 0.0, np.ldexp(1.0, np.clip(k, 0, kmax)))
    return np.sign(v) * mag


@register
class QuantizeSignal(OpDef):
    """A real signal as integers and a power-of-two scale: z ≈ q · scale.

    m = max |z| = f·2^E (f in [0.5, 1)); scale = 2^e with e = E - S and at least -126, S =
    bits - 1 (``log``: 2^(bits-1) - 2); v = z / scale (exact); then, clamped to [-L, L] with
    L = 2^S - 1 (``log``: 2^S), the largest level:

    - ``nearest``: q = round half to even (v);
    - ``stochastic``: q = floor(v + u), u in [0, 1) from a counter-based hash of ``seed``,
      ``stream``, the step counter and the element's row-major index (docs/training.md);
    - ``log``: q = ±2^round(log2 |v|) (logarithmic rounding, for 4 bits), 0 below 2^-½.

    m = 0 gives q = 0 (frexp(0) = 0·2^0); a non-finite m gives q = 0 and scale = NaN."""

    name = "quantize_signal"
    operands = ("z", "step?")
    attrs = (Attr("bits", "int", 16, choices=SIGNAL_BITS), Attr("rounding", "str", "nearest", choices=ROUNDINGS),
             Attr("seed", "int", 0, doc="seed of stochastic rounding"),
             Attr("stream", "int", 0, doc="which signal of the step this is (stochastic rounding)"))
    traits = (Gradient(),)
    nondiff_operands = ("step",)
    backward = NotDifferentiable("it quantizes a backward signal")

    def cost(self, ctx):
        """Per element: a comparison for the maximum, a scaling and a rounding."""
        z, q = ctx.operands[0], ctx.results[0]
        return [stream("quantize", BACKWARD, ctx.operands, ctx.results, (add_op(z) + ARITH.times(2)).times(q.numel))]

    @classmethod
    def check_attrs(cls, attrs):
        if attrs["rounding"] == "log" and attrs["bits"] != 4:
            raise TypeCheck("log rounding is for 4-bit signals (bits = 4)")

    def infer(self, types, attrs):
        z = types[0]
        expect_dtype(z, "float", "signal")
        if attrs["rounding"] == "stochastic" and len(types) < 2:
            raise TypeCheck("stochastic rounding needs the step counter operand")
        if len(types) > 1 and types[1] != TensorType(DType.i32, ()):
            raise TypeCheck(f"the step counter must be i32[], got {types[1]}")
        return [z.with_dtype(signal_dtype(attrs["bits"])), TensorType(DType.f32, ())]

    def evaluate(self, args, attrs):
        z = args[0].astype(np.float32, copy=False)
        bits, rounding = attrs["bits"], attrs["rounding"]
        top = largest_level(bits, rounding)
        m = np.float32(np.abs(z).max()) if z.size else np.float32(0)
        dtype = signal_dtype(bits).numpy
        if not np.isfinite(m):
            return [np.zeros(z.shape, dtype), np.array(np.nan, np.float32)]
        e = scale_exponent(m, bits, rounding)
        v = np.ldexp(z.astype(np.float64), -e)  # exact: z / 2^e
        if rounding == "nearest":
            q = np.rint(v)
        elif rounding == "stochastic":
            step = int(args[1])
            q = np.floor(v + uniform(attrs["seed"], attrs["stream"], step, z.size).reshape(z.shape))
        else:
            q = log_round(v, span(bits, rounding))
        q = np.clip(q, -top, top).astype(dtype)
        return [q, np.array(np.ldexp(np.float32(1), e), np.float32)]
