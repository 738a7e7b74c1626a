"""Estimate every slow register-to-register path of a board top on the ECP5, in minutes.

nextpnr reports one critical path per clock after a long place and route; closing timing
needs all the paths over the budget at once. This tool synthesizes the ULX3S board top of a
configuration with Yosys (``synth_ecp5``, as ``flexigan synth`` does), then walks Yosys's
netlist with a simple delay model of the ECP5-6 fabric (logic delays as nextpnr's timing
reports show them, a fixed routing delay per net growing with fanout) and prints the paths
whose estimate exceeds the clock period, grouped by the registers they start and end at.

The figures are estimates to find the paths, not Fmax: nextpnr's routed report is the
measure (``flexigan synth``). Example::

    python benchmarks/critical_paths.py --groups 2 --lanes 4 --mhz 100
"""

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: ns: clock to output of a flip-flop, of a block RAM (no output register), of LUT RAM.
CLK_TO_Q = {"TRELLIS_FF": 0.52, "DP16KD": 4.0, "TRELLIS_DPR16X4": 1.0}
#: ns per routed net, plus ROUTE_FANOUT * log2(fanout). Calibrated on a routed 2 x 4 board top
#: asked for 100 MHz: nextpnr's critical path 17.35 ns, estimated 17.5 ns (with 0.7: 15.1).
ROUTE = 1.0
ROUTE_FANOUT = 0.12
SETUP = 0.1
#: Combinational arcs: cell type -> (input port prefixes, output port prefixes, ns).
ARCS = {
    "LUT4": [(("A", "B", "C", "D"), ("Z",), 0.24)],
    "PFUMX": [(("ALUT", "BLUT", "C0"), ("Z",), 0.2)],
    "L6MUX21": [(("D0", "D1", "SD"), ("Z",), 0.2)],
    "CCU2C": [(("A", "B", "C", "D"), ("S", "COUT"), 0.45), (("CIN",), ("COUT",), 0.07),
              (("CIN",), ("S",), 0.4)],
    "MULT18X18D": [(("A", "B", "SIGNEDA", "SIGNEDB"), ("P",), 3.93)],
    "TRELLIS_DPR16X4": [(("RAD",), ("DO",), 0.5)],
}
#: Inputs fed without general routing (inside a slice, or the carry chain).
UNROUTED = {("PFUMX", "ALUT"), ("PFUMX", "BLUT"), ("L6MUX21", "D0"), ("L6MUX21", "D1"),
            ("CCU2C", "CIN")}


def synthesize(args, out):
    """The board top's Yosys netlist (``top.json``) for the configuration in ``args``."""
    from area import synthesize as synthesize_board

    from flexigan.boards import ulx3s
    from flexigan.hw.arch.config import preset

    config = preset("ulx3s").replace(
        groups=args.groups, lanes=args.lanes, act_banks=args.act_banks,
        act_bank_bytes=args.bank_bytes, weight_bytes=args.weight_bytes,
        memory_bytes=args.memory_bytes, clock_mhz=args.mhz)
    print(f"synth_ecp5 of {args.groups} x {args.lanes} in {out} ...", flush=True)
    return synthesize_board(ulx3s, config, out)[0]


def _arcs(cell_type, port):
    """The combinational arcs (output prefixes, ns) of ``port``, an input of ``cell_type``."""
    base = re.sub(r"\d+$", "", port)
    return [(outs, ns) for ins, outs, ns in ARCS.get(cell_type, ()) if base in ins]


def _is_combinational_mult(cell):
    return all(v in ("NONE", "") or not k.startswith("REG_")
               for k, v in cell.get("parameters", {}).items())


def timing_graph(netlist):
    """``(sources, edges, endpoints)`` of the netlist's bits: ``sources`` {bit: (ns, name)}
    where a register drives it; ``edges`` {bit: [(bit, ns, cell)]}; ``endpoints``
    {bit: [cell name]} where a register (or a RAM port) samples it."""
    module = next(m for m in netlist["modules"].values() if m.get("attributes", {}).get("top"))
    fanout = defaultdict(int)
    for cell in module["cells"].values():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) == "input":
                for bit in bits:
                    fanout[bit] += 1
    sources, edges, endpoints = {}, defaultdict(list), defaultdict(list)
    for name, cell in module["cells"].items():
        kind = cell["type"]
        comb = kind in ARCS and (kind != "MULT18X18D" or _is_combinational_mult(cell))
        outputs = {p: b for p, b in cell["connections"].items()
                   if cell["port_directions"].get(p) == "output"}
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) != "input":
                continue
            arcs = _arcs(kind, port) if comb else []
            for bit in bits:
                if isinstance(bit, str):
                    continue
                route = 0 if (kind, re.sub(r"\d+$", "", port)) in UNROUTED else \
                    ROUTE + ROUTE_FANOUT * math.log2(max(fanout[bit], 1))
                if not arcs:
                    endpoints[bit].append(name)
                    continue
                for outs, ns in arcs:
                    for oport, obits in outputs.items():
                        if oport.startswith(outs):
                            edges[bit] += [(o, route + ns, name) for o in obits
                                           if not isinstance(o, str)]
        if not comb or kind == "TRELLIS_DPR16X4":
            for bits in outputs.values():
                for bit in bits:
                    if not isinstance(bit, str):
                        sources[bit] = (CLK_TO_Q.get(kind, 0.0), name)
    return sources, edges, endpoints


def arrivals(sources, edges):
    """{bit: (ns, start register, levels, (previous bit, cell))}, the latest arrival at each
    bit and where it came from."""
    indegree = defaultdict(int)
    for targets in edges.values():
        for bit, _, _ in targets:
            indegree[bit] += 1
    best = {bit: (ns, name, 0, None) for bit, (ns, name) in sources.items()}
    ready = [bit for bit in set(edges) | set(sources) if indegree[bit] == 0]
    while ready:
        bit = ready.pop()
        here = best.get(bit, (0.0, "constant", 0, None))
        for target, ns, cell in edges.get(bit, ()):
            candidate = (here[0] + ns, here[1], here[2] + 1, (bit, cell))
            if target not in best or candidate[0] > best[target][0]:
                best[target] = candidate
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    return best


def _register(name):
    """A cell's name cut back to the signal it belongs to (Yosys appends ``_TRELLIS_FF_Q...``
    and the like)."""
    return re.split(r"_(TRELLIS|LUT4|CCU2C|DP16KD|MULT18X18D|PFUMX|L6MUX21)", name)[0]


def slow_paths(netlist, period):
    """[(ns, levels, start, end, count)] of the register pairs with paths over ``period``."""
    sources, edges, endpoints = timing_graph(netlist)
    best = arrivals(sources, edges)
    groups = {}
    for bit, cells in endpoints.items():
        if bit not in best:
            continue
        ns, start, levels, _ = best[bit]
        ns += ROUTE + SETUP
        if ns <= period:
            continue
        for cell in cells:
            key = (_register(start), _register(cell))
            worst = groups.get(key, (0, 0, 0))
            groups[key] = (max(worst[0], ns), max(worst[1], levels), worst[2] + 1)
    return sorted(((ns, levels, s, e, n) for (s, e), (ns, levels, n) in groups.items()),
                  reverse=True)


def trace(netlist, pattern):
    """The cells of the slowest path into a register whose name contains ``pattern``:
    [(ns at the cell's output, cell)], from the start register."""
    sources, edges, endpoints = timing_graph(netlist)
    best = arrivals(sources, edges)
    ends = [bit for bit, cells in endpoints.items()
            if bit in best and any(pattern in cell for cell in cells)]
    if not ends:
        return []
    bit = max(ends, key=lambda b: best[b][0])
    path = []
    while best.get(bit) and best[bit][3]:
        path.append((best[bit][0], best[bit][3][1]))
        bit = best[bit][3][0]
    path.append((best[bit][0], best[bit][1]))
    return path[::-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--act-banks", type=int, default=2)
    parser.add_argument("--bank-bytes", type=int, default=4096)
    parser.add_argument("--weight-bytes", type=int, default=2048)
    parser.add_argument("--memory-bytes", type=int, default=32768)
    parser.add_argument("--mhz", type=float, default=100.0)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "paths")
    parser.add_argument("--netlist", type=Path, help="analyse this top.json, no synthesis")
    parser.add_argument("--top", type=int, default=40, help="rows to print")
    parser.add_argument("--trace", metavar="NAME",
                        help="print the cells of the slowest path into a register named so")
    args = parser.parse_args(argv)
    netlist = args.netlist or synthesize(args, args.out)
    if args.trace:
        for ns, cell in trace(json.loads(Path(netlist).read_text()), args.trace):
            print(f"{ns:6.1f}  {cell}")
        return 0
    rows = slow_paths(json.loads(Path(netlist).read_text()), 1000.0 / args.mhz)
    print(f"{len(rows)} register pairs over {1000 / args.mhz:.1f} ns (estimated)")
    print(f"{'ns':>6} {'lvl':>4} {'bits':>5}  start -> end")
    for ns, levels, start, end, count in rows[:args.top]:
        print(f"{ns:6.1f} {levels:4d} {count:5d}  {start} -> {end}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
