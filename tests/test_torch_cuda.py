"""The torch engine on CUDA (docs/torch.md, "CUDA"): run when a GPU is present, skipped otherwise.

- forward: the b1 and integer values equal the interpreter's (Boolean layers are exact in
  float32 accumulation), the float outputs within float32 rounding;
- one training step (float32 kernels, the default on CUDA): the b1 weights of the interpreter,
  the loss within 1e-5; exact mode (float64) on CUDA: every b1 value and the loss alike;
- DistributedDataParallel on one GPU (NCCL, a process group of one): the same step.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

import boldc
from boldc.torch import distributed, from_torch, to_torch

from trainutil import digits_mlp, digits_split, small_cnn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="CUDA is not available on this machine (torch.cuda.is_available() is False)")

OPTS = {"eta": 10.0, "lr": 3e-3, "total_steps": 4, "signal_bits": "16"}


def _batch(shape):
    xtr, _, ytr, _ = digits_split()
    return xtr[:64].reshape((-1,) + shape), ytr[:64]


@pytest.mark.parametrize("build,shape", [(lambda: digits_mlp(0), (64,)), (lambda: small_cnn("xnor", "false"),
                                                                           (1, 8, 8))])
def test_forward_on_cuda_equals_the_interpreter(build, shape):
    m = build()
    x, _ = _batch(shape)
    net = to_torch(m, device="cuda", train=False)
    assert net.device.type == "cuda" and not net.rt.exact
    got, ref = net.infer(x), boldc.interpret(m, x)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    for probe in _probes(m):  # every Boolean pre-activation and activation
        assert np.array_equal(to_torch(probe, device="cuda", train=False).infer(x), boldc.interpret(probe, x))


def _probes(m: boldc.Module) -> list[boldc.Module]:
    """Copies of ``m`` whose @forward returns one integer or b1 value each."""
    out = []
    for i, op in enumerate(m.function("forward").ops):
        if not op.results[0].type.dtype.is_float:
            probe = m.copy()
            fn = probe.function("forward")
            fn.returns, fn.result_types = [fn.ops[i].results[0]], [fn.ops[i].results[0].type]
            out.append(probe)
    return out


@pytest.mark.parametrize("exact", [False, True])
def test_one_step_on_cuda_equals_the_interpreter(exact):
    m = digits_mlp(0)
    x, y = _batch((64,))
    net = to_torch(m, device="cuda", exact=exact, **OPTS)
    ref = net.step_ir.copy()
    want = float(boldc.interpret(ref, [x, y], "train_step"))
    got = net.train_step(x, y)
    assert abs(want - got) <= 1e-5
    state = from_torch(net, optimizer=True)
    for name, p in ref.params.items():
        if p.type.dtype.is_bool:
            assert np.array_equal(p.data, state.params[name].data), f"@{name}"


def test_ddp_on_one_gpu():
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port.getsockname()[1]))
    port.close()
    torch.distributed.init_process_group("nccl", rank=0, world_size=1)
    try:
        m = digits_mlp(0)
        x, y = _batch((64,))
        single, parallel = to_torch(m, device="cuda", **OPTS), to_torch(m, device="cuda", **OPTS)
        comm = distributed.Comm(0, 1, 0, torch.distributed.new_group(backend="nccl"))
        parallel.rt.comm = comm
        ddp = distributed.data_parallel(parallel, comm)
        opt = parallel.make_optimizer()
        opt.zero_grad()
        loss = parallel.loss(ddp(x), y)
        loss.backward()
        opt.step()
        assert abs(single.train_step(x, y) - float(loss.detach())) <= 1e-6
        for (n, a), (_, b) in zip(single.ir_parameters(), parallel.ir_parameters()):
            if single.ir.params[n].type.dtype.is_bool:
                assert torch.equal(a, b), f"@{n}"
    finally:
        torch.distributed.destroy_process_group()
