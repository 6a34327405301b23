"""Per-position cross-entropy (softmax_xent on logits [N, C, *spatial] with an ignore index,
docs/training.md "Losses"): the reference against PyTorch's F.cross_entropy and finite
differences, the rank-2 case as before, the generated C and the torch engine against the
interpreter (the gradient bit for bit), a fully convolutional model trained through the C
backend, and a mean over the labels of all ranks under DistributedDataParallel.

The op cases of tests/train_cases.py (C: tests/test_backend_train_ops.py, torch engine:
tests/test_torch_ops.py) cover the same ops on odd shapes with both reductions.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import boldc
from boldc.errors import BoldcError, InterpretError
from boldc.ops.common import exp_fixed
from boldc.ops.registry import lookup
from boldc.torch import distributed, to_torch
from boldc.torch.engine import compile as torch_compile
from boldc.torch.registry import OpCall, Runtime, implementation

from opbuild import single_op
from trainutil import segmentation_data, tiny_fcn

LOSS_RTOL = 1e-6  # the loss: float64 sums in another order, rounded to f32 once
SHAPES = [(5, 4), (3, 5, 7), (2, 4, 3, 5)]  # spatial rank 0, 1, 2


def _xent(op, z, y, **attrs):
    d = lookup(op)
    return d.evaluate([z, y], d.normalize_attrs(attrs))[0]


def _case(shape, ignore, seed=0, fraction=0.3):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(shape) * 3).astype(np.float32)
    y = rng.integers(0, shape[1], (shape[0],) + shape[2:]).astype(np.int32)
    y[rng.random(y.shape) < fraction] = ignore
    y.reshape(-1)[0] = 0 if ignore != 0 else 1  # at least one label counts
    if fraction:
        y.reshape(-1)[-1] = ignore  # and one is ignored
    return z, y


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignore", [-100, 255, 0])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_loss_and_gradient_are_pytorch_cross_entropy(shape, ignore, reduction):
    z, y = _case(shape, ignore)
    zt = torch.from_numpy(z.astype(np.float64)).requires_grad_(True)
    want = F.cross_entropy(zt, torch.from_numpy(y).long(), ignore_index=ignore, reduction=reduction)
    want.backward()
    want = want.detach()
    loss = _xent("softmax_xent", z, y, reduction=reduction, ignore_index=ignore)
    grad = _xent("softmax_xent_grad", z, y, reduction=reduction, ignore_index=ignore)
    assert loss.dtype == np.float32 and loss.shape == ()
    assert abs(float(loss) - float(want)) <= LOSS_RTOL * abs(float(want))
    assert grad.shape == z.shape
    ref = zt.grad.numpy()
    assert np.abs(grad - ref).max() <= 1e-6 * np.abs(ref).max()
    ignored = np.broadcast_to(np.expand_dims(y == ignore, 1), z.shape)
    assert ignored.any() and not grad[ignored].any()  # no gradient where the label is ignored


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gradient_is_the_derivative_of_the_loss(shape):
    """Central differences of the loss (evaluated in float64 through its definition)."""
    z, y = _case(shape, -100, seed=1)
    grad = _xent("softmax_xent_grad", z, y).astype(np.float64)
    rng = np.random.default_rng(2)
    eps = 1e-2
    for flat in rng.choice(z.size, 12, replace=False):
        idx = np.unravel_index(flat, z.shape)
        hi, lo = z.copy(), z.copy()
        hi[idx] += eps
        lo[idx] -= eps
        numeric = (float(_xent("softmax_xent", hi, y)) - float(_xent("softmax_xent", lo, y))) / (2 * eps)
        assert abs(numeric - grad[idx]) <= 2e-4 + 1e-3 * abs(grad[idx]), (idx, numeric, grad[idx])


def test_rank_2_without_ignored_labels_is_unchanged():
    """Logits [N, C] with every label in range: the formula of the rank-2 op, bit for bit
    (softmax with exp_fixed, the class sum in order, minus one, divided by N)."""
    z, y = _case((9, 10), -100, seed=3, fraction=0.0)
    e = exp_fixed(z.astype(np.float64) - z.astype(np.float64).max(axis=1, keepdims=True))
    total = np.zeros(9)
    for c in range(10):
        total = total + e[:, c]
    g = e / total[:, None]
    g[np.arange(9), y] -= 1.0
    for reduction, want in (("mean", g / 9.0), ("sum", g)):
        got = _xent("softmax_xent_grad", z, y, reduction=reduction)
        assert np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32))
    shifted = z.astype(np.float64) - z.astype(np.float64).max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert float(_xent("softmax_xent", z, y)) == np.float32(-logp[np.arange(9), y].sum() / 9)


def test_every_label_ignored_gives_zero_loss_and_gradient():
    """PyTorch's mean is nan there; boldc's is 0 (docs/training.md), so a step changes nothing."""
    z = np.random.default_rng(4).standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = np.full((2, 4, 4), -100, np.int32)
    for reduction in ("mean", "sum"):
        assert float(_xent("softmax_xent", z, y, reduction=reduction)) == 0.0
        assert not _xent("softmax_xent_grad", z, y, reduction=reduction).any()
    assert torch.isnan(F.cross_entropy(torch.from_numpy(z), torch.from_numpy(y).long()))


def test_bad_labels_and_attributes():
    z, y = _case((2, 3, 4), -100, fraction=0.0)
    y[1, 2] = 3
    with pytest.raises(InterpretError, match="label 3 is out of range: there are 3 classes"):
        _xent("softmax_xent", z, y)
    y[1, 2] = -1  # -1 is no ignore index here
    with pytest.raises(InterpretError, match="label -1 is out of range"):
        _xent("softmax_xent_grad", z, y)
    assert _xent("softmax_xent_grad", z, y, ignore_index=-1)[1, :, 2].tolist() == [0.0] * 3
    with pytest.raises(InterpretError, match=r"labels of shape \[2, 3\] for logits \[2, 3, 4\]"):
        _xent("softmax_xent", z, y[:, :3])
    with pytest.raises(Exception, match="outside the range of the i32 labels"):
        lookup("softmax_xent").normalize_attrs({"ignore_index": 2**31})
    m = boldc.Module()
    fb = boldc.FunctionBuilder(m, "forward", [("x", boldc.tensor("f32", "N", 3, 2, 2, 2))])
    fb.ret(fb.op("relu", [fb.args[0]]))
    with pytest.raises(BoldcError, match=r"logits must be \[N, C\], \[N, C, L\] or \[N, C, H, W\]"):
        boldc.compile(m, train=True)


def _loss_module(shape, ignore, reduction):
    m = boldc.Module()
    z, y = _case(shape, ignore, seed=5)
    for op in ("softmax_xent", "softmax_xent_grad"):
        single_op(op, [z, y], attrs={"reduction": reduction, "ignore_index": ignore}, module=m, fname=op)
    return m, z, y


@pytest.mark.parametrize("shape,ignore,reduction", [((6, 5, 7), -100, "mean"), ((4, 4, 3, 5), 255, "mean"),
                                                     ((4, 3, 2, 2), 0, "sum"), ((6, 10), -100, "mean")], ids=str)
def test_c_gradient_is_bit_exact_and_loss_within_tolerance(shape, ignore, reduction):
    """The generated C (logits [N, C, L] row-major, [N, C, H, W] stored channels-last)."""
    m, z, y = _loss_module(shape, ignore, reduction)
    cm = boldc.compile(m, max_batch=shape[0], functions=list(m.functions))
    for batch in (1, shape[0]):
        args = [z[:batch], y[:batch]]
        got = cm.run("softmax_xent_grad", args)[0]
        want = boldc.interpret(m, args, func="softmax_xent_grad")
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), batch
        got, want = float(cm.run("softmax_xent", args)[0]), float(boldc.interpret(m, args, func="softmax_xent"))
        assert abs(got - want) <= 1e-6 * max(abs(want), 1e-30), batch


def test_c_refuses_a_label_out_of_range_before_running():
    m, z, y = _loss_module((3, 4, 5), -100, "mean")
    cm = boldc.compile(m, max_batch=3, functions=list(m.functions))
    y = y.copy()
    y[0, 0] = 4
    with pytest.raises(BoldcError, match=r"a label is out of range: there are 4 classes \(0 to 3; ignore_index -100"):
        cm.run("softmax_xent_grad", [z, y])


def test_torch_engine_equals_the_interpreter():
    """The torch implementations against the op definitions (the gradient bit for bit)."""
    for shape, ignore in ((3, 5, 7), -100), ((2, 4, 3, 5), 255):
        z, y = _case(shape, ignore, seed=6)
        for op in ("softmax_xent", "softmax_xent_grad"):
            d = lookup(op)
            attrs = d.normalize_attrs({"ignore_index": ignore})
            want = d.evaluate([z, y], attrs)[0]
            got = implementation(op)(OpCall(op, attrs, [], [], Runtime()), torch.from_numpy(z),
                                     torch.from_numpy(y).long())[0].numpy()
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (op, shape)


def test_fcn_trains_through_c_with_ignored_pixels():
    """conv -> Boolean conv -> per-pixel logits, trained by CompiledModel.fit: the loss falls, the
    first step's loss is the interpreter's, and a step on a batch whose labels are all
    ignored changes no param (a zero gradient)."""
    x, y = segmentation_data(48, seed=0)
    cm = boldc.compile(tiny_fcn(0), train=True, max_batch=8, seed=0)
    first = cm.train_step(x[:8], y[:8])
    ref = float(lookup("softmax_xent").evaluate([boldc.interpret(tiny_fcn(0), [x[:8]]), y[:8]],
                                                {"reduction": "mean", "ignore_index": -100})[0])
    assert abs(first - ref) <= 1e-5 * ref
    losses = cm.fit(x, y, epochs=6, batch=8)
    assert losses[-1] < 0.85 * losses[0]
    weights = cm.get_param("c1.w").copy()
    assert cm.train_step(x[:4], np.full((4, 6, 6), -100, np.int32)) == 0.0
    assert np.array_equal(cm.get_param("c1.w"), weights)  # q = 0: the accumulators only decay, nothing flips


def test_fcn_torch_engine_step_equals_the_c_step():
    """The same first steps on both engines: b1 weights identical, losses within tolerance."""
    x, y = segmentation_data(16, seed=1)
    cm = boldc.compile(tiny_fcn(1), train=True, max_batch=8, seed=0, eta=30.0)
    tm = torch_compile(tiny_fcn(1), train=True, max_batch=8, seed=0, eta=30.0)
    for s in range(0, 16, 8):
        a, b = cm.train_step(x[s:s + 8], y[s:s + 8]), tm.train_step(x[s:s + 8], y[s:s + 8])
        assert abs(a - b) <= 1e-5 * abs(a)
        assert np.array_equal(cm.get_param("c1.w"), tm.get_param("c1.w"))
    net = to_torch(tiny_fcn(1))
    assert net.loss_node.op.attrs["ignore_index"] == -100


def test_ignore_index_option_reaches_the_loss():
    step = boldc.compile(tiny_fcn(0), train=True, ignore_index=255).module.function("train_step")
    assert next(op for op in step.ops if op.name == "softmax_xent").attrs["ignore_index"] == 255
    with pytest.raises(BoldcError, match="ignore-index=7 is for a loss of class labels; mse has none"):
        boldc.compile(tiny_fcn(0), train=True, loss="mse", ignore_index=7)
    with pytest.raises(BoldcError, match="ignore_index must be an integer in the range of the i32 labels"):
        boldc.compile(tiny_fcn(0), train=True, ignore_index=2**40)


def test_kept_count_is_all_reduced_under_ddp():
    """The count a mean cross-entropy divides by is the sum over the ranks (Comm.all_sum)."""
    class TwoRanks:
        def all_sum(self, value, device):
            return value + 5.0  # the other rank's 5 labels

    z, y = _case((2, 3, 4), -100, seed=7)
    kept = int((y != -100).sum())
    call = OpCall("softmax_xent_grad", lookup("softmax_xent_grad").normalize_attrs({}), [], [],
                  Runtime(comm=TwoRanks()))
    got = implementation("softmax_xent_grad")(call, torch.from_numpy(z), torch.from_numpy(y).long())[0].numpy()
    local = _xent("softmax_xent_grad", z, y)
    assert np.allclose(got * (kept + 5), local * kept, rtol=1e-6, atol=0)


# --- DistributedDataParallel: two processes equal one on the whole batch ---------------------------

STEPS, WORLD = 4, 2


def _trace() -> tuple[list[float], list[np.ndarray]]:
    """Losses and the b1 weights after each step; the first rank's half of every batch has
    three times as many ignored labels as the second's (a mean over the local labels would differ)."""
    torch.set_num_threads(1)
    x, y = segmentation_data(8 * STEPS, seed=2, ignored=0.1)
    x2, y2 = segmentation_data(8 * STEPS, seed=3, ignored=0.6)
    for s in range(STEPS):  # batch s: 4 samples of each kind, the heavily ignored ones first (rank 0)
        x[8 * s:8 * s + 4], y[8 * s:8 * s + 4] = x2[8 * s:8 * s + 4], y2[8 * s:8 * s + 4]
    tm = torch_compile(tiny_fcn(2), train=True, max_batch=8, eta=30.0, total_steps=STEPS)
    losses, weights = [], []
    for s in range(STEPS):
        losses.append(tm.train_step(x[8 * s:8 * s + 8], y[8 * s:8 * s + 8]))
        weights.append(tm.get_param("c1.w"))
    return losses, weights


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    losses, weights = _trace()
    np.savez(f"{out}.{rank}.npz", losses=np.array(losses), **{f"w{s}": w for s, w in enumerate(weights)})
    torch.distributed.destroy_process_group()


@pytest.mark.skipif(distributed.cores() < 2, reason="needs 2 CPU cores for 2 processes")
def test_two_processes_divide_by_the_labels_of_the_whole_batch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "trace")
    mp.spawn(_worker, args=(port, out), nprocs=WORLD, join=True)
    losses, weights = _trace()
    for r in range(WORLD):
        got = np.load(f"{out}.{r}.npz")
        for s in range(STEPS):
            assert abs(float(got["losses"][s]) - losses[s]) <= 1e-5, (r, s)
            assert np.array_equal(got[f"w{s}"], weights[s]), (r, s)
    assert not np.array_equal(weights[0], weights[-1])  # the comparison covers flips
