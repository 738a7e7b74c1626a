"""The flow as a user drives it: compile step by step (--stop-after), every engine behind one
interface, and per-layer accuracy named by the model's own tensors."""

import json

import numpy as np
import pytest
from onnx import helper

from flexigan import flow
from flexigan.cli import main
from flexigan.compiler import ir
from flexigan.compiler.serialize import load_graph
from flexigan.engines import ENGINES, Compiled, RunOptions
from flexigan.sim import golden
from tests.helpers import make_model, save, tiny_generator

#: A small machine whose Verilog takes seconds to generate (and is cached between runs).
SMALL = ["--target", "ulx3s", "--groups", "2", "--lanes", "4"]

#: The steps of a compile with the RTL, and the files each writes into the output folder.
PRODUCTS = [
    ("import", {"model.onnx", "steps/import.npz"}),
    ("fold_affine", {"steps/fold_affine.npz"}),
    ("fold_pad", {"steps/fold_pad.npz"}),
    ("fold_upsample", {"steps/fold_upsample.npz"}),
    ("calibrate", {"steps/calibrate.json"}),
    ("quantize", {"quantized.npz"}),
    ("lower", {"program.bin", "program.s", "memory.bin", "program.json"}),
    ("rtl", {"rtl/flexigan_top.v", "rtl/files.f"}),
    ("manifest", {"manifest.json"}),
]


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def files(folder):
    """Every file under ``folder``, as a path relative to it."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def snapshot(folder):
    return {name: (folder / name).read_bytes() for name in files(folder)}


def assert_one_line_error(status, err, *fragments):
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flexigan: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save(tiny_generator(), tmp_path_factory.mktemp("model") / "g.onnx")


@pytest.mark.parametrize("index, step", [(i, step) for i, (step, _) in enumerate(PRODUCTS)])
def test_stop_after_writes_the_products_up_to_that_step_and_none_after(tmp_path, capsys, tiny,
                                                                       index, step):
    out = tmp_path / "out"
    status, text, _ = run(capsys, "compile", str(tiny), "-o", str(out), *SMALL,
                          "--stop-after", step)
    assert status == 0
    # Every compile, stopped or not, leaves a manifest that records the digests of the rest.
    expected = set().union(*(products for _, products in PRODUCTS[:index + 1]))
    assert files(out) == expected | {"manifest.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == expected - {"manifest.json"}
    progress = [line for line in text.splitlines() if line.startswith("[")]
    assert progress == [f"[{i + 1}/{index + 1}] {name} ..."
                        for i, (name, _) in enumerate(PRODUCTS[:index + 1])]
    if step != "manifest":
        assert f"stopped after {step}: {out} holds model.onnx" in text
    assert manifest["steps"] == [name for name, _ in PRODUCTS[:index + 1]]


def test_the_intermediate_products_show_each_step(tmp_path, capsys, tiny):
    out = tmp_path / "out"
    status, _, _ = run(capsys, "compile", str(tiny), "-o", str(out), "--no-rtl",
                       "--stop-after", "calibrate")
    assert status == 0
    imported = load_graph(out / "steps/import.npz")
    folded = load_graph(out / "steps/fold_affine.npz")
    # The BatchNorm after the first transposed convolution is folded into its weights.
    assert isinstance(ir.node(imported, "bn").op, ir.Affine) and "c1" in imported
    assert isinstance(ir.node(folded, "bn").op, ir.ConvTranspose) and "c1" not in folded
    ranges = json.loads((out / "steps/calibrate.json").read_text())
    assert set(ranges) == set(folded.nodes) and all(r > 0 for r in ranges.values())


def test_golden_runs_a_folder_stopped_after_quantize(tmp_path, capsys, tiny):
    out = tmp_path / "out"
    run(capsys, "compile", str(tiny), "-o", str(out), "--stop-after", "quantize")
    np.save(tmp_path / "z.npy", np.random.default_rng(1).standard_normal((2, 4, 1, 1)))
    status, text, _ = run(capsys, "simulate", str(out), "--input", str(tmp_path / "z.npy"))
    assert status == 0 and "SQNR" in text
    status, _, err = run(capsys, "simulate", str(out), "--engine", "isa", "--input",
                         str(tmp_path / "z.npy"))
    assert_one_line_error(status, err, "has no compiled program (program.json)",
                          "stopped after quantize")


@pytest.mark.parametrize("options, choices", [
    ([], "import, fold_affine, fold_pad, fold_upsample, calibrate, quantize, lower, rtl, "
         "manifest"),
    (["--no-rtl"], "import, fold_affine, fold_pad, fold_upsample, calibrate, quantize, lower, "
                   "manifest"),
])
def test_an_unknown_step_is_a_one_line_error_naming_the_steps(tmp_path, capsys, tiny, options,
                                                               choices):
    status, _, err = run(capsys, "compile", str(tiny), "-o", str(tmp_path / "out"), *options,
                         "--stop-after", "rtl" if options else "frobnicate")
    assert_one_line_error(status, err, "unknown step", f"the steps of this compile are: {choices}")
    assert not (tmp_path / "out").exists()


def test_a_failing_step_leaves_the_output_folder_as_it_was(tmp_path, capsys, tiny):
    out = tmp_path / "out"
    status, _, _ = run(capsys, "compile", str(tiny), "-o", str(out), "--no-rtl")
    assert status == 0
    before = snapshot(out)
    np.save(tmp_path / "bad.npy", np.zeros((8, 3, 1, 1)))
    status, text, err = run(capsys, "compile", str(tiny), "-o", str(out), "--no-rtl", "--force",
                            "--calibrate", str(tmp_path / "bad.npy"))
    assert_one_line_error(status, err, "input 'z'", "expects (N, 4, 1, 1)")
    assert "[5/8] calibrate ..." in text
    assert snapshot(out) == before


def test_a_forced_compile_replaces_every_product_of_the_last_one(tmp_path, capsys, tiny):
    out = tmp_path / "out"
    run(capsys, "compile", str(tiny), "-o", str(out), *SMALL)
    np.save(tmp_path / "z.npy", np.random.default_rng(1).standard_normal((2, 4, 1, 1)))
    run(capsys, "simulate", str(out), "--input", str(tmp_path / "z.npy"))
    status, _, _ = run(capsys, "compile", str(tiny), "-o", str(out), "--force",
                       "--stop-after", "quantize")
    assert status == 0
    # No program, Verilog, report or output of the earlier compile is left beside the new IR.
    assert files(out) == {"manifest.json", "model.onnx", "steps/import.npz",
                          "steps/fold_affine.npz", "steps/fold_pad.npz",
                          "steps/fold_upsample.npz",
                          "steps/calibrate.json", "quantized.npz"}


def test_force_never_deletes_a_file_flexigan_did_not_write(tmp_path, capsys, tiny):
    out = tmp_path / "out"
    run(capsys, "compile", str(tiny), "-o", str(out), "--no-rtl")
    (out / "steps" / "notes.txt").write_text("mine")
    before = snapshot(out)
    status, _, err = run(capsys, "compile", str(tiny), "-o", str(out), "--force", "--no-rtl")
    assert_one_line_error(status, err, "--force would delete steps/notes.txt", "move it away")
    assert snapshot(out) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.onnx").write_bytes(b"the user's own")
    status, _, err = run(capsys, "compile", str(tiny), "-o", str(mine), "--force", "--no-rtl")
    assert_one_line_error(status, err, "--force replaces only a folder that flexigan compiled",
                          "left alone")
    assert (mine / "model.onnx").read_bytes() == b"the user's own"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("compiled") / "out"
    flow.compile_model(tiny, out, config=flow.target_config("ulx3s", 2, 4), target="ulx3s",
                       log=lambda message: None)
    return Compiled(out)


@pytest.mark.parametrize("name", ["golden", "isa", "rtl"])
def test_every_engine_runs_through_one_interface_bit_exact_with_golden(compiled, name):
    feeds = {"z": np.random.default_rng(4).standard_normal((2, 4, 1, 1))}
    inputs = compiled.quantize(feeds)
    run = ENGINES[name].run(compiled, inputs, RunOptions(simulator="icarus",
                                                         log=lambda message: None))
    expected = golden.run_int(compiled.qgraph, inputs)
    assert run.report["engine"] == name
    assert set(run.outputs) == {"image"}
    np.testing.assert_array_equal(run.outputs["image"], expected["image"])
    assert run.outputs["image"].dtype == np.int8 and run.outputs["image"].shape == (2, 2, 4, 4)


def slashed_model():
    """PyTorch-style tensor names ("/module/Op_output_0") on 1-D convolutions, which the
    importer computes through 2-D values of its own ("<name>/as2d", "<name>/2d")."""
    rng = np.random.default_rng(7)
    up, act, head = "/up/ConvTranspose_output_0", "/act/LeakyRelu_output_0", "/head/Conv_output_0"
    nodes = [helper.make_node("ConvTranspose", ["input", "up.weight", "up.bias"], [up],
                              name="/up/ConvTranspose", kernel_shape=[3], strides=[2],
                              pads=[1, 0]),
             helper.make_node("LeakyRelu", [up], [act], name="/act/LeakyRelu", alpha=0.2),
             helper.make_node("Conv", [act, "head.weight"], [head], name="/head/Conv",
                              kernel_shape=[3], pads=[1, 1]),
             helper.make_node("Tanh", [head], ["output"], name="/out/Tanh")]
    inits = {"up.weight": rng.normal(0, 0.4, (4, 6, 3)), "up.bias": rng.normal(0, 0.1, 6),
             "head.weight": rng.normal(0, 0.3, (2, 6, 3))}
    return make_model(nodes, [("input", ["N", 4, 7])], [("output", ["N", 2, 14])], inits)


def test_golden_reports_every_onnx_tensor_whatever_its_name(tmp_path):
    model = save(slashed_model(), tmp_path / "slashed.onnx")
    out = tmp_path / "out"
    flow.compile_model(model, out, rtl=False, log=lambda message: None)
    assert "/up/ConvTranspose_output_0/2d" in load_graph(out / "quantized.npz")
    np.save(tmp_path / "x.npy", np.random.default_rng(8).uniform(-1, 1, (4, 4, 7)))
    report = flow.simulate(out, "golden", tmp_path / "x.npy", log=lambda message: None)
    rows = {row["name"]: row for row in report["layers"]}
    assert list(rows) == ["/up/ConvTranspose_output_0", "/act/LeakyRelu_output_0",
                          "/head/Conv_output_0", "output"]
    assert rows["/act/LeakyRelu_output_0"]["op"] == "leaky_relu"
    assert all(row["sqnr_db"] > 25 for row in rows.values())
