"""Back to the IR and to the C engine: ``from_torch``, checkpoints, resume (docs/torch.md).

- ``from_torch(net)`` is the module with the net's weights; with ``optimizer=True`` it is the
  module with @train_step and the optimizer state, whose param table is the C engine's for the
  same options: a torch checkpoint continues in C and a C checkpoint continues on torch, with the
  same b1 weights as the other engine continuing.
- A torch run stopped after an epoch and resumed from its checkpoint ends bit-identical to an
  uninterrupted run.
- Pre-training on torch, ``from_torch``, ``boldc.save``, fine-tuning in C with ``boldc train``:
  the accuracy on the fine-tuning data after the fine-tune is not lower than before it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import boldc
from boldc.backend.training import TrainOptions, training_module
from boldc.errors import ArtefactError
from boldc.torch import from_torch, load_checkpoint, save_checkpoint, to_torch
from boldc.torch.engine import compile as torch_compile

from trainutil import digits_mlp, digits_split, small_cnn

OPTS = {"eta": 3.0, "lr": 1e-3, "total_steps": 40}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    xtr, xte, ytr, yte = digits_split()
    return xtr, ytr, xte, yte


def _b1(module: boldc.Module) -> dict[str, np.ndarray]:
    return {n: p.data for n, p in module.params.items() if p.type.dtype.is_bool}


def test_from_torch_gives_the_weights_and_the_c_engines_table(data):
    module = digits_mlp(0)
    net = to_torch(module, **{**OPTS, "eta": 30.0})
    xtr, ytr = data[0], data[1]
    for s in range(0, 192, 64):
        net.train_step(xtr[s:s + 64], ytr[s:s + 64])
    plain = from_torch(net)
    assert set(plain.functions) == {"forward"} and list(plain.params) == list(module.params)
    assert any(not np.array_equal(plain.params[n].data, b) for n, b in _b1(module).items())  # trained
    np.testing.assert_array_equal(boldc.interpret(plain, xtr[:50]), net.infer(xtr[:50]))
    full = from_torch(net, optimizer=True)
    c_module = training_module(module, TrainOptions.from_kwargs({**OPTS, "eta": 30.0}))
    assert [(n, p.type) for n, p in full.params.items()] == [(n, p.type) for n, p in c_module.params.items()]
    assert int(full.params["opt.step"].data) == 3
    assert np.abs(full.params["fc1.w.m"].data).max() > 0 and full.params["fc1.w.beta"].data < 1
    boldc.verify(boldc.parse(boldc.dumps(full)))


@pytest.mark.parametrize("build,shape", [(lambda: digits_mlp(1), (64,)), (lambda: small_cnn("xnor", "false"),
                                                                           (1, 8, 8))])
def test_checkpoints_cross_between_the_engines(build, shape, data, tmp_path):
    x, y = data[0].reshape((-1,) + shape), data[1]
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 32 * 6, 32)]
    tm = torch_compile(build(), train=True, max_batch=32, **OPTS)
    cm = boldc.compile(build(), train=True, max_batch=32, **OPTS)
    for xb, yb in batches[:3]:
        tm.train_step(xb, yb)
    tm.save_checkpoint(tmp_path / "torch.ckpt", {"epoch": 1})
    assert cm.load_checkpoint(tmp_path / "torch.ckpt") == {"epoch": 1}  # the C runtime reads it
    back = torch_compile(build(), train=True, max_batch=32, **OPTS)
    cm.save_checkpoint(tmp_path / "c.ckpt")
    back.load_checkpoint(tmp_path / "c.ckpt")  # and the torch engine reads the C runtime's
    for xb, yb in batches[3:]:
        losses = [tm.train_step(xb, yb), cm.train_step(xb, yb), back.train_step(xb, yb)]
        assert max(losses) - min(losses) < 1e-5
    for name in _b1(tm.module):
        assert np.array_equal(tm.get_param(name), cm.get_param(name)), f"@{name}"
        assert np.array_equal(tm.get_param(name), back.get_param(name)), f"@{name}"
    assert tm.get_param("opt.step") == cm.get_param("opt.step") == 6


def test_a_refused_checkpoint_changes_nothing(data, tmp_path):
    net = to_torch(digits_mlp(2), **OPTS)
    net.train_step(data[0][:64], data[1][:64])
    save_checkpoint(net, tmp_path / "a.ckpt")
    raw = bytearray((tmp_path / "a.ckpt").read_bytes())
    raw[100] ^= 1
    (tmp_path / "bad.ckpt").write_bytes(bytes(raw))
    before = from_torch(net, optimizer=True)
    with pytest.raises(ArtefactError, match="checksum"):
        load_checkpoint(net, tmp_path / "bad.ckpt")
    other = to_torch(digits_mlp(2), freeze_float=True, **OPTS)  # another table: no Adam state
    with pytest.raises(ArtefactError, match="another model"):
        load_checkpoint(other, tmp_path / "a.ckpt")
    after = from_torch(net, optimizer=True)
    assert all(np.array_equal(p.data, after.params[n].data) for n, p in before.params.items())


def test_resumed_torch_run_equals_an_uninterrupted_one(data, tmp_path):
    xtr, ytr = data[0][:300], data[1][:300]
    opts = {"eta": 3.0, "total_steps": 3 * 5, "seed": 4, "signal_bits": "16", "rounding": "stochastic"}
    whole = torch_compile(digits_mlp(3), train=True, max_batch=64, **opts)
    whole.fit(xtr, ytr, epochs=3, batch=64)
    first = torch_compile(digits_mlp(3), train=True, max_batch=64, **opts)
    first.fit(xtr, ytr, epochs=1, batch=64)
    first.save_checkpoint(tmp_path / "e1.ckpt", {"epoch": 1})
    resumed = torch_compile(digits_mlp(3), train=True, max_batch=64, **opts)
    assert resumed.load_checkpoint(tmp_path / "e1.ckpt") == {"epoch": 1}
    resumed.fit(xtr, ytr, epochs=3, batch=64, start_epoch=1)
    for name in whole.module.params:
        a, b = whole.get_param(name), resumed.get_param(name)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), f"@{name}"


def _boldc(*args) -> str:
    out = subprocess.run([sys.executable, "-P", "-m", "boldc", *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _accuracy(stdout: str) -> float:
    return float(stdout.split("accuracy ")[1].split("%")[0])


def test_pretrain_on_torch_then_fine_tune_in_c(data, tmp_path):
    xtr, ytr, _, _ = data
    half = len(xtr) // 2
    pre = torch_compile(digits_mlp(5), train=True, max_batch=64, eta=3.0, total_steps=8 * 11)
    pre.fit(xtr[:half], ytr[:half], epochs=8, batch=64)
    boldc.save(from_torch(pre.net), tmp_path / "pre.bir")
    np.savez(tmp_path / "tune.npz", x=xtr[half:], y=ytr[half:])
    before = _accuracy(_boldc("eval", tmp_path / "pre.bir", "--data", tmp_path / "tune.npz"))
    _boldc("train", tmp_path / "pre.bir", "--data", tmp_path / "tune.npz", "--epochs", "5", "--eta", "1",
           "--signal-bits", "f32", "-o", tmp_path / "tuned.bir")
    after = _accuracy(_boldc("eval", tmp_path / "tuned.bir", "--data", tmp_path / "tune.npz"))
    print(f"accuracy on the fine-tuning data: {before} % before, {after} % after")
    assert before > 50 and after >= before, (before, after)
