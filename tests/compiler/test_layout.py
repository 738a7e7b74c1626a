"""Channel-last graphs: the layout Transposes that import removes, and the model's boundary
kept in the ONNX layout."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from flexigan import flow
from flexigan.compiler import ir, layout
from flexigan.compiler.evaluate import run_float
from flexigan.compiler.onnx_import import import_model
from flexigan.errors import UnsupportedError
from flexigan.inputs import load_inputs
from tests.helpers import check_bit_exact, make_model, quantized, save


def ops(graph):
    return [type(n.op).__name__ for _, n in ir.topo_nodes(graph)]


def onnxruntime(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.astype(np.float32) for k, v in feeds.items()})


def channels_last_generator(seed=0):
    """What tf2onnx makes of a Keras generator: z (N, 6) -> MatMul -> Add -> Mul (a
    BatchNormalization of a vector) -> LeakyRelu -> Reshape (N, 2, 3, 4) -> Transpose to NCHW ->
    ConvTranspose -> Relu -> Transpose to NHWC (N, 4, 6, 5)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["z", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Mul", ["a", "g"], ["bn"]),
        helper.make_node("LeakyRelu", ["bn"], ["act"], alpha=0.2),
        helper.make_node("Reshape", ["act", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("ConvTranspose", ["nchw", "wt"], ["ct"], kernel_shape=[4, 4],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["ct"], ["relu"]),
        helper.make_node("Transpose", ["relu"], ["image"], perm=[0, 2, 3, 1]),
    ]
    inits = {"w": rng.normal(0, 0.5, (6, 24)), "b": rng.normal(0, 0.1, 24),
             "g": rng.uniform(0.5, 1.5, 24), "shape": np.array([-1, 2, 3, 4]),
             "wt": rng.normal(0, 0.3, (4, 5, 4, 4))}
    return make_model(nodes, [("z", ["N", 6])], [("image", ["N", 4, 6, 5])], inits)


def channels_last_discriminator(seed=0):
    """What tf2onnx makes of a Keras discriminator: image (N, 6, 4, 3) -> Transpose to NCHW ->
    Conv -> LeakyRelu -> Transpose to NHWC -> Reshape (N, 48) (a Flatten) -> MatMul -> Add ->
    Sigmoid."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "wc", "bc"], ["c"], kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["c"], ["act"], alpha=0.2),
        helper.make_node("Transpose", ["act"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["nhwc", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    inits = {"wc": rng.normal(0, 0.3, (8, 3, 3, 3)), "bc": rng.normal(0, 0.1, 8),
             "shape": np.array([-1, 48]), "w": rng.normal(0, 0.3, (48, 2)),
             "b": rng.normal(0, 0.1, 2)}
    return make_model(nodes, [("image", ["N", 6, 4, 3])], [("score", ["N", 2])], inits)


MODELS = {"generator": (channels_last_generator, "z", (6,)),
          "discriminator": (channels_last_discriminator, "image", (6, 4, 3))}


@pytest.mark.parametrize("name", MODELS)
def test_layout_transposes_are_removed_and_the_float_ir_matches_onnxruntime(name):
    make, input_name, shape = MODELS[name]
    graph = import_model(make())
    assert "Transpose" not in ops(graph)
    x = np.random.default_rng(1).standard_normal((3, *shape))
    ir_x = layout.to_ir(graph, input_name, x)
    (output,) = graph.graph["outputs"]
    got = layout.to_onnx(graph, output, run_float(graph, {input_name: ir_x})[output])
    np.testing.assert_allclose(got, onnxruntime(make(), {input_name: x})[0], rtol=1e-5,
                               atol=1e-5)
    assert layout.onnx_shape(graph, input_name) == shape


def test_the_boundary_records_the_permutation_to_the_onnx_layout():
    graph = import_model(channels_last_discriminator())
    assert ir.node(graph, "image").shape == (3, 6, 4)
    assert graph.graph["layouts"] == {"image": [1, 2, 0]}
    x = np.arange(2 * 6 * 4 * 3).reshape(2, 6, 4, 3)
    np.testing.assert_array_equal(layout.to_ir(graph, "image", x), x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(layout.to_onnx(graph, "image", layout.to_ir(graph, "image", x)),
                                  x)
    generator = import_model(channels_last_generator())
    assert generator.graph["outputs"] == ["relu"]
    assert generator.graph["layouts"] == {"relu": [1, 2, 0]}
    assert layout.onnx_shape(generator, "relu") == (4, 6, 5)


def test_reordered_values_are_renamed():
    # The Dense computes its rows in CHW order: no report may compare it with the ONNX tensor
    # of its old name. The Reshape takes the name of the Transpose, whose tensor it now is.
    graph = import_model(channels_last_generator())
    names = set(graph.nodes)
    assert {"act" + layout.RENAMED, "nchw"} <= names and not {"act", "r"} & names
    assert ir.node(graph, "nchw").shape == (4, 2, 3)


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_models_run_bit_exact_on_the_instruction_level_simulator(name):
    qgraph, inputs = quantized(MODELS[name][0]())
    check_bit_exact(qgraph, inputs)


def test_a_transpose_that_moves_data_stays_and_the_back_end_reports_it():
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("Relu", ["t"], ["y"])]
    graph = import_model(make_model(nodes, [("x", ["N", 2, 3, 4])], [("y", ["N", 2, 4, 3])]))
    assert "Transpose" in ops(graph) and graph.graph["layouts"] == {}
    qgraph, _ = quantized(make_model(nodes, [("x", ["N", 2, 3, 4])], [("y", ["N", 2, 4, 3])]))
    with pytest.raises(UnsupportedError, match="t \\(Transpose\\): not lowered"):
        check_bit_exact(qgraph, {})


@pytest.mark.parametrize("name, output_shape", [("generator", (4, 6, 5)),
                                                ("discriminator", (2,))])
def test_the_flow_reads_and_writes_arrays_in_the_onnx_layout(tmp_path, name, output_shape):
    make, input_name, shape = MODELS[name]
    model = save(make(), tmp_path / "m.onnx")
    x = np.random.default_rng(2).uniform(-1, 1, (4, *shape))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    state = flow.compile_model(model, out, calibrate=tmp_path / "x.npy", rtl=False,
                               log=lambda message: None)
    np.testing.assert_array_equal(load_inputs(state.graph, tmp_path / "x.npy")[input_name],
                                  layout.to_ir(state.graph, input_name, x))
    report = flow.simulate(out, "isa", tmp_path / "x.npy", log=lambda message: None)
    assert report["bit_exact_vs_golden"] and report["sqnr_db"] >= 30
    assert np.load(out / "output.npy").shape == (4, *output_shape)


def keras_upsampling(tiles=(1, 1, 1, 2, 1), seed=0):
    """Keras 3's UpSampling2D of a Conv's output as tf2onnx writes it (Unsqueeze, Tile, a 5-D
    Transpose, Reshape, then again for the width, and the Transpose back to NCHW), and a
    Concat with a ConvTranspose of the same input on the channel axis: x (N, 4, 3, 3) ->
    (N, 10, 6, 6)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "wc"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Unsqueeze", ["c", "axis3"], ["u1"]),
        helper.make_node("Tile", ["u1", "tiles"], ["t1"]),
        helper.make_node("Transpose", ["t1"], ["p1"], perm=[0, 2, 3, 4, 1]),
        helper.make_node("Reshape", ["p1", "rows"], ["r1"]),
        helper.make_node("Unsqueeze", ["r1", "axis3"], ["u2"]),
        helper.make_node("Tile", ["u2", "tiles"], ["t2"]),
        helper.make_node("Reshape", ["t2", "image"], ["r2"]),
        helper.make_node("Transpose", ["r2"], ["up"], perm=[0, 3, 1, 2]),
        helper.make_node("ConvTranspose", ["x", "wt"], ["ct"], kernel_shape=[4, 4],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["up", "ct"], ["cat"], axis=1),
        helper.make_node("Relu", ["cat"], ["y"]),
    ]
    inits = {"wc": rng.normal(0, 0.5, (4, 4, 1, 1)), "axis3": np.array([3]),
             "tiles": np.array(tiles), "rows": np.array([-1, 6, 3, 4]),
             "image": np.array([-1, 6, 6, 4]), "wt": rng.normal(0, 0.3, (4, 6, 4, 4))}
    return make_model(nodes, [("x", ["N", 4, 3, 3])], [("y", ["N", 10, 6, 6])], inits)


def test_keras_upsampling_becomes_one_upsample_and_runs_bit_exact():
    graph = import_model(keras_upsampling())
    assert ops(graph) == ["Input", "Conv", "ConvTranspose", "Upsample", "Concat", "Activation"]
    assert ir.node(graph, "up").op.scales == (2, 2)
    x = np.random.default_rng(1).standard_normal((2, 4, 3, 3))
    np.testing.assert_allclose(run_float(graph, {"x": x})["y"],
                               onnxruntime(keras_upsampling(), {"x": x})[0], rtol=1e-5,
                               atol=1e-5)
    qgraph, inputs = quantized(keras_upsampling())
    check_bit_exact(qgraph, inputs)


def test_a_tile_that_is_not_an_upsampling_stays_and_the_back_end_reports_it():
    # The whole image repeated 2 x 2 times (np.tile), not each pixel.
    model = keras_upsampling()
    nodes = [n for n in model.graph.node if n.output[0] not in
             ("u1", "t1", "p1", "r1", "u2", "t2", "r2", "up")]
    nodes.insert(1, helper.make_node("Tile", ["c", "whole"], ["up"]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 2, 2]), "whole"))
    graph = import_model(model)
    assert "Tile" in ops(graph)
    qgraph, _ = quantized(model)
    with pytest.raises(UnsupportedError, match="\\(Tile\\): not lowered"):
        check_bit_exact(qgraph, {})
