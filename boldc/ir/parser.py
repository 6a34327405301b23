"""The parser: text -> Module (grammar in grammar.lark), then the verifier.

Errors are ``ParseError`` / ``VerifyError`` with ``file:line:col`` and, for ops, the
op name, on one line.
"""

from __future__ import annotations

import functools
import json
from importlib import resources as importlib_resources

import lark

from boldc.errors import ParseError, VerifyError, where
from boldc.ir import resources
from boldc.ir.core import Function, Loc, Module, Op, Param, Value
from boldc.ir.printer import FORMAT_VERSION
from boldc.ir.types import TensorType, dtype_from_str


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    grammar = importlib_resources.files("boldc.ir").joinpath("grammar.lark").read_text()
    return lark.Lark(grammar, parser="lalr", lexer="contextual", maybe_placeholders=True)


# How lark's terminal names read in messages.
_TERMINALS = {"COMMA": "','", "RPAR": "')'", "LPAR": "'('", "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['",
              "RSQB": "']'", "EQUAL": "'='", "COLON": "':'", "LOCAL": "%value", "GLOBAL": "@name",
              "OPNAME": "op name", "RETURN": "'return'", "DTYPE": "element type", "KEY": "attribute name",
              "MINUS": "'-'", "__ANON_0": "'->'"}


def _expected(exc: lark.exceptions.UnexpectedInput) -> str:
    names = sorted(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or [])
    shown = [_TERMINALS.get(n, n.lower()) for n in names][:8]
    return f"; expected {', '.join(shown)}" if shown else ""


def parse(text: str, filename: str | None = None, verify: bool = True) -> Module:
    """Parse IR text into a Module and (by default) verify it.

    Refused besides what the grammar and the verifier refuse: text with nothing in it
    (an empty file is not a module), and a resources section that lacks some params
    (weights for some params and not others: a damaged file)."""
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedToken as exc:
        tok = exc.token
        what = "end of file" if tok.type == "$END" else repr(str(tok)[:40])
        raise ParseError(f"{where(filename, exc.line, exc.column)}: error: unexpected {what}{_expected(exc)}") from None
    except lark.exceptions.UnexpectedCharacters as exc:
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        hint = " (unterminated string or data: is the file truncated?)" if ch == '"' else ""
        raise ParseError(f"{where(filename, exc.line, exc.column)}: error: unexpected character {ch!r}{hint}") from None
    except lark.exceptions.UnexpectedEOF as exc:
        raise ParseError(f"{where(filename, None, None)}: error: unexpected end of file{_expected(exc)}") from None
    if not any(child is not None for child in tree.children):
        raise ParseError(f"{where(filename, 1, 1)}: error: no IR in it (an empty file?): a boldc IR file begins "
                         f"with 'bir {FORMAT_VERSION}'")
    module = _Builder(filename).build(tree)
    if verify:
        from boldc.ir.verifier import verify as run_verifier

        run_verifier(module)
    return module


def _number(text: str) -> int | float:
    if any(c in text for c in ".eEn"):  # floats: 1.0, 1e-05, inf, -inf, nan
        return float(text)
    return int(text)


class _Builder:
    """Walks the parse tree and builds the Module, resolving names as it goes."""

    def __init__(self, filename: str | None):
        self.filename = filename

    def loc(self, tok) -> Loc:
        return Loc(self.filename, tok.line, tok.column)

    def fail(self, tok, msg: str) -> None:
        raise VerifyError(f"{self.loc(tok)}: error: {msg}")

    def string(self, literal: str, tok) -> str:
        """The JSON string ``literal`` (of token ``tok``): the grammar's strings are JSON's,
        and JSON also refuses raw control characters inside them."""
        try:
            return json.loads(literal)
        except json.JSONDecodeError as exc:
            why = exc.msg.removesuffix(" at").lower()
            raise ParseError(f"{self.loc(tok)}: error: bad string {literal[:40]!r}: {why} at its character "
                             f"{exc.pos + 1} (strings are JSON strings)") from None

    def name(self, tok) -> str:
        """``@name`` / ``%name`` without the sigil; a quoted name is a JSON string."""
        body = str(tok)[1:]
        return self.string(body, tok) if body.startswith('"') else body

    def build(self, tree: lark.Tree) -> Module:
        module = Module()
        decls = []
        for child in tree.children:
            if child is None:
                continue
            kind = child.data
            if kind == "header":
                version = int(child.children[0])
                if version > FORMAT_VERSION:
                    self.fail(child.children[0], f"IR format version {version} is newer than this boldc "
                              f"reads ({FORMAT_VERSION}); upgrade boldc")
            elif kind == "module_attrs":
                module.attrs = self.dict(child.children[0])
            else:
                decls.append(child)
        # Params first, so that functions may refer to params declared after them.
        for d in decls:
            if d.data == "param":
                self.param(module, d)
        for d in decls:
            if d.data == "func":
                self.func(module, d)
            elif d.data == "resources":
                self.resources(module, d)
        return module

    # -- declarations ---------------------------------------------------------------
    def param(self, module: Module, node) -> None:
        tok, type_node, attrs = node.children
        name = self.name(tok)
        if name in module.params:
            self.fail(tok, f"param @{name} is declared twice")
        module.params[name] = Param(name, self.type(type_node), None,
                                    self.dict(attrs) if attrs is not None else None, self.loc(tok))

    def func(self, module: Module, node) -> None:
        name_tok, *rest = node.children
        name = self.name(name_tok)
        if name in module.functions:
            self.fail(name_tok, f"function @{name} is defined twice")
        sig = next(i for i, c in enumerate(rest)
                   if isinstance(c, lark.Tree) and c.data in ("single_result", "many_results"))
        scope: dict[str, Value] = {}
        args = []
        for arg in rest[:sig]:
            if arg is None:
                continue
            tok, tnode = arg.children
            args.append(self.define(scope, tok, self.type(tnode)))
        sig_node = rest[sig]
        rtypes = [self.type(t) for t in sig_node.children if t is not None]
        fn = Function(name, args, loc=self.loc(name_tok), result_types=rtypes)
        for stmt in rest[sig + 1:]:
            if stmt.data == "op_stmt":
                fn.ops.append(self.op(module, scope, stmt))
            else:  # return_stmt
                ret_tok, *vals = stmt.children
                fn.return_loc = self.loc(ret_tok)
                fn.returns = [self.use(module, scope, v, "return: ") for v in vals if v is not None]
        if fn.return_loc is None:
            self.fail(name_tok, f"function @{name} has no return statement")
        module.functions[name] = fn

    def op(self, module: Module, scope: dict, node) -> Op:
        defs, optok, *rest, attrs_node = node.children
        operands = [self.use(module, scope, t, f"op '{optok}': ") for t in rest if t is not None]
        results = []
        if defs is not None:
            for d in defs.children:
                tok, tnode = d.children
                results.append(self.define(scope, tok, self.type(tnode)))
        attrs = self.dict(attrs_node) if attrs_node is not None else {}
        return Op(str(optok), operands, results, attrs, self.loc(optok))

    def resources(self, module: Module, node) -> None:
        given = [res for res in node.children if res is not None]
        for res in given:
            tok, hex_tok, blob = res.children
            name = self.name(tok)
            if name not in module.params:
                self.fail(tok, f"resource for undeclared param @{name}")
            p = module.params[name]
            if p.data is not None:
                self.fail(tok, f"param @{name} has two resources")
            if not p.type.is_static:
                self.fail(tok, f"param @{name} has symbolic shape {p.type}")
            try:
                p.data = resources.decode(str(blob)[1:-1], int(str(hex_tok), 16), p.type)
            except ValueError as exc:
                self.fail(tok, f"corrupt data for param @{name}: {exc}")
        missing = [p for p in module.params.values() if p.data is None]
        if given and missing:  # some weights and not others: a damaged file, not a structure-only one
            names = ", ".join(f"@{p.name}" for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise VerifyError(f"{missing[0].loc}: error: the resources section has no data for {len(missing)} of "
                              f"the {len(module.params)} params ({names}): the file is damaged; write it again "
                              "(boldc convert, boldc train) or remove the whole section to keep the structure only")

    # -- names ----------------------------------------------------------------------
    def define(self, scope: dict, tok, type: TensorType) -> Value:
        name = self.name(tok)
        if name in scope:
            self.fail(tok, f"value %{name} is defined twice")
        v = Value(name, type, self.loc(tok))
        scope[name] = v
        return v

    def use(self, module: Module, scope: dict, tok, context: str = "") -> Value:
        name = self.name(tok)
        if tok.type == "GLOBAL":
            if name not in module.params:
                self.fail(tok, f"{context}undefined param @{name}")
            return module.params[name]
        if name not in scope:
            self.fail(tok, f"{context}undefined value %{name}")
        return scope[name]

    # -- types and attribute values ---------------------------------------------------
    def type(self, node) -> TensorType:
        dtok, *dims = node.children
        shape = []
        for d in dims:
            if d is None:
                continue
            tok = d.children[0]
            shape.append(int(tok) if d.data == "int_dim" else str(tok))
            if d.data == "int_dim" and int(tok) < 0:
                self.fail(tok, f"negative dimension {tok}")
        return TensorType(dtype_from_str(str(dtok)), tuple(shape))

    def dict(self, node) -> dict:
        out = {}
        for entry in node.children:
            if entry is None:
                continue
            key, value = entry.children
            if str(key) in out:
                self.fail(key, f"attribute '{key}' given twice")
            out[str(key)] = self.value(value)
        return out

    def value(self, node):
        if isinstance(node, lark.Tree):
            kind = node.data
            if kind == "number":
                return _number(str(node.children[0]))
            if kind == "string":
                return self.string(str(node.children[0]), node.children[0])
            if kind == "true":
                return True
            if kind == "false":
                return False
            if kind == "list":
                return [self.value(c) for c in node.children if c is not None]
            if kind == "dict":
                return self.dict(node)
        raise AssertionError(f"unexpected attribute node {node!r}")
