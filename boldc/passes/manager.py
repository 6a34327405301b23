"""Passes and the pass manager.

A pass is a class with a ``name``, declared ``options``, the preconditions it
``requires`` and ``run(module) -> bool`` (whether it changed anything), registered with
``@register_pass``. A pipeline is text such as ``lower-boolean{keep-bn=false},dce`` and
runs in order; the manager checks each pass's preconditions before it runs (a clear
error naming the pass and what to run first), verifies the module after every pass, can
print it after each one, and returns one ``PassResult`` per pass run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from boldc.errors import BoldcError
from boldc.ir.core import Module
from boldc.ir.verifier import verify


@dataclass(frozen=True)
class Option:
    type: type  # bool, int, float, str, or list (of strings)
    default: Any
    doc: str = ""
    choices: tuple | None = None  # the values allowed, if only some are


@dataclass(frozen=True)
class NeedsFunction:
    """Precondition: the module has the function ``name`` (or the one the pass's option
    ``option`` names); ``hint`` says how to get it."""

    name: str | None = None
    option: str | None = None
    hint: str = ""

    def unmet(self, p: Pass, module: Module) -> str | None:
        fn = self.name if self.option is None else p.opts[self.option]
        if fn in module.functions:
            return None
        return f"module has no function @{fn}" + (f" ({self.hint})" if self.hint else "")


@dataclass(frozen=True)
class LacksFunction:
    """Precondition: the module has no function ``name`` (the pass would build it)."""

    name: str

    def unmet(self, p: Pass, module: Module) -> str | None:
        return f"the module already has @{self.name}" if self.name in module.functions else None


@dataclass
class PassResult:
    """What one run of a pass did: the pass, its options, and whether it changed the module."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    modified: bool = False


class Pass:
    name: ClassVar[str]
    options: ClassVar[dict[str, Option]] = {}
    requires: ClassVar[tuple] = ()  # preconditions (NeedsFunction, LacksFunction, ...)

    def __init__(self, **opts: Any):
        # Python spelling (keep_bn) and pipeline spelling (keep-bn) are the same option.
        given = {k.replace("_", "-"): v for k, v in opts.items()}
        for key in given:
            if key not in self.options:
                known = ", ".join(self.options) or "none"
                raise BoldcError(f"pass {self.name}: unknown option '{key}' (options: {known})")
        self.opts = {k: given.get(k, o.default) for k, o in self.options.items()}
        for key, opt in self.options.items():
            if opt.choices is not None and self.opts[key] not in opt.choices:
                raise BoldcError(f"pass {self.name}: option {key}={self.opts[key]!r} is not one of "
                                 f"{' | '.join(map(str, opt.choices))}")

    def run(self, module: Module) -> bool:
        raise NotImplementedError

    def check_requirements(self, module: Module) -> None:
        """Raise a BoldcError naming the pass if one of its preconditions does not hold."""
        for req in self.requires:
            problem = req.unmet(self, module)
            if problem:
                raise BoldcError(f"pass {self.name}: {problem}")

    def __repr__(self) -> str:
        return f"{self.name}{self.opts}"


PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    if cls.name in PASSES:
        raise TypeError(f"pass '{cls.name}' registered twice")
    PASSES[cls.name] = cls
    return cls


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside of braces and brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _convert(pass_name: str, key: str, opt: Option, text: str) -> Any:
    try:
        if opt.type is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if opt.type is list:
            inner = text.strip()[1:-1] if text.strip().startswith("[") else text
            return _split_top(inner)
        return opt.type(text)
    except ValueError:
        raise BoldcError(f"pass {pass_name}: option {key}={text!r} is not a {opt.type.__name__}") from None


def parse_pipeline(text: str) -> list[Pass]:
    """``name{key=value, ...},name2`` -> pass instances."""
    _load_passes()
    out = []
    for item in _split_top(text):
        name, _, rest = item.partition("{")
        name = name.strip()
        if name not in PASSES:
            raise BoldcError(f"unknown pass '{name}' (passes: {', '.join(sorted(PASSES))})")
        cls = PASSES[name]
        opts = {}
        if rest:
            if not rest.endswith("}"):
                raise BoldcError(f"pass {name}: options must end with '}}'")
            for kv in _split_top(rest[:-1]):
                key, eq, val = kv.partition("=")
                key = key.strip()
                if not eq or key not in cls.options:
                    raise BoldcError(f"pass {name}: bad option '{kv}' (options: {', '.join(cls.options) or 'none'})")
                opts[key] = _convert(name, key, cls.options[key], val.strip())
        out.append(cls(**opts))
    return out


class PassManager:
    def __init__(self, pipeline: str | list[Pass], verify_each: bool = True,
                 print_after: Callable[[Pass, Module], None] | None = None):
        self.passes = parse_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
        self.verify_each = verify_each
        self.print_after = print_after

    def run(self, module: Module) -> list[PassResult]:
        """Run the pipeline; one result per pass, in order (a pass run twice gives two)."""
        results = []
        for p in self.passes:
            p.check_requirements(module)
            results.append(PassResult(p.name, dict(p.opts), bool(p.run(module))))
            if self.verify_each:
                verify(module)
            if self.print_after is not None:
                self.print_after(p, module)
        return results


def _load_passes() -> None:
    import boldc.passes  # noqa: F401  (registers the passes)
