"""Write a 32x32 DCGAN-style generator as ONNX (``generator.onnx`` next to this script).

Run from the repository root::

    python examples/dcgan32/make.py

The structure is the DCGAN generator scaled to 32x32 RGB images: a latent of ``NZ`` values,
four transposed convolutions (4x4 kernels; the first from 1x1 to 4x4, the others stride 2 with
padding 1), BatchNormalization and ReLU between them, Tanh at the end. Weights are seeded
DCGAN initialisations (normal, std 0.02; BN scale normal around 1). Each BatchNormalization gets
the statistics of its input over a batch of standard-normal latents, as a network trained with
them would carry, so folding them is not trivial. Built with onnx.helper and checked with
onnx.checker and onnxruntime; no deep-learning framework is needed.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SEED = 0
NZ, NGF, NC = 64, 32, 3
STAT_SAMPLES = 256
OPSET = 17
#: (input channels, output channels, stride, pad) of each transposed convolution.
LAYERS = [(NZ, NGF * 4, 1, 0), (NGF * 4, NGF * 2, 2, 1), (NGF * 2, NGF, 2, 1), (NGF, NC, 2, 1)]


def _model(nodes, inits, output, shape):
    graph = helper.make_graph(
        nodes, "dcgan32_generator",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", NZ, 1, 1])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", *shape])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="flexigan examples/dcgan32/make.py")
    model.ir_version = 8
    return model


def _run(model, z):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"z": z})[0]


def build():
    rng = np.random.default_rng(SEED)
    z = rng.standard_normal((STAT_SAMPLES, NZ, 1, 1)).astype(np.float32)
    nodes, inits = [], {}
    x, size = "z", 1
    for i, (cin, cout, stride, pad) in enumerate(LAYERS):
        inits[f"w{i}"] = rng.normal(0, 0.02, (cin, cout, 4, 4))
        y = f"convt{i}"
        nodes.append(helper.make_node("ConvTranspose", [x, f"w{i}"], [y], name=y,
                                      kernel_shape=[4, 4], strides=[stride, stride],
                                      pads=[pad] * 4))
        size = (size - 1) * stride - 2 * pad + 4
        if i == len(LAYERS) - 1:
            nodes.append(helper.make_node("Tanh", [y], ["image"], name="image"))
            return _model(nodes, inits, "image", (cout, size, size))
        pre = _run(_model(nodes, inits, y, (cout, size, size)), z)
        inits[f"bn{i}_scale"] = rng.normal(1, 0.02, cout)
        inits[f"bn{i}_bias"] = np.zeros(cout)
        inits[f"bn{i}_mean"] = pre.mean(axis=(0, 2, 3))
        inits[f"bn{i}_var"] = pre.var(axis=(0, 2, 3))
        nodes.append(helper.make_node(
            "BatchNormalization", [y, f"bn{i}_scale", f"bn{i}_bias", f"bn{i}_mean",
                                   f"bn{i}_var"], [f"bn{i}"], name=f"bn{i}", epsilon=1e-5))
        x = f"relu{i}"
        nodes.append(helper.make_node("Relu", [f"bn{i}"], [x], name=x))


def main():
    model = build()
    onnx.checker.check_model(model, full_check=True)
    out = _run(model, np.random.default_rng(1).standard_normal((4, NZ, 1, 1)).astype(np.float32))
    assert out.shape == (4, NC, 32, 32) and 0.01 < out.std() < 0.99, out.std()
    onnx.save(model, HERE / "generator.onnx")
    print(f"wrote {HERE / 'generator.onnx'}: output {out.shape[1:]}, std {out.std():.3f}")


if __name__ == "__main__":
    main()
