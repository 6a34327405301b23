"""``boldc.import_onnx`` and ``boldc.convert``: the Python side of ``boldc convert``.

onnx is imported only inside these functions, so ``import boldc`` stays light.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from boldc.errors import BoldcError
from boldc.ir.core import Module

_DIM = re.compile(r"^(N|\d+)$")


def parse_shape(text: str) -> list:
    """``1x3x32x32`` or ``Nx3x32x32`` -> [1, 3, 32, 32] / ["N", 3, 32, 32]."""
    dims = [d.strip() for d in text.strip().lower().replace("n", "N").split("x")]
    if not dims or not all(_DIM.match(d) for d in dims):
        raise BoldcError(f"bad shape '{text}': write the dimensions joined by 'x', e.g. 1x3x32x32 or Nx3x32x32")
    out = [d if d == "N" else int(d) for d in dims]
    if 0 in out:
        raise BoldcError(f"bad shape '{text}': dimensions must be at least 1")
    return out


def parse_input_shape(text: str) -> tuple[str, list]:
    """``name=1x3x32x32`` -> (name, dims)."""
    name, eq, shape = text.rpartition("=")
    if not eq or not name:
        raise BoldcError(f"bad --input-shape '{text}': write NAME=DIMS, e.g. x=1x3x32x32")
    return name, parse_shape(shape)


def _shapes(input_shapes) -> dict[str, list] | None:
    if input_shapes is None:
        return None
    out = {}
    for name, dims in dict(input_shapes).items():
        if isinstance(dims, str):
            dims = parse_shape(dims)
        out[name] = [d if isinstance(d, str) else int(d) for d in dims]
    return out


def import_onnx(path_or_model, input_shapes: dict[str, Sequence | str] | None = None) -> Module:
    """Read a float ONNX model (a path or an ``onnx.ModelProto``) into the float IR.

    ``input_shapes`` maps input names to shapes (``[1, 3, 32, 32]`` or ``"Nx3x32x32"``);
    it is needed only for dynamic dimensions other than the batch, which stays ``N``."""
    from boldc.frontend.onnx import import_model

    return import_model(path_or_model, _shapes(input_shapes))


def convert(path_or_model, keep_bn: bool = False, logic: str = "xnor", float_layers=None,
            init: str = "sign", seed: int = 0, input_shapes=None, fold_bn: bool = False) -> Module:
    """Import a float ONNX model and lower it to a Boolean network (SPEC §5).

    - ``keep_bn``: keep BatchNorm (float, trainable) instead of removing it;
      ``fold_bn`` also folds each kept BatchNorm that feeds a threshold into
      per-channel integer thresholds (inference);
    - ``logic``: "xnor" or "xor" neurons;
    - ``float_layers``: the arithmetic layers kept float, as a list or a comma-separated
      string of ``first``, ``last``, ``none``, ``all``, indices or layer (weight) names;
      default ``["first", "last"]``;
    - ``init``: "sign" (w >= 0 -> T) or "random" (bits drawn with ``seed``).
    """
    module = import_onnx(path_or_model, input_shapes)
    lower(module, keep_bn=keep_bn, logic=logic, float_layers=float_layers, init=init, seed=seed, fold_bn=fold_bn)
    return module


def lower(module: Module, keep_bn: bool = False, logic: str = "xnor", float_layers=None, init: str = "sign",
          seed: int = 0, fold_bn: bool = False) -> Module:
    """Lower a float IR module in place (the passes lower-boolean, then fold-bn); same
    options as ``convert``. Returns the module."""
    from boldc.passes.fold_bn import FoldBatchNorm
    from boldc.passes.lower_boolean import LowerBoolean
    from boldc.passes.manager import PassManager

    if isinstance(float_layers, str):
        float_layers = [s for s in float_layers.split(",") if s.strip()] or ["none"]
    passes = [LowerBoolean(keep_bn=keep_bn or fold_bn, logic=logic, init=init, seed=int(seed),
                           float_layers=list(float_layers) if float_layers is not None else ["first", "last"])]
    if fold_bn:
        passes.append(FoldBatchNorm())
    PassManager(passes).run(module)
    return module
