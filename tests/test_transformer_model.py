"""A BERT-style encoder (examples/torch_models.TextEncoder, small) converted with boldc.convert:
the generated C and the torch engine against the interpreter, inference and 20 training steps
(b1 weights bit for bit, losses and f32 params within tolerance), with the default mixed
projections and with --binarize-activations."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import boldc

from backend_check import float_close
from trainutil import assert_c_steps_match

torch = pytest.importorskip("torch", reason="the encoder is defined and exported with PyTorch")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from text_data import ordered_pair  # noqa: E402
from torch_models import TextEncoder  # noqa: E402

VOCAB, LENGTH, STEPS, BATCH = 12, 8, 20, 8


def _encoder(binarize: bool) -> boldc.Module:
    torch.manual_seed(3)
    model = TextEncoder(VOCAB, LENGTH, width=16, heads=2, ff=32)
    ids, _ = ordered_pair(2, np.random.default_rng(0), LENGTH, VOCAB)
    return boldc.convert(model, example_input=torch.from_numpy(ids), binarize_activations=binarize)


def _batches(steps: int = STEPS):
    x, y = ordered_pair(steps * BATCH, np.random.default_rng(1), LENGTH, VOCAB)
    x = x.astype(np.int32)
    return [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(x), BATCH)]


@pytest.mark.parametrize("binarize", [False, True], ids=["mixed", "binarized"])
def test_the_conversion_gives_boolean_projections(binarize):
    names = [op.name for op in _encoder(binarize).ops("forward")]
    body = [n for n in names if n != "fused"]
    fused = [p["op"] for op in _encoder(binarize).ops("forward") if op.name == "fused" for p in op.attrs["body"]]
    layers = [n for n in body + fused if n in ("linear", "mlinear", "blinear")]
    assert layers.count("linear") == 1  # the classifier
    if binarize:
        assert "mlinear" not in layers and layers.count("blinear") == 12
    else:
        assert layers.count("mlinear") == 10 and layers.count("blinear") == 2  # Q, K, V, out, FF1; FF2 per block


@pytest.mark.parametrize("binarize", [False, True], ids=["mixed", "binarized"])
def test_c_inference_equals_the_interpreter(binarize):
    module = _encoder(binarize)
    x = _batches(1)[0][0]
    want = boldc.interpret(module, [x])
    got = boldc.compile(module, max_batch=BATCH).infer(x)
    assert got.shape == (BATCH, 2)
    assert float_close(got, want), np.abs(got - want).max()


@pytest.mark.parametrize("binarize", [False, True], ids=["mixed", "binarized"])
def test_twenty_c_training_steps_equal_the_interpreter(binarize):
    module = _encoder(binarize)
    before = {n: p.data.copy() for n, p in module.params.items() if p.type.dtype.is_bool}
    ref = assert_c_steps_match(module, _batches(), max_batch=BATCH, eta=30.0, lr=1e-3, total_steps=STEPS)
    flips = sum(int((ref.params[n].data != b).sum()) for n, b in before.items())
    assert flips > 0, "no weight flipped: the comparison would not test the Boolean optimizer"


def test_twenty_torch_engine_steps_equal_the_interpreter():
    from boldc.torch import from_torch, to_torch

    module = _encoder(False)
    net = to_torch(module, eta=30.0, lr=1e-3, total_steps=STEPS)
    ref = net.step_ir.copy()
    flips = 0
    for step, (x, y) in enumerate(_batches()):
        before = {n: p.data.copy() for n, p in ref.params.items() if p.type.dtype.is_bool}
        want = float(boldc.interpret(ref, [x, y], "train_step"))
        got = net.train_step(x, y)
        assert abs(want - got) <= 1e-5 * max(1.0, abs(want)), f"step {step}: loss {got} vs {want}"
        state = from_torch(net, optimizer=True)
        for name, p in ref.params.items():
            a, b = p.data, state.params[name].data
            if not p.type.dtype.is_float:
                assert np.array_equal(a, b), f"step {step}: @{name} differs"
            else:
                err = float(np.abs(a.astype(np.float64) - b).max())
                assert err <= 1e-5 * max(float(np.abs(a).max()), 1e-30), f"step {step}: @{name} differs by {err:.3g}"
        flips += sum(int((ref.params[n].data != b).sum()) for n, b in before.items())
    assert flips > 0


def test_float_encoder_gradients_equal_torch_autograd():
    """The float import (no lowering) of the encoder: autodiff's gradient of the mean
    cross-entropy through embeddings, attention (masked scores, softmax, the two products),
    LayerNorm, GELU and the [CLS] slice, against torch autograd of the same model, for every
    param that keeps its PyTorch name."""
    from boldc.torch.onnx_export import export

    from trainutil import gradients, make_train_step

    torch.manual_seed(3)
    model = TextEncoder(VOCAB, LENGTH, width=16, heads=2, ff=32)
    ids, labels = _batches(1)[0]
    module = boldc.import_onnx(export(model, torch.from_numpy(ids[:2].astype(np.int64)), input_names=["ids"]))
    make_train_step(module, "loss=softmax_xent")
    _, grads = gradients(module, [ids, labels])
    model = model.double()
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(ids.astype(np.int64))), torch.from_numpy(labels))
    loss.backward()
    named = {n: p.grad.numpy() for n, p in model.named_parameters()}
    common = sorted(set(named) & set(grads))
    assert len(common) >= 10 and "tokens.weight" in common and "blocks.0.norm1.weight" in common, common
    for name in common:
        np.testing.assert_allclose(grads[name], named[name], rtol=1e-3, atol=1e-6, err_msg=name)


def _torch_encoder_layer_module(batch: int) -> boldc.Module:
    """nn.TransformerEncoderLayer (batch_first) exported with a fixed batch: its attention
    reshapes [L, N, D] to [L, N·heads, hd], which a symbolic batch cannot type."""
    from boldc.torch.onnx_export import MAX_IR_VERSION

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = torch.nn.Embedding(VOCAB, 16)
            self.layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            self.head = torch.nn.Linear(16, 2)

        def forward(self, ids):
            return self.head(self.layer(self.tokens(ids))[:, 0])

    import io
    import warnings

    import onnx

    torch.manual_seed(4)
    ids, _ = ordered_pair(batch, np.random.default_rng(0), LENGTH, VOCAB)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder().eval(), (torch.from_numpy(ids),), buf, dynamo=False, opset_version=17,
                          input_names=["ids"], output_names=["y"])
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = MAX_IR_VERSION
    return boldc.convert(proto)


def test_a_fixed_batch_encoder_layer_trains_on_full_batches_and_evaluates_any_count():
    """A model with a fixed batch B: fit takes full batches of B (the remainder of each epoch's
    shuffle left out, so 2 steps of 10 samples here), refuses another batch, and evaluate runs
    any number of samples (chunks of B, the last padded), equal to the interpreter's rows."""
    module = _torch_encoder_layer_module(4)
    x, y = ordered_pair(10, np.random.default_rng(2), LENGTH, VOCAB)
    x = x.astype(np.int32)
    cm = boldc.compile(module, train=True, max_batch=4, total_steps=4, eta=30.0)
    steps = []
    cm.fit(x, y, epochs=1, on_step=lambda epoch, step, loss: steps.append(step))
    assert steps == [0, 1]
    with pytest.raises(boldc.BoldcError, match="fixed batch of 4: fit needs batch=4"):
        cm.fit(x, y, batch=2)
    with pytest.raises(boldc.BoldcError, match="at least one full batch of 4"):
        cm.fit(x[:3], y[:3])
    loss, acc = cm.evaluate(x[:7], y[:7])
    for name, p in module.params.items():
        p.set_data(cm.get_param(name))  # the trained state, for the interpreter
    last = np.concatenate([x[4:7], x[6:7]])  # the last chunk as evaluate fills it up
    rows = np.concatenate([boldc.interpret(module, [x[:4]]), boldc.interpret(module, [last])[:3]])
    assert acc == float((rows.argmax(1) == y[:7]).mean())
    assert float_close(cm.infer(x[:4]), rows[:4])
