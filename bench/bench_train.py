"""Training step time and training-state memory: boldc (the generated C training step of
the converted Boolean network) vs PyTorch FP32 training (Adam) of the same float
architecture, same batch, side by side in one run (issue 5, benchmarks).

    python bench/bench_train.py [--models digits_mlp digits_cnn vgg_small] [--batch 64]
                                [--threads 1 2] [--repeat 10]

Models (examples/torch_models.py): the digits MLP 64-128-128-128-10 and CNN
(conv 32-64-64), and VGG-Small (3x32x32), each with BatchNorm and ReLU in PyTorch.
boldc converts the same network exported to ONNX (first and last layer float, the
rest Boolean, BatchNorm removed) and compiles it with train=True (the defaults of
docs/training.md; softmax cross-entropy, the Boolean optimizer, Adam on the float
layers).

Step time: one whole training step (forward, loss, backward, optimizer update): for
boldc ``CompiledModel.train_step`` (the Python call included), for PyTorch
``zero_grad``, forward, cross-entropy, ``backward`` and ``Adam.step``. The two are
interleaved, median of --repeat steps after two warm-up steps.

Training state (bytes the step needs besides code):
- boldc: the params image (b1 weights packed, f32 weights, the accumulators M and β,
  Adam moments, the step counter) + the arena (every intermediate of the step:
  inputs, activations, signals, weight signals, kernel scratch), both planned at
  compile time for the batch: the generated code allocates nothing else.
- PyTorch: parameters + gradients + Adam state + the tensors autograd saves for the
  backward pass (measured with torch.autograd.graph.saved_tensors_hooks, each
  storage counted once). Transient buffers of the backward pass are not counted,
  which favours PyTorch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from infer_common import machine_note

import boldc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from onnx_export import export_onnx  # noqa: E402
from torch_models import DigitsCNN, DigitsMLP, VGGSmall  # noqa: E402

MODELS = {"digits_mlp": (DigitsMLP, (64,)), "digits_cnn": (DigitsCNN, (1, 8, 8)), "vgg_small": (VGGSmall, (3, 32, 32))}


def torch_state_bytes(model: torch.nn.Module, opt, x, y) -> int:
    """Params + grads + Adam state + the tensors saved for backward (unique storages)."""
    saved: dict[tuple, int] = {}

    def pack(t):
        s = t.untyped_storage()
        saved[(s.data_ptr(), s.nbytes())] = s.nbytes()
        return t

    opt.zero_grad(set_to_none=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    state = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    return params + grads + state + sum(saved.values())


def torch_step(model, opt, x, y) -> float:
    opt.zero_grad(set_to_none=False)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return float(loss)


def bench(name: str, batch: int, threads: int, repeat: int, tmp: Path) -> dict:
    cls, shape = MODELS[name]
    torch.manual_seed(0)
    model = cls()
    path = tmp / f"{name}.onnx"
    export_onnx(model, (1,) + shape, path)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    module = boldc.convert(path)
    cm = boldc.compile(module, train=True, max_batch=batch, threads=threads)
    cm.set_threads(threads)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + shape).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    t_state = torch_state_bytes(model, opt, xt, yt)
    b_times, t_times = [], []
    for i in range(repeat + 2):
        t = time.perf_counter()
        cm.train_step(x, y)
        b = time.perf_counter() - t
        t = time.perf_counter()
        torch_step(model, opt, xt, yt)
        tt = time.perf_counter() - t
        if i >= 2:
            b_times.append(b)
            t_times.append(tt)
    return {"model": name, "threads": threads, "boldc_ms": 1e3 * float(np.median(b_times)),
            "torch_ms": 1e3 * float(np.median(t_times)), "boldc_state": cm.params_bytes + cm.arena_bytes,
            "boldc_params": cm.params_bytes, "boldc_arena": cm.arena_bytes, "torch_state": t_state,
            "profile": cm.profile([x, y], func="train_step") if threads == 1 else None}


def _top_ops(profile, k=6) -> str:
    total: dict[str, float] = {}
    for desc, sec in profile:
        op = desc.split("'")[1] if "'" in desc else desc
        total[op] = total.get(op, 0.0) + sec
    return ", ".join(f"{op} {1e3 * s:.1f}" for op, s in sorted(total.items(), key=lambda kv: -kv[1])[:k])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, boldc {boldc.__version__}; {machine_note()}; batch {args.batch}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for threads in args.threads:
                rows.append(bench(name, args.batch, threads, args.repeat, Path(tmp)))
                r = rows[-1]
                print(f"{name:10s} {threads} thr: step boldc {r['boldc_ms']:8.2f} ms, torch {r['torch_ms']:8.2f} ms, "
                      f"ratio {r['boldc_ms'] / r['torch_ms']:.2f} | state boldc {r['boldc_state'] / 2**20:7.2f} MiB "
                      f"(params image {r['boldc_params'] / 2**20:.2f} + arena {r['boldc_arena'] / 2**20:.2f}), "
                      f"torch {r['torch_state'] / 2**20:7.2f} MiB, ratio {r['boldc_state'] / r['torch_state']:.3f}",
                      flush=True)
                if r["profile"]:
                    print(f"           boldc ms per op kind (1 thread): {_top_ops(r['profile'])}")
    print(f"\n{machine_note()} (after the run)")


if __name__ == "__main__":
    main()
