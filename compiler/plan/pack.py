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
    """``(P, weight, stride, pad)`` of the packed columns of a Conv, or None."""
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
    return p, weight, p * stride, layer.axes[1].pad


def _convt_columns(layer, lanes):
    """``(P, weight, stride, pad)`` of a ConvTranspose's column phases packed into a direct
    convolution along columns, or None: ``m`` neighbouring groups of its ``s`` phases (as
    many as the lanes hold and divide the width), ``P = m*s`` columns read ``m - 1`` input
    columns more than one group's."""
    channels, width = layer.cout, layer.out_hw[1]
    stride, kernel, pad = layer.stride[1], layer.weight.shape[4], layer.axes[1].pad
    if stride < 2 or stride * channels > lanes:
        return None
    phases = segments.phases(kernel, stride, pad)
    offsets = [(b, t, (b + pad - t) // stride) for b, taps in phases for t in taps]
    if not offsets:
        return None
    first = min(d for _, _, d in offsets)
    span = max(d for _, _, d in offsets) - first + 1
    groups = [m for m in range(lanes // (stride * channels), 0, -1)
              if width % (m * stride) == 0 and span + m - 1 < m * len(offsets)]
    if not groups:
        return None
    m = groups[0]
    weight = np.zeros((1, m * stride * channels, layer.cin_g, layer.weight.shape[3],
                       span + m - 1), np.int8)
    for dj in range(m):
        for b, t, d in offsets:
            lane = (dj * stride + b) * channels
            weight[0, lane:lane + channels, :, :, d - first + dj] = layer.weight[0, :, :, :, t]
    return m * stride, weight, m, -first


def _replicated(post, p):
    """``post`` with its per-channel constants repeated for ``p`` packed pixels."""
    lut = post.lut if post.lut is None or post.lut.shape[0] == 1 else np.tile(post.lut, (p, 1))
    return numerics.Post(post.weight, np.tile(post.bias, p), np.tile(post.multiplier, p),
                         np.tile(post.shift, p), lut)


def _packed(layer, lanes):
    """``layer`` with its output columns packed into its lanes, or ``layer``."""
    if not _packable(layer) or 2 * layer.cout > lanes:
        return layer
    transposed = layer.transposed[1]
    found = (_convt_columns if transposed else _conv_columns)(layer, lanes)
    if found is None:
        return layer
    p, weight, stride, pad = found
    axis = layer.axes[1]
    return replace(layer, weight=weight, transposed=(layer.transposed[0], False),
                   stride=(layer.stride[0], stride),
                   axes=(layer.axes[0], Axis(axis.size, pad, axis.off, axis.step)),
                   out_hw=(layer.out_hw[0], layer.out_hw[1] // p), out_mul=(1, p), packed=p,
                   post=_replicated(layer.post, p), chan_addr=np.arange(p * layer.cout))


def columns(p: Plan, lanes: int) -> Plan:
    """Pass 2b: ``p`` with the output columns of every layer with few output channels packed
    into its ``lanes`` where that takes fewer MAC steps (see the module docstring)."""
    return replace(p, layers=tuple(_packed(layer, lanes) for layer in p.layers))
