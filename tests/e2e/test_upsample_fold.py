"""Nearest upsampling folded into the convolution after it (``passes.fold_upsample``), end to
end: the folded model compiles, golden and ISA agree bit for bit, and it stays close to
onnxruntime's float model, layer by layer."""

import numpy as np
import pytest
from onnx import helper

from flexigan import flow
from flexigan.compiler import ir, passes, quant
from flexigan.compiler.evaluate import run_float
from flexigan.compiler.onnx_import import import_model
from flexigan.compiler.serialize import load_graph
from flexigan.sim import golden
from tests.helpers import check_bit_exact, make_model, quantized, save, spread_model

QUIET = dict(log=lambda message: None)


def resize_conv_generator():
    """x 3x6x5 -> conv 3x3 -> ReLU -> Resize x2 -> conv 3x3 "c2" -> BN -> LeakyReLU
    -> Resize (3, 2) -> conv 5x3 "c3" (pads 2, 1) -> Tanh: 3x36x20."""
    rng = np.random.default_rng(12)
    inits = {"w1": rng.normal(0, 0.3, (5, 3, 3, 3)), "b1": rng.normal(0, 0.1, 5),
             "w2": rng.normal(0, 0.2, (4, 5, 3, 3)), "b2": rng.normal(0, 0.1, 4),
             "g": rng.uniform(0.5, 1.5, 4), "b": rng.normal(0, 0.1, 4),
             "m": rng.normal(0, 0.2, 4), "v": rng.uniform(0.5, 2, 4),
             "w3": rng.normal(0, 0.2, (3, 4, 5, 3)), "b3": rng.normal(0, 0.1, 3),
             "s1": np.array([1.0, 1.0, 2.0, 2.0]), "s2": np.array([1.0, 1.0, 3.0, 2.0])}
    resize = dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                  nearest_mode="floor")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Resize", ["r1", "", "s1"], ["u1"], **resize),
        helper.make_node("Conv", ["u1", "w2", "b2"], ["c2"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "g", "b", "m", "v"], ["bn"]),
        helper.make_node("LeakyRelu", ["bn"], ["r2"], alpha=0.2),
        helper.make_node("Resize", ["r2", "", "s2"], ["u2"], **resize),
        helper.make_node("Conv", ["u2", "w3", "b3"], ["c3"], kernel_shape=[5, 3],
                         pads=[2, 1, 2, 1]),
        helper.make_node("Tanh", ["c3"], ["image"]),
    ]
    return make_model(nodes, [("x", ["N", 3, 6, 5])], [("image", ["N", 3, 36, 20])], inits)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("fold")
    model = save(resize_conv_generator(), root / "g.onnx")
    config = flow.target_config("sim", groups=4, lanes=4)
    flow.compile_model(model, root / "out", config=config, rtl=False, **QUIET)
    np.save(root / "x.npy", np.random.default_rng(5).uniform(-1, 1, (4, 3, 6, 5)))
    return root


def test_the_upsamplings_are_folded_into_convtransposes(compiled):
    graph = load_graph(compiled / "out/steps/fold_upsample.npz")
    kinds = {name: type(n.op).__name__ for name, n in ir.topo_nodes(graph)}
    # fold_affine gave the second conv the BatchNorm's name; fold_upsample keeps it.
    assert kinds == {"x": "Input", "c1": "Conv", "r1": "Activation", "bn": "ConvTranspose",
                     "r2": "Activation", "c3": "ConvTranspose", "image": "Activation"}
    assert ir.node(graph, "c3").op.strides == (3, 2)


def test_golden_and_isa_are_bit_exact_and_near_the_float_model(compiled):
    out, x = compiled / "out", compiled / "x.npy"
    reference = flow.simulate(out, "golden", x, output_path=compiled / "golden.npy", **QUIET)
    isa = flow.simulate(out, "isa", x, output_path=compiled / "isa.npy", **QUIET)
    np.testing.assert_array_equal(np.load(compiled / "golden.npy"), np.load(compiled / "isa.npy"))
    assert reference["sqnr_db"] >= 25 and isa["sqnr_db"] == reference["sqnr_db"]
    layers = {layer["name"]: layer["sqnr_db"] for layer in reference["layers"]}
    assert {"bn", "c3"} <= set(layers) and min(layers.values()) >= 25, layers


def test_folding_costs_the_int8_model_little_accuracy():
    # A summed tap can be up to s*s times a single one, so per-channel int8 weights get
    # coarser; measured, the folded model loses under half a dB on every shared value.
    graph = import_model(resize_conv_generator())
    calibration = {"x": np.random.default_rng(0).uniform(-1, 1, (64, 3, 6, 5))}
    feeds = {"x": np.random.default_rng(5).uniform(-1, 1, (16, 3, 6, 5))}
    reference = run_float(graph, feeds, keep=True)
    sqnr = []
    for float_passes in ((passes.fold_affine,), passes.FLOAT_PASSES):
        g = passes.run_passes(graph, float_passes)
        got = golden.run_quantized(quant.quantize(g, quant.calibrate(g, calibration)), feeds,
                                   keep=True)
        sqnr.append({k: golden.sqnr_db(reference[k], got[k]) for k in ("bn", "c3", "image")})
    unfolded, folded = sqnr
    assert all(folded[k] > unfolded[k] - 1 for k in folded), sqnr


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("kind", ["resize", "resize 3x2", "input", "shared", "large resize",
                                  "large input"])
def test_folded_resize_conv_blocks_are_bit_exact(kind, reorder):
    # The resize-conv blocks of tests/compiler/test_lower.py, folded: ISA == golden. "shared"
    # keeps the Upsample that an Add reads; the conventional baseline folds none (it copies).
    qgraph, inputs = quantized(spread_model(kind), reorder=reorder)
    upsamples = [n for n, node in ir.topo_nodes(qgraph) if isinstance(node.op, ir.Upsample)]
    assert len(upsamples) == (kind == "shared") + (not reorder)
    check_bit_exact(qgraph, inputs, reorder=reorder)


def test_the_conventional_baseline_does_not_fold(tmp_path):
    model = save(resize_conv_generator(), tmp_path / "g.onnx")
    flow.compile_model(model, tmp_path / "out", reorder=False, rtl=False,
                       stop_after="fold_upsample", **QUIET)
    graph = load_graph(tmp_path / "out/steps/fold_upsample.npz")
    assert [n for n, node in ir.topo_nodes(graph) if isinstance(node.op, ir.Upsample)] == \
        ["u1", "u2"]
