"""Passes 3 and 4: where every tensor lives, how each layer is cut into stages, and the ACT map.

Model inputs and outputs live in external memory (their regions of the memory image); every
other tensor lives in the ACT scratchpad. A layer reads a tensor in external memory through
*windows* (the source rows a stage needs) and writes one through *staging* buffers (the output
rows of a stage), two of each when the layer runs in several stages (double buffering).

Pass 3 (:func:`stage`) gives each layer the most rows per stage whose buffers fit next to the
tensors live at it. When none fits, it spills the largest live tensor to external memory and
starts over; a layer that does not fit even with nothing else live raises
:class:`~flexigan.errors.FitError` naming it and the shortfall. Pass 4 (:func:`allocate`) places
the ACT tensors and buffers, largest first, at the lowest aligned address free for their
lifetimes (first fit). Pass 3 counts bytes, not addresses: when the gaps that first fit leaves
cannot take what a layer needs (a :class:`Fragmented` error, naming the layer), the planner
spills the largest tensor live at that layer (:func:`spill_at`) and runs pass 3 again (a
U-Net's skips, each live from its down layer to its up layer, fragment the scratchpad).
"""

from __future__ import annotations

from dataclasses import replace

from ...errors import FitError
from .types import Buffer, Stage

__all__ = ["ALIGN", "align", "stage", "allocate", "Fragmented", "spill_at"]

#: Byte alignment of every buffer, in ACT and in external memory (one AXI burst beat of the
#: widest preset), so DMA never splits a beat.
ALIGN = 64


class Fragmented(FitError):
    """First fit found no room for a buffer live at layer ``layer`` (index)."""

    def __init__(self, message, layer):
        super().__init__(message)
        self.layer = layer


def align(n):
    """``n`` rounded up to a multiple of :data:`ALIGN`."""
    return -(-n // ALIGN) * ALIGN


def stage_ranges(layer, rows_per_stage):
    """Output row ranges ``[(first, stop)]`` of ``layer`` cut into stages of
    ``rows_per_stage`` rows."""
    rows = layer.out_hw[0]
    return [(r, min(rows, r + rows_per_stage)) for r in range(0, rows, rows_per_stage)]


def _buffer_sizes(layer, rows_per_stage, homes):
    """``(windows, staging)``: ACT bytes of each buffer of ``layer`` at ``rows_per_stage``
    (none for a tensor in ACT; two of each when there are several stages)."""
    ranges = stage_ranges(layer, rows_per_stage)
    copies = 2 if len(ranges) > 1 else 1
    windows, staging = [], []
    if homes[layer.src] == "dram":
        row_bytes = layer.src_grid.row_bytes
        windows = [align(max((hi - lo) * row_bytes for lo, hi in
                             (layer.window_rows(*r) for r in ranges)))] * copies
    if homes[layer.dst] == "dram":
        row_bytes = layer.dst_grid.row_bytes
        staging = [align(max((hi - lo) * row_bytes for lo, hi in
                             (layer.staging_rows(*r) for r in ranges)))] * copies
    return windows, staging


def _buffer_bytes(layer, rows_per_stage, homes):
    return sum(map(sum, _buffer_sizes(layer, rows_per_stage, homes)))


def _live(p, homes, index):
    """The storages in ACT while layer ``index`` runs."""
    return [s for s in p.storages if homes[s.name] == "act" and s.producer is not None
            and s.producer <= index <= s.last_use()]


def _fit_stages(p, homes, layer):
    """Most rows per stage whose buffers fit next to the tensors live at ``layer``, or
    None."""
    free = p.act_bytes - sum(align(s.size) for s in _live(p, homes, layer.index))
    rows = layer.out_hw[0]
    if _buffer_bytes(layer, rows, homes) <= free:
        return rows
    if homes[layer.src] != "dram" and homes[layer.dst] != "dram":
        return None
    lo, hi = 1, rows - 1      # the need falls as the stages shrink: bisect
    if _buffer_bytes(layer, lo, homes) > free:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _buffer_bytes(layer, mid, homes) <= free else (lo, mid - 1)
    return lo


def _homes_and_stages(p):
    """``(homes, rows per stage of each layer)``: spill the largest live tensor until every
    layer has a stage size that fits (the storages' homes to start with: a model input or
    output, or a tensor :func:`spill_at` spilled, in external memory)."""
    homes = {s.name: s.home for s in p.storages}
    while True:
        rows_per_stage = []
        for layer in p.layers:
            rows = _fit_stages(p, homes, layer)
            if rows is None:
                break
            rows_per_stage.append(rows)
        else:
            return homes, rows_per_stage
        live = _live(p, homes, layer.index)
        if not live:
            need = _buffer_bytes(layer, 1, homes)
            raise FitError(f"layer {layer.name!r}: needs {need} bytes of activation memory, "
                           f"the target has {p.act_bytes} (short by {need - p.act_bytes})")
        homes[max(live, key=lambda s: s.size).name] = "dram"


def stage(p):
    """Pass 3: ``p`` with every storage's home, and every layer's stages and (unallocated)
    window and staging buffers.

    Raises
    ------
    FitError
        when a layer does not fit the activation scratchpad even with nothing else live.
    """
    homes, rows_per_stage = _homes_and_stages(p)
    layers = []
    for layer, rows in zip(p.layers, rows_per_stage):
        windows, staging = _buffer_sizes(layer, rows, homes)
        stages = tuple(
            Stage(first, stop, k % len(windows) if windows else None,
                  k % len(staging) if staging else None)
            for k, (first, stop) in enumerate(stage_ranges(layer, rows)))
        layers.append(replace(layer, stages=stages, windows=tuple(map(Buffer, windows)),
                              staging=tuple(map(Buffer, staging))))
    storages = tuple(replace(s, home=homes[s.name]) for s in p.storages)
    return replace(p, layers=tuple(layers), storages=storages)


def _first_fit(items, act_bytes, layers):
    """The ACT address of each ``(size, first layer, last layer)`` in ``items``: largest first,
    the lowest aligned address clear of the items already placed whose lifetimes overlap."""
    placed = []
    addresses = [None] * len(items)
    for i in sorted(range(len(items)), key=lambda i: -items[i][0]):
        size, first, last = items[i]
        addr = 0
        for other, other_size in sorted(
                (other, other_size) for other, other_size, other_first, other_last in placed
                if other_first <= last and first <= other_last):
            if addr + size <= other:
                break
            addr = max(addr, align(other + other_size))
        if addr + size > act_bytes:
            raise Fragmented(f"layer {layers[first].name!r}: needs {addr + size} bytes of "
                             f"activation memory, the target has {act_bytes} "
                             f"(short by {addr + size - act_bytes})", first)
        placed.append((addr, size, first, last))
        addresses[i] = addr
    return addresses


def allocate(p):
    """Pass 4: ``p`` with the ACT address of every storage in ACT and of every window and
    staging buffer.

    Raises
    ------
    Fragmented
        when the buffers live at a layer cannot all be placed.
    """
    in_act = [s for s in p.storages if s.home == "act"]
    items = [(s.size, s.producer, s.last_use()) for s in in_act]
    for layer in p.layers:
        items += [(b.size, layer.index, layer.index) for b in layer.windows + layer.staging]
    addresses = iter(_first_fit(items, p.act_bytes, p.layers))
    act_addr = {s.name: next(addresses) for s in in_act}
    layers = []
    for layer in p.layers:
        windows = tuple(replace(b, addr=next(addresses)) for b in layer.windows)
        staging = tuple(replace(b, addr=next(addresses)) for b in layer.staging)
        layers.append(replace(layer, windows=windows, staging=staging))
    storages = tuple(replace(s, act_addr=act_addr.get(s.name)) for s in p.storages)
    return replace(p, layers=tuple(layers), storages=storages)


def spill_at(p, exc):
    """``p`` (staged) with the largest tensor in ACT live at the layer of :class:`Fragmented`
    ``exc`` in external memory, its stages to be planned again; ``exc`` itself when none is
    live there."""
    homes = {s.name: s.home for s in p.storages}
    live = _live(p, homes, exc.layer)
    if not live:
        raise exc
    largest = max(live, key=lambda s: s.size).name
    storages = tuple(replace(s, home="dram") if s.name == largest else s for s in p.storages)
    layers = tuple(replace(layer, stages=(), windows=(), staging=()) for layer in p.layers)
    return replace(p, storages=storages, layers=layers)
