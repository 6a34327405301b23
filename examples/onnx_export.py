"""Export a PyTorch model to ONNX the way the examples and tests do.

torch 2.13's default exporter (``dynamo=True``) needs the onnxscript package; the
examples use the TorchScript exporter (``dynamo=False``), which needs nothing more.
``TrainingMode.PRESERVE`` on a model in eval mode keeps BatchNormalization nodes
(the default EVAL mode folds them into the convolutions, and then ``--keep-bn`` has
nothing to keep). The batch dimension is dynamic (``N``). The IR version is set to
10, which onnxruntime 1.31 reads.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch

OPSET = 17
IR_VERSION = 10


def export_onnx(model: torch.nn.Module, input_shape: tuple[int, ...], path: str | Path | None = None,
                opset: int = OPSET) -> onnx.ModelProto:
    """Export ``model`` (put in eval mode) for inputs of ``input_shape`` (batch first).
    Writes ``path`` when given; returns the ModelProto."""
    model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(*input_shape),), buf, dynamo=False, opset_version=opset,
                          training=torch.onnx.TrainingMode.PRESERVE, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = IR_VERSION
    if path is not None:
        onnx.save(proto, str(path))
    return proto
