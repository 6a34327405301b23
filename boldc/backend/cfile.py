"""The C text of a generated file, around the op bodies (``emit.py`` plans, this writes):
C names, the locals an op function declares, the op tables, string literals and the
cffi declarations."""

from __future__ import annotations

import keyword
import re

from boldc.backend.ckernel import EmitError
from boldc.ir.builder import unique_name

RESERVED = {"n", "ex", "bd_nt", "scratch", "arena", "params", "ctx", "cfg", "frame", "src", "dst"}
# the generated file's own symbols, <name>_<symbol>: no IR function may take them
OWN_SYMBOLS = ("frame", "op_fn", "run_ops", "input_error", "param_info", "ctx", "init", "set_threads",
               "weights_image", "checkpoint_save", "checkpoint_load", "input_check_message")
C_KEYWORDS = {"auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum",
              "extern", "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return",
              "short", "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
              "volatile", "while"}


def comment(text: str) -> str:
    """``text`` on one line, safe inside a C comment."""
    return " ".join(str(text).split()).replace("*/", "* /")


def ident(text: str) -> str:
    """A C identifier made of ``text`` (other characters become _)."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", text)
    if not s or s[0].isdigit():
        s = "_" + s
    return s


def local_name(name: str, used: set[str]) -> str:
    """The C name of an operand's pointer: not one a body uses for itself, unique in ``used``."""
    base = ident(name.replace("[", "").replace("]", ""))
    if (base in RESERVED or base in C_KEYWORDS or keyword.iskeyword(base) or base.startswith("bd_")
            or re.fullmatch(r"i\d+", base)):  # i0, i1...: the loop variables of the bodies
        base = base + "_"
    return unique_name(base, used, sep="", first=2)


def pointer(ctype: str, name: str, base: str, offset: int, ref: str = "") -> str:
    """``const float *x = (const float *)(frame->arena + 64); /* %x */``"""
    note = f" /* {comment(ref)} */" if ref else ""
    return f"{ctype} *{name} = ({ctype} *)(frame->{base} + {offset});{note}"


# The locals any body may use besides its pointers: name -> declaration.
COMMON_LOCALS = {"n": "const long n = frame->ex.n;", "ex": "const bd_exec *ex = &frame->ex;"}


def identifiers(code: str) -> set[str]:
    """The identifiers C statements use (comments and string literals left out)."""
    code = re.sub(r"/\*.*?\*/", " ", code, flags=re.S)
    code = re.sub(r'"(?:\\.|[^"\\])*"', '""', code)
    return set(re.findall(r"(?<![\w.])(?<!->)[A-Za-z_]\w*", code))  # not members (.n, ->n)


def with_locals(body: str, decls: dict[str, str]) -> str:
    """``body`` after the declarations (name -> C) of the names it uses, in order."""
    used = identifiers(body)
    lines = [d for name, d in {**COMMON_LOCALS, **decls}.items() if name in used]
    if not lines and "frame" not in used:
        lines = ["(void)frame;"]  # a body that reads no buffer (frame is a parameter)
    return "\n".join(lines + [body.rstrip("\n")])


def check_names(prefix: str, texts: list[dict]) -> None:
    """Every C symbol of the file is unique: a function named like another's helpers
    (``forward_op0``, ``forward_ops``) or the file's own (``init``) is refused."""
    seen = {f"{prefix}_{s}": "the generated file" for s in OWN_SYMBOLS}
    for t in texts:
        names = [t["cname"], t["cname"] + "_ops"] + [c["cname"] for c in t["copies_in"] + t["copies_out"]]
        names += [op["cname"] for op in t["ops"]] + [op["cname"] + "_check" for op in t["ops"] if op["check"]]
        for name in names:
            if name in seen:
                raise EmitError(f"function @{t['name']}: its C symbol {name} is taken by {seen[name]}: rename "
                                "the function")
            seen[name] = f"@{t['name']}"


def table(names: list[str], width: int = 100) -> list[str]:
    """Comma-separated ``names`` in lines of at most ``width`` characters."""
    lines, line = [], ""
    for name in names:
        if line and len(line) + len(name) + 2 > width:
            lines.append(line)
            line = ""
        line += name + ", "
    return [x.rstrip() for x in lines + ([line] if line else [])]


def c_string(text: str) -> str:
    """A C string literal of ``text`` (UTF-8; anything but printable ASCII as octal escapes)."""
    out = []
    for b in text.encode("utf-8"):
        c = chr(b)
        out.append("\\" + c if c in '"\\?' else c if 32 <= b < 127 else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def cdef(prefix: str, texts: list[dict]) -> str:
    """The declarations cffi needs: the context and the public functions."""
    lines = [f"typedef struct {{ unsigned char *params; unsigned char *arena; int threads; double *profile; "
             f"int error_check; }} {prefix}_ctx;",
             f"int {prefix}_init({prefix}_ctx *ctx, unsigned char *params, unsigned char *arena);",
             f"int {prefix}_set_threads({prefix}_ctx *ctx, int threads);",
             f"int {prefix}_checkpoint_save(const {prefix}_ctx *ctx, const char *path, const void *meta, "
             "size_t meta_len);",
             f"int {prefix}_checkpoint_load({prefix}_ctx *ctx, const char *path, void *meta, size_t meta_cap, "
             "size_t *meta_len);",
             f"const char *{prefix}_input_check_message(int k);",
             "const char *bd_checkpoint_error(int code);",
             "const char *bd_build_info(void);"]
    lines += [f"int {t['cname']}({t['signature']});" for t in texts]
    return "\n".join(lines) + "\n"
