"""The compile flow as one ordered list of named steps.

A step is a function ``State -> State``: it reads the products of the steps before it from the
state, adds its own, and writes that product into ``state.folder``. :func:`compile_steps` is the
list; the progress counter, ``--stop-after`` and the manifest's ``steps`` all read it, so a step
added here shows up in all three. The products, relative to the output folder:

- ``import``: ``model.onnx`` (a copy of the source, the float reference) and
  ``steps/import.npz`` (the IR as imported);
- one step per float pass (:data:`~flexigan.compiler.passes.FLOAT_PASSES`: ``fold_affine``,
  ``fold_pad``, ``fold_upsample``): ``steps/<pass>.npz``, the IR after that pass (the IR
  unchanged for a pass of the zero-free lowering in a ``--no-reorder`` compile);
- ``calibrate``: ``steps/calibrate.json``, the max-abs range of every IR value on the
  calibration inputs (empty for a pre-quantized model that gives every step itself);
- ``quantize``: ``quantized.npz``, the int8 IR that the golden interpreter runs;
- ``lower``: ``program.bin``, ``program.s``, ``memory.bin`` and ``program.json``;
- ``rtl`` (unless the RTL is not asked for): ``rtl/``, the accelerator's Verilog;
- ``manifest``: ``manifest.json``, the record of the model, its layers, the target and the
  steps that made the folder, with the size and SHA-256 of every file above
  (:mod:`flexigan.folder`). A compile stopped before this step still writes a manifest: its
  :func:`record` part and the digests.

The ``.npz`` graphs are :func:`~flexigan.compiler.serialize.load_graph` files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .compiler import ir, layout, passes, quant
from .compiler.onnx_import import import_model
from .compiler.serialize import save_graph
from .errors import UsageError
from .folder import seal
from .hw.arch.config import AcceleratorConfig
from .hw.verilog import write_rtl
from .inputs import CALIBRATION_SAMPLES, default_calibration, load_inputs
from .layers import layer_table, quant_summary, totals
from .progress import task
from .tune import lower_quickest

__all__ = ["Options", "State", "Step", "compile_steps", "until", "run_steps", "record"]

#: Where the intermediate products (the IR after each step, the calibration ranges) go.
STEPS_FOLDER = "steps"
#: What the ``lower`` step writes (:meth:`flexigan.compiler.program.Program.save`).
PROGRAM_FILES = ("program.bin", "program.s", "memory.bin", "program.json")


@dataclass(frozen=True)
class Options:
    """What the user asked to compile (see :func:`flexigan.flow.compile_model`)."""

    model: Path
    config: AcceleratorConfig
    target: str
    calibrate: Path | None
    reorder: bool
    sparse: bool
    batch: int = 1
    requantize: bool = False


@dataclass(frozen=True)
class Step:
    """A named step of the flow and the files (or folders) it writes, relative to the output
    folder."""

    name: str
    run: Callable[[State], State]
    products: tuple[str, ...]


@dataclass(frozen=True)
class State:
    """What the steps hand on: the options, where to write, and the products so far.

    ``steps`` are the steps of this compile, in order; ``graph`` is the IR, float until
    ``quantize`` and quantized after it.
    """

    options: Options
    folder: Path
    steps: tuple[Step, ...]
    log: Callable[[str], None]
    graph: Any = None
    ranges: dict | None = None
    program: Any = None
    rtl: dict | None = None
    manifest: dict | None = None


def _save_ir(state, name, graph):
    """``state`` with ``graph`` as its IR, which is written to ``steps/<name>.npz``."""
    (state.folder / STEPS_FOLDER).mkdir(exist_ok=True)
    save_graph(graph, state.folder / STEPS_FOLDER / f"{name}.npz")
    return dataclasses.replace(state, graph=graph)


def import_step(state):
    # A missing or bad model fails in one line.
    graph = import_model(state.options.model, requantize=state.options.requantize)
    shutil.copyfile(state.options.model, state.folder / "model.onnx")
    return _save_ir(state, "import", graph)


def _float_pass_step(float_pass):
    name = float_pass.__name__

    def run(state):
        return _save_ir(state, name, passes.run_passes(state.graph, (float_pass,),
                                                       state.options.reorder))

    return Step(name, run, (f"{STEPS_FOLDER}/{name}.npz",))


def calibrate_step(state):
    if not quant.needs_range(state.graph):
        # A pre-quantized model that gives every step: its own quantization, no calibration.
        state.log("      the model's QuantizeLinear nodes give every step: no calibration")
        ranges = {}
    else:
        path = state.options.calibrate
        feeds = load_inputs(state.graph, path) if path else default_calibration(state.graph)
        ranges = quant.calibrate(state.graph, feeds, state.options.model)
    _write_json(state.folder / STEPS_FOLDER / "calibrate.json", ranges)
    return dataclasses.replace(state, ranges=ranges)


def quantize_step(state):
    qgraph = ir.verify(quant.quantize(state.graph, state.ranges), quantized=True)
    save_graph(qgraph, state.folder / "quantized.npz")
    return dataclasses.replace(state, graph=qgraph)


def lower_step(state):
    program = lower_quickest(state.graph, state.options.config,
                             reorder=state.options.reorder, batch=state.options.batch)
    program.save(state.folder)
    return dataclasses.replace(state, program=program)


def rtl_step(state):
    written = write_rtl(state.options.config, state.folder / "rtl", log=state.log)
    return dataclasses.replace(state, rtl={"folder": "rtl", **written})


def manifest_step(state):
    return dataclasses.replace(state, manifest=seal(state.folder, _manifest(state)))


def _write_json(path, document):
    path.write_text(json.dumps(document, indent=1) + "\n")


def record(state):
    """What the manifest of every compiled folder says, a compile stopped early included: the
    model, the calibration, the steps that ran, the target and the options.
    (:func:`flexigan.folder.seal` adds the digests of the files.)"""
    options = state.options
    return {
        "flexigan": __version__,
        "model": {"source": str(options.model),
                  "sha256": hashlib.sha256(options.model.read_bytes()).hexdigest()},
        "calibration": str(options.calibrate) if options.calibrate else
        f"generated ({CALIBRATION_SAMPLES} samples, seed 0)",
        "steps": [step.name for step in state.steps],
        "target": options.target, "config": options.config.to_dict(),
        "reorder": options.reorder, "sparse": options.sparse, "batch": options.batch,
        "requantize": options.requantize,
    }


def _manifest(state):
    """The record of a complete compile: :func:`record`, and the model's boundary, layers,
    program and schedule."""
    qgraph, program = state.graph, state.program
    rows = layer_table(qgraph)
    for row in rows:
        n = ir.node(qgraph, row["name"])
        row["scale"] = n.scale
        row["quant"] = quant_summary(n.q)

    def boundary(names):
        # The IR's shape (the accelerator's, channels first) and the ONNX model's (the user's
        # arrays), which differ for a channels-last model (flexigan.compiler.layout).
        return {name: {"shape": list(ir.node(qgraph, name).shape),
                       "onnx_shape": list(layout.onnx_shape(qgraph, name)),
                       "scale": ir.node(qgraph, name).scale} for name in names}

    manifest = record(state)
    manifest["model"].update(inputs=boundary(qgraph.graph["inputs"]),
                             outputs=boundary(qgraph.graph["outputs"]))
    manifest.update({
        "program": {"instructions": program.layout["code"], "image_bytes": len(program.image),
                    "groups_used": program.layout["groups_used"],
                    "files": list(PROGRAM_FILES)},
        "totals": totals(rows),
        "layers": rows,
        "schedule": program.layout["layers"],
    })
    if state.rtl:
        manifest["rtl"] = state.rtl
    return manifest


def compile_steps(rtl=True):
    """The steps of a compile, in order; ``rtl`` includes the Verilog step."""
    return (
        Step("import", import_step, ("model.onnx", f"{STEPS_FOLDER}/import.npz")),
        *(_float_pass_step(p) for p in passes.FLOAT_PASSES),
        Step("calibrate", calibrate_step, (f"{STEPS_FOLDER}/calibrate.json",)),
        Step("quantize", quantize_step, ("quantized.npz",)),
        Step("lower", lower_step, PROGRAM_FILES),
        *((Step("rtl", rtl_step, ("rtl",)),) if rtl else ()),
        Step("manifest", manifest_step, ("manifest.json",)),
    )


def until(steps, stop_after):
    """``steps`` up to and including the one named ``stop_after`` (all of them for None)."""
    if stop_after is None:
        return steps
    names = [s.name for s in steps]
    if stop_after not in names:
        raise UsageError(f"unknown step {stop_after!r}; the steps of this compile are: "
                         f"{', '.join(names)}")
    return steps[:names.index(stop_after) + 1]


def run_steps(steps, state):
    """Run ``steps`` in order on ``state``, each a task (:mod:`flexigan.progress`) named with
    its number."""
    for index, step in enumerate(steps, 1):
        with task(state.log, f"[{index}/{len(steps)}] {step.name}"):
            state = step.run(state)
    return state
