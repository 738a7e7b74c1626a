"""The IR's meaning in float64: what calibration runs, and the kernels every interpreter shares.

:func:`run_float` runs an IR graph with ONNX semantics for every op (calibration, and the
importer's check against onnxruntime). The kernels below compute one op each on batched arrays
(axis 0 is the batch): the multiply-accumulate ops as float64 matrix products, which is exact for
int8 operands (every partial sum is far below 2**53), so the golden fixed-point interpreter
(:mod:`flexigan.sim.golden`) runs the same kernels and converts their results to int64 without
loss; the layout ops move float and int8 data alike.
"""

from __future__ import annotations

import numpy as np

from . import ir

__all__ = ["MAC_KERNELS", "LAYOUT_KERNELS", "channels", "pad", "run_graph", "run_float"]


def _conv(x, weight, op):
    """Sum of products of Conv ``op`` (no bias): ``x`` (N, Cin, H, W), ``weight`` in the op's
    layout, both float64; one matrix product per kernel tap."""
    n, cin, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    g, cout_g = op.group, cout // op.group
    (sh, sw), (dh, dw), (top, left, bottom, right) = op.strides, op.dilations, op.pads
    ho = ir.conv_out(h, kh, sh, top, bottom, dh)
    wo = ir.conv_out(w, kw, sw, left, right, dw)
    xp = np.zeros((n, h + top + bottom, w + left + right, cin))
    xp[:, top:top + h, left:left + w] = x.transpose(0, 2, 3, 1)
    # (kh, kw, group, cin_g, cout_g): each tap is a batch of per-group matrices.
    wt = weight.reshape(g, cout_g, cin_g, kh, kw).transpose(3, 4, 0, 2, 1)
    acc = np.zeros((g, n * ho * wo, cout_g))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            acc += xp[:, rows, cols].reshape(-1, g, cin_g).transpose(1, 0, 2) @ wt[i, j]
    return acc.transpose(1, 0, 2).reshape(n, ho, wo, cout).transpose(0, 3, 1, 2)


def _conv_transpose(x, weight, op):
    """Sum of products of ConvTranspose ``op`` (no bias): each kernel tap's product is
    scatter-added at stride ``s`` into the full output, which is then cropped by the pads and
    extended by ``output_padding`` (rows and columns no tap reaches)."""
    n, cin, h, w = x.shape
    _, cout_g, kh, kw = weight.shape
    g, cin_g = op.group, cin // op.group
    (sh, sw), (dh, dw), (top, left, _, _) = op.strides, op.dilations, op.pads
    _, ho, wo = op.shape((cin, h, w))
    full_h, full_w = sh * (h - 1) + dh * (kh - 1) + 1, sw * (w - 1) + dw * (kw - 1) + 1
    buf = np.zeros((n, max(full_h, top + ho), max(full_w, left + wo), g, cout_g))
    xg = x.transpose(0, 2, 3, 1).reshape(-1, g, cin_g).transpose(1, 0, 2)
    wt = weight.reshape(g, cin_g, cout_g, kh, kw)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (h - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (w - 1) + 1, sw)
            product = (xg @ wt[..., i, j]).transpose(1, 0, 2)
            buf[:, rows, cols] += product.reshape(n, h, w, g, cout_g)
    out = buf[:, top:top + ho, left:left + wo].reshape(n, ho, wo, g * cout_g)
    return out.transpose(0, 3, 1, 2)


def _dense(x, weight, op):
    return x @ weight.T


MAC_KERNELS = {ir.Conv: _conv, ir.ConvTranspose: _conv_transpose, ir.Dense: _dense}


def channels(p, ndim):
    """A per-channel vector shaped to broadcast along axis 1 of a batched array."""
    return p.reshape((-1,) + (1,) * (ndim - 2))


# Layout ops: the same code moves float and int8 data.

def _reshape(op, x):
    return x.reshape((x.shape[0], *op.target))


def _transpose(op, x):
    return x.transpose((0, *(p + 1 for p in op.perm)))


def _tile(op, x):
    return np.tile(x, (1, *op.repeats))


def pad(op, x, value):
    """Pad ``op`` of the batched ``x``: ``reflect`` and ``edge`` as numpy (and ONNX) define
    them, ``constant`` with ``value`` (the float value, or the int8 one of the quantized op)."""
    top, left, bottom, right = op.pads
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    if op.mode in ("reflect", "edge"):
        return np.pad(x, widths, mode=op.mode)
    return np.pad(x, widths, mode="constant", constant_values=value)


def _upsample(op, x):
    return x.repeat(op.scales[0], axis=2).repeat(op.scales[1], axis=3)


def _depth_to_space(op, x):
    n, c, h, w = x.shape
    b = op.blocksize
    if op.mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


LAYOUT_KERNELS = {ir.Reshape: _reshape, ir.Transpose: _transpose, ir.Tile: _tile,
                  ir.Upsample: _upsample, ir.DepthToSpace: _depth_to_space}


def _float_step(n, xs):
    op = n.op
    kind = type(op)
    if kind in MAC_KERNELS:
        y = MAC_KERNELS[kind](xs[0], op.weight, op)
        return y + channels(op.bias, y.ndim)
    if kind in LAYOUT_KERNELS:
        return LAYOUT_KERNELS[kind](op, xs[0])
    if kind is ir.Pad:
        return pad(op, xs[0], op.value)
    if kind is ir.Affine:
        x = xs[0]
        return x * channels(op.scale, x.ndim) + channels(op.shift, x.ndim)
    if kind is ir.Activation:
        return op(xs[0], channel_axis=1)
    if kind is ir.InstanceNorm:
        x = xs[0]
        axes = tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        return (channels(op.scale, x.ndim) * (x - mean) / np.sqrt(var + op.epsilon)
                + channels(op.bias, x.ndim))
    if kind is ir.Add:
        return xs[0] + xs[1]
    if kind is ir.Concat:
        return np.concatenate(xs, axis=op.axis + 1)
    raise TypeError(f"no float semantics for op {op!r}")


def run_graph(graph, feeds, keep, step, check):
    """Run ``graph`` on ``feeds`` (``check(name, array)`` admits each input), computing each
    node as ``step(node, input values)``; the outputs, or every value if ``keep``."""
    values = {}
    for name in graph.graph["inputs"]:
        if name not in feeds:
            raise ValueError(f"feeds has no array for input {name!r} (has {sorted(feeds)})")
        x = np.asarray(feeds[name])
        shape = ir.node(graph, name).shape
        if x.shape[1:] != shape:
            raise ValueError(f"feeds[{name!r}] has shape {x.shape}, not (N, "
                             f"{', '.join(map(str, shape))})")
        values[name] = check(name, x)
    for name, n in ir.topo_nodes(graph):
        if name not in values:
            values[name] = step(n, [values[i] for i in n.inputs])
    if keep:
        return values
    return {o: values[o] for o in graph.graph["outputs"]}


def run_float(graph, feeds, keep=False):
    """Run ``graph`` in float64 with ONNX semantics (quantization parameters are ignored).

    Parameters
    ----------
    graph : networkx.DiGraph
        An IR graph.
    feeds : dict of str to array
        One ``(N, *shape)`` array per graph input.
    keep : bool
        Return every value, not only the graph outputs.

    Returns
    -------
    dict of str to float64 array
    """
    return run_graph(graph, feeds, keep, _float_step,
                lambda name, x: x.astype(np.float64))


