"""The energy model (docs/energy.md): hardware descriptions (``hw/*.json``), the tiling and
access counts of a convolution (``tiling``), the energy of each declared work
(``evaluate``; the works are what ops declare, ``boldc.ir.works``), the walk over the IR
(``costing``), the float baseline (``baseline``), the report (``report``), ``energy()``
(exported as ``boldc.energy``) and the ``annotate-energy`` pass (``annotate``)."""

from boldc.energymodel import annotate  # noqa: F401  (registers the annotate-energy pass)
from boldc.energymodel.api import energy
from boldc.energymodel.hardware import Hardware, HardwareError, load_hardware
from boldc.energymodel.report import Report, Row

__all__ = ["Hardware", "HardwareError", "Report", "Row", "energy", "load_hardware"]
