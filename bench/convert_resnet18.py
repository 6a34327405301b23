"""Time ``boldc convert`` on the ResNet-18 ONNX export (target: under 10 s).

    python bench/convert_resnet18.py [--repeat 3]

Exports ResNet-18 (3x224x224, examples/export_large.py) into a temp directory, then
times, best of ``--repeat``:

- the command line end to end (``python -m boldc convert model.onnx -o model.bir``,
  a new process: interpreter start, imports, conversion, summary, writing the file);
- the library call ``boldc.convert(path)`` (read, import, lower; no file written);
- its parts: ``boldc.import_onnx`` and the lowering of the imported module;
- as a reference, onnxruntime creating an inference session for the same file (reading
  and optimizing the model: the closest thing a peer does to a conversion).

Needs torch (test extra). Not a test: machines here are shared and timings vary.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

import boldc
from boldc.frontend.api import lower

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from export_large import build  # noqa: E402
from onnx_export import export_onnx  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, bir_path = Path(tmp) / "resnet18.onnx", Path(tmp) / "resnet18.bir"
        net, shape = build("resnet18")
        export_onnx(net, shape, onnx_path)
        print(f"ResNet-18 ONNX export: {onnx_path.stat().st_size / 1e6:.1f} MB")

        def cli():
            subprocess.run([sys.executable, "-m", "boldc", "convert", str(onnx_path), "-o", str(bir_path)],
                           check=True, capture_output=True)

        t_cli = best(cli, args.repeat)
        t_lib = best(lambda: boldc.convert(onnx_path), args.repeat)
        t_import = best(lambda: boldc.import_onnx(onnx_path), args.repeat)
        imported = boldc.import_onnx(onnx_path)
        t_lower = best(lambda: lower(imported.copy()), args.repeat)
        t_copy = best(imported.copy, args.repeat)
        opts = ort.SessionOptions()
        t_ort = best(lambda: ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"]),
                     args.repeat)
        print(f"boldc convert (CLI, new process, end to end): {t_cli:6.2f} s")
        print(f"boldc.convert (library call):                 {t_lib:6.2f} s")
        print(f"  boldc.import_onnx:                          {t_import:6.2f} s")
        print(f"  lowering (lower-boolean, incl. copy {t_copy:.2f} s): {t_lower:6.2f} s")
        print(f"onnxruntime InferenceSession (reference):     {t_ort:6.2f} s  "
              f"(boldc.convert / session = {t_lib / t_ort:.2f}x)")
        print(f"written .bir: {bir_path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
