"""The optimizers of @train_step on torch: ``BooleanOptimizer`` (the flip rule of
docs/method.md §4, exactly as ``flip_update``), ``Adam`` (``adam_update``: PyTorch's Adam,
computed in double as the IR does) and ``Schedule`` (the η and lr schedules of
``lr_schedule``, as a torch LR scheduler).

Each is an ordinary torch optimizer or scheduler (state in ``state_dict()``; the Boolean
optimizer's ``lr`` is η). ``TrainOptimizer`` puts them together as insert-optimizer did in
@train_step: it reads the update ops of the net's @train_step, gives each trained param the
optimizer the registry names for its update op (``optimizer_for``), with the op's attributes
and schedule, and advances the step counter as ``increment`` does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from boldc.errors import BoldcError
from boldc.ir.core import Op, Param
from boldc.ops.optim_ops import ACCUMULATORS, DEFAULT_M_STEP, SCHEDULES, schedule_value
from boldc.ops.registry import lookup
from boldc.ops.traits import Optimizer as OptimizerTrait
from boldc.torch.registry import OpCall, implementation
from boldc.torch.values import state_tensor

F32 = torch.float32
OPTIMIZER_OF: dict[str, type] = {}


def optimizer_for(*names: str) -> Callable[[type], type]:
    """Class decorator: the torch optimizer that runs the update ops ``names``."""

    def register(cls: type) -> type:
        for name in names:
            OPTIMIZER_OF[name] = cls
        return cls

    return register


def _run(op_name: str, attrs: dict, *args) -> tuple:
    """The engine's implementation of an optimizer op (boldc.torch.ops.optim)."""
    d = lookup(op_name)
    return implementation(op_name)(OpCall(op_name, d.normalize_attrs(attrs), [], []), *args)


@optimizer_for("flip_update")
class BooleanOptimizer(torch.optim.Optimizer):
    """The Boolean optimizer for ±1 params (``BooleanNet.boolean_parameters()``): per param an
    accumulator M (zeros; f32, or i16 fixed point in units of ``m_step``) and β (1), and per step
    with the weight signal q in ``.grad``, exactly as ``flip_update``:

        M <- fl(fl(β·M) + fl(η·q));  flip where M·e(W) >= 1;  W <- -W, M <- 0 there;  β <- kept / numel

    ``lr`` of a param group is η (so LR schedulers schedule η). The rule is three float32
    operations and a comparison: it is always exact (``exact`` is accepted as Adam's is)."""

    OP = "flip_update"
    RATE = "eta"  # the operand of the update op that is the learning rate
    STATE = {"accumulator": "m", "beta": "beta", "saturated": "saturated"}  # state key -> operand of the op

    def __init__(self, params, eta: float = 3.0, accumulator: str = "f32", m_step: float = DEFAULT_M_STEP,
                 exact: bool = True):
        if accumulator not in ACCUMULATORS:
            raise BoldcError(f"BooleanOptimizer: accumulator={accumulator!r} is not one of {', '.join(ACCUMULATORS)}")
        if not (np.isfinite(eta) and eta > 0):
            raise BoldcError(f"BooleanOptimizer: eta must be a finite number > 0, got {eta}")
        super().__init__(params, {"lr": eta, "accumulator": accumulator, "m_step": m_step})

    @classmethod
    def group_options(cls, op: Op) -> dict:
        """The options of the optimizer insert-optimizer built ``op`` with."""
        return {"accumulator": op.operands[1].type.dtype.value, "m_step": op.attrs["m_step"]}

    def state_for(self, p: torch.Tensor) -> dict:
        """The state of ``p``, created (M = 0, β = 1) at its first use."""
        st = self.state[p]
        if not st:
            group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
            fixed = group["accumulator"] == "i16"
            st["accumulator"] = torch.zeros_like(p, dtype=torch.int16 if fixed else F32)
            st["beta"] = torch.ones((), dtype=F32, device=p.device)
            if fixed:
                st["saturated"] = torch.zeros((), dtype=torch.int32, device=p.device)
        return st

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state_for(p)
                eta = torch.tensor(np.float32(group["lr"]), dtype=F32, device=p.device)
                extra = (st["saturated"],) if "saturated" in st else ()
                new = _run(self.OP, {"m_step": group["m_step"]}, p, st["accumulator"], st["beta"],
                           p.grad.to(F32), eta, *extra)
                p.copy_(new[0])
                st["accumulator"], st["beta"] = new[1], new[2]
                if extra:
                    st["saturated"] = new[3]
        return loss

    def set_steps(self, steps: int) -> None:
        """Nothing counts steps here (the schedule does)."""


@optimizer_for("adam_update")
class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` (same options and state) whose step computes as ``adam_update``: in
    double from the float32 state, rounded to float32, with the learning rate rounded to
    float32 first, so it gives the interpreter's bits. ``exact=False``: torch's own Adam
    (float32, its multi-tensor kernels), within float32 rounding of it."""

    OP = "adam_update"
    RATE = "lr"
    STATE = {"exp_avg": "m", "exp_avg_sq": "v"}

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 exact: bool = True):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=not exact)
        self.exact = exact

    @classmethod
    def group_options(cls, op: Op) -> dict:
        a = op.attrs
        return {"betas": (a["beta1"], a["beta2"]), "eps": a["eps"], "weight_decay": a["weight_decay"]}

    def state_for(self, p: torch.Tensor) -> dict:
        """The state of ``p`` (torch's Adam keys), created (zeros) at its first use."""
        st = self.state[p]
        if not st:
            st["step"] = torch.zeros((), dtype=F32)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return st

    @torch.no_grad()
    def step(self, closure=None):
        if not self.exact:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group.get("amsgrad") or group.get("maximize"):
                raise BoldcError("boldc.torch.Adam computes as the IR's adam_update: amsgrad and maximize are not "
                                 "supported")
            b1, b2 = group["betas"]
            attrs = {"beta1": b1, "beta2": b2, "eps": group["eps"], "weight_decay": group["weight_decay"]}
            lr = np.float32(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state_for(p)
                new_p, m, v = _run(self.OP, attrs, p, st["exp_avg"], st["exp_avg_sq"], p.grad, lr, int(st["step"]))
                p.copy_(new_p)
                st["exp_avg"].copy_(m)
                st["exp_avg_sq"].copy_(v)
                st["step"] += 1
        return loss

    def set_steps(self, steps: int) -> None:
        """Adam's bias correction counts the steps done (the IR's step counter)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state_for(p)["step"] = torch.tensor(float(steps), dtype=F32)


class Schedule(torch.optim.lr_scheduler.LRScheduler):
    """η or lr over the steps as ``lr_schedule`` computes it (in double; the optimizers round it to
    float32): with t = steps done (``last_epoch``) clamped to [0, T],

        constant: base;  cosine: final + (base - final)(1 + cos(πt/T))/2;  poly: final + (base - final)(1 - t/T)^power

    Call ``step()`` after each ``optimizer.step()``."""

    def __init__(self, optimizer, kind: str = "constant", total_steps: int = 0, final: float = 0.0, power: float = 1.0,
                 last_epoch: int = -1):
        if kind not in SCHEDULES:
            raise BoldcError(f"Schedule: kind={kind!r} is not one of {', '.join(SCHEDULES)}")
        if kind != "constant" and total_steps < 1:
            raise BoldcError(f"Schedule: the {kind} schedule needs total_steps >= 1")
        self.kind, self.total_steps, self.final, self.power = kind, total_steps, final, power
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [schedule_value(self.kind, base, self.final, self.last_epoch, self.total_steps, self.power)
                for base in self.base_lrs]

    def jump(self, steps_done: int) -> None:
        """Continue from ``steps_done`` steps (a resumed run)."""
        self.last_epoch = steps_done
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]


class TrainOptimizer:
    """The optimizer half of a net's @train_step (see the module docstring): ``zero_grad()``,
    ``step()`` (every optimizer, then the schedules, then the step counter), and the optimizer
    state as the IR's state params (``state_arrays()`` / ``load_state_arrays()``)."""

    def __init__(self, net):
        self.net = net
        fn = net.step_ir.function("train_step")
        produced = {r: op for op in fn.ops for r in op.results}
        groups: dict[tuple, list] = {}
        self.state_of: dict[str, tuple] = {}  # IR state param -> (optimizer key, param name, state key)
        self.counter_ops: list[Op] = []
        for op in fn.ops:
            opdef = lookup(op.name)
            if not (opdef.has(OptimizerTrait) and opdef.updates):
                continue
            names = opdef.operand_names(len(op.operands))
            trained = [o for o in op.operands if isinstance(o, Param) and o.name in net.trained]
            if not trained:
                self.counter_ops.append(op)  # increment: only the optimizer's own state
                continue
            cls = OPTIMIZER_OF.get(op.name)
            if cls is None:
                raise BoldcError(f"the torch engine has no optimizer for op {op.name}")
            rate = produced[op.operands[names.index(cls.RATE)]]
            key = (op.name, tuple(sorted(cls.group_options(op).items())), id(rate))
            groups.setdefault(key, [cls, cls.group_options(op), rate, []])[3].append(trained[0].name)
            for state_key, operand in cls.STATE.items():
                if operand in names:
                    self.state_of[op.operands[names.index(operand)].name] = (key, trained[0].name, state_key)
        self.optimizers: dict[tuple, torch.optim.Optimizer] = {}
        self.schedules: list[Schedule] = []
        for key, (cls, options, rate, params) in groups.items():
            a = rate.attrs
            opt = cls([net.tensor(n) for n in params], a["base"], **options, exact=net.rt.exact)
            self.optimizers[key] = opt
            self.schedules.append(Schedule(opt, a["schedule"], a["total_steps"], a["final"], a["power"]))
        self.load_state_arrays({p.name: p.data for p in net.step_ir.params.values() if p.name in self.state_of or
                                p.name == net.step_name})

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()
        for s in self.schedules:
            s.step()
        for op in self.counter_ops:
            args = [self.net.tensor(o.name) for o in op.operands]
            (new,) = _run(op.name, dict(op.attrs), *args)
            self.net.set_tensor(op.operands[0].name, new)

    @property
    def steps_done(self) -> int:
        return int(self.net.tensor(self.net.step_name)) if self.net.step_name else 0

    # -- state as IR params ---------------------------------------------------------------------
    def _slot(self, name: str):
        key, param, state_key = self.state_of[name]
        opt = self.optimizers[key]
        p = self.net.tensor(param)
        return opt, p, state_key

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every optimizer state param of @train_step (accumulators, β, Adam moments, the step
        counter) as the IR array of its type."""
        out = {}
        for name in self.state_of:
            opt, p, state_key = self._slot(name)
            want = self.net.step_ir.params[name]
            st = opt.state.get(p, {})
            value = st.get(state_key)
            arr = want.data if value is None else value.detach().cpu().numpy()
            out[name] = np.asarray(arr, dtype=want.type.dtype.numpy).reshape(tuple(want.type.shape))
        if self.net.step_name:
            out[self.net.step_name] = np.array(self.steps_done, dtype=np.int32)
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Set the optimizer state from IR arrays (as ``state_arrays`` gives them); the step
        counter also sets Adam's step and the schedules (they all count the same steps)."""
        if self.net.step_name in arrays:
            steps = int(arrays[self.net.step_name])
            self.net.set_tensor(self.net.step_name, torch.tensor(steps))
        steps = self.steps_done
        for name, arr in arrays.items():
            if name in self.state_of:
                opt, p, state_key = self._slot(name)
                opt.state_for(p)[state_key] = state_tensor(arr, p.device)
        for opt in self.optimizers.values():
            opt.set_steps(steps)
        for s in self.schedules:
            s.jump(steps)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers.values()],
                "schedules": [s.state_dict() for s in self.schedules]}
