"""Pass 2: every job becomes layers in normal form, and the storages learn their users.

A :class:`~.types.ComputeJob` becomes one layer: a Conv, ConvTranspose or Gemm (a convolution
whose kernel covers its whole input) with its POST and fused activation's LUT, or a residual
Add as a two-tap depthwise layer (docs/numerics.md). A :class:`~.types.JoinCopy`, each block
of a :class:`~.types.SpreadJob` and each border strip of a reflect or edge
:class:`~.types.PadJob` become a "Copy": a 1x1 identity convolution whose POST is exact
(multiplier 1, shift 0) or requantizes into a Concat's scale; a :class:`~.types.LutJob` (a
standalone activation) is a Copy whose POST looks its values up in the activation's LUT. An
identity copy is block-diagonal (:func:`copy_group`): a lane tile reads only its own channels.
A constant Pad's border strips are "Fill" layers: segments with no taps, whose POST writes the
bias (the int8 pad value). A layer writing an Upsample, DepthToSpace or Pad in place gets
WRITE strides (``out_mul``), a first pixel (``out_off``) and channel offsets (``chan_addr``)
that place each pixel and channel at its position in the output.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import ir, numerics
from .storages import demand, reshape_root
from .types import Axis, ComputeJob, JoinCopy, Layer, LutJob, PadJob, Plan, SpreadJob

__all__ = ["build", "spread_copies", "pad_copies", "copy_group"]


def _logical_axes(grid):
    """Axes reading the logical pixels of ``grid``, with no padding."""
    return (Axis(grid.height, 0, grid.off_h, grid.step_h),
            Axis(grid.width, 0, grid.off_w, grid.step_w))


def copy_group(channels, lanes):
    """Channels per conv group of an identity copy of ``channels`` channels on ``lanes``
    lanes: the largest divisor of ``channels`` up to ``lanes``. Each lane owns an output
    channel and the input is broadcast to the lanes, so a dense identity reads all
    ``channels`` inputs for every lane tile; block-diagonal, a lane tile reads only its own
    (``channels`` MAC steps per pixel in all, against ``channels`` per lane tile)."""
    return max(d for d in range(1, min(channels, lanes) + 1) if channels % d == 0)


def _identity_copy(index, name, nodes, src, src_grid, src_chan, axes, dst, dst_grid, chan_addr,
                   lanes, requant=None, lut=None, **placement):
    """A 1x1 identity layer copying the ``len(chan_addr)`` channels of a value (at
    ``src_chan`` of ``src``, read along ``axes``) into ``dst``, channel ``n`` at byte
    ``chan_addr[n]`` from its pixel, through ``requant`` (None: multiplier 1, shift 0, exact)
    and then ``lut`` (None: none). Block-diagonal on ``lanes`` lanes (:func:`copy_group`).
    ``placement``: the ``out_off``/``out_mul`` of one block of a nearest upsampling or of a
    depth-to-space, or of one strip of a Pad."""
    channels = len(chan_addr)
    group = copy_group(channels, lanes)
    ones = np.ones(channels, dtype=np.int64)
    multiplier = ones if requant is None else np.broadcast_to(requant.multiplier, (channels,))
    shift = 0 * ones if requant is None else np.broadcast_to(requant.shift, (channels,))
    blocks = np.broadcast_to(np.eye(group, dtype=np.int8), (channels // group, group, group))
    post = numerics.Post(blocks.reshape(channels, group, 1, 1), 0 * ones, multiplier, shift,
                         lut)
    return Layer(index=index, name=name, nodes=nodes, op="Copy", transposed=(False, False),
                 weight=np.ascontiguousarray(blocks[..., None, None]), stride=(1, 1),
                 dilation=(1, 1), axes=axes, out_hw=(axes[0].size, axes[1].size), post=post,
                 src=src, src_grid=src_grid, dst=dst, dst_grid=dst_grid,
                 chan_addr=np.asarray(chan_addr), src_chan=src_chan, **placement)


def _join_copy(index, job, graph, where, lanes):
    """The copy of ``job.value`` into its slice of a Concat's (or an Add's operand) storage,
    with the Concat's requantization."""
    value = reshape_root(graph, job.value)
    src, src_chan = where.locate(value)
    dst, dst_chan = where.locate(job.target)
    src_grid, dst_grid = where.storages[src].grid, where.storages[dst].grid
    channels = where.stored_shapes[value][0]
    first = job.first_channel
    return _identity_copy(index, f"{job.target}[{first}:{first + channels}]", (job.join,),
                          src, src_grid, src_chan, _logical_axes(src_grid), dst, dst_grid,
                          np.arange(channels) + first + dst_chan, lanes, job.requant, job.lut)


def _spread_addr(op, grid, channels, dst_chan):
    """Byte offset, from the address of its first destination pixel, of each of the
    ``channels`` input channels of nearest Upsample or DepthToSpace ``op`` written into
    ``grid`` at channel ``dst_chan``: an Upsample keeps the channel; DepthToSpace (block
    ``b``) sends input channel ``n`` to output channel ``c`` of pixel ``(i, j)`` of the
    ``b x b`` block, ``n = (i*b + j)*C' + c`` (DCR) or ``n = (c*b + i)*b + j`` (CRD)."""
    n = np.arange(channels)
    if isinstance(op, ir.Upsample):
        return n + dst_chan
    b = op.blocksize
    out_channels = channels // (b * b)
    if op.mode == "DCR":
        i, j, c = n // (b * out_channels), n // out_channels % b, n % out_channels
    else:
        c, i, j = n // (b * b), n // b % b, n % b
    return grid.addr(c + dst_chan, i, j) - grid.addr(0, 0, 0)


def _spread_factors(op):
    """``(fh, fw)``: output pixels per input pixel of an Upsample or DepthToSpace."""
    return tuple(op.scales) if isinstance(op, ir.Upsample) else (op.blocksize,) * 2


def _placement(op, grid, channels, dst_chan):
    """``(chan_addr, placement)`` of a layer writing the ``channels`` channels of the input
    of Upsample, DepthToSpace or Pad ``op`` in place, into ``grid`` at channel ``dst_chan``:
    the channel offsets, and the ``out_off``/``out_mul`` of its pixels (an upsampling's block
    ``(0, 0)``, a depth-to-space's scatter, a Pad's interior)."""
    if isinstance(op, ir.Pad):
        return np.arange(channels) + dst_chan, {"out_off": (op.pads[0], op.pads[1])}
    return _spread_addr(op, grid, channels, dst_chan), {"out_mul": _spread_factors(op)}


def spread_copies(index, job, graph, where, lanes):
    """The copy layers writing Upsample or DepthToSpace ``job.node``, the first numbered
    ``index``. DepthToSpace: one scattering copy of its input, unless the producer writes it.
    Upsample by ``(fh, fw)``: block ``(0, 0)`` (every output pixel ``(fh*h, fw*w)``) from the
    input, unless the producer writes it, then each other block ``(dy, dx)`` from block
    ``(0, 0)`` of the output itself."""
    n = ir.node(graph, job.node)
    value = n.inputs[0]
    dst, dst_chan = where.locate(job.node)
    dst_grid = where.storages[dst].grid
    channels, height, width = ir.node(graph, value).shape
    chan_addr = _spread_addr(n.op, dst_grid, channels, dst_chan)
    factors = _spread_factors(n.op)
    layers = []
    if value not in where.scattered:
        src, src_chan = where.locate(value)
        src_grid = where.storages[src].grid
        axes = (Axis(height, 0, src_grid.off_h, src_grid.step_h),
                Axis(width, 0, src_grid.off_w, src_grid.step_w))
        layers.append(_identity_copy(index, f"{job.node}@0,0", (job.node,), src, src_grid,
                                     src_chan, axes, dst, dst_grid, chan_addr, lanes,
                                     out_off=(0, 0), out_mul=factors))
    if isinstance(n.op, ir.DepthToSpace):
        return layers
    fh, fw = factors
    axes = (Axis(height, 0, dst_grid.off_h, dst_grid.step_h * fh),
            Axis(width, 0, dst_grid.off_w, dst_grid.step_w * fw))
    for block in [(dy, dx) for dy in range(fh) for dx in range(fw)][1:]:
        layers.append(_identity_copy(index + len(layers), f"{job.node}@{block[0]},{block[1]}",
                                     (job.node,), dst, dst_grid, dst_chan, axes, dst,
                                     dst_grid, chan_addr, lanes, out_off=block,
                                     out_mul=factors))
    return layers


def _pad_source(size, lead, k, mode):
    """The padded row (or column) that border row ``k`` copies along an axis of ``size``
    inputs after ``lead`` padding ones: negative ``k`` before the image (``-1`` the nearest),
    ``k >= 0`` after it (``0`` the nearest). Reflect mirrors about the edge pixel, edge
    repeats it."""
    if k < 0:
        return lead + (-k if mode == "reflect" else 0)
    return lead + size - 1 - (k + 1 if mode == "reflect" else 0)


def _strip_axes(grid, first, sizes, steps):
    """Axes reading ``sizes`` padded rows and columns of ``grid`` from logical pixel
    ``first``, stepping ``steps`` pixels (0: the same pixel again)."""
    offsets = (grid.off_h, grid.off_w)
    grid_steps = (grid.step_h, grid.step_w)
    return tuple(Axis(size, 0, offsets[a] + first[a] * grid_steps[a], step * grid_steps[a])
                 for a, (size, step) in enumerate(zip(sizes, steps)))


def _fill(index, name, node, dst, dst_grid, chan_addr, value, first, out_hw):
    """A layer writing int8 ``value`` into every channel of the ``out_hw`` pixels of ``dst``
    from logical pixel ``first``: segments with no taps (no MAC, no read), whose POST writes
    the bias (multiplier 1, shift 0)."""
    channels = len(chan_addr)
    ones = np.ones(channels, dtype=np.int64)
    weight = np.zeros((1, channels, 1, 1, 1), dtype=np.int8)
    post = numerics.Post(weight[0], value * ones, ones, 0 * ones, None)
    return Layer(index=index, name=name, nodes=(node,), op="Fill", transposed=(False, False),
                 weight=weight, stride=(1, 1), dilation=(1, 1),
                 axes=(Axis(0, 0, 0, 1), Axis(0, 0, 0, 1)), out_hw=out_hw, post=post,
                 src=dst, src_grid=dst_grid, dst=dst, dst_grid=dst_grid,
                 chan_addr=np.asarray(chan_addr), out_off=first)


def _pad_strips(op, height, width):
    """``(name, first, out_hw, source)`` of each border strip of Pad ``op`` of an image of
    ``height x width``, in padded pixels: the rows above and below the image (its columns),
    then the columns left and right of it (every row, the new rows included, which fills
    the corners). ``source``: the first padded pixel a reflect or edge strip copies, and
    the steps from it per strip row and column (a strip one row or column wide)."""
    top, left, bottom, right = op.pads
    rows = top + height + bottom
    strips = []
    for k in [*range(-top, 0), *range(bottom)]:
        row = top + height + k if k >= 0 else top + k
        strips.append((f"row{row}", (row, left), (1, width),
                       ((_pad_source(height, top, k, op.mode), left), (0, 1))))
    for k in [*range(-left, 0), *range(right)]:
        col = left + width + k if k >= 0 else left + k
        strips.append((f"col{col}", (0, col), (rows, 1),
                       ((0, _pad_source(width, left, k, op.mode)), (1, 0))))
    return strips


def _constant_strips(op, height, width):
    """``(name, first, out_hw)`` of the border of a constant Pad ``op``: the rows above and
    below the image (all columns), then the columns beside it (the image's rows)."""
    top, left, bottom, right = op.pads
    cols = left + width + right
    strips = [("top", (0, 0), (top, cols)), ("bottom", (top + height, 0), (bottom, cols)),
              ("left", (top, 0), (height, left)), ("right", (top, left + width), (height, right))]
    return [strip for strip in strips if 0 not in strip[2]]


def pad_copies(index, job, graph, where, lanes):
    """The layers writing Pad ``job.node``, the first numbered ``index``: a copy of its input
    into its interior, unless the producer writes it there; then its border: reflect and
    edge, one identity copy per border row (from the image's row it mirrors or repeats),
    then per border column over every row; constant, a :func:`_fill` per side."""
    n = ir.node(graph, job.node)
    value = n.inputs[0]
    dst, dst_chan = where.locate(job.node)
    dst_grid = where.storages[dst].grid
    channels, height, width = ir.node(graph, value).shape
    chan_addr = np.arange(channels) + dst_chan
    layers = []
    if value not in where.scattered:
        src, src_chan = where.locate(value)
        src_grid = where.storages[src].grid
        layers.append(_identity_copy(index, f"{job.node}@interior", (job.node,), src,
                                     src_grid, src_chan, _logical_axes(src_grid), dst,
                                     dst_grid, chan_addr, lanes, out_off=n.op.pads[:2]))
    if n.op.mode == "constant":
        return layers + [
            _fill(index + len(layers) + k, f"{job.node}@{side}", job.node, dst, dst_grid,
                  chan_addr, n.q, first, out_hw)
            for k, (side, first, out_hw) in enumerate(_constant_strips(n.op, height, width))]
    for side, first, out_hw, (source, steps) in _pad_strips(n.op, height, width):
        layers.append(_identity_copy(
            index + len(layers), f"{job.node}@{side}", (job.node,), dst, dst_grid, dst_chan,
            _strip_axes(dst_grid, source, out_hw, steps), dst, dst_grid, chan_addr, lanes,
            out_off=first))
    return layers


def _lut_copy(index, job, graph, where, lanes):
    """The LUT pass of standalone activation ``job.node``: an identity copy of its input
    through the activation's table (and into a Concat's scale, folded into the table), into
    its storage, or in place into the Upsample, DepthToSpace or Pad that reads it."""
    n = ir.node(graph, job.node)
    src, src_chan = where.locate(n.inputs[0])
    src_grid = where.storages[src].grid
    spread = where.scattered.get(job.node)
    dst, dst_chan = where.locate(spread or job.node)
    dst_grid = where.storages[dst].grid
    channels = n.shape[0]
    chan_addr, placement = (np.arange(channels) + dst_chan, {}) if spread is None else \
        _placement(ir.node(graph, spread).op, dst_grid, channels, dst_chan)
    layer = _identity_copy(index, job.node, (job.node,), src, src_grid, src_chan,
                           _logical_axes(src_grid), dst, dst_grid, chan_addr, lanes,
                           lut=n.q.table, **placement)
    if job.node in where.requant:
        layer = replace(layer, post=_requantized(layer.post, where.requant[job.node]))
    return layer


def _sum_post(q, channels, lut):
    """The POST of a residual Add (a :class:`~flexigan.compiler.quant.Sum`) as a two-tap
    depthwise layer: per channel the weights ``(weight_a, weight_b)`` (normal form
    ``(C, 1, 2, 1, 1)``), bias 0 and the shared multiplier and shift; then ``lut``."""
    weight = np.empty((channels, 1, 2, 1, 1), dtype=np.int8)
    weight[:, 0, :, 0, 0] = (q.weight_a, q.weight_b)
    return numerics.Post(weight, np.zeros(channels, np.int64),
                         np.full(channels, q.multiplier, np.int64),
                         np.full(channels, q.shift, np.int64), lut)


def _requantized(post, into):
    """``post`` followed by ``into`` (a :class:`~.types.Into`: the requantization into a
    Concat's scale, the LUT of the activation that reads the Concat), folded into its LUT:
    exact, the LUT maps every int8 value."""
    table = np.arange(-128, 128)[None] if post.lut is None else post.lut
    return replace(post, lut=np.asarray(into.apply(table), dtype=np.int8))


def _normal_weight(op, weight, in_shape):
    """``(groups, cout_g, cin_g, kh, kw)`` view of a layer's integer weights."""
    if isinstance(op, ir.Dense):
        channels, height, width = (tuple(in_shape) + (1, 1))[:3]
        return weight.reshape(1, weight.shape[0], channels, height, width)
    g = op.group
    if isinstance(op, ir.ConvTranspose):
        cin, cout_g = weight.shape[:2]
        return weight.reshape(g, cin // g, cout_g, *weight.shape[2:]).transpose(0, 2, 1, 3, 4)
    return weight.reshape(g, weight.shape[0] // g, *weight.shape[1:])


def _add_geometry(n, post, grid, operands):
    """Layer fields of a residual Add: elementwise over the logical pixels of the source, in
    both plans; its two taps ``C`` channels apart (its operand storage) or 0 (a value added
    to itself)."""
    return dict(weight=post.weight, transposed=(False, False), stride=(1, 1), dilation=(1, 1),
                axes=_logical_axes(grid), out_hw=(tuple(n.shape[1:]) + (1, 1))[:2],
                group_step=1, chan_step=n.shape[0] if operands else 0)


def _conv_geometry(n, weight, grid, reorder):
    """Layer fields of a Conv or ConvTranspose reading ``grid``: zero-free, its own segments
    over the logical pixels; conventional, a dense stride-1 convolution over the padded,
    zero-inserted array (all taps real; a ConvTranspose's kernel flipped)."""
    op = n.op
    stride, dilation = tuple(op.strides), tuple(op.dilations)
    transposed = isinstance(op, ir.ConvTranspose)
    if reorder:
        axes = (Axis(grid.height, op.pads[0], grid.off_h, grid.step_h),
                Axis(grid.width, op.pads[1], grid.off_w, grid.step_w))
    else:
        lead = [demand(op, axis)[1] for axis in range(2)]
        axes = (Axis(grid.rows, lead[0] - grid.off_h, 0, 1),
                Axis(grid.cols, lead[1] - grid.off_w, 0, 1))
        if transposed:
            weight = weight[..., ::-1, ::-1]
            stride, transposed = (1, 1), False
    return dict(weight=weight, transposed=(transposed, transposed), stride=stride,
                dilation=dilation, axes=axes, out_hw=tuple(n.shape[1:]))


def _compute_layer(index, job, graph, where, reorder):
    """The layer of a Conv, ConvTranspose, Gemm, residual Add or InstanceNorm with its fused
    activation (an InstanceNorm: its normalizing pass, a depthwise 1x1 layer, op "Norm",
    whose statistics the lowering adds)."""
    name = job.node
    n = ir.node(graph, name)
    is_add = isinstance(n.op, ir.Add)
    is_norm = isinstance(n.op, ir.InstanceNorm)
    operands = where.operands.get(name)
    source = reshape_root(graph, n.inputs[0])
    # An Add reads its operand storage, or the one value it adds to itself twice.
    src, src_chan = where.locate(operands or source)
    spread = where.scattered.get(job.output)
    dst, dst_chan = where.locate(spread or job.output)
    src_grid, dst_grid = where.storages[src].grid, where.storages[dst].grid
    if is_add:
        lut = None if job.activation is None else ir.node(graph, job.activation).q.table
        post = _sum_post(n.q, n.shape[0], lut)
    elif is_norm:
        post = numerics.norm_post(graph, name, job.activation)
    else:
        post = numerics.post(graph, name, job.activation)
    if job.output in where.requant:
        post = _requantized(post, where.requant[job.output])
    if is_add:
        fields = _add_geometry(n, post, src_grid, operands)
    elif is_norm:
        fields = _add_geometry(n, post, src_grid, None)
        fields["weight"] = post.weight[:, None]
    else:
        in_shape = src_grid.shape if src == source else \
            (where.stored_shapes[source][0],) + src_grid.shape[1:]
        weight = _normal_weight(n.op, post.weight, in_shape)
        if isinstance(n.op, ir.Dense):
            fields = dict(weight=weight, transposed=(False, False), stride=(1, 1),
                          dilation=(1, 1), axes=_logical_axes(src_grid), out_hw=(1, 1))
        else:
            fields = _conv_geometry(n, weight, src_grid, reorder)
    channels = n.shape[0]
    if spread is not None:
        chan_addr, placement = _placement(ir.node(graph, spread).op, dst_grid, channels,
                                          dst_chan)
        fields.update(placement)
    elif dst_grid.shape[1:] == fields["out_hw"]:
        chan_addr = np.arange(channels) + dst_chan
    else:
        chan_addr = dst_grid.addresses()[dst_chan:dst_chan + channels].ravel()
    fields["weight"] = np.ascontiguousarray(fields["weight"])
    op = "Gemm" if isinstance(n.op, ir.Dense) else "Norm" if is_norm else type(n.op).__name__
    return Layer(index=index, name=job.output,
                 nodes=(name,) + ((job.activation,) if job.activation else ()), op=op,
                 post=post, src=src, src_grid=src_grid, dst=dst, dst_grid=dst_grid,
                 chan_addr=chan_addr, src_chan=src_chan, **fields)


def _layers_of(job, index, graph, where, reorder, lanes):
    """The layers of one job, the first numbered ``index``."""
    if isinstance(job, ComputeJob):
        return [_compute_layer(index, job, graph, where, reorder)]
    if isinstance(job, JoinCopy):
        return [_join_copy(index, job, graph, where, lanes)]
    if isinstance(job, SpreadJob):
        return spread_copies(index, job, graph, where, lanes)
    if isinstance(job, PadJob):
        return pad_copies(index, job, graph, where, lanes)
    if isinstance(job, LutJob):
        return [_lut_copy(index, job, graph, where, lanes)]
    raise TypeError(f"job must be a ComputeJob, JoinCopy, SpreadJob, PadJob or LutJob, not "
                    f"{job!r}")


def build(graph, where, act_bytes, lanes, reorder=True):
    """Pass 2: the :class:`~.types.Plan` of the jobs of ``where`` (an
    :class:`~.types.Addressing` of ``graph``) on a machine of ``lanes`` lanes per group, its
    storages with their writers and readers; no memory planned yet."""
    layers = []
    for job in where.jobs:
        layers += _layers_of(job, len(layers), graph, where, reorder, lanes)
    storages = tuple(
        replace(s, writers=tuple(layer.index for layer in layers if layer.dst == s.name),
                readers=tuple(layer.index for layer in layers if layer.src == s.name))
        for s in where.storages.values())
    return Plan(tuple(layers), storages, dict(where.inputs), dict(where.outputs), act_bytes)
