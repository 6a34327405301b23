"""Training through the reference interpreter on real data (a smoke test, not the
accuracy targets: those are measured in docs/training.md)."""

from __future__ import annotations

import numpy as np

import boldc

from trainutil import digits_mlp, digits_split, make_train_step


def _train(module, x, y, epochs, batch=64, seed=0):
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch + 1, batch):
            idx = order[start:start + batch]
            losses.append(float(boldc.interpret(module, [x[idx], y[idx]], "train_step")))
    return losses


def _accuracy(module, x, y):
    return float((boldc.interpret(module, x).argmax(axis=1) == y).mean())


def test_digits_mlp_learns():
    xtr, xte, ytr, yte = digits_split()
    m = make_train_step(digits_mlp(hidden=(64, 64, 64)), "", "")
    chance = _accuracy(m, xte, yte)
    losses = _train(m, xtr, ytr, epochs=2)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert _accuracy(m, xte, yte) > max(0.6, chance + 0.3)


def test_boolean_weights_alone_learn():
    """Float layers frozen at their random init: only flips can lower the loss."""
    xtr, xte, ytr, yte = digits_split()
    m = make_train_step(digits_mlp(hidden=(64, 64, 64)), "freeze-float=true", "eta=3")
    frozen = {n: p.data.copy() for n, p in m.params.items() if n.startswith(("fc0", "fc3"))}
    bits = m.params["fc1.w"].data.copy()
    losses = _train(m, xtr, ytr, epochs=3)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert _accuracy(m, xte, yte) > 0.4
    assert all(np.array_equal(m.params[n].data, v) for n, v in frozen.items())
    assert (m.params["fc1.w"].data != bits).any()


def test_training_is_deterministic():
    xtr, _, ytr, _ = digits_split()
    runs = []
    for _ in range(2):
        m = make_train_step(digits_mlp(hidden=(32, 32)), "", "")
        _train(m, xtr[:256], ytr[:256], epochs=1)
        runs.append({n: p.data for n, p in m.params.items()})
    assert all(np.array_equal(runs[0][n], runs[1][n]) for n in runs[0])


def _digits_cnn(seed=0):
    """conv(1->8, float) -> threshold -> bconv(8->16, pad F) -> maxpool 2 -> threshold -> linear."""
    rng = np.random.default_rng(seed)
    m = boldc.Module()
    fb = boldc.FunctionBuilder(m, "forward", [("x", boldc.tensor("f32", "N", 1, 8, 8))])
    w0 = m.add_param("c0.w", boldc.tensor("f32", 8, 1, 3, 3), rng.uniform(-1 / 3, 1 / 3, (8, 1, 3, 3)).astype("f4"))
    w1 = m.add_param("c1.w", boldc.tensor("b1", 16, 8, 3, 3), rng.random((16, 8, 3, 3)) < 0.5)
    w2 = m.add_param("fc.w", boldc.tensor("f32", 10, 256), rng.uniform(-1 / 16, 1 / 16, (10, 256)).astype("f4"))
    h = fb.op("threshold", [fb.op("conv2d", [fb.args[0], w0], {"pad": [1, 1, 1, 1]})])
    s = fb.op("bconv2d", [h, w1], {"pad": [1, 1, 1, 1]})
    h = fb.op("threshold", [fb.op("maxpool2d", [s], {"kernel": [2, 2], "stride": [2, 2]})])
    fb.ret(fb.op("linear", [fb.op("flatten", [h]), w2]))
    return m


def test_boolean_cnn_learns():
    xtr, xte, ytr, yte = digits_split()
    xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    m = make_train_step(_digits_cnn(), "", "")
    losses = _train(m, xtr, ytr, epochs=3)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert _accuracy(m, xte, yte) > 0.5
