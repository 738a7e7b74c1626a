"""``make bench-rtl``: the DCGAN-64 generator end to end on the accelerator's RTL.

Compiles ``examples/dcgan64/generator.onnx`` for the ``sim`` target (16 groups x 8 lanes by
default), runs one latent on the Verilog under Verilator (and, with ``--icarus``, Icarus)
through cocotb, with the external memory in the design, and prints a table: the wall-clock time
of each step, the simulator's build (once per configuration and code version; a second run
finds it in the cache), the RTL's cycles from its hardware counters, cycles per second, the
ratio to the instruction-level simulator's estimate and whether the image is bit-exact with
it. Times are reported, never asserted.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flexigan import flow

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "dcgan64" / "generator.onnx"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=None, help="default: the sim target's")
    parser.add_argument("--lanes", type=int, default=None, help="default: the sim target's")
    parser.add_argument("--icarus", action="store_true", help="also run under Icarus")
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    args = parser.parse_args(argv)
    quiet = lambda message: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        out = work / "dcgan64"
        config = flow.target_config("sim", args.groups, args.lanes)
        start = time.perf_counter()
        flow.compile_model(MODEL, out, config=config, force=True, log=quiet)
        rows = [("compile (incl. Verilog, cached per config)", time.perf_counter() - start, "")]
        np.save(work / "z.npy", np.random.default_rng(0).standard_normal((1, 100, 1, 1))
                .astype(np.float32))
        start = time.perf_counter()
        isa = flow.simulate(out, "isa", work / "z.npy", output_path=work / "isa.npy", log=quiet)
        rows.append(("simulate isa", time.perf_counter() - start, f"{isa['cycles']:,} cycles"))
        for simulator in ["verilator"] + (["icarus"] if args.icarus else []):
            start = time.perf_counter()
            rtl = flow.simulate(out, "rtl", work / "z.npy", output_path=work / "rtl.npy",
                                simulator=simulator, log=quiet)
            built = rtl["build_seconds"]
            rows.append((f"simulate rtl, {simulator}", time.perf_counter() - start,
                         f"build {f'{built:.0f} s' if built else 'cached'}; "
                         f"{rtl['cycles']:,} cycles in {rtl['rtl_seconds']:.1f} s: "
                         f"{rtl['cycles_per_second']:,} cycles/s; "
                         f"{rtl['cycles_vs_isa']:.3f} x isa; "
                         f"bit-exact: {'yes' if rtl['bit_exact_vs_isa'] else 'NO'}"))
    print(f"DCGAN-64 generator, {MODEL.relative_to(ROOT)}, {config.groups} groups x "
          f"{config.lanes} lanes, one latent")
    print(f"{'step':44} {'seconds':>8}  result")
    for step, seconds, result in rows:
        print(f"{step:44} {seconds:8.1f}  {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
