"""ONNX's own conformance cases for every supported op, through import and the golden model.

Each single-op case from ``onnx.backend.test.case.node.collect_testcases`` whose op flexigan
supports is imported (first as-is; if run-time operands other than the first are needed as
constants — weights, per-channel factors — they are bound to the case's data as initializers,
which is how they arrive from a real exporter) and then:

- run in float by the golden interpreter: must match ONNX's expected output (rtol 1e-4);
- quantized to int8 (calibrated on the case's own input) and run by the golden interpreter:
  must reach SQNR >= ``QUANT_SQNR_DB`` against ONNX's expected output. That is the stated
  quantization tolerance of one int8 layer (symmetric int8 has ~48 dB of range; input and output
  rounding, weight rounding and LUT steps leave well over 30 dB on these cases).

Cases of supported ops that use a variant flexigan rejects are pinned in ``UNSUPPORTED`` with
the reason: they must fail with that clear reason, and no other case may fail.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases

from flexigan.compiler import passes, quant
from flexigan.compiler.evaluate import run_float
from flexigan.compiler.onnx_import import SUPPORTED_OPS, import_model
from flexigan.errors import UnsupportedError
from flexigan.sim import golden

QUANT_SQNR_DB = 30.0

#: case name -> the reason the importer gives (conformance_unsupported.json): int-typed tensors,
#: linear/cubic/downsampling Resize, layout ops that move the batch axis, training-mode ops,
#: constants that vary within a channel, 3-D convolutions.
UNSUPPORTED = json.loads((Path(__file__).with_name("conformance_unsupported.json")).read_text())


def _cases():
    out = []
    with warnings.catch_warnings():  # ONNX's case generators for other ops warn on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        cases = collect_testcases(None)
    for case in cases:
        if case.model is None or not case.data_sets:
            continue
        kinds = {n.op_type for n in case.model.graph.node}
        if len(kinds) == 1 and kinds <= set(SUPPORTED_OPS) and \
                all(n.domain in ("", "ai.onnx") for n in case.model.graph.node):
            out.append(case)
    return sorted(out, key=lambda c: c.name)


CASES = _cases()


def _bind_constants(model, inputs):
    """A copy of ``model`` whose graph inputs after the first are initializers."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    keep = model.graph.input[0]
    for value, data in zip(list(model.graph.input)[1:], inputs[1:]):
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(data), value.name))
    del model.graph.input[:]
    model.graph.input.append(keep)
    return model, inputs[:1]


def _import(case):
    inputs, expected = case.data_sets[0]
    try:
        return import_model(case.model), inputs, expected
    except UnsupportedError:
        model, inputs = _bind_constants(case.model, inputs)
        return import_model(model), inputs, expected


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance_case(case):
    if case.name in UNSUPPORTED:
        with pytest.raises(UnsupportedError) as err:
            _import(case)
        assert UNSUPPORTED[case.name] in str(err.value)
        return
    graph, inputs, expected = _import(case)
    graph = passes.run_passes(graph)
    feeds = {name: np.asarray(x, dtype=np.float64) for name, x in
             zip(graph.graph["inputs"], inputs)}
    got = run_float(graph, feeds)
    want = expected[0]
    np.testing.assert_allclose(got[graph.graph["outputs"][0]], want, rtol=1e-4, atol=1e-5)

    qgraph = quant.quantize(graph, quant.calibrate(graph, feeds))
    q = golden.run_quantized(qgraph, feeds)[qgraph.graph["outputs"][0]]
    assert golden.sqnr_db(want, q) >= QUANT_SQNR_DB


def test_the_supported_ops_all_have_conformance_cases():
    covered = {n.op_type for c in CASES for n in c.model.graph.node}
    assert covered == set(SUPPORTED_OPS)
