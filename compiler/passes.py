"""Float-level IR passes. Each is a pure function ``graph -> graph`` (the input is not changed)."""

from __future__ import annotations

import dataclasses

import numpy as np

from . import ir

__all__ = ["fold_affine", "FLOAT_PASSES", "run_passes"]


def _scale_out_channels(op, gain, shift):
    """``op`` with its output channels scaled by ``gain`` and then shifted by ``shift``."""
    if isinstance(op, ir.ConvTranspose):
        cin, cout_g = op.weight.shape[:2]
        w = op.weight.reshape(op.group, cin // op.group, cout_g, *op.weight.shape[2:])
        w = w * gain.reshape(op.group, 1, cout_g, *(1,) * (op.weight.ndim - 2))
        weight = w.reshape(op.weight.shape)
    else:
        weight = op.weight * gain.reshape(-1, *(1,) * (op.weight.ndim - 1))
    return dataclasses.replace(op, weight=weight, bias=op.bias * gain + shift)


def fold_affine(graph):
    """Fold each Affine (BatchNorm, constant Mul/Add) into the Conv, ConvTranspose or Dense that
    feeds it, when that layer feeds nothing else and is not a model output.

    The folded layer takes the Affine's name, so the IR value still matches the ONNX tensor it
    computes (per-layer accuracy reports rely on this).
    """
    graph = graph.copy()
    outputs = set(graph.graph["outputs"])
    for name, n in ir.topo_nodes(graph):
        if not isinstance(n.op, ir.Affine):
            continue
        src = n.inputs[0]
        prev = ir.node(graph, src)
        if not isinstance(prev.op, ir.COMPUTE_OPS) or src in outputs \
                or len(ir.consumers(graph, src)) != 1:
            continue
        channels = n.shape[0]
        gain = np.broadcast_to(n.op.scale, (channels,))
        shift = np.broadcast_to(n.op.shift, (channels,))
        folded = _scale_out_channels(prev.op, gain, shift)
        ir.replace_node(graph, name, ir.Node(folded, prev.inputs, n.shape))
        graph.remove_node(src)
    return ir.verify(graph)


#: The float passes run by the flow, in order.
FLOAT_PASSES = (fold_affine,)


def run_passes(graph, passes=FLOAT_PASSES):
    """Run ``passes`` in order, verifying the IR after each."""
    for p in passes:
        graph = ir.verify(p(graph))
    return graph
