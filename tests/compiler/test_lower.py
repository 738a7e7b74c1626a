"""The back end: every lowered program runs bit-exact with the golden interpreter.

Each case builds a small ONNX model, quantizes it, lowers it (zero-free and conventional, on
the ``sim`` preset and on a tiny machine that forces stages, spills, per-segment tiles and lane
splits), runs it on the instruction-level simulator and compares with ``golden.run_int``.
"""

import functools

import numpy as np
import pytest
from onnx import helper

from flexigan.compiler import ir, passes, quant
from flexigan.compiler.lower import lower
from flexigan.compiler.onnx_import import import_model
from flexigan.compiler.program import load_program
from flexigan.errors import FitError, UnsupportedError
from flexigan.flow import default_calibration
from flexigan.hw.arch import isa
from flexigan.hw.arch.config import AcceleratorConfig, preset
from flexigan.sim import golden, isa_sim
from tests.helpers import make_model, tiny_generator

SIM = preset("sim")
#: A machine small enough that the cases below need stages, spills, per-segment weight tiles
#: and fewer lanes per tile; three groups so the work does not divide evenly.
TINY = AcceleratorConfig(groups=3, lanes=4, act_banks=2, act_bank_bytes=1024, weight_bytes=384,
                         param_entries=16, uop_depth=24, axi_data_width=32, mem_latency=4,
                         burst_bytes=64)


def quantized(model, samples=16):
    """The quantized IR of ``model`` (path or ModelProto), and int8 test inputs."""
    graph = passes.run_passes(import_model(model))
    feeds = default_calibration(graph, samples=samples, seed=0)
    qgraph = ir.verify(quant.quantize(graph, quant.calibrate(graph, feeds)), quantized=True)
    test = default_calibration(graph, samples=2, seed=1)
    return qgraph, {n: golden.quantize_input(v, ir.node(qgraph, n).scale)
                    for n, v in test.items()}


def check_bit_exact(qgraph, inputs, config=SIM, reorder=True, sparse=True):
    """Lower, simulate and compare every output with the golden interpreter."""
    program = lower(qgraph, config, reorder)
    outputs, report = isa_sim.simulate(program, inputs, sparse=sparse)
    expected = golden.run_int(qgraph, inputs)
    for name in qgraph.graph["outputs"]:
        np.testing.assert_array_equal(outputs[name], expected[name])
    return program, report


def _convt(cin, cout, hw, kernel, name="y", act="Relu", **attrs):
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


def _conv(cin, cout, hw, kernel, act="LeakyRelu", **attrs):
    rng = np.random.default_rng(4)
    group = attrs.get("group", 1)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=kernel, **attrs),
             helper.make_node(act, ["c"], ["y"])]
    inits = {"w": rng.normal(0, 0.3, (cout, cin // group, *kernel)),
             "b": rng.normal(0, 0.1, cout)}
    return make_model(nodes, [("x", ["N", cin, *hw])], [("y", ["N", "c", "h", "w"])], inits)


def _project_and_reshape():
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


def _prelu_conv1d():
    """A 1-D convolution (imported as 2-D with reshapes) followed by a per-channel PReLU."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["t"], kernel_shape=[3], strides=[2],
                              pads=[1, 0]),
             helper.make_node("PRelu", ["t", "slope"], ["y"])]
    inits = {"w": rng.normal(0, 0.4, (4, 6, 3)), "slope": rng.uniform(0, 0.5, (6, 1))}
    return make_model(nodes, [("x", ["N", 4, 7])], [("y", ["N", "c", "h", "w"])], inits)


CASES = {
    "convt k3 s2 p1 op1 (tiny generator)": lambda: tiny_generator(),
    "convt k5 s2 p2 op1": lambda: _convt(3, 5, (5, 4), [5, 5], strides=[2, 2],
                                         pads=[2, 2, 2, 2], output_padding=[1, 1]),
    "convt k4 s4": lambda: _convt(4, 3, (3, 3), [4, 4], strides=[4, 4], act="Tanh"),
    "convt k3 s2 output_padding, asymmetric pads": lambda: _convt(
        2, 4, (4, 5), [3, 3], strides=[2, 3], pads=[0, 1, 2, 0], output_padding=[1, 2]),
    "convt groups 2, dilation 2": lambda: _convt(4, 6, (4, 4), [3, 2], strides=[2, 2],
                                                 group=2, dilations=[2, 3], pads=[1, 1, 0, 1]),
    "convt k1 s2 (outputs no tap reaches)": lambda: _convt(3, 2, (3, 3), [1, 1], strides=[2, 2],
                                                           output_padding=[1, 1], act=None),
    "convt of a 1x1 input (a Gemm)": lambda: _convt(5, 7, (1, 1), [4, 4], act="Sigmoid"),
    "conv groups 3, stride 2, pads": lambda: _conv(6, 9, (7, 6), [3, 3], group=3,
                                                   strides=[2, 2], pads=[1, 1, 1, 0]),
    "conv depthwise, dilation 2": lambda: _conv(4, 4, (6, 6), [3, 3], group=4,
                                                dilations=[2, 2], pads=[2, 2, 2, 2]),
    "gemm, reshape to an image, flatten": _project_and_reshape,
    "1-d convt with per-channel prelu": _prelu_conv1d,
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return quantized(CASES[request.param]())


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
def test_bit_exact_with_golden(case, config, reorder):
    check_bit_exact(*case, config=config, reorder=reorder)


def test_zero_free_issues_exactly_the_useful_macs():
    # Without zero skipping, every issued MAC of the zero-free program is a useful one, and the
    # conventional program issues the zero-insertion count.
    qgraph, inputs = quantized(CASES["convt k5 s2 p2 op1"]())
    _, report = check_bit_exact(qgraph, inputs, sparse=False)
    assert report["macs_issued"] == report["macs_useful"]
    _, conventional = check_bit_exact(qgraph, inputs, reorder=False, sparse=False)
    assert conventional["macs_issued"] == 2 * 3 * 5 * 5 * 5 * 10 * 8  # batch 2, taps x outputs


def test_uneven_phases_run_different_micro_programs_on_different_groups():
    # k=5, s=2: phases of 9, 6, 6 and 4 taps; each group's RUNs use its phase's programs.
    qgraph, inputs = quantized(CASES["convt k5 s2 p2 op1"]())
    program, _ = check_bit_exact(qgraph, inputs)
    taps_by_group = {}
    code = program.code
    for at in range(0, len(code), isa.GLOBAL_BYTES):
        op, a = isa.decode_global(int.from_bytes(code[at:at + isa.GLOBAL_BYTES], "little"))
        if op == isa.GlobalOp.UOP_LOAD:
            words = program.image[a["ext_addr"]:a["ext_addr"] + a["length"]]
            loops = [isa.decode_uop(int.from_bytes(words[i:i + 16], "little"))
                     for i in range(0, len(words), 16)]
            taps = np.prod([f["count"] for o, f in loops if o == isa.UopOp.LOOP
                            and f["level"] < 2])
            taps_by_group.setdefault(a["group_mask"], set()).add(int(taps))
    interior = {9, 6, 4}
    assert len(taps_by_group) > 1
    assert any(interior & t for t in taps_by_group.values())
    assert len({frozenset(t) for t in taps_by_group.values()}) > 1


def test_program_is_deterministic_and_survives_save_and_load(tmp_path):
    qgraph, inputs = quantized(tiny_generator())
    program = lower(qgraph, SIM)
    assert lower(qgraph, SIM).image == program.image
    program.save(tmp_path)
    loaded = load_program(tmp_path)
    assert loaded.image == program.image and loaded.layout == program.layout
    assert (tmp_path / "program.bin").read_bytes() == program.code
    assert "RUN group_mask=" in (tmp_path / "program.s").read_text()
    outputs, _ = isa_sim.simulate(loaded, inputs)
    np.testing.assert_array_equal(outputs["image"], golden.run_int(qgraph, inputs)["image"])


def test_reshape_and_flatten_cost_no_instructions():
    qgraph, _ = quantized(_project_and_reshape())
    program = lower(qgraph, SIM)
    assert [layer["op"] for layer in program.layout["layers"]] == ["Gemm", "ConvTranspose",
                                                                    "Gemm"]
    assert program.layout["act_buffers"].keys() == {"r", "tr"}


def test_activation_memory_shortfall_names_the_layer():
    qgraph, _ = quantized(_convt(4, 8, (8, 8), [4, 4], strides=[2, 2], pads=[1, 1, 1, 1]))
    small = TINY.replace(act_banks=1, act_bank_bytes=128)
    with pytest.raises(FitError, match=r"^layer 'y': needs \d+ bytes of activation memory, "
                                       r"the target has 128 \(short by \d+\)$"):
        lower(qgraph, small)


def test_weight_tile_shortfall_names_the_layer():
    qgraph, _ = quantized(_convt(100, 8, (2, 2), [4, 4], strides=[2, 2], pads=[1, 1, 1, 1]))
    with pytest.raises(FitError, match=r"^layer 'y': a weight tile needs 400 bytes per lane, "
                                       r"the weight buffer holds 384 \(short by 16\)$"):
        lower(qgraph, TINY)


def _weight_loads(program):
    loads = []
    code = program.code
    for at in range(0, len(code), isa.GLOBAL_BYTES):
        op, a = isa.decode_global(int.from_bytes(code[at:at + isa.GLOBAL_BYTES], "little"))
        if op == isa.GlobalOp.DMA_LOAD and a["space"] == isa.Space.WGT:
            loads.append((a["local_addr"], a["length"]))
    return loads


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
def test_a_tile_larger_than_half_the_weight_buffer_takes_all_of_it(reorder):
    # 64 input channels x 4 taps (zero-free phase) or 16 taps (dense kernel) per lane: more
    # than half the buffer for every lane, so the tile fills the whole buffer, single
    # buffered, rather than running on fewer lanes.
    qgraph, inputs = quantized(_convt(64, 8, (4, 4), [4, 4], strides=[2, 2], pads=[1, 1, 1, 1]))
    taps = 4 if reorder else 16
    config = TINY.replace(weight_bytes=taps * 64 * 4, act_bank_bytes=8192)
    program, report = check_bit_exact(qgraph, inputs, config=config, reorder=reorder,
                                      sparse=False)
    assert program.layout["layers"][0]["lanes_per_tile"] == 4
    assert set(_weight_loads(program)) == {(0, config.weight_bytes)}
    assert report["macs_issued"] == (report["macs_useful"] if reorder else
                                     2 * 8 * 64 * 16 * 8 * 8)


def test_unsupported_ops_are_listed_together():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("InstanceNormalization", ["c", "g", "k"], ["s"]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 1, 3, 2])]
    model = make_model(nodes, [("x", ["N", 2, 3, 3])], [("y", ["N", "c", "h", "w"])],
                       {"w": rng.normal(size=(2, 2, 1, 1)), "g": [2.0, 1.0], "k": [0.5, -1.0]})
    qgraph, _ = quantized(model)
    with pytest.raises(UnsupportedError) as err:
        lower(qgraph, SIM)
    assert [(name, op) for name, op, _ in err.value.problems] == [
        ("s", "InstanceNorm"), ("r", "Activation"), ("y", "Transpose")]
    assert "standalone activation" in err.value.problems[1][2]


def test_few_rows_are_cut_into_columns_too():
    # One work unit per piece, 22 output rows of 64 pixels, 16 groups: whole-row bands leave
    # some groups two rows and others one; row x column pieces share the pixels evenly.
    from flexigan.compiler.lower import _balance, _pieces
    pieces = _pieces(22, 64, 1, 16)
    assert any(c1 - c0 < 64 for _, _, c0, c1 in pieces)
    covered = np.zeros((22, 64), int)
    for r0, r1, c0, c1 in pieces:
        covered[r0:r1, c0:c1] += 1
    assert (covered == 1).all()

    class Unit:
        def __init__(self, cost):
            self.cost = cost
    queues = _balance([Unit((r1 - r0) * (c1 - c0)) for r0, r1, c0, c1 in pieces], 16)
    assert max(sum(u.cost for u in q) for q in queues) <= 1.1 * 22 * 64 / 16
    assert _pieces(22, 64, 32, 16) == ((0, 22, 0, 64),)


# --- Concat and residual Add ----------------------------------------------------------------

def _concat_model(skip_input=False, unet=False):
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


CONCAT_CASES = {
    "conv-relu + conv-relu -> concat -> conv": lambda: _concat_model(),
    "concat with the model input": lambda: _concat_model(skip_input=True),
    "u-net skip, nested concat": lambda: _concat_model(unet=True),
}


@pytest.fixture(scope="module", params=list(CONCAT_CASES))
def concat_case(request):
    return quantized(CONCAT_CASES[request.param]())


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
def test_concat_bit_exact_with_golden(concat_case, config, reorder):
    check_bit_exact(*concat_case, config=config, reorder=reorder)


def test_concat_of_layer_outputs_is_addressing():
    # Both producers write their channel slices of the concat: no copy layer, one buffer.
    qgraph, _ = quantized(_concat_model())
    program = lower(qgraph, SIM)
    assert [layer["op"] for layer in program.layout["layers"]] == ["Conv"] * 3
    assert program.layout["act_buffers"].keys() == {"cat"}


def _residual_model(kind):
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


ADD_CASES = ["block", "scales", "input skip, two blocks", "self", "input twice", "into concat"]


@pytest.fixture(scope="module", params=ADD_CASES)
def add_case(request):
    return quantized(_residual_model(request.param))


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
def test_residual_add_bit_exact_with_golden(add_case, config, reorder):
    check_bit_exact(*add_case, config=config, reorder=reorder)


def test_residual_add_is_addressing():
    # h's producer and the block's last conv write the two halves of the Add's operand buffer
    # (the block's first conv reads h there); the Add is two MAC steps per output value, and
    # its channels share one weight tile (loaded once per group, not once per channel).
    qgraph, inputs = quantized(_residual_model("block"))
    program, report = check_bit_exact(qgraph, inputs, config=TINY, sparse=False)
    layers = program.layout["layers"]
    assert [layer["op"] for layer in layers] == ["Conv", "Conv", "Conv", "Add", "Conv"]
    assert program.layout["act_buffers"].keys() == {"br", "sr", "s:operands"}
    add = next(row for row in report["layers"] if row["op"] == "Add")
    assert add["macs_issued"] == 2 * 4 * 6 * 5 * 2      # taps x channels x pixels x batch
    code = program.code
    loads = 0
    for at in range(layers[3]["first"] * isa.GLOBAL_BYTES, layers[3]["last"] * isa.GLOBAL_BYTES,
                    isa.GLOBAL_BYTES):
        op, a = isa.decode_global(int.from_bytes(code[at:at + isa.GLOBAL_BYTES], "little"))
        loads += op == isa.GlobalOp.DMA_LOAD and a["space"] == isa.Space.WGT
    assert loads <= TINY.groups < 4


@pytest.mark.parametrize("kind, ops, buffers", [
    ("self", ["Conv", "Add", "Conv"], {"h", "s"}),
    ("input twice", ["Add", "Conv"], {"r"}),
    ("input skip, two blocks", ["Conv", "Conv", "Copy", "Add", "Conv", "Conv", "Add"],
     {"pr", "qr", "s1:operands", "s2:operands"}),
])
def test_add_of_one_value_reads_it_twice_and_a_model_input_is_copied(kind, ops, buffers):
    qgraph, _ = quantized(_residual_model(kind))
    program = lower(qgraph, SIM)
    assert [layer["op"] for layer in program.layout["layers"]] == ops
    assert program.layout["act_buffers"].keys() == buffers


def _spread_model(kind):
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


SPREAD_CASES = ["resize", "resize 3x2", "resize output", "input", "shared", "DCR", "CRD",
                "input CRD", "large resize", "large resize output", "large input", "large CRD",
                "large input CRD"]


@pytest.fixture(scope="module", params=SPREAD_CASES)
def spread_case(request):
    return quantized(_spread_model(request.param))


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
def test_upsample_and_depth_to_space_bit_exact_with_golden(spread_case, config, reorder):
    check_bit_exact(*spread_case, config=config, reorder=reorder)


def test_depth_to_space_is_addressing():
    # The producer scatters its channels over the blocks: no copy, no buffer of its own.
    for mode in ("DCR", "CRD"):
        qgraph, _ = quantized(_spread_model(mode))
        program = lower(qgraph, SIM)
        assert [layer["op"] for layer in program.layout["layers"]] == ["Conv"] * 2
        assert program.layout["act_buffers"].keys() == {"u"}


def test_upsample_is_written_by_its_producer_and_copied_into_the_other_blocks():
    qgraph, _ = quantized(_spread_model("resize"))
    program = lower(qgraph, SIM)
    layers = program.layout["layers"]
    assert [layer["op"] for layer in layers] == ["Conv"] + ["Copy"] * 3 + ["Conv"]
    assert program.layout["act_buffers"].keys() == {"u"}
