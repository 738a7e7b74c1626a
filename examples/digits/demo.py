"""``make demo``: compile the trained digits generator, run it, and show the digits.

Runs the same steps a user types (``flexigan compile``, ``flexigan simulate``) on a grid of
standard-normal latents, then writes ``OUT/digits.png``: the int8 golden model's digits on the
left, onnxruntime's float digits on the right, and prints the SQNR between them. Then runs the
compiled program in the instruction-level simulator, and the first digits on the accelerator's
Verilog under Icarus (a small 2-group x 8-lane machine), and prints their cycles and whether
their digits equal the golden model's bit for bit. Ends with ``flexigan report``: the path of
a page with the layers, cycles, timeline and the digits beside onnxruntime's.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from flexigan import cli, flow, images

HERE = Path(__file__).resolve().parent
GRID = 8  # an 8 x 8 grid of digits
RTL_DIGITS = 2  # digits run on the RTL (Icarus runs a few thousand cycles per second)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/demo",
                        help="output folder: the demo's files, and the compiled folders in it "
                             "(overwritten)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the latents")
    parser.add_argument("--no-rtl", action="store_true", help="skip the RTL simulation")
    args = parser.parse_args(argv)
    out = Path(args.out)
    model = HERE / "generator.onnx"
    # The compiled folders are folders of their own in ``out`` (``--force`` empties only
    # what flexigan wrote there), so a second demo overwrites the first.
    sim = out / "sim-16x8"

    # The RTL is generated for the small machine below, not for this 16 x 8 one.
    print(f"$ flexigan compile {model.relative_to(HERE.parent.parent)} -o {sim} --force --no-rtl")
    if cli.main(["compile", str(model), "-o", str(sim), "--force", "--no-rtl"]):
        return 1
    latents = np.random.default_rng(args.seed).standard_normal((GRID * GRID, 16, 1, 1))
    np.save(out / "latents.npy", latents)
    print(f"$ flexigan simulate {sim} --engine golden --input {out / 'latents.npy'}")
    if cli.main(["simulate", str(sim), "--engine", "golden", "--input",
                 str(out / "latents.npy")]):
        return 1

    golden = np.load(sim / "output.npy")
    reference = flow.float_reference(sim / "model.onnx", {"z": latents})["image"]
    left, right = (images.grid(x, columns=GRID, zoom=4) for x in (golden, reference))
    gap = np.full((left.shape[0], 12), 255, dtype=np.uint8)
    Image.fromarray(np.concatenate([left, gap, right], axis=1)).save(out / "digits.png")

    report = json.loads((sim / "sim_report.json").read_text())
    print(f"wrote {out / 'digits.png'}: int8 golden model (left) | onnxruntime float (right)")
    print(f"SQNR of the int8 golden model against float: {report['sqnr_db']:.1f} dB "
          f"over {GRID * GRID} digits")
    for row in report["layers"]:
        print(f"  {row['name']:12} {row['op']:14} {row['sqnr_db']:6.1f} dB")

    print(f"$ flexigan simulate {sim} --engine isa --input {out / 'latents.npy'} "
          f"--output {out / 'isa.npy'}")
    if cli.main(["simulate", str(sim), "--engine", "isa", "--input", str(out / "latents.npy"),
                 "--output", str(out / "isa.npy")]):
        return 1
    isa = json.loads((sim / "sim_report.json").read_text())
    same = np.array_equal(np.load(out / "isa.npy"), golden)
    print(f"instruction-level simulator: {isa['cycles'] // isa['batch']} cycles per digit "
          f"({isa['cycles'] // isa['batch'] / 1e3 / flow.target_config('sim').clock_mhz:.2f} ms "
          f"at {flow.target_config('sim').clock_mhz:.0f} MHz), digits bit-exact with the "
          f"golden model: {'yes' if same else 'NO'}")
    if not same:
        return 1
    status = 0 if args.no_rtl else run_rtl(out, model, latents, golden)
    print(f"$ flexigan report {sim}")
    if cli.main(["report", str(sim)]):
        return 1
    print(f"the report, the digits beside onnxruntime's: {sim / 'report.html'}")
    return status


def run_rtl(out, model, latents, golden):
    """The first digits on the accelerator's Verilog; 0 when they match the golden model."""
    hw = out / "rtl-2x8"
    np.save(out / "latents-rtl.npy", latents[:RTL_DIGITS])
    steps = [["compile", str(model), "-o", str(hw), "--groups", "2", "--lanes", "8", "--force"],
             ["simulate", str(hw), "--engine", "rtl", "--simulator", "icarus", "--input",
              str(out / "latents-rtl.npy"), "--output", str(out / "rtl.npy")]]
    for argv in steps:
        shown = [a if not a.startswith(str(HERE)) else str(Path(a).relative_to(HERE.parent.parent))
                 for a in argv]
        print("$ flexigan " + " ".join(shown))
        if cli.main(argv):
            return 1
    report = json.loads((hw / "sim_report.json").read_text())
    same = np.array_equal(np.load(out / "rtl.npy"), golden[:RTL_DIGITS])
    print(f"RTL under Icarus: {report['cycles'] // RTL_DIGITS} cycles per digit (hardware "
          f"counter), digits bit-exact with the golden model: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
