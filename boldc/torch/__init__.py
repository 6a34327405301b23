"""The torch engine: boldc's Boolean IR on PyTorch, for pre-training on servers (CPU, CUDA,
several processes with DistributedDataParallel) and the round trip to the C engine.

    import boldc
    net = boldc.to_torch(module, eta=3.0, lr=1e-3, schedule="cosine", lr_schedule="cosine", total_steps=630)
    loss = net.train_step(x, y)                        # one step of @train_step on torch
    # or, the torch way:
    opt = net.make_optimizer()                          # BooleanOptimizer + Adam + their schedules
    loss = net.loss(net(x), y); opt.zero_grad(); loss.backward(); opt.step()
    module = boldc.from_torch(net, optimizer=True)      # back to the IR, with the optimizer state

docs/torch.md describes the API, the command line, distributed training and exactness.
torch is an optional dependency (``pip install 'boldc[torch]'``); importing this package
without it raises a one-line BoldcError saying so.
"""

from boldc.torch.availability import require

require()

from boldc.torch.build import from_torch, load_checkpoint, resolve_device, save_checkpoint, to_torch  # noqa: E402
from boldc.torch.net import BooleanNet  # noqa: E402
from boldc.torch.optim import Adam, BooleanOptimizer, Schedule, TrainOptimizer  # noqa: E402

__all__ = ["Adam", "BooleanNet", "BooleanOptimizer", "Schedule", "TrainOptimizer", "from_torch", "load_checkpoint",
           "resolve_device", "save_checkpoint", "to_torch"]
