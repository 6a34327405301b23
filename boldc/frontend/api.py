"""``boldc.import_onnx`` and ``boldc.convert``: the Python side of ``boldc convert``.

onnx is imported only inside these functions, so ``import boldc`` stays light.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from boldc.errors import BoldcError
from boldc.ir.core import Module

# a size, n / N (the batch) or a symbol: a capital letter, then letters and digits (no 'x': the separator)
_DIM = re.compile(r"^(\d+|n|[A-WYZ][A-WYZa-wyz0-9]*)$")


def parse_shape(text: str) -> list:
    """``1x3x32x32``, ``Nx3x32x32`` or ``NxL`` -> [1, 3, 32, 32] / ["N", 3, 32, 32] / ["N", "L"]:
    ``N`` (or ``n``) is the batch, another name (a capital letter, then letters and digits) a
    symbolic size such as a sequence length."""
    dims = [d.strip() for d in re.split("[xX]", text.strip())]
    if not dims or not all(_DIM.match(d) for d in dims):
        raise BoldcError(f"bad shape '{text}': write the dimensions joined by 'x', e.g. 1x3x32x32, Nx3x32x32 "
                         "or NxL (a name keeps a size symbolic)")
    out = [int(d) if d.isdigit() else "N" if d in ("n", "N") else d for d in dims]
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


def _onnx_of(model, example_input):
    """``model`` itself, or a ``torch.nn.Module`` exported to ONNX for inputs like
    ``example_input`` (boldc.torch.onnx_export: the settings this frontend reads)."""
    torch = sys.modules.get("torch")  # an nn.Module means torch is imported already
    if torch is not None and isinstance(model, torch.nn.Module):
        if example_input is None:
            raise BoldcError("a torch.nn.Module needs example_input: a tensor shaped like its input, batch first "
                             "(e.g. torch.zeros(1, 3, 32, 32))")
        from boldc.torch.onnx_export import export

        return export(model, example_input)
    if example_input is not None:
        raise BoldcError("example_input is for a torch.nn.Module; an ONNX model (path or ModelProto) has its own "
                         "input shapes")
    return model


def import_onnx(path_or_model, input_shapes: dict[str, Sequence | str] | None = None, example_input=None) -> Module:
    """Read a float ONNX model (a path or an ``onnx.ModelProto``, or a ``torch.nn.Module`` with
    ``example_input``, exported to ONNX first) into the float IR.

    ``input_shapes`` maps input names to shapes (``[1, 3, 32, 32]`` or ``"Nx3x32x32"``);
    it is needed only for dynamic dimensions other than the batch, which stays ``N``."""
    from boldc.frontend.onnx import import_model

    return import_model(_onnx_of(path_or_model, example_input), _shapes(input_shapes))


def convert(path_or_model, keep_bn: bool = False, logic: str = "xnor", float_layers=None,
            init: str = "sign", seed: int = 0, input_shapes=None, fold_bn: bool = False, fuse: bool = True,
            example_input=None, binarize_activations: bool = False, layer_scale: bool = True) -> Module:
    """Import a float ONNX model (a path, an ``onnx.ModelProto``, or a ``torch.nn.Module`` with
    ``example_input``: a tensor shaped like its input, batch first) and lower it to a Boolean
    network (docs/method.md §5).

    - ``keep_bn``: keep BatchNorm (float, trainable) instead of removing it;
      ``fold_bn`` also folds each kept BatchNorm that feeds a threshold into
      per-channel integer thresholds (inference);
    - ``logic``: "xnor" or "xor" neurons;
    - ``float_layers``: the arithmetic layers kept float, as a list or a comma-separated
      string of ``first``, ``last``, ``none``, ``all``, indices or layer (weight) names;
      default ``["first", "last"]``;
    - ``init``: "sign" (w >= 0 -> T) or "random" (bits drawn with ``seed``);
    - ``fuse``: fuse each layer with the elementwise ops after it (``fuse_layers``); False keeps
      every op apart, as before fusion existed;
    - ``binarize_activations``: layers that read real features (a transformer's projections after
      LayerNorm or attention) read a threshold of them and become Boolean instead of mixed;
    - ``layer_scale``: a per-output scale mean|W_j| after each Boolean-weight layer whose output
      reaches real features (docs/convert.md, "Transformers").
    """
    module = import_onnx(path_or_model, input_shapes, example_input)
    lower(module, keep_bn=keep_bn, logic=logic, float_layers=float_layers, init=init, seed=seed, fold_bn=fold_bn,
          binarize_activations=binarize_activations, layer_scale=layer_scale)
    return fuse_layers(module) if fuse else module


def fuse_layers(module: Module) -> Module:
    """Fuse every layer of ``module`` with the chain of elementwise ops after it, in place
    (the pass fuse-epilogues; docs/ir.md, "Fused ops"). Values do not change. Returns the
    module."""
    from boldc.passes.fuse_epilogues import FuseEpilogues

    FuseEpilogues().run(module)
    return module


def lower(module: Module, keep_bn: bool = False, logic: str = "xnor", float_layers=None, init: str = "sign",
          seed: int = 0, fold_bn: bool = False, binarize_activations: bool = False, layer_scale: bool = True) -> Module:
    """Lower a float IR module in place (the passes lower-boolean, then fold-bn); same
    options as ``convert``. Returns the module."""
    from boldc.passes.fold_bn import FoldBatchNorm
    from boldc.passes.lower_boolean import LowerBoolean
    from boldc.passes.manager import PassManager

    if isinstance(float_layers, str):
        float_layers = [s for s in float_layers.split(",") if s.strip()] or ["none"]
    passes = [LowerBoolean(keep_bn=keep_bn or fold_bn, logic=logic, init=init, seed=int(seed),
                           float_layers=list(float_layers) if float_layers is not None else ["first", "last"],
                           binarize_activations=binarize_activations, layer_scale=layer_scale)]
    if fold_bn:
        passes.append(FoldBatchNorm())
    PassManager(passes).run(module)
    return module
