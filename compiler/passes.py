"""Float-level IR passes. Each is a pure function ``graph -> graph`` (the input is not changed)."""

from __future__ import annotations

import dataclasses

import numpy as np

from . import ir

__all__ = ["fold_affine", "fold_pad", "fold_upsample", "FLOAT_PASSES", "ZERO_FREE",
           "run_passes"]


def _scale_out_channels(op, gain, shift):
    """``op`` with its output channels scaled by ``gain`` and then shifted by ``shift``."""
    if isinstance(op, ir.ConvTranspose):
        cin, cout_g = op.weight.shape[:2]
        w = op.weight.reshape(op.group, cin // op.group, cout_g, *op.weight.shape[2:])
        w = w * gain.reshape(op.group, 1, cout_g, *(1,) * (op.weight.ndim - 2))
        weight = w.reshape(op.weight.shape)
    else:
        weight = op.weight * gain.reshape(-1, *(1,) * (op.weight.ndim - 1))
    # A pre-quantized layer's weights stay integer multiples of its steps scaled alike.
    steps = None if op.weight_scale is None or not np.all(gain) else \
        op.weight_scale * np.abs(gain)
    return dataclasses.replace(op, weight=weight, bias=op.bias * gain + shift,
                               weight_scale=steps)


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


def fold_pad(graph):
    """Fold each zero constant Pad into the Convs that read it, when they are its only readers
    and it is not a model output: each Conv's own pads grow by the Pad's, and it reads the
    Pad's input. Exact: a convolution's padding is zeros, and the zero-free segments skip it
    by addressing (no copy of the padded image, no MAC on its border).
    """
    graph = graph.copy()
    outputs = set(graph.graph["outputs"])
    for name, n in ir.topo_nodes(graph):
        if not isinstance(n.op, ir.Pad) or n.op.mode != "constant" or n.op.value != 0 \
                or name in outputs:
            continue
        readers = ir.consumers(graph, name)
        if not readers or not all(isinstance(ir.node(graph, r).op, ir.Conv) and
                                  ir.node(graph, r).inputs == (name,) for r in readers):
            continue
        for reader in readers:
            conv = ir.node(graph, reader)
            pads = tuple(a + b for a, b in zip(conv.op.pads, n.op.pads))
            ir.replace_node(graph, reader, dataclasses.replace(
                conv, op=dataclasses.replace(conv.op, pads=pads), inputs=n.inputs))
        graph.remove_node(name)
    return ir.verify(graph)


def _phase_kernel(weight, scales, group):
    """The ConvTranspose weight ``(Cin, Cout/group, K+s-1, ...)`` equal to a nearest upsampling
    by ``scales`` followed by a stride-1 convolution of ``weight`` ``(Cout, Cin/group, K, K)``.

    Along an axis, output ``o`` of the convolution reads upsampled pixel ``o + k - p``, which is
    input ``i = (o + k - p) // s``. With the ConvTranspose's padding ``K - 1 - p``, output ``o``
    meets ConvTranspose tap ``d = o + K - 1 - p - s*i``: the taps ``k = K - 1 - d + t`` for
    ``t`` in ``0..s-1`` land on the same input pixel, so tap ``d`` is their sum, the kernel
    flipped and summed over windows of ``s`` taps.
    """
    w = weight[:, :, ::-1, ::-1]
    for axis, s in zip((2, 3), scales):
        padded = np.pad(w, [(s - 1, s - 1) if a == axis else (0, 0) for a in range(4)])
        w = sum(np.take(padded, range(t, t + w.shape[axis] + s - 1), axis=axis)
                for t in range(s))
    cout, cin_g = weight.shape[:2]
    w = w.reshape(group, cout // group, cin_g, *w.shape[2:]).swapaxes(1, 2)
    return np.ascontiguousarray(w.reshape(group * cin_g, cout // group, *w.shape[3:]))


def fold_upsample(graph):
    """Fold each nearest Upsample into the stride-1 Conv it feeds, when the Conv is its only
    reader and the Upsample is not a model output: the pair becomes one ConvTranspose of
    stride ``scales`` (:func:`_phase_kernel`), whose zero-free phases are small convolutions
    of the un-upsampled input (an upsampling x2 and a 3x3 kernel: four 2x2 phases, 2.25x
    fewer MACs, and no copy of the upsampled image).

    Exact in real arithmetic; the padding of the upsampled image is the padding of the input
    (a pixel outside the upsampled image is outside the input). The ConvTranspose takes the
    Conv's name, as :func:`fold_affine`'s layer takes the Affine's. A pre-quantized Conv's
    weight steps are not kept: each tap of the phase kernel sums up to ``s*s`` of its taps,
    which may leave the int8 range, so quantization derives the steps anew.
    """
    graph = graph.copy()
    outputs = set(graph.graph["outputs"])
    for name, n in ir.topo_nodes(graph):
        if not isinstance(n.op, ir.Conv) or n.op.strides != (1, 1) \
                or n.op.dilations != (1, 1):
            continue
        src = n.inputs[0]
        up = ir.node(graph, src)
        kernel = n.op.weight.shape[2:]
        pads = tuple(k - 1 - p for k, p in zip(kernel * 2, n.op.pads))
        if not isinstance(up.op, ir.Upsample) or src in outputs \
                or len(ir.consumers(graph, src)) != 1 or min(pads) < 0:
            continue
        folded = ir.ConvTranspose(_phase_kernel(n.op.weight, up.op.scales, n.op.group),
                                  n.op.bias, up.op.scales, pads, group=n.op.group)
        ir.replace_node(graph, name, ir.Node(folded, up.inputs, n.shape))
        graph.remove_node(src)
    return ir.verify(graph)


#: The float passes run by the flow, in order. ``fold_affine`` first, so that a BatchNorm
#: after the convolution is already in its weights when the convolution becomes a
#: ConvTranspose (either order gives the same layer); ``fold_pad`` before ``fold_upsample``,
#: so that an Upsample, zero Pad, Conv chain becomes one ConvTranspose.
FLOAT_PASSES = (fold_affine, fold_pad, fold_upsample)

#: The float passes that belong to the zero-free lowering: the conventional baseline
#: (``reorder=False``) leaves them out, so that it upsamples by copies and runs the dense
#: convolution, as a conventional accelerator does.
ZERO_FREE = frozenset({fold_upsample})


def run_passes(graph, passes=FLOAT_PASSES, reorder=True):
    """Run ``passes`` in order, verifying the IR after each; without those of
    :data:`ZERO_FREE` when not ``reorder``."""
    for p in passes:
        if reorder or p not in ZERO_FREE:
            graph = ir.verify(p(graph))
    return graph
