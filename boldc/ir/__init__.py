"""The Boolean IR: types, values, ops, functions, modules; text format; verifier.

This package knows no particular op; it asks ``boldc.ops`` for op definitions.
"""

from boldc.ir.builder import FunctionBuilder
from boldc.ir.core import Function, Loc, Module, Op, Param, Value
from boldc.ir.parser import parse
from boldc.ir.printer import dumps
from boldc.ir.types import DType, TensorType, tensor
from boldc.ir.verifier import verify

__all__ = ["DType", "Function", "FunctionBuilder", "Loc", "Module", "Op", "Param", "TensorType", "Value",
           "dumps", "parse", "tensor", "verify"]
