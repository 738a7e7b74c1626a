"""``make bench-zoo``: the benchmark zoo, many GANs held to their bounds.

Each model of :data:`MODELS` is a GAN generator or discriminator of a public architecture, built
here as ONNX with ``onnx.helper`` and seeded numpy weights (or read from ``examples/``), so the
figures are deterministic. For each model and target it compiles (in memory, through the
library: import, float passes, calibration, quantization, lowering), runs one frame in the
instruction-level simulator with the sparse core off (every MAC step costs a cycle, so the
bound below is honest) and prints:

- ``MACs``: the model's useful multiplies, as imported (before the float passes: a nearest
  upsampling folded into the convolution after it leaves fewer, and the bound stays the
  model's; the folded count and the cycles / its bound follow the worst layer);
- ``cycles``: the instruction-level simulator's;
- ``compute``: compute bound, the model's useful MACs / lanes of the machine;
- ``memory``: memory bound, the bytes a frame must move at least (each constant, micro-program,
  input and output byte of the image once) / AXI bytes per cycle;
- ``x bound``: cycles / max(compute, memory); ``util``: useful MACs / (cycles x lanes);
- ``batch 8``: for a model memory bound at batch 1, the cycles per frame of a program that
  loads each weight tile once for 8 frames (``compile --batch 8``), and their ratio to
  max(compute, memory bound) per frame;
- the worst layer (the most cycles above its own compute bound) and why, in figures: its
  cycles, its lanes per tile, the groups it keeps busy, its RUNs and its DMA.

A board target (``ulx3s``, ``icebreaker``) refuses an image larger than its memory; the table
says so. ``tests/sim/test_zoo.py`` asserts the ``x bound`` of every model on the ``sim``
target against a ceiling, and that the simulator's output equals the golden model's.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from flexigan.compiler import ir, macs, passes, quant
from flexigan.compiler.onnx_import import import_model
from flexigan.errors import FlexiganError
from flexigan.flow import default_calibration
from flexigan.hw.arch.config import preset
from flexigan.sim import golden, isa_sim
from flexigan.tune import lower_quickest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TARGETS = ("sim", "ulx3s", "icebreaker")
#: Frames of the batched program the table measures for memory-bound models.
BATCH = 8


# --- building models ----------------------------------------------------------------------

class _Builder:
    """Nodes and seeded initializers of one model under construction."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], {}
        self.count = 0

    def _name(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def _param(self, shape, scale):
        name = self._name("p")
        self.inits[name] = self.rng.normal(0, scale, shape)
        return name

    def op(self, op, inputs, **attrs):
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def act(self, x, kind):
        if kind is None:
            return x
        if kind == "LeakyRelu":
            return self.op("LeakyRelu", [x], alpha=0.2)
        return self.op(kind, [x])

    def gemm(self, x, cin, cout, act=None):
        w, b = self._param((cout, cin), 1 / np.sqrt(cin)), self._param((cout,), 0.1)
        return self.act(self.op("Gemm", [x, w, b], transB=1), act)

    def conv(self, x, cin, cout, k=3, stride=1, pad=1, act=None, bn=False):
        w = self._param((cout, cin, k, k), 1 / np.sqrt(cin * k * k))
        inputs = [x, w] if bn else [x, w, self._param((cout,), 0.1)]
        y = self.op("Conv", inputs, kernel_shape=[k, k], strides=[stride] * 2,
                    pads=[pad] * 4)
        return self.act(self.bn(y, cout) if bn else y, act)

    def convt(self, x, cin, cout, k=4, stride=2, pad=1, act=None, bn=False):
        w = self._param((cin, cout, k, k), 1 / np.sqrt(cin * k * k / stride ** 2))
        inputs = [x, w] if bn else [x, w, self._param((cout,), 0.1)]
        y = self.op("ConvTranspose", inputs, kernel_shape=[k, k], strides=[stride] * 2,
                    pads=[pad] * 4)
        return self.act(self.bn(y, cout) if bn else y, act)

    def bn(self, x, channels):
        names = []
        for low, high in ((0.5, 1.5), (-0.1, 0.1), (-0.2, 0.2), (0.5, 2.0)):
            name = self._name("bn")
            self.inits[name] = self.rng.uniform(low, high, channels)
            names.append(name)
        return self.op("BatchNormalization", [x, *names])

    def reshape(self, x, shape):
        name = self._name("shape")
        self.inits[name] = np.array([-1, *shape])
        return self.op("Reshape", [x, name])

    def upsample(self, x):
        name = self._name("scales")
        self.inits[name] = np.array([1.0, 1.0, 2.0, 2.0])
        return self.op("Resize", [x, "", name], mode="nearest",
                       coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    def model(self, inputs, output):
        """A checked ModelProto: ``inputs`` ``[(name, shape)]``, ``output`` the last value."""
        def typed(v):
            v = np.asarray(v)
            return v.astype(np.int64) if v.dtype.kind in "iu" else v.astype(np.float32)

        graph = helper.make_graph(
            self.nodes, "zoo",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *s]) for n, s in inputs],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", "c", "h", "w"])],
            [numpy_helper.from_array(typed(v), n) for n, v in self.inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(model)
        return model


def mlp_generator():
    """MLP GAN generator (Goodfellow et al.): z 64 -> 256 -> 512 -> 784, ReLU, Tanh."""
    b = _Builder(10)
    h = b.gemm("z", 64, 256, "Relu")
    h = b.gemm(h, 256, 512, "Relu")
    return b.model([("z", [64])], b.gemm(h, 512, 784, "Tanh"))


def mlp_discriminator():
    """MLP GAN discriminator: 784 -> 1024 -> 512 -> 256 -> 1, LeakyReLU, Sigmoid."""
    b = _Builder(11)
    h = "x"
    for cin, cout in ((784, 1024), (1024, 512), (512, 256)):
        h = b.gemm(h, cin, cout, "LeakyRelu")
    return b.model([("x", [784])], b.gemm(h, 256, 1, "Sigmoid"))


def dcgan_mnist_generator():
    """MNIST-style DCGAN generator with a Linear start: Gemm 64 -> 128x7x7, ReLU, view,
    ConvT 128->64 (14x14), BN, ReLU, ConvT 64->1 (28x28), Tanh."""
    b = _Builder(12)
    h = b.reshape(b.gemm("z", 64, 128 * 7 * 7, "Relu"), [128, 7, 7])
    h = b.convt(h, 128, 64, act="Relu", bn=True)
    return b.model([("z", [64])], b.convt(h, 64, 1, act="Tanh"))


def conditional_generator():
    """Conditional generator (cGAN): a one-hot class through a Linear embedding (10 -> 16)
    concatenated to the latent (64), Linear 80 -> 128x4x4, then ConvT to 32x32x3."""
    b = _Builder(13)
    embedding = b.gemm("label", 10, 16)
    h = b.op("Concat", ["z", embedding], axis=1)
    h = b.reshape(b.gemm(h, 80, 128 * 4 * 4, "Relu"), [128, 4, 4])
    h = b.convt(h, 128, 64, act="Relu", bn=True)
    h = b.convt(h, 64, 32, act="Relu", bn=True)
    return b.model([("z", [64]), ("label", [10])], b.convt(h, 32, 3, act="Tanh"))


def upsample_conv_generator():
    """Resize-convolution generator (Odena et al.): z 32 -> ConvT (k8) to 8x8x8, then twice
    nearest upsampling x2 and a 3x3 convolution, 8 channels, to 32x32x3."""
    b = _Builder(14)
    h = b.convt("z", 32, 8, k=8, stride=1, pad=0, act="Relu", bn=True)
    h = b.conv(b.upsample(h), 8, 8, act="Relu")
    return b.model([("z", [32, 1, 1])], b.conv(b.upsample(h), 8, 3, act="Tanh"))


def pixel_shuffle_generator():
    """Sub-pixel generator (ESPCN, Shi et al.): Linear 32 -> 32x8x8, 3x3 conv to 64 channels,
    DepthToSpace 2, 3x3 conv to 12, Tanh, DepthToSpace 2: 32x32x3."""
    b = _Builder(15)
    h = b.reshape(b.gemm("z", 32, 32 * 8 * 8, "Relu"), [32, 8, 8])
    h = b.op("DepthToSpace", [b.conv(h, 32, 64, act="Relu")], blocksize=2, mode="CRD")
    h = b.conv(h, 16, 12, act="Tanh")
    return b.model([("z", [32])], b.op("DepthToSpace", [h], blocksize=2, mode="CRD"))


def unet_generator():
    """Small U-Net generator (pix2pix, Isola et al.): 3x32x32 -> two stride-2 convolutions
    (16, 32 channels, LeakyReLU) -> ConvT back with the skip concatenated -> 3x32x32, Tanh."""
    b = _Builder(16)
    e1 = b.conv("x", 3, 16, k=4, stride=2, act="LeakyRelu")
    e2 = b.conv(e1, 16, 32, k=4, stride=2, act="LeakyRelu", bn=True)
    d1 = b.convt(e2, 32, 16, act="Relu", bn=True)
    h = b.op("Concat", [d1, e1], axis=1)
    return b.model([("x", [3, 32, 32])], b.convt(h, 32, 3, act="Tanh"))


def resnet_generator():
    """ResNet-style generator (CycleGAN, Zhu et al.; narrowed): 3x3 conv to 16 channels, two
    residual blocks (conv, ReLU, conv, add), 3x3 conv to 3, Tanh; 3x24x24."""
    b = _Builder(17)
    h = b.conv("x", 3, 16, act="Relu")
    for _ in range(2):
        r = b.conv(b.conv(h, 16, 16, act="Relu"), 16, 16)
        h = b.op("Add", [h, r])
    return b.model([("x", [3, 24, 24])], b.conv(h, 16, 3, act="Tanh"))


def narrow_generator():
    """A narrow DCGAN generator: z 16 -> ConvT to 8x4x4, 4x8x8, 2x16x16, 1x32x32."""
    b = _Builder(18)
    h = b.convt("z", 16, 8, stride=1, pad=0, act="Relu", bn=True)
    for cin, cout in ((8, 4), (4, 2)):
        h = b.convt(h, cin, cout, act="Relu", bn=True)
    return b.model([("z", [16, 1, 1])], b.convt(h, 2, 1, act="Tanh"))


def wide_generator():
    """A wide DCGAN generator: z 64 -> ConvT to 256x4x4, 128x8x8, 3x16x16."""
    b = _Builder(19)
    h = b.convt("z", 64, 256, stride=1, pad=0, act="Relu", bn=True)
    h = b.convt(h, 256, 128, act="Relu", bn=True)
    return b.model([("z", [64, 1, 1])], b.convt(h, 128, 3, act="Tanh"))


def dcgan_discriminator_small():
    """A DCGAN discriminator for 3x32x32: stride-2 4x4 convolutions to 32, 64, 128 channels
    (LeakyReLU, BN), then a 4x4 convolution to one logit, Sigmoid."""
    b = _Builder(20)
    h = b.conv("x", 3, 32, k=4, stride=2, act="LeakyRelu")
    for cin, cout in ((32, 64), (64, 128)):
        h = b.conv(h, cin, cout, k=4, stride=2, act="LeakyRelu", bn=True)
    return b.model([("x", [3, 32, 32])], b.conv(h, 128, 1, k=4, pad=0, act="Sigmoid"))


def _example(name):
    return lambda: onnx.load(str(EXAMPLES / f"{name}.onnx"))


@dataclass(frozen=True)
class ZooModel:
    name: str
    build: object
    what: str


#: The zoo, in table order.
MODELS = (
    ZooModel("mlp_g", mlp_generator, "MLP GAN generator"),
    ZooModel("mlp_d", mlp_discriminator, "MLP GAN discriminator 784-1024-512-256-1"),
    ZooModel("dcgan_mnist_g", dcgan_mnist_generator, "DCGAN generator, Linear start"),
    ZooModel("cgan_g", conditional_generator, "conditional generator (class embedding)"),
    ZooModel("upconv_g", upsample_conv_generator, "nearest upsample + 3x3 conv"),
    ZooModel("espcn_g", pixel_shuffle_generator, "pixel shuffle (DepthToSpace)"),
    ZooModel("unet_g", unet_generator, "small U-Net"),
    ZooModel("resnet_g", resnet_generator, "ResNet blocks"),
    ZooModel("narrow_g", narrow_generator, "narrow DCGAN (8..1 channels)"),
    ZooModel("wide_g", wide_generator, "wide DCGAN (256..3 channels)"),
    ZooModel("dcgan32_d", dcgan_discriminator_small, "DCGAN discriminator 32x32"),
    ZooModel("digits_g", _example("digits/generator"), "examples/digits generator (demo)"),
    ZooModel("digits_d", _example("digits/discriminator"), "examples/digits discriminator"),
    ZooModel("dcgan64_g", _example("dcgan64/generator"), "examples/dcgan64 generator"),
    ZooModel("dcgan64_d", _example("dcgan64/discriminator"), "examples/dcgan64 discriminator"),
)
BY_NAME = {m.name: m for m in MODELS}


# --- measuring ----------------------------------------------------------------------------

@functools.cache
def model_macs(name):
    """Useful MACs of zoo model ``name`` as imported, before any float pass."""
    return macs.total(macs.graph_macs(import_model(BY_NAME[name].build()))).useful


@functools.cache
def quantized(name, samples=1):
    """``(qgraph, int8 inputs of samples frames)`` of zoo model ``name`` (calibrated on 64
    generated samples, seed 0; the frames are seed 1's first samples)."""
    graph = passes.run_passes(import_model(BY_NAME[name].build()))
    qgraph = ir.verify(quant.quantize(graph, quant.calibrate(graph, default_calibration(graph))),
                       quantized=True)
    test = default_calibration(graph, samples=samples, seed=1)
    return qgraph, {n: golden.quantize_input(v, ir.node(qgraph, n).scale)
                    for n, v in test.items()}


def memory_bound(program):
    """Cycles to move each constant, micro-program, input and output byte of the image once."""
    regions = program.layout["regions"]
    moved = sum(regions[r][1] for r in ("constants", "uops", "inputs", "outputs")
                if r in regions)
    return moved / program.config.axi_bytes


def _why(row, schedule, config):
    """A layer's figures that say where its cycles go."""
    busy = sum(1 for steps in schedule["mac_steps"] if steps)
    steps = max(schedule["mac_steps"], default=0)
    parts = [f"{row['cycles']:,} cyc vs {row['compute_bound_cycles']:,.0f}",
             f"lanes {schedule['lanes_per_tile']}/{config.lanes}",
             f"groups {busy}/{config.groups}", f"{schedule['runs']} RUNs",
             f"busiest group {steps:,} MAC steps",
             f"DMA {row['dram_bytes'] / config.axi_bytes:,.0f} cyc"]
    if row["op"] == "Copy":
        parts.insert(0, "copy")
    return ", ".join(parts)


def measure(name, target="sim", check=True, batch=1):
    """Figures of zoo model ``name`` on ``target`` (a dict), or ``{"refused": why}`` when the
    target cannot hold it. ``check``: the simulator's output must equal the golden model's.
    ``batch``: a program of that many frames (``compile --batch``), run once on as many
    samples; cycles and bounds are per frame."""
    config = preset(target)
    qgraph, inputs = quantized(name, batch)
    try:
        program = lower_quickest(qgraph, config, batch=batch)
    except FlexiganError as exc:
        return {"refused": str(exc)}
    outputs, report = isa_sim.simulate(program, inputs, sparse=False)
    if check:
        expected = golden.run_int(qgraph, inputs)
        for out in qgraph.graph["outputs"]:
            np.testing.assert_array_equal(outputs[out], expected[out])
    useful, memory = model_macs(name), memory_bound(program) / batch
    compute = useful / config.total_lanes
    cycles = report["cycles_per_frame"]
    worst = max(zip(report["layers"], program.layout["layers"]),
                key=lambda pair: pair[0]["cycles"] - pair[0]["compute_bound_cycles"])
    why = _why(worst[0], worst[1], config)
    lowered = report["macs_useful"] // batch
    x_lowered = cycles / max(report["compute_bound_cycles"] / batch, memory, 1)
    if lowered != useful:
        why += f" (folded: {lowered:,} MACs, {x_lowered:.2f} x their bound)"
    return {"macs": useful, "cycles": cycles, "compute": compute, "memory": memory,
            "x_bound": cycles / max(compute, memory, 1),
            "macs_lowered": lowered, "x_bound_lowered": x_lowered,
            "utilization": useful / (cycles * config.total_lanes),
            "worst": worst[0]["name"], "why": why}


def _batched(name, target, batch_1):
    """The batch column: cycles per frame of a :data:`BATCH`-frame program and their ratio to
    max(compute, memory bound) per frame, for a model memory bound at batch 1 (batching does
    not help the others); "-" for the others, "refused" when the frames do not fit."""
    if batch_1["memory"] <= batch_1["compute"]:
        return "-"
    m = measure(name, target, batch=BATCH)
    return "refused" if "refused" in m else f"{m['cycles']:,.0f} ({m['x_bound']:.2f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--models", default=",".join(BY_NAME))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print(f"{'model':14} {'target':10} {'MACs':>11} {'cycles':>10} {'compute':>9} "
          f"{'memory':>9} {'x bound':>7} {'util':>6} {f'batch {BATCH}':>15}  worst layer: why")
    for name in args.models.split(","):
        for target in args.targets.split(","):
            m = measure(name, target)
            if "refused" in m:
                print(f"{name:14} {target:10} refused: {m['refused']}", flush=True)
                continue
            print(f"{name:14} {target:10} {m['macs']:11,} {m['cycles']:10,.0f} "
                  f"{m['compute']:9,.0f} {m['memory']:9,.0f} {m['x_bound']:7.2f} "
                  f"{m['utilization']:6.1%} {_batched(name, target, m):>15}  "
                  f"{m['worst']}: {m['why']}", flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
