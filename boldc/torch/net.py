"""``BooleanNet``: a boldc Module's @forward as a ``torch.nn.Module``.

Every op runs with the engine's implementation (boldc.torch.ops). In training mode
(``net.train()``, torch's default) the net runs the forward part of @train_step (BatchNorm on
batch statistics, updating its running statistics); in eval mode, and in ``infer``, @forward.
An op on a path from a trained param to the loss runs as a ``torch.autograd.Function`` whose
backward is the op's backward rule (``boldc.torch.plan``), so ``net.loss(net(x), y).backward()``
leaves in the ``.grad`` of every trained param exactly the gradient @train_step computes: the
weight signal q of docs/method.md §3 for a b1 param, the ordinary gradient for an f32 one.

Params (IR names, values as ``boldc.torch.values`` holds them): f32 and b1 params are
``nn.Parameter``s (b1 as ±1; ``requires_grad`` when trained), the others buffers. They are
registered under their IR names (``fc0.w`` is the parameter ``w`` of the child ``fc0``) where
torch allows it, else in the child ``flat`` with the dots written ``%2E``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from boldc.errors import BoldcError, InterpretError
from boldc.interp import check_input, resolve_attrs
from boldc.ir.core import Module, Op, Param, Value
from boldc.ops.registry import lookup
from boldc.torch.plan import Plan, training_program
from boldc.torch.registry import OpCall, Runtime, implementation
from boldc.torch.values import CARRIER, to_array, to_tensor


class _Group(nn.Module):
    """A node of the param name tree (``fc0`` of ``fc0.w``)."""


def _flat_name(name: str) -> str:
    return name.replace("%", "%25").replace(".", "%2E")


class Node:
    """One op the net runs: its implementation, types and backward plan."""

    def __init__(self, op: Op, plan: Plan | None, rt: Runtime):
        self.op = op
        self.opdef = lookup(op.name)
        impl = implementation(op.name)
        if isinstance(impl, str):
            raise BoldcError(f"the torch engine cannot run op {op.describe()}{_at(op)}: {impl}")
        self.impl = impl
        self.plan = plan
        self.rt = rt
        self.in_types = [o.type for o in op.operands]
        self.out_types = [r.type for r in op.results]
        # params the op updates (BatchNorm's running statistics): their new values follow the results
        self.updated = [op.operands[pos].name for pos in self.opdef.updated_positions(len(op.operands))]
        self.plan_impls = []
        for g in plan.ops if plan else ():
            gi = implementation(g.name)
            if isinstance(gi, str):
                raise BoldcError(f"the torch engine cannot run op '{g.name}', which the backward rule of "
                                 f"{op.describe()}{_at(op)} emits: {gi}")
            self.plan_impls.append(gi)

    def call(self, bindings: dict) -> OpCall:
        return OpCall(self.op.name, resolve_attrs(self.opdef, self.op.attrs, bindings), self.in_types,
                      self.out_types, self.rt)

    def run(self, net: BooleanNet, args: Sequence[torch.Tensor], bindings: dict) -> tuple:
        """The op's results; the params it updates are written in the net (nothing reads them
        later in the step: the verifier's rule)."""
        outs = tuple(self.impl(self.call(bindings), *args))
        results = outs[:len(self.out_types)]
        for name, value in zip(self.updated, outs[len(self.out_types):], strict=True):
            net.set_tensor(name, value)
        return results

    def backward(self, net: BooleanNet, saved: Sequence[torch.Tensor], douts, bindings: dict) -> list:
        """The gradient of every operand (None where none is needed) from the signals ``douts``
        of the results: the plan's ops run with the engine's implementations."""
        plan = self.plan
        env: dict[Value, torch.Tensor] = {}
        k = 0
        for pos in plan.saved_operands:
            env[self.op.operands[pos]] = saved[k]
            k += 1
        for pos in plan.saved_results:
            env[self.op.results[pos]] = saved[k]
            k += 1
        for d, g in zip(plan.dys, douts):
            if d is not None:
                env[d] = g.to(CARRIER)
        for g, impl in zip(plan.ops, self.plan_impls):
            args = [env[o] if o in env else net.tensor(o.name) for o in g.operands]
            call = OpCall(g.name, resolve_attrs(lookup(g.name), g.attrs, bindings), [o.type for o in g.operands],
                          [r.type for r in g.results], self.rt)
            env.update(zip(g.results, impl(call, *args)))
        return [None if g is None else env[g] if g in env else net.tensor(g.name) for g in plan.grads]


def _at(op: Op) -> str:
    return f" at {op.loc}" if op.loc else ""


class _OpFunction(torch.autograd.Function):
    """An op whose backward is its boldc backward rule (see the module docstring)."""

    @staticmethod
    def forward(ctx, node: Node, net: BooleanNet, bindings: dict, *args):
        outs = node.run(net, args, bindings)
        ctx.node, ctx.net, ctx.bindings = node, net, bindings
        plan = node.plan
        ctx.save_for_backward(*[args[i] for i in plan.saved_operands], *[outs[i] for i in plan.saved_results])
        return outs if len(outs) > 1 else outs[0]

    @staticmethod
    def backward(ctx, *douts):
        grads = ctx.node.backward(ctx.net, ctx.saved_tensors, douts, ctx.bindings)
        return (None, None, None, *grads)


class _LossFunction(torch.autograd.Function):
    """The loss op; its backward is the loss's gradient op (the seed 1), times the incoming
    gradient when it is not 1 (``loss.backward(gradient=...)``, a scaled loss)."""

    @staticmethod
    def forward(ctx, node: Node, net: BooleanNet, pred, target):
        ctx.node, ctx.net = node, net
        ctx.save_for_backward(pred, target)
        return node.run(net, (pred, target), {})[0]

    @staticmethod
    def backward(ctx, dloss):
        grad = ctx.node.backward(ctx.net, ctx.saved_tensors, [None], {})[0]
        if not bool(torch.all(dloss == 1)):
            grad = grad * dloss.to(grad.dtype)
        return None, None, grad, None


class BooleanNet(nn.Module):
    """A Module's @forward on torch (see the module docstring). Build it with
    ``boldc.to_torch``; ``net(x)`` is the prediction, ``net.loss(pred, target)`` the loss of
    the training options, ``net.train_step(x, y)`` one step of @train_step."""

    def __init__(self, module: Module, rt: Runtime, plans: dict[Op, Plan] | None = None,
                 trained: set[str] = frozenset(), step_counter: Param | None = None):
        super().__init__()
        self.ir = module
        self.rt = rt
        self._where: dict[str, tuple[nn.Module, str]] = {}
        forward = module.function("forward")
        programs = [forward.ops]
        self.loss_node = None
        if plans is not None:
            train_ops, loss_op = training_program(module)
            programs.append(train_ops)
            self.loss_node = Node(loss_op, plans[loss_op], rt)
        used = {o.name for ops in programs for op in ops for o in op.operands if isinstance(o, Param)}
        for p in module.params.values():
            if p.name in used:
                self._add(p.name, to_tensor(p.data, p.type.dtype, rt.device), p.type.dtype.is_float or
                          p.type.dtype.is_bool, p.name in trained)
        # The step counter (@opt.step): stochastic rounding of integer signals reads it.
        self.step_name = step_counter.name if step_counter is not None else None
        if step_counter is not None:
            self._add(step_counter.name, torch.tensor(int(step_counter.data), dtype=torch.int64, device=rt.device),
                      False, False)
        self.eval_program = (forward.args, [Node(op, None, rt) for op in forward.ops], forward.returns)
        self.train_program = None
        if plans is not None:
            step = module.function("train_step")
            self.train_program = (step.args[:-1], [Node(op, plans.get(op), rt) for op in train_ops],
                                  [loss_op.operands[0]])
        self.trained = set(trained)
        self.optimizer = None  # the optimizers of @train_step, made by make_optimizer()

    @property
    def nodes(self) -> list[Node]:
        """The ops the net runs now (training or eval mode)."""
        return self._program()[1]

    def _program(self):
        return self.train_program if self.training and self.train_program is not None else self.eval_program

    # -- params -------------------------------------------------------------------------------------
    def _add(self, name: str, value: torch.Tensor, parameter: bool, trained: bool) -> None:
        tensor = nn.Parameter(value, requires_grad=trained) if parameter else value
        parts = name.split(".")
        node, ok = self, True
        try:
            for seg in parts[:-1]:
                child = node._modules.get(seg)
                if child is None:
                    child = _Group()
                    node.add_module(seg, child)
                if not isinstance(child, _Group):
                    raise KeyError(seg)
                node = child
            self._register(node, parts[-1], tensor, parameter)
        except (KeyError, ValueError, TypeError, AttributeError):
            ok = False
        if not ok:
            if "flat" not in self._modules:
                self.add_module("flat", _Group())
            node = self._modules["flat"]
            self._register(node, _flat_name(name), tensor, parameter)
            parts = [_flat_name(name)]
        self._where[name] = (node, parts[-1])

    @staticmethod
    def _register(node: nn.Module, leaf: str, tensor, parameter: bool) -> None:
        if hasattr(node, leaf):  # taken by an attribute, a param, a buffer or a child
            raise KeyError(leaf)
        if parameter:
            node.register_parameter(leaf, tensor)
        else:
            node.register_buffer(leaf, tensor)

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor of the IR param ``name``."""
        node, leaf = self._where[name]
        return getattr(node, leaf)

    def set_tensor(self, name: str, value: torch.Tensor) -> None:
        """Overwrite the IR param ``name`` in place (its Parameter object stays)."""
        with torch.no_grad():
            self.tensor(name).copy_(value)

    def ir_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """(IR name, tensor) of every param the engine holds, in module order."""
        return [(name, self.tensor(name)) for name in self._where]

    def boolean_parameters(self) -> list[nn.Parameter]:
        """The trained b1 params (±1; the Boolean optimizer flips them)."""
        return [self.tensor(n) for n in self._where if n in self.trained and self.ir.params[n].type.dtype.is_bool]

    def float_parameters(self) -> list[nn.Parameter]:
        """The trained f32 params (Adam)."""
        return [self.tensor(n) for n in self._where if n in self.trained and self.ir.params[n].type.dtype.is_float]

    def ir_array(self, name: str) -> np.ndarray:
        """The IR param ``name`` as a numpy array of its IR dtype (b1 as bool)."""
        return to_array(self.tensor(name), self.ir.params[name].type.dtype)

    @property
    def device(self) -> torch.device:
        return next((t.device for _, t in self.ir_parameters()), torch.device("cpu"))

    # -- running ------------------------------------------------------------------------------------
    def forward(self, *inputs):
        args, nodes, returns = self._program()
        if len(inputs) != len(args):
            raise InterpretError(f"@forward takes {len(args)} inputs ({', '.join(a.name for a in args)}), "
                                 f"got {len(inputs)}")
        bindings: dict[str, int] = {}
        env: dict[Value, torch.Tensor] = {}
        for arg, x in zip(args, inputs):
            env[arg] = self._input(arg, x, bindings)
        grad = torch.is_grad_enabled()
        for node in nodes:
            op = node.op
            values = [self.tensor(o.name) if isinstance(o, Param) else env[o] for o in op.operands]
            if grad and node.plan is not None and any(a.requires_grad for a in values):
                outs = _OpFunction.apply(node, self, bindings, *values)
                outs = outs if isinstance(outs, tuple) else (outs,)
            else:
                with torch.no_grad():
                    outs = node.run(self, values, bindings)
            env.update(zip(op.results, outs))
        out = [env[v] for v in returns]
        return out[0] if len(out) == 1 else tuple(out)

    def _input(self, arg: Value, x, bindings: dict) -> torch.Tensor:
        """An input checked against its argument's type (symbols bound) and held as the engine does."""
        t = arg.type
        shape = tuple(x.shape)
        what = f"input %{arg.name} of @forward"
        if len(shape) != t.rank:
            raise InterpretError(f"{what} must be {t}, got a tensor of shape {list(shape)}")
        for dim, size in zip(t.shape, shape):
            if isinstance(dim, str):
                if bindings.setdefault(dim, size) != size:
                    raise InterpretError(f"{what}: dimension {dim} is {size} here but {bindings[dim]} elsewhere")
            elif dim != size:
                raise InterpretError(f"{what} must be {t}, got a tensor of shape {list(shape)}")
        if isinstance(x, np.ndarray):
            if t.dtype.is_bool and x.dtype != np.bool_:
                raise InterpretError(f"{what} is b1 and needs a bool array, got {x.dtype}")
            if t.dtype.is_int:  # token ids and the like: the interpreter's rule (range, dtype)
                x = check_input(self.ir.function("forward"), arg, x, bindings)
            return to_tensor(x, t.dtype, self.device)
        if t.dtype.is_bool and x.dtype == torch.bool:
            return (x.to(self.device, CARRIER) * 2.0 - 1.0)
        if t.dtype.is_int:
            if x.dtype.is_floating_point or x.dtype == torch.bool:
                raise InterpretError(f"{what} is {t.dtype} and needs an integer tensor, got {x.dtype}")
            check_input(self.ir.function("forward"), arg, x.detach().cpu().numpy(), bindings)
        return x.to(self.device, CARRIER)

    def infer(self, *inputs) -> np.ndarray | tuple:
        """@forward on numpy inputs without gradients; the outputs as IR arrays (b1 as bool)."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self(*inputs)
        finally:
            self.train(was)
        types = [v.type.dtype for v in self.ir.function("forward").returns]
        outs = [to_array(t, d) for t, d in zip(out if isinstance(out, tuple) else (out,), types)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def loss(self, pred: torch.Tensor, target) -> torch.Tensor:
        """The loss of the training options (a 0-d float32 tensor); its backward is the loss's gradient op."""
        if self.loss_node is None:
            raise BoldcError("this net was built without training (to_torch(..., train=False)): it has no loss")
        if isinstance(target, np.ndarray):
            target = torch.from_numpy(target)
        target = target.to(pred.device)
        if not target.dtype.is_floating_point:
            target = target.to(torch.long)
        return _LossFunction.apply(self.loss_node, self, pred, target)

    # -- @train_step --------------------------------------------------------------------------------
    def make_optimizer(self):
        """The optimizers of @train_step (``boldc.torch.optim.TrainOptimizer``), made once."""
        if self.optimizer is None:
            from boldc.torch.optim import TrainOptimizer

            self.optimizer = TrainOptimizer(self)
        return self.optimizer

    def train_step(self, x, target) -> float:
        """One step of @train_step: forward, loss, backward, the optimizer updates (each reading
        the params of the step's start), the step counter. Returns the loss."""
        opt = self.make_optimizer()
        opt.zero_grad()
        loss = self.loss(self(x), target)
        loss.backward()
        opt.step()
        return float(loss.detach())
