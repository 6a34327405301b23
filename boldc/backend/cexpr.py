"""Integer index arithmetic of the generated C, as small expression trees (docs/backend.md,
"Emission").

An ``Expr`` is a constant, a C variable with a known value range, or +, -, *, / and %
of expressions with C's integer semantics: ``/`` truncates toward zero and ``a % b``
has the sign of ``a`` (so ``(a / b) * b + a % b == a``). Expressions are built with the
operators ``+ - *`` and the functions ``div`` and ``mod``; each constructor simplifies
as it builds, so what is printed is already folded:

- constants fold (in C semantics); ``x*1``, ``x+0``, ``x*0``, ``x/1``, ``x%1`` vanish;
- sums are kept as a linear form ``c1*t1 + c2*t2 + ... + c0``: like terms merge and
  products of sums by constants distribute, so ``(b*8 + h)*8 + w`` prints
  ``b*64 + h*8 + w``;
- ``(q*K + r) / K -> q + r / K`` and ``(q*K + r) % K -> r % K`` when the dividend
  and ``r`` are known to be >= 0 (with C's truncation the rules are wrong for
  negative values, so ranges decide), ``q*K`` being every term whose coefficient is a
  multiple of ``K``;
- ``x / K -> 0`` and ``x % K -> x`` when ``0 <= x < K`` is known;
- ``(x / A) / B -> x / (A*B)`` for ``A, B > 0`` (true for every x under truncation);
  ``(x % A) % B -> x % B`` when ``B`` divides ``A`` and ``x >= 0``.

Ranges are intervals ``[lo, hi]`` (``None``: unbounded) computed bottom-up; a loop
variable of ``for (i = 0; i < n; ++i)`` is ``Var("i", 0, n - 1)``. Printing gives C
with the parentheses precedence needs, plus a few for the reader (``(i / 2)*4``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

Bound = int | None

_ADD, _MUL, _ATOM = 1, 2, 3  # printing precedence: + -, * / %, atoms


def c_div(a: int, b: int) -> int:
    """C's a / b on ints: the quotient truncated toward zero."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def c_mod(a: int, b: int) -> int:
    """C's a % b on ints: a - (a / b) * b, with the sign of a."""
    return a - c_div(a, b) * b


class Expr:
    """An integer C expression; ``lo``/``hi`` bound its value (None: unknown)."""

    lo: Bound
    hi: Bound

    def __add__(self, other) -> Expr:
        return add(self, other)

    def __radd__(self, other) -> Expr:
        return add(other, self)

    def __sub__(self, other) -> Expr:
        return add(self, mul(other, -1))

    def __rsub__(self, other) -> Expr:
        return add(other, mul(self, -1))

    def __mul__(self, other) -> Expr:
        return mul(self, other)

    def __rmul__(self, other) -> Expr:
        return mul(other, self)

    def __neg__(self) -> Expr:
        return mul(self, -1)

    def __str__(self) -> str:
        return self.c()

    def __format__(self, spec: str) -> str:
        return format(self.c(), spec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.c()})"

    def atom(self) -> str:
        """C text that is safe as an operand of any operator (parenthesised if needed)."""
        return self.c(_ATOM)

    def c(self, prec: int = 0) -> str:
        """C text, parenthesised when its precedence is below ``prec``."""
        text, own = self._c()
        return f"({text})" if own < prec else text

    def _c(self) -> tuple[str, int]:
        raise NotImplementedError

    def evaluate(self, env: dict[str, int]) -> int:
        """The value with C semantics, variables taken from ``env``."""
        raise NotImplementedError


@dataclass(frozen=True, repr=False)
class Const(Expr):
    value: int

    @property
    def lo(self) -> int:
        return self.value

    @property
    def hi(self) -> int:
        return self.value

    def _c(self):
        return str(self.value), (_ATOM if self.value >= 0 else _ADD)

    def evaluate(self, env):
        return self.value


@dataclass(frozen=True, repr=False)
class Var(Expr):
    """A C variable (or any C text taken as one value) with its range."""

    name: str
    lo: Bound = None
    hi: Bound = None

    def _c(self):
        return self.name, _ATOM

    def evaluate(self, env):
        return env[self.name]


@dataclass(frozen=True, repr=False)
class Sum(Expr):
    """c1*t1 + c2*t2 + ... + const: ``terms`` holds (t, c) pairs, each t neither a
    constant nor a sum, each c nonzero."""

    terms: tuple[tuple[Expr, int], ...]
    const: int = 0

    @cached_property
    def lo(self):
        return _sum_bound(self, low=True)

    @cached_property
    def hi(self):
        return _sum_bound(self, low=False)

    def _c(self):
        parts = []
        for t, c in self.terms:
            text = t.c(_MUL) if abs(c) == 1 else f"{_factor(t)}*{abs(c)}"
            parts.append(("-" if c < 0 else "+", text))
        if self.const:
            parts.append(("-" if self.const < 0 else "+", str(abs(self.const))))
        if len(parts) == 1 and parts[0][0] == "+":
            return parts[0][1], _MUL
        head = ("-" if parts[0][0] == "-" else "") + parts[0][1]
        return head + "".join(f" {s} {p}" for s, p in parts[1:]), _ADD

    def evaluate(self, env):
        return sum(t.evaluate(env) * c for t, c in self.terms) + self.const


@dataclass(frozen=True, repr=False)
class Prod(Expr):
    """A product of non-constant factors (a constant factor makes a Sum term instead)."""

    factors: tuple[Expr, ...]

    @cached_property
    def lo(self):
        return _product_range(self.factors)[0]

    @cached_property
    def hi(self):
        return _product_range(self.factors)[1]

    def _c(self):
        return "*".join(_factor(f) for f in self.factors), _MUL

    def evaluate(self, env):
        v = 1
        for f in self.factors:
            v *= f.evaluate(env)
        return v


@dataclass(frozen=True, repr=False)
class _Quotient(Expr):
    """num / den or num % den (the subclasses say which)."""

    num: Expr
    den: Expr

    @cached_property
    def lo(self):
        return self._range()[0]

    @cached_property
    def hi(self):
        return self._range()[1]

    def _c(self):
        return f"{_factor(self.num)} {self._op} {self.den.c(_ATOM)}", _MUL

    def evaluate(self, env):
        return self._value(self.num.evaluate(env), self.den.evaluate(env))


class Div(_Quotient):
    _op = "/"

    def _range(self):
        return _div_range(self.num, self.den)

    def _value(self, a, b):
        return c_div(a, b)


class Mod(_Quotient):
    _op = "%"

    def _range(self):
        return _mod_range(self.num, self.den)

    def _value(self, a, b):
        return c_mod(a, b)


def _factor(e: Expr) -> str:
    """``e`` as an operand of * / %: a quotient, remainder or product gets parentheses
    for the reader even where C's left-to-right rule would not need them."""
    return f"({e.c()})" if isinstance(e, (Div, Mod, Prod)) else e.c(_ATOM)


# --- ranges -------------------------------------------------------------------------------------


def _sum_bound(s: Sum, low: bool) -> Bound:
    total = s.const
    for t, c in s.terms:
        b = t.lo if (c > 0) == low else t.hi
        if b is None:
            return None
        total += c * b
    return total


def _product_range(factors) -> tuple[Bound, Bound]:
    lo, hi = 1, 1
    for f in factors:
        if lo is not None and lo >= 0 and f.lo is not None and f.lo >= 0:
            lo, hi = lo * f.lo, None if hi is None or f.hi is None else hi * f.hi
        elif None not in (lo, hi, f.lo, f.hi):
            corners = [a * b for a in (lo, hi) for b in (f.lo, f.hi)]
            lo, hi = min(corners), max(corners)
        else:
            return None, None
    return lo, hi


def _div_range(num: Expr, den: Expr) -> tuple[Bound, Bound]:
    if isinstance(den, Const):
        d = den.value
        lo = None if num.lo is None else c_div(num.lo, d)
        hi = None if num.hi is None else c_div(num.hi, d)
        return (lo, hi) if d > 0 else (hi, lo)  # truncation is monotonic in the dividend
    if num.lo is not None and num.lo >= 0 and den.lo is not None and den.lo >= 1:
        return 0, num.hi
    return None, None


def _mod_range(num: Expr, den: Expr) -> tuple[Bound, Bound]:
    if not isinstance(den, Const):
        nonneg = num.lo is not None and num.lo >= 0 and den.lo is not None and den.lo >= 1
        return (0, num.hi) if nonneg else (None, None)
    m = abs(den.value) - 1
    if num.lo is not None and num.lo >= 0:
        return 0, m if num.hi is None else min(m, num.hi)
    if num.hi is not None and num.hi <= 0:
        return (-m if num.lo is None else max(-m, num.lo)), 0
    return -m, m


def nonneg(e: Expr) -> bool:
    return e.lo is not None and e.lo >= 0


def below(e: Expr, bound: int) -> bool:
    """True when e < bound is known."""
    return e.hi is not None and e.hi < bound


# --- construction (simplifying) --------------------------------------------------------------


def as_expr(x) -> Expr:
    """An Expr from an Expr, an int, or a C identifier / integer literal (a variable of
    unknown range); any other text is refused (build it with Expr operators)."""
    if isinstance(x, Expr):
        return x
    if isinstance(x, bool):
        raise TypeError("a bool is not an index expression")
    if isinstance(x, int):
        return Const(x)
    if isinstance(x, str):
        if x.lstrip("-").isdigit():
            return Const(int(x))
        if x.isidentifier():
            return Var(x)
    raise TypeError(f"not an index expression: {x!r} (build it from Expr, Var and ints)")


def _linear(e: Expr) -> tuple[dict[Expr, int], int]:
    if isinstance(e, Const):
        return {}, e.value
    if isinstance(e, Sum):
        return dict(e.terms), e.const
    return {e: 1}, 0


def _from_linear(terms: dict[Expr, int], const: int) -> Expr:
    terms = {t: c for t, c in terms.items() if c}
    if not terms:
        return Const(const)
    if len(terms) == 1 and not const:
        (t, c), = terms.items()
        if c == 1:
            return t
    return Sum(tuple(terms.items()), const)


def add(a, b) -> Expr:
    a, b = as_expr(a), as_expr(b)
    terms, const = _linear(a)
    more, k = _linear(b)
    for t, c in more.items():
        terms[t] = terms.get(t, 0) + c
    return _from_linear(terms, const + k)


def mul(a, b) -> Expr:
    a, b = as_expr(a), as_expr(b)
    if isinstance(b, Const):
        a, b = b, a
    if isinstance(a, Const):
        terms, const = _linear(b)
        return _from_linear({t: c * a.value for t, c in terms.items()}, const * a.value)
    if isinstance(a, Sum) or isinstance(b, Sum):  # distribute: keeps the linear form
        s, other = (a, b) if isinstance(a, Sum) else (b, a)
        total: Expr = Const(0)
        for t, c in s.terms:
            total = add(total, mul(mul(t, other), c))
        return add(total, mul(s.const, other))
    fa = a.factors if isinstance(a, Prod) else (a,)
    fb = b.factors if isinstance(b, Prod) else (b,)
    return Prod(fa + fb)


def _split(a: Expr, d: int) -> tuple[Expr, Expr] | None:
    """a = d*q + r, q from the terms whose coefficient d divides (and the constant's
    multiple of d), r the rest (0 <= its constant < d); None if nothing splits off."""
    terms, const = _linear(a)
    q = {t: c // d for t, c in terms.items() if c % d == 0}
    r = {t: c for t, c in terms.items() if c % d != 0}
    qc, rc = divmod(const, d)
    if not q and not qc:
        return None
    return _from_linear(q, qc), _from_linear(r, rc)


def _by_constant(a, b, node: type[_Quotient], fold) -> tuple[Expr, int | None]:
    """The part div and mod share: (the finished expression, None) when the divisor is
    not a constant or both are; else (the dividend, the constant divisor)."""
    a, b = as_expr(a), as_expr(b)
    if not isinstance(b, Const):
        return node(a, b), None
    if b.value == 0:
        raise ZeroDivisionError(f"{node.__name__.lower()} by the constant 0 in generated C")
    if isinstance(a, Const):
        return Const(fold(a.value, b.value)), None
    return a, b.value


def div(a, b) -> Expr:
    """C's a / b, simplified (see the module docstring)."""
    a, d = _by_constant(a, b, Div, c_div)
    if d is None or d == 1:
        return a
    if d < 0:
        return Div(a, Const(d))
    if isinstance(a, Div) and isinstance(a.den, Const) and a.den.value > 0:
        return div(a.num, a.den.value * d)
    if nonneg(a):
        if below(a, d):
            return Const(0)
        parts = _split(a, d)
        if parts is not None and nonneg(parts[1]):  # floor and truncation agree on a, r >= 0
            return parts[0] + div(parts[1], d)
    return Div(a, Const(d))


def mod(a, b) -> Expr:
    """C's a % b, simplified (see the module docstring)."""
    a, d = _by_constant(a, b, Mod, c_mod)
    if d is None:
        return a
    if abs(d) == 1:
        return Const(0)
    if d > 0 and nonneg(a):
        if below(a, d):
            return a
        if isinstance(a, Mod) and isinstance(a.den, Const) and a.den.value % d == 0 and nonneg(a.num):
            return mod(a.num, d)
        parts = _split(a, d)
        if parts is not None and nonneg(parts[1]):
            return mod(parts[1], d)
    return Mod(a, Const(d))


def product(*factors) -> Expr:
    """The product of ints and expressions (1 for none)."""
    total: Expr = Const(1)
    for f in factors:
        total = mul(total, f)
    return total


def inside(e: Expr, lo, hi) -> bool | str:
    """Whether lo <= e < hi: True or False when the ranges decide it, else the C
    condition of the parts they leave open."""
    lo_e, hi_e = as_expr(lo), as_expr(hi)
    low, high = e - lo_e, hi_e - e  # lo <= e  <=>  low >= 0;  e < hi  <=>  high >= 1
    if (low.hi is not None and low.hi < 0) or (high.hi is not None and high.hi < 1):
        return False
    tests = []
    if not nonneg(low):
        tests.append(f"{e} >= {lo_e}")  # comparisons bind looser than arithmetic: no parentheses
    if not (high.lo is not None and high.lo >= 1):
        tests.append(f"{e} < {hi_e}")
    return " && ".join(tests) if tests else True
