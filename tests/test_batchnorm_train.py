"""BatchNorm in a training step: batch statistics, running statistics updated, the backward
through the batch statistics (docs/training.md, "BatchNorm"), against PyTorch's train mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.interp import run
from boldc.ops.registry import lookup
from boldc.passes import PassManager

RTOL = 1e-5


def _close(got, want, what):
    want = np.asarray(want, np.float64)
    err = np.abs(np.asarray(got, np.float64) - want).max()
    assert err <= RTOL * max(np.abs(want).max(), 1.0), f"{what}: max error {err:.3g}"


def _bn_module(shape, params):
    m = Module()
    c = shape[1]
    ps = [m.add_param(n, tensor("f32", c), a) for n, a in zip(("bn.w", "bn.b", "bn.rm", "bn.rv"), params)]
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", *shape[1:]))])
    y = fb.op("batchnorm", [fb.args[0], *ps], {"momentum": 0.2}, name="y")
    fb.ret(fb.op("flatten", [y]) if len(shape) > 2 else y)
    return m


@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (7, 5)], ids=["BatchNorm2d", "BatchNorm1d"])
def test_training_step_matches_torch_train_mode(shape):
    rng = np.random.default_rng(len(shape))
    c = shape[1]
    x = (3 * rng.standard_normal(shape) + 1).astype(np.float32)
    params = [rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32),
              rng.standard_normal(c).astype(np.float32), (rng.random(c) + 0.5).astype(np.float32)]
    m = _bn_module(shape, params)
    PassManager("autodiff{loss=mse,reduction=sum}").run(m)
    fn = m.function("train_step")
    assert "batchnorm_train" in [op.name for op in fn.ops] and "batchnorm" not in [op.name for op in fn.ops]
    target = rng.standard_normal((shape[0], int(np.prod(shape[1:])))).astype(np.float32)
    env = run(m, fn, [x, target])
    values = {v.name: env[v] for v in fn.values()}
    grads = {op.operands[0].name: env[op.operands[1]] for op in fn.ops if op.name == "param_grad"}

    bn = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(c, momentum=0.2, eps=1e-5).double()
    with torch.no_grad():
        for p, a in zip((bn.weight, bn.bias, bn.running_mean, bn.running_var), params):
            p.copy_(torch.tensor(a, dtype=torch.float64))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = bn.train()(xt)
    loss = ((y.flatten(1) - torch.tensor(target, dtype=torch.float64)) ** 2).sum()
    loss.backward(retain_graph=True)

    _close(values["y"], y.detach().numpy(), "forward")
    _close(grads["bn.w"], bn.weight.grad.numpy(), "d scale")
    _close(grads["bn.b"], bn.bias.grad.numpy(), "d bias")
    _close(m.params["bn.rm"].data, bn.running_mean.numpy(), "running mean")
    _close(m.params["bn.rv"].data, bn.running_var.numpy(), "running var")

    # dx, through the batch statistics, for a signal dy
    dy = rng.standard_normal(shape).astype(np.float32)
    want = torch.autograd.grad(y, xt, torch.tensor(dy, dtype=torch.float64).reshape(y.shape))[0]
    got = lookup("batchnorm_train_grad_x").evaluate([dy, x, params[0]], {"epsilon": 1e-5})[0]
    _close(got, want.numpy(), "d x")


def test_inference_uses_the_running_statistics_and_one_sample_is_refused():
    rng = np.random.default_rng(3)
    params = [np.ones(2, np.float32), np.zeros(2, np.float32), np.array([1, -1], np.float32),
              np.array([4, 1], np.float32)]
    m = _bn_module((1, 2), params)
    y = boldc.interpret(m, np.array([[3.0, 0.0]], np.float32))
    _close(y, [[(3 - 1) / np.sqrt(4 + 1e-5), (0 + 1) / np.sqrt(1 + 1e-5)]], "inference")
    PassManager("autodiff{loss=mse}").run(m)
    with pytest.raises(boldc.BoldcError, match="more than one value per channel"):
        boldc.interpret(m, [rng.standard_normal((1, 2)).astype(np.float32), np.zeros((1, 2), np.float32)],
                        "train_step")
