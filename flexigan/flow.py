"""The flow: the ordered steps from an ONNX file to a compiled, simulated model.

Each public function is one thing a user asks for (inspect, compile, simulate); the command line
is a thin shell over them. A compiled model lives in an output folder:

``manifest.json``
    the model, the per-layer table (MAC counts, quantization parameters) and the flow's steps;
``model.onnx``
    a copy of the source model, so the folder is self-contained (float reference);
``quantized.npz``
    the quantized IR, which the golden interpreter runs;
``program.bin``, ``program.s``
    the global program (binary, and its disassembly with every micro-program);
``memory.bin``, ``program.json``
    the external-memory image the program runs against (program, micro-ops, weights,
    parameters, tables, room for activations) and its layout (where each tensor lives, which
    instructions belong to which layer), with the accelerator config it was compiled for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .compiler import ir, macs, passes, quant
from .compiler.lower import lower
from .compiler.onnx_import import import_model, load_onnx
from .compiler.program import load_program
from .compiler.serialize import load_graph, save_graph
from .errors import FlexiganError, UsageError
from .hw.arch.config import preset
from .hw.arch.timing import TESTBENCH_MEM_LATENCY
from .hw.verilog import write_rtl
from .sim import golden, isa_sim

__all__ = ["inspect_model", "compile_model", "simulate", "default_calibration", "load_inputs",
           "float_reference", "target_config", "ENGINES"]

CALIBRATION_SAMPLES = 64


def _log(message):
    # Progress goes to stdout: stderr carries nothing but the one-line error, if any.
    print(message, flush=True)


class _Steps:
    """Prints each step of a long run with its time, so the user sees progress."""

    def __init__(self, total, log):
        self.total, self.index, self.log = total, 0, log

    def __call__(self, label):
        self.index += 1
        self.label, self.start = label, time.perf_counter()
        self.log(f"[{self.index}/{self.total}] {label} ...")
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.log(f"      {self.label}: {time.perf_counter() - self.start:.2f} s")


def _op_name(op):
    if isinstance(op, ir.Activation):
        return op.kind
    return type(op).__name__


def _params(op):
    return int(sum(getattr(op, f).size for f in ("weight", "bias", "scale", "shift")
                   if isinstance(getattr(op, f, None), np.ndarray)))


def layer_table(graph):
    """One row per IR value (inputs excluded): op, shapes, parameters and MAC counts."""
    rows = []
    for name, n in ir.topo_nodes(graph):
        if isinstance(n.op, ir.Input):
            continue
        in_shapes = [list(ir.node(graph, i).shape) for i in n.inputs]
        m = macs.layer_macs(n.op, tuple(in_shapes[0]), n.shape) if in_shapes else macs.Macs()
        row = {"name": name, "op": _op_name(n.op), "inputs": list(n.inputs),
               "input_shape": in_shapes[0] if in_shapes else None,
               "output_shape": list(n.shape), "params": _params(n.op),
               "macs_useful": m.useful, "macs_phase": m.phase,
               "macs_zero_insertion": m.zero_insertion}
        if isinstance(n.op, (ir.Conv, ir.ConvTranspose)):
            row.update(kernel=list(n.op.weight.shape[2:]), strides=list(n.op.strides),
                       pads=list(n.op.pads), group=n.op.group)
        rows.append(row)
    return rows


def _totals(rows):
    keys = ("params", "macs_useful", "macs_phase", "macs_zero_insertion")
    return {k: sum(r[k] for r in rows) for k in keys}


def inspect_model(path):
    """Import ``path`` and report its layers, shapes, parameters and MAC counts (a dict)."""
    graph = passes.run_passes(import_model(path))
    rows = layer_table(graph)
    return {"model": str(path),
            "inputs": {i: list(ir.node(graph, i).shape) for i in graph.graph["inputs"]},
            "outputs": {o: list(ir.node(graph, o).shape) for o in graph.graph["outputs"]},
            "layers": rows, "totals": _totals(rows)}


def default_calibration(graph, samples=CALIBRATION_SAMPLES, seed=0):
    """Generated calibration inputs: standard-normal latents for vector-like inputs (a
    generator's ``(C,)`` or ``(C, 1, 1)``), uniform [-1, 1] images otherwise (GAN images are
    tanh-ranged)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.graph["inputs"]:
        shape = ir.node(graph, name).shape
        if len(shape) == 1 or shape[1:] == (1, 1):
            feeds[name] = rng.standard_normal((samples, *shape))
        else:
            feeds[name] = rng.uniform(-1.0, 1.0, (samples, *shape))
    return feeds


def load_inputs(graph, path):
    """Read model inputs from ``.npy`` (single-input models) or ``.npz`` (keyed by input name).

    A missing batch axis is added. Raises :class:`UsageError` on a shape or name mismatch.
    """
    path = Path(path)
    names = graph.graph["inputs"]
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        else:
            arrays = {names[0]: np.load(path, allow_pickle=False)}
            if len(names) != 1:
                raise UsageError(f"the model has inputs {names}: give an .npz keyed by name")
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read inputs from {path}: {exc}") from None
    if len(arrays) == 1 and len(names) == 1 and names[0] not in arrays:
        arrays = {names[0]: next(iter(arrays.values()))}
    feeds = {}
    for name in names:
        if name not in arrays:
            raise UsageError(f"{path} has no array for input {name!r} (has {sorted(arrays)})")
        x = np.asarray(arrays[name], dtype=np.float64)
        shape = ir.node(graph, name).shape
        if x.shape == shape:
            x = x[None]
        if x.shape[1:] != shape:
            raise UsageError(f"input {name!r} of {path} has shape {x.shape}; the model expects "
                             f"(N, {', '.join(map(str, shape))})")
        feeds[name] = x
    return feeds


def _check_out(out, force):
    """The output folder as a Path; refuse a file, or a non-empty folder unless ``force``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"output folder {out} is not empty; use --force to overwrite it")
    return out


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def target_config(target="sim", groups=None, lanes=None):
    """The :class:`AcceleratorConfig` of a named target, with groups/lanes overridden."""
    try:
        config = preset(target)
        changes = {k: v for k, v in (("groups", groups), ("lanes", lanes)) if v is not None}
        return config.replace(**changes) if changes else config
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def compile_model(model_path, out, calibrate=None, force=False, config=None, target="sim",
                  reorder=True, sparse=True, rtl=True, log=_log):
    """Compile ``model_path`` into the folder ``out``; return the manifest (also written).

    Parameters
    ----------
    model_path : path
        The ONNX model.
    out : path
        Output folder; must be empty or missing unless ``force``.
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
        Also write the accelerator's Verilog to ``out/rtl`` (see :mod:`flexigan.hw.verilog`).
    """
    model_path = Path(model_path)
    config = config or target_config(target)
    out = _check_out(out, force)
    steps = _Steps(7 if rtl else 6, log)
    with steps("import"):
        graph = import_model(model_path)
    out.mkdir(parents=True, exist_ok=True)
    with steps("float passes"):
        graph = passes.run_passes(graph)
    with steps("calibrate"):
        feeds = load_inputs(graph, calibrate) if calibrate else default_calibration(graph)
        ranges = quant.calibrate(graph, feeds)
    with steps("quantize"):
        qgraph = ir.verify(quant.quantize(graph, ranges), quantized=True)
    with steps(f"lower for {target} ({config.groups} groups x {config.lanes} lanes"
               f"{'' if reorder else ', no reorder'})"):
        program = lower(qgraph, config, reorder=reorder)
    with steps("write"):
        save_graph(qgraph, out / "quantized.npz")
        program.save(out)
        if model_path.resolve() != (out / "model.onnx").resolve():
            shutil.copyfile(model_path, out / "model.onnx")
        rows = layer_table(qgraph)
        for row in rows:
            n = ir.node(qgraph, row["name"])
            row["scale"] = n.scale
            row["quant"] = _summary(n.q)
        manifest = {
            "flexigan": __version__,
            "model": {"source": str(model_path), "sha256": _sha256(model_path),
                      "inputs": {i: {"shape": list(ir.node(qgraph, i).shape),
                                     "scale": ir.node(qgraph, i).scale}
                                 for i in qgraph.graph["inputs"]},
                      "outputs": {o: {"shape": list(ir.node(qgraph, o).shape),
                                      "scale": ir.node(qgraph, o).scale}
                                  for o in qgraph.graph["outputs"]}},
            "calibration": str(calibrate) if calibrate else
            f"generated ({CALIBRATION_SAMPLES} samples, seed 0)",
            "steps": ["import", *[p.__name__ for p in passes.FLOAT_PASSES], "calibrate",
                      "quantize", "lower"],
            "target": target, "config": config.to_dict(), "reorder": reorder, "sparse": sparse,
            "program": {"instructions": program.layout["code"], "image_bytes": len(program.image),
                        "files": ["program.bin", "program.s", "memory.bin", "program.json"]},
            "totals": _totals(rows),
            "layers": rows,
            "schedule": program.layout["layers"],
        }
    if rtl:
        with steps("rtl"):
            manifest["rtl"] = {"folder": "rtl", **write_rtl(config, out / "rtl", log=log)}
        manifest["steps"].append("rtl")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def float_reference(model_path, feeds, names=()):
    """onnxruntime's float outputs (and the named intermediate tensors) for ``feeds``, or None
    when onnxruntime is not installed."""
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
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs()]
    kinds = {i.name: i.type for i in session.get_inputs()}
    dtype = {"tensor(double)": np.float64, "tensor(float16)": np.float16}
    run_feeds = {k: v.astype(dtype.get(kinds[k], np.float32)) for k, v in feeds.items()}
    return dict(zip(wanted, session.run(wanted, run_feeds)))


ENGINES = ("golden", "isa", "rtl")
SIMULATORS = ("verilator", "icarus")


def _run_isa(out, qgraph, feeds, sparse):
    """int8 outputs and report of the instruction-level simulator; the report also
    says whether its int8 outputs equal the golden interpreter's bit for bit."""
    if not (out / "program.json").is_file():
        raise UsageError(f"{out} has no compiled program (program.json); recompile it")
    manifest = json.loads((out / "manifest.json").read_text())
    sparse = manifest.get("sparse", True) if sparse is None else sparse
    ints = {name: golden.quantize_input(x, ir.node(qgraph, name).scale)
            for name, x in feeds.items()}
    out_int, report = isa_sim.simulate(load_program(out), ints, sparse=sparse)
    expect = golden.run_int(qgraph, ints)
    report["bit_exact_vs_golden"] = all(np.array_equal(v, expect[o]) for o, v in out_int.items())
    return out_int, report


@contextlib.contextmanager
def _output_to(path):
    """Send this process's stdout and stderr (file descriptors 1 and 2, which the simulators
    write to) to the file ``path`` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _run_rtl(out, qgraph, feeds, sparse, simulator, waves, log):
    """Outputs and report of the accelerator's RTL under ``simulator`` (cocotb); the report
    compares outputs and cycles with the instruction-level simulator."""
    from .sim.rtl import RtlTestError, run_programs

    if simulator not in SIMULATORS:
        raise UsageError(f"simulator {simulator!r} is not available (choose from: "
                         f"{', '.join(SIMULATORS)})")
    isa_int, report = _run_isa(out, qgraph, feeds, sparse)
    program = load_program(out)
    layout, config = program.layout, program.config
    ints = {name: golden.quantize_input(x, ir.node(qgraph, name).scale)
            for name, x in feeds.items()}
    batch = next(iter(ints.values())).shape[0]
    images = [program.frame(ints, n) for n in range(batch)]
    build = out / "rtl_sim" / simulator
    build.mkdir(parents=True, exist_ok=True)
    transcript = build / "simulation.log"
    log(f"running {batch} sample(s) on the RTL under {simulator}; the simulator's output goes "
        f"to {transcript} ...")
    try:
        with _output_to(transcript):
            results = run_programs(images, config, simulator=simulator, build_dir=build,
                                   sparse=report["sparse"], waves=waves)
    except RtlTestError as exc:
        raise FlexiganError(f"RTL simulation failed: {exc} (see {transcript})") from None
    per_frame = [program.outputs(r.memory) for r in results]
    rtl_int = {o: np.stack([frame[o] for frame in per_frame]) for o in layout["outputs"]}
    totals = {k: sum(int(r.counters[k]) for r in results)
              for k in ("cycles", "macs_issued", "macs_skipped", "dma_bytes")}
    # The RTL runs against the testbench's memory, whose latency is not the target's: the
    # estimate it is compared with models that memory.
    tb_config = config.replace(mem_latency=TESTBENCH_MEM_LATENCY)
    isa_cycles = sum(isa_sim.run(image, tb_config, report["sparse"]).cycles for image in images)
    rtl_report = {
        "engine": "rtl", "simulator": simulator, "sparse": report["sparse"],
        "bit_exact_vs_isa": all(np.array_equal(v, isa_int[o]) for o, v in rtl_int.items()),
        **isa_sim.figures(config, totals["cycles"], report["macs_useful"],
                          totals["macs_issued"], totals["macs_skipped"], totals["dma_bytes"]),
        "isa_cycles": isa_cycles, "testbench_mem_latency": TESTBENCH_MEM_LATENCY,
        "cycles_vs_isa": round(totals["cycles"] / isa_cycles, 4) if isa_cycles else None,
        "counters": [r.counters for r in results],
        "roofline": report["roofline"],
        # The hardware counts the whole program; per-layer figures are the ISA model's.
        "layers_from": "isa", "layers": report["layers"],
    }
    if waves:
        rtl_report["waves"] = [str(p) for p in sorted(build.glob("*.fst")) +
                               sorted(build.glob("*.vcd"))]
    return rtl_int, rtl_report


def simulate(out, engine, input_path, output_path=None, sparse=None, simulator="verilator",
             waves=False, log=_log):
    """Run the compiled model in ``out`` on the inputs in ``input_path`` with ``engine``.

    ``golden`` is the fixed-point reference interpreter; ``isa`` the instruction-level
    simulator running ``program.bin`` on the memory image (``sparse`` overrides the compiled
    zero-skipping setting); ``rtl`` the accelerator's Verilog under ``simulator`` (Verilator or
    Icarus, through cocotb), compared with the instruction-level simulator. Writes the output
    (``output_path``, default ``out/output.npy``; ``.npz`` when the model has several outputs)
    and ``out/sim_report.json``; returns the report.
    """
    out = Path(out)
    if engine not in ENGINES:
        raise UsageError(f"engine {engine!r} is not available (choose from: "
                         f"{', '.join(ENGINES)})")
    if not (out / "quantized.npz").is_file():
        raise UsageError(f"{out} is not a compiled model folder (no quantized.npz); "
                         "run `flexigan compile` first")
    qgraph = load_graph(out / "quantized.npz")
    feeds = load_inputs(qgraph, input_path)
    start = time.perf_counter()
    if engine == "golden":
        values = golden.run_quantized(qgraph, feeds, keep=True)
        outputs = {o: values[o] for o in qgraph.graph["outputs"]}
        report = {"engine": engine}
    else:
        out_int, report = _run_isa(out, qgraph, feeds, sparse) if engine == "isa" else \
            _run_rtl(out, qgraph, feeds, sparse, simulator, waves, log)
        outputs = {o: golden.dequantize(v, ir.node(qgraph, o).scale) for o, v in out_int.items()}
    elapsed = time.perf_counter() - start
    onnx_names = dict(zip(qgraph.graph["outputs"], qgraph.graph["onnx_outputs"]))
    report.update({"batch": int(next(iter(feeds.values())).shape[0]),
                   "output_shape": list(next(iter(outputs.values())).shape),
                   "outputs": {onnx_names[o]: {"shape": list(v.shape)}
                               for o, v in outputs.items()},
                   "seconds": round(elapsed, 3)})
    layers = [n for n, node in ir.topo_nodes(qgraph)
              if not isinstance(node.op, ir.Input) and "/" not in n] if engine == "golden" else []
    reference = float_reference(out / "model.onnx", feeds, layers) \
        if (out / "model.onnx").is_file() else None
    if reference is None:
        log("onnxruntime is not installed: no float reference, no SQNR")
    else:
        for o, v in outputs.items():
            report["outputs"][onnx_names[o]]["sqnr_db"] = _db(
                golden.sqnr_db(reference[onnx_names[o]], v))
        report["sqnr_db"] = min(x["sqnr_db"] for x in report["outputs"].values())
        if engine == "golden":
            report["layers"] = [{"name": n, "op": _op_name(ir.node(qgraph, n).op),
                                 "sqnr_db": _db(golden.sqnr_db(reference[n], values[n]))}
                                for n in layers if n in reference]
    output_path = Path(output_path) if output_path else \
        out / ("output.npy" if len(outputs) == 1 else "output.npz")
    _save_outputs(output_path, {onnx_names[o]: v for o, v in outputs.items()})
    report["output_file"] = str(output_path)
    (out / "sim_report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _summary(value):
    """A JSON-able digest of a quantization record: small arrays in full, large ones by range."""
    if dataclasses.is_dataclass(value):
        return {"type": type(value).__name__,
                **{f.name: _summary(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return value.tolist()
        return {"shape": list(value.shape), "min": value.min().item(), "max": value.max().item()}
    if isinstance(value, (tuple, list)):
        return [_summary(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _db(value):
    return None if not np.isfinite(value) else round(float(value), 2)


def _save_outputs(path, outputs):
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.suffix == ".npz":
            np.savez(path, **outputs)
        elif len(outputs) == 1:
            np.save(path, next(iter(outputs.values())))
        else:
            raise UsageError(f"the model has {len(outputs)} outputs: give an .npz output path")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
