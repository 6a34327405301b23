"""boldc: a model compiler for Boolean neural networks (BOLD method).

Python API (see README.md):

    m = boldc.load("model.bir")          # or boldc.parse(text)
    y = boldc.interpret(m, x)            # reference interpreter
    boldc.save(m, "copy.bir"); text = boldc.dumps(m)
"""

from boldc.errors import BoldcError
from boldc.fileio import load, save
from boldc.interp import interpret
from boldc.ir import DType, FunctionBuilder, Module, TensorType, dumps, parse, tensor, verify

__version__ = "0.1.0"

__all__ = ["BoldcError", "DType", "FunctionBuilder", "Module", "TensorType", "__version__", "dumps",
           "interpret", "load", "parse", "save", "tensor", "verify"]
