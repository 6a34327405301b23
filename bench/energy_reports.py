"""Training-energy reports of VGG-Small and ResNet-18 (batch 32): run time, totals, ratios.

    python bench/energy_reports.py [--batch 32]

Exports both models with examples/export_large.py (needs torch), then times the whole
command ``boldc energy MODEL.onnx --phase training --format json -o r.json`` (ONNX
import, lowering, costing, writing) and prints the Boolean and float totals, the ratio
and the ratio per phase (docs/energy.md, "Measured"). Not a test: the machine may be
shared and timings vary; there is no peer to compare an analytic model with.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from boldc.energymodel import Report

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("vgg_small", "resnet18")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'model':10s} {'time':>7s} {'Boolean':>10s} {'float':>10s} {'ratio':>6s}  forward/backward/update")
        for name in MODELS:
            onnx_path = Path(tmp) / f"{name}.onnx"
            subprocess.run([sys.executable, str(ROOT / "examples" / "export_large.py"), name, str(onnx_path)],
                           check=True, stdout=subprocess.DEVNULL)
            out = Path(tmp) / f"{name}.json"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "boldc", "energy", str(onnx_path), "--phase", "training",
                            "--batch", str(args.batch), "--format", "json", "-o", str(out)], check=True)
            elapsed = time.perf_counter() - start
            r = Report.from_json(out.read_text())
            phases = " / ".join(f"{mine / base:.3f}" for mine, base in r.by_phase().values())
            print(f"{name:10s} {elapsed:6.2f}s {r.total_pj / 1e9:7.1f} mJ {r.baseline_pj / 1e9:7.1f} mJ "
                  f"{r.ratio:6.3f}  {phases}")


if __name__ == "__main__":
    main()
