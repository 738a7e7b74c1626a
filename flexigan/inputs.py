"""Model inputs: generated calibration data, and arrays a user gives in ``.npy``/``.npz`` files.

Both ``flexigan compile --calibrate`` and ``flexigan simulate --input`` read their arrays here,
so the two accept the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .compiler import ir
from .errors import UsageError

__all__ = ["CALIBRATION_SAMPLES", "default_calibration", "load_inputs"]

CALIBRATION_SAMPLES = 64


def default_calibration(graph, samples=CALIBRATION_SAMPLES, seed=0):
    """Generated calibration inputs: standard-normal latents for vector-like inputs (a
    generator's ``(C,)`` or ``(C, 1, 1)``), uniform [-1, 1] images otherwise (GAN images are
    tanh-ranged)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.graph["inputs"]:
        shape = ir.node(graph, name).shape
        if len(shape) == 1 or shape[1:] == (1, 1):
            feeds[name] = rng.standard_normal((samples, *shape))
        else:
            feeds[name] = rng.uniform(-1.0, 1.0, (samples, *shape))
    return feeds


def load_inputs(graph, path):
    """Read model inputs from ``.npy`` (single-input models) or ``.npz`` (keyed by input name).

    A missing batch axis is added. Raises :class:`UsageError` on a shape or name mismatch.
    """
    path = Path(path)
    names = graph.graph["inputs"]
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        else:
            arrays = {names[0]: np.load(path, allow_pickle=False)}
            if len(names) != 1:
                raise UsageError(f"the model has inputs {names}: give an .npz keyed by name")
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read inputs from {path}: {exc}") from None
    if len(arrays) == 1 and len(names) == 1 and names[0] not in arrays:
        arrays = {names[0]: next(iter(arrays.values()))}
    feeds = {}
    for name in names:
        if name not in arrays:
            raise UsageError(f"{path} has no array for input {name!r} (has {sorted(arrays)})")
        x = np.asarray(arrays[name], dtype=np.float64)
        shape = ir.node(graph, name).shape
        if x.shape == shape:
            x = x[None]
        if x.shape[1:] != shape:
            raise UsageError(f"input {name!r} of {path} has shape {x.shape}; the model expects "
                             f"(N, {', '.join(map(str, shape))})")
        feeds[name] = x
    return feeds
