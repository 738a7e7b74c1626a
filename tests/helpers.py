"""Small ONNX model builders shared by the tests."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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
