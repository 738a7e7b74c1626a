"""The golden interpreter: runs a quantized IR graph in integers.

:func:`run_int` runs a quantized graph with exactly the integer arithmetic of docs/numerics.md
(:mod:`flexigan.hw.arch.numerics`): it *defines* the numbers the instruction-level simulator
and the RTL must reproduce bit for bit. It shares the op kernels of the float interpreter
(:mod:`flexigan.compiler.evaluate`, whose :func:`~flexigan.compiler.evaluate.run_float` is the
float reference), whose float64 products are exact for int8 operands.

Arrays are batched: axis 0 is the batch, the rest is the IR's per-sample shape.
"""

from __future__ import annotations

import numpy as np

from ..compiler import ir
from ..compiler.evaluate import LAYOUT_KERNELS, MAC_KERNELS, channels, pad, run_graph
from ..hw.arch.numerics import round_half_up, sat8

__all__ = ["run_int", "run_quantized", "quantize_input", "clipped_fraction", "dequantize",
           "sqnr_db"]


def _int_step(n, xs):
    op, q = n.op, n.q
    kind = type(op)
    if kind in MAC_KERNELS:
        products = MAC_KERNELS[kind](xs[0].astype(np.float64), q.weight.astype(np.float64), op)
        acc = products.astype(np.int64) + channels(q.bias, products.ndim)
        return q.requant.apply(acc, channel_axis=1)
    if kind in LAYOUT_KERNELS:
        return LAYOUT_KERNELS[kind](op, xs[0])
    if kind is ir.Pad:
        return pad(op, xs[0], q)
    if kind in (ir.Affine, ir.Activation):
        return q.apply(xs[0], channel_axis=1)
    if kind is ir.Add:
        # quant.Sum: acc = a * weight_a + b * weight_b, then one shared multiplier and shift.
        return q.apply(*xs)
    if kind is ir.InstanceNorm:
        return q.apply(*xs)
    if kind is ir.Concat:
        parts = [x if r is None else r.apply(x, channel_axis=1) for x, r in zip(xs, q)]
        return np.concatenate(parts, axis=op.axis + 1)
    raise TypeError(f"golden: no integer semantics for op {op!r}")


def _int8_feed(name, x):
    if x.dtype.kind not in "iu" or (x.size and (x.min() < -128 or x.max() > 127)):
        raise ValueError(f"feeds[{name!r}] must hold int8 values, not {x.dtype} in "
                         f"[{x.min()}, {x.max()}]")
    return x.astype(np.int8)


def run_int(qgraph, feeds_int8, keep=False):
    """Run the quantized ``qgraph`` in integer arithmetic (docs/numerics.md).

    Parameters
    ----------
    qgraph : networkx.DiGraph
        An IR graph made by :func:`flexigan.compiler.quant.quantize`.
    feeds_int8 : dict of str to integer array
        One ``(N, *shape)`` array of int8 values per graph input.
    keep : bool
        Return every value, not only the graph outputs.

    Returns
    -------
    dict of str to int8 array
    """
    for name, n in ir.topo_nodes(qgraph):
        if n.scale is None:
            raise ValueError(f"qgraph is not quantized: value {name!r} has no scale")
    return run_graph(qgraph, feeds_int8, keep, _int_step, _int8_feed)


def quantize_input(x, scale):
    """Float ``x`` as int8 steps of ``scale``: ``sat8(floor(x / scale + 0.5))``."""
    return sat8(round_half_up(np.asarray(x, dtype=np.float64) / scale))


def clipped_fraction(x, scale):
    """The fraction of the values of ``x`` that :func:`quantize_input` saturates: those outside
    the int8 range of ``scale`` (the range calibration gave the input)."""
    steps = round_half_up(np.asarray(x, dtype=np.float64) / scale)
    return float(np.mean(sat8(steps) != steps)) if steps.size else 0.0


def dequantize(q, scale):
    """The real values of the int8 array ``q``: ``q * scale`` in float64."""
    return q.astype(np.float64) * scale


def run_quantized(qgraph, float_feeds, keep=False):
    """Quantize ``float_feeds`` with each input's scale, :func:`run_int`, and dequantize.

    Returns the graph outputs (every value if ``keep``) as float64 arrays.
    """
    feeds = {name: quantize_input(float_feeds[name], ir.node(qgraph, name).scale)
             for name in qgraph.graph["inputs"] if name in float_feeds}
    values = run_int(qgraph, feeds, keep)
    return {name: dequantize(v, ir.node(qgraph, name).scale) for name, v in values.items()}


def sqnr_db(reference, test):
    """Signal-to-quantization-noise ratio of ``test`` against ``reference`` in dB:
    ``10 log10(sum(ref**2) / sum((ref - test)**2))``; ``inf`` when they are equal."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    if noise == 0:
        return float("inf")
    with np.errstate(divide="ignore"):
        return float(10 * np.log10(np.sum(ref ** 2) / noise))
