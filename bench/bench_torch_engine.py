"""The torch engine's training step vs plain PyTorch FP32 training (Adam) of the same float
architecture, side by side in one run; DDP scaling on the CPU.

    python bench/bench_torch_engine.py [--models digits_cnn vgg_small] [--batch 64] [--threads 1]
                                       [--repeat 5] [--precision fast exact] [--ddp] [--signal-bits 16|8|4|f32]

Models (examples/torch_models.py): the digits CNN (conv 32-64-64) and VGG-Small (3x32x32), each
with BatchNorm and ReLU in PyTorch. The torch engine runs the same network exported to ONNX and
converted by boldc (first and last layer float, the rest Boolean, BatchNorm removed), trained
as ``boldc.to_torch`` builds it (softmax cross-entropy, the Boolean optimizer, Adam on the float
layers; for VGG-Small the input-signal rescaling), with 16-bit signals (``--signal-bits``), ``--precision fast``
(float32 kernels) or ``exact`` (the interpreter's arithmetic). PyTorch is measured as defined
("torch") and with every BatchNorm replaced by the identity ("torch-noBN", the architecture the
engine trains), as bench/bench_train.py does.

Step time: one whole step (zero_grad, forward, loss, backward, the optimizers), the three
interleaved, median of --repeat steps after two warm-up steps, on one process with --threads
torch threads.

Training state: the distinct storages of the parameters (the engine's b1 weights are ±1 in
float32), their gradients (the weight signals q), the optimizer state (accumulators M and β,
Adam moments) and the tensors autograd saves for the backward pass (saved_tensors_hooks);
transient buffers of the backward pass are not counted, on either side.

--ddp: the engine's step on 2 processes (gloo, each its half of the batch, 1 thread each) vs
1 process with 1 thread on the whole batch (speed-up = time of 1 / time of 2).

The machine these figures come from is shared: the script prints the load average before and
after; figures need an idle machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))
from bench_train import MODELS, torch_state_bytes, torch_step, without_batchnorm  # noqa: E402
from infer_common import machine_note  # noqa: E402

import boldc  # noqa: E402
from boldc.torch import to_torch  # noqa: E402
from boldc.torch.engine import compile as torch_compile  # noqa: E402
from boldc.torch.onnx_export import export  # noqa: E402

ENGINE_OPTIONS = {"digits_cnn": {}, "vgg_small": {"rescale": True, "eta": 30.0}}
SIGNALS = {"signal_bits": "16"}  # --signal-bits


def converted(name: str) -> tuple[torch.nn.Module, boldc.Module, tuple]:
    cls, shape = MODELS[name]
    torch.manual_seed(0)
    model = cls()
    return model, boldc.convert(export(model, torch.zeros((1,) + shape))), shape


def engine_state_bytes(net, x, y) -> int:
    """Distinct storages of the params, their gradients, the optimizer state and the tensors saved for backward."""
    storages: dict[tuple, int] = {}
    alive = []

    def count(t):
        s = t.untyped_storage()
        storages[(s.data_ptr(), s.nbytes())] = s.nbytes()
        alive.append(t)
        return t

    opt = net.make_optimizer()
    opt.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        loss = net.loss(net(x), y)
    loss.backward()
    for _, t in net.ir_parameters():
        count(t)
        if t.grad is not None:
            count(t.grad)
    opt.step()
    for o in opt.optimizers.values():
        for state in o.state.values():
            for v in state.values():
                if torch.is_tensor(v):
                    count(v)
    return sum(storages.values())


def bench(name: str, batch: int, threads: int, repeat: int, precision: str) -> dict:
    model, module, shape = converted(name)
    torch.manual_seed(0)
    peers = {"torch": model, "torch-noBN": without_batchnorm(MODELS[name][0]())}
    opts = {key: torch.optim.Adam(peer.parameters(), lr=1e-3) for key, peer in peers.items()}
    torch.set_num_threads(threads)
    net = to_torch(module, exact=precision == "exact", **ENGINE_OPTIONS[name], **SIGNALS)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + shape).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    row = {"model": name, "threads": threads, "precision": precision, "engine_state": engine_state_bytes(net, x, y)}
    for key, peer in peers.items():
        peer.train()
        row[f"{key}_state"] = torch_state_bytes(peer, opts[key], xt, yt)
    times = {key: [] for key in ["engine", *peers]}
    for i in range(repeat + 2):  # interleaved: engine, torch, torch-noBN, engine, ...
        for key in times:
            t = time.perf_counter()
            if key == "engine":
                net.train_step(x, y)
            else:
                torch_step(peers[key], opts[key], xt, yt)
            if i >= 2:
                times[key].append(time.perf_counter() - t)
    row.update({f"{key}_ms": 1e3 * float(np.median(ts)) for key, ts in times.items()})
    return row


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, name: str, batch: int, repeat: int, out: str) -> None:
    """Median step time of the engine as rank ``rank`` of ``world`` (world 1: no process group)."""
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank))
    _, module, shape = converted(name)
    tm = torch_compile(module, train=True, max_batch=batch, threads=1, exact=False, **ENGINE_OPTIONS[name], **SIGNALS)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + shape).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    times = []
    for i in range(repeat + 2):
        t = time.perf_counter()
        tm.train_step(x, y)
        if i >= 2:
            times.append(time.perf_counter() - t)
    if rank == 0:
        Path(out).write_text(str(1e3 * float(np.median(times))))
    if world > 1:
        torch.distributed.destroy_process_group()


def ddp_scaling(name: str, batch: int, repeat: int, tmp: Path) -> tuple[float, float]:
    """(ms per step on 1 process, on 2 processes)."""
    out = []
    for world in (1, 2):
        path = tmp / f"ddp{world}.txt"
        mp.spawn(_ddp_worker, args=(world, _free_port(), name, batch, repeat, str(path)), nprocs=world, join=True)
        out.append(float(path.read_text()))
    return out[0], out[1]


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["digits_cnn", "vgg_small"], choices=["digits_cnn", "vgg_small"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--precision", nargs="+", default=["fast"], choices=["fast", "exact"])
    ap.add_argument("--ddp", action="store_true", help="also time 2 processes (gloo) against 1")
    ap.add_argument("--signal-bits", choices=("16", "8", "4", "f32"), default="16",
                    help="backward signals of the Boolean layers (docs/training.md)")
    args = ap.parse_args()
    SIGNALS["signal_bits"] = args.signal_bits
    print(f"torch {torch.__version__}, boldc {boldc.__version__}; {machine_note()}; batch {args.batch}, "
          f"signals {args.signal_bits}")
    mib = 2**20
    for name in args.models:
        for threads in args.threads:
            for precision in args.precision:
                r = bench(name, args.batch, threads, args.repeat, precision)
                print(f"{name:10s} {threads} thr {precision:5s}: step engine {r['engine_ms']:8.1f} ms, torch "
                      f"{r['torch_ms']:8.1f} / noBN {r['torch-noBN_ms']:8.1f} ms, ratio "
                      f"{r['engine_ms'] / r['torch_ms']:.2f} / {r['engine_ms'] / r['torch-noBN_ms']:.2f} | state "
                      f"engine {r['engine_state'] / mib:7.1f} MiB, torch {r['torch_state'] / mib:7.1f} / noBN "
                      f"{r['torch-noBN_state'] / mib:7.1f} MiB, ratio {r['engine_state'] / r['torch_state']:.2f} / "
                      f"{r['engine_state'] / r['torch-noBN_state']:.2f}", flush=True)
        if args.ddp:
            with tempfile.TemporaryDirectory() as tmp:
                one, two = ddp_scaling(name, args.batch, args.repeat, Path(tmp))
            print(f"{name:10s} DDP (gloo, 1 thread per process): 1 process {one:8.1f} ms, 2 processes {two:8.1f} ms "
                  f"per step of {args.batch}: speed-up {one / two:.2f}", flush=True)
    print(f"\n{machine_note()} (after the run)")


if __name__ == "__main__":
    main()
