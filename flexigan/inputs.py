"""Model inputs: generated calibration data, and arrays a user gives in ``.npy``/``.npz`` files.

Both ``flexigan compile --calibrate`` and ``flexigan simulate --input`` read their arrays here,
so the two accept the same files.
"""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path

import numpy as np

from .compiler import ir, layout
from .compiler.limits import CALIBRATION_SAMPLES
from .errors import UsageError

__all__ = ["CALIBRATION_SAMPLES", "default_calibration", "load_inputs"]


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

    The arrays are in the ONNX model's layout; they are returned in the IR's
    (:mod:`flexigan.compiler.layout`). A missing batch axis is added. Raises
    :class:`UsageError` for a file that cannot be read,
    arrays not named after the model's inputs, a shape that is not the input's, a batch of
    none, values that are not real numbers or not finite, and inputs of different batch sizes.
    """
    path = Path(path)
    names = graph.graph["inputs"]
    arrays = _read(path, names)
    if sorted(arrays) != sorted(names):
        raise UsageError(f"{path} holds arrays {sorted(arrays)}; the model's inputs are "
                         f"{sorted(names)}: give one array per input, named after it")
    feeds = {name: layout.to_ir(graph, name, _checked(name, arrays[name],
                                                      layout.onnx_shape(graph, name), path))
             for name in names}
    batches = {name: x.shape[0] for name, x in feeds.items()}
    if len(set(batches.values())) > 1:
        raise UsageError(f"the inputs of {path} have different batch sizes: {batches}")
    return feeds


def _read(path, names):
    """The arrays of an ``.npy`` (named after the model's only input) or ``.npz`` file."""
    try:
        with contextlib.ExitStack() as stack:
            data = np.load(path, allow_pickle=False)
            if isinstance(data, np.lib.npyio.NpzFile):
                stack.enter_context(data)
                return {k: data[k] for k in data.files}
            if len(names) != 1:
                raise UsageError(f"the model has inputs {names}: give an .npz keyed by name")
            return {names[0]: data}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
            " ".join(str(exc).split()) or "empty or truncated file"
        raise UsageError(f"cannot read inputs from {path}: {reason}") from None


def _checked(name, x, shape, path):
    """``x`` as float64 ``(N, *shape)``, N >= 1, every value finite."""
    if x.dtype.kind not in "iuf":
        raise UsageError(f"input {name!r} of {path} has dtype {x.dtype}: give real numbers "
                         "(float or integer)")
    if x.shape == shape:
        x = x[None]
    if x.shape[1:] != shape:
        raise UsageError(f"input {name!r} of {path} has shape {x.shape}; the model expects "
                         f"(N, {', '.join(map(str, shape))})")
    if x.shape[0] == 0:
        raise UsageError(f"input {name!r} of {path} holds no samples (batch 0)")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.unravel_index(int(bad.argmax()), x.shape))
        raise UsageError(f"input {name!r} of {path} has {int(bad.sum())} NaN or infinite "
                         f"value(s), the first at index {first}; give finite numbers")
    return x
