"""One simulator build of the simulated machine per configuration, kept in a cache.

The build of :class:`flexigan.sim.machine.Machine` depends on the configuration, the code that
generates the accelerator's Verilog (:func:`flexigan.hw.verilog.rtl_key`, the key of the
Verilog cache), the code of the machine around it, the simulator and its options: a digest of
all of them names a folder under ``$FLEXIGAN_CACHE/sim`` (default ``~/.cache/flexigan/sim``),
built once (under a lock, so parallel test processes wait for one build) and used by every
output folder and test that runs that configuration.

Verilator's options trade build time for speed; measured on the 16 x 8 ``sim`` machine
(docs/user-guide.md, "RTL simulation"):

- the signals are not all made public (cocotb's default ``--public-flat-rw``): only the top
  module's ports, which the testbench drives, are (:data:`PUBLIC_PORTS`);
- a machine with many copies of its large blocks (the 16 x 8 one's engine groups and RUN
  scoreboards) has each built once, a Verilator ``hier_block`` evaluated for all its instances
  (:func:`~flexigan.sim.shared_modules.share_modules`), and compiled with :data:`OPT_SHARED`
  (not a build that records waveforms);
- a flat model is compiled with :data:`OPT_FAST`; the C++ is split into files that ``make``
  builds on every core.
"""

import contextlib
import fcntl
import hashlib
import re
import shutil
import time
from importlib.metadata import version
from pathlib import Path

from amaranth.back import verilog
from cocotb_tools.runner import VerilatorControlFile, Verilog, get_runner

from ..hw.verilog import TOP, cache_dir, rtl_key, write_rtl
from .machine import MACHINE, Machine
from .memory import STORAGE_VERILOG
from .rtl import TIMESCALE, VERILATOR_LINT, RtlTestError, kick_time_zero, simulator_environment
from .shared_modules import share_modules

__all__ = ["OPT_FAST", "OPT_SHARED", "VERILATOR_ARGS", "build_key", "drop_zero_rows",
           "machine_build"]

#: The C++ compiler's optimisation of the model's code (Verilator's default is -Os): -O1 for a
#: flat model (at -O2 a C++ file of the 2 x 8 machine compiled for more than 9.5 CPU-minutes),
#: -O2 when the repeated blocks are built once (16 x 8: 25% faster than -O1, 30 s more build).
OPT_FAST, OPT_SHARED = "-O1", "-O2"
#: Verilator's options besides cocotb's: the lint waivers every RTL build uses, only the ports
#: public, and every variable starting at zero, as Amaranth's do.
VERILATOR_ARGS = (*VERILATOR_LINT, "--no-public-flat-rw", "--x-assign", "fast",
                  "--x-initial", "0")
#: A Verilator control file that makes the top module's ports visible to cocotb.
PUBLIC_PORTS = f'`verilator_config\npublic_flat_rw -module "{MACHINE}" -var "*"\n'
#: An ``initial`` block, as Yosys writes one to give a memory its contents, a row a line.
_INITIAL = re.compile(r"^[ \t]*initial begin\n.*?^[ \t]*end\n", re.MULTILINE | re.DOTALL)
#: One row's zero.
_ZERO_ROW = re.compile(r"^[ \t]+(?:\\\S+ |[A-Za-z_]\w*)\[\d+\] = \d+'h0+;\n", re.MULTILINE)
#: The code of this package that shapes the build (with the options above), by simulator.
_SOURCES = {"verilator": ("build.py", "machine.py", "memory.py", "shared_modules.py"),
            "icarus": ("machine.py", "memory.py", "rtl.py")}   # Icarus's time-0 rewrite


def build_key(config, simulator):
    """A digest of what a build of ``config``'s machine under ``simulator`` depends on."""
    digest = hashlib.sha256(f"{rtl_key(config)} {simulator} {OPT_FAST} {OPT_SHARED} "
                            f"{VERILATOR_ARGS} "
                            f"{PUBLIC_PORTS} {version('cocotb')}".encode())
    if simulator == "verilator":
        digest.update(version("verilator").encode())
    here = Path(__file__).resolve().parent
    for name in _SOURCES[simulator]:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:20]


@contextlib.contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def machine_build(config, simulator, waves=False, log=None):
    """The folder of the built machine of ``config`` under ``simulator`` (recording waveforms
    when ``waves``), and the seconds spent building it now (0 when it was in the cache).

    ``log`` receives a line when a build starts. Raises ``RtlTestError`` when the build
    fails.
    """
    root = Path(cache_dir()).parent / "sim"
    name = f"{simulator}{'-waves' if waves else ''}-{build_key(config, simulator)}"
    folder = root / name
    with _locked(root / f"{name}.lock"):
        if (folder / "built").is_file():
            return folder, 0.0
        if log:
            log(f"building the {config.groups} x {config.lanes} machine under {simulator} "
                f"(once; cached in {folder})")
        start = time.perf_counter()
        shutil.rmtree(folder, ignore_errors=True)
        _build(config, simulator, waves, folder)
        seconds = time.perf_counter() - start
        (folder / "built").write_text(f"{seconds:.1f}\n")
        return folder, seconds


def drop_zero_rows(text):
    """``text`` without the rows of zeros in its ``initial`` blocks: a fifth of the 16 x 8
    machine's Verilog, which Verilator would compile for nothing (it starts every variable at
    zero, :data:`VERILATOR_ARGS`)."""
    return _INITIAL.sub(lambda block: _ZERO_ROW.sub("", block[0]), text)


def _build(config, simulator, waves, folder):
    sources = folder / "src"
    write_rtl(config, sources)
    accelerator = sources / f"{TOP}.v"
    machine = sources / f"{MACHINE}.v"
    machine.write_text(verilog.convert(Machine(config), name=MACHINE, emit_src=False))
    storage = sources / "storage.v"
    storage.write_text(STORAGE_VERILOG)
    files = [Verilog(machine), Verilog(accelerator), Verilog(storage)]
    args, make = [], {}
    if simulator == "icarus":
        for path in (accelerator, machine):
            path.write_text(kick_time_zero(path.read_text()))
    else:
        text = drop_zero_rows(accelerator.read_text())
        # A waveform shows the design as Amaranth named it, every block in place.
        text, shared = (text, []) if waves else share_modules(text, TOP)
        accelerator.write_text(text)
        (sources / "public.vlt").write_text(
            PUBLIC_PORTS + "".join(f'hier_block -module "{name}"\n' for name in shared))
        files.append(VerilatorControlFile(sources / "public.vlt"))
        args = [*VERILATOR_ARGS, *(["--hierarchical"] if shared else [])]
        make = {"OPT_FAST": OPT_SHARED if shared else OPT_FAST}
    try:
        with simulator_environment(simulator, make):
            get_runner(simulator).build(sources=files, hdl_toplevel=MACHINE, build_dir=folder,
                                        build_args=args, timescale=TIMESCALE, waves=waves)
    except SystemExit as exc:
        raise RtlTestError(f"the {simulator} build of the machine failed (exit status "
                           f"{exc.code}); see the log above") from None
    if simulator == "verilator":      # the executable is all a run needs (of ~200 MB)
        for path in folder.iterdir():
            if path.name in (MACHINE, "src"):
                continue
            if path.is_dir():                 # the hierarchical blocks' builds
                shutil.rmtree(path)
            else:
                path.unlink()
