"""``boldc.convert(nn.Module, example_input)``: a PyTorch module exported to ONNX with the
settings boldc's frontend reads (``export(module, example_input)`` returns the ModelProto).

- the TorchScript exporter (``dynamo=False``: torch 2.13's default exporter needs the
  onnxscript package), opset 17;
- ``TrainingMode.PRESERVE`` with the module in eval mode: BatchNormalization nodes stay (the
  default folds them into the convolutions, and ``keep_bn`` would have nothing to keep);
- the first dimension of every input and output is the batch ``N``;
- the model's IR version is at most 10, which the onnxruntime boldc is tested with reads.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from boldc.errors import BoldcError

OPSET = 17
MAX_IR_VERSION = 10


def _inputs(example_input) -> tuple[torch.Tensor, ...]:
    if isinstance(example_input, (torch.Tensor, np.ndarray)):
        example_input = (example_input,)
    if not isinstance(example_input, (tuple, list)) or not example_input:
        raise BoldcError("convert(nn.Module): example_input must be a tensor (or a tuple of tensors) shaped like the "
                         f"model's input, with the batch first; got {type(example_input).__name__}")
    out = []
    for x in example_input:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor) or x.ndim < 1:
            raise BoldcError("convert(nn.Module): every example input must be a tensor with the batch as its first "
                             "dimension")
        out.append(x.detach().to("cpu"))
    return tuple(out)


def export(module: torch.nn.Module, example_input, input_names=None, opset: int = OPSET):
    """``module`` (put in eval mode) exported for inputs like ``example_input``; the
    ``onnx.ModelProto``. An export torch refuses is a one-line BoldcError."""
    import onnx

    if not isinstance(module, torch.nn.Module):
        raise BoldcError(f"expected a torch.nn.Module, got {type(module).__name__}")
    inputs = _inputs(example_input)
    names = list(input_names) if input_names else (["x"] if len(inputs) == 1 else [f"x{i}" for i in range(len(inputs))])
    if len(names) != len(inputs):
        raise BoldcError(f"convert(nn.Module): {len(names)} input names for {len(inputs)} example inputs")
    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, inputs, buf, dynamo=False, opset_version=opset,
                              training=torch.onnx.TrainingMode.PRESERVE, input_names=names, output_names=["y"],
                              dynamic_axes={**{n: {0: "N"} for n in names}, "y": {0: "N"}})
    except Exception as exc:  # torch raises many kinds; the user gets the reason on one line
        reason = " ".join(str(exc).split())[:300]
        raise BoldcError(f"cannot export the torch module {type(module).__name__} to ONNX: {reason}") from None
    finally:
        module.train(was_training)
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    return proto
