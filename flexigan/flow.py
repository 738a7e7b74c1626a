"""The flow: what a user asks for, from an ONNX file to a compiled, simulated model.

Each public function is one thing a user asks for (inspect, compile, simulate); the command line
is a thin shell over them. Compiling runs the ordered steps of :mod:`flexigan.steps`, each of
which writes its product into the output folder (:mod:`flexigan.steps` lists them: the IR after
each step, the calibration ranges, ``quantized.npz``, the program files, ``rtl/`` and
``manifest.json``); simulating runs one of the engines of :mod:`flexigan.engines` on a compiled
folder and compares it with onnxruntime's float model.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from . import engines, folder, images, steps
from .compiler import ir, layout, passes
from .compiler.onnx_import import import_model, load_onnx
from .errors import UsageError
from .files import atomic_file, write_json_atomic
from .hw.arch.config import preset
from .inputs import default_calibration, load_inputs
from .layers import layer_table, op_name, totals
from .sim import golden

__all__ = ["inspect_model", "compile_model", "simulate", "default_calibration", "load_inputs",
           "float_reference", "onnx_tensors", "target_config", "layer_table", "ENGINES",
           "SIMULATORS", "run_on_board"]

#: The names of the engines, for ``flexigan simulate --engine``.
ENGINES = tuple(engines.ENGINES)
SIMULATORS = engines.SIMULATORS
#: The fraction of an input's values clipped by its calibrated range above which ``simulate``
#: warns.
CLIPPED_WARNING = 0.01


def _log(message):
    # Progress goes to stdout: stderr carries nothing but the one-line error, if any.
    print(message, flush=True)


def inspect_model(path):
    """Import ``path`` and report its layers, shapes, parameters and MAC counts (a dict)."""
    graph = passes.run_passes(import_model(path))
    rows = layer_table(graph)
    return {"model": str(path),
            "inputs": {i: list(layout.onnx_shape(graph, i)) for i in graph.graph["inputs"]},
            "outputs": {o: list(layout.onnx_shape(graph, o)) for o in graph.graph["outputs"]},
            "layers": rows, "totals": totals(rows)}


def target_config(target="sim", groups=None, lanes=None):
    """The :class:`AcceleratorConfig` of a named target, with groups/lanes overridden."""
    try:
        config = preset(target)
        changes = {k: v for k, v in (("groups", groups), ("lanes", lanes)) if v is not None}
        return config.replace(**changes) if changes else config
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def compile_model(model_path, out, calibrate=None, force=False, config=None, target="sim",
                  reorder=True, sparse=True, rtl=True, stop_after=None, batch=1,
                  requantize=False, log=_log):
    """Compile ``model_path`` into the folder ``out`` by the steps of :mod:`flexigan.steps`.

    Parameters
    ----------
    model_path : path
        The ONNX model.
    out : path
        Output folder; must be empty or missing unless ``force``, when it may also be a folder
        flexigan compiled.
    calibrate : path, optional
        ``.npy``/``.npz`` calibration inputs; generated ones (see :func:`default_calibration`)
        by default.
    config : AcceleratorConfig, optional
        The accelerator to compile for; the ``target`` preset by default.
    target : str
        Name recorded in the manifest (and the preset used when ``config`` is None).
    reorder : bool
        Zero-free transposed convolutions (True) or the zero-insertion baseline (False).
    sparse : bool
        Whether the accelerator's sparse cores skip zero activations (recorded for
        ``simulate``).
    rtl : bool
        Include the ``rtl`` step: the accelerator's Verilog in ``out/rtl``.
    batch : int
        Frames the program runs at once, each weight tile loaded once for all of them
        (``simulate`` then takes a multiple of ``batch`` samples).
    requantize : bool
        For a pre-quantized model, calibrate the tensors whose quantization the machine cannot
        represent instead of refusing the model
        (:func:`~flexigan.compiler.onnx_import.import_model`).
    stop_after : str, optional
        The name of the last step to run; ``out`` then holds the products of the steps up to
        it and of none after it. Raises :class:`UsageError` for a name not among the steps.

    Returns
    -------
    flexigan.steps.State
        The products of the steps that ran; its ``manifest`` is the one written (None when the
        compile stopped before the ``manifest`` step).

    The steps write into a temporary folder beside ``out`` that takes its place once the last
    of them has succeeded (:func:`flexigan.folder.staged`): a failing or interrupted compile
    leaves no ``out``, or the previous one intact. With ``force`` it replaces a folder flexigan
    compiled, never one that holds a file of the user's.
    """
    model_path = Path(model_path)
    config = config or target_config(target)
    plan = steps.until(steps.compile_steps(rtl), stop_after)
    options = steps.Options(model_path, config, target, Path(calibrate) if calibrate else None,
                            reorder, sparse, batch, requantize)
    products = [p for step in steps.compile_steps(rtl=True) for p in step.products]
    with folder.staged(out, force, products) as staging:
        state = steps.run_steps(plan, steps.State(options, staging, plan, log))
        if state.manifest is None:
            folder.seal(staging, steps.record(state))
    return dataclasses.replace(state, folder=Path(out))


def float_reference(model_path, feeds, names=()):
    """onnxruntime's float outputs (and the named intermediate tensors) for ``feeds``, or None
    when onnxruntime is not installed or cannot run the model (its QONNX ``Quant`` nodes)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import onnx

    model = load_onnx(model_path)
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in inferred.graph.value_info}
    present = {o.name for o in model.graph.output}
    for name in names:
        if name in known and name not in present:
            model.graph.output.append(known[name])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own Fail for an op it has no kernel for
        return None
    wanted = [o.name for o in session.get_outputs()]
    kinds = {i.name: i.type for i in session.get_inputs()}
    dtype = {"tensor(double)": np.float64, "tensor(float16)": np.float16}
    run_feeds = {k: v.astype(dtype.get(kinds[k], np.float32)) for k, v in feeds.items()}
    return dict(zip(wanted, session.run(wanted, run_feeds)))


def onnx_tensors(model_path):
    """The names of the tensors the nodes of the ONNX model compute.

    An IR value carries the name of the ONNX tensor it computes; the values the importer adds
    on its own (such as the 2-D view of a 1-D convolution) have names no ONNX node produces.
    """
    return {name for node in load_onnx(model_path).graph.node for name in node.output}


def simulate(out, engine, input_path, output_path=None, sparse=None, simulator="verilator",
             waves=False, log=_log):
    """Run the compiled model in ``out`` on the inputs in ``input_path`` with ``engine``.

    ``golden`` is the fixed-point reference interpreter; ``isa`` the instruction-level
    simulator running ``program.bin`` on the memory image (``sparse`` overrides the compiled
    zero-skipping setting); ``rtl`` the accelerator's Verilog under ``simulator`` (Verilator or
    Icarus, through cocotb), compared with the instruction-level simulator (see
    :mod:`flexigan.engines`). Writes the output (``output_path``, default ``out/output.npy``;
    ``.npz`` when the model has several outputs), a PNG grid beside it of every image-shaped
    output and of onnxruntime's (:func:`_save_images`), and ``out/sim_report.json``, which
    ``out/sim_runs/`` also keeps, one per engine and zero-skipping setting
    (:func:`flexigan.folder.sim_run_name`); returns the report.
    """
    if engine not in engines.ENGINES:
        raise UsageError(f"engine {engine!r} is not available (choose from: "
                         f"{', '.join(engines.ENGINES)})")
    report = _execute(out, engines.ENGINES[engine], input_path, output_path,
                      engines.RunOptions(sparse, simulator, waves, log), folder.SIM_REPORT)
    write_json_atomic(Path(out) / folder.SIM_RUNS / folder.sim_run_name(report), report)
    return report


def run_on_board(out, port, input_path, output_path=None, timeout=60.0, log=_log):
    """Run the compiled model in ``out`` on the board behind the pyserial URL ``port``
    (:mod:`flexigan.board_run`); writes the output as :func:`simulate` does and
    ``out/run_report.json``; returns the report."""
    from .board_run import BoardEngine
    from .synth import target_of

    target_of(out)                         # compiled for a board, not for `sim`
    return _execute(out, BoardEngine(port, timeout), input_path, output_path,
                    engines.RunOptions(log=log), folder.RUN_REPORT)


def _execute(out, engine, input_path, output_path, options, report_name):
    """Run ``engine`` on the compiled folder ``out``: outputs saved, SQNR against the float
    model, the report written to ``out/report_name``."""
    model = engines.Compiled(out)
    qgraph = model.qgraph
    feeds = load_inputs(qgraph, input_path)
    clipped = _clipped(model, feeds, options.log)
    start = time.perf_counter()
    run = engine.run(model, model.quantize(feeds), options)
    elapsed = time.perf_counter() - start
    # The engines run in the IR's layout; the user's files and onnxruntime are in the ONNX
    # model's (flexigan.compiler.layout).
    outputs = {o: layout.to_onnx(qgraph, o, golden.dequantize(v, ir.node(qgraph, o).scale))
               for o, v in run.outputs.items()}
    onnx_names = dict(zip(qgraph.graph["outputs"], qgraph.graph["onnx_outputs"]))
    report = run.report
    report.update({"batch": int(next(iter(feeds.values())).shape[0]),
                   "output_shape": list(next(iter(outputs.values())).shape),
                   "outputs": {onnx_names[o]: {"shape": list(v.shape)}
                               for o, v in outputs.items()},
                   "seconds": round(elapsed, 3),
                   "inputs": {name: {"clipped": fraction} for name, fraction in clipped.items()}})
    onnx_feeds = {k: layout.to_onnx(qgraph, k, v) for k, v in feeds.items()}
    reference = _compare_with_float(report, model, onnx_feeds, outputs, run.values, options.log)
    output_path = Path(output_path) if output_path else \
        model.folder / folder.OUTPUTS[len(outputs) > 1]
    named = {onnx_names[o]: v for o, v in outputs.items()}
    _save_outputs(output_path, named)
    report["output_file"] = str(output_path)
    pictures = _save_images(output_path, named, reference)
    if pictures:
        report["images"] = pictures
    write_json_atomic(model.folder / report_name, report)
    return report


def _clipped(model, feeds, log):
    """The fraction of each input's values outside the range its calibration gave it (they
    saturate); a warning for any above :data:`CLIPPED_WARNING`."""
    clipped = {}
    for name, x in feeds.items():
        scale = ir.node(model.qgraph, name).scale
        clipped[name] = round(golden.clipped_fraction(x, scale), 6)
        if clipped[name] > CLIPPED_WARNING:
            log(f"warning: {clipped[name]:.1%} of input {name!r} lies outside its calibrated "
                f"range (+-{127 * scale:.4g}) and is clipped, the usual cause of a poor SQNR; "
                "calibrate with inputs like these (compile --calibrate)")
    return clipped


def _compare_with_float(report, model, feeds, outputs, values, log):
    """Add to ``report`` the SQNR against onnxruntime's float model of every output and, as
    ``layers``, of every value in ``values`` that is a tensor of the ONNX model (``values``
    may hold the first samples only: ``layers_samples`` says how many); return onnxruntime's
    outputs, by ONNX name (None without onnxruntime)."""
    source, qgraph = model.folder / "model.onnx", model.qgraph
    tensors = onnx_tensors(source) if values else set()
    layers = [n for n, _ in ir.topo_nodes(qgraph) if n in values and n in tensors]
    batch = len(next(iter(feeds.values())))
    sampled = len(next(iter(values.values()))) if values else 0
    reference = float_reference(source, feeds, layers if sampled == batch else ())
    if reference is None:
        log("onnxruntime is not installed or cannot run the model: no float reference, no "
            "SQNR")
        return None
    onnx_names = dict(zip(qgraph.graph["outputs"], qgraph.graph["onnx_outputs"]))
    for o, v in outputs.items():
        report["outputs"][onnx_names[o]]["sqnr_db"] = _db(
            golden.sqnr_db(reference[onnx_names[o]], v))
    report["sqnr_db"] = min(x["sqnr_db"] for x in report["outputs"].values())
    float_outputs = {name: reference[name] for name in onnx_names.values()}
    if values:
        if sampled < batch:
            reference = float_reference(source, {k: v[:sampled] for k, v in feeds.items()},
                                        layers)
            report["layers_samples"] = sampled
        report["layers"] = []
        for name in (n for n in layers if n in reference):
            node = ir.node(qgraph, name)
            value = golden.dequantize(values[name], node.scale)
            report["layers"].append({"name": name, "op": op_name(node.op),
                                     "sqnr_db": _db(golden.sqnr_db(reference[name], value))})
    return float_outputs


def _db(value):
    return None if not np.isfinite(value) else round(float(value), 2)


def _save_images(output_path, outputs, reference):
    """Write a PNG grid (:mod:`flexigan.images`) of each image-shaped output beside
    ``output_path`` (``<stem>.png``, ``<stem>-<output>.png`` for one of several outputs) and
    one of onnxruntime's (``...-onnxruntime.png``) when ``reference`` has it; return
    ``{output: {"engine": path, "onnxruntime": path}}``."""
    pictures = {}
    for name, value in outputs.items():
        if not images.is_image(value.shape):
            continue
        stem = output_path.with_suffix("") if len(outputs) == 1 else \
            output_path.with_name(f"{output_path.stem}-{name}")
        drawn = {"engine": value}
        if reference is not None:
            drawn["onnxruntime"] = reference[name]
        pictures[name] = {}
        for source, value_drawn in drawn.items():
            path = Path(f"{stem}.png" if source == "engine" else f"{stem}-{source}.png")
            images.write_grid(path, value_drawn)
            pictures[name][source] = str(path)
    return pictures


def _save_outputs(path, outputs):
    """Write ``outputs`` to ``path`` (``.npz``, or ``.npy`` for one output) whole or not at
    all."""
    if path.suffix != ".npz" and len(outputs) != 1:
        raise UsageError(f"the model has {len(outputs)} outputs: give an .npz output path")
    with atomic_file(path) as f:
        if path.suffix == ".npz":
            np.savez(f, **outputs)
        else:
            np.save(f, next(iter(outputs.values())))
