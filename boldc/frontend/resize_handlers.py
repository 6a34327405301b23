"""ONNX Resize (opsets 10 to 19) and Upsample (7 to 9) -> ``resize`` (boldc/ops/resize_ops.py).

Only H and W of an NCHW map are resized: the batch and the channels keep their size. The
scales or sizes must be known at import time (constants after folding); a sizes vector
computed from ``Shape`` (as torch exports ``F.interpolate(size=...)`` with a dynamic batch)
may hold the symbolic batch N. Scales are read as the shortest decimal of their float32
(``f32_attr``), which the op takes exactly (``resize_ops.scale_of``).

The older forms compute as onnxruntime does: Upsample and Resize-10 map coordinates
asymmetrically (x = o / scale) and round a nearest coordinate down when the axis is
enlarged and up when it is reduced (Upsample refuses scales below 1, as its definition).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from boldc.frontend.graph import Node, f32_attr
from boldc.frontend.importer import Importer, handles
from boldc.ir.core import Value
from boldc.ops.resize_ops import COORDINATE_MODES, NEAREST_MODES, scale_of

RANK = 4


def _input(imp: Importer, node: Node) -> Value:
    x = imp.value(node, 0)
    if x.type.rank != RANK:
        raise imp.error(node, f"only 4-D (NCHW) inputs are resized, got {x.type}")
    return x


def _mode(imp: Importer, node: Node) -> str:
    mode = node.attr("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise imp.error(node, f"mode '{mode}' is not supported (nearest and linear are)")
    return mode


def _decimal_scales(imp: Importer, node: Node, values) -> list[float]:
    scales = [f32_attr(s) for s in values]
    if not all(math.isfinite(s) and s > 0 for s in scales):
        raise imp.error(node, f"scales {scales} must be positive")
    return scales


def _size(imp: Importer, node: Node, x: Value, scales: list[float]) -> list[int]:
    """[OH, OW] = floor(in · scale) of a 4-vector of scales whose N and C entries are 1."""
    for axis, what in ((0, "batch"), (1, "channel")):
        if scale_of(scales[axis]) != 1:
            raise imp.error(node, f"scale {scales[axis]} resizes the {what} axis; only H and W can be resized")
    size = [math.floor(scale_of(s) * d) for s, d in zip(scales[2:], x.type.shape[2:])]
    if min(size) < 1:
        raise imp.error(node, f"scales {scales} give an empty output {size} for input {x.type}")
    return size


def _emit(imp: Importer, node: Node, x: Value, mode: str, coord: str, nearest: str, size: list[int],
          scales: list[float]) -> Value:
    attrs = {"mode": mode, "coordinate_transformation_mode": coord, "size": size, "scales": scales}
    if mode == "nearest":  # linear does not round
        attrs["nearest_mode"] = nearest
    return imp.emit(node, "resize", [x], attrs)


def _asymmetric(imp: Importer, node: Node, x: Value, scales: list[float]) -> list:
    """Upsample and Resize-10: x = o / scale; nearest rounds down on an enlarged axis, up on a
    reduced one (onnxruntime's rule); axes that round differently are resized one after the other."""
    mode = _mode(imp, node)
    size = _size(imp, node, x, scales)
    hw = scales[2:]
    if mode == "linear":
        return [_emit(imp, node, x, mode, "asymmetric", "floor", size, hw)]
    rounding = ["floor" if scale_of(s) >= 1 else "ceil" for s in hw]
    if rounding[0] == rounding[1]:
        return [_emit(imp, node, x, mode, "asymmetric", rounding[0], size, hw)]
    h = _emit(imp, node, x, mode, "asymmetric", rounding[0], [size[0], x.type.shape[3]], [hw[0], 1.0])
    return [_emit(imp, node, h, mode, "asymmetric", rounding[1], size, [1.0, hw[1]])]


def _four_scales(imp: Importer, node: Node, raw) -> list[float]:
    """The scales of Upsample and Resize-10: one per axis of NCHW."""
    values = None if raw is None else list(np.asarray(raw, dtype=np.float32).reshape(-1))
    if values is None or len(values) != RANK:
        raise imp.error(node, f"needs 4 scales (one per axis of NCHW), got {values}")
    return _decimal_scales(imp, node, values)


@handles("Upsample")
def upsample(imp: Importer, node: Node) -> list:
    """Scales >= 1: an attribute before opset 9, an input since."""
    x = _input(imp, node)
    scales = _four_scales(imp, node, node.attr("scales") if imp.opset < 9 else imp.const(node, 1, "scales"))
    if min(scales) < 1:
        raise imp.error(node, f"scales {scales} must be >= 1 (Upsample enlarges; use Resize to reduce)")
    return _asymmetric(imp, node, x, scales)


@handles("Resize")
def resize(imp: Importer, node: Node) -> list:
    x = _input(imp, node)
    if imp.opset < 11:
        return _asymmetric(imp, node, x, _four_scales(imp, node, imp.const(node, 1, "scales")))
    mode = _mode(imp, node)
    coord = node.attr("coordinate_transformation_mode", "half_pixel")
    if coord == "tf_crop_and_resize":
        raise imp.error(node, "coordinate_transformation_mode 'tf_crop_and_resize' (a crop given by roi) is not "
                              "supported")
    if coord not in COORDINATE_MODES:
        raise imp.error(node, f"unknown coordinate_transformation_mode '{coord}'")
    nearest = node.attr("nearest_mode", "round_prefer_floor")
    if nearest not in NEAREST_MODES:
        raise imp.error(node, f"unknown nearest_mode '{nearest}'")
    if mode == "nearest" and node.attr("exclude_outside", 0):
        raise imp.error(node, "exclude_outside=1 is not supported with mode 'nearest' (with 'linear' it changes "
                              "nothing)")
    axes = [a % RANK for a in node.attr("axes", range(RANK))] if imp.opset >= 18 else list(range(RANK))
    size, scales = _target(imp, node, x, axes)
    if node.attr("antialias", 0) and mode == "linear" and any(o < i for o, i in zip(size, x.type.shape[2:])):
        raise imp.error(node, "antialias=1 when reducing a map is not supported")
    return [_emit(imp, node, x, mode, coord, nearest, size, scales)]


def _target(imp: Importer, node: Node, x: Value, axes: list[int]) -> tuple[list[int], list[float]]:
    """([OH, OW], the scales attribute) from the scales or the sizes input (one of them)."""
    scales = imp.const(node, 2, "scales")
    sizes = imp.const(node, 3, "sizes")
    scales = None if scales is None or scales.size == 0 else scales.reshape(-1)
    sizes = None if sizes is None or sizes.size == 0 else sizes.reshape(-1)
    if (scales is None) == (sizes is None):
        raise imp.error(node, "needs either scales or sizes (exactly one of them)")
    given = scales if sizes is None else sizes
    if len(given) != len(axes):
        raise imp.error(node, f"{'scales' if sizes is None else 'sizes'} {list(given)} must have one entry per "
                              f"axis {axes}")
    if sizes is None:
        full = [1.0] * RANK
        for a, s in zip(axes, _decimal_scales(imp, node, scales)):
            full[a] = s
        size = _size(imp, node, x, full)
        return size, full[2:]
    out = list(x.type.shape)
    for a, s in zip(axes, sizes):
        out[a] = s if isinstance(s, str) else int(s)
    policy = node.attr("keep_aspect_ratio_policy", "stretch") if imp.opset >= 18 else "stretch"
    scale: list[float] = []
    if policy != "stretch":
        out, ratio = _keep_aspect_ratio(imp, node, x, axes, out, policy)
        scale = [float(ratio) if a in axes else 1.0 for a in range(2, RANK)]  # ONNX: scale 1 outside axes
    for axis, what in ((0, "batch"), (1, "channel")):
        if out[axis] != x.type.shape[axis]:
            raise imp.error(node, f"sizes {list(sizes)} resize the {what} axis ({x.type.shape[axis]} -> "
                                  f"{out[axis]}); only H and W can be resized")
    if min(out[2:]) < 1:
        raise imp.error(node, f"sizes {list(sizes)} give an empty output")
    return out[2:], scale


def _keep_aspect_ratio(imp: Importer, node: Node, x: Value, axes: list[int], out: list, policy: str):
    """ONNX's not_larger / not_smaller: one ratio r (the least / greatest of size / input over
    ``axes``), each of those axes round_half_up(r · input)."""
    if policy not in ("not_larger", "not_smaller"):
        raise imp.error(node, f"unknown keep_aspect_ratio_policy '{policy}'")
    ratios = []
    for a in axes:
        if out[a] == x.type.shape[a]:
            ratios.append(Fraction(1))
        elif isinstance(out[a], str) or isinstance(x.type.shape[a], str):
            raise imp.error(node, f"sizes resize the batch axis ({x.type.shape[a]} -> {out[a]}); only H and W "
                                  "can be resized")
        else:
            ratios.append(Fraction(out[a], x.type.shape[a]))
    ratio = min(ratios) if policy == "not_larger" else max(ratios)
    full = list(x.type.shape)
    for a in axes:
        if not isinstance(full[a], str):
            full[a] = math.floor(ratio * full[a] + Fraction(1, 2))
    return full, ratio
