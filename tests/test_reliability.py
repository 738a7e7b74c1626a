"""Nothing lost, nothing silently wrong: a generated corpus of bad models, bad inputs, damaged and
half-written folders and interrupted compiles, each refused in one line on stderr with exit
status 1 (130 for Ctrl-C) and no traceback, with every file under the test's folder the same
byte for byte afterwards: nothing lost, and nothing written outside OUT."""

import dataclasses
import hashlib
import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from flexigan import engines, flow, progress
from flexigan import folder as compiled_folder
from flexigan.cli import main
from tests.helpers import make_model, save, tiny_generator


def tree(root):
    """Every file and folder under ``root``: relative path -> SHA-256 (None for a folder)."""
    return {p.relative_to(root).as_posix():
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def refused(capsys, root, argv, *fragments):
    """Run the command line; assert one error line holding ``fragments``, status 1, and no
    file under ``root`` changed, appeared or went away."""
    before = tree(root)
    status = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 1, err
    assert lines[0].startswith("flexigan: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert tree(root) == before


# ------------------------------------------------------------------------------------------
# A corpus of bad models


def relu_model(shape=(1, 2), opset=17):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="act")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def cyclic():
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="first"),
             helper.make_node("Add", ["a", "x"], ["b"], name="second")]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def external(name, location="../secret.bin"):
    """A float tensor whose data, it says, lies in ``location``."""
    tensor = numpy_helper.from_array(np.ones(2, np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return tensor


def escape_initializer():
    model = relu_model()
    model.graph.initializer.append(external("w"))
    return model


def escape_in_subgraph():
    def branch(name):
        return helper.make_graph([helper.make_node("Identity", ["w"], [name])], name, [],
                                 [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2])],
                                 [external("w")])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="branch", then_branch=branch("t"),
                              else_branch=branch("e"))]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def escape_in_attribute():
    model = relu_model()
    model.graph.node.insert(0, helper.make_node("Constant", [], ["k"], value=external("k")))
    return model


def escape_in_function():
    body = helper.make_function("local", "Scaled", ["a"], ["b"],
                                [helper.make_node("Constant", [], ["k"], value=external("k")),
                                 helper.make_node("Mul", ["a", "k"], ["b"])],
                                [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Scaled", ["x"], ["y"], domain="local")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    return helper.make_model(graph, functions=[body],
                             opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("local", 1)])


def huge_conv_transpose():
    weight = np.random.default_rng(0).normal(size=(2, 2, 2, 2))
    return make_model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up",
                                        strides=[30000, 30000])],
                      [("x", [1, 2, 4, 4])], [("y", [1, 2, 90002, 90002])], {"w": weight})


def huge_resize():
    return make_model([helper.make_node("Resize", ["x", "", "s"], ["y"], name="grow",
                                        mode="nearest")],
                      [("x", [1, 2, 4, 4])], [("y", [1, 2, 80000, 80000])],
                      {"s": np.array([1, 1, 20000, 20000], np.float32)})


def unconvertible():
    """Tile at opset 5: onnx's version converter has no adapter for it."""
    nodes = [helper.make_node("Tile", ["x", "tiles", "axis"], ["y"], name="tile")]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.array(2, np.int64), "tiles"),
                               numpy_helper.from_array(np.array(1, np.int64), "axis")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 5)])


def unsupported():
    return make_model([helper.make_node("Softmax", ["x"], ["y"], name="soft")],
                      [("x", [1, 2])], [("y", [1, 2])])


def truncated():
    return tiny_generator().SerializeToString()[:300]


#: name -> (what to write as the model file: bytes or a ModelProto, fragments of the error).
BAD_MODELS = {
    "empty": (b"", ["not a valid ONNX file"]),
    "random": (bytes(np.random.default_rng(0).integers(0, 256, 2000, np.uint8)),
               ["not a valid ONNX file"]),
    "truncated": (truncated(), ["g.onnx"]),
    "cyclic": (cyclic(), ["the graph has a cycle (", "first", "second", "must be acyclic"]),
    "future opset": (relu_model(opset=99), ["uses opset 99, newer than this onnx"]),
    "unconvertible opset": (unconvertible(), [
        "onnx's version converter cannot bring opset 5 to 17 (No Adapter From Version $5 for "
        "Tile); export the model at an opset from 11 to"]),
    "negative size": (relu_model((1, -2)), ["input 'x' has size -2 at axis 1",
                                            "must be positive"]),
    "zero size": (relu_model((1, 0)), ["input 'x' has size 0 at axis 1"]),
    "dynamic axis": (relu_model((1, "width")), ["dynamic size at axis 1"]),
    "unsupported": (unsupported(), ["unsupported: 1 node(s)", "soft (Softmax)"]),
    "external data": (escape_initializer(), ["'w' points at external data '../secret.bin' "
                                             "outside the model's folder; refused"]),
    "external data in a subgraph": (escape_in_subgraph(), ["'w' points at external data",
                                                           "refused"]),
    "external data in an attribute": (escape_in_attribute(), ["'k' points at external data",
                                                              "refused"]),
    "external data in a function": (escape_in_function(), ["'k' points at external data",
                                                           "refused"]),
    "ConvTranspose of stride 30000": (huge_conv_transpose(), [
        "layer 'up' (ConvTranspose) would hold 16,200,720,008 values per sample", "refused"]),
    "Resize by 20000": (huge_resize(), [
        "layer 'grow' (Resize) would hold 12,800,000,000 values per sample", "refused"]),
}


@pytest.fixture
def root(tmp_path, monkeypatch):
    """The test's folder, also the working directory: the digests cover all a command could
    write by a relative path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(bytes(8))
    return tmp_path


@pytest.mark.parametrize("case", BAD_MODELS)
@pytest.mark.parametrize("command", ["inspect", "compile"])
def test_a_bad_model_is_one_line_and_writes_nothing(capsys, root, case, command):
    content, fragments = BAD_MODELS[case]
    (root / "models").mkdir()
    path = root / "models" / "g.onnx"
    path.write_bytes(content if isinstance(content, bytes) else content.SerializeToString())
    argv = [command, path] + (["-o", root / "out", "--no-rtl"] if command == "compile" else [])
    refused(capsys, root, argv, *fragments)


def test_a_missing_model_and_an_unwritable_output(capsys, root):
    refused(capsys, root, ["compile", root / "none.onnx", "-o", root / "out"], "cannot read")
    model = save(tiny_generator(), root / "g.onnx")
    (root / "file").write_text("a file")
    refused(capsys, root, ["compile", model, "-o", root / "file" / "out", "--no-rtl"],
            "cannot write the output folder", "is not a folder")
    refused(capsys, root, ["compile", model, "-o", "/proc/flexigan-out", "--no-rtl"],
            "cannot write the output folder /proc/flexigan-out")


# ------------------------------------------------------------------------------------------
# Bad inputs, for simulate and for calibration


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A folder compiled for a board (so that synth, run and board-sim read it too)."""
    out = tmp_path_factory.mktemp("compiled") / "out"
    model = save(tiny_generator(), out.parent / "g.onnx")
    flow.compile_model(model, out, config=flow.target_config("ulx3s", 2, 4), target="ulx3s",
                       rtl=False, log=lambda message: None)
    return out


def pickled(path):
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


#: name -> (how to write the input file, fragments of the error).
BAD_INPUTS = {
    "complex": (lambda p: np.save(p, np.zeros((2, 4, 1, 1), complex)),
                ["input 'z'", "has dtype complex128: give real numbers"]),
    "strings": (lambda p: np.save(p, np.array(["a", "b"])), ["has dtype <U1"]),
    "booleans": (lambda p: np.save(p, np.ones((2, 4, 1, 1), bool)), ["has dtype bool"]),
    "NaN": (lambda p: np.save(p, np.where(np.arange(8).reshape(2, 4, 1, 1) > 4, np.nan, 0)),
            ["has 3 NaN or infinite value(s), the first at index (1, 1, 0, 0)"]),
    "Inf": (lambda p: np.save(p, np.full((2, 4, 1, 1), np.inf)),
            ["has 8 NaN or infinite value(s), the first at index (0, 0, 0, 0)"]),
    "batch 0": (lambda p: np.save(p, np.zeros((0, 4, 1, 1))), ["holds no samples (batch 0)"]),
    "wrong shape": (lambda p: np.save(p, np.zeros((2, 5))),
                    ["has shape (2, 5); the model expects (N, 4, 1, 1)"]),
    "empty file": (lambda p: p.write_bytes(b""), ["cannot read inputs from"]),
    "pickle": (pickled, ["cannot read inputs from", "allow_pickle=False"]),
    "npz key": (lambda p: np.savez(p, latent=np.zeros((2, 4, 1, 1))),
                ["holds arrays ['latent']; the model's inputs are ['z']"]),
    "npz extra key": (lambda p: np.savez(p, z=np.zeros((2, 4, 1, 1)), w=np.zeros(3)),
                      ["holds arrays ['w', 'z']"]),
    "truncated npz": (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(40)),
                      ["cannot read inputs from"]),
    "missing": (lambda p: None, ["cannot read inputs from", "No such file"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_to_simulate_are_one_line_and_write_nothing(capsys, root, compiled, case):
    write, fragments = BAD_INPUTS[case]
    path = root / ("x.npz" if "npz" in case else "x.npy")
    write(path)
    out = root / "out"
    shutil.copytree(compiled, out)
    refused(capsys, root, ["simulate", out, "--engine", "isa", "--input", path,
                           "--output", root / "y.npy"], *fragments)


def test_simulate_into_an_unwritable_place(capsys, root, compiled):
    out = root / "out"
    shutil.copytree(compiled, out)
    np.save(root / "z.npy", np.zeros((1, 4, 1, 1)))
    refused(capsys, root, ["simulate", out, "--input", root / "z.npy", "--output",
                           "/proc/flexigan-y.npy"], "cannot write /proc/flexigan-y.npy")


@pytest.mark.parametrize("case", ["complex", "NaN", "batch 0", "npz key", "empty file"])
def test_bad_calibration_sets_are_refused_and_leave_no_output(capsys, root, case):
    write, fragments = BAD_INPUTS[case]
    path = root / ("x.npz" if "npz" in case else "x.npy")
    write(path)
    model = save(tiny_generator(), root / "g.onnx")
    refused(capsys, root, ["compile", model, "-o", root / "out", "--no-rtl", "--calibrate",
                           path], *fragments)


def test_simulate_reports_clipped_inputs_and_warns_above_one_percent(root, compiled):
    out = root / "out"
    shutil.copytree(compiled, out)
    scale = json.loads((out / "manifest.json").read_text())["model"]["inputs"]["z"]["scale"]
    x = np.random.default_rng(0).standard_normal((4, 4, 1, 1)) * 127 * scale / 8
    x[0, :2] = 200 * scale                                   # 2 of 16 values clipped
    np.save(root / "x.npy", x)
    logged = []
    report = flow.simulate(out, "golden", root / "x.npy", log=logged.append)
    assert report["inputs"] == {"z": {"clipped": 0.125}}
    assert any(line.startswith("warning: 12.5% of input 'z' lies outside its calibrated range")
               for line in logged)
    np.save(root / "x.npy", x[1:])
    logged.clear()
    assert flow.simulate(out, "golden", root / "x.npy", log=logged.append)["inputs"] == \
        {"z": {"clipped": 0.0}}
    assert not any("warning" in line for line in logged)


@pytest.mark.parametrize("engine", ["golden", "isa"])
def test_a_long_batch_shows_progress_and_the_time_left(root, compiled, monkeypatch, engine):
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.0)
    monkeypatch.setattr(engines, "GOLDEN_CHUNK", 2)
    out = root / "out"
    shutil.copytree(compiled, out)
    np.save(root / "x.npy", np.random.default_rng(0).standard_normal((5, 4, 1, 1)))
    logged = []
    report = flow.simulate(out, engine, root / "x.npy", log=logged.append)
    shown = [line for line in logged if line.startswith(f"{engine}: ") and "left" in line]
    assert shown and all(" of 5 samples in " in line for line in shown)
    assert report["batch"] == 5 and np.load(out / "output.npy").shape == (5, 2, 4, 4)
    if engine == "golden":
        assert report["layers_samples"] == 2 and report["layers"]


# ------------------------------------------------------------------------------------------
# Damaged and half-written folders


def flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def resealed(change):
    """Apply ``change`` to the folder, then rewrite its manifest's digests: a damaged file that
    the digests do not catch, so that loading it must."""
    def apply(out):
        change(out)
        manifest = json.loads((out / "manifest.json").read_text())
        compiled_folder.seal(out, {k: v for k, v in manifest.items() if k != "files"})
    return apply


def keep_only_quantized(out):
    for path in out.iterdir():
        if path.name != "quantized.npz":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


#: name -> (how to damage a compiled folder, fragments of the error `simulate` gives).
DAMAGED = {
    "random bytes in memory.bin": (
        lambda out: (out / "memory.bin").write_bytes(bytes(np.random.default_rng(0).integers(
            0, 256, (out / "memory.bin").stat().st_size, np.uint8))),
        ["memory.bin in", "does not match the manifest; compile again"]),
    "a flipped byte in memory.bin": (lambda out: flip(out / "memory.bin"),
                                     ["memory.bin in", "does not match the manifest"]),
    "truncated program.bin": (lambda out: (out / "program.bin").write_bytes(
        (out / "program.bin").read_bytes()[:64]), ["program.bin in", "does not match"]),
    "truncated quantized.npz": (lambda out: (out / "quantized.npz").write_bytes(
        (out / "quantized.npz").read_bytes()[:500]), ["quantized.npz in", "does not match"]),
    "missing program.json": (lambda out: (out / "program.json").unlink(),
                             ["program.json is missing from", "compile again"]),
    "missing model.onnx": (lambda out: (out / "model.onnx").unlink(),
                           ["model.onnx is missing from"]),
    "truncated manifest.json": (lambda out: (out / "manifest.json").write_text(
        (out / "manifest.json").read_text()[:100]), ["manifest.json is damaged (",
                                                     "compile again"]),
    "missing manifest.json": (lambda out: (out / "manifest.json").unlink(),
                              ["is not a compiled model folder (no manifest.json)"]),
    "a foreign manifest.json": (lambda out: (out / "manifest.json").write_text("[1, 2]"),
                                ["is not a flexigan manifest"]),
    "a manifest of an older flexigan": (
        lambda out: (out / "manifest.json").write_text(json.dumps(
            {k: v for k, v in json.loads((out / "manifest.json").read_text()).items()
             if k != "files"})), ["records no digests of its files"]),
    "only quantized.npz": (keep_only_quantized, ["no manifest.json"]),
    "a damaged quantized.npz, resealed": (
        resealed(lambda out: (out / "quantized.npz").write_bytes(b"PK\x05\x06" + bytes(18))),
        ["cannot read compiled model", "quantized.npz"]),
    "a damaged program.json, resealed": (
        resealed(lambda out: (out / "program.json").write_text('{"config": {}}')),
        ["program.json is damaged (", "compile again"]),
    "a short memory.bin, resealed": (
        resealed(lambda out: (out / "memory.bin").write_bytes(
            (out / "memory.bin").read_bytes()[:100])),
        ["memory.bin holds 100 bytes, its layout"]),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_simulate_names_the_damaged_file_and_writes_nothing(capsys, root, compiled, case):
    damage, fragments = DAMAGED[case]
    out = root / "out"
    shutil.copytree(compiled, out)
    damage(out)
    np.save(root / "z.npy", np.zeros((1, 4, 1, 1)))
    refused(capsys, root, ["simulate", out, "--engine", "isa", "--input", root / "z.npy"],
            *fragments)


@pytest.mark.parametrize("command", [["synth"], ["board-sim"],
                                     ["run", "--port", "socket://127.0.0.1:9", "--input",
                                      "z.npy"]])
def test_the_board_commands_check_the_folder_first(capsys, root, compiled, command):
    out = root / "out"
    shutil.copytree(compiled, out)
    flip(out / "memory.bin")
    np.save(root / "z.npy", np.zeros((1, 4, 1, 1)))
    refused(capsys, root, [command[0], out, *command[1:]], "memory.bin in",
            "does not match the manifest")


# ------------------------------------------------------------------------------------------
# --force, and compiles that fail or are interrupted


def test_force_keeps_what_is_not_flexigans(capsys, root, compiled):
    model = save(tiny_generator(), root / "g.onnx")
    mine = root / "mine"
    mine.mkdir()
    (mine / "model.onnx").write_bytes(b"the user's own model")
    (mine / "manifest.json").write_text('{"mine": true}')
    refused(capsys, root, ["compile", model, "-o", mine, "--force", "--no-rtl"],
            "--force replaces only a folder that flexigan compiled", "left alone")
    out = root / "out"
    shutil.copytree(compiled, out)
    (out / "rtl_notes.txt").write_text("mine")
    refused(capsys, root, ["compile", model, "-o", out, "--force", "--no-rtl"],
            "--force would delete rtl_notes.txt")
    refused(capsys, root, ["compile", model, "-o", out, "--no-rtl"],
            "is not empty; use --force")


def test_a_compile_writes_only_its_output_folder(capsys, root, compiled):
    model = save(tiny_generator(), root / "g.onnx")
    before = tree(root)
    assert main(["compile", str(model), "-o", "build/g", "--no-rtl"]) == 0
    after = tree(root)
    assert {k for k in after if k.partition("/")[0] != "build"} == set(before)
    assert all(after[k] == v for k, v in before.items())
    assert compiled_folder.verify(root / "build/g")["steps"][-1] == "manifest"
    capsys.readouterr()


#: Runs the command line with one step of the compile (or the final rename) held for a minute
#: once it has written its products: the test interrupts it there with a real SIGINT.
DRIVER = """
import dataclasses, os, signal, sys, time
from flexigan import cli, steps

# Ctrl-C as a terminal gives it, even when the test runs where SIGINT is ignored (a shell's
# background job), which the child would inherit.
signal.signal(signal.SIGINT, signal.default_int_handler)

held = sys.argv[1]

def hold(seconds=60):
    print("HOLD", flush=True)
    time.sleep(seconds)

if held == "rename":
    rename = os.rename
    def slow_rename(source, target):
        rename(source, target)
        os.rename = rename
        hold(2)                   # Ctrl-C is held back here: the sleep is not cut short
    os.rename = slow_rename
else:
    make = steps.compile_steps
    def run_then_hold(run):
        def run_step(state):
            state = run(state)
            hold()
            return state
        return run_step
    steps.compile_steps = lambda rtl=True: tuple(
        dataclasses.replace(s, run=run_then_hold(s.run)) if s.name == held else s
        for s in make(rtl))
sys.exit(cli.main(sys.argv[2:]))
"""

#: (where the compile is held, whether an earlier OUT is there): every step over an earlier
#: folder, and one without.
INTERRUPTED = [*((held, True) for held in ("import", "fold_affine", "fold_upsample",
                                           "fold_pad", "calibrate", "quantize", "lower", "rtl",
                                           "manifest", "rename")),
               ("calibrate", False)]


@pytest.mark.parametrize("held, existing", INTERRUPTED)
def test_an_interrupted_compile_leaves_the_earlier_output_or_none(root, compiled, held,
                                                                  existing):
    model = save(tiny_generator(seed=1), root / "g.onnx")
    out = root / "out"
    if existing:
        shutil.copytree(compiled, out)
    before = tree(root)
    # The rtl step on a small machine (its Verilog is cached outside the test's folder).
    options = ["--target", "ulx3s", "--groups", "2", "--lanes", "4"] if held == "rtl" else \
        ["--no-rtl"]
    process = subprocess.Popen([sys.executable, "-c", DRIVER, held, "compile", str(model),
                                "-o", str(out), "--force", *options],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("HOLD"):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.strip().splitlines() == ["flexigan: interrupted"]
    after = tree(root)
    if held == "rename":
        # Ctrl-C waits for the rename: the new folder is whole, nothing else is left behind.
        assert compiled_folder.verify(out)["model"]["source"] == str(model)
        assert {k for k in after if not k.startswith("out/")} == \
            {k for k in before if not k.startswith("out/")}
    else:
        assert after == before


def test_a_step_that_fails_leaves_the_earlier_output(capsys, root, compiled, monkeypatch):
    model = save(tiny_generator(seed=1), root / "g.onnx")
    out = root / "out"
    shutil.copytree(compiled, out)
    make = flow.steps.compile_steps

    def failing(run):
        def run_step(state):
            run(state)
            raise MemoryError
        return run_step

    monkeypatch.setattr(flow.steps, "compile_steps", lambda rtl=True: tuple(
        dataclasses.replace(s, run=failing(s.run)) if s.name == "lower" else s
        for s in make(rtl)))
    refused(capsys, root, ["compile", model, "-o", out, "--force", "--no-rtl"],
            "out of memory")
