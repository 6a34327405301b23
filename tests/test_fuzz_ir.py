"""Fuzzing the IR reader: byte-level, line-level, token-level and resource mutations of
``.bir`` files (the golden models, a converted CNN, a module with a training step)
through ``boldc.load`` and ``boldc.parse``. Rule (tests/fuzzutil.py): a module that
verifies and round-trips, or a one-line BoldcError; never another exception, never a
hang."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fuzzutil import Outcomes, byte_edit, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

import boldc

from conftest import GOLDEN

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def texts():
    from boldc.backend.training import TrainOptions, training_module

    out = {p.name: p.read_text() for p in sorted(GOLDEN.glob("*.bir"))}
    out["cnn.bir"] = boldc.dumps(boldc.convert(EXAMPLES / "digits_cnn.onnx"))
    step = training_module(boldc.load(GOLDEN / "boolean_mlp.bir"), TrainOptions.from_kwargs({}))
    out["train_step.bir"] = boldc.dumps(step)
    return out


def _check_accepted(module: boldc.Module) -> None:
    boldc.verify(module)
    text = boldc.dumps(module)
    assert boldc.dumps(boldc.parse(text)) == text


def _load_case(outcomes: Outcomes, path: Path) -> None:
    with outcomes.case():
        _check_accepted(boldc.load(path))


@st.composite
def byte_mutation(draw, texts):
    name = draw(st.sampled_from(sorted(texts)))
    syntax = st.sampled_from([b"%", b"@", b"{", b"}", b"(", b")", b",", b"\n", b'"'])
    return name, byte_edit(draw, texts[name].encode("utf-8"), inserts=st.one_of(st.binary(min_size=1, max_size=6),
                                                                                 syntax))


def test_fuzz_ir_bytes(texts, tmp_path):
    outcomes = Outcomes("bir bytes (load)")

    @fuzz_settings(examples=120)
    @given(byte_mutation(texts))
    def case(mutation):
        name, data = mutation
        path = tmp_path / name
        path.write_bytes(data)
        _load_case(outcomes, path)

    case()
    outcomes.report(minimum_run=120)


# --- lines, tokens and resources ----------------------------------------------------------------------

TOKEN = re.compile(r'%[\w.$/-]+|@[\w.$/-]+|"[^"\n]*"|-?\d+(?:\.\d+)?(?:e[-+]?\d+)?|\b(?:f32|i8|i16|i32|b1)\b|[a-z_]\w*')
VOCABULARY = ["%x", "%y", "@w", "@fc1.w", "f32", "b1", "i8", "i16", "i32", "N", "M", "0", "-1", "1", "2", "64",
              "4294967296", "1e999", "nan", "inf", "blinear", "threshold", "linear", "relu", "flip_update", "return",
              "func", "param", "resources", "crc32", '"xnor"', '""', "true", "[]", "{}", "@forward", "->"]


@st.composite
def text_mutation(draw, texts):
    name = draw(st.sampled_from(sorted(texts)))
    text = texts[name]
    kind = draw(st.sampled_from(["drop_line", "dup_line", "swap_lines", "token", "resource", "crc", "move_resource"]))
    lines = text.splitlines(keepends=True)
    if kind in ("drop_line", "dup_line", "swap_lines"):
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "drop_line":
            del lines[i]
        elif kind == "dup_line":
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        return name, kind, "".join(lines)
    if kind == "token":
        tokens = list(TOKEN.finditer(text))
        tok = tokens[draw(st.integers(0, len(tokens) - 1))]
        same_kind = [t.group() for t in tokens if t.group()[:1] == tok.group()[:1]]
        new = draw(st.one_of(st.sampled_from(VOCABULARY), st.sampled_from(same_kind)))
        return name, kind, text[:tok.start()] + new + text[tok.end():]
    blobs = [m for m in re.finditer(r'(@\S+) = crc32\((0x[0-9a-f]+)\) "([^"]*)"', text)]
    if not blobs:  # a structure-only text: drop a line instead
        return name, "drop_line", "".join(lines[1:])
    m = blobs[draw(st.integers(0, len(blobs) - 1))]
    if kind == "resource":
        blob = m.group(3)
        at = draw(st.integers(0, max(0, len(blob) - 1)))
        edit = draw(st.sampled_from(["char", "cut", "grow", "pad"]))
        if edit == "char":
            blob = blob[:at] + draw(st.sampled_from("A/+=9z!")) + blob[at + 1:]
        elif edit == "cut":
            blob = blob[:at]
        elif edit == "grow":
            blob = blob + draw(st.sampled_from(["AAAA", "A", "===="]))
        else:
            blob = blob.rstrip("=")
        return name, kind, text[:m.start(3)] + blob + text[m.end(3):]
    if kind == "crc":
        crc = draw(st.sampled_from(["0x0", "0xffffffff", "0x100000000", hex(int(m.group(2), 16) ^ 1)]))
        return name, kind, text[:m.start(2)] + crc + text[m.end(2):]
    other = blobs[draw(st.integers(0, len(blobs) - 1))].group(1)  # data assigned to another param
    return name, kind, text[:m.start(1)] + other + text[m.end(1):]


def test_fuzz_ir_structure(texts):
    outcomes = Outcomes("bir lines, tokens, resources (parse)")

    @fuzz_settings(examples=150)
    @given(text_mutation(texts))
    def case(mutation):
        name, _, text = mutation
        with outcomes.case():
            _check_accepted(boldc.parse(text, filename=name))

    case()
    outcomes.report(minimum_run=150)
