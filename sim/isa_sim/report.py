"""What a simulated program reports: cycles, MAC counts, bounds and utilization per layer and
in total, and the roofline of one frame.

:func:`simulate` runs a compiled :class:`~flexigan.compiler.program.Program` on int8 inputs
(:func:`~.machine.run`, once per sample) and reports :func:`report_fields` for the whole batch
and per layer (the layers' instruction ranges in the program's layout); :func:`roofline` tells
which bound dominates a frame and how batching moves it.
"""

from __future__ import annotations

import numpy as np

from .machine import run

__all__ = ["report_fields", "figures", "ROOFLINE_BATCHES", "roofline", "timeline", "simulate"]


def report_fields():
    """Names of the numbers :func:`simulate` reports per layer and in total."""
    return ("cycles", "macs_useful", "macs_issued", "macs_skipped", "utilization",
            "compute_bound_cycles", "memory_bound_cycles", "dram_bytes")


def figures(config, cycles, useful, issued, skipped, dram):
    """The :func:`report_fields` of a run (or a layer) from its raw counts."""
    lanes = config.total_lanes
    return {"cycles": int(cycles), "macs_useful": int(useful), "macs_issued": int(issued),
            "macs_skipped": int(skipped),
            "utilization": round(useful / (cycles * lanes), 4) if cycles else 0.0,
            "compute_bound_cycles": round(useful / lanes, 1),
            "memory_bound_cycles": round(dram / config.axi_bytes, 1), "dram_bytes": int(dram)}


#: Batch sizes the roofline analysis tabulates.
ROOFLINE_BATCHES = (1, 2, 4, 8, 16, 32, 64)


def roofline(config, macs_useful, act_bytes, constant_bytes, batches=ROOFLINE_BATCHES):
    """Which bound dominates one frame, and how batching weights across frames moves it.

    A batched schedule loads each tile's constants (weights, parameters, tables, micro-ops)
    once and runs it over ``batch`` frames, so per frame the memory bound is
    ``(act_bytes + constant_bytes / batch) / axi_bytes`` while the compute bound,
    ``macs_useful / total_lanes``, stays. An estimate from one frame's traffic (activations
    are assumed to stay where a batch-1 program keeps them), not a simulated batched program.
    """
    compute = macs_useful / config.total_lanes
    rows = []
    for batch in batches:
        memory = (act_bytes + constant_bytes / batch) / config.axi_bytes
        rows.append({"batch": batch, "compute_bound_cycles": round(compute, 1),
                     "memory_bound_cycles": round(memory, 1),
                     "bound": "memory" if memory > compute else "compute"})
    crossover = next((r["batch"] for r in rows if r["bound"] == "compute"), None)
    floor = act_bytes / config.axi_bytes
    return {"bound_at_batch_1": rows[0]["bound"], "act_bytes_per_frame": int(act_bytes),
            "constant_bytes": int(constant_bytes),
            "compute_bound_at_batch": crossover,
            "memory_bound_floor_cycles": round(floor, 1),
            "memory_bound_at_any_batch": floor > compute,
            "batches": rows}


def _batch_size(layout, inputs_int8):
    """The samples in ``inputs_int8``, after checking each model input's shape and range."""
    batch = None
    for name, entry in layout["inputs"].items():
        if name not in inputs_int8:
            raise ValueError(f"inputs_int8 has no array for input {name!r}")
        x = np.asarray(inputs_int8[name])
        if x.shape[1:] != tuple(entry["shape"]) or x.dtype.kind not in "iu" or \
                (x.size and (x.min() < -128 or x.max() > 127)):
            raise ValueError(f"inputs_int8[{name!r}] must be int8 values of shape "
                             f"(N, {', '.join(map(str, entry['shape']))}), not {x.dtype} "
                             f"{x.shape}")
        batch = x.shape[0] if batch is None else batch
    return batch


def timeline(layers, result):
    """The timeline of one run (a :class:`~.machine.Result`) by layer: ``cycles``, ``runs``
    (each group's RUNs as ``[group, start, end, layer, stall cycles]``) and ``dmas``
    (``[start, end, layer, space, store]``), a layer being its index in ``layers`` (the
    program's schedule, whose instruction ranges cover the program)."""
    lasts = np.array([layer["last"] for layer in layers])

    def layer(instruction):
        return min(int(np.searchsorted(lasts, instruction, side="right")), len(layers) - 1)

    return {"cycles": int(result.cycles),
            "runs": [[g, int(a), int(b), layer(i), int(s)]
                     for g, a, b, i, s in result.timeline["runs"]],
            "dmas": [[int(a), int(b), layer(i), space, store]
                     for a, b, i, space, store in result.timeline["dmas"]]}


def _add_layer_counts(totals, layers, result):
    """Add each layer's cycles, MACs issued, MACs skipped and DMA bytes in ``result`` (a
    :class:`~.machine.Result`) to its row of ``totals``."""
    for i, layer in enumerate(layers):
        first, last = layer["first"], layer["last"]
        start = result.time[first - 1] if first else 0
        totals[i] += [result.time[last - 1] - start,
                      result.macs_issued[first:last].sum(),
                      result.macs_skipped[first:last].sum(),
                      result.dram_bytes[first:last].sum()]


def simulate(program, inputs_int8, config=None, sparse=True, progress=None):
    """Run ``program`` once per ``program.batch`` samples of ``inputs_int8`` (the number of
    samples must be a multiple of it); return ``(outputs, report)``.

    Parameters
    ----------
    program : Program
        From :func:`flexigan.compiler.lower.lower` (or ``load_program``).
    inputs_int8 : dict of str to integer array
        ``(N, *shape)`` int8 values per model input (the quantized IR's input names); ``N`` a
        multiple of ``program.batch``.
    config : AcceleratorConfig, optional
        Must be the program's (the default).
    sparse : bool
        Zero skipping on or off.
    progress : callable, optional
        Called with the number of samples done after each run.

    Returns
    -------
    outputs : dict of str to int8 array
        ``(N, *shape)`` per model output.
    report : dict
        ``engine``, ``batch`` (samples), ``program_batch`` (frames per run),
        ``cycles_per_frame``, ``sparse``, ``output_shape``, the :func:`report_fields` for the
        whole batch, ``groups`` (busy and stall cycles), ``counters`` (the COUNTERS block of the
        last sample), ``roofline`` (see :func:`roofline`; per frame), ``layers`` (the same
        fields per layer) and ``timeline`` (:func:`timeline` of the first run).
    """
    config = config or program.config
    if config != program.config:
        raise ValueError("config differs from the one the program was compiled for")
    layout = program.layout
    batch = _batch_size(layout, inputs_int8)
    frames = program.batch
    outputs = {name: [] for name in layout["outputs"]}
    layers = layout["layers"]
    totals = np.zeros((len(layers), 4), np.int64)   # cycles, issued, skipped, dram
    busy, stall = np.zeros(config.groups, np.int64), np.zeros(config.groups, np.int64)
    first = None
    for n in range(program.runs(batch)):
        result = run(program.frame(inputs_int8, n), config, sparse)
        first = first or timeline(layers, result)
        for frame in range(frames):
            for name, value in program.outputs(result.memory, frame).items():
                outputs[name].append(value)
        _add_layer_counts(totals, layers, result)
        busy += result.busy
        stall += result.stall
        if progress:
            progress((n + 1) * frames)
    rows = [{"name": layer["name"], "op": layer["op"],
             **figures(config, cycles, layer["macs_useful"] * batch, issued, skipped, dram)}
            for layer, (cycles, issued, skipped, dram) in zip(layers, totals)]
    total = totals.sum(axis=0)
    useful = sum(layer["macs_useful"] for layer in layers) * batch
    outputs = {name: np.stack(v) for name, v in outputs.items()}
    # The last run's traffic (every run's is equal): activations per frame, constants per run.
    traffic = result.dram_by_space
    report = {"engine": "isa", "batch": batch, "program_batch": frames,
              "cycles_per_frame": round(total[0] / batch, 1) if batch else 0.0,
              "sparse": sparse,
              "reorder": layout.get("reorder", True),
              "output_shape": list(next(iter(outputs.values())).shape),
              **figures(config, total[0], useful, total[1], total[2], total[3]),
              "groups": [{"busy": int(b), "stall": int(s)} for b, s in zip(busy, stall)],
              "counters": result.counters,
              "roofline": roofline(config, useful // batch, traffic["ACT"] / frames,
                                   sum(n for space, n in traffic.items() if space != "ACT")),
              "layers": rows, "timeline": first}
    return outputs, report
