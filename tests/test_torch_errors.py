"""User errors of the torch engine: one-line BoldcErrors saying what to do (docs/torch.md).

- ``import boldc`` never imports torch; without torch, ``boldc.to_torch`` says how to install
  the extra;
- a module the engine cannot run (an op without implementation: tests/test_torch_ops.py; a
  module with @train_step already; params without tensors), bad options, bad inputs and labels;
- a CUDA request without CUDA, bfloat16 on the CPU, an nn.Module torch cannot export.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import boldc
from boldc.errors import BoldcError
from boldc.torch import from_torch, resolve_device, to_torch
from boldc.torch.onnx_export import export

from trainutil import digits_mlp


def _python(code: str, env_path: str | None = None) -> subprocess.CompletedProcess:
    env = None
    if env_path is not None:
        import os

        env = {**os.environ, "PYTHONPATH": env_path}
    return subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env)


def test_import_boldc_does_not_import_torch():
    out = _python("""
        import sys, boldc
        assert callable(boldc.compile) and boldc.__name__ == "boldc"
        print("torch" in sys.modules)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_missing_torch_is_one_line_saying_how_to_install_it(tmp_path):
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    boldc.save(digits_mlp(0), tmp_path / "m.bir")
    out = _python(f"""
        import boldc
        from boldc.errors import BoldcError
        m = boldc.load({str(tmp_path / 'm.bir')!r})
        try:
            boldc.to_torch(m)
        except BoldcError as exc:
            print(exc)
    """, env_path=str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "needs PyTorch" in lines[0] and "pip install 'boldc[torch]'" in lines[0]


@pytest.mark.parametrize("options,message", [
    ({"etaa": 3.0}, r"unknown option 'etaa' \(options: .*eta"),
    ({"signal_bits": 7}, r"signal-bits='7' is not one of 16 \| 8 \| 4 \| f32"),
    ({"schedule": "cosine"}, r"schedule=cosine needs total-steps >= 1"),
    ({"eta": -1.0}, r"eta and lr must be finite numbers > 0"),
    ({"rescale": "yes"}, r"option rescale must be True or False"),
    ({"alpha": "big"}, r"option alpha must be a float"),
    ({"loss": "hinge"}, r"unknown loss 'hinge'"),
])
def test_bad_training_options(options, message):
    with pytest.raises(BoldcError, match=message):
        to_torch(digits_mlp(0), **options)


def test_modules_the_engine_refuses():
    m = digits_mlp(0)
    with pytest.raises(BoldcError, match="needs a boldc Module"):
        to_torch("model.bir")
    net = to_torch(m)
    with pytest.raises(BoldcError, match="has one already: give it the module without @train_step"):
        to_torch(from_torch(net, optimizer=True))
    to_torch(from_torch(net, optimizer=True), train=False)  # inference of such a module is fine
    bare = m.copy()
    bare.params["fc1.w"].data = None
    with pytest.raises(BoldcError, match=r"params without tensors: @fc1.w"):
        to_torch(bare)
    with pytest.raises(BoldcError, match="need train=True"):
        to_torch(m, train=False, eta=3.0)
    with pytest.raises(BoldcError, match="built without training"):
        from_torch(to_torch(m, train=False), optimizer=True)


def test_bad_inputs_and_labels_are_one_line():
    net = to_torch(digits_mlp(0))
    with pytest.raises(BoldcError, match=r"input %x of @forward must be f32\[N, 64\], got a tensor of shape \[3, 63\]"):
        net(np.zeros((3, 63), np.float32))
    with pytest.raises(BoldcError, match=r"@forward takes 1 inputs"):
        net(np.zeros((3, 64), np.float32), np.zeros(3))
    out_of_range = r"label 12 is out of range: there are 10 classes \(0 to 9; ignore_index -100\)"
    with pytest.raises(BoldcError, match=out_of_range):
        net.train_step(np.zeros((2, 64), np.float32), np.array([1, 12]))
    assert int(net.tensor("opt.step")) == 0  # the refused step changed nothing


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present: a CUDA request is valid here")
def test_cuda_without_cuda_and_amp_on_the_cpu():
    with pytest.raises(BoldcError, match=r"device 'cuda': CUDA is not available here .*use the device cpu"):
        to_torch(digits_mlp(0), device="cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(BoldcError, match=r"amp \(bfloat16 float layers\) needs CUDA"):
        to_torch(digits_mlp(0), amp=True)
    with pytest.raises(BoldcError, match=r"device 'tpu': not a device"):
        resolve_device("tpu")


class _Unexportable(torch.nn.Module):
    def forward(self, x):
        return torch.fft.fft(x).real  # no ONNX export for FFT at opset 17


def test_nn_module_export_errors():
    with pytest.raises(BoldcError, match="example_input must be a tensor"):
        export(torch.nn.Linear(4, 2), "x")
    with pytest.raises(BoldcError, match=r"cannot export the torch module _Unexportable to ONNX: "):
        export(_Unexportable(), torch.zeros(1, 8))
    proto = export(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)),
                   torch.zeros(2, 4))
    assert proto.ir_version <= 10 and proto.opset_import[0].version == 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    m = boldc.convert(proto, float_layers="none")
    assert "blinear" in [op.name for op in m.function("forward").ops]
