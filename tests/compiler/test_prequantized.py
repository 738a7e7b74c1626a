"""Pre-quantized models: QuantizeLinear/DequantizeLinear pairs imported with their own steps,
no calibration; what the machine cannot represent refused per tensor, or re-calibrated."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from flexigan import flow
from flexigan.cli import main
from flexigan.compiler import ir, passes, quant
from flexigan.compiler.onnx_import import import_model
from flexigan.errors import ModelError
from flexigan.sim import golden
from tests.helpers import EXAMPLES

QUIET = dict(log=lambda message: None)


class Latents(CalibrationDataReader):
    """onnxruntime's calibration data: standard-normal latents of the digits generator."""

    def __init__(self, count=32, seed=0):
        rng = np.random.default_rng(seed)
        self.feeds = iter([{"z": rng.standard_normal((1, 16, 1, 1)).astype(np.float32)}
                           for _ in range(count)])

    def get_next(self):
        return next(self.feeds, None)


def qdq_digits(tmp_path, symmetric=True, per_channel=True):
    """The digits generator as onnxruntime's static quantization makes it (QDQ format, int8
    weights; symmetric int8 activations, or asymmetric uint8 ones)."""
    path, source = tmp_path / "qdq.onnx", tmp_path / "float.onnx"
    # onnxruntime writes its intermediate models beside the source: a copy keeps them here.
    shutil.copyfile(EXAMPLES / "digits/generator.onnx", source)
    activations = QuantType.QInt8 if symmetric else QuantType.QUInt8
    quantize_static(str(source), str(path), Latents(),
                    quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=activations, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    return path


def model_codes(path):
    """The int8 weight codes of the QDQ model, by the name of the layer that reads them."""
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dequantized = {n.output[0]: inits[n.input[0]] for n in model.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    return {n.output[0]: dequantized[n.input[1]] for n in model.graph.node
            if n.op_type == "ConvTranspose"}


@pytest.mark.parametrize("per_channel", [True, False])
def test_the_model_gives_every_step_and_its_weight_codes_are_kept(tmp_path, per_channel):
    path = qdq_digits(tmp_path, per_channel=per_channel)
    graph = passes.run_passes(import_model(path))
    assert quant.needs_range(graph) == []
    assert "z" in graph.graph["scales"]
    qgraph = quant.quantize(graph, {})
    codes = model_codes(path)
    assert len(codes) == 3
    for layer, expected in codes.items():
        np.testing.assert_array_equal(ir.node(qgraph, layer).q.weight, expected)
    onnx_steps = {t.name: float(numpy_helper.to_array(t)) for t in onnx.load(path).graph.initializer
                  if t.name == "z_scale"}
    assert ir.node(qgraph, "z").scale == pytest.approx(onnx_steps["z_scale"], rel=1e-7)


def test_a_qdq_model_runs_with_its_own_steps_against_onnxruntime_running_it(tmp_path):
    path = qdq_digits(tmp_path)
    out = tmp_path / "out"
    flow.compile_model(path, out, rtl=False, **QUIET)
    assert (out / "steps/calibrate.json").read_text().strip() == "{}"
    np.save(tmp_path / "z.npy", np.random.default_rng(7).standard_normal((16, 16, 1, 1)))
    report = flow.simulate(out, "isa", tmp_path / "z.npy", **QUIET)
    assert report["bit_exact_vs_golden"]
    # The reference is onnxruntime running the QDQ model itself (out/model.onnx); what is left
    # is rounding (docs/user-guide.md, "Pre-quantized models").
    assert report["sqnr_db"] >= 40


def test_asymmetric_activations_are_refused_per_tensor_or_recalibrated(tmp_path):
    path = qdq_digits(tmp_path, symmetric=False)
    with pytest.raises(ModelError) as err:
        import_model(path)
    message = str(err.value)
    assert "\n" not in message and "--requantize" in message
    assert "z_QuantizeLinear_Output (uint8 codes, not int8)" in message
    graph = passes.run_passes(import_model(path, requantize=True))
    assert "z" in quant.needs_range(graph)
    out = tmp_path / "out"
    flow.compile_model(path, out, rtl=False, requantize=True, **QUIET)
    np.save(tmp_path / "z.npy", np.random.default_rng(7).standard_normal((16, 16, 1, 1)))
    report = flow.simulate(out, "isa", tmp_path / "z.npy", **QUIET)
    assert report["bit_exact_vs_golden"] and report["sqnr_db"] >= 30


def conv_relu(form, narrow=1, bits=8, seed=0):
    """x (N, 4, 5, 5) -> Conv 3x3 (6 channels, per-channel weight steps) -> Relu, every value
    quantized to int8 with the same steps, as QDQ pairs (``form="qdq"``) or as QONNX Quant
    nodes (``"qonnx"``)."""
    rng = np.random.default_rng(seed)
    steps = {"x": 0.02, "c": 0.05}
    w_steps = rng.uniform(0.005, 0.02, 6)
    codes = rng.integers(-127, 128, (6, 4, 3, 3))
    inits = {"w_steps": w_steps, "zero": np.zeros((), np.int8)}
    if form == "qdq":
        inits.update(codes=codes.astype(np.int8), w_zero=np.zeros(6, np.int8),
                     **{f"s_{k}": np.array(v) for k, v in steps.items()})
        quantize = [helper.make_node("DequantizeLinear", ["codes", "w_steps", "w_zero"], ["w"],
                                     axis=0)]
        for src, step, dst in (("x", "s_x", "xq"), ("c", "s_c", "cq"), ("r", "s_c", "y")):
            quantize += [helper.make_node("QuantizeLinear", [src, step, "zero"], [dst + "8"]),
                         helper.make_node("DequantizeLinear", [dst + "8", step, "zero"], [dst])]
        domain = []
    else:
        inits.update(w_real=codes * w_steps[:, None, None, None],
                     w_scale=w_steps.reshape(6, 1, 1, 1), bits=np.array(float(bits)),
                     zp=np.array(0.0), **{f"s_{k}": np.array(v) for k, v in steps.items()})
        qonnx = "qonnx.custom_op.general"
        quantize = [helper.make_node("Quant", ["w_real", "w_scale", "zp", "bits"], ["w"],
                                     domain=qonnx, narrow=narrow, signed=1,
                                     rounding_mode="ROUND")]
        quantize += [helper.make_node("Quant", [src, step, "zp", "bits"], [dst], domain=qonnx,
                                      narrow=0, signed=1, rounding_mode="ROUND")
                     for src, step, dst in (("x", "s_x", "xq"), ("c", "s_c", "cq"),
                                            ("r", "s_c", "y"))]
        domain = [helper.make_opsetid(qonnx, 1)]
    # In graph order: the weights' and the input's quantization, Conv, its quantization, Relu,
    # its quantization.
    per_value = len(quantize[1:]) // 3
    nodes = quantize[:1 + per_value] + \
        [helper.make_node("Conv", ["xq", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])] \
        + quantize[1 + per_value:1 + 2 * per_value] + [helper.make_node("Relu", ["cq"], ["r"])] \
        + quantize[1 + 2 * per_value:]
    graph = helper.make_graph(
        nodes, "conv_relu",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4, 5, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 6, 5, 5])],
        [numpy_helper.from_array(v if v.dtype.kind == "i" else v.astype(np.float32), k)
         for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *domain])
    onnx.checker.check_model(model)
    return model


def test_qonnx_quant_nodes_import_as_the_same_qdq_quantization():
    quantized = {}
    for form in ("qdq", "qonnx"):
        graph = passes.run_passes(import_model(conv_relu(form)))
        assert quant.needs_range(graph) == []
        quantized[form] = quant.quantize(graph, {})
    qdq, qonnx = quantized["qdq"], quantized["qonnx"]
    for name in ("x", "c", "r"):
        assert ir.node(qonnx, name).scale == pytest.approx(ir.node(qdq, name).scale, rel=1e-7)
    np.testing.assert_array_equal(ir.node(qonnx, "c").q.weight, ir.node(qdq, "c").q.weight)
    x = {"x": golden.quantize_input(np.random.default_rng(1).uniform(-2, 2, (2, 4, 5, 5)),
                                    ir.node(qdq, "x").scale)}
    np.testing.assert_array_equal(golden.run_int(qonnx, x)["r"], golden.run_int(qdq, x)["r"])


def test_qonnx_quantization_the_machine_cannot_represent_is_named():
    with pytest.raises(ModelError, match="4 pre-quantized tensor.*: w \\(codes in \\[-7, 7\\], "
                                         "not int8\\); xq \\(codes in \\[-8, 7\\], not int8\\)"):
        import_model(conv_relu("qonnx", bits=4))
    graph = passes.run_passes(import_model(conv_relu("qonnx", bits=4), requantize=True))
    assert {"x", "c", "r"} <= set(quant.needs_range(graph))


def test_a_qonnx_model_compiles_without_calibration_and_runs_bit_exact(tmp_path):
    # onnxruntime has no kernel for QONNX's Quant: no float reference, no SQNR, said in a line.
    path = tmp_path / "qonnx.onnx"
    onnx.save(conv_relu("qonnx"), path)
    out = tmp_path / "out"
    flow.compile_model(path, out, rtl=False, **QUIET)
    assert (out / "steps/calibrate.json").read_text().strip() == "{}"
    np.save(tmp_path / "x.npy", np.random.default_rng(1).uniform(-2, 2, (2, 4, 5, 5)))
    lines = []
    report = flow.simulate(out, "isa", tmp_path / "x.npy", log=lines.append)
    assert report["bit_exact_vs_golden"] and "sqnr_db" not in report
    assert any("cannot run the model" in line for line in lines)


def test_the_command_line_refuses_in_one_line_and_requantizes_on_request(tmp_path, capsys):
    path = qdq_digits(tmp_path, symmetric=False)
    capsys.readouterr()
    status = main(["compile", str(path), "-o", str(tmp_path / "out"), "--no-rtl"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].startswith("flexigan: error: ")
    assert "cannot represent" in err[0] and "--requantize" in err[0]
    assert main(["compile", str(path), "-o", str(tmp_path / "out"), "--no-rtl",
                 "--requantize"]) == 0
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["requantize"] is True
