"""DistributedDataParallel on the CPU (gloo, 2 processes) equals one process on the whole batch
(docs/torch.md, "Distributed"): after each of 10 steps the b1 weights are identical and the
loss agrees within 1e-5, with f32 and 16-bit integer signals (whose scale comes from the whole
batch), on the digits MLP (uneven and empty shards included: batches of 63, 3 and 1) and on a
CNN with BatchNorm trained on batch statistics (synchronised over the processes).
Also: the --nproc checks, the launcher's exit codes and the environment it sets.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from boldc.errors import BoldcError
from boldc.torch import distributed
from boldc.torch.engine import compile as torch_compile

from trainutil import digits_mlp, digits_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_torch_train import _bn_cnn  # noqa: E402

STEPS = 10
LOSS_TOL = 1e-5
WORLD = 2
MODELS = {"mlp": (lambda: digits_mlp(0), (64,), 1.0, [64] * 6 + [63, 3, 1, 64], {"eta": 10.0}),
          "cnn-batchnorm": (_bn_cnn, (1, 8, 8), 16.0, [64] * 7 + [63, 5, 33], {"eta": 300.0})}


def _batches(model: str):
    _, shape, scale, sizes, _ = MODELS[model]
    xtr, _, ytr, _ = digits_split()
    x = xtr.reshape((-1,) + shape) * np.float32(scale)
    rng = np.random.default_rng(11)
    for size in sizes:
        idx = rng.permutation(len(x))[:size]
        yield x[idx], ytr[idx]


def _options(model: str, signal_bits: str) -> dict:
    return {"lr": 3e-3, "total_steps": STEPS, "signal_bits": signal_bits, **MODELS[model][4]}


def _trace(model: str, signal_bits: str) -> tuple[list[float], list[dict]]:
    """Losses and b1 weights after every step of this process (one of a run, or alone)."""
    torch.set_num_threads(1)
    tm = torch_compile(MODELS[model][0](), train=True, max_batch=64, **_options(model, signal_bits))
    losses, weights = [], []
    for x, y in _batches(model):
        losses.append(tm.train_step(x, y))
        weights.append({n: tm.get_param(n) for n, p in tm.module.params.items() if p.type.dtype.is_bool})
    return losses, weights


def _worker(rank: int, port: int, model: str, signal_bits: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    losses, weights = _trace(model, signal_bits)
    np.savez(f"{out}.{rank}.npz", losses=np.array(losses),
             **{f"{n}@{s}": w for s, step in enumerate(weights) for n, w in step.items()})
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(distributed.cores() < 2, reason="needs 2 CPU cores for 2 processes")
@pytest.mark.parametrize("model,signal_bits", [("mlp", "f32"), ("mlp", "16"), ("cnn-batchnorm", "16")])
def test_two_processes_equal_one_on_the_whole_batch(model, signal_bits, tmp_path):
    out = str(tmp_path / "trace")
    mp.spawn(_worker, args=(_free_port(), model, signal_bits, out), nprocs=WORLD, join=True)
    losses, weights = _trace(model, signal_bits)
    ranks = [np.load(f"{out}.{r}.npz") for r in range(WORLD)]
    flips = 0
    for step in range(STEPS):
        for r in ranks:
            assert abs(float(r["losses"][step]) - losses[step]) <= LOSS_TOL, f"step {step}: loss"
            for name, w in weights[step].items():
                assert np.array_equal(r[f"{name}@{step}"], w), f"step {step}: @{name} differs from one process"
        if step:
            flips += sum(int((w != weights[step - 1][n]).sum()) for n, w in weights[step].items())
    assert flips > 100  # the comparison covers the Boolean optimizer


def test_nproc_above_the_cores_or_gpus_is_refused():
    with pytest.raises(BoldcError, match=r"--nproc \d+: this machine has \d+ CPU core\(s\); run at most"):
        distributed.check_nproc(distributed.cores() + 1, torch.device("cpu"))
    with pytest.raises(BoldcError, match="at least 1"):
        distributed.check_nproc(0, torch.device("cpu"))
    with pytest.raises(BoldcError, match="this machine has"):
        distributed.launch(distributed.cores() + 1, ["--version"], torch.device("cpu"))


def test_environment_of_a_run(monkeypatch):
    for key in distributed.ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    assert distributed.environment() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.environment() is None  # one process: no process group
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(BoldcError, match="MASTER_ADDR.*torchrun"):
        distributed.environment()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert distributed.environment() == (1, 2, 1)
    comm = distributed.Comm(1, 2, 1)
    assert [comm.shard(n) for n in (64, 3, 1)] == [slice(32, 64), slice(1, 3), slice(0, 1)]


@pytest.mark.skipif(distributed.cores() < 2, reason="needs 2 CPU cores for 2 processes")
def test_launcher_reports_the_failing_rank(capfd):
    code = distributed.launch(2, ["show", "no-such-file.bir"], torch.device("cpu"))
    assert code == 2  # the command's own error exit, from the first rank that failed
