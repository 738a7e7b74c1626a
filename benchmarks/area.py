"""Logic and memory of a board top by block, from Yosys alone, in a minute or two.

nextpnr reports the whole design's logic cells; shrinking a design needs to know which blocks
take them. This tool synthesizes a board's top for a configuration (the preset of ``--target``,
with ``--set name=value`` changes) as ``flexigan synth`` does (the platform's Yosys script:
``synth_ice40 -dsp`` or ``synth_ecp5``, flattened), then counts the LUT4s, flip-flops and block
RAMs of each block: a flattened cell is named after the signals around it, which Amaranth
names by the block's path, so each cell counts for the deepest block whose path starts its
name. Cells that ABC renamed after a neighbour's signal may count for the neighbour. Example::

    python benchmarks/area.py --target icebreaker --set fifo_depth=2
"""

import argparse
import ast
import json
import re
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Cell type prefixes of each kind, both families.
KINDS = {"LUT4": ("SB_LUT4", "LUT4"), "FF": ("SB_DFF", "TRELLIS_FF"),
         "CARRY": ("SB_CARRY", "CCU2C"), "BRAM": ("SB_RAM40_4K", "DP16KD"),
         "DSP": ("SB_MAC16", "MULT18X18D"), "SPRAM": ("SB_SPRAM256KA",)}


def synthesize(board, config, out):
    """Yosys's netlist (``top.json``) of ``board``'s top (a module of :mod:`flexigan.boards`)
    for ``config``, in the folder ``out``; also returns the seconds Yosys took."""
    from flexigan.boards.build import yosys_command

    plan = board.PLATFORM().build(board.Board(config), name="top", do_build=False,
                                  synth_opts=board.FAMILY.synth_opts)
    out.mkdir(parents=True, exist_ok=True)
    plan.extract(out)
    yosys, _ = yosys_command()
    start = time.monotonic()
    subprocess.run(yosys + ["-q", "-l", "yosys.log", "top.ys"], cwd=out, check=True)
    return out / "top.json", time.monotonic() - start


def block_paths(rtlil):
    """The blocks' paths (``top.accelerator.controller``...) in Amaranth's RTLIL, deepest
    first, as the flattened cells' names start (without the root's name)."""
    names = re.findall(r"^module \\top\.(\S+)$", rtlil, re.M)
    return sorted({re.sub(r"\$\d+$", "", name) for name in names}, key=len, reverse=True)


def count(netlist, blocks):
    """``(totals, {block: Counter})`` of each kind in :data:`KINDS`."""
    totals, per_block = Counter(), defaultdict(Counter)
    for module in netlist["modules"].values():
        for name, cell in module.get("cells", {}).items():
            kind = next((k for k, prefixes in KINDS.items()
                         if cell["type"].startswith(prefixes)), None)
            if kind is None:
                continue
            name = name.lstrip("\\")
            block = next((b for b in blocks if name.startswith(b + ".")), "(top)")
            totals[kind] += 1
            per_block[block][kind] += 1
    return totals, per_block


def _changes(pairs):
    """``--set`` values: Python literals where they parse, else strings."""
    changes = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            changes[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            changes[name] = value
    return changes


def main(argv=None):
    from flexigan import boards
    from flexigan.hw.arch.config import preset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("icebreaker", "ulx3s"), default="icebreaker")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change a field of the preset (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "area")
    parser.add_argument("--top", type=int, default=30, help="blocks to print")
    args = parser.parse_args(argv)
    config = preset(args.target).replace(**_changes(args.set))
    board = boards.board(args.target)
    netlist, seconds = synthesize(board, config, args.out)
    totals, per_block = count(json.loads(netlist.read_text()),
                              block_paths((args.out / "top.il").read_text()))
    print(f"{args.target} {' '.join(args.set)} (Yosys {seconds:.0f} s): "
          + ", ".join(f"{totals[k]:,} {k}" for k in KINDS if totals[k]))
    print(f"{'LUT4':>6} {'FF':>6} {'BRAM':>4}  block")
    ranked = sorted(per_block.items(), key=lambda kv: -(kv[1]["LUT4"] + kv[1]["FF"]))
    for block, cells in ranked[:args.top]:
        print(f"{cells['LUT4']:6,} {cells['FF']:6,} {cells['BRAM']:4}  {block}")
    (args.out / "area.json").write_text(json.dumps(
        {"config": config.to_dict(), "totals": totals,
         "blocks": {b: dict(c) for b, c in per_block.items()}}, indent=1) + "\n")


if __name__ == "__main__":
    main()
