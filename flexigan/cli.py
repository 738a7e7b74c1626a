"""The ``flexigan`` command line: a thin shell over :mod:`flexigan.flow`.

User errors (:class:`~flexigan.errors.FlexiganError`, bad arguments) print one line on stderr and
exit with status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__, engines, flow, steps
from .errors import FlexiganError, UsageError
from .folder import BOARD_SIM_FOLDER
from .hw.arch.config import PRESETS
from .progress import Progress

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting with status 2."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def _fmt(count):
    return f"{count / 1e6:9.3f}M"


def _print_inspect(report):
    print(f"model: {report['model']}")
    for kind in ("inputs", "outputs"):
        print(f"{kind}: " + ", ".join(f"{k} {tuple(v)}" for k, v in report[kind].items()))
    header = (f"{'layer':32} {'op':14} {'output':16} {'params':>9} {'useful':>10} "
              f"{'phase':>10} {'zero-ins':>10}")
    print(header)
    print("-" * len(header))
    for row in report["layers"]:
        print(f"{row['name'][:32]:32} {row['op']:14} {str(tuple(row['output_shape'])):16} "
              f"{row['params']:9d} {_fmt(row['macs_useful'])} {_fmt(row['macs_phase'])} "
              f"{_fmt(row['macs_zero_insertion'])}")
    t = report["totals"]
    print("-" * len(header))
    print(f"{'total':64} {t['params']:9d} {_fmt(t['macs_useful'])} {_fmt(t['macs_phase'])} "
          f"{_fmt(t['macs_zero_insertion'])}")
    if t["macs_zero_insertion"]:
        waste = 1 - t["macs_useful"] / t["macs_zero_insertion"]
        print(f"a zero-insertion engine wastes {waste:.1%} of its multiplies "
              f"({t['macs_zero_insertion'] / max(t['macs_useful'], 1):.2f}x the useful work); "
              f"phase sub-convolutions spend {t['macs_phase'] / max(t['macs_useful'], 1):.3f}x")


def _cmd_inspect(args):
    report = flow.inspect_model(args.model)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_inspect(report)


def _cmd_compile(args):
    config = flow.target_config(args.target, args.groups, args.lanes)
    state = flow.compile_model(args.model, args.output, calibrate=args.calibrate,
                               force=args.force, config=config, target=args.target,
                               reorder=not args.no_reorder, sparse=not args.no_sparse,
                               rtl=not args.no_rtl, stop_after=args.stop_after,
                               batch=args.batch, requantize=args.requantize,
                               log=args.progress)
    if state.manifest is None:
        print(f"stopped after {state.steps[-1].name}: {args.output} holds "
              f"{', '.join(p for s in state.steps for p in s.products)}")
        return
    manifest = state.manifest
    t = manifest["totals"]
    groups_used = manifest["program"]["groups_used"]
    used = f"; the program uses {groups_used}, quicker" if groups_used < config.groups else ""
    print(f"compiled {args.model} -> {args.output}: {len(manifest['layers'])} layers, "
          f"{t['macs_useful'] / 1e6:.2f} M useful MACs per sample, "
          f"{manifest['program']['instructions']} instructions for {args.target} "
          f"({config.groups} groups x {config.lanes} lanes" + used + ")")


def _cmd_simulate(args):
    report = flow.simulate(args.folder, args.engine, args.input, args.output,
                           sparse=False if args.no_sparse else None,
                           simulator=args.simulator, waves=args.waves, log=args.progress)
    line = f"{report['engine']}: output {tuple(report['output_shape'])} -> {report['output_file']}"
    if "sqnr_db" in report:
        line += f"; SQNR vs onnxruntime float {report['sqnr_db']} dB"
    print(line)
    if "cycles" in report:
        print(f"{report['cycles']} cycles for {report['batch']} sample(s)"
              + (f" ({report['cycles_per_frame']:,.0f} per frame, {report['program_batch']} "
                 f"frames per run)" if report.get("program_batch", 1) > 1 else "")
              + "; utilization "
              f"{report['utilization']:.1%}; compute bound {report['compute_bound_cycles']:.0f}, "
              f"memory bound {report['memory_bound_cycles']:.0f} cycles; "
              f"{report['macs_skipped']} MACs skipped")
    for key, name in (("bit_exact_vs_golden", "golden model"),
                      ("bit_exact_vs_isa", "instruction-level simulator")):
        if key in report:
            print(f"bit-exact with the {name}: {'yes' if report[key] else 'NO'}")
    if "cycles_vs_isa" in report:
        print(f"RTL cycles (hardware counter) / instruction-level estimate: "
              f"{report['cycles_vs_isa']:.3f}")
    if "cycles_per_second" in report:
        built = report["build_seconds"]
        print(f"RTL under {report['simulator']}: {report['cycles_per_second']:,} cycles/s "
              f"({report['rtl_seconds']} s); build "
              + (f"{built} s" if built else "cached"))
    if "roofline" in report:
        r = report["roofline"]
        line = f"per frame at batch 1 the {r['bound_at_batch_1']} bound dominates"
        if r["bound_at_batch_1"] == "memory":
            at = r["compute_bound_at_batch"]
            line += (f"; batching weights across {at} frames makes it compute bound" if at else
                     "; activation traffic alone keeps it memory bound at any batch")
        print(line + " (roofline in sim_report.json)")


def _cmd_synth(args):
    from .synth import synth

    synth(args.folder, program=args.program, allow_timing_fail=args.allow_timing_fail,
          seed=args.seed, log=args.progress)


def _cmd_run(args):
    report = flow.run_on_board(args.folder, args.port, args.input, args.output,
                               timeout=args.timeout, log=args.progress)
    print(f"board: output {tuple(report['output_shape'])} -> {report['output_file']}; "
          f"bit-exact with the golden model: {'yes' if report['bit_exact_vs_golden'] else 'NO'}"
          f", with the instruction-level simulator: "
          f"{'yes' if report['bit_exact_vs_isa'] else 'NO'}")
    print(f"{report['cycles']:,} cycles (hardware counter) for {report['batch']} sample(s), "
          f"{report['cycles_vs_isa']:.3f} of the instruction-level estimate; utilization "
          f"{report['utilization']:.1%}" + (f"; SQNR vs onnxruntime float {report['sqnr_db']} dB"
                                             if "sqnr_db" in report else ""))


def _cmd_report(args):
    from .report import write_report

    path = write_report(args.folder, args.compare)
    print(f"wrote {path}")
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


def _cmd_board_sim(args):
    from .boards.simulated import serve
    from .synth import target_of

    target, config, board = target_of(args.folder)
    out = Path(args.folder) / BOARD_SIM_FOLDER
    print(f"building the simulated {target} board ({config.groups} groups x {config.lanes} "
          f"lanes) under {args.simulator} in {out} ...", flush=True)
    # The simulator's output goes to a log: announce the port on the terminal's own copy.
    with os.fdopen(os.dup(1), "w") as console:
        serve(config, out, simulator=args.simulator, port=args.port,
              connections=args.connections,
              single_port_memory=board.Board.SINGLE_PORT_MEMORY,
              on_listen=lambda url: print(f"the simulated board listens on {url}: flexigan "
                                          f"run {args.folder} --port {url} --input ...",
                                          file=console, flush=True))
    print("the host disconnected; the simulated board stopped")


def _nonnegative(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def _parser():
    parser = _Parser(prog="flexigan", description="Compile GANs from ONNX to a zero-free "
                     "MIMD-SIMD FPGA accelerator on open tools.")
    parser.add_argument("--version", action="version", version=f"flexigan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress display (results and warnings still print)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("inspect", help="layers, shapes, parameters and MAC counts of a model")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_cmd_inspect)

    p = sub.add_parser("compile", help="quantize and compile a model into an output folder")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--calibrate", metavar="INPUTS",
                   help=".npy/.npz calibration inputs (default: generated)")
    p.add_argument("--force", action="store_true",
                   help="replace an output folder that flexigan compiled")
    p.add_argument("--target", default="sim", choices=sorted(PRESETS),
                   help="accelerator preset (default: sim)")
    p.add_argument("--groups", type=_positive, help="engine groups (default: the target's)")
    p.add_argument("--lanes", type=_positive, help="MAC lanes per group (default: the target's)")
    p.add_argument("--requantize", action="store_true",
                   help="pre-quantized model: calibrate the tensors whose quantization the "
                        "machine cannot represent (asymmetric, not int8) instead of refusing "
                        "them")
    p.add_argument("--no-reorder", action="store_true",
                   help="lower transposed convolutions by zero insertion (the conventional "
                        "baseline)")
    p.add_argument("--no-sparse", action="store_true",
                   help="turn the sparse cores' zero skipping off")
    p.add_argument("--batch", type=_positive, default=1, metavar="N",
                   help="frames per run: each weight tile loads once for N frames "
                        "(default: 1)")
    p.add_argument("--no-rtl", action="store_true",
                   help="do not write the accelerator's Verilog to OUTPUT/rtl")
    p.add_argument("--stop-after", metavar="STEP",
                   help="stop after this step; OUTPUT then holds the products of the steps up "
                        f"to it (steps: {', '.join(s.name for s in steps.compile_steps())})")
    p.set_defaults(run=_cmd_compile)

    p = sub.add_parser("simulate", help="run a compiled model")
    p.add_argument("folder", help="output folder of `flexigan compile`")
    p.add_argument("--engine", default="golden", choices=flow.ENGINES,
                   help="; ".join(f"{e.name}: {e.summary}" for e in engines.ENGINES.values()))
    p.add_argument("--simulator", default="verilator", choices=flow.SIMULATORS,
                   help="rtl: the Verilog simulator (default: verilator)")
    p.add_argument("--waves", action="store_true", help="rtl: record a waveform")
    p.add_argument("--no-sparse", action="store_true",
                   help="isa, rtl: run with zero skipping off, whatever the compiled setting")
    p.add_argument("--input", required=True, help=".npy/.npz model inputs")
    p.add_argument("--output", help="where to write the output (default: FOLDER/output.npy)")
    p.set_defaults(run=_cmd_simulate)

    p = sub.add_parser("report", help="write FOLDER/report.html: the layers, cycles, bounds, "
                       "timeline and images of a compiled (and simulated) folder")
    p.add_argument("folder", help="output folder of `flexigan compile`")
    p.add_argument("--compare", action="append", default=[], metavar="FOLDER",
                   help="another compile of the model (--no-reorder, --no-sparse) to compare "
                        "with; may be repeated")
    p.add_argument("--open", action="store_true", help="open the report in a web browser")
    p.set_defaults(run=_cmd_report)
    _board_commands(sub)
    return parser


def _board_commands(sub):
    p = sub.add_parser("synth", help="build the compiled folder's board to a bitstream "
                       "(Yosys, nextpnr; pip install 'flexigan[synth]')")
    p.add_argument("folder", help="output folder of `flexigan compile --target BOARD`")
    p.add_argument("--program", action="store_true",
                   help="load the bitstream onto the board with openFPGALoader")
    p.add_argument("--allow-timing-fail", action="store_true",
                   help="keep a bitstream that misses its clock (exit status 0)")
    p.add_argument("--seed", type=_positive, default=1, help="nextpnr's placement seed")
    p.set_defaults(run=_cmd_synth)

    p = sub.add_parser("run", help="run a compiled model on a board over its UART bridge")
    p.add_argument("folder", help="output folder of `flexigan compile --target BOARD`")
    p.add_argument("--port", required=True,
                   help="pyserial URL of the board: /dev/ttyUSB0, or socket://127.0.0.1:PORT "
                        "for `flexigan board-sim`")
    p.add_argument("--input", required=True, help=".npy/.npz model inputs")
    p.add_argument("--output", help="where to write the output (default: FOLDER/output.npy)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds a frame may take to reach END (default: 60)")
    p.set_defaults(run=_cmd_run)

    p = sub.add_parser("board-sim", help="simulate the compiled folder's board with its UART "
                       "on a TCP port, for `flexigan run`")
    p.add_argument("folder", help="output folder of `flexigan compile --target BOARD`")
    p.add_argument("--port", type=_nonnegative, default=0,
                   help="TCP port on 127.0.0.1 (default: any free one, printed)")
    p.add_argument("--simulator", default="verilator", choices=flow.SIMULATORS)
    p.add_argument("--connections", type=_positive, default=1,
                   help="stop after this many hosts have come and gone (default: 1)")
    p.set_defaults(run=_cmd_board_sim)


def main(argv=None):
    """Run the command line; return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(argv)
        args.progress = Progress(quiet=args.quiet)
        args.run(args)
    except FlexiganError as exc:
        if debug:
            raise
        print(f"flexigan: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        if debug:
            raise
        print("flexigan: error: out of memory; give fewer samples (--input, --calibrate) or a "
              "smaller model", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flexigan: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
