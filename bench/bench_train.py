"""Training step time and training-state memory: boldc (the generated C training step of
the converted Boolean network) vs PyTorch FP32 training (Adam) of the same float
architecture, same batch, side by side in one run.

    python bench/bench_train.py [--models digits_mlp digits_cnn vgg_small] [--batch 64]
                                [--threads 1 2] [--repeat 10] [--signal-bits 16 f32]
                                [--accumulator f32|i16]

Models (examples/torch_models.py): the digits MLP 64-128-128-128-10 and CNN
(conv 32-64-64), and VGG-Small (3x32x32), each with BatchNorm and ReLU in PyTorch.
boldc converts the same network exported to ONNX (first and last layer float, the
rest Boolean, BatchNorm removed) and compiles it with train=True (the defaults of
docs/training.md; softmax cross-entropy, the Boolean optimizer, Adam on the float
layers). The converted network has no BatchNorm while the PyTorch model trains
its BatchNorm layers, so PyTorch is measured twice: as defined ("torch") and with
every BatchNorm replaced by the identity ("torch-noBN", the architecture boldc trains).

Step time: one whole training step (forward, loss, backward, optimizer update): for
boldc ``CompiledModel.train_step`` (the Python call included), for PyTorch
``zero_grad``, forward, cross-entropy, ``backward`` and ``Adam.step``. The three are
interleaved, median of --repeat steps after two warm-up steps.

Training state (bytes the step needs besides code):
- boldc: the params image (b1 weights packed, f32 weights, the accumulators M and β,
  Adam moments, the step counter) + the arena (every intermediate of the step:
  inputs, activations, signals, weight signals, kernel scratch), both planned at
  compile time for the batch: the generated code allocates nothing else.
- PyTorch: parameters + gradients + Adam state + the tensors autograd saves for the
  backward pass (measured with torch.autograd.graph.saved_tensors_hooks), each
  storage counted once: a saved tensor that is a parameter (a layer saves its
  weight) is the parameter's storage, not more memory. Transient buffers of the
  backward pass are not counted (a lower bound of PyTorch's training state).
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
    """Bytes of the distinct storages of the params, grads, Adam state and the tensors
    saved for backward (a storage held by several of them is counted once)."""
    storages: dict[tuple, int] = {}
    alive = []  # every counted tensor stays referenced, so no freed address is reused and merged

    def count(t):
        s = t.untyped_storage()
        storages[(s.data_ptr(), s.nbytes())] = s.nbytes()
        alive.append(t)
        return t

    opt.zero_grad(set_to_none=False)
    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    for p in model.parameters():
        count(p)
        if p.grad is not None:
            count(p.grad)
    for state in opt.state.values():
        for v in state.values():
            if torch.is_tensor(v):
                count(v)
    return sum(storages.values())


def without_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every BatchNorm layer replaced by the identity, in place (the
    converted Boolean network has none)."""
    for name, child in model.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            setattr(model, name, torch.nn.Identity())
        else:
            without_batchnorm(child)
    return model


def torch_step(model, opt, x, y) -> float:
    opt.zero_grad(set_to_none=False)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return float(loss)


def bench(name: str, batch: int, threads: int, repeat: int, tmp: Path, signal_bits: str = "16",
          accumulator: str = "f32") -> dict:
    cls, shape = MODELS[name]
    torch.manual_seed(0)
    model = cls()
    path = tmp / f"{name}.onnx"
    export_onnx(model, (1,) + shape, path)
    torch.manual_seed(0)
    peers = {"torch": model, "torch-noBN": without_batchnorm(cls())}
    opts = {}
    for peer in peers.values():
        peer.train()
        opts[peer] = torch.optim.Adam(peer.parameters(), lr=1e-3)
    module = boldc.convert(path)
    cm = boldc.compile(module, train=True, max_batch=batch, threads=threads, signal_bits=signal_bits,
                       accumulator=accumulator)
    cm.set_threads(threads)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + shape).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    row = {"model": name, "threads": threads, "signal_bits": signal_bits,
           "boldc_state": cm.params_bytes + cm.arena_bytes,
           "boldc_params": cm.params_bytes, "boldc_arena": cm.arena_bytes,
           "profile": cm.profile([x, y], func="train_step") if threads == 1 else None}
    for key, peer in peers.items():
        row[f"{key}_state"] = torch_state_bytes(peer, opts[peer], xt, yt)
    times = {key: [] for key in ["boldc", *peers]}
    for i in range(repeat + 2):  # interleaved: boldc, torch, torch-noBN, boldc, ...
        for key in times:
            t = time.perf_counter()
            if key == "boldc":
                cm.train_step(x, y)
            else:
                torch_step(peers[key], opts[peers[key]], xt, yt)
            if i >= 2:
                times[key].append(time.perf_counter() - t)
    row.update({f"{key}_ms": 1e3 * float(np.median(ts)) for key, ts in times.items()})
    return row


def _top_ops(profile, k=8) -> str:
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
    ap.add_argument("--signal-bits", nargs="+", default=["16"], choices=["16", "8", "4", "f32"],
                    help="backward signals of the Boolean layers (docs/training.md); several: side by side")
    ap.add_argument("--accumulator", default="f32", choices=["f32", "i16"],
                    help="storage of the Boolean optimizer's accumulators (docs/training.md)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, boldc {boldc.__version__}; {machine_note()}; batch {args.batch}; "
          f"accumulators {args.accumulator}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for threads, bits in ((t, b) for t in args.threads for b in args.signal_bits):
                rows.append(bench(name, args.batch, threads, args.repeat, Path(tmp), bits, args.accumulator))
                r = rows[-1]
                mib, state = 2**20, r["boldc_state"]
                print(f"{name:10s} {threads} thr, signals {bits:>3s}: step boldc {r['boldc_ms']:8.2f} ms, "
                      f"torch {r['torch_ms']:8.2f} / "
                      f"noBN {r['torch-noBN_ms']:8.2f} ms, ratio {r['boldc_ms'] / r['torch_ms']:.2f} / "
                      f"{r['boldc_ms'] / r['torch-noBN_ms']:.2f} | state boldc {r['boldc_state'] / mib:7.2f} MiB "
                      f"(params image {r['boldc_params'] / mib:.2f} + arena {r['boldc_arena'] / mib:.2f}), "
                      f"torch {r['torch_state'] / mib:7.2f} / noBN {r['torch-noBN_state'] / mib:7.2f} MiB, "
                      f"ratio {state / r['torch_state']:.3f} / {state / r['torch-noBN_state']:.3f}",
                      flush=True)
                if r["profile"]:
                    print(f"           boldc ms per op kind (1 thread): {_top_ops(r['profile'])}")
    print(f"\n{machine_note()} (after the run)")


if __name__ == "__main__":
    main()
