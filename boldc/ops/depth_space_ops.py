"""Pixel shuffles: depth_to_space and space_to_depth (ONNX DepthToSpace / SpaceToDepth,
PyTorch's PixelShuffle / PixelUnshuffle), permutations of 4-D NCHW tensors between channel
blocks and b x b spatial blocks; any element type (b1 included).

``mode`` orders a block's channels as ONNX does. With C = C'·b², the channel holding the
element (i, j) of the b x b block of channel c' is

    DCR (depth-column-row, the default):  (i·b + j)·C' + c'
    CRD (column-row-depth, PyTorch):      c'·b² + i·b + j

depth_to_space moves that channel's element (h, w) to (h·b + i, w·b + j) of channel c';
space_to_depth is its inverse for the same mode (ONNX SpaceToDepth has CRD since opset 28),
so each is the other's backward rule.
"""

from __future__ import annotations

import operator

import numpy as np

from boldc.ir.works import NO_OPS, per_element
from boldc.ops.common import expect_rank, expect_static
from boldc.ops.registry import Attr, OpDef, TypeCheck, register

MODES = ("DCR", "CRD")
BLOCKSIZE = Attr("blocksize", "int", doc="b: the side of the spatial blocks")
MODE = Attr("mode", "str", "DCR", choices=MODES, doc="order of a block's channels: DCR or CRD (module docstring)")


def deep_channel(c, i, j, channels: int, b: int, mode: str):
    """The channel of the deep tensor (C'·b² channels) holding element (i, j) of the block of
    channel ``c`` of the shallow one (``channels`` = C'); ints or index expressions."""
    return (i * b + j) * channels + c if mode == "DCR" else c * (b * b) + i * b + j


def block_of(k, channels: int, b: int, mode: str, div=operator.floordiv, mod=operator.mod) -> tuple:
    """(c, i, j) of the deep channel ``k``: the inverse of ``deep_channel`` (``div``/``mod``:
    the quotient and remainder of non-negative values, for index expressions)."""
    if mode == "DCR":
        c, block = mod(k, channels), div(k, channels)
    else:
        c, block = div(k, b * b), mod(k, b * b)
    return c, div(block, b), mod(block, b)


def depth_to_space_plan(shape, b: int, mode: str) -> tuple[tuple, tuple, tuple]:
    """ONNX's definition as (reshape, transpose, reshape) of an [N, C, H, W] tensor:
    the 6-D shape, the permutation and the result's shape."""
    n, c, h, w = shape
    shallow = c // (b * b)
    if mode == "DCR":
        return (n, b, b, shallow, h, w), (0, 3, 4, 1, 5, 2), (n, shallow, h * b, w * b)
    return (n, shallow, b, b, h, w), (0, 1, 4, 2, 5, 3), (n, shallow, h * b, w * b)


def space_to_depth_plan(shape, b: int, mode: str) -> tuple[tuple, tuple, tuple]:
    """The inverse of ``depth_to_space_plan`` for the same mode, as (6-D shape, permutation,
    result shape) of an [N, C, H, W] tensor."""
    n, c, h, w = shape
    perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
    return (n, c, h // b, b, w // b, b), perm, (n, c * b * b, h // b, w // b)


def shuffle(x, plan):
    """x reshaped, permuted and reshaped by ``plan`` (numpy; the torch engine does the same)."""
    tmp, perm, out = plan
    return np.ascontiguousarray(x.reshape(tmp).transpose(perm)).reshape(out)


class _PixelShuffle(OpDef):
    """A permutation of x's elements: a copy; fan-in passes through; the backward rule is the
    inverse permutation (``inverse``) of the signal."""

    operands = ("x",)
    attrs = (BLOCKSIZE, MODE)
    inverse = ""

    def cost(self, ctx):
        """A copy in another order."""
        return per_element(ctx, NO_OPS)

    def backward(self, ctx, op, dys):
        return [ctx.op(self.inverse, [dys[0]], dict(op.attrs), grad_of=op.operands[0])]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def checked(self, x, attrs) -> tuple[int, int, int]:
        """(b, C, H, W) of an input the op can take, static but for the batch."""
        expect_rank(x, 4, "input")
        b = attrs["blocksize"]
        if b < 1:
            raise TypeCheck(f"blocksize must be >= 1, got {b}")
        return (b, *(expect_static(d, f"input {what}") for d, what in zip(x.shape[1:], ("channels", "height",
                                                                                          "width"))))


@register
class DepthToSpace(_PixelShuffle):
    """y[n, c', h·b + i, w·b + j] = x[n, ch(c', i, j), h, w] with ch the block's channel of
    ``mode`` (DCR: (i·b + j)·C' + c', CRD: c'·b² + i·b + j; C = C'·b²); any element type."""

    name = "depth_to_space"
    inverse = "space_to_depth"

    def infer(self, types, attrs):
        x = types[0]
        b, c, h, w = self.checked(x, attrs)
        if c % (b * b):
            raise TypeCheck(f"the channels {c} of {x} are not a multiple of blocksize² = {b * b}")
        return [x.with_shape(depth_to_space_plan((x.shape[0], c, h, w), b, attrs["mode"])[2])]

    def evaluate(self, args, attrs):
        x = args[0]
        return [shuffle(x, depth_to_space_plan(x.shape, attrs["blocksize"], attrs["mode"]))]


@register
class SpaceToDepth(_PixelShuffle):
    """y[n, ch(c, i, j), h, w] = x[n, c, h·b + i, w·b + j] (the inverse of depth_to_space of
    the same ``mode``); H and W multiples of b; any element type."""

    name = "space_to_depth"
    inverse = "depth_to_space"

    def infer(self, types, attrs):
        x = types[0]
        b, c, h, w = self.checked(x, attrs)
        if h % b or w % b:
            raise TypeCheck(f"the height and width of {x} are not multiples of blocksize {b}")
        return [x.with_shape(space_to_depth_plan((x.shape[0], c, h, w), b, attrs["mode"])[2])]

    def evaluate(self, args, attrs):
        x = args[0]
        return [shuffle(x, space_to_depth_plan(x.shape, attrs["blocksize"], attrs["mode"]))]
