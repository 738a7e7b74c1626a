"""Pre-quantized models: QuantizeLinear/DequantizeLinear pairs imported with their own steps,
no calibration; what the machine cannot represent refused per tensor, or re-calibrated."""

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from flexigan import flow
from flexigan.compiler import ir, passes, quant
from flexigan.compiler.onnx_import import import_model
from flexigan.errors import ModelError
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
