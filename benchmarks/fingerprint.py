"""Fingerprint what the compiler emits, to prove that a refactoring changed no behaviour.

Compiles every example model for several targets and lowerings, runs one seeded input through
the instruction-level simulator, and prints (or writes as JSON) the SHA-256 of ``program.bin``
and ``memory.bin`` with the total and per-layer cycle counts. Run it before and after a change
and compare::

    python benchmarks/fingerprint.py --json before.json
    ...
    python benchmarks/fingerprint.py --json after.json --compare before.json

It drives the command line, so it keeps working while the code behind it moves.
"""

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODELS = ["digits/generator", "digits/discriminator", "dcgan32/generator",
          "dcgan64/generator", "dcgan64/discriminator"]
#: (name, compile options): the presets, a small machine and both lowerings.
VARIANTS = [
    ("sim", []),
    ("sim-2x8", ["--groups", "2", "--lanes", "8"]),
    ("sim-2x8-noreorder", ["--groups", "2", "--lanes", "8", "--no-reorder"]),
    ("sim-nosparse", ["--no-sparse"]),
    ("ulx3s", ["--target", "ulx3s"]),
    ("icebreaker", ["--target", "icebreaker"]),
]


def _input(model, path):
    """A seeded batch of one for every input of ``model``, saved to ``path`` (``.npz``)."""
    rng = np.random.default_rng(1)
    feeds = {}
    for value in onnx.load(model).graph.input:
        dims = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(dims).clip(-1, 1)
    np.savez(path, **feeds)


def fingerprint(model, options, tmp):
    """Hashes and cycles of ``model`` compiled with ``options`` (or the one-line error)."""
    out = Path(tmp) / "out"
    cmd = [sys.executable, "-m", "flexigan"]
    done = subprocess.run([*cmd, "compile", str(model), "-o", str(out), "--force", "--no-rtl",
                           *options], capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    inputs = Path(tmp) / "inputs.npz"
    _input(model, inputs)
    done = subprocess.run([*cmd, "simulate", str(out), "--engine", "isa", "--input",
                           str(inputs)], capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    report = json.loads((out / "sim_report.json").read_text())
    digest = {f: hashlib.sha256((out / f).read_bytes()).hexdigest()[:16]
              for f in ("program.bin", "memory.bin")}
    return {**digest, "cycles": report["cycles"], "bit_exact": report["bit_exact_vs_golden"],
            "layer_cycles": [layer.get("cycles") for layer in report.get("layers", [])]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the fingerprints to this file")
    parser.add_argument("--compare", help="compare with fingerprints written earlier")
    args = parser.parse_args(argv)
    prints = {}
    for name in MODELS:
        for variant, options in VARIANTS:
            with tempfile.TemporaryDirectory() as tmp:
                result = fingerprint(EXAMPLES / f"{name}.onnx", options, tmp)
            key = f"{name} {variant}"
            prints[key] = result
            summary = result.get("error") or \
                f"{result['program.bin']} {result['memory.bin']} {result['cycles']:>10,}"
            print(f"{key:40} {summary}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(prints, indent=1) + "\n")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        changed = [k for k in sorted(set(before) | set(prints)) if before.get(k) != prints.get(k)]
        for key in changed:
            print(f"CHANGED {key}: {before.get(key)} -> {prints.get(key)}")
        print("identical" if not changed else f"{len(changed)} fingerprint(s) changed")
        return 1 if changed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
