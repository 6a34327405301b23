"""boldc.resources: the runtime and templates folders, installed or in a checkout."""

from __future__ import annotations

import importlib.resources
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from boldc import resources


@pytest.mark.parametrize("name,file", [("runtime", "boldc_rt.h"), ("templates", "module.c.j2")])
def test_the_data_folders_are_found(name, file):
    assert resources.read_text(name, file).strip()


def test_a_checkout_without_the_data_packages_reads_its_own_folders(monkeypatch, tmp_path):
    """A script run from a checkout's root imports the checkout's boldc, where the packages
    boldc.runtime and boldc.templates do not exist: the top-level folders serve. Built here
    as a copy of the module in a checkout-like tree."""
    (tmp_path / "boldc").mkdir()
    shutil.copy(resources.__file__, tmp_path / "boldc" / "resources.py")
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "__init__.py").write_text("")
    (tmp_path / "runtime" / "boldc_rt.h").write_text("/* the checkout's */\n")
    spec = importlib.util.spec_from_file_location("checkout_resources", tmp_path / "boldc" / "resources.py")
    checkout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checkout)
    real = importlib.resources.files

    def files(package):
        if package in ("boldc.runtime", "boldc.templates"):
            raise ModuleNotFoundError(package)
        return real(package)

    monkeypatch.setattr(importlib.resources, "files", files)
    assert checkout.read_text("runtime", "boldc_rt.h") == "/* the checkout's */\n"
    with pytest.raises(ModuleNotFoundError):  # neither installed nor in the checkout
        checkout.folder("templates")
    with pytest.raises(ValueError, match="unknown data folder"):
        checkout.folder("docs")


def test_a_script_at_the_checkouts_root_runs_the_checkout(tmp_path):
    """``python script.py`` at the repository's root imports the checkout's boldc (the
    current directory comes first on sys.path), which finds runtime/ and templates/ next
    to it: it compiles a model and runs it."""
    root = Path(__file__).resolve().parent.parent
    script = root / f"_checkout_probe_{tmp_path.name}.py"
    script.write_text(
        "import numpy as np\nimport boldc\n"
        "m = boldc.convert('examples/digits_mlp.onnx')\n"
        "y = boldc.compile(m, max_batch=2).infer(np.zeros((2, 64), np.float32))\n"
        "print(boldc.__file__, y.shape)\n")
    try:
        out = subprocess.run([sys.executable, script.name], cwd=root, capture_output=True, text=True, timeout=600)
    finally:
        script.unlink()
    assert out.returncode == 0, out.stderr
    where, shape = out.stdout.split(" ", 1)
    assert Path(where).resolve() == root / "boldc" / "__init__.py" and shape.strip() == "(2, 10)"
