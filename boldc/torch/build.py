"""``to_torch`` and ``from_torch``: a boldc Module to a ``BooleanNet`` and back.

``to_torch(module, **options)`` builds @train_step on a copy of the module with autodiff and
insert-optimizer (the options are theirs: ``loss``, ``reduction``, ``threshold_grad``,
``alpha``, ``rescale``, ``frozen``, ``freeze_float``, ``signal_bits``, ``rounding``, ``seed``;
``eta``, ``schedule``, ``total_steps``, ``eta_final``, ``power``, ``lr``, ``lr_schedule``,
``beta1``, ``beta2``, ``eps``, ``accumulator``, ``accumulator_step``), so the passes check them
and give the IR that the net runs: the backward rule of every op (``boldc.torch.plan``) and
the optimizer (``boldc.torch.optim.TrainOptimizer``). ``from_torch(net)`` returns the Module
with the net's weights; with ``optimizer=True`` the Module with @train_step and the optimizer
state as its params, the table of the C engine's checkpoints (``boldc train --resume``).
"""

from __future__ import annotations

import numpy as np
import torch

import boldc.checkpoint as ckpt
from boldc.errors import BoldcError
from boldc.fileio import read_bytes
from boldc.ir.core import Module, Param
from boldc.ir.verifier import verify
from boldc.ops.registry import lookup
from boldc.ops.traits import Optimizer as OptimizerTrait
from boldc.passes.autodiff import STEP_PARAM, Autodiff
from boldc.passes.insert_optimizer import InsertOptimizer
from boldc.passes.manager import Pass
from boldc.torch.net import BooleanNet
from boldc.torch.plan import build_plans
from boldc.torch.registry import Runtime
from boldc.torch.values import to_tensor

PASSES: tuple[type[Pass], ...] = (Autodiff, InsertOptimizer)


def resolve_device(device=None) -> torch.device:
    """None or "cpu": the CPU; "auto": CUDA when present, else the CPU; "cuda[:k]": that GPU,
    an error when CUDA is absent."""
    name = "cpu" if device is None else str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise BoldcError(f"device {name!r}: not a device (cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BoldcError(f"device {name!r}: CUDA is not available here (no GPU, or a torch built without "
                             "CUDA); use the device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BoldcError(f"device {name!r}: there are {torch.cuda.device_count()} GPUs")
    elif dev.type != "cpu":
        raise BoldcError(f"device {name!r}: the torch engine runs on cpu or cuda")
    return dev


def split_options(options: dict) -> tuple[dict, dict]:
    """The keyword options as (autodiff's, insert-optimizer's), each converted to the pass's
    option type; ``frozen`` and ``freeze_float`` go to both. Unknown names are an error."""
    given = {k.replace("_", "-"): v for k, v in options.items() if v is not None}
    per_pass: list[dict] = [{}, {}]
    for key, value in given.items():
        owners = [i for i, p in enumerate(PASSES) if key in p.options]
        if not owners:
            known = sorted({k.replace("-", "_") for p in PASSES for k in p.options})
            raise BoldcError(f"to_torch: unknown option {key.replace('-', '_')!r} (options: {', '.join(known)})")
        for i in owners:
            per_pass[i][key] = _convert(PASSES[i], key, value)
    return per_pass[0], per_pass[1]


def _convert(p: type[Pass], key: str, value):
    kind = p.options[key].type
    if kind is list:
        return [value] if isinstance(value, str) else list(value)
    if kind is bool and not isinstance(value, bool):
        raise BoldcError(f"to_torch: option {key.replace('-', '_')} must be True or False, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise BoldcError(f"to_torch: option {key.replace('-', '_')} must be a {kind.__name__}, got {value!r}") from None


def training_ir(module: Module, options: dict) -> tuple[Module, dict]:
    """A copy of ``module`` with @train_step (autodiff, insert-optimizer with ``options``) and
    autodiff's options."""
    if "train_step" in module.functions:
        raise BoldcError("the torch engine builds @train_step from @forward with its options, and this module has "
                         "one already: give it the module without @train_step (the model before training, or "
                         "from_torch(net) without optimizer=True)")
    ad, opt = split_options(options)
    step = module.copy()
    autodiff = Autodiff(**ad)
    autodiff.check_requirements(step)
    autodiff.run(step)
    insert = InsertOptimizer(**opt)
    insert.check_requirements(step)
    insert.run(step)
    verify(step)
    return step, autodiff.opts


def _updated_params(step: Module) -> set[str]:
    """The trained params: those an optimizer op of @train_step updates and @forward reads
    (not the optimizer's own state, nor BatchNorm's running statistics)."""
    used = {o.name for op in step.function("forward").ops for o in op.operands if isinstance(o, Param)}
    out = set()
    for op in step.function("train_step").ops:
        opdef = lookup(op.name)
        if opdef.has(OptimizerTrait):
            out.update(op.operands[pos].name for pos in opdef.updated_positions(len(op.operands))
                       if op.operands[pos].name in used)
    return out


def to_torch(module: Module, device=None, *, train: bool = True, exact: bool | None = None, amp: bool = False,
             **options) -> BooleanNet:
    """``module``'s @forward as a ``BooleanNet`` on ``device`` (see the module docstring).

    - ``train``: build @train_step (the loss, the backward rules, the optimizer); False gives an
      inference net;
    - ``exact``: compute as the interpreter does (float64, sums in its order): the same bits on
      the CPU; default on the CPU, off on CUDA. Off, float work runs in float32 kernels (Boolean
      layers and integer signals stay exact);
    - ``amp``: the float layers in bfloat16 autocast (CUDA only, not exact)."""
    if not isinstance(module, Module):
        raise BoldcError(f"to_torch() needs a boldc Module, got {type(module).__name__}")
    dev = resolve_device(device)
    if amp and dev.type != "cuda":
        raise BoldcError("amp (bfloat16 float layers) needs CUDA; the device is the CPU")
    if exact is None:
        exact = dev.type == "cpu" and not amp
    if exact and amp:
        raise BoldcError("amp computes the float layers in bfloat16: it cannot be exact (pass exact=False)")
    verify(module)
    missing = [p.name for p in module.params.values() if p.data is None]
    if missing:
        raise BoldcError(f"params without tensors: @{', @'.join(missing[:5])} (load the module with its weights)")
    if not train and options:
        raise BoldcError(f"training option(s) {', '.join(sorted(options))} need train=True")
    rt = Runtime(exact=bool(exact), amp=amp, device=dev)
    if not train:
        net = BooleanNet(module.copy(), rt)
        net.step_ir = None
    else:
        step, ad_opts = training_ir(module, options)
        net = BooleanNet(step, rt, build_plans(step, ad_opts), _updated_params(step), step.params.get(STEP_PARAM))
        net.step_ir = step
    net.source = module.copy()
    return net


def from_torch(net: BooleanNet, optimizer: bool = False) -> Module:
    """The Module with the net's current weights. ``optimizer=True``: the Module with @train_step
    and the optimizer state (accumulators M, β, Adam moments, the step counter) as its params,
    as ``boldc.save_checkpoint`` and ``boldc train --resume`` expect them."""
    if not isinstance(net, BooleanNet):
        raise BoldcError(f"from_torch() needs a net made by boldc.to_torch, got {type(net).__name__}")
    if optimizer and net.step_ir is None:
        raise BoldcError("from_torch(optimizer=True): the net was built without training (train=False)")
    out = (net.step_ir if optimizer else net.source).copy()
    for name, _ in net.ir_parameters():
        if name in out.params and name != net.step_name:
            out.params[name].set_data(net.ir_array(name))
    if optimizer:
        state = net.make_optimizer().state_arrays() if net.optimizer is not None else _initial_state(net)
        for name, arr in state.items():
            out.params[name].set_data(arr)
    return out


def _initial_state(net: BooleanNet) -> dict[str, np.ndarray]:
    """The step counter of a net whose optimizer was never made (the rest is the initial state)."""
    if net.step_name is None:
        return {}
    return {net.step_name: np.array(int(net.tensor(net.step_name)), dtype=np.int32)}


def save_checkpoint(net: BooleanNet, path, meta: dict | None = None) -> None:
    """Weights and optimizer state in boldc's checkpoint format (docs/training.md), atomically:
    the C engine reads it (``boldc train --resume``, ``CompiledModel.load_checkpoint``)."""
    ckpt.save_checkpoint(from_torch(net, optimizer=True), path, meta)


def load_checkpoint(net: BooleanNet, path) -> dict:
    """Read a checkpoint (written by the torch or the C engine for the same model and options)
    into the net and its optimizer; returns its meta. Refused files change nothing."""
    if net.step_ir is None:
        raise BoldcError(f"{path}: a checkpoint holds optimizer state; this net was built without training")
    arrays, meta = ckpt.decode_checkpoint(net.step_ir, read_bytes(path, "checkpoint"), str(path))
    state = {}
    for name, arr in arrays.items():
        if name in net._where and name != net.step_name:
            net.set_tensor(name, to_tensor(arr, net.step_ir.params[name].type.dtype, net.device))
        else:
            state[name] = arr
    net.make_optimizer().load_state_arrays(state)
    return meta
