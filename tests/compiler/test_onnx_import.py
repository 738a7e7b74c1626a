"""ONNX import: legalization, constant folding, and the errors users see."""

import numpy as np
import onnx
import pytest
from onnx import helper

from flexigan.compiler import ir
from flexigan.compiler.onnx_import import import_model
from flexigan.errors import ModelError, UnsupportedError
from tests.helpers import EXAMPLES, make_model, save, tiny_generator


def ops(graph):
    return [type(n.op).__name__ for _, n in ir.topo_nodes(graph)]


def test_tiny_generator_imports_with_dynamic_batch():
    graph = import_model(tiny_generator())
    assert graph.graph["inputs"] == ["z"] and graph.graph["outputs"] == ["image"]
    assert ops(graph) == ["Input", "ConvTranspose", "Affine", "Activation", "ConvTranspose",
                          "Activation"]
    assert ir.node(graph, "image").shape == (2, 4, 4)
    assert ir.node(graph, "c2").op.output_padding == (1, 1)


@pytest.mark.parametrize("name", ["dcgan64/generator", "dcgan64/discriminator",
                                  "digits/generator", "digits/discriminator"])
def test_examples_import(name):
    graph = import_model(EXAMPLES / f"{name}.onnx")
    assert ir.verify(graph) is graph


def test_pytorch_style_shape_chain_is_folded():
    # Reshape whose target comes from Shape -> Gather -> Unsqueeze -> Concat, as PyTorch's
    # x.view(x.size(0), -1) exports it.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w"], ["y"], transB=1),
    ]
    inits = {"zero": np.array(0), "axes": np.array([0]), "minus1": np.array([-1]),
             "w": np.ones((5, 12))}
    model = make_model(nodes, [("x", ["N", 3, 2, 2])], [("y", ["N", 5])], inits)
    graph = import_model(model)
    assert ops(graph) == ["Input", "Reshape", "Dense"]
    assert ir.node(graph, "flat").shape == (12,)


def test_convtranspose_output_shape_and_auto_pad_resolve_to_pads():
    w = np.zeros((1, 2, 3, 3))
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[3, 2],
                            output_shape=[10, 8])
    graph = import_model(make_model([node], [("x", [1, 1, 3, 3])], [("y", [1, 2, 10, 8])],
                                    {"w": w}))
    op = ir.node(graph, "y").op
    assert ir.node(graph, "y").shape == (2, 10, 8)
    assert op.pads == (0, 0, 0, 0) and op.output_padding == (1, 1)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2],
                            auto_pad="SAME_UPPER")
    graph = import_model(make_model([node], [("x", [1, 1, 3, 3])], [("y", [1, 2, 6, 6])],
                                    {"w": w}))
    assert ir.node(graph, "y").op.pads == (0, 0, 1, 1)


def test_all_unsupported_ops_are_reported_at_once_with_node_names():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("Softmax", ["a"], ["b"], name="soft"),
        helper.make_node("MaxPool", ["x"], ["c"], name="pool", kernel_shape=[2, 2]),
        helper.make_node("Resize", ["x", "", "scales"], ["d"], name="bilinear", mode="linear"),
    ]
    model = make_model(nodes, [("x", [1, 2, 4, 4])],
                       [("b", [1, 2, 4, 4]), ("c", [1, 2, 3, 3]), ("d", [1, 2, 8, 8])],
                       {"scales": [1.0, 1.0, 2.0, 2.0]})
    with pytest.raises(UnsupportedError) as err:
        import_model(model)
    names = [p[0] for p in err.value.problems]
    assert names == ["soft", "pool", "bilinear"]
    message = str(err.value)
    assert message.startswith("unsupported: 3 node(s): soft (Softmax): operator not supported")
    assert "bilinear (Resize): mode 'linear' (only nearest is supported)" in message
    assert "\n" not in message


def test_non_constant_weights_are_unsupported():
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    model = make_model([node], [("x", [1, 1, 3, 3]), ("w", [1, 1, 1, 1])],
                       [("y", [1, 1, 3, 3])])
    with pytest.raises(UnsupportedError, match="Conv weight W must be a constant"):
        import_model(model)


def test_missing_truncated_and_garbage_files(tmp_path):
    with pytest.raises(ModelError, match="cannot read .*missing.onnx"):
        import_model(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\x00 this is not a protobuf" * 10)
    with pytest.raises(ModelError, match="not a valid ONNX file"):
        import_model(garbage)
    data = (EXAMPLES / "digits/generator.onnx").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        import_model(truncated)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="not a valid ONNX file"):
        import_model(empty)


def test_checker_failure_is_a_model_error(tmp_path):
    model = tiny_generator()
    model.graph.node[2].input[0] = "nowhere"
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="fails the ONNX checker"):
        import_model(path)


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    inside = tmp_path / "model"
    inside.mkdir()
    model = tiny_generator()
    onnx.save(model, str(inside / "g.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    assert import_model(inside / "g.onnx").graph["outputs"] == ["image"]
    escaped = onnx.load(str(inside / "g.onnx"), load_external_data=False)
    for tensor in escaped.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.bin"
    (tmp_path / "secret.bin").write_bytes((inside / "weights.bin").read_bytes())
    save(escaped, inside / "escape.onnx")
    with pytest.raises(ModelError, match="outside the model's folder; refused"):
        import_model(inside / "escape.onnx")


def test_dynamic_non_batch_axis_is_refused():
    node = helper.make_node("Relu", ["x"], ["y"])
    model = make_model([node], [("x", ["N", 3, "H", 4])], [("y", ["N", 3, "H", 4])])
    with pytest.raises(ModelError, match="input 'x' has a dynamic size at axis 2"):
        import_model(model)


def test_old_opset_is_converted():
    node = helper.make_node("Upsample", ["x"], ["y"], mode="nearest", scales=[1.0, 1.0, 2.0, 2.0])
    model = make_model([node], [("x", [1, 1, 2, 2])], [("y", [1, 1, 4, 4])], opset=7)
    graph = import_model(model)
    assert ops(graph) == ["Input", "Upsample"]
    assert ir.node(graph, "y").op.scales == (2, 2)


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
def test_pad_imports_each_mode_with_its_spatial_pads(mode):
    # ONNX pads are (begins..., ends...) over N, C, H, W; the IR's (top, left, bottom, right).
    node = helper.make_node("Pad", ["x", "p"], ["y"], mode=mode)
    model = make_model([node], [("x", ["N", 2, 4, 5])], [("y", ["N", 2, 7, 8])],
                       {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1])})
    pad = ir.node(import_model(model), "y").op
    assert (pad.pads, pad.mode) == ((1, 2, 2, 1), mode)


def test_dropout_at_inference_is_an_alias():
    # pix2pix's inner up blocks export Dropout in eval mode: identity, no IR node.
    nodes = [helper.make_node("Dropout", ["x", "ratio"], ["d"]),
             helper.make_node("Relu", ["d"], ["y"])]
    model = make_model(nodes, [("x", ["N", 2, 3, 3])], [("y", ["N", 2, 3, 3])],
                       {"ratio": np.array(0.5, dtype=np.float32)})
    graph = import_model(model)
    assert ops(graph) == ["Input", "Activation"]
    assert ir.node(graph, "y").inputs == ("x",)
