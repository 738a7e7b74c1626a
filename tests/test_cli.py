"""The command line as a user runs it: reports, files written, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from onnx import helper

from flexigan.cli import main
from flexigan.errors import ModelError
from tests.helpers import EXAMPLES, make_model, save, tiny_generator

DCGAN_G = str(EXAMPLES / "dcgan64/generator.onnx")


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *fragments):
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("flexigan: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_inspect_dcgan64_generator_mac_counts(capsys):
    status, out, _ = run(capsys, "inspect", DCGAN_G, "--json")
    assert status == 0
    totals = json.loads(out)["totals"]
    assert totals["macs_useful"] == pytest.approx(90.5e6, rel=0.01)
    assert totals["macs_phase"] == pytest.approx(104.6e6, rel=0.01)
    assert totals["macs_zero_insertion"] == pytest.approx(428.3e6, rel=0.01)
    assert totals["params"] == pytest.approx(3.58e6, rel=0.01)


def test_inspect_table_shows_waste(capsys):
    status, out, _ = run(capsys, "inspect", DCGAN_G)
    assert status == 0
    assert "ConvTranspose" in out and "(3, 64, 64)" in out
    assert "a zero-insertion engine wastes 78.9% of its multiplies (4.73x the useful work)" in out


def test_inspect_lists_every_unsupported_node(tmp_path, capsys):
    nodes = [helper.make_node("Softmax", ["x"], ["a"], name="soft"),
             helper.make_node("MaxPool", ["a"], ["b"], name="pool", kernel_shape=[2, 2])]
    path = save(make_model(nodes, [("x", [1, 1, 4, 4])], [("b", [1, 1, 3, 3])]),
                tmp_path / "bad.onnx")
    status, _, err = run(capsys, "inspect", str(path))
    assert_one_line_error(status, err, "unsupported: 2 node(s)", "soft (Softmax)",
                          "pool (MaxPool)")


@pytest.mark.parametrize("argv, fragments", [
    (["inspect"], ["the following arguments are required: model"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    (["inspect", "nowhere.onnx"], ["cannot read nowhere.onnx"]),
    (["simulate", ".", "--engine", "magic", "--input", "x.npy"], ["invalid choice: 'magic'"]),
    (["compile", DCGAN_G], ["-o/--output"]),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, fragments):
    status, _, err = run(capsys, *argv)
    assert_one_line_error(status, err, *fragments)


def test_debug_shows_the_traceback():
    with pytest.raises(ModelError):
        main(["--debug", "inspect", "nowhere.onnx"])


def test_compile_then_simulate_golden(tmp_path, capsys):
    model = save(tiny_generator(), tmp_path / "g.onnx")
    out = tmp_path / "out"
    status, text, _ = run(capsys, "compile", str(model), "-o", str(out), "--no-rtl")
    assert status == 0 and "compiled" in text
    assert not (out / "rtl").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    layers = {row["name"]: row for row in manifest["layers"]}
    assert layers["c2"]["macs_useful"] < layers["c2"]["macs_zero_insertion"]
    assert layers["c2"]["quant"] is not None and layers["c2"]["scale"] > 0
    assert (out / "quantized.npz").is_file() and (out / "model.onnx").is_file()

    latents = np.random.default_rng(1).standard_normal((5, 4, 1, 1))
    np.save(tmp_path / "z.npy", latents)
    status, text, _ = run(capsys, "simulate", str(out), "--engine", "golden",
                          "--input", str(tmp_path / "z.npy"), "--output", str(tmp_path / "y.npy"))
    assert status == 0 and "SQNR" in text
    assert np.load(tmp_path / "y.npy").shape == (5, 2, 4, 4)
    report = json.loads((out / "sim_report.json").read_text())
    assert report["engine"] == "golden" and report["output_shape"] == [5, 2, 4, 4]
    assert report["sqnr_db"] > 25
    assert {row["name"] for row in report["layers"]} >= {"c2", "image"}


def test_compile_refuses_a_non_empty_output_folder(tmp_path, capsys):
    model = save(tiny_generator(), tmp_path / "g.onnx")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    status, _, err = run(capsys, "compile", str(model), "-o", str(out))
    assert_one_line_error(status, err, "is not empty; use --force")
    assert (out / "keep.txt").read_text() == "precious" and len(list(out.iterdir())) == 1
    status, _, err = run(capsys, "compile", str(model), "-o", str(out), "--force", "--no-rtl")
    assert_one_line_error(status, err, "--force replaces only a folder that flexigan compiled")
    assert (out / "keep.txt").read_text() == "precious" and len(list(out.iterdir())) == 1


def test_compile_with_calibration_file_and_wrong_input_shape(tmp_path, capsys):
    model = save(tiny_generator(), tmp_path / "g.onnx")
    np.savez(tmp_path / "cal.npz", z=np.random.default_rng(0).standard_normal((8, 4, 1, 1)))
    status, _, _ = run(capsys, "compile", str(model), "-o", str(tmp_path / "a"),
                       "--calibrate", str(tmp_path / "cal.npz"), "--no-rtl")
    assert status == 0
    np.save(tmp_path / "bad.npy", np.zeros((2, 5)))
    status, _, err = run(capsys, "simulate", str(tmp_path / "a"), "--input",
                         str(tmp_path / "bad.npy"))
    assert_one_line_error(status, err, "input 'z'", "has shape (2, 5)", "expects (N, 4, 1, 1)")


def test_simulate_needs_a_compiled_folder(tmp_path, capsys):
    status, _, err = run(capsys, "simulate", str(tmp_path), "--input", "x.npy")
    assert_one_line_error(status, err, "is not a compiled model folder")


def test_console_script_exit_status(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    result = subprocess.run([sys.executable, "-m", "flexigan", "inspect", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "not a valid ONNX file" in result.stderr
    assert "Traceback" not in result.stderr


def test_compile_for_a_target_then_simulate_isa(tmp_path, capsys):
    model = save(tiny_generator(), tmp_path / "g.onnx")
    out = tmp_path / "out"
    status, text, _ = run(capsys, "compile", str(model), "-o", str(out), "--target", "ulx3s",
                          "--groups", "2", "--lanes", "4")
    assert status == 0 and "for ulx3s (2 groups x 4 lanes)" in text
    for name in ("program.bin", "program.s", "memory.bin", "program.json"):
        assert (out / name).is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["groups"] == 2 and manifest["config"]["axi_data_width"] == 32
    assert manifest["schedule"] and manifest["reorder"] is True
    assert "RUN" in (out / "program.s").read_text()
    assert (out / "rtl" / "files.f").read_text().split() == ["flexigan_top.v"]
    assert "module flexigan_top" in (out / "rtl" / "flexigan_top.v").read_text()
    assert manifest["rtl"]["top"] == "flexigan_top"

    np.save(tmp_path / "z.npy", np.random.default_rng(2).standard_normal((3, 4, 1, 1)))
    status, text, _ = run(capsys, "simulate", str(out), "--engine", "isa", "--input",
                          str(tmp_path / "z.npy"))
    assert status == 0 and "bit-exact with the golden model: yes" in text
    report = json.loads((out / "sim_report.json").read_text())
    for field in ("engine", "cycles", "macs_useful", "macs_issued", "macs_skipped",
                  "utilization", "compute_bound_cycles", "memory_bound_cycles", "dram_bytes",
                  "layers", "output_shape"):
        assert field in report
    assert report["engine"] == "isa" and report["bit_exact_vs_golden"] is True
    assert report["output_shape"] == [3, 2, 4, 4]
    assert {"cycles", "macs_useful", "utilization"} <= set(report["layers"][0])
    golden_out = np.load(out / "output.npy")
    run(capsys, "simulate", str(out), "--engine", "golden", "--input", str(tmp_path / "z.npy"))
    np.testing.assert_array_equal(np.load(out / "output.npy"), golden_out)


def test_compile_batch_then_simulate_reports_cycles_per_frame(tmp_path, capsys):
    model = save(tiny_generator(), tmp_path / "g.onnx")
    out = tmp_path / "out"
    status, _, _ = run(capsys, "compile", str(model), "-o", str(out), "--batch", "2", "--no-rtl")
    assert status == 0 and json.loads((out / "manifest.json").read_text())["batch"] == 2
    np.save(tmp_path / "z.npy", np.random.default_rng(2).standard_normal((4, 4, 1, 1)))
    status, text, _ = run(capsys, "simulate", str(out), "--engine", "isa", "--input",
                          str(tmp_path / "z.npy"))
    assert status == 0 and "per frame, 2 frames per run" in text
    assert "bit-exact with the golden model: yes" in text
    np.save(tmp_path / "z3.npy", np.zeros((3, 4, 1, 1)))
    status, _, err = run(capsys, "simulate", str(out), "--engine", "isa", "--input",
                         str(tmp_path / "z3.npy"))
    assert_one_line_error(status, err, "runs 2 frames at once (compiled with --batch 2): give "
                                       "a multiple of 2 samples, not 3")


@pytest.mark.parametrize("argv, fragments", [
    (["--target", "fpga9000"], ["invalid choice: 'fpga9000'"]),
    (["--batch", "0"], ["--batch: must be a positive integer, not '0'"]),
    (["--groups", "0"], ["--groups: must be a positive integer, not '0'"]),
    (["--lanes", "many"], ["--lanes: must be a positive integer, not 'many'"]),
])
def test_bad_target_arguments(tmp_path, capsys, argv, fragments):
    status, _, err = run(capsys, "compile", DCGAN_G, "-o", str(tmp_path / "o"), *argv)
    assert_one_line_error(status, err, *fragments)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("simulator", ["icarus",
                                       pytest.param("verilator", marks=pytest.mark.slow)])
def test_simulate_rtl_is_bit_exact_with_the_instruction_level_simulator(tmp_path, capsys,
                                                                        simulator):
    model = save(tiny_generator(), tmp_path / "g.onnx")
    out = tmp_path / "out"
    status, _, _ = run(capsys, "compile", str(model), "-o", str(out), "--target", "ulx3s",
                       "--groups", "2", "--lanes", "4")
    assert status == 0
    np.save(tmp_path / "z.npy", np.random.default_rng(3).standard_normal((2, 4, 1, 1)))
    status, text, _ = run(capsys, "simulate", str(out), "--engine", "rtl", "--simulator",
                          simulator, "--input", str(tmp_path / "z.npy"))
    assert status == 0, text
    assert "bit-exact with the instruction-level simulator: yes" in text
    report = json.loads((out / "sim_report.json").read_text())
    assert report["engine"] == "rtl" and report["simulator"] == simulator
    assert report["bit_exact_vs_isa"] is True and report["output_shape"] == [2, 2, 4, 4]
    for field in ("cycles", "macs_useful", "macs_issued", "macs_skipped", "utilization",
                  "compute_bound_cycles", "memory_bound_cycles", "dram_bytes", "layers"):
        assert field in report
    # Cycles come from the hardware counters; the multiplies counted agree with the model.
    assert report["cycles"] == sum(c["cycles"] for c in report["counters"])
    assert abs(report["cycles_vs_isa"] - 1) <= 0.05
    # The simulator's speed and build: cycles per second of run, build seconds (0: cached).
    # (``rtl_seconds`` is rounded to the millisecond: a run of a few ms is that imprecise.)
    seconds = report["rtl_seconds"]
    assert report["cycles"] / (seconds + 0.0005) - 1 <= report["cycles_per_second"] \
        <= report["cycles"] / max(seconds - 0.0005, 1e-9) + 1
    assert report["build_seconds"] >= 0
    assert f"{report['cycles_per_second']:,} cycles/s" in text
    assert f"rtl under {simulator} ..." in text.splitlines()
    assert (out / "rtl_sim" / simulator / "simulation.log").is_file()
    # flexigan report shows the run with the ISA model's rows and timeline, which it carries.
    assert run(capsys, "report", str(out))[0] == 0
    page = (out / "report.html").read_text()
    assert "<td>runs in the folder</td><td>rtl</td>" in page and "RUNs on 2 groups" in page


def test_simulate_rtl_rejects_an_unknown_simulator(tmp_path, capsys):
    status, _, err = run(capsys, "simulate", str(tmp_path), "--engine", "rtl", "--simulator",
                         "modelsim", "--input", "x.npy")
    assert_one_line_error(status, err, "invalid choice: 'modelsim'")
