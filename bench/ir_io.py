"""Save, load and print time of a ResNet-18-sized module (~11.7 M params, mostly b1).

    python bench/ir_io.py

Builds the module in memory (float stem and classifier, Boolean 3x3 convolutions and
1x1 downsampling shortcuts with random bits), then times boldc.save, boldc.load and
boldc.dumps, and checks that every tensor came back bit for bit. Not a test: machines
here are shared and timings vary.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import boldc
from boldc import FunctionBuilder, Module, tensor


def resnet18_like(seed: int = 0) -> Module:
    rng = np.random.default_rng(seed)
    m = Module()
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 3, 224, 224))])

    def bits(name, *shape):
        return m.add_param(name, tensor("b1", *shape), rng.random(shape) < 0.5)

    w = m.add_param("conv1.w", tensor("f32", 64, 3, 7, 7), rng.standard_normal((64, 3, 7, 7)).astype(np.float32))
    h = fb.op("conv2d", [fb.args[0], w], {"stride": [2, 2], "pad": [3, 3, 3, 3]})
    h = fb.op("threshold", [fb.op("maxpool2d", [h], {"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1, 1, 1]})])
    c = 64
    for stage, (cout, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
        for blk in range(2):
            s = stride if blk == 0 else 1
            a = fb.op("bconv2d", [h, bits(f"layer{stage}.{blk}.conv1.w", cout, c, 3, 3)],
                      {"stride": [s, s], "pad": [1, 1, 1, 1]})
            a = fb.op("bconv2d", [fb.op("threshold", [a]), bits(f"layer{stage}.{blk}.conv2.w", cout, cout, 3, 3)],
                      {"pad": [1, 1, 1, 1]})
            short = fb.op("bconv2d", [h, bits(f"layer{stage}.{blk}.down.w", cout, c, 1, 1)], {"stride": [s, s]}) \
                if (s != 1 or c != cout) else h
            h = fb.op("threshold", [fb.op("add", [a, short])])
            c = cout
    h = fb.op("flatten", [fb.op("global_avgpool", [h])])
    w = m.add_param("fc.w", tensor("f32", 1000, 512), rng.standard_normal((1000, 512)).astype(np.float32))
    b = m.add_param("fc.b", tensor("f32", 1000), np.zeros(1000, np.float32))
    fb.ret(fb.op("linear", [h, w, b]))
    return m


def main() -> None:
    m = resnet18_like()
    counts = m.num_params()
    print(f"params: {sum(counts.values()) / 1e6:.2f} M ({', '.join(f'{k}: {v}' for k, v in counts.items())})")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet18.bir"
        t0 = time.perf_counter()
        boldc.save(m, path)
        t1 = time.perf_counter()
        back = boldc.load(path)
        t2 = time.perf_counter()
        text = boldc.dumps(back)
        t3 = time.perf_counter()
        size = path.stat().st_size
    for name, p in m.params.items():
        assert back.params[name].data.tobytes() == p.data.tobytes(), name
    print(f"file: {size / 1e6:.2f} MB; save {t1 - t0:.3f} s, load (parse + verify) {t2 - t1:.3f} s, "
          f"print {t3 - t2:.3f} s; total {t3 - t0:.3f} s; text {len(text) / 1e6:.2f} MB; tensors bit-exact")


if __name__ == "__main__":
    main()
