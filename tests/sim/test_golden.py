"""The golden interpreter: float mode against onnxruntime, integer mode against plain loops."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from flexigan.compiler import ir, quant
from flexigan.compiler.evaluate import run_float
from flexigan.sim import golden
from tests.helpers import make_model, requant_oracle

RNG = np.random.default_rng(0)


def f32(a):
    """``a`` rounded to float32 and back: onnxruntime then sees the same numbers."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def one_op_graph(op, in_shape):
    graph = ir.new_graph(["x"], ["y"])
    ir.add_node(graph, "x", ir.Input(), shape=in_shape)
    ir.add_node(graph, "y", op, ["x"])
    return ir.verify(graph)


def onnxruntime(node, x, out_shape, initializers=()):
    model = make_model([node], [("x", ["N", *x.shape[1:]])], [("y", ["N", *out_shape])],
                       initializers)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x.astype(np.float32)})[0]


def conv_case(cin, cout, k, group=1, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1)):
    weight = f32(RNG.normal(0, 0.5, (cout, cin // group, *k)))
    bias = f32(RNG.normal(0, 0.5, cout))
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, strides=strides,
                            pads=pads, dilations=dilations, kernel_shape=k)
    return (ir.Conv(weight, bias, strides, pads, dilations, group), node,
            {"w": weight, "b": bias})


def convt_case(cin, cout, k, group=1, strides=(1, 1), pads=(0, 0, 0, 0), output_padding=(0, 0),
               dilations=(1, 1)):
    weight = f32(RNG.normal(0, 0.5, (cin, cout // group, *k)))
    bias = f32(RNG.normal(0, 0.5, cout))
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], group=group,
                            strides=strides, pads=pads, output_padding=output_padding,
                            dilations=dilations, kernel_shape=k)
    return (ir.ConvTranspose(weight, bias, strides, pads, output_padding, dilations, group),
            node, {"w": weight, "b": bias})


def gemm_case(k, n):
    weight, bias = f32(RNG.normal(0, 0.5, (n, k))), f32(RNG.normal(0, 0.5, n))
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    return ir.Dense(weight, bias), node, {"w": weight, "b": bias}


def pad_case(pads, mode, value=0.0):
    node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)
    onnx_pads = np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])
    return ir.Pad(pads, mode, value), node, {"p": onnx_pads, "v": np.array(value)}


def resize_case(scales):
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    return ir.Upsample(scales), node, {"s": np.array([1.0, 1.0, *scales])}


def unary_case(op, op_type, **attrs):
    return op, helper.make_node(op_type, ["x"], ["y"], **attrs), {}


def prelu_case(c):
    slope = f32(RNG.uniform(0, 0.5, c))
    node = helper.make_node("PRelu", ["x", "s"], ["y"])
    return ir.Activation("prelu", slope), node, {"s": slope.reshape(c, 1, 1)}


def instance_norm_case(c):
    scale, bias = f32(RNG.uniform(0.5, 2, c)), f32(RNG.normal(0, 1, c))
    node = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)
    return ir.InstanceNorm(scale, bias, 1e-3), node, {"s": scale, "b": bias}


CASES = {
    "conv_k3_p1": ((3, 6, 6), conv_case(3, 4, (3, 3), pads=(1, 1, 1, 1))),
    "conv_groups_dilation_stride": ((4, 9, 8), conv_case(
        4, 6, (3, 2), group=2, strides=(2, 1), pads=(1, 0, 2, 1), dilations=(2, 2))),
    "conv_depthwise": ((4, 7, 7), conv_case(4, 4, (3, 3), group=4, strides=(2, 2),
                                            pads=(1, 1, 1, 1))),
    "convt_k3_s2": ((3, 4, 5), convt_case(3, 4, (3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
                                          output_padding=(1, 1))),
    "convt_k5_s2": ((3, 4, 4), convt_case(3, 2, (5, 5), strides=(2, 2), pads=(2, 2, 2, 2),
                                          output_padding=(1, 0))),
    "convt_k4_s4": ((2, 3, 3), convt_case(2, 3, (4, 4), strides=(4, 4))),
    "convt_group_dilation": ((4, 3, 4), convt_case(
        4, 6, (3, 3), group=2, strides=(2, 2), pads=(0, 1, 1, 0), output_padding=(1, 0),
        dilations=(2, 2))),
    "convt_k4_s2_group": ((4, 4, 4), convt_case(4, 4, (4, 4), group=2, strides=(2, 2),
                                                pads=(1, 1, 1, 1))),
    "gemm": ((7,), gemm_case(7, 5)),
    "pad_reflect": ((2, 4, 5), pad_case((1, 2, 3, 1), "reflect")),
    "pad_constant": ((2, 3, 3), pad_case((2, 0, 1, 1), "constant", 0.5)),
    "pad_edge": ((2, 4, 5), pad_case((2, 1, 0, 3), "edge")),
    "depth_to_space_dcr": ((8, 2, 3), unary_case(ir.DepthToSpace(2, "DCR"), "DepthToSpace",
                                                 blocksize=2, mode="DCR")),
    "depth_to_space_crd": ((8, 2, 3), unary_case(ir.DepthToSpace(2, "CRD"), "DepthToSpace",
                                                 blocksize=2, mode="CRD")),
    "upsample": ((2, 2, 3), resize_case((2, 3))),
    "prelu": ((3, 2, 2), prelu_case(3)),
    "leaky_relu": ((3, 2, 2), unary_case(ir.Activation("leaky_relu", np.array([0.2])),
                                         "LeakyRelu", alpha=0.2)),
    "instance_norm": ((3, 4, 5), instance_norm_case(3)),
}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_run_float_matches_onnxruntime(case, batch):
    in_shape, (op, node, inits) = CASES[case]
    graph = one_op_graph(op, in_shape)
    x = f32(RNG.normal(0, 1, (batch, *in_shape)))
    want = onnxruntime(node, x, ir.node(graph, "y").shape, inits)
    got = run_float(graph, {"x": x})["y"]
    assert got.shape == want.shape == (batch, *ir.node(graph, "y").shape)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_run_float_keep_returns_every_value():
    graph = one_op_graph(ir.Activation("relu"), (2, 2, 2))
    values = run_float(graph, {"x": -np.ones((1, 2, 2, 2))}, keep=True)
    assert set(values) == {"x", "y"} and not values["y"].any()


# Integer mode against obviously correct loops.

def requant_loop(acc, r, c):
    """One value of Requant, in Python integers."""
    return requant_oracle(acc, int(r.multiplier[c]), int(r.shift[c]), int(r.offset[c]))


def conv_loop(x, op, q):
    n, cin, h, w = x.shape
    cout, cin_g, kh, kw = q.weight.shape
    cout_g = cout // op.group
    _, ho, wo = op.shape((cin, h, w))
    y = np.zeros((n, cout, ho, wo), dtype=np.int64)
    for b, co, oh, ow in np.ndindex(n, cout, ho, wo):
        acc = int(q.bias[co])
        for ci, i, j in np.ndindex(cin_g, kh, kw):
            ih = oh * op.strides[0] - op.pads[0] + i * op.dilations[0]
            iw = ow * op.strides[1] - op.pads[1] + j * op.dilations[1]
            if 0 <= ih < h and 0 <= iw < w:
                acc += int(x[b, co // cout_g * cin_g + ci, ih, iw]) * int(q.weight[co, ci, i, j])
        y[b, co, oh, ow] = requant_loop(acc, q.requant, co)
    return y


def convt_loop(x, op, q):
    """ConvTranspose by its definition: every input pixel scatters ``x * w`` onto the outputs
    its taps reach."""
    n, cin, h, w = x.shape
    _, cout_g, kh, kw = q.weight.shape
    cin_g = cin // op.group
    cout, ho, wo = op.shape((cin, h, w))
    acc = np.zeros((n, cout, ho, wo), dtype=object)
    acc += q.bias.astype(object)[None, :, None, None]
    for b, ci, ih, iw, co_l, i, j in np.ndindex(n, cin, h, w, cout_g, kh, kw):
        oh = ih * op.strides[0] - op.pads[0] + i * op.dilations[0]
        ow = iw * op.strides[1] - op.pads[1] + j * op.dilations[1]
        if 0 <= oh < ho and 0 <= ow < wo:
            acc[b, ci // cin_g * cout_g + co_l, oh, ow] += int(x[b, ci, ih, iw]) * int(
                q.weight[ci, co_l, i, j])
    y = np.zeros(acc.shape, dtype=np.int64)
    for b, co, oh, ow in np.ndindex(*acc.shape):
        y[b, co, oh, ow] = requant_loop(acc[b, co, oh, ow], q.requant, co)
    return y


def quantized_one_op(op, in_shape, squeeze=0.6):
    """``op`` quantized with input range 1 and an output range ``squeeze`` times the calibrated
    one, so that some outputs saturate."""
    graph = one_op_graph(op, in_shape)
    ranges = quant.calibrate(graph, {"x": RNG.uniform(-1, 1, (8, *in_shape))})
    qgraph = quant.quantize(graph, {"x": 1.0, "y": ranges["y"] * squeeze})
    return ir.verify(qgraph, quantized=True)


@pytest.mark.parametrize("case, loop", [
    ("conv_groups_dilation_stride", conv_loop), ("conv_depthwise", conv_loop),
    ("convt_k3_s2", convt_loop), ("convt_group_dilation", convt_loop),
    ("convt_k4_s2_group", convt_loop)])
def test_run_int_matches_loops(case, loop):
    in_shape, (op, _, _) = CASES[case]
    qgraph = quantized_one_op(op, in_shape)
    x = RNG.integers(-128, 128, (2, *in_shape)).astype(np.int8)
    got = golden.run_int(qgraph, {"x": x})["y"]
    want = loop(x, op, ir.node(qgraph, "y").q)
    assert got.dtype == np.int8
    assert np.isin([-128, 127], got).any(), "the case should exercise saturation"
    np.testing.assert_array_equal(got, want)


def test_run_int_dense_matches_loop():
    op = gemm_case(6, 4)[0]
    qgraph = quantized_one_op(op, (6,))
    q = ir.node(qgraph, "y").q
    x = RNG.integers(-128, 128, (3, 6)).astype(np.int8)
    want = [[requant_loop(int(q.bias[o]) + sum(int(x[b, k]) * int(q.weight[o, k])
                                               for k in range(6)), q.requant, o)
             for o in range(4)] for b in range(3)]
    np.testing.assert_array_equal(golden.run_int(qgraph, {"x": x})["y"], want)


def test_run_int_add_matches_loop():
    # Two inputs of different scales into an output range that saturates some sums.
    graph = ir.new_graph(["x", "z"], ["y"])
    ir.add_node(graph, "x", ir.Input(), shape=(3, 4))
    ir.add_node(graph, "z", ir.Input(), shape=(3, 4))
    ir.add_node(graph, "y", ir.Add(), ["x", "z"])
    qgraph = ir.verify(quant.quantize(ir.verify(graph), {"x": 1.0, "z": 0.37, "y": 0.9}),
                       quantized=True)
    q = ir.node(qgraph, "y").q
    x, z = (RNG.integers(-128, 128, (4, 3, 4)).astype(np.int8) for _ in range(2))
    want = np.zeros(x.shape, dtype=np.int64)
    for i in np.ndindex(x.shape):
        want[i] = requant_oracle(int(x[i]) * q.weight_a + int(z[i]) * q.weight_b,
                                 int(q.multiplier), int(q.shift))
    got = golden.run_int(qgraph, {"x": x, "z": z})["y"]
    assert got.dtype == np.int8 and np.isin([-128, 127], got).any()
    np.testing.assert_array_equal(got, want)


def test_run_int_refuses_bad_feeds():
    qgraph = quantized_one_op(ir.Activation("relu"), (2,))
    with pytest.raises(ValueError, match=r"feeds\['x'\] must hold int8 values, not int64 in "
                                         r"\[0, 200\]"):
        golden.run_int(qgraph, {"x": np.array([[0, 200]])})
    with pytest.raises(ValueError, match=r"feeds\['x'\] has shape \(1, 3\), not \(N, 2\)"):
        golden.run_int(qgraph, {"x": np.zeros((1, 3), dtype=np.int8)})
    with pytest.raises(ValueError, match="feeds has no array for input 'x'"):
        golden.run_int(qgraph, {})
    with pytest.raises(ValueError, match="qgraph is not quantized: value 'x' has no scale"):
        golden.run_int(one_op_graph(ir.Activation("relu"), (2,)), {})


def test_quantize_input_rounds_half_up_and_saturates():
    x = np.array([0.5, -0.5, 1.5, -1.5, 0.49, 126.6, 200.0, -200.0])
    np.testing.assert_array_equal(golden.quantize_input(x * 0.25, 0.25),
                                  [1, 0, 2, -1, 0, 127, 127, -128])
    np.testing.assert_array_equal(golden.dequantize(np.array([-128, 3], dtype=np.int8), 0.5),
                                  [-64.0, 1.5])


def test_run_quantized_dequantizes_every_value():
    qgraph = quantized_one_op(ir.Activation("relu"), (4,))
    x = np.array([[-127, -32, 32, 127]]) / 127  # on the int8 grid of input range 1
    values = golden.run_quantized(qgraph, {"x": x}, keep=True)
    assert set(values) == {"x", "y"}
    np.testing.assert_allclose(values["x"], x)
    assert values["y"].dtype == np.float64 and np.all(values["y"][0, :2] == 0)


def test_sqnr_db():
    assert golden.sqnr_db([1.0, 2.0], [1.0, 2.0]) == float("inf")
    assert golden.sqnr_db([3.0, 4.0], [3.0, 4.5]) == pytest.approx(20.0)
    assert golden.sqnr_db(np.ones(4), np.ones(4) * 1.1) == pytest.approx(20.0)
