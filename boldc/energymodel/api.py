"""``boldc.energy(module, ...)``: the energy report of a module and of its float baseline."""

from __future__ import annotations

from boldc.energymodel.costing import CostedItem, EnergyError, View, cost_function, derive_training
from boldc.energymodel.hardware import Hardware, load_hardware
from boldc.energymodel.report import Report, Row, pair_rows
from boldc.energymodel.works import INT, REAL, SignalFormat
from boldc.ir.core import Module

PHASES = ("inference", "training")
DEFAULT_BATCH = 32
DEFAULT_SIGNAL_BITS = 16
DEFAULT_LOSS = "softmax_xent"


def is_boolean(module: Module) -> bool:
    """A Boolean model: one b1 param at least."""
    return any(p.type.dtype.is_bool for p in module.params.values())


def signal_format(module: Module, hw: Hardware, signal_bits: int) -> SignalFormat:
    """Backward signals of a Boolean model: ``signal_bits``-bit fixed point (SPEC §6.6,
    W/A/G = 1/1/16); of a float model: f32."""
    if is_boolean(module):
        return SignalFormat(signal_bits, INT)
    return SignalFormat(hw.bits["f32"], REAL)


def _check(phase: str, batch: int, signal_bits: int) -> None:
    if phase not in PHASES:
        raise EnergyError(f"phase must be one of {' | '.join(PHASES)}, got {phase!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise EnergyError(f"batch must be a positive integer, got {batch!r}")
    if isinstance(signal_bits, bool) or not isinstance(signal_bits, int) or not 1 <= signal_bits <= 64:
        raise EnergyError(f"signal bits must be an integer in [1, 64], got {signal_bits!r}")


def cost_items(module: Module, phase: str, view: View, loss: str = DEFAULT_LOSS) -> list[CostedItem]:
    """Inference: @forward. Training: @train_step as it is when the module has one, else
    derived from @forward."""
    if phase == "inference":
        return cost_function(module, "forward", view)
    if "train_step" in module.functions:
        return cost_function(module, "train_step", view)
    return derive_training(module, view, loss)


def model_view(module: Module, hw: Hardware, batch: int, signal_bits: int) -> View:
    return View(hw, batch, signal_format(module, hw, signal_bits), baseline=False)


def baseline_view(hw: Hardware, batch: int) -> View:
    return View(hw, batch, SignalFormat(hw.bits["f32"], REAL), baseline=True)


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


def costed(module: Module, batch: int | None = None, phase: str = "inference", hw=None,
           signal_bits: int = DEFAULT_SIGNAL_BITS, loss: str = DEFAULT_LOSS, baseline: Module | None = None):
    """The cost items of the model and of its float baseline, and the hardware used
    (what ``energy`` reports and ``annotate-energy`` records). ``batch`` as in
    ``effective_batch``."""
    batch = effective_batch(module, batch)
    _check(phase, batch, signal_bits)
    hw = load_hardware(hw)
    items = cost_items(module, phase, model_view(module, hw, batch, signal_bits), loss)
    base_module = baseline if baseline is not None else module
    bview = baseline_view(hw, batch)
    base_items = (cost_function(base_module, "forward", bview) if phase == "inference"
                  else derive_training(base_module, bview, loss))
    return items, base_items, hw


def energy(module: Module, batch: int | None = None, phase: str = "inference", hw=None,
           signal_bits: int = DEFAULT_SIGNAL_BITS, loss: str = DEFAULT_LOSS, baseline: Module | None = None,
           source: str | None = None) -> Report:
    """The energy report (SPEC §6) of ``module`` for one step of ``phase`` on ``batch``
    samples (default 32; a module with a fixed batch is costed on it), and of its float
    baseline (same phase and batch).

    - ``hw``: a shipped hardware name (default "ascend"), a JSON path, or a Hardware;
    - ``signal_bits``: width of the backward signals of a Boolean model (training);
    - ``loss``: the loss op a derived training step uses (as autodiff's ``loss`` option);
    - ``baseline``: the float network to compare with (e.g. ``boldc.import_onnx`` of the
      model); by default the same graph with every tensor f32 and every Boolean op
      replaced by its float counterpart. The baseline's training step is always
      derived from its @forward (ordinary backprop, Adam for every param).

    Returns a ``Report`` with ``.total_pj``, ``.baseline_pj``, ``.ratio``, ``.rows`` and
    ``.to_json()``."""
    batch = effective_batch(module, batch)
    items, base_items, hw = costed(module, batch, phase, hw, signal_bits, loss, baseline)
    rows = [to_row(i) for i in items]
    base_rows = [to_row(i) for i in base_items]
    pair_rows(rows, base_rows)
    fmt = signal_format(module, hw, signal_bits)
    meta = {
        "source": source,
        "phase": phase,
        "batch": batch,
        "function": "forward" if phase == "inference" else
        ("train_step" if "train_step" in module.functions else "forward (training step derived)"),
        "signal": {"bits": fmt.bits, "kind": fmt.kind},
        "loss": loss if phase == "training" else None,
        "baseline": "given float module" if baseline is not None else "derived: same graph, f32, float ops",
        "hardware": hw.summary(),
    }
    return Report(meta, rows, base_rows)


def to_row(item: CostedItem) -> Row:
    c = item.cost
    return Row(item.ref, item.opname, c.phase, c.label, int(c.ops.arith), int(c.ops.logic), float(c.compute_pj),
               {k: float(v) for k, v in c.memory_pj.items()}, c.detail)
