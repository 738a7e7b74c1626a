"""The per-layer table of a model: what ``flexigan inspect`` prints and the manifest records."""

from __future__ import annotations

import dataclasses

import numpy as np

from .compiler import ir, macs

__all__ = ["op_name", "layer_table", "totals", "quant_summary"]


def op_name(op):
    """The name a report gives ``op``: the activation's kind, or the op's class."""
    if isinstance(op, ir.Activation):
        return op.kind
    return type(op).__name__


def _params(op):
    return int(sum(getattr(op, f).size for f in ("weight", "bias", "scale", "shift")
                   if isinstance(getattr(op, f, None), np.ndarray)))


def layer_table(graph):
    """One row per IR value (inputs excluded): op, shapes, parameters and MAC counts."""
    rows = []
    for name, n in ir.topo_nodes(graph):
        if isinstance(n.op, ir.Input):
            continue
        in_shapes = [list(ir.node(graph, i).shape) for i in n.inputs]
        m = macs.layer_macs(n.op, tuple(in_shapes[0]), n.shape) if in_shapes else macs.Macs()
        row = {"name": name, "op": op_name(n.op), "inputs": list(n.inputs),
               "input_shape": in_shapes[0] if in_shapes else None,
               "output_shape": list(n.shape), "params": _params(n.op),
               "macs_useful": m.useful, "macs_phase": m.phase,
               "macs_zero_insertion": m.zero_insertion}
        if isinstance(n.op, (ir.Conv, ir.ConvTranspose)):
            row.update(kernel=list(n.op.weight.shape[2:]), strides=list(n.op.strides),
                       pads=list(n.op.pads), group=n.op.group)
        rows.append(row)
    return rows


def totals(rows):
    """The sums of a :func:`layer_table`'s parameter and MAC columns."""
    keys = ("params", "macs_useful", "macs_phase", "macs_zero_insertion")
    return {k: sum(r[k] for r in rows) for k in keys}


def quant_summary(value):
    """A JSON-able digest of a quantization record: small arrays in full, large ones by range."""
    if dataclasses.is_dataclass(value):
        return {"type": type(value).__name__,
                **{f.name: quant_summary(getattr(value, f.name))
                   for f in dataclasses.fields(value)}}
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return value.tolist()
        return {"shape": list(value.shape), "min": value.min().item(), "max": value.max().item()}
    if isinstance(value, (tuple, list)):
        return [quant_summary(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
