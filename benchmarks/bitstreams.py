"""Build both boards' bitstreams for the digits generator and print what they give.

For each board: ``flexigan compile examples/digits/generator.onnx --target BOARD`` and
``flexigan synth`` (timing failures kept, so the table shows the Fmax reached), then one row:
lanes, Fmax against the clock, LUT/FF/DSP/BRAM used of available, build time and frames/s.
A board that does not fit gets its one-line reason. Exit status 1 when a board does not fit
or misses its clock. ``make bitstreams`` runs it; the folders stay in ``build/bitstreams``.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "digits" / "generator.onnx"
BOARDS = ("icebreaker", "ulx3s")
RESOURCES = ("lut", "ff", "dsp", "bram", "spram")


def _flexigan(*argv):
    return subprocess.run([sys.executable, "-m", "flexigan", *map(str, argv)], text=True,
                          capture_output=True)


def build(board, out):
    """Compile and synthesize for ``board``; the synth report, or the error line."""
    done = _flexigan("compile", MODEL, "-o", out, "--target", board, "--force", "--no-rtl")
    if done.returncode == 0:
        print(f"{board}: compiled; building (progress in {out}/synth/*.log) ...", flush=True)
        done = _flexigan("synth", out, "--allow-timing-fail")
    if done.returncode:
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
    return json.loads((out / "synth_report.json").read_text())


def row(board, report):
    if isinstance(report, str):
        return f"{board:11} {report}"
    used = "  ".join(f"{r['used']:>6,}/{r['available']:<6,}" if r["available"] else f"{'-':^13}"
                     for r in (report["resources"].get(k, {"used": 0, "available": 0})
                               for k in RESOURCES))
    fmax = min(report["fmax_mhz"].values())
    seconds = sum(report["seconds"].values())
    return (f"{board:11} {report['lanes']:>5} {fmax:>7.1f} {report['clock_mhz']:>7.1f} "
            f"{'yes' if report['timing_met'] else 'NO':>4}  {used}  {seconds:>7.0f} "
            f"{report['frames_per_second']:>10,.0f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=ROOT / "build" / "bitstreams", type=Path)
    parser.add_argument("--boards", nargs="+", default=BOARDS, choices=BOARDS)
    args = parser.parse_args(argv)
    reports = {board: build(board, args.out / board) for board in args.boards}
    header = (f"{'board':11} {'lanes':>5} {'Fmax':>7} {'clock':>7} {'met':>4}  "
              + "  ".join(f"{k.upper() + ' used/avail':^13}" for k in RESOURCES)
              + f"  {'build s':>7} {'frames/s':>10}")
    print(header)
    print("-" * len(header))
    for board, report in reports.items():
        print(row(board, report))
    bad = [b for b, r in reports.items() if isinstance(r, str) or not r["timing_met"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
