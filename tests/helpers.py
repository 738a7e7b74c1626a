"""What the tests share: small ONNX model builders, the quantize-and-compare steps, configs.

Test modules import from here (and from tests/hw/streams.py, tests/hw/amaranth_axi.py), never
from one another.
"""

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from flexigan.compiler import ir, passes, quant
from flexigan.compiler.lower import lower
from flexigan.compiler.onnx_import import import_model
from flexigan.flow import default_calibration
from flexigan.hw.arch.config import AcceleratorConfig, preset
from flexigan.sim import golden, isa_sim

SIM = preset("sim")

#: A machine small enough that small test models need stages, spills, per-segment weight
#: tiles and fewer lanes per tile; three groups so the work does not divide evenly.
TINY = AcceleratorConfig(groups=3, lanes=4, act_banks=2, act_bank_bytes=1024, weight_bytes=384,
                         param_entries=16, uop_depth=24, axi_data_width=32, mem_latency=4,
                         burst_bytes=64)


class RecordingPort:
    """A serial port for :class:`flexigan.host.BridgeClient`: keeps what is written in
    ``sent`` and answers reads from ``replies``."""

    def __init__(self, replies=b""):
        self.sent, self.replies = bytearray(), bytearray(replies)

    def write(self, data):
        self.sent += data
        return len(data)

    def read(self, n):
        data = bytes(self.replies[:n])
        del self.replies[:n]
        return data


def requant_oracle(value, multiplier, shift, offset=0):
    """docs/numerics.md's requantization of one integer, in Python integers: the test oracle
    of every layer (golden, ISA simulator, RTL post-processor), kept independent of
    :mod:`flexigan.hw.arch.numerics`. Works element-wise on numpy integer arrays too."""
    v = value * multiplier + offset
    v = (v + ((1 << shift) >> 1)) >> shift
    return max(-128, min(127, v)) if isinstance(v, int) else np.clip(v, -128, 127)

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples"


def make_model(nodes, inputs, outputs, initializers=(), opset=17):
    """A checked ONNX model from helper-made nodes, ``(name, shape)`` inputs/outputs (float)
    and ``{name: array}`` initializers (integer arrays become int64)."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(_typed(v), n) for n, v in dict(initializers).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _typed(value):
    """Integer arrays keep int64 (shapes, axes); everything else is float32."""
    value = np.asarray(value)
    return value.astype(np.int64) if value.dtype.kind in "iu" else value.astype(np.float32)


def save(model, path):
    onnx.save(model, str(path))
    return path


def tiny_generator(seed=0):
    """z (N, 4, 1, 1) -> ConvT 4->8 k2 -> BN -> ReLU -> ConvT 8->2 k3 s2 p1 op1 -> Tanh."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("ConvTranspose", ["z", "w1"], ["c1"], kernel_shape=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("ConvTranspose", ["r1", "w2", "b2"], ["c2"], strides=[2, 2],
                         pads=[1, 1, 1, 1], output_padding=[1, 1], kernel_shape=[3, 3]),
        helper.make_node("Tanh", ["c2"], ["image"]),
    ]
    inits = {"w1": rng.normal(0, 0.5, (4, 8, 2, 2)), "g": rng.uniform(0.5, 1.5, 8),
             "b": rng.normal(0, 0.1, 8), "m": rng.normal(0, 0.2, 8),
             "v": rng.uniform(0.5, 2, 8), "w2": rng.normal(0, 0.3, (8, 2, 3, 3)),
             "b2": rng.normal(0, 0.1, 2)}
    return make_model(nodes, [("z", ["N", 4, 1, 1])], [("image", ["N", 2, 4, 4])], inits)


def quantized(model, samples=16, float_passes=passes.FLOAT_PASSES, reorder=True):
    """The quantized IR of ``model`` (path or ModelProto) after ``float_passes`` (for the
    zero-free lowering, or the conventional baseline when not ``reorder``), and int8 test
    inputs."""
    graph = passes.run_passes(import_model(model), float_passes, reorder)
    feeds = default_calibration(graph, samples=samples, seed=0)
    qgraph = ir.verify(quant.quantize(graph, quant.calibrate(graph, feeds)), quantized=True)
    test = default_calibration(graph, samples=2, seed=1)
    return qgraph, {n: golden.quantize_input(v, ir.node(qgraph, n).scale)
                    for n, v in test.items()}


def check_bit_exact(qgraph, inputs, config=SIM, reorder=True, sparse=True, batch=1):
    """Lower (a program of ``batch`` frames), simulate and compare every output with the
    golden interpreter, sample by sample."""
    program = lower(qgraph, config, reorder, batch)
    outputs, report = isa_sim.simulate(program, inputs, sparse=sparse)
    expected = golden.run_int(qgraph, inputs)
    for name in qgraph.graph["outputs"]:
        np.testing.assert_array_equal(outputs[name], expected[name])
    return program, report


def convt_model(cin, cout, hw, kernel, name="y", act="Relu", **attrs):
    rng = np.random.default_rng(3)
    group = attrs.get("group", 1)
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], kernel_shape=kernel,
                              **attrs)]
    out = "t"
    if act:
        nodes.append(helper.make_node(act, ["t"], [name]))
        out = name
    inits = {"w": rng.normal(0, 0.3, (cin, cout // group, *kernel)),
             "b": rng.normal(0, 0.1, cout)}
    return make_model(nodes, [("x", ["N", cin, *hw])], [(out, ["N", "c", "h", "w"])], inits)


def conv_model(cin, cout, hw, kernel, act="LeakyRelu", **attrs):
    rng = np.random.default_rng(4)
    group = attrs.get("group", 1)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=kernel, **attrs),
             helper.make_node(act, ["c"], ["y"])]
    inits = {"w": rng.normal(0, 0.3, (cout, cin // group, *kernel)),
             "b": rng.normal(0, 0.1, cout)}
    return make_model(nodes, [("x", ["N", cin, *hw])], [("y", ["N", "c", "h", "w"])], inits)


def project_and_reshape_model():
    """z -> Gemm -> ReLU -> Reshape (C, 4, 4) -> ConvT k4 s2 p1 -> Flatten -> Gemm -> Sigmoid:
    a vector reshaped to an image, and an image flattened into a Gemm (CHW order)."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Gemm", ["z", "w1", "b1"], ["p"], transB=1),
        helper.make_node("Relu", ["p"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["img"]),
        helper.make_node("ConvTranspose", ["img", "w2"], ["t"], kernel_shape=[4, 4],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["t"], ["tr"]),
        helper.make_node("Flatten", ["tr"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w3"], ["s"], transB=1),
        helper.make_node("Sigmoid", ["s"], ["y"]),
    ]
    inits = {"w1": rng.normal(0, 0.3, (6 * 16, 10)), "b1": rng.normal(0, 0.1, 6 * 16),
             "shape": np.array([-1, 6, 4, 4]), "w2": rng.normal(0, 0.3, (6, 2, 4, 4)),
             "w3": rng.normal(0, 0.1, (3, 2 * 8 * 8))}
    return make_model(nodes, [("z", ["N", 10])], [("y", ["N", "c", "h", "w"])], inits)


def dense_relu_model(inputs, outputs):
    """x (N, inputs) -> Gemm -> ReLU: a vector layer alone."""
    rng = np.random.default_rng(7)
    inits = {"w1": rng.normal(0, 0.2, (outputs, inputs)), "b1": rng.normal(0, 0.1, outputs)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["g1"], transB=1),
             helper.make_node("Relu", ["g1"], ["y"])]
    return make_model(nodes, [("x", ["N", inputs])], [("y", ["N", outputs])], inits)


def prelu_conv1d_model():
    """A 1-D convolution (imported as 2-D with reshapes) followed by a per-channel PReLU."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["t"], kernel_shape=[3], strides=[2],
                              pads=[1, 0]),
             helper.make_node("PRelu", ["t", "slope"], ["y"])]
    inits = {"w": rng.normal(0, 0.4, (4, 6, 3)), "slope": rng.uniform(0, 0.5, (6, 1))}
    return make_model(nodes, [("x", ["N", 4, 7])], [("y", ["N", "c", "h", "w"])], inits)


def concat_model(skip_input=False, unet=False):
    """Channel concatenations (the skip connections of U-Net generators):

    * default: x -> conv a -> ReLU, x -> conv b -> ReLU, Concat(a, b) -> conv;
    * ``skip_input``: Concat(x, conv(x) -> ReLU) -> conv (a model input in the concat);
    * ``unet``: e = conv(x) -> ReLU, d = conv(e) -> LeakyReLU, Concat(d, e) -> conv (e is
      also read by the next conv), and Concat of that with x (nested) -> conv.
    """
    rng = np.random.default_rng(7)
    conv = functools.partial(helper.make_node, "Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    inits = {}

    def weights(name, cout, cin, scale=0.3):
        inits[f"w{name}"] = rng.normal(0, scale, (cout, cin, 3, 3))
        inits[f"b{name}"] = rng.normal(0, 0.1, cout)
        return [f"w{name}", f"b{name}"]

    if skip_input:
        nodes = [conv(["x", *weights("a", 3, 2)], ["ca"]), helper.make_node("Relu", ["ca"], ["a"]),
                 helper.make_node("Concat", ["x", "a"], ["cat"], axis=1),
                 conv(["cat", *weights("o", 4, 5)], ["y"])]
    elif unet:
        nodes = [conv(["x", *weights("e", 3, 2)], ["ce"]), helper.make_node("Relu", ["ce"], ["e"]),
                 conv(["e", *weights("d", 5, 3, 1.0)], ["cd"]),
                 helper.make_node("LeakyRelu", ["cd"], ["d"], alpha=0.2),
                 helper.make_node("Concat", ["d", "e"], ["cat"], axis=1),
                 helper.make_node("Concat", ["cat", "x"], ["cat2"], axis=1),
                 conv(["cat2", *weights("o", 4, 10)], ["y"])]
    else:
        nodes = [conv(["x", *weights("a", 3, 2)], ["ca"]), helper.make_node("Relu", ["ca"], ["a"]),
                 conv(["x", *weights("b", 5, 2, 1.0)], ["cb"]),
                 helper.make_node("Relu", ["cb"], ["b"]),
                 helper.make_node("Concat", ["a", "b"], ["cat"], axis=1),
                 conv(["cat", *weights("o", 4, 8)], ["y"])]
    return make_model(nodes, [("x", ["N", 2, 6, 5])], [("y", ["N", "c", "h", "w"])], inits)


def residual_model(kind):
    """Residual Adds (the skip connections of ResNet generators), 3x3 convs with pads 1:

    * ``block``: h = ReLU(conv x); s = h + conv(ReLU(conv h)); y = conv(ReLU(s)) (the Add's
      ReLU fused; h also read by the block's first conv);
    * ``scales``: y = conv_a(x) + conv_b(x), weights 0.3 and 1.5 (inputs of very different
      scales; the Add writes the model output), 8 x 12 x 10: on the tiny machine the operands
      do not fit next to the Add's output, and spill;
    * ``input skip, two blocks``: s1 = x + block(x) (a model input in the Add),
      s2 = s1 + block(s1) (an Add's output in the next Add), y = Tanh(s2);
    * ``self``: h = ReLU(conv x); y = conv(h + h) (one value added to itself);
    * ``input twice``: y = conv(ReLU(x + x)) (the model input added to itself);
    * ``into concat``: s = ReLU(conv x) + conv x; y = conv(Concat(s, conv_d x)), conv_d's
      weights 1.5 (an Add's output in a Concat of a larger scale: requantized by its LUT).
    """
    rng = np.random.default_rng(8)
    conv = functools.partial(helper.make_node, "Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    inits = {}
    c, hw = (8, [12, 10]) if kind == "scales" else (4, [6, 5])

    def weights(name, cout, cin, scale=0.3):
        inits[f"w{name}"] = rng.normal(0, scale, (cout, cin, 3, 3))
        inits[f"b{name}"] = rng.normal(0, 0.1, cout)
        return [f"w{name}", f"b{name}"]

    def node(op, inputs, output, **attrs):
        return helper.make_node(op, inputs, [output], **attrs)

    def block(x, name):
        return [conv([x, *weights(f"{name}1", c, c)], [f"{name}c1"]),
                node("Relu", [f"{name}c1"], f"{name}r"),
                conv([f"{name}r", *weights(f"{name}2", c, c)], [f"{name}c2"])]

    if kind == "block":
        nodes = [conv(["x", *weights("0", c, c)], ["c0"]), node("Relu", ["c0"], "h"),
                 *block("h", "b"), node("Add", ["h", "bc2"], "s"), node("Relu", ["s"], "sr"),
                 conv(["sr", *weights("3", 3, c)], ["y"])]
    elif kind == "scales":
        nodes = [conv(["x", *weights("a", c, c)], ["a"]),
                 conv(["x", *weights("b", c, c, 1.5)], ["b"]), node("Add", ["a", "b"], "y")]
    elif kind == "input skip, two blocks":
        nodes = [*block("x", "p"), node("Add", ["x", "pc2"], "s1"),
                 *block("s1", "q"), node("Add", ["s1", "qc2"], "s2"), node("Tanh", ["s2"], "y")]
    elif kind == "self":
        nodes = [conv(["x", *weights("0", c, c)], ["c0"]), node("Relu", ["c0"], "h"),
                 node("Add", ["h", "h"], "s"), conv(["s", *weights("1", 3, c)], ["y"])]
    elif kind == "input twice":
        nodes = [node("Add", ["x", "x"], "s"), node("Relu", ["s"], "r"),
                 conv(["r", *weights("1", 3, c)], ["y"])]
    else:
        nodes = [conv(["x", *weights("a", c, c)], ["ca"]), node("Relu", ["ca"], "a"),
                 conv(["x", *weights("b", c, c)], ["b"]), node("Add", ["a", "b"], "s"),
                 conv(["x", *weights("d", c, c, 1.5)], ["d"]),
                 node("Concat", ["s", "d"], "cat", axis=1),
                 conv(["cat", *weights("o", 3, 2 * c)], ["y"])]
    return make_model(nodes, [("x", ["N", c, *hw])], [("y", ["N", "c", "h", "w"])], inits)


def pad_model(kind):
    """Pads before a convolution (the reflection padding of CycleGAN's ResNet generators), 3
    channels of 6 x 5 after a 3x3 conv -> ReLU unless said:

    * ``reflect 1`` / ``reflect 3``: reflect pads 1 on every side, and (3, 2, 1, 3);
    * ``edge``: edge pads (2, 1, 1, 2);
    * ``zero``: constant 0 pads (1, 2, 2, 1), before a conv with pads of its own;
    * ``constant``: constant 0.5 pads (1, 2, 2, 1);
    * ``input``: reflect 3 of the model input, then a 7x7 conv (CycleGAN's first layer);
    * ``zero output``: constant 0 pads (1, 1, 0, 2) of the ReLU, the model output.
    Pads are ``(top, left, bottom, right)``.
    """
    rng = np.random.default_rng(10)
    mode, pads, value, kernel = {
        "reflect 1": ("reflect", (1, 1, 1, 1), 0.0, 3),
        "reflect 3": ("reflect", (3, 2, 1, 3), 0.0, 3),
        "edge": ("edge", (2, 1, 1, 2), 0.0, 3),
        "zero": ("constant", (1, 2, 2, 1), 0.0, 3),
        "constant": ("constant", (1, 2, 2, 1), 0.5, 3),
        "input": ("reflect", (3, 3, 3, 3), 0.0, 7),
        "zero output": ("constant", (1, 1, 0, 2), 0.0, 3),
    }[kind]
    inits = {"w0": rng.normal(0, 0.3, (3, 2, 3, 3)), "b0": rng.normal(0, 0.1, 3),
             "p": np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]),
             "v": np.array(value, dtype=np.float32),
             "w": rng.normal(0, 0.3, (4, 2 if kind == "input" else 3, kernel, kernel)),
             "b": rng.normal(0, 0.1, 4)}
    head = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3],
                             pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c0"], ["r0"])]
    padded = "x" if kind == "input" else "r0"
    nodes = [*([] if kind == "input" else head),
             helper.make_node("Pad", [padded, "p", "v"], ["pd" if kind != "zero output" else
                                                          "y"], mode=mode)]
    if kind != "zero output":
        nodes.append(helper.make_node("Conv", ["pd", "w", "b"], ["y"],
                                      kernel_shape=[kernel, kernel],
                                      pads=[1, 1, 1, 1] if kind == "zero" else [0, 0, 0, 0]))
    return make_model(nodes, [("x", ["N", 2, 6, 5])], [("y", ["N", "c", "h", "w"])], inits)


def lut_model(kind):
    """Standalone activations (not the only reader of a Conv, ConvTranspose, Gemm or Add):
    LUT passes. 3x3 convs with pads 1 on a 4-channel 6 x 5 input:

    * ``concat``: LeakyReLU of Concat(ReLU(conv x), ReLU(conv x)) -> conv (U-Net's down path);
    * ``skip``: h = conv x; y = h + conv(Tanh h) (h also read by the skip);
    * ``residual``: s = x + conv x; y = s + conv(ReLU s) (an Add read twice);
    * ``input``: conv(ReLU x) (the model input);
    * ``prelu``: per-channel PReLU of Concat(conv x, x) -> conv;
    * ``reflect``: h = conv x; y = h + conv(reflect pad 1 (LeakyReLU h)), the conv without
      pads (a CycleGAN residual block's padding; the LUT pass writes the pad's interior).
    """
    rng = np.random.default_rng(11)
    conv = functools.partial(helper.make_node, "Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    inits = {}
    c = 4

    def weights(name, cout, cin):
        inits[f"w{name}"] = rng.normal(0, 0.3, (cout, cin, 3, 3))
        inits[f"b{name}"] = rng.normal(0, 0.1, cout)
        return [f"w{name}", f"b{name}"]

    def node(op, inputs, output, **attrs):
        return helper.make_node(op, inputs, [output], **attrs)

    if kind == "concat":
        nodes = [conv(["x", *weights("a", 3, c)], ["ca"]), node("Relu", ["ca"], "a"),
                 conv(["x", *weights("b", 5, c)], ["cb"]), node("Relu", ["cb"], "b"),
                 node("Concat", ["a", "b"], "cat", axis=1),
                 node("LeakyRelu", ["cat"], "l", alpha=0.2),
                 conv(["l", *weights("o", 3, 8)], ["y"])]
    elif kind == "skip":
        nodes = [conv(["x", *weights("h", c, c)], ["h"]), node("Tanh", ["h"], "t"),
                 conv(["t", *weights("u", c, c)], ["u"]), node("Add", ["h", "u"], "y")]
    elif kind == "residual":
        nodes = [conv(["x", *weights("h", c, c)], ["h"]), node("Add", ["x", "h"], "s"),
                 node("Relu", ["s"], "r"), conv(["r", *weights("u", c, c)], ["u"]),
                 node("Add", ["s", "u"], "y")]
    elif kind == "input":
        nodes = [node("Relu", ["x"], "r"), conv(["r", *weights("o", 3, c)], ["y"])]
    elif kind == "reflect":
        inits["pads"] = np.array([0, 0, 1, 1, 0, 0, 1, 1])
        nodes = [conv(["x", *weights("h", c, c)], ["h"]),
                 node("LeakyRelu", ["h"], "l", alpha=0.2),
                 node("Pad", ["l", "pads"], "p", mode="reflect"),
                 helper.make_node("Conv", ["p", *weights("u", c, c)], ["u"],
                                  kernel_shape=[3, 3]),
                 node("Add", ["h", "u"], "y")]
    else:
        inits["slope"] = rng.uniform(0, 0.5, (2 * c, 1, 1))
        nodes = [conv(["x", *weights("a", c, c)], ["a"]), node("Concat", ["a", "x"], "cat",
                                                              axis=1),
                 node("PRelu", ["cat", "slope"], "p"), conv(["p", *weights("o", 3, 2 * c)],
                                                            ["y"])]
    return make_model(nodes, [("x", ["N", c, 6, 5])], [("y", ["N", "c", "h", "w"])], inits)


def unet_model(levels=3, ngf=4, size=16):
    """A pix2pix-style U-Net of ``levels`` skip blocks on a 3-channel ``size`` x ``size``
    image (examples/pix2pix at a toy size, no BatchNorm): down, LeakyReLU(0.2) -> Conv 4x4 s2
    p1 (the outermost: the Conv alone); up, ReLU -> ConvTranspose 4x4 s2 p1, its result
    concatenated after the block's input (the outermost: Tanh, no concatenation). The
    LeakyReLUs of the skips' sources and the ReLUs of the concatenations are standalone."""
    rng = np.random.default_rng(12)
    nodes, inits = [], {}
    channels = [3] + [ngf * 2 ** min(k, 3) for k in range(levels)]

    def layer(op, x, cin, cout, name):
        shape = (cin, cout, 4, 4) if op == "ConvTranspose" else (cout, cin, 4, 4)
        inits[f"w{name}"] = rng.normal(0, 0.2, shape)
        inits[f"b{name}"] = rng.normal(0, 0.1, cout)
        nodes.append(helper.make_node(op, [x, f"w{name}", f"b{name}"], [name],
                                      kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1]))
        return name

    skips, x = [], "x"
    for k in range(levels):
        if k:
            nodes.append(helper.make_node("LeakyRelu", [x], [f"l{k}"], alpha=0.2))
            x = f"l{k}"
        x = layer("Conv", x, channels[k], channels[k + 1], f"d{k}")
        skips.append(x)
    for k in reversed(range(levels)):
        nodes.append(helper.make_node("Relu", [x], [f"r{k}"]))
        inner = channels[k + 1] * (1 if k == levels - 1 else 2)
        x = layer("ConvTranspose", f"r{k}", inner, channels[k], f"u{k}")
        if k:
            nodes.append(helper.make_node("Concat", [skips[k - 1], x], [f"cat{k}"], axis=1))
            x = f"cat{k}"
    nodes.append(helper.make_node("Tanh", [x], ["y"]))
    return make_model(nodes, [("x", ["N", 3, size, size])], [("y", ["N", 3, size, size])],
                      inits)


def spread_model(kind):
    """Nearest upsampling and depth-to-space (the resize-conv and sub-pixel blocks of
    generators), 3x3 convs with pads 1:

    * ``resize``: conv -> ReLU -> Resize nearest x2 -> conv -> LeakyReLU;
    * ``resize 3x2``: the same by (3, 2);
    * ``resize output``: conv -> ReLU -> Resize x2, the model output;
    * ``large ...``: the case on a 12 x 10 input (stages and spills on the tiny machine);
    * ``input``: the model input resized x2 -> conv;
    * ``shared``: conv -> ReLU, read by a Resize x2 -> conv and by a 1x1 conv (added);
    * ``DCR`` / ``CRD``: conv (8 channels) -> ReLU -> DepthToSpace 2 -> conv;
    * ``input CRD``: DepthToSpace of the model input -> conv.
    """
    rng = np.random.default_rng(9)
    hw = [5, 4]
    if kind.startswith("large "):
        kind, hw = kind[len("large "):], [12, 10]
    conv = functools.partial(helper.make_node, "Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    inits = {}

    def weights(name, cout, cin, k=3):
        inits[f"w{name}"] = rng.normal(0, 0.3, (cout, cin, k, k))
        inits[f"b{name}"] = rng.normal(0, 0.1, cout)
        return [f"w{name}", f"b{name}"]

    def resize(x, y, factors=(2.0, 2.0)):
        inits[f"s{y}"] = np.array([1.0, 1.0, *factors])
        return helper.make_node("Resize", [x, "", f"s{y}"], [y], mode="nearest",
                                coordinate_transformation_mode="asymmetric",
                                nearest_mode="floor")

    cin = 8 if kind == "input CRD" else 3
    tail = [conv(["u", *weights("o", 4, 2 if kind == "input CRD" else 5)], ["co"]),
            helper.make_node("LeakyRelu", ["co"], ["y"], alpha=0.2)]
    if kind == "resize output":
        head, tail = [conv(["x", *weights("a", 5, cin)], ["ca"]),
                      helper.make_node("Relu", ["ca"], ["a"])], [resize("a", "y")]
    elif kind in ("resize", "resize 3x2", "shared"):
        head = [conv(["x", *weights("a", 5, cin)], ["ca"]),
                helper.make_node("Relu", ["ca"], ["a"])]
        head.append(resize("a", "u", (3.0, 2.0) if kind == "resize 3x2" else (2.0, 2.0)))
        if kind == "shared":
            tail = [conv(["u", *weights("o", 4, 5)], ["co"]),
                    helper.make_node("Conv", ["a", *weights("p", 4, 5, 1)], ["cp"],
                                     kernel_shape=[1, 1]),
                    resize("cp", "up"),
                    helper.make_node("Add", ["co", "up"], ["y"])]
    elif kind == "input":
        head = [resize("x", "u")]
        tail = [conv(["u", *weights("o", 4, cin)], ["co"]),
                helper.make_node("LeakyRelu", ["co"], ["y"], alpha=0.2)]
    elif kind in ("DCR", "CRD"):
        head = [conv(["x", *weights("a", 20, cin)], ["ca"]),
                helper.make_node("Relu", ["ca"], ["a"]),
                helper.make_node("DepthToSpace", ["a"], ["u"], blocksize=2, mode=kind)]
    else:
        head = [helper.make_node("DepthToSpace", ["x"], ["u"], blocksize=2, mode="CRD")]
    return make_model(head + tail, [("x", ["N", cin, *hw])], [("y", ["N", "c", "h", "w"])],
                      inits)


def norm_model(channels=6, hw=(12, 12), act="Relu", affine=True, residual=False, seed=0,
               conv=True, tail=1):
    """Conv 3x3 (unless not ``conv``: the model input) -> InstanceNorm -> ``act`` (-> + input)
    -> Conv ``tail x tail`` to 3 channels: a CycleGAN block's parts."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("InstanceNormalization", ["c", "g", "k"], ["n"], epsilon=1e-5)]
    if not conv:
        nodes = [helper.make_node("InstanceNormalization", ["x", "g", "k"], ["n"],
                                  epsilon=1e-5)]
    last = "n"
    if act:
        nodes.append(helper.make_node(act, ["n"], ["a"]))
        last = "a"
    if residual:
        nodes.append(helper.make_node("Add", [last, "x"], ["s"]))
        last = "s"
    nodes.append(helper.make_node("Conv", [last, "w2"], ["y"], kernel_shape=[tail, tail],
                                  pads=[tail // 2] * 4))
    gamma = rng.uniform(0.5, 2.0, channels) * rng.choice([-1, 1], channels) if affine \
        else np.ones(channels)
    beta = rng.normal(0, 0.5, channels) if affine else np.zeros(channels)
    weights = {"w": rng.normal(0, 0.3, (channels, channels, 3, 3)),
               "b": rng.normal(0, 0.5, channels)} if conv else {}
    return make_model(nodes, [("x", ["N", channels, *hw])], [("y", ["N", 3, *hw])],
                      {**weights, "g": gamma, "k": beta,
                       "w2": rng.normal(0, 0.3, (3, channels, tail, tail))})
