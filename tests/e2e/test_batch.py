"""Batched programs (``flexigan compile --batch N``), end to end: each weight tile loads once
for N frames, the outputs equal the golden model's sample by sample, and a memory-bound Dense
model's cycles per frame fall."""

import json

import numpy as np
import pytest
from onnx import helper

from flexigan import flow
from flexigan.errors import UsageError
from tests.helpers import make_model, save, tiny_generator

QUIET = dict(log=lambda message: None)


def dense_model():
    """x (N, 512) -> Gemm 512 -> ReLU -> Gemm 128: 327 k weights for 327 k MACs a frame, so
    at batch 1 a frame waits for its weights (memory bound)."""
    rng = np.random.default_rng(4)
    inits = {"w1": rng.normal(0, 0.05, (512, 512)), "b1": rng.normal(0, 0.1, 512),
             "w2": rng.normal(0, 0.05, (128, 512)), "b2": rng.normal(0, 0.1, 128)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["g1"], transB=1),
             helper.make_node("Relu", ["g1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "w2", "b2"], ["y"], transB=1)]
    return make_model(nodes, [("x", ["N", 512])], [("y", ["N", 128])], inits)


def _compile_and_simulate(root, model, batch, inputs, engine="isa"):
    out = root / f"batch{batch}-{engine}"
    flow.compile_model(model, out, rtl=False, batch=batch, **QUIET)
    flow.simulate(out, engine, inputs, out / "y.npy", **QUIET)
    return out, json.loads((out / "sim_report.json").read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    model = save(tiny_generator(), root / "g.onnx")
    np.save(root / "z.npy", np.random.default_rng(3).standard_normal((8, 4, 1, 1)))
    return root, model


def test_a_batch_4_program_is_bit_exact_per_sample_with_the_golden_model(tiny):
    root, model = tiny
    golden_out, _ = _compile_and_simulate(root, model, 1, root / "z.npy", "golden")
    out, report = _compile_and_simulate(root, model, 4, root / "z.npy")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["batch"] == 4 and report["program_batch"] == 4
    assert report["bit_exact_vs_golden"] and report["batch"] == 8
    np.testing.assert_array_equal(np.load(out / "y.npy"), np.load(golden_out / "y.npy"))


def test_a_batched_program_refuses_a_sample_count_not_a_multiple_of_its_batch(tiny):
    root, model = tiny
    out = root / "batch4-refuses"
    flow.compile_model(model, out, rtl=False, batch=4, **QUIET)
    np.save(root / "z6.npy", np.zeros((6, 4, 1, 1)))
    with pytest.raises(UsageError, match="runs 4 frames at once .* multiple of 4 samples, "
                                         "not 6"):
        flow.simulate(out, "isa", root / "z6.npy", **QUIET)


def test_batching_a_memory_bound_dense_model_cuts_its_cycles_per_frame(tmp_path):
    model = save(dense_model(), tmp_path / "d.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(5).uniform(-1, 1, (4, 512)))
    _, single = _compile_and_simulate(tmp_path, model, 1, tmp_path / "x.npy")
    _, batched = _compile_and_simulate(tmp_path, model, 4, tmp_path / "x.npy")
    assert single["roofline"]["bound_at_batch_1"] == "memory"
    assert single["bit_exact_vs_golden"] and batched["bit_exact_vs_golden"]
    assert batched["cycles_per_frame"] < 0.6 * single["cycles_per_frame"], (single, batched)
    # Faster per frame than any batch-1 program can be: below its memory bound.
    assert batched["cycles_per_frame"] < single["memory_bound_cycles"]


def test_a_batched_program_is_bit_exact_on_the_rtl(tmp_path):
    # Two runs of two frames under Icarus: the hardware sees an ordinary program.
    model = save(tiny_generator(), tmp_path / "g.onnx")
    out = tmp_path / "out"
    config = flow.target_config("ulx3s", groups=2, lanes=4)
    flow.compile_model(model, out, config=config, target="ulx3s", batch=2, **QUIET)
    np.save(tmp_path / "z.npy", np.random.default_rng(6).standard_normal((4, 4, 1, 1)))
    report = flow.simulate(out, "rtl", tmp_path / "z.npy", simulator="icarus", **QUIET)
    assert report["bit_exact_vs_isa"] is True and report["output_shape"] == [4, 2, 4, 4]
    assert len(report["counters"]) == 2
    assert abs(report["cycles_vs_isa"] - 1) <= 0.05
    golden = flow.simulate(out, "golden", tmp_path / "z.npy", tmp_path / "g.npy", **QUIET)
    assert golden["output_shape"] == [4, 2, 4, 4]
    np.testing.assert_array_equal(np.load(out / "output.npy"), np.load(tmp_path / "g.npy"))
