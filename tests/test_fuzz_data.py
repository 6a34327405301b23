"""Fuzzing the data files of ``boldc train`` and ``boldc eval``: .npz files with arrays of
random keys, shapes, dtypes and values, and byte-level mutations of a valid one, through
the command line (in process, ``boldc.cli.main``). Rule (tests/fuzzutil.py): exit 0 with
a valid trained model (finite params), or exit 2 with one line ``boldc: error: ...``;
never another exception, never a hang."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from fuzzutil import Outcomes, byte_edit, fuzz_settings, time_limit
from hypothesis import given
from hypothesis import strategies as st

import boldc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzzdata") / "mlp.bir"
    boldc.save(boldc.convert(EXAMPLES / "digits_mlp.onnx"), path)
    return path


DTYPES = ["float32", "float64", "float16", ">f4", "int8", "uint8", "int32", "int64", "bool", "complex64", "U3",
          "object"]


@st.composite
def array(draw, role: str, n: int):
    """A plausible array for ``x`` (samples of 64 features) or ``y`` (labels), or not."""
    if draw(st.integers(0, 3)):
        shape = (n, 64) if role == "x" else (n,)
        dtype = "float32" if role == "x" else "int64"
    else:
        shape = tuple(draw(st.lists(st.integers(0, 5 if role == "x" else 12), max_size=3)))
        dtype = draw(st.sampled_from(DTYPES))
    if role == "x":
        values = draw(st.sampled_from(["pixels"] * 4 + ["wide", "special"]))
        base = {"pixels": lambda r: r.integers(0, 17, shape), "wide": lambda r: r.standard_normal(shape) * 1e30,
                "special": lambda r: r.choice([0.0, np.nan, np.inf, -np.inf, 3e38, 1e39, -0.0], shape)}[values]
    else:
        low, high = draw(st.sampled_from([(0, 10)] * 4 + [(-3, 10), (0, 12), (0, 2**40)]))
        base = lambda r: r.integers(low, high, shape)  # noqa: E731
    raw = base(np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    if dtype == "object":
        return np.array(raw, dtype=object)
    with np.errstate(all="ignore"):
        return np.asarray(raw).astype(dtype)


@st.composite
def data_file(draw):
    n = draw(st.sampled_from([1, 2, 3, 5]))
    arrays = {}
    for key in ("x", "y"):  # each usually present under its name
        if draw(st.integers(0, 19)):
            arrays[key if draw(st.integers(0, 19)) else key.upper()] = draw(array(key, n))
    if draw(st.integers(0, 4)) == 0:
        arrays["extra"] = np.zeros(3)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # object arrays are pickled in the file (boldc reads none)
    return buf.getvalue()


@st.composite
def mutated_bytes(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    buf = io.BytesIO()
    np.savez(buf, x=rng.integers(0, 17, (3, 64)).astype(np.float32), y=np.array([1, 2, 3]))
    return byte_edit(draw, buf.getvalue())


def _run(cli, outcomes: Outcomes, args: list, out: Path | None) -> None:
    with time_limit(120):
        code, stdout, stderr = cli(*args)
    if code == 2:
        lines = [ln for ln in stderr.splitlines() if not re.match(r"epoch \d+/\d+: ", ln)]
        assert len(lines) == 1 and lines[0].startswith("boldc: error: "), stderr
        assert "Traceback" not in stderr and stdout == ""
        outcomes.refused()
        return
    assert code == 0, (code, stdout, stderr)
    if out is not None:
        trained = boldc.load(out)
        for name, p in trained.params.items():
            assert p.type.dtype.is_bool or np.all(np.isfinite(p.data)), name
    outcomes.accepted()


def _train_and_eval(cli, model: Path, tmp_path: Path, raw: bytes, train: Outcomes, evaluate: Outcomes) -> None:
    data = tmp_path / "d.npz"
    data.write_bytes(raw)
    out = tmp_path / "t.bir"
    for leftover in tmp_path.glob("t.*"):
        leftover.unlink()
    _run(cli, train, ["train", model, "--data", data, "-o", out, "--epochs", "1", "--batch", "2"], out)
    _run(cli, evaluate, ["eval", model, "--data", data, "--batch", "2"], None)


@pytest.mark.parametrize("what, files, examples", [("arrays", data_file, 30), ("bytes", mutated_bytes, 60)])
def test_fuzz_data(cli, model, tmp_path, what, files, examples):
    train, evaluate = Outcomes(f"npz {what} (boldc train)"), Outcomes(f"npz {what} (boldc eval)")

    @fuzz_settings(examples=examples)
    @given(files())
    def case(raw):
        _train_and_eval(cli, model, tmp_path, raw, train, evaluate)

    case()
    train.report(minimum_run=examples)
    evaluate.report(minimum_run=examples)
