"""What the host can hold: a model whose values or multiplies would not fit is refused at import,
with the layer and the size, before any array of it is allocated.

Calibration runs the float model on :data:`CALIBRATION_SAMPLES` samples at once in float64
(:mod:`flexigan.compiler.evaluate`), and a convolution's kernel holds its padded input (a
transposed one its un-cropped output) beside the result: a value of ``E`` elements per sample
needs ``E * 8 * CALIBRATION_SAMPLES`` bytes of the host's memory. Multiplies cost time, not
memory, but a layer above :data:`MAX_MACS` per sample would keep calibration and the simulators
busy for days; no FPGA target runs it at a useful rate either.
"""

from __future__ import annotations

import math
import os

from ..errors import ModelError
from . import ir, macs

__all__ = ["CALIBRATION_SAMPLES", "MAX_MACS", "host_bytes", "check_value", "check_layer"]

#: Samples of generated calibration inputs (``flexigan.inputs`` makes them): the batch the
#: float passes hold at once.
CALIBRATION_SAMPLES = 64
#: Bytes of a float64, the type calibration computes in.
FLOAT_BYTES = 8
#: Multiplies per sample of the largest layer accepted (DCGAN-64's largest: 1.3e8 in the
#: zero-insertion lowering).
MAX_MACS = 10 ** 12


def host_bytes():
    """The host's physical memory, in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 34                  # 16 GiB where the system does not say


def _size(count):
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1000


def check_value(label, what, shape):
    """Refuse a value of ``shape`` (per sample) that calibration could not hold; ``label`` and
    ``what`` name it in the message (a layer and its op)."""
    elements = math.prod(int(d) for d in shape)
    need = elements * FLOAT_BYTES * CALIBRATION_SAMPLES
    if need > host_bytes():
        raise ModelError(f"layer {label!r} ({what}) would hold {elements:,} values per sample: "
                         f"{_size(need)} for a calibration batch of {CALIBRATION_SAMPLES}, and "
                         f"this host has {_size(host_bytes())}; refused")


def _working_shapes(op, in_shape, out_shape):
    """The per-sample shapes a kernel of ``op`` holds at once: its output and, for the
    convolutions, the padded input or the un-cropped output."""
    shapes = [out_shape]
    if isinstance(op, ir.Conv) and len(in_shape) == 3:
        top, left, bottom, right = op.pads
        shapes.append((in_shape[0], in_shape[1] + top + bottom, in_shape[2] + left + right))
    if isinstance(op, ir.ConvTranspose) and len(in_shape) == 3:
        (sh, sw), (dh, dw) = op.strides, op.dilations
        kh, kw = op.weight.shape[2:]
        shapes.append((out_shape[0], sh * (in_shape[1] - 1) + dh * (kh - 1) + 1,
                       sw * (in_shape[2] - 1) + dw * (kw - 1) + 1))
    return shapes


def check_layer(graph, name):
    """Refuse the IR value ``name`` of ``graph`` when a size is not positive, calibration could
    not hold what its op computes, or it has more than :data:`MAX_MACS` multiplies."""
    n = ir.node(graph, name)
    what = type(n.op).__name__
    if any(d <= 0 for d in n.shape):
        raise ModelError(f"layer {name!r} ({what}) has shape {n.shape}: every size must be "
                         "positive")
    in_shape = ir.node(graph, n.inputs[0]).shape if n.inputs else ()
    for shape in _working_shapes(n.op, in_shape, n.shape):
        check_value(name, what, shape)
    if n.inputs:
        count = macs.layer_macs(n.op, in_shape, n.shape).zero_insertion
        if count > MAX_MACS:
            raise ModelError(f"layer {name!r} ({what}) needs {count:,} multiplies per sample, "
                             f"more than the {MAX_MACS:,} flexigan accepts; refused")
