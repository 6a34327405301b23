"""Invalid IR gives one-line errors naming file:line:col and the op."""

from __future__ import annotations

import pytest

import boldc
from boldc.errors import BoldcError, ParseError, VerifyError

from conftest import GOLDEN

FULL = (GOLDEN / "boolean_mlp.bir").read_text()
BASE = FULL.split("\nresources")[0] + "\n"

# (name, edit of the golden boolean MLP, error class, expected message)
CASES = [
    ("unknown op", ("= blinear(%h0", "= blinearx(%h0"), VerifyError,
     "m.bir:12:20: error: op 'blinearx' (%s1): unknown op 'blinearx'"),
    ("type mismatch", ("%s1: i8[N, 32]", "%s1: i32[N, 32]"), VerifyError,
     "m.bir:12:21: error: op 'blinear' (%s1): type mismatch: %s1 is declared i32[N, 32] but the op gives i8[N, 32]"),
    ("operand dtype", ("blinear(%h0", "blinear(%a0"), VerifyError,
     "m.bir:12:20: error: op 'blinear' (%s1): input must be b1, got f32[N, 32]"),
    ("undefined value", ("blinear(%h0", "blinear(%h9"), VerifyError,
     "m.bir:12:28: error: op 'blinear': undefined value %h9"),
    ("undefined param", ("@fc3.w)", "@fc4.w)"), VerifyError, "m.bir:16:37: error: op 'linear': undefined param @fc4.w"),
    ("wrong attribute value", ('{logic = "xor"}', '{logic = "nand"}'), VerifyError,
     "m.bir:14:20: error: op 'blinear' (%s2): attribute 'logic' = 'nand' is not one of 'xnor' | 'xor'"),
    ("unknown attribute", ('{logic = "xor"}', '{logik = "xor"}'), VerifyError,
     "m.bir:14:20: error: op 'blinear' (%s2): unknown attribute 'logik' (attributes of blinear: logic)"),
    ("attribute kind", ("{tau = 1}", '{tau = "one"}'), VerifyError,
     "m.bir:13:20: error: op 'threshold' (%h1): attribute 'tau' must be of kind number, got 'one'"),
    ("bad shape", ("param @fc2.w : b1[32, 32]", "param @fc2.w : b1[32, 31]"), VerifyError,
     "m.bir:14:20: error: op 'blinear' (%s2): input b1[N, 32] has 32 features, weights b1[32, 31] expect 31"),
    ("operand count", ("threshold(%s2)", "threshold()"), VerifyError,
     "m.bir:15:20: error: op 'threshold' (%h2): takes 1 to 3 operands (x, tau?, ge?), got 0"),
    ("defined twice", ("%h1: b1", "%h0: b1"), VerifyError, "m.bir:13:3: error: value %h0 is defined twice"),
    ("return type", ("return %logits", "return %h2"), VerifyError,
     "m.bir:17:3: error: @forward returns (b1[N, 32]) but its signature says (f32[N, 10])"),
    ("syntax", ("= blinear(%h0,", "= blinear(%h0 "), ParseError,
     "m.bir:12:33: error: unexpected '@fc1.w'; expected ',', ')'"),
    ("bad character", ("%a0: f32", "%a0#: f32"), ParseError, "m.bir:10:6: error: unexpected character '#'"),
    ("newer format", ("bir 1", "bir 7"), VerifyError,
     "m.bir:1:5: error: IR format version 7 is newer than this boldc reads (1); upgrade boldc"),
]


@pytest.mark.parametrize("name,edit,cls,message", CASES, ids=[c[0] for c in CASES])
def test_invalid_ir_message(name, edit, cls, message):
    old, new = edit
    assert old in BASE
    with pytest.raises(cls) as info:
        boldc.parse(BASE.replace(old, new, 1), filename="m.bir")
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_truncated_file():
    with pytest.raises(ParseError, match=r"m.bir:\d+:\d+: error: unexpected character '\"' \(unterminated string"):
        boldc.parse(FULL[:-300], filename="m.bir")
    with pytest.raises(ParseError, match=r"unexpected end of file"):
        boldc.parse(BASE[:200], filename="m.bir")


def test_corrupt_resource_checksum():
    # Flip one base64 digit of fc1.w's data: same length, different bits.
    line = next(ln for ln in FULL.splitlines() if ln.strip().startswith("@fc1.w ="))
    blob = line.split('"')[1]
    flipped = ("B" if blob[0] != "B" else "C") + blob[1:]
    with pytest.raises(VerifyError, match=r"error: corrupt data for param @fc1.w: checksum mismatch"):
        boldc.parse(FULL.replace(blob, flipped), filename="m.bir")


def test_resource_wrong_length():
    line = next(ln for ln in FULL.splitlines() if ln.strip().startswith("@fc1.b ="))
    blob = line.split('"')[1]
    with pytest.raises(VerifyError, match=r"corrupt data for param @fc1.b: data has 8 bytes, b1\[32\] needs 4"):
        boldc.parse(FULL.replace(blob, "AAAAAAAAAAA="), filename="m.bir")  # 8 zero bytes


def test_resource_for_unknown_param():
    text = FULL.replace("@fc1.b = crc32", "@fc9.b = crc32")
    with pytest.raises(VerifyError, match=r"resource for undeclared param @fc9.b"):
        boldc.parse(text, filename="m.bir")


def test_errors_are_boldc_errors():
    for cls in (ParseError, VerifyError):
        assert issubclass(cls, BoldcError)


def test_builder_rejects_ill_typed_ops():
    import numpy as np

    from boldc import FunctionBuilder, Module, tensor
    from boldc.ops.registry import TypeCheck

    m = Module()
    w = m.add_param("w", tensor("b1", 4, 3), np.zeros((4, 3), bool))
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 3))])
    with pytest.raises(TypeCheck, match="op 'blinear': input must be b1, got f32"):
        fb.op("blinear", [fb.args[0], w])


SMALL = """bir 1

func @forward(%x: i8[N, 1, 4, 4]) -> i8[N, 1, 4, 4] {
  %p: i8[N, 1, 2, 2] = maxpool2d(%x) {kernel = [2, 2], stride = [2, 2]}
  %q: i8[N, 1, 4, 4] = pad(%p) {pads = [0, 0, 1, 1, 0, 0, 1, 1]}
  return %q
}
"""


@pytest.mark.parametrize("old,new,message", [
    ("kernel = [2, 2]", "kernel = [0, 2]", r"kernel \[0, 2\] must be >= 1 in both dimensions"),
    ("kernel = [2, 2]", "kernel = [-1, -1]", r"kernel \[-1, -1\] must be >= 1"),
    ("1, 1]}", "1, 1], value = inf}", r"pad value inf is not a i8 value"),
    ("1, 1]}", "1, 1], value = nan}", r"pad value nan is not a i8 value"),
])
def test_window_and_pad_attributes_are_checked(old, new, message):
    """A kernel below 1 or a non-finite pad value of an integer tensor is a one-line error,
    not a numpy exception later."""
    assert old in SMALL
    with pytest.raises(VerifyError, match=message) as info:
        boldc.parse(SMALL.replace(old, new, 1), filename="m.bir")
    assert "\n" not in str(info.value)


def test_fused_parts_take_their_operand_count():
    text = ('bir 1\n\nparam @w : b1[5, 8]\n\nfunc @forward(%x: b1[N, 8]) -> b1[N, 5] {\n'
            '  %h: b1[N, 5] = fused(%x, @w) {body = [{op = "blinear", args = [0], attrs = {}}, '
            '{op = "threshold", args = [-1], attrs = {}}]}\n  return %h\n}\n')
    with pytest.raises(VerifyError, match=r"body part 0 \(blinear\) takes 2 to 3 operands, got 1"):
        boldc.parse(text, filename="m.bir")
