"""int8 quantization: requantization arithmetic, parameter choice, LUTs, and end-to-end SQNR."""

import math
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import numpy_helper

from flexigan.compiler import ir, passes, quant
from flexigan.compiler.evaluate import run_float
from flexigan.compiler.onnx_import import import_model
from flexigan.compiler.serialize import load_graph, save_graph
from flexigan.errors import FitError, ModelError
from flexigan.inputs import default_calibration
from flexigan.sim import golden
from tests.helpers import conv_model, convt_model, prelu_conv1d_model, tiny_generator


def rq(multiplier, shift, offset=0):
    return quant.Requant(np.array([multiplier]), np.array([shift]), np.array([offset]))


def apply(r, *acc):
    return quant.Requant.apply(r, np.array(acc), channel_axis=0).tolist()


# Requant: device-side rounding and saturation, pinned.

def test_requant_rounds_half_up():
    # x / 2 for x = 1, -1, 3, -3, 5, -5: the ties go towards +inf.
    assert apply(rq(1, 1), 1, -1, 3, -3, 5, -5) == [1, 0, 2, -1, 3, -2]
    # x * 3 / 8: 4 -> 1.5 -> 2, -4 -> -1.5 -> -1, 5 -> 1.875 -> 2, -5 -> -1.875 -> -2.
    assert apply(rq(3, 3), 4, -4, 5, -5) == [2, -1, 2, -2]


def test_requant_shift_zero_has_no_rounding_term():
    assert apply(rq(3, 0), 5, -5, 0) == [15, -15, 0]


def test_requant_saturates():
    assert apply(rq(2, 0), 63, 64, -64, -65, 1 << 30) == [126, 127, -128, -128, 127]
    assert apply(rq(-32767, 0), -(1 << 31)) == [127]
    # The extremes of the 48-bit product: int32 accumulator times int16 multiplier.
    assert apply(rq(32767, 47), (1 << 31) - 1, -(1 << 31)) == [0, 0]
    assert apply(rq(32767, 40), (1 << 31) - 1, -(1 << 31)) == [64, -64]


def test_requant_offset_is_added_before_the_shift():
    # (2 * 3 + 5) / 4 = 2.75 -> 3; (-2 * 3 + 5) / 4 = -0.25 -> 0; (-2 * 3 - 6) / 4 = -3.
    assert apply(rq(3, 2, 5), 2, -2) == [3, 0]
    assert apply(rq(3, 2, -6), -2) == [-3]


def test_requant_is_per_channel_along_the_channel_axis():
    r = quant.Requant(np.array([1, 3]), np.array([0, 1]), np.array([0, 0]))
    acc = np.array([[[10, 11], [10, 11]]])  # (N=1, C=2, W=2)
    assert r.apply(acc, channel_axis=1).tolist() == [[[10, 11], [15, 17]]]


@given(acc=st.integers(-(1 << 31), (1 << 31) - 1),
       multiplier=st.integers(-(1 << 15) + 1, (1 << 15) - 1),
       shift=st.integers(0, quant.MAX_SHIFT),
       offset=st.integers(-(1 << 31), (1 << 31) - 1))
def test_requant_is_exact_rational_rounding(acc, multiplier, shift, offset):
    exact = math.floor(Fraction(acc * multiplier + offset, 1 << shift) + Fraction(1, 2))
    assert apply(rq(multiplier, shift, offset), acc) == [max(-128, min(127, exact))]


# requant(): choosing multiplier and shift for a real ratio, pinned.

@pytest.mark.parametrize("ratio, multiplier, shift", [
    (1.0, 16384, 14),
    (0.5, 16384, 15),
    (-0.75, -24576, 15),
    # 32767.5 / 2**15 rounds to 2**15 at shift 15, which does not fit: shift 14.
    (32767.5 / 2 ** 15, 16384, 14),
    (3e-10, 21111, 46),
    (1e-20, 0, 47),       # too small even for shift 47: multiplier 0
    (0.0, 0, 47),
    (1e6, 32767, 0),      # too large even for shift 0: saturates any non-zero accumulator
    (-1e6, -32767, 0),
])
def test_requant_choice(ratio, multiplier, shift):
    r = quant.requant(ratio)
    assert (r.multiplier.tolist(), r.shift.tolist(), r.offset.tolist()) == \
        ([multiplier], [shift], [0])


def test_requant_choice_keeps_the_offset_within_int32():
    # 0.5 alone would take shift 15; an offset of 1e6 limits it to 11 (1e6 * 2**11 < 2**31).
    r = quant.requant(0.5, 1e6)
    assert (r.multiplier.tolist(), r.shift.tolist(), r.offset.tolist()) == \
        ([1024], [11], [2048000000])


def test_huge_ratio_saturates_exactly():
    r = quant.requant(1e6)
    assert apply(r, 1, 0, -1) == [127, 0, -128]


@given(st.floats(1e-9, 3e4) | st.floats(-3e4, -1e-9))
def test_requant_choice_is_the_largest_shift_that_fits(ratio):
    r = quant.requant(ratio)
    m, s = int(r.multiplier[0]), int(r.shift[0])
    assert m == math.floor(ratio * 2 ** s + 0.5) and abs(m) < 1 << 15
    assert s == quant.MAX_SHIFT or abs(math.floor(ratio * 2 ** (s + 1) + 0.5)) >= 1 << 15


# Graphs.

def chain(*steps, in_shape):
    """A graph x -> step -> step ..., each step ``(name, op)``; the last is the output."""
    graph = ir.new_graph(["x"], [steps[-1][0]])
    ir.add_node(graph, "x", ir.Input(), shape=in_shape)
    prev = "x"
    for name, op in steps:
        prev = ir.add_node(graph, name, op, [prev])
    return ir.verify(graph)


def images(graph, batch, seed):
    """Image-like inputs, uniform in [-1, 1] (GAN images are tanh-ranged)."""
    shape = ir.node(graph, "x").shape
    return {"x": np.random.default_rng(seed).uniform(-1, 1, (batch, *shape))}


def calibrated(graph, seed=0):
    ranges = quant.calibrate(graph, images(graph, 32, seed))
    return ir.verify(quant.quantize(graph, ranges), quantized=True)


def sqnrs(graph, qgraph, seed=100):
    """SQNR in dB of every value on fresh inputs."""
    feeds = images(graph, 8, seed)
    want = run_float(graph, feeds, keep=True)
    got = golden.run_quantized(qgraph, feeds, keep=True)
    return {name: golden.sqnr_db(want[name], got[name]) for name in want}


def generator_like(seed=0):
    """x -> Conv -> ReLU -> ConvTranspose (k4 s2) -> Tanh, random weights."""
    rng = np.random.default_rng(seed)
    conv = ir.Conv(rng.normal(0, 0.3, (8, 3, 3, 3)), rng.normal(0, 0.1, 8), pads=(1, 1, 1, 1))
    convt = ir.ConvTranspose(rng.normal(0, 0.3, (8, 4, 4, 4)), rng.normal(0, 0.1, 4),
                             strides=(2, 2), pads=(1, 1, 1, 1))
    return chain(("conv", conv), ("relu", ir.Activation("relu")), ("convt", convt),
                 ("image", ir.Activation("tanh")), in_shape=(3, 8, 8))


def test_generator_like_graph_reaches_30_db():
    graph = generator_like()
    qgraph = calibrated(graph)
    assert ir.node(qgraph, "image").scale == 1 / 127  # Tanh's range is known, not calibrated
    assert sqnrs(graph, qgraph)["image"] > 30


def test_quantize_leaves_the_float_graph_alone():
    graph = generator_like()
    calibrated(graph)
    assert all(n.scale is None and n.q is None for _, n in ir.topo_nodes(graph))


def test_weights_are_quantized_per_output_channel_of_a_grouped_conv_transpose():
    # ConvTranspose weight (Cin, Cout/group, kH, kW): output channel g * 3 + j owns
    # weight[g * 2:(g + 1) * 2, j]. Give each output channel its own magnitude.
    gains = np.array([1, 10, 100, 1000, 0.1, 0.01])
    weight = np.random.default_rng(0).uniform(-1, 1, (4, 3, 2, 2))
    for o, gain in enumerate(gains):
        g, j = divmod(o, 3)
        weight[g * 2:(g + 1) * 2, j] *= gain
    op = ir.ConvTranspose(weight, np.zeros(6), group=2)
    q = calibrated(chain(("y", op), in_shape=(4, 3, 3))).nodes["y"]["node"].q
    for o in range(6):
        g, j = divmod(o, 3)
        assert np.abs(q.weight[g * 2:(g + 1) * 2, j]).max() == 127


def test_accumulator_overflow_is_refused_naming_the_node():
    op = ir.Conv(np.ones((1, 1, 1, 1)), np.array([1e9]))
    graph = chain(("big_bias", op), in_shape=(1, 2, 2))
    with pytest.raises(FitError, match=r"big_bias: the int32 accumulator can overflow"):
        quant.quantize(graph, {"x": 1.0, "big_bias": 1e9})


def test_relu_and_tanh_luts_on_all_256_entries():
    graph = chain(("r", ir.Activation("relu")), ("t", ir.Activation("tanh")), in_shape=(2,))
    qgraph = quant.quantize(graph, {"x": 0.05 * 127, "r": 0.02 * 127})
    relu, tanh = (ir.node(qgraph, n).q.table for n in ("r", "t"))
    assert relu.shape == tanh.shape == (1, 256) and relu.dtype == np.int8
    for x in range(-128, 128):
        assert relu[0, x + 128] == min(127, math.floor(max(x, 0) * 2.5 + 0.5))
        assert tanh[0, x + 128] == math.floor(math.tanh(x * 0.02) * 127 + 0.5)
    assert relu[0, 128 - 1] == 0 and relu[0, 128 + 50] == 125 and relu[0, 255] == 127


def test_prelu_lut_is_per_channel():
    graph = chain(("p", ir.Activation("prelu", np.array([0.5, 0.25]))), in_shape=(2, 1))
    table = quant.quantize(graph, {"x": 127, "p": 127}).nodes["p"]["node"].q.table
    assert table.shape == (2, 256)
    assert table[:, [0, 127, 128, 255]].tolist() == [[-64, 0, 0, 127], [-32, 0, 0, 127]]


def test_pad_value_is_quantized_with_the_input_scale():
    graph = chain(("p", ir.Pad((1, 1, 1, 1), "constant", 0.3)), in_shape=(1, 1, 1))
    qgraph = quant.quantize(graph, {"x": 1.27})
    assert ir.node(qgraph, "p").q == 30 and ir.node(qgraph, "p").scale == 0.01
    y = golden.run_int(qgraph, {"x": np.array([[[[5]]]], dtype=np.int8)})["p"]
    assert y[0, 0].tolist() == [[30, 30, 30], [30, 5, 30], [30, 30, 30]]


def mixed_graph():
    """Affine, InstanceNorm, Add of two scales and Concat of two scales, off one input."""
    graph = ir.new_graph(["x"], ["cat"])
    ir.add_node(graph, "x", ir.Input(), shape=(3, 4, 4))
    ir.add_node(graph, "aff", ir.Affine(np.array([0.5, -2.0, 1.5]), np.array([0.2, 1.0, -3.0])),
                ["x"])
    ir.add_node(graph, "norm", ir.InstanceNorm(np.array([1.0, 0.5, 2.0]),
                                               np.array([0.0, 0.3, -0.5])), ["aff"])
    ir.add_node(graph, "sum", ir.Add(), ["aff", "norm"])
    ir.add_node(graph, "cat", ir.Concat(0), ["sum", "x"])
    return ir.verify(graph)


def test_affine_norm_add_concat_reach_30_db():
    graph = mixed_graph()
    qgraph = calibrated(graph)
    cat = ir.node(qgraph, "cat")
    assert cat.scale == max(ir.node(qgraph, "sum").scale, ir.node(qgraph, "x").scale)
    assert sum(r is None for r in cat.q) == 1  # the input at the output scale is copied
    assert min(sqnrs(graph, qgraph).values()) > 30


def test_instance_norm_of_a_constant_channel_is_its_bias():
    op = ir.InstanceNorm(np.array([3.0]), np.array([0.5]))
    qgraph = quant.quantize(chain(("n", op), in_shape=(1, 2, 2)), {"x": 1.0, "n": 1.27})
    y = golden.run_int(qgraph, {"x": np.full((1, 1, 2, 2), 7, dtype=np.int8)})["n"]
    assert (y == 50).all()


@pytest.mark.parametrize("shape, epsilon", [((3, 4, 4), 1e-5), ((2, 8, 8), 1e-2),
                                            ((2, 3), 1e-5), ((3, 16, 16), 1.0)])
def test_instance_norm_is_within_one_step_of_the_exact_normalization(shape, epsilon):
    rng = np.random.default_rng(2)
    c = shape[0]
    graph = chain(("n", ir.InstanceNorm(rng.uniform(-2, 2, c), rng.normal(0, 1, c), epsilon)),
                  in_shape=shape)
    # Channels of very different spreads, some nearly constant.
    x = rng.normal(0, 1, (16, *shape)) * rng.uniform(0.01, 1, (16, c) + (1,) * (len(shape) - 1))
    qgraph = quant.quantize(graph, quant.calibrate(graph, {"x": x}))
    s_in, s_out = ir.node(qgraph, "x").scale, ir.node(qgraph, "n").scale
    xq = golden.quantize_input(x, s_in)
    exact = run_float(graph, {"x": golden.dequantize(xq, s_in)})["n"]
    exact = np.clip(np.floor(exact / s_out + 0.5), -128, 127)
    got = golden.run_int(qgraph, {"x": xq})["n"]
    assert np.abs(got - exact).max() <= 1 and np.mean(got != exact) < 0.05


def test_quantize_refuses_missing_or_bad_ranges():
    graph = chain(("r", ir.Activation("relu")), in_shape=(2,))
    with pytest.raises(ValueError, match="ranges has no entry for value 'r'"):
        quant.quantize(graph, {"x": 1.0})
    with pytest.raises(ValueError, match=r"ranges\['x'\] must be a positive finite number, "
                                         "not 0.0"):
        quant.quantize(graph, {"x": 0.0, "r": 1.0})


def test_calibrate_guards_zero_ranges():
    graph = chain(("r", ir.Activation("relu")), in_shape=(2,))
    ranges = quant.calibrate(graph, {"x": -np.ones((3, 2))})
    assert ranges == {"x": 1.0, "r": quant.ZERO_RANGE}


def test_quantized_graph_survives_serialization(tmp_path):
    graph = mixed_graph()
    qgraph = calibrated(graph)
    save_graph(qgraph, tmp_path / "q.npz")
    loaded = load_graph(tmp_path / "q.npz")
    x = {"x": np.random.default_rng(0).integers(-128, 128, (2, 3, 4, 4)).astype(np.int8)}
    np.testing.assert_array_equal(golden.run_int(loaded, x)["cat"],
                                  golden.run_int(qgraph, x)["cat"])


# Add: int8 weights whose ratio is the scales' ratio, one shared multiplier and shift.

def effective(s):
    """The real ratios ``w * M / 2**s`` a :class:`Sum` applies to its two inputs."""
    gain = Fraction(s.multiplier, 1 << s.shift)
    return float(s.weight_a * gain), float(s.weight_b * gain)


@pytest.mark.parametrize("ratios, weights, multiplier, shift", [
    ((1.0, 1.0), (1, 1), 1 << 14, 14),     # y = a + b, exactly
    ((0.5, 1.0), (1, 2), 1 << 14, 15),     # exact ratios stay exact
    ((0.75, 0.25), (3, 1), 1 << 14, 16),
])
def test_sum_of_exact_ratios_is_exact(ratios, weights, multiplier, shift):
    s = quant.sum_params(*ratios)
    assert (s.weight_a, s.weight_b, s.multiplier, s.shift) == (*weights, multiplier, shift)


def test_sum_weights_are_int8_and_one_input_can_vanish():
    # A ratio beyond 127:1 cannot be a ratio of int8 weights: the input whose contribution is
    # below a step of the other may get weight 0 (its best approximation).
    s = quant.sum_params(1000.0, 1.0)
    assert (s.weight_a, s.weight_b) == (1, 0) and effective(s)[0] == 1000.0
    s = quant.sum_params(1e-9, 2e-9)     # tiny ratios: shift 47, still the right proportion
    assert s.shift == quant.MAX_SHIFT and s.weight_b == 2 * s.weight_a
    assert effective(s)[1] == pytest.approx(2e-9, rel=1e-3)


@given(st.floats(0.02, 2.0), st.floats(0.02, 2.0))
def test_sum_weights_approximate_the_ratios(ra, rb):
    s = quant.sum_params(ra, rb)
    assert 0 <= s.weight_a <= 127 and 0 <= s.weight_b <= 127
    assert 0 < s.multiplier < 1 << 15 and 0 <= s.shift <= quant.MAX_SHIFT
    ea, eb = effective(s)
    # The fractions of int8 weights are at most 1/127 apart (next to 1): the ratios are off by
    # at most about half of that, 1/254 of the larger ratio (so at full-scale inputs by half a
    # step for a ratio of 1); and far less for most ratios.
    assert abs(ea - ra) + abs(eb - rb) <= max(ra, rb) / 250


def test_sum_ratios_next_to_one_are_the_hardest():
    s = quant.sum_params(1 - 1 / 254, 1.0)     # halfway between 126/127 and 1/1
    ea, eb = effective(s)
    assert (s.weight_a, s.weight_b) in [(1, 1), (126, 127)]
    assert abs(ea - (1 - 1 / 254)) + abs(eb - 1) == pytest.approx(1 / 254, rel=0.02)


def test_sum_is_its_rational_formula_and_within_one_step_of_exact():
    s = quant.sum_params(0.9418677726909915, 0.31533623744914485)
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    got = s.apply(a.astype(np.int8), b.astype(np.int8))
    assert got.dtype == np.int8
    for x, y in [(-128, -128), (127, 127), (-128, 127), (3, -5), (0, 1), (-1, 0)]:
        v = Fraction((x * s.weight_a + y * s.weight_b) * s.multiplier, 1 << s.shift)
        assert got[x + 128, y + 128] == max(-128, min(127, math.floor(v + Fraction(1, 2))))
    exact = np.clip(np.floor(a * 0.9418677726909915 + b * 0.31533623744914485 + 0.5), -128, 127)
    # The hardest of 300 random ratio pairs (the weights 125:42 miss the ratio 2.987 by 0.4%):
    # 6.4% of the input pairs are a step off; about 0.2% on average over ratio pairs.
    assert np.abs(got - exact).max() <= 1 and np.mean(got != exact) < 0.07


def two_inputs_add(shape=(4, 8, 8)):
    graph = ir.new_graph(["x", "z"], ["s"])
    ir.add_node(graph, "x", ir.Input(), shape=shape)
    ir.add_node(graph, "z", ir.Input(), shape=shape)
    ir.add_node(graph, "s", ir.Add(), ["x", "z"])
    return ir.verify(graph)


@pytest.mark.parametrize("spread", [1.0, 0.37, 3.1, 0.05])
def test_add_is_as_accurate_as_exact_rounding(spread):
    # x ~ N(0, 1), z ~ N(0, spread): SQNR of the sum against float (about 37 dB) within 0.1 dB
    # of rounding the sum of the dequantized inputs exactly to the output's step.
    graph = two_inputs_add()

    def feeds(seed, n):
        rng = np.random.default_rng(seed)
        return {"x": rng.normal(0, 1, (n, 4, 8, 8)), "z": rng.normal(0, spread, (n, 4, 8, 8))}

    qgraph = quant.quantize(graph, quant.calibrate(graph, feeds(0, 64)))
    test = feeds(1, 16)
    want = run_float(graph, test)["s"]
    got = golden.run_quantized(qgraph, test)["s"]
    scale = {n: ir.node(qgraph, n).scale for n in ("x", "z", "s")}
    inputs = [golden.dequantize(golden.quantize_input(test[n], scale[n]), scale[n])
              for n in ("x", "z")]
    ideal = golden.dequantize(golden.quantize_input(sum(inputs), scale["s"]), scale["s"])
    assert golden.sqnr_db(want, got) > 36
    assert golden.sqnr_db(want, got) >= golden.sqnr_db(want, ideal) - 0.1


def resnet_like(blocks, c=8, seed=0):
    """x -> ``blocks`` x (s = s + conv(ReLU(conv s))) -> Tanh: ResNet generator blocks."""
    rng = np.random.default_rng(seed)
    graph = ir.new_graph(["x"], ["y"])
    ir.add_node(graph, "x", ir.Input(), shape=(c, 8, 8))
    prev = "x"
    for i in range(blocks):
        w1 = rng.normal(0, 1 / np.sqrt(9 * c), (c, c, 3, 3))
        w2 = rng.normal(0, 0.5 / np.sqrt(9 * c), (c, c, 3, 3))
        ir.add_node(graph, f"c{i}", ir.Conv(w1, rng.normal(0, 0.1, c), pads=(1, 1, 1, 1)), [prev])
        ir.add_node(graph, f"r{i}", ir.Activation("relu"), [f"c{i}"])
        ir.add_node(graph, f"d{i}", ir.Conv(w2, rng.normal(0, 0.1, c), pads=(1, 1, 1, 1)),
                    [f"r{i}"])
        ir.add_node(graph, f"s{i}", ir.Add(), [prev, f"d{i}"])
        prev = f"s{i}"
    ir.add_node(graph, "y", ir.Activation("tanh"), [prev])
    return ir.verify(graph)


@pytest.mark.parametrize("blocks, min_db", [(1, 39.0), (6, 31.0)])
def test_residual_blocks_reach_their_sqnr(blocks, min_db):
    # One block ~40.7 dB at its Add, six in a chain ~32.5 dB (the int8 error of every layer
    # accumulates along the skip path); the former two-multiplier Add gave the same within
    # 0.1 dB.
    graph = resnet_like(blocks)
    qgraph = calibrated(graph)
    db = sqnrs(graph, qgraph)
    assert db[f"s{blocks - 1}"] > min_db and db["y"] > min_db - 1


# Calibration through onnxruntime (the float model in float32) or numpy (the IR in float64).

def both_calibrations(model, samples=16):
    """The ranges of ``model``'s IR (after the float passes) by numpy and, given the model, by
    onnxruntime, on the same generated inputs."""
    graph = passes.run_passes(import_model(model))
    feeds = default_calibration(graph, samples=samples, seed=0)
    return quant.calibrate(graph, feeds), quant.calibrate(graph, feeds, model)


@pytest.mark.parametrize("model", [tiny_generator(), conv_model(3, 8, (6, 6), (3, 3)),
                                   convt_model(4, 6, (3, 3), (4, 4), act="Sigmoid",
                                               strides=[2, 2], pads=[1, 1, 1, 1])],
                         ids=["convt_bn_tanh", "conv_leaky", "convt_sigmoid"])
def test_onnxruntime_calibration_agrees_with_float64_to_float32_precision(model):
    float64, float32 = both_calibrations(model)
    assert float32.keys() == float64.keys()
    for name, r in float64.items():
        assert float32[name] == pytest.approx(r, rel=1e-5), name


def test_calibration_of_values_onnx_does_not_name_runs_in_numpy():
    # A 1-D convolution is imported as a 2-D one between reshapes the model does not have.
    float64, fallback = both_calibrations(prelu_conv1d_model())
    assert any("/" in name for name in float64)
    assert fallback == float64


def test_calibration_without_onnxruntime_runs_in_numpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)     # import fails, as uninstalled
    float64, fallback = both_calibrations(tiny_generator())
    assert fallback == float64


def test_onnxruntime_calibration_refuses_a_float32_overflow():
    model = conv_model(2, 2, (4, 4), (1, 1), act="Relu")
    for init in model.graph.initializer:
        if init.name == "w":
            init.CopyFrom(numpy_helper.from_array(np.full((2, 2, 1, 1), 1e38, np.float32), "w"))
    graph = passes.run_passes(import_model(model))
    with pytest.raises(ModelError, match="not finite"):
        quant.calibrate(graph, {"x": np.full((1, 2, 4, 4), 10.0)}, model)
