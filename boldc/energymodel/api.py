"""``boldc.energy(module, ...)``: the energy report of a module and of its float baseline."""

from __future__ import annotations

from boldc.energymodel.baseline import float_baseline
from boldc.energymodel.costing import CostedItem, EnergyError, View, cost_function, training_step
from boldc.energymodel.hardware import load_hardware
from boldc.energymodel.report import Report, Row, pair_rows
from boldc.errors import BoldcError
from boldc.ir.core import Module
from boldc.ir.works import INT, REAL
from boldc.ops.registry import lookup
from boldc.ops.traits import Composite
from boldc.passes.bind_dims import BATCH, bound_copy, check_dims, module_symbols, unbound_message
from boldc.passes.fuse_epilogues import FuseEpilogues, Unfuse

PHASES = ("inference", "training")
DEFAULT_BATCH = 32
# The largest batch costed. The tiling search tries every divisor of the batch as a batch
# tile (tiling.py): its time follows their count, not the batch's size, and below 2^24 no
# number has more than 504 divisors (14,414,400 has), which keeps a report within seconds.
MAX_BATCH = 2**24
DEFAULT_SIGNAL_BITS = 16
SIGNAL_BITS = (16, 8, 4, 32)  # a derived training step's signals: integers of that width, or f32 (32)
DEFAULT_LOSS = "softmax_xent"


def is_boolean(module: Module) -> bool:
    """A Boolean model: one b1 param at least."""
    return any(p.type.dtype.is_bool for p in module.params.values())


def autodiff_signal_bits(signal_bits: int) -> str:
    """autodiff's option ``signal-bits`` for the energy model's ``signal_bits``."""
    return "f32" if signal_bits == 32 else str(signal_bits)


def signal_summary(module: Module, signal_bits: int) -> dict:
    """How the backward signals of Boolean layers are stored in the step costed: integers
    of ``signal_bits`` (the method's W/A/G = 1/1/16 by default) or f32; a float model's
    are f32."""
    if is_boolean(module) and signal_bits != 32:
        return {"bits": signal_bits, "kind": INT}
    return {"bits": 32, "kind": REAL}


def _check(phase: str, batch: int, signal_bits: int) -> None:
    if phase not in PHASES:
        raise EnergyError(f"phase must be one of {' | '.join(PHASES)}, got {phase!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise EnergyError(f"batch must be a positive integer, got {batch!r}")
    if batch > MAX_BATCH:
        raise EnergyError(batch_bound_message(batch))
    if isinstance(signal_bits, bool) or signal_bits not in SIGNAL_BITS:
        raise EnergyError(f"signal bits must be one of 16, 8, 4 (integer signals) or 32 (f32 signals), "
                          f"got {signal_bits!r}")


def batch_bound_message(batch: int) -> str:
    return (f"batch {batch} is larger than {MAX_BATCH:,} (2^24), the largest step the energy model costs: its "
            "tiling search tries every divisor of the batch as a tile, and the bound keeps a report within seconds")


def cost_items(module: Module, phase: str, view: View, loss: str = DEFAULT_LOSS,
               signal_bits: int = DEFAULT_SIGNAL_BITS, fuse: bool | None = True) -> list[CostedItem]:
    """Inference: @forward. Training: @train_step as it is when the module has one, else
    the one autodiff (backward signals ``signal_bits``) and insert-optimizer build from
    @forward (``costing.training_step``). ``fuse``: True costs the function with its
    epilogues fused (fuse-epilogues on a copy), False unfused (unfuse on a copy), None as it
    is. Every item is reported under an op of ``module`` (a fused op under its head's)."""
    func = "forward" if phase == "inference" or "train_step" not in module.functions else "train_step"
    if phase == "inference" or "train_step" in module.functions:
        step = module.copy()
        owners = dict(zip(step.function(func).ops, module.function(func).ops))
    else:
        step, owners = training_step(module, loss, autodiff_signal_bits(signal_bits))
        func = "train_step"
    if fuse is not None:
        rewrite = FuseEpilogues(functions=[func]) if fuse else Unfuse()
        rewrite.run(step)
        origin = {op: parts[0] for op, parts in rewrite.parts.items()} if fuse else rewrite.origins
        owners.update({op: owners.get(source) for op, source in origin.items()})
    return cost_function(step, func, view, owners)


def effective_batch(module: Module, batch: int | None) -> int:
    """The batch a step is costed on: ``batch`` (default 32) binds the symbolic batch N;
    a module whose inputs have a fixed batch is costed on that batch, and asking for
    another one is an error rather than a report that silently ignores it."""
    args = module.function("forward").args
    if not args or any(a.type.symbols for a in args) or not args[0].type.shape:
        return DEFAULT_BATCH if batch is None else batch
    fixed = args[0].type.shape[0]
    if batch is not None and batch != fixed:
        raise EnergyError(f"the model's inputs have a fixed batch of {fixed} (%{args[0].name}: {args[0].type}); "
                          f"drop --batch {batch}, or convert the model with a symbolic batch "
                          f"(--input-shape {args[0].name}=N...)")
    return fixed


def bind_sizes(module: Module, dims, baseline: Module | None = None) -> tuple[Module, Module | None]:
    """``module`` (and the given ``baseline``) with the sizes ``dims`` bound (the pass
    bind-dims, on copies; a baseline gets those of its own symbols). Then every symbol but
    the batch N must have a size: otherwise a one-line error naming it and ``--dim``."""
    sizes = check_dims(dims or {}, "dims")
    module = bound_copy(module, sizes)
    if baseline is not None:
        baseline = bound_copy(baseline, {k: v for k, v in sizes.items() if k in module_symbols(baseline)})
    for m in (module, baseline):
        for fn in (m.functions if m is not None else ()):
            rest = sorted(module_symbols(m, [fn]) - {BATCH})
            if rest:
                raise EnergyError(unbound_message(fn, rest, "the energy model needs every size but the batch N "
                                                  "(--batch)", "boldc energy --dim", "boldc.energy"))
    return module, baseline


def costed(module: Module, batch: int | None = None, phase: str = "inference", hw=None,
           signal_bits: int = DEFAULT_SIGNAL_BITS, loss: str = DEFAULT_LOSS, baseline: Module | None = None,
           fuse: bool | None = True):
    """The cost items of the model and of its float baseline, and the hardware used
    (what ``energy`` reports and ``annotate-energy`` records). ``batch`` as in
    ``effective_batch``, ``fuse`` as in ``cost_items`` (the baseline is fused alike; with
    None, when the module has a fused op). Symbols other than the batch must be bound
    already (``bind_sizes``)."""
    batch = effective_batch(module, batch)
    _check(phase, batch, signal_bits)
    hw = load_hardware(hw)
    view = View(hw, batch)
    items = cost_items(module, phase, view, loss, signal_bits, fuse)
    try:  # the float network of @forward (a given float module is its own), trained from scratch
        base_module = float_baseline(baseline if baseline is not None else module)
    except BoldcError as exc:
        raise EnergyError(str(exc)) from None
    base_fuse = fuse if fuse is not None else any(lookup(op.name).has(Composite) for fn in module.functions.values()
                                                 for op in fn.ops)
    base_items = cost_items(base_module, phase, view, loss, fuse=base_fuse)
    return items, base_items, hw


def energy(module: Module, batch: int | None = None, phase: str = "inference", hw=None,
           signal_bits: int = DEFAULT_SIGNAL_BITS, loss: str = DEFAULT_LOSS, baseline: Module | None = None,
           source: str | None = None, fuse: bool = True, dims=None) -> Report:
    """The energy report (docs/method.md §6) of ``module`` for one step of ``phase`` on ``batch``
    samples (default 32; a module with a fixed batch is costed on it), and of its float
    baseline (same phase and batch).

    - ``hw``: a shipped hardware name (default "ascend"), a JSON path, or a Hardware;
    - ``signal_bits``: the backward signals of Boolean layers in a training step derived
      from @forward: 16, 8 or 4-bit integers, or 32 for f32 (autodiff's ``signal-bits``;
      a module with its own @train_step is costed as its IR declares);
    - ``loss``: the loss op a derived training step uses (as autodiff's ``loss`` option);
    - ``baseline``: the float network to compare with (e.g. ``boldc.import_onnx`` of the
      model); by default the same graph with every tensor f32 and every Boolean op
      replaced by its float counterpart. The baseline's training step is always
      derived from its @forward (ordinary backprop, Adam for every param);
    - ``fuse``: cost the steps with their epilogues fused into the layers before them, the
      baseline alike (docs/energy.md, "Fusion"); False costs both unfused;
    - ``dims``: sizes of the symbolic dimensions other than the batch, e.g. ``{"L": 64}``
      for a sequence length (``boldc energy --dim L=64``); a model that keeps such a
      symbol unbound is refused with a one-line error naming it. ``{"N": 32}`` fixes the
      batch like a model converted with a fixed batch.

    Returns a ``Report`` with ``.total_pj``, ``.baseline_pj``, ``.ratio``, ``.rows`` and
    ``.to_json()``."""
    module, baseline = bind_sizes(module, dims, baseline)
    batch = effective_batch(module, batch)
    items, base_items, hw = costed(module, batch, phase, hw, signal_bits, loss, baseline, fuse)
    rows = [to_row(i) for i in items]
    base_rows = [to_row(i) for i in base_items]
    pair_rows(rows, base_rows)
    meta = {
        "source": source,
        "phase": phase,
        "batch": batch,
        "function": "forward" if phase == "inference" else
        ("train_step" if "train_step" in module.functions else "forward (training step derived)"),
        "signal": signal_summary(module, signal_bits),
        "loss": loss if phase == "training" else None,
        "baseline": "given float module" if baseline is not None else "derived: same graph, f32, float ops",
        "fused": bool(fuse),
        "dims": dict(check_dims(dims or {})),
        "hardware": hw.summary(),
    }
    return Report(meta, rows, base_rows)


def to_row(item: CostedItem) -> Row:
    c = item.cost
    return Row(item.ref, item.opname, c.phase, c.label, int(c.ops.arith), int(c.ops.logic), float(c.compute_pj),
               {k: float(v) for k, v in c.memory_pj.items()}, c.detail)
