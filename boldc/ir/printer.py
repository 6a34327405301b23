"""The printer: Module -> canonical text. ``parse(dumps(m))`` prints back identically.

Canonical form: header ``bir 1``; module attributes; params in insertion order;
functions; then, when weights are printed, a ``resources`` section. Declared
attributes equal to their default are omitted; annotations follow. Numbers print as
Python's shortest round-trip repr; strings and odd names are JSON-quoted.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from boldc.ir import resources
from boldc.ir.catalog import op_definition
from boldc.ir.core import Function, Module, Op, Param, Value
from boldc.ir.types import TensorType

FORMAT_VERSION = 1
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.$/-]+\Z")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")


def format_name(sigil: str, name: str) -> str:
    return sigil + (name if _PLAIN_NAME.match(name) else json.dumps(name))


def format_ref(v: Value) -> str:
    return format_name(v.sigil, v.name)


def format_type(t: TensorType) -> str:
    return str(t)


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return repr(v)  # 'inf', '-inf', '1e-05', '0.5': all parse back as floats
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return format_dict(v)
    raise TypeError(f"cannot print attribute value {v!r} of type {type(v).__name__}")


def format_dict(d: dict) -> str:
    for k in d:
        if not _PLAIN_KEY.match(k):
            raise TypeError(f"attribute name {k!r} is not an identifier")
    return "{" + ", ".join(f"{k} = {format_value(v)}" for k, v in d.items()) + "}"


def _printed_attrs(op: Op) -> dict:
    opdef = op_definition(op.name)
    return opdef.printed_attrs(op.attrs) if opdef is not None else op.attrs


def format_op(op: Op) -> str:
    lhs = ", ".join(f"{format_ref(r)}: {format_type(r.type)}" for r in op.results)
    rhs = f"{op.name}({', '.join(format_ref(o) for o in op.operands)})"
    attrs = _printed_attrs(op)
    if attrs:
        rhs += " " + format_dict(attrs)
    return f"{lhs} = {rhs}" if lhs else rhs


def format_param(p: Param) -> str:
    text = f"param {format_ref(p)} : {format_type(p.type)}"
    if p.attrs:
        text += " " + format_dict(p.attrs)
    return text


def format_function(fn: Function) -> list[str]:
    args = ", ".join(f"{format_ref(a)}: {format_type(a.type)}" for a in fn.args)
    rtypes = fn.declared_result_types()
    sig = format_type(rtypes[0]) if len(rtypes) == 1 else "(" + ", ".join(map(format_type, rtypes)) + ")"
    lines = [f"func {format_name('@', fn.name)}({args}) -> {sig} {{"]
    lines += ["  " + format_op(op) for op in fn.ops]
    ret = ", ".join(format_ref(v) for v in fn.returns)
    lines.append("  return" + (" " + ret if ret else ""))
    lines.append("}")
    return lines


def dumps(module: Module, weights: bool = True) -> str:
    """The module as text; with ``weights``, params' tensors go in ``resources``."""
    lines = [f"bir {FORMAT_VERSION}"]
    if module.attrs:
        lines.append("attributes " + format_dict(module.attrs))
    if module.params:
        lines.append("")
        lines += [format_param(p) for p in module.params.values()]
    for fn in module.functions.values():
        lines.append("")
        lines += format_function(fn)
    with_data = [p for p in module.params.values() if p.data is not None] if weights else []
    if with_data:
        lines += ["", "resources {"]
        for p in with_data:
            crc, text = resources.encode(p.data, p.type)
            lines.append(f'  {format_ref(p)} = crc32({crc:#010x}) "{text}"')
        lines.append("}")
    return "\n".join(lines) + "\n"
