"""``make bench``: wall-clock times of the flow's steps on the example models, as a table.

Times are the median of ``--repeat`` runs on this machine; they are reported, never asserted
(cycle counts and MAC counts, which are deterministic, are what the tests check). The budget
column gives the project's targets (compile under 10 s, instruction-level simulation of one
frame under 60 s).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flexigan import flow
from flexigan.compiler.onnx_import import import_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODELS = ["digits/generator", "digits/discriminator", "dcgan64/generator",
          "dcgan64/discriminator"]


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(name, repeat, batch):
    path = EXAMPLES / f"{name}.onnx"
    rows = [(name, "import", timed(lambda: import_model(path), repeat), None)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        quiet = lambda message: None  # noqa: E731
        rows.append((name, "compile (import .. program)", timed(
            lambda: flow.compile_model(path, out, force=True, rtl=False, log=quiet), repeat),
            10.0))
        graph = import_model(path)
        feeds = flow.default_calibration(graph, samples=batch, seed=1)
        np.savez(Path(tmp) / "x.npz", **feeds)
        rows.append((name, f"simulate golden, batch {batch}", timed(
            lambda: flow.simulate(out, "golden", Path(tmp) / "x.npz", log=quiet), repeat), None))
        np.savez(Path(tmp) / "one.npz", **{k: v[:1] for k, v in feeds.items()})
        rows.append((name, "simulate isa, batch 1", timed(
            lambda: flow.simulate(out, "isa", Path(tmp) / "one.npz", log=quiet), repeat), 60.0))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    print(f"{'model':24} {'step':32} {'median s':>9} {'budget s':>9}")
    for name in MODELS:
        for model, step, seconds, budget in bench_model(name, args.repeat, args.batch):
            limit = f"{budget:9.0f}" if budget else f"{'':9}"
            print(f"{model:24} {step:32} {seconds:9.3f} {limit}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
