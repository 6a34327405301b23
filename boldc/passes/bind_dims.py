"""bind-dims: give symbolic dimensions of a module fixed sizes.

A dimension of the IR is an int or a lone symbol (``N``, ``L``; docs/ir.md). Binding
``L = 64`` replaces the symbol by 64 everywhere it appears: in the types of every
function's arguments, op results and declared results, and in shape-valued attributes
(attributes of kind ``shape``: reshape's, expand's, sum_to's; also inside the parts of a
fused op). The module is then verified, so every op's type inference agrees with the
substituted types.

Who binds what (docs/backend.md, docs/energy.md):

- the C backend keeps at most the batch ``N`` as a run-time size; every other symbol is
  bound at compile time (``boldc.compile(..., dims={"L": 64})``, ``boldc compile --dim
  L=64``; ``boldc train`` and ``boldc eval`` bind them from the data's shapes);
- the energy model needs every size: ``--batch`` binds ``N``, ``--dim`` the others.

The batch of a function is ``N`` when it has that symbol; a function with a single symbol
of another name keeps treating it as its batch (as before there were several).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from boldc.errors import BoldcError
from boldc.ir.core import Function, Module
from boldc.ir.types import TensorType
from boldc.ir.verifier import verify
from boldc.ops.registry import lookup
from boldc.passes.manager import Option, Pass, register_pass

BATCH = "N"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def function_symbols(fn: Function) -> set[str]:
    """The symbols in the types of ``fn``: arguments, op results and declared results."""
    types = [a.type for a in fn.args] + [r.type for op in fn.ops for r in op.results] + fn.declared_result_types()
    return {d for t in types for d in t.symbols}


def module_symbols(module: Module, functions: Iterable[str] | None = None) -> set[str]:
    names = module.functions if functions is None else functions
    return set().union(*(function_symbols(module.function(f)) for f in names))


def batch_symbol(symbols: set[str], fn: Function | None = None) -> str | None:
    """The symbol that is the batch among a function's ``symbols`` (module docstring): N, or
    a lone other symbol that is the first dimension of every argument of ``fn`` (a sequence
    length L in f32[2, L, 8] is not a batch)."""
    if BATCH in symbols:
        return BATCH
    if len(symbols) != 1:
        return None
    (only,) = symbols
    if fn is not None and not all(a.type.shape and a.type.shape[0] == only for a in fn.args):
        return None
    return only


def unbound(module: Module, functions: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Function name -> the symbols it keeps besides its batch (sorted), for the functions
    that keep any: what the C backend and the energy model cannot run or cost."""
    out = {}
    for name in (module.functions if functions is None else functions):
        syms = function_symbols(module.function(name))
        rest = sorted(syms - {batch_symbol(syms, module.function(name))})
        if rest:
            out[name] = rest
    return out


def unbound_message(fn: str, symbols: list[str], who: str, flag: str, call: str) -> str:
    """One line: ``@fn`` keeps ``symbols``, which ``who`` needs bound, and how to bind them:
    the command's ``flag`` (``boldc compile --dim``) or the API ``call`` (``boldc.compile``)."""
    names = ", ".join(symbols)
    example = " ".join(f"{flag} {s}=SIZE" for s in symbols)
    keyword = ", ".join(f"'{s}': SIZE" for s in symbols)
    return (f"@{fn} keeps the symbolic dimension{'s' if len(symbols) > 1 else ''} {names}: {who}; "
            f"bind {'them' if len(symbols) > 1 else 'it'} with {example} ({call}(..., dims={{{keyword}}}))")


def check_dims(dims: Mapping[str, int], what: str = "dims") -> dict[str, int]:
    """``dims`` as a dict of identifier -> positive int; a one-line error otherwise."""
    if not isinstance(dims, Mapping):
        raise BoldcError(f"{what} must map symbol names to sizes, e.g. {{'L': 64}}; got {type(dims).__name__}")
    out = {}
    for name, size in dims.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise BoldcError(f"{what}: {name!r} is not a symbol name (a letter or _, then letters, digits or _)")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise BoldcError(f"{what}: the size of {name} must be a positive integer, got {size!r}")
        out[name] = size
    return out


def parse_dims(texts: Iterable[str], flag: str = "--dim") -> dict[str, int]:
    """``["L=64", "N=32"]`` (the command line's repeated ``--dim``) -> {"L": 64, "N": 32}."""
    out: dict[str, int] = {}
    for text in texts:
        name, eq, size = text.partition("=")
        name, size = name.strip(), size.strip()
        if not eq or not _NAME.fullmatch(name) or not re.fullmatch(r"[0-9]+", size) or int(size) < 1:
            raise BoldcError(f"bad {flag} '{text}': write NAME=SIZE with a positive size, e.g. {flag} L=64")
        if name in out and out[name] != int(size):
            raise BoldcError(f"{flag} {name} is given twice ({out[name]} and {size})")
        out[name] = int(size)
    return out


def _shape(shape, sizes: Mapping[str, int]) -> tuple:
    return tuple(sizes.get(d, d) if isinstance(d, str) else d for d in shape)


def _attrs(opname: str, attrs: dict, sizes: Mapping[str, int]) -> dict:
    """``attrs`` with the symbols of its shape-valued attributes substituted (and those of
    a composite op's parts: an attribute ``body`` listing {op, attrs} parts)."""
    opdef = lookup(opname)
    out = dict(attrs)
    for spec in opdef.attrs if opdef is not None else ():
        value = out.get(spec.name)
        if spec.kind == "shape" and isinstance(value, list):
            out[spec.name] = list(_shape(value, sizes))
    body = out.get("body")
    if isinstance(body, list) and all(isinstance(p, dict) and isinstance(p.get("op"), str) and
                                      isinstance(p.get("attrs"), dict) for p in body):
        out["body"] = [{**p, "attrs": _attrs(p["op"], p["attrs"], sizes)} for p in body]
    return out


def bind_dims(module: Module, dims: Mapping[str, int]) -> bool:
    """Substitute ``dims`` (symbol -> size) in ``module`` in place and verify it. Every name
    must be a symbol of some function of the module. Returns whether anything changed."""
    sizes = check_dims(dims)
    have = module_symbols(module)
    unknown = sorted(set(sizes) - have)
    if unknown:
        known = ", ".join(sorted(have)) or "none"
        raise BoldcError(f"cannot bind {', '.join(unknown)}: the module has no such symbolic dimension "
                         f"(its symbols: {known})")
    if not sizes:
        return False

    def bound(t: TensorType) -> TensorType:
        return t.with_shape(_shape(t.shape, sizes)) if t.symbols else t

    for fn in module.functions.values():
        for a in fn.args:
            a.type = bound(a.type)
        for op in fn.ops:
            for r in op.results:
                r.type = bound(r.type)
            op.attrs = _attrs(op.name, op.attrs, sizes)
        if fn.result_types is not None:
            fn.result_types = [bound(t) for t in fn.result_types]
    verify(module)
    return True


def bound_copy(module: Module, dims: Mapping[str, int] | None) -> Module:
    """``module`` itself without ``dims``; else a copy with them bound (``bind_dims``)."""
    if not dims:
        check_dims(dims or {})
        return module
    copy = module.copy()
    bind_dims(copy, dims)
    return copy


def describe(dims: Mapping[str, int]) -> str:
    """``L=64, N=32``: how messages and progress lines name a binding."""
    return ", ".join(f"{k}={v}" for k, v in dims.items())


@register_pass
class BindDims(Pass):
    """``bind-dims{dims=[L=64]}``: see the module docstring."""

    name = "bind-dims"
    options = {"dims": Option(list, [], "NAME=SIZE bindings of symbolic dimensions, e.g. [L=64, N=32]")}

    def run(self, module: Module) -> bool:
        return bind_dims(module, parse_dims(self.opts["dims"], "bind-dims dims"))
