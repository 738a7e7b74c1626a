"""The engines that run a compiled model, behind one interface.

Each engine is one layer of truth (docs/architecture.md): ``golden`` the fixed-point
interpreter of the quantized IR, which defines the numerics; ``isa`` the instruction-level
simulator running ``program.bin`` on ``memory.bin``, which defines the ISA and estimates cycles;
``rtl`` the accelerator's Verilog under a simulator (cocotb). Every engine takes the compiled
folder and int8 inputs and returns int8 outputs with a report; :data:`ENGINES` names them for
``flexigan simulate --engine``.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .compiler import ir
from .compiler.program import load_program
from .compiler.serialize import load_graph
from .errors import FlexiganError, FolderError, UsageError
from .folder import RTL_SIM_FOLDER, verify
from .progress import task
from .sim import golden, isa_sim
from .sim.rtl import SIMULATORS, AcceleratorStopped, RtlTestError, output_to, run_programs

__all__ = ["Compiled", "RunOptions", "Run", "Engine", "Golden", "Isa", "Rtl", "ENGINES",
           "SIMULATORS", "GOLDEN_CHUNK"]

#: Samples the golden interpreter runs at once: its memory grows with the batch.
GOLDEN_CHUNK = 256


class Compiled:
    """A folder written by ``flexigan compile``, checked against its manifest
    (:func:`flexigan.folder.verify`) before anything in it is read; each file is read when first
    needed, once.

    Raises :class:`~flexigan.errors.FolderError` when the folder is not a compiled one, a file
    changed since the compile, or the compile stopped before ``quantized.npz``.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.manifest = verify(self.folder)
        self._require("quantized.npz", "quantized model")
        self.qgraph = load_graph(self.folder / "quantized.npz")

    def _require(self, name, what):
        if name not in self.manifest["files"]:
            raise FolderError(f"{self.folder} has no {what} ({name}): its compile stopped "
                              f"after {self.manifest['steps'][-1]}; compile it again")

    @functools.cached_property
    def program(self):
        """The compiled :class:`~flexigan.compiler.program.Program`."""
        self._require("program.json", "compiled program")
        return load_program(self.folder)

    @property
    def sparse(self):
        """Whether the model was compiled with the sparse cores' zero skipping on."""
        return self.manifest["sparse"]

    def quantize(self, feeds):
        """Float model inputs as the int8 steps of each input's scale."""
        return {name: golden.quantize_input(x, ir.node(self.qgraph, name).scale)
                for name, x in feeds.items()}


@dataclass(frozen=True)
class RunOptions:
    """How to run; each engine reads the options that concern it.

    ``sparse`` (isa, rtl) overrides the compiled zero-skipping setting when not None;
    ``simulator`` and ``waves`` (rtl) choose the Verilog simulator and record a waveform;
    ``log`` receives lines, and shows the runs as tasks (:mod:`flexigan.progress`).
    """

    sparse: bool | None = None
    simulator: str = "verilator"
    waves: bool = False
    log: Callable[[str], None] = print


@dataclass
class Run:
    """What an engine returns.

    ``outputs`` holds the int8 ``(N, *shape)`` value of every model output, by IR name;
    ``report`` is JSON-able (see the user guide, ``flexigan simulate``); ``values`` holds every
    IR value the engine computes, for an engine that sees inside the model (golden), so that
    ``simulate`` can compare each layer with the float model.
    """

    outputs: dict
    report: dict
    values: dict = field(default_factory=dict)


class Engine(abc.ABC):
    """A way to run a compiled model: ``name`` (``--engine``), ``summary`` (its help) and
    :meth:`run`."""

    name: str
    summary: str

    @abc.abstractmethod
    def run(self, model: Compiled, inputs: dict, options: RunOptions) -> Run:
        """Run ``model`` on ``inputs`` (int8 ``(N, *shape)`` arrays by input name)."""


class Golden(Engine):
    name = "golden"
    summary = "the fixed-point reference interpreter"

    def run(self, model, inputs, options):
        """The batch runs in chunks of :data:`GOLDEN_CHUNK` samples; ``values`` holds every
        layer's values for the first chunk (the per-layer SQNR's samples)."""
        batch = len(next(iter(inputs.values())))
        outputs, values = {o: [] for o in model.qgraph.graph["outputs"]}, {}
        with task(options.log, self.name, batch) as advance:
            for start in range(0, batch, GOLDEN_CHUNK):
                chunk = {k: v[start:start + GOLDEN_CHUNK] for k, v in inputs.items()}
                result = golden.run_int(model.qgraph, chunk, keep=not start)
                values = values or result
                for o in outputs:
                    outputs[o].append(result[o])
                advance(min(start + GOLDEN_CHUNK, batch))
        return Run({o: np.concatenate(v) for o, v in outputs.items()}, {"engine": self.name},
                   values)


class Isa(Engine):
    name = "isa"
    summary = "the instruction-level simulator with its cycle model"

    def run(self, model, inputs, options):
        """The report also says whether the outputs equal the golden interpreter's."""
        program = model.program
        sparse = model.sparse if options.sparse is None else options.sparse
        batch = len(next(iter(inputs.values())))
        with task(options.log, self.name, batch) as advance:
            outputs, report = isa_sim.simulate(program, inputs, sparse=sparse,
                                               progress=advance)
        expect = golden.run_int(model.qgraph, inputs)
        report["bit_exact_vs_golden"] = all(np.array_equal(v, expect[o])
                                            for o, v in outputs.items())
        return Run(outputs, report)


class Rtl(Engine):
    name = "rtl"
    summary = "the accelerator's Verilog under a simulator (cocotb)"

    def run(self, model, inputs, options):
        """Outputs and cycles from the hardware; the report compares them with the ISA
        engine's run of the same inputs, whose per-layer rows, roofline and timeline it
        carries."""
        if options.simulator not in SIMULATORS:
            raise UsageError(f"simulator {options.simulator!r} is not available (choose from: "
                             f"{', '.join(SIMULATORS)})")
        isa = ENGINES["isa"].run(model, inputs, options)
        sparse, program = isa.report["sparse"], model.program
        images = [program.frame(inputs, n)
                  for n in range(program.runs(isa.report["batch"]))]
        build = model.folder / RTL_SIM_FOLDER / options.simulator
        results = _run_programs(images, program.config, sparse, build, options)
        per_frame = [program.outputs(r.memory, f) for r in results for f in range(program.batch)]
        outputs = {o: np.stack([frame[o] for frame in per_frame])
                   for o in program.layout["outputs"]}
        counted = {k: sum(int(r.counters[k]) for r in results)
                   for k in ("cycles", "macs_issued", "macs_skipped", "dma_bytes")}
        # The simulated memory has the target's latency: the estimate is the isa engine's.
        isa_cycles = isa.report["cycles"]
        seconds = sum(r.seconds for r in results)
        report = {
            "engine": self.name, "simulator": options.simulator, "sparse": sparse,
            "bit_exact_vs_isa": all(np.array_equal(v, isa.outputs[o])
                                    for o, v in outputs.items()),
            **isa_sim.figures(program.config, counted["cycles"], isa.report["macs_useful"],
                              counted["macs_issued"], counted["macs_skipped"],
                              counted["dma_bytes"]),
            "isa_cycles": isa_cycles,
            "cycles_vs_isa": round(counted["cycles"] / isa_cycles, 4) if isa_cycles else None,
            # Wall times: the simulator's build (0 when it was cached), and the runs.
            "build_seconds": round(results[0].build_seconds, 1),
            "rtl_seconds": round(seconds, 3),
            "rtl_cpu_seconds": round(sum(r.cpu_seconds for r in results), 3),
            "cycles_per_second": round(counted["cycles"] / seconds) if seconds else None,
            "counters": [r.counters for r in results],
            "roofline": isa.report["roofline"],
            # The hardware counts the whole program; per-layer figures and the timeline are
            # the ISA model's.
            "layers_from": "isa", "layers": isa.report["layers"],
            "timeline": isa.report["timeline"],
        }
        if options.waves:
            report["waves"] = [str(p) for p in sorted(build.glob("*.fst")) +
                               sorted(build.glob("*.vcd"))]
        return Run(outputs, report)


def _run_programs(images, config, sparse, build, options):
    """Run the memory ``images`` on the RTL in ``build``, the simulator's output going to
    ``build/simulation.log``."""
    build.mkdir(parents=True, exist_ok=True)
    transcript = build / "simulation.log"
    options.log(f"running {len(images)} sample(s) on the RTL under {options.simulator} (the "
                f"first run of a configuration builds it: minutes under Verilator); the "
                f"simulator's output goes to {transcript} ...")
    try:
        with task(options.log, f"rtl under {options.simulator}"), output_to(transcript):
            return run_programs(images, config, simulator=options.simulator, build_dir=build,
                                sparse=sparse, waves=options.waves)
    except AcceleratorStopped as exc:
        raise FlexiganError(str(exc)) from None
    except RtlTestError as exc:
        raise FlexiganError(f"RTL simulation failed: {exc} (see {transcript})") from None


#: The engines by name, in the order of the layers of truth.
ENGINES = {engine.name: engine for engine in (Golden(), Isa(), Rtl())}
