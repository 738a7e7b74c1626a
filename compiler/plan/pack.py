"""Pass 2b: a layer with few output channels packs neighbouring output columns into its lanes.

Each lane owns one output channel, so a layer with ``C`` output channels on ``L > C`` lanes
leaves ``L - C`` lanes idle (the RGB output of a generator: 3 of 8). Neighbouring output
columns read overlapping input columns, so ``P`` of them become one wider output pixel of
``P*C`` channels, computed by a convolution whose kernel spans the union of their input
columns (a lane's weights are zero on the columns its own output does not read):

* a Conv (stride ``s``, kernel ``k`` along columns) packs ``P`` columns into a Conv of
  stride ``P*s`` and kernel ``(P - 1)*s + k``;
* a ConvTranspose (stride ``s``) packs its ``s`` column phases, or ``m`` neighbouring groups
  of them: output column ``s*j + b`` meets tap ``t`` at input column ``j + (b + pad - t)/s``,
  so along columns the layer becomes a direct convolution over the input of stride ``m``,
  one tap per input column the packed phases read; rows stay transposed (zero-free phases).
  The packed columns need not start at a phase 0: k=4, s=2, pad 1 reads 3 input columns for
  output columns ``2j, 2j + 1`` but 2 for ``2j + 1, 2j + 2`` (6 of 8 lanes busy at every
  step, against 4 of 8). Such an alignment makes the first and last packed pixels reach
  past the image by a column: a model output that its layer alone writes grows those
  margin columns (its storage's ``view`` places the image in them).

Lane ``dx*C + c`` of packed pixel ``(h, j)`` is channel ``c`` of output pixel ``(h, P*j + dx)``,
which in HWC order is byte ``dx*C + c`` after that pixel's first byte: the layer writes the
same bytes as before (``out_mul`` steps the packed pixels), the same integer sums (the extra
products are by zero weights), through the same POST (replicated per lane). A layer is packed
when that takes fewer MAC steps: a packed pixel's taps along columns against the ``P``
pixels' taps.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import numerics, segments
from ..grid import Grid
from .types import Axis, Plan

__all__ = ["columns"]


def _packable(layer):
    """Whether ``layer`` writes plain HWC pixels of exactly its own channels (not an
    upsampling or depth-to-space in place, not a slice of a concatenation, no padding),
    with one conv group and no column dilation."""
    grid = layer.dst_grid
    return layer.op in ("Conv", "ConvTranspose") and layer.groups == 1 \
        and not layer.mapped and not grid.gapped and grid.channels == layer.cout \
        and grid.shape[1:] == layer.out_hw and layer.dilation[1] == 1 \
        and np.array_equal(layer.chan_addr, np.arange(layer.cout))


def _conv_columns(layer, lanes):
    """``(P, weight, stride, pad, count, align)`` of the packed columns of a Conv (``count``
    packed pixels, ``align`` 0), or None."""
    channels, width = layer.cout, layer.out_hw[1]
    stride, kernel = layer.stride[1], layer.weight.shape[4]
    packs = [p for p in range(2, lanes // channels + 1) if width % p == 0]
    if not packs:
        return None
    p = max(packs)
    span = (p - 1) * stride + kernel
    if span >= p * kernel:
        return None
    weight = np.zeros((1, p * channels, layer.cin_g, layer.weight.shape[3], span), np.int8)
    for dx in range(p):
        weight[0, dx * channels:(dx + 1) * channels, :, :, dx * stride:dx * stride + kernel] = \
            layer.weight[0]
    return p, weight, p * stride, layer.axes[1].pad, width // p, 0


def _convt_packing(phases, stride, pad, channels, m, align):
    """``(reads, first)`` of ``m`` groups of a ConvTranspose's ``stride`` column phases
    packed into one pixel whose first column is ``align`` output columns before a multiple
    of ``m*stride``: ``reads`` lists ``(first lane, tap, input column - first)``, ``first``
    the first input column read, relative to the pixel's ``m*j``."""
    taps = dict(phases)
    reads = []
    for dx in range(m * stride):
        b = (dx - align) % stride
        j = (dx - align - b) // stride
        reads += [(dx * channels, t, j + (b + pad - t) // stride) for t in taps[b]]
    if not reads:
        return [], 0
    first = min(d for _, _, d in reads)
    return [(lane, t, d - first) for lane, t, d in reads], first


def _convt_columns(layer, lanes, margins):
    """``(P, weight, stride, pad, count, align)`` of a ConvTranspose's column phases packed
    into a direct convolution along columns, or None: ``m`` neighbouring groups of its ``s``
    phases (``P = m*s`` columns, as many groups as the lanes hold), their first column
    ``align`` output columns before a multiple of ``P``; ``count`` packed pixels. Neighbouring
    phases read different input columns (k=4, s=2, pad 1: output column ``2j`` reads input
    columns ``j - 1, j``, ``2j + 1`` reads ``j, j + 1``), so the alignment that reads the
    fewest columns (``2j + 1, 2j + 2``: ``j, j + 1``) can leave a pixel's columns before the
    first output column or after the last: only with ``margins``, where the destination may
    grow margin columns. The packing with the fewest MAC steps along columns, if fewer than
    the unpacked layer's."""
    channels, width = layer.cout, layer.out_hw[1]
    stride, kernel, pad = layer.stride[1], layer.weight.shape[4], layer.axes[1].pad
    if stride < 2 or stride * channels > lanes:
        return None
    phases = segments.phases(kernel, stride, pad)
    unpacked = sum(-(-(width - b) // stride) * len(taps) for b, taps in phases)
    best = None
    for m in range(lanes // (stride * channels), 0, -1):
        for align in range(stride if margins else 1):
            count = -(-(width + align) // (m * stride))
            if not margins and count * m * stride != width:
                continue
            reads, first = _convt_packing(phases, stride, pad, channels, m, align)
            span = max((d for _, _, d in reads), default=-1) + 1
            if span and (best is None or count * span < best[0]):
                best = (count * span, m, align, count, reads, first, span)
    if best is None or best[0] >= unpacked:
        return None
    _, m, align, count, reads, first, span = best
    weight = np.zeros((1, m * stride * channels, layer.cin_g, layer.weight.shape[3], span),
                      np.int8)
    for lane, t, d in reads:
        weight[0, lane:lane + channels, :, :, d] = layer.weight[0, :, :, :, t]
    return m * stride, weight, m, -first, count, align


def _replicated(post, p):
    """``post`` with its per-channel constants repeated for ``p`` packed pixels."""
    lut = post.lut if post.lut is None or post.lut.shape[0] == 1 else np.tile(post.lut, (p, 1))
    return numerics.Post(post.weight, np.tile(post.bias, p), np.tile(post.multiplier, p),
                         np.tile(post.shift, p), lut)


def _packed(layer, lanes, margins):
    """``(layer with its output columns packed into its lanes, align)``, or ``(layer, 0)``;
    ``margins``: whether the packed pixels may cover ``align`` columns before the first
    output column and some after the last."""
    if not _packable(layer) or 2 * layer.cout > lanes:
        return layer, 0
    transposed = layer.transposed[1]
    found = _convt_columns(layer, lanes, margins) if transposed else \
        _conv_columns(layer, lanes)
    if found is None:
        return layer, 0
    p, weight, stride, pad, count, align = found
    axis = layer.axes[1]
    dst_grid = layer.dst_grid
    if count * p != layer.out_hw[1]:
        dst_grid = Grid.dense((layer.cout, layer.out_hw[0], count * p))
    return replace(layer, weight=weight, transposed=(layer.transposed[0], False),
                   stride=(layer.stride[0], stride),
                   axes=(layer.axes[0], Axis(axis.size, pad, axis.off, axis.step)),
                   out_hw=(layer.out_hw[0], count), out_mul=(1, p), packed=p,
                   post=_replicated(layer.post, p), chan_addr=np.arange(p * layer.cout),
                   dst_grid=dst_grid), align


def _widened(storage, layer, align):
    """``storage`` as the array ``layer`` writes, wider than its value by the packed pixels'
    margin columns; its ``view`` places the value (``align`` columns in)."""
    value = storage.grid
    return replace(storage, grid=layer.dst_grid,
                   view=replace(value, cols=layer.dst_grid.cols, off_w=align))


def columns(p: Plan, lanes: int) -> Plan:
    """Pass 2b: ``p`` with the output columns of every layer with few output channels packed
    into its ``lanes`` where that takes fewer MAC steps (see the module docstring). Only a
    model output that its layer alone writes and nothing reads may grow margin columns."""
    layers, storages = [], {s.name: s for s in p.storages}
    for layer in p.layers:
        dst = storages[layer.dst]
        margins = dst.output and dst.writers == (layer.index,) and not dst.readers
        packed, align = _packed(layer, lanes, margins)
        if packed.dst_grid != layer.dst_grid:
            storages[dst.name] = _widened(dst, packed, align)
        layers.append(packed)
    return replace(p, layers=tuple(layers), storages=tuple(storages.values()))
