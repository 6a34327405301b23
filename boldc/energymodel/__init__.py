"""The energy model of SPEC §6 (docs/energy.md): hardware descriptions (``hw/*.json``),
what ops declare (``works``), the tiling and access counts of a convolution
(``tiling``), the energy of each item (``evaluate``), the walk over the IR
(``costing``), the report (``report``) and ``energy()``, exported as ``boldc.energy``."""

from boldc.energymodel.api import energy
from boldc.energymodel.hardware import Hardware, HardwareError, load_hardware
from boldc.energymodel.report import Report, Row

__all__ = ["Hardware", "HardwareError", "Report", "Row", "energy", "load_hardware"]
