"""The plan's invariants, checked between passes (the plan's counterpart of ``ir.verify``).

:func:`check` checks what the passes so far have decided: the layers and storages always; the
stages and buffers once pass 3 has cut the layers into stages; the addresses once pass 4 has
allocated ACT. It raises ``AssertionError`` naming the first broken invariant: a broken plan is
a bug of the compiler, not of the model.
"""

from __future__ import annotations

import numpy as np

from .memory import ALIGN

__all__ = ["check"]


def _require(condition, message):
    if not condition:
        raise AssertionError(message)


def _check_layers(p):
    """Layers numbered in order, reading and writing known storages within their arrays."""
    names = [s.name for s in p.storages]
    _require(len(set(names)) == len(names), f"storage names repeat: {names}")
    for i, layer in enumerate(p.layers):
        _require(layer.index == i, f"layer {layer.name!r} is number {i}, not {layer.index}")
        for role, name, grid in (("src", layer.src, layer.src_grid),
                                 ("dst", layer.dst, layer.dst_grid)):
            _require(name in names, f"layer {layer.name!r}: {role} {name!r} is no storage")
            _require(p.storage(name).grid == grid,
                     f"layer {layer.name!r}: {role}_grid is not the grid of {name!r}")
        grid = layer.src_grid
        for axis, extent in zip(layer.axes, (grid.rows, grid.cols)):
            _require(axis.off >= 0 and axis.off + (axis.size - 1) * axis.step < extent,
                     f"layer {layer.name!r}: reads {axis} outside the {extent} rows or "
                     f"columns of {layer.src!r}")
        last = layer.src_chan + (layer.groups - 1) * layer.group_chans \
            + (layer.cin_g - 1) * layer.chan_step
        _require(0 <= layer.src_chan and last < grid.channels,
                 f"layer {layer.name!r}: reads channel {last} of {layer.src!r}, which has "
                 f"{grid.channels}")


def _check_storages(p):
    """Each storage's writers and readers are the layers that say so; a model input is
    never written, every other storage is, before anything reads it; every element of a
    written storage is written exactly once, and nothing between them."""
    for s in p.storages:
        writers = tuple(layer.index for layer in p.layers if layer.dst == s.name)
        readers = tuple(layer.index for layer in p.layers if layer.src == s.name)
        _require((s.writers, s.readers) == (writers, readers),
                 f"storage {s.name!r}: writers {s.writers} and readers {s.readers}, but the "
                 f"layers write it in {writers} and read it in {readers}")
        is_input = s.name in p.inputs.values()
        _require(is_input != bool(s.writers), f"storage {s.name!r}: "
                 + ("a model input written by a layer" if is_input else "never written"))
        _require(all(s.producer is None or s.producer < r for r in s.readers),
                 f"storage {s.name!r}: read (by layers {s.readers}) before layer {s.producer} "
                 f"writes it")
        _require(s.output == (s.name in p.outputs.values()),
                 f"storage {s.name!r}: output flag {s.output} for the model outputs' storages "
                 f"{sorted(set(p.outputs.values()))}")
        _require(s.home == "dram" or not (is_input or s.output),
                 f"storage {s.name!r}: a model input or output in ACT")
        if s.writers:
            counts = np.zeros(s.size, np.int64)
            for i in s.writers:
                np.add.at(counts, p.layers[i].written().ravel(), 1)
            expected = np.zeros(s.size, np.int64)
            expected[s.grid.addresses().ravel()] = 1
            wrong = np.flatnonzero(counts != expected)
            if wrong.size:
                byte = int(wrong[0])
                _require(False, f"storage {s.name!r}: byte {byte} of its array is written "
                                f"{counts[byte]} times by its layers {s.writers}, not "
                                f"{expected[byte]}")
    for value, name in {**p.inputs, **p.outputs}.items():
        _require(name in [s.name for s in p.storages], f"model value {value!r}: no storage "
                                                        f"{name!r}")


def _check_stages(p):
    """Stages cover every output row once, in order; a tensor in external memory is read
    through a window and written through a staging buffer large enough for each stage's
    rows, two alternating buffers when there are several stages."""
    for layer in p.layers:
        name = layer.name
        bounds = [(s.first, s.stop) for s in layer.stages]
        _require(bool(bounds) and bounds[0][0] == 0 and bounds[-1][1] == layer.out_hw[0]
                 and all(a < b for a, b in bounds)
                 and all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:])),
                 f"layer {name!r}: stages {bounds} do not cover rows 0..{layer.out_hw[0]} once")
        for side, buffers, rows_of, storage in (
                ("window", layer.windows, layer.window_rows, p.storage(layer.src)),
                ("staging", layer.staging, layer.staging_rows, p.storage(layer.dst))):
            external = storage.home == "dram"
            expected = (2 if len(layer.stages) > 1 else 1) if external else 0
            _require(len(buffers) == expected,
                     f"layer {name!r}: {len(buffers)} {side} buffers for {storage.home} "
                     f"tensor {storage.name!r} in {len(layer.stages)} stages")
            for k, stage in enumerate(layer.stages):
                index = getattr(stage, side)
                if not external:
                    _require(index is None, f"layer {name!r}: stage {k} has a {side} "
                                            f"for ACT tensor {storage.name!r}")
                    continue
                _require(index == k % len(buffers),
                         f"layer {name!r}: stage {k} uses {side} {index}, not "
                         f"{k % len(buffers)}")
                lo, hi = rows_of(stage.first, stage.stop)
                need = (hi - lo) * storage.grid.row_bytes
                _require(need <= buffers[index].size, f"layer {name!r}: stage {k} needs "
                         f"{need} bytes of {side}, buffer {index} has {buffers[index].size}")


def _act_buffers(p):
    """``(what, addr, size, first layer, last layer)`` of everything in ACT."""
    found = [(f"storage {s.name!r}", s.act_addr, s.size, s.producer, s.last_use())
             for s in p.storages if s.home == "act"]
    for layer in p.layers:
        for side, buffers in (("window", layer.windows), ("staging", layer.staging)):
            found += [(f"layer {layer.name!r} {side} {k}", b.addr, b.size, layer.index,
                       layer.index) for k, b in enumerate(buffers)]
    return found


def _check_allocation(p, buffers):
    """Every ACT buffer is aligned, inside ACT, and clear of every other buffer live at the
    same time."""
    for what, addr, size, _, _ in buffers:
        _require(addr is not None, f"{what} has no address")
        _require(addr % ALIGN == 0 and 0 <= addr and addr + size <= p.act_bytes,
                 f"{what}: bytes {addr}..{addr + size} are not {ALIGN}-aligned inside the "
                 f"{p.act_bytes} bytes of ACT")
    for k, (what, addr, size, first, last) in enumerate(buffers):
        for other, other_addr, other_size, other_first, other_last in buffers[k + 1:]:
            _require(last < other_first or other_last < first
                     or addr + size <= other_addr or other_addr + other_size <= addr,
                     f"{what} (bytes {addr}..{addr + size}, layers {first}..{last}) overlaps "
                     f"{other} (bytes {other_addr}..{other_addr + other_size}, layers "
                     f"{other_first}..{other_last})")
    for s in p.storages:
        _require(s.home == "act" or s.act_addr is None,
                 f"storage {s.name!r} in external memory has an ACT address")


def check(p):
    """Check the invariants of plan ``p`` that its passes so far have established; return
    ``p``.

    Raises
    ------
    AssertionError
        naming the first broken invariant.
    """
    _check_layers(p)
    _check_storages(p)
    staged = [bool(layer.stages) for layer in p.layers]
    _require(all(staged) or not any(staged), "some layers have stages, others not")
    if any(staged):
        _check_stages(p)
    buffers = _act_buffers(p)
    allocated = [addr is not None for _, addr, _, _, _ in buffers]
    if any(allocated):
        _check_allocation(p, buffers)
    return p
