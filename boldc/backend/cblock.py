"""A tiny builder of C statements for op bodies (docs/backend.md, "Emission").

``Block`` collects lines and indents them; its loops and conditions take index
expressions (``cexpr``) and simplify what they can decide:

- ``loop``: ``for (long i = 0; i < extent; ++i)``, yielding ``i`` as a variable of range
  [0, extent - 1]; a loop of one trip is no loop, its variable is the constant 0; a body
  of one plain statement needs no braces;
- ``when``: ``if (cond) { ... }``, dropped (body kept) when the ranges prove the condition
  and dropped with its body when they disprove it;
- ``let``: ``const long name = expr;`` unless the expression is a constant or a
  variable already, which is used as it is;
- a loop with ``work`` (the elements it writes) gets ``PARALLEL_FOR_IF(work > 32768)``,
  the OpenMP pragma of the generated file (nothing without OpenMP, none when the work is
  a constant below the threshold).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from boldc.backend.cexpr import Const, Expr, Var, as_expr

PARALLEL_MIN_WORK = 32768  # elements below which a loop is not worth the threads
INDENT = "    "


@dataclass
class _Line:
    text: str
    plain: bool  # a statement that may stand alone as a loop's body (not a declaration)


class Block:
    """C statements under construction."""

    def __init__(self) -> None:
        self._open: list[list[_Line]] = [[]]

    def __call__(self, *texts: str) -> None:
        """Add statements (one per line of each text)."""
        self._add(texts, plain=True)

    def decl(self, *texts: str) -> None:
        """Add declarations (never the lone statement of a loop)."""
        self._add(texts, plain=False)

    def _add(self, texts, plain: bool) -> None:
        for text in texts:
            for line in text.splitlines():
                self._open[-1].append(_Line(line, plain))

    def text(self) -> str:
        assert len(self._open) == 1, "a loop or condition is still open"
        return "".join(line.text + "\n" for line in self._open[0])

    def let(self, name: str, expr) -> Expr:
        """``expr`` as a named constant of the body (see the module docstring)."""
        expr = as_expr(expr)
        if isinstance(expr, (Const, Var)):
            return expr
        self.decl(f"const long {name} = {expr};")
        return Var(name, expr.lo, expr.hi)

    @contextmanager
    def loop(self, name: str, extent, work=None):
        """Yield the loop variable (``Const(0)`` for one trip)."""
        extent = as_expr(extent)
        var = loop_var(name, extent)
        if isinstance(var, Const):
            yield var
            return
        self._open.append([])
        yield var
        head = [pragma] if (pragma := parallel_pragma(work)) else []
        self._close(head + [f"for (long {name} = 0; {name} < {extent}; ++{name})"])

    @contextmanager
    def when(self, cond: bool | str):
        """Statements that run when ``cond`` (a ``cexpr.inside`` answer) holds."""
        self._open.append([])
        yield
        if cond is True:
            body = self._open.pop()
            self._open[-1].extend(body)
        elif cond is False:
            self._open.pop()
        else:
            self._close([f"if ({cond})"])

    def _close(self, head: list[str]) -> None:
        body = self._open.pop()
        out = self._open[-1]
        for h in head[:-1]:
            out.append(_Line(h, False))
        if len(body) == 1 and body[0].plain:
            out.append(_Line(head[-1], True))
            out.append(_Line(INDENT + body[0].text, False))
            return
        out.append(_Line(head[-1] + " {", False))
        out.extend(_Line(INDENT + line.text, line.plain) for line in body)
        out.append(_Line("}", False))


def loop_var(name: str, extent) -> Expr:
    """The variable of ``for (name = 0; name < extent; ...)``: range [0, extent - 1], or
    the constant 0 for a single trip."""
    extent = as_expr(extent)
    if isinstance(extent, Const) and extent.value == 1:
        return Const(0)
    return Var(name, 0, None if extent.hi is None else max(extent.hi - 1, 0))


def parallel_pragma(work) -> str | None:
    """The pragma that splits a loop over threads when ``work`` elements justify it."""
    if work is None:
        return None
    work = as_expr(work)
    if isinstance(work, Const):
        return "PARALLEL_FOR" if work.value > PARALLEL_MIN_WORK else None
    return f"PARALLEL_FOR_IF({work} > {PARALLEL_MIN_WORK})"
