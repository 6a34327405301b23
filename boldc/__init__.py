"""boldc: a model compiler for Boolean neural networks (BOLD method).

Python API (see README.md):

    m = boldc.load("model.bir")          # or boldc.parse(text)
    y = boldc.interpret(m, x)            # reference interpreter
    boldc.save(m, "copy.bir"); text = boldc.dumps(m)
    m = boldc.convert("model.onnx")      # float ONNX -> Boolean IR (boldc.import_onnx: float IR)
    cm = boldc.compile(m); y = cm.infer(x)   # generated C, built with cffi (cached)
    boldc.save_checkpoint(m, "ck.bin"); boldc.load_checkpoint(m, "ck.bin")   # weights + optimizer state
    r = boldc.energy(m, batch=32, phase="training")   # energy report: r.total_pj, r.ratio, r.rows
"""

from boldc.backend.api import compile
from boldc.checkpoint import load_checkpoint, save_checkpoint
from boldc.energymodel.api import energy
from boldc.errors import BoldcError
from boldc.fileio import load, save
from boldc.frontend.api import convert, import_onnx
from boldc.interp import interpret
from boldc.ir import DType, FunctionBuilder, Module, TensorType, dumps, parse, tensor, verify
from boldc.version import __version__

__all__ = ["BoldcError", "DType", "FunctionBuilder", "Module", "TensorType", "__version__", "compile", "convert",
           "dumps", "energy", "import_onnx", "interpret", "load", "load_checkpoint", "parse", "save", "save_checkpoint",
           "tensor", "verify"]


def __getattr__(name: str):
    """``boldc.to_torch`` and ``boldc.from_torch``: the torch engine, imported on first use
    (torch is optional: ``pip install 'boldc[torch]'``)."""
    if name in ("to_torch", "from_torch"):
        import boldc.torch

        return getattr(boldc.torch, name)
    raise AttributeError(f"module 'boldc' has no attribute {name!r}")
