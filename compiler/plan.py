"""The layer and memory plan: what the back end lowers, and where every tensor lives.

:func:`plan` turns a quantized IR graph into :class:`Layer` s (a Conv, ConvTranspose, Gemm or
residual Add with its fused activation, in one normal form: a grouped convolution whose taps the
segments of :mod:`flexigan.compiler.segments` enumerate; an Add is a two-tap depthwise one, see
docs/numerics.md) and :class:`Storage` s (one per materialized tensor, with the :class:`Grid`
that places it in HWC order). Channel Concat and the pair of an Add's operands are addressing:
the producers write their channel slices of one storage. So are nearest Upsample and
DepthToSpace: a Conv or ConvTranspose read only by one writes its output in place (its WRITE
strides place each pixel at its upsampled position, its lane tiles scatter channels over the
depth-to-space block), the other blocks of an upsampling are exact 1x1 identity copies
("Copy" layers) from the first, and an input of another producer is copied in the same way.
Layout ops cost nothing: a Reshape
aliases its operand's storage (a Gemm reading a flattened image reads the image with its
columns permuted at compile time; a Gemm whose output is reshaped to an image writes it in HWC
order), and a fused activation is a LUT in the producer's POST.

Memory: model inputs and outputs live in external memory (their regions of the memory image);
every other tensor lives in the ACT scratchpad, placed by a liveness-based first-fit allocator.
A layer reads an external tensor through *windows* (the input rows a stage needs) and writes one
through *staging* buffers (the output rows of a stage), both double-buffered when the layer
runs in several stages. When the scratchpad is too small, the plan first cuts the layer into
more stages and then *spills* the largest tensor to external memory; a layer that does not fit
even so raises :class:`~flexigan.errors.FitError` naming it and the shortfall.

``reorder=False`` plans the conventional baseline instead: every Conv and ConvTranspose reads a
padded (and, for ConvTranspose, zero-inserted) copy of its input, laid out so by its producer or
by the input region, with one segment of all taps, so padding and inserted zeros are MAC steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import FitError, UnsupportedError
from . import ir, numerics, segments

__all__ = ["Grid", "Storage", "Axis", "Layer", "Plan", "plan", "ALIGN"]

#: Byte alignment of every buffer, in ACT and in external memory (one AXI burst beat of the
#: widest preset), so DMA never splits a beat.
ALIGN = 64
#: The ops that become layers (with a fused activation): the compute ops, and residual Add.
_LAYER_OPS = (*ir.COMPUTE_OPS, ir.Add)


def align(n):
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class Grid:
    """Placement of a ``(C, H, W)`` tensor in an HWC array of ``rows x cols x C`` bytes.

    Logical pixel ``(h, w)`` sits at row ``off_h + h*step_h``, column ``off_w + w*step_w``; the
    other pixels of the array are zeros (the padding and inserted zeros of the conventional
    baseline). Channel is the fastest axis.
    """

    channels: int
    height: int
    width: int
    rows: int
    cols: int
    off_h: int = 0
    off_w: int = 0
    step_h: int = 1
    step_w: int = 1

    @classmethod
    def dense(cls, shape):
        c, h, w = (tuple(shape) + (1, 1))[:3]
        return cls(c, h, w, h, w)

    @property
    def shape(self):
        return (self.channels, self.height, self.width)

    @property
    def size(self):
        return self.rows * self.cols * self.channels

    @property
    def row_bytes(self):
        return self.cols * self.channels

    @property
    def gapped(self):
        """Whether the array holds zeros between or around the pixels."""
        return self.size != self.channels * self.height * self.width

    def row(self, h):
        """Array row of logical row ``h``."""
        return self.off_h + h * self.step_h

    def addr(self, c, h, w):
        """Byte offset of element ``(c, h, w)``."""
        return (self.row(h) * self.cols + self.off_w + w * self.step_w) * self.channels + c

    def addresses(self):
        """Byte offsets of every element, shape ``(C, H, W)`` (logical CHW order)."""
        c, h, w = np.ogrid[:self.channels, :self.height, :self.width]
        return self.addr(c, h, w)

    def to_dict(self):
        return dict(self.__dict__)


@dataclass(eq=False)
class Storage:
    """One materialized tensor: its grid, who writes and reads it, and where it lives.

    ``home`` is "act" (the scratchpad, at ``act_addr``) or "dram" (external memory, at
    ``dram_addr`` of the memory image). ``producer`` is a layer index, None for a model input.
    """

    name: str
    grid: Grid
    producer: int | None
    consumers: list[int] = field(default_factory=list)
    output: bool = False
    home: str = "act"
    act_addr: int | None = None
    dram_addr: int | None = None
    writers: list[int] = field(default_factory=list)

    @property
    def size(self):
        return self.grid.size

    def last_use(self):
        return max(self.consumers + self.writers, default=self.producer)


@dataclass(frozen=True)
class Axis:
    """Input geometry of a layer along one axis: segment input index ``i`` is array row (or
    column) ``off + i*step`` of the source grid; ``size`` inputs; ``pad`` as in the segments."""

    size: int
    pad: int
    off: int
    step: int


@dataclass(eq=False)
class Layer:
    """One lowered compute op in normal form (a grouped convolution, plus its fused POST).

    ``weight`` is int8 ``(groups, cout_g, cin_g, kh, kw)``, indexed by the kernel taps of the
    segments; ``transposed`` selects the transposed-convolution segments. ``chan_addr[n]`` is
    the byte offset of output channel ``n`` from its pixel's address ``pixel_addr(h, w)`` in
    the destination grid (a layer writing into a channel slice of a Concat offsets them by the
    slice's first channel); ``src_chan`` is the first channel of the source value in its
    storage (a value that is a slice of a Concat). ``rows_per_stage`` cuts the output rows
    into stages (see the module docstring); ``windows``/``staging`` are the ACT addresses of
    the layer's buffers. Conv group ``gi`` reads its ``cin_g`` input channels at channels
    ``src_chan + gi*group_step + k*chan_step`` of the source (``group_step`` None:
    ``cin_g``, contiguous); a residual Add is a two-tap depthwise layer whose taps are two
    channels ``chan_step`` apart (its operands, side by side in one storage, or one value
    read twice with step 0).
    """

    index: int
    name: str
    nodes: tuple[str, ...]
    op: str
    transposed: bool
    weight: np.ndarray
    stride: tuple[int, int]
    dilation: tuple[int, int]
    axes: tuple[Axis, Axis]
    out_hw: tuple[int, int]
    post: numerics.Post
    src: Storage
    dst: Storage
    chan_addr: np.ndarray
    rows_per_stage: int = 0
    windows: list[int] = field(default_factory=list)
    staging: list[int] = field(default_factory=list)
    src_chan: int = 0
    group_step: int | None = None
    chan_step: int = 1
    out_off: tuple[int, int] = (0, 0)
    out_mul: tuple[int, int] = (1, 1)

    @property
    def mapped(self):
        """Whether output pixel ``(h, w)`` goes to destination pixel ``(off_h + h*mul_h,
        off_w + w*mul_w)`` (nearest upsampling, depth-to-space) rather than ``(h, w)``."""
        return self.out_off != (0, 0) or self.out_mul != (1, 1)

    def out_pixel(self, h, w):
        """Destination logical pixel of output pixel ``(h, w)``."""
        return (self.out_off[0] + h * self.out_mul[0], self.out_off[1] + w * self.out_mul[1])

    @property
    def groups(self):
        return self.weight.shape[0]

    @property
    def cout(self):
        return self.weight.shape[0] * self.weight.shape[1]

    @property
    def cin_g(self):
        return self.weight.shape[2]

    @property
    def group_chans(self):
        """Source channels from one conv group's first input channel to the next's."""
        return self.cin_g if self.group_step is None else self.group_step

    def axis_segments(self, a):
        """The :class:`~flexigan.compiler.segments.AxisSegment` s along axis ``a`` (0 rows)."""
        ax = self.axes[a]
        kernel = self.weight.shape[3 + a]
        cut = segments.convt_axis if self.transposed else segments.conv_axis
        return cut(ax.size, self.out_hw[a], kernel, self.stride[a], ax.pad, self.dilation[a])

    def steps_per_lane_tile(self):
        """MAC steps (cycles without zero skipping) of the whole output for one lane tile."""
        cin = self.cin_g
        return sum(r.count * c.count * max(1, r.ntaps * c.ntaps * cin)
                   for r in self.axis_segments(0) for c in self.axis_segments(1))

    def pixel_addr(self, h, w):
        """Offset of output pixel ``(h, w)`` in the destination grid (0 for a 1x1 output
        written into a reshaped grid: ``chan_addr`` places each channel)."""
        g = self.dst.grid
        if self.mapped:
            return g.addr(0, *self.out_pixel(h, w))
        return g.addr(0, h, w) if g.shape[1:] == self.out_hw else 0

    def stages(self):
        """Output row ranges ``[(r0, r1)]`` of the stages."""
        rows = self.out_hw[0]
        step = self.rows_per_stage or rows
        return [(r, min(rows, r + step)) for r in range(0, rows, step)]

    def window_rows(self, r0, r1):
        """Source-array rows ``(lo, hi)`` that output rows ``[r0, r1)`` read (``lo == hi``:
        none)."""
        lo, hi = math.inf, -math.inf
        ax = self.axes[0]
        for seg in self.axis_segments(0):
            seg = seg.clip(r0, r1)
            if seg is None or not seg.ntaps:
                continue
            ends = [seg.in0 + m * seg.in_step + j * seg.tap_step
                    for m in (0, seg.count - 1) for j in (0, seg.ntaps - 1)]
            lo, hi = min(lo, min(ends)), max(hi, max(ends))
        if lo > hi:
            return 0, 0
        return ax.off + lo * ax.step, ax.off + hi * ax.step + 1

    def staging_rows(self, r0, r1):
        """Destination-array rows ``(lo, hi)`` written by output rows ``[r0, r1)``: whole
        rows of the grid from the first written one, so every stage of a buffer has the same
        pattern of written bytes (and the zeros between them stay zero)."""
        g = self.dst.grid
        if self.mapped:
            return g.row(self.out_pixel(r0, 0)[0]), min(g.rows, g.row(self.out_pixel(r1, 0)[0]))
        if g.shape[1:] != self.out_hw:
            return 0, g.rows
        return g.row(r0), min(g.rows, g.row(r1))


@dataclass
class Plan:
    """Everything :mod:`flexigan.compiler.lower` needs: layers in order, storages, and the
    model's input and output values with their storages."""

    layers: list[Layer]
    storages: list[Storage]
    inputs: dict[str, Storage]
    outputs: dict[str, Storage]
    act_bytes: int


# --- building the layers ------------------------------------------------------------------

def _reshape_root(graph, name):
    while isinstance(ir.node(graph, name).op, ir.Reshape):
        name = ir.node(graph, name).inputs[0]
    return name


def _fused_activation(graph, name):
    """The Activation fused into compute value ``name`` (possibly through Reshapes that keep
    the channel axis), or None: it must be the only reader, and nothing in between a model
    output."""
    outputs = set(graph.graph["outputs"])
    while True:
        users = ir.consumers(graph, name)
        if len(users) != 1 or name in outputs:
            return None
        user = ir.node(graph, users[0])
        if isinstance(user.op, ir.Reshape):
            name = users[0]
            continue
        if not isinstance(user.op, ir.Activation):
            return None
        per_channel = user.q is not None and user.q.table.shape[0] > 1
        if per_channel and user.shape[0] != ir.node(graph, name).shape[0]:
            return None
        return users[0]


def _normal_weight(op, w, in_shape):
    """``(groups, cout_g, cin_g, kh, kw)`` view of a layer's integer weights."""
    if isinstance(op, ir.Dense):
        c, h, wd = (tuple(in_shape) + (1, 1))[:3]
        return w.reshape(1, w.shape[0], c, h, wd)
    g = op.group
    if isinstance(op, ir.ConvTranspose):
        cin, cout_g = w.shape[:2]
        return w.reshape(g, cin // g, cout_g, *w.shape[2:]).transpose(0, 2, 1, 3, 4)
    return w.reshape(g, w.shape[0] // g, *w.shape[1:])


def _requantized(post, r):
    """``post`` followed by the per-tensor requantization ``r`` (into a Concat's scale),
    folded into its LUT: exact, the LUT maps every int8 value."""
    table = np.arange(-128, 128)[None] if post.lut is None else post.lut
    return replace(post, lut=r.apply(table.astype(np.int64), channel_axis=0))


def _copy_layer(index, job, storages, resolve, shape_of, graph):
    """A 1x1 identity convolution copying value ``v`` into channels ``c0...`` of storage
    ``target`` (Concat ``k``, or the operands of Add ``k``) with POST ``r`` (the Concat's
    requantization, or multiplier 1, shift 0: exact)."""
    k, target, v, c0, r = job
    v = _reshape_root(graph, v)
    src_root, src_chan = resolve(v)
    src, dst = storages[src_root], storages[resolve(target)[0]]
    k_chan = resolve(target)[1]
    channels = shape_of[v][0]
    if dst.producer is None:
        dst.producer = index
    dst.writers.append(index)
    src.consumers.append(index)
    ones = np.ones(channels, dtype=np.int64)
    mult = ones if r is None else np.broadcast_to(r.multiplier, (channels,))
    shift = 0 * ones if r is None else np.broadcast_to(r.shift, (channels,))
    eye = np.eye(channels, dtype=np.int8)
    post = numerics.Post(eye[:, :, None, None], 0 * ones, mult, shift, None)
    g = src.grid
    axes = (Axis(g.height, 0, g.off_h, g.step_h), Axis(g.width, 0, g.off_w, g.step_w))
    return Layer(index, f"{target}[{c0}:{c0 + channels}]", (k,), "Copy", False,
                 np.ascontiguousarray(eye[None, :, :, None, None]), (1, 1), (1, 1), axes,
                 (g.height, g.width), post, src, dst, np.arange(channels) + c0 + k_chan,
                 src_chan=src_chan)


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
    cb = channels // (b * b)
    if op.mode == "DCR":
        i, j, c = n // (b * cb), n // cb % b, n % cb
    else:
        c, i, j = n // (b * b), n // b % b, n % b
    return grid.addr(c + dst_chan, i, j) - grid.addr(0, 0, 0)


def _spread_copy(index, k, src, src_chan, axes, dst, chan_addr, out_off, out_mul):
    """A 1x1 identity layer (multiplier 1, shift 0: exact) copying the ``len(chan_addr)``
    channels of a value (at ``src_chan`` of ``src``, read along ``axes``) into ``dst``: its
    pixel ``(h, w)`` to destination pixel ``out_off + (h, w)*out_mul``, channel ``n`` at byte
    ``chan_addr[n]`` of it (one block of a nearest upsampling, or a depth-to-space)."""
    channels = len(chan_addr)
    if dst.producer is None:
        dst.producer = index
    dst.writers.append(index)
    src.consumers.append(index)
    ones = np.ones(channels, dtype=np.int64)
    eye = np.eye(channels, dtype=np.int8)
    post = numerics.Post(eye[:, :, None, None], 0 * ones, ones, 0 * ones, None)
    return Layer(index, f"{k}@{out_off[0]},{out_off[1]}", (k,), "Copy", False,
                 np.ascontiguousarray(eye[None, :, :, None, None]), (1, 1), (1, 1), axes,
                 (axes[0].size, axes[1].size), post, src, dst, np.asarray(chan_addr),
                 src_chan=src_chan, out_off=out_off, out_mul=out_mul)


def _sum_post(q, channels, lut):
    """The POST of a residual Add (a :class:`~flexigan.compiler.quant.Sum`) as a two-tap
    depthwise layer: per channel the weights ``(weight_a, weight_b)`` (normal form
    ``(C, 1, 2, 1, 1)``), bias 0 and the shared multiplier and shift; then ``lut``."""
    weight = np.empty((channels, 1, 2, 1, 1), dtype=np.int8)
    weight[:, 0, :, 0, 0] = (q.weight_a, q.weight_b)
    return numerics.Post(weight, np.zeros(channels, np.int64),
                         np.full(channels, q.multiplier, np.int64),
                         np.full(channels, q.shift, np.int64), lut)


def _demand(op, a, size):
    """Conventional baseline: ``(step, lead, trail)`` the consumer needs of its input's array
    along axis ``a`` (lead/trail zero rows; negative: rows it does not read)."""
    k = op.weight.shape[2 + a]
    d = op.dilations[a]
    if isinstance(op, ir.ConvTranspose):
        return (op.strides[a], d * (k - 1) - op.pads[a],
                d * (k - 1) - op.pads[2 + a] + op.output_padding[a])
    return 1, op.pads[a], op.pads[2 + a]


def plan(graph, config, reorder=True):
    """The :class:`Plan` of a quantized IR graph on ``config``.

    Raises
    ------
    UnsupportedError
        listing every node that cannot be lowered, all at once.
    FitError
        when a layer's tensors cannot fit the activation scratchpad.
    """
    problems = []
    outputs = list(graph.graph["outputs"])
    order = ir.topo_nodes(graph)
    computes, fused = [], {}
    for name, n in order:
        if isinstance(n.op, _LAYER_OPS):
            computes.append(name)
            act = _fused_activation(graph, name)
            if act is not None:
                fused[act] = name
    for name, n in order:
        if isinstance(n.op, (ir.Input, *_LAYER_OPS, ir.Reshape)) or name in fused:
            continue
        if isinstance(n.op, (ir.Upsample, ir.DepthToSpace)):
            if _reshape_root(graph, n.inputs[0]) != n.inputs[0] or \
                    len(ir.node(graph, n.inputs[0]).shape) != 3:
                problems.append((name, type(n.op).__name__, "input is not an image"))
            continue
        if isinstance(n.op, ir.Concat):
            if n.op.axis != 0:
                problems.append((name, "Concat", "concatenation along a spatial axis"))
            continue
        if isinstance(n.op, ir.Activation):
            why = ("standalone activation: not the only consumer of a Conv, ConvTranspose, Gemm "
                   "or Add")
        else:
            why = "not lowered by the back end yet"
        problems.append((name, type(n.op).__name__, why))

    # Each materialized value (model input, layer output or channel Concat) is a root;
    # Reshapes alias it. So is the operand storage of an Add of two different values: the two
    # side by side, as a Concat of 2C channels, which the Add reads as a two-tap depthwise
    # convolution (taps C channels apart).
    layer_out = {c: next((a for a, src in fused.items() if src == c), c) for c in computes}
    concats = [name for name, n in order if isinstance(n.op, ir.Concat) and n.op.axis == 0]
    operands = {}
    for name, n in order:
        if isinstance(n.op, ir.Add) and n.inputs[0] != n.inputs[1]:
            storage = f"{name}:operands"
            while storage in graph:
                storage += "'"
            operands[name] = storage
    # Nearest Upsample and DepthToSpace are addressing: their output is a root, written by
    # its input's producer directly when only they read it (a Conv or ConvTranspose whose
    # WRITE places each pixel at its upsampled position, or scatters its channels over the
    # depth-to-space block), and otherwise, and for the other blocks of an upsampling, by
    # exact 1x1 identity copies (``spreads``).
    spreads = [name for name, n in order if isinstance(n.op, (ir.Upsample, ir.DepthToSpace))]
    by_value = {layer_out[c]: c for c in computes
                if isinstance(ir.node(graph, c).op, (ir.Conv, ir.ConvTranspose))}
    scatter = {}
    for k in spreads:
        v = ir.node(graph, k).inputs[0]
        if v in by_value and v not in outputs and ir.consumers(graph, v) == [k]:
            scatter[v] = k
    roots = list(graph.graph["inputs"]) + [layer_out[c] for c in computes
                                           if layer_out[c] not in scatter] + concats + \
        list(operands.values()) + spreads
    # A layer's output is stored in its compute op's shape (an activation fused through a
    # Reshape is a view of it).
    shape_of = {r: ir.node(graph, r).shape for r in graph.graph["inputs"]}
    shape_of.update({layer_out[c]: ir.node(graph, c).shape for c in computes})
    shape_of.update({k: ir.node(graph, k).shape for k in concats + spreads})
    for k, storage in operands.items():
        shape = ir.node(graph, k).shape
        shape_of[storage] = (2 * shape[0], *shape[1:])
    # Concat is addressing: an input that only its producer writes is stored in its channel
    # slice of the Concat (``alias``: value -> (Concat, first channel)), its producer writing
    # there directly (requantization to the Concat's scale folded into its POST's LUT);
    # any other input (a model input or output, a value read elsewhere at its own scale, a
    # reshape) is copied in by a 1x1 identity layer with the requantizing POST (``copies``).
    # An Add's operands are its storage's two halves in the same way, never requantized (the
    # Add's weights carry the scales).
    inputs = set(graph.graph["inputs"])
    alias, copies, relut = {}, {}, {}
    joins = [(k, k, nk.q) if k in concats else (k, operands[k], (None, None))
             for k, nk in order if k in concats or k in operands]
    for k, target, requants in joins:
        nk = ir.node(graph, k)
        c0 = 0
        for v, r in zip(nk.inputs, requants):
            direct = v in shape_of and v not in inputs and v not in outputs \
                and v not in alias and nk.inputs.count(v) == 1 and v not in spreads \
                and not isinstance(ir.node(graph, v).op, ir.Reshape)
            if direct and r is not None:
                # Requantized: only a layer output that nothing else reads, via its LUT.
                direct = v not in concats and ir.consumers(graph, v) == [k]
                if direct:
                    relut[v] = r
            if direct:
                alias[v] = (target, c0)
            else:
                copies.setdefault(k, []).append((target, v, c0, r))
            c0 += ir.node(graph, v).shape[0]

    def resolve(v):
        """``(root, first channel)`` of the storage holding materialized value ``v``."""
        c0 = 0
        while v in alias:
            v, off = alias[v]
            c0 += off
        return v, c0

    for name, n in order:
        if not isinstance(n.op, ir.Reshape):
            continue
        root = _reshape_root(graph, name)
        if root not in shape_of:
            continue
        users = [ir.node(graph, u).op for u in ir.consumers(graph, name)]
        if n.shape == shape_of[root] or \
                not any(isinstance(u, (ir.Conv, ir.ConvTranspose, ir.Add)) for u in users):
            continue
        if root in alias or root in concats:
            problems.append((name, "Reshape", "reshape of a concatenated tensor"))
            continue
        # An image read through a reshape of a model input (the host lays it out) or of a
        # vector (its producer writes each channel anywhere): store it as that image.
        own = shape_of[root]
        if own == ir.node(graph, root).shape and (root in inputs or math.prod(own[1:]) == 1):
            shape_of[root] = n.shape
        else:
            problems.append((name, "Reshape", f"reshape {own} -> {n.shape} moves data in HWC "
                                              "order"))

    roots = [r for r in roots if r not in alias]
    # Conventional baseline: each Conv/ConvTranspose asks for padding and zero insertion.
    demands = {r: [] for r in roots}
    if not reorder:
        for c in computes:
            n = ir.node(graph, c)
            if isinstance(n.op, (ir.Conv, ir.ConvTranspose)):
                root = _reshape_root(graph, n.inputs[0])
                shape = shape_of[root]
                demands[resolve(root)[0]].append(
                    (c, [_demand(n.op, a, shape[1 + a]) for a in range(2)]))
    grids = {}
    for r in roots:
        c, h, w = (tuple(shape_of[r]) + (1, 1))[:3]
        if not demands[r]:
            grids[r] = Grid.dense((c, h, w))
            continue
        steps = {tuple(d[a][0] for a in range(2)) for _, d in demands[r]}
        if len(steps) > 1:
            why = f"reads {r!r} with another zero insertion than its other readers"
            problems += [(name, "ConvTranspose", why) for name, _ in demands[r]]
            grids[r] = Grid.dense((c, h, w))
            continue
        (sh, sw), = steps
        off = [max(0, max(d[a][1] for _, d in demands[r])) for a in range(2)]
        trail = [max(0, max(d[a][2] for _, d in demands[r])) for a in range(2)]
        grids[r] = Grid(c, h, w, off[0] + (h - 1) * sh + 1 + trail[0],
                        off[1] + (w - 1) * sw + 1 + trail[1], off[0], off[1], sh, sw)
    if problems:
        raise UnsupportedError(problems)

    storages = {r: Storage(r, grids[r], None, output=False) for r in roots}
    for r in graph.graph["inputs"]:
        storages[r].home = "dram"
    for o in outputs:
        root = resolve(_reshape_root(graph, o))[0]
        storages[root].output = True
        storages[root].home = "dram"

    # The layers in graph order: compute ops and Adds, and the copies into each Concat or Add
    # at its place (before the Add).
    jobs = []
    for name, _ in order:
        jobs += [(name, *copy) for copy in copies.get(name, [])]
        if name in layer_out:
            jobs.append(name)
        if name in spreads:
            jobs.append(("spread", name))

    layers = []
    for job in jobs:
        if isinstance(job, tuple) and len(job) == 2:
            layers += _spread_copies(len(layers), job[1], graph, storages, resolve, scatter)
            continue
        if isinstance(job, tuple):
            layers.append(_copy_layer(len(layers), job, storages, resolve, shape_of, graph))
            continue
        index = len(layers)
        c = job
        n = ir.node(graph, c)
        act = layer_out[c] if layer_out[c] != c else None
        is_add = isinstance(n.op, ir.Add)
        # An Add reads its operand storage, or the one value it adds to itself twice.
        src_root, src_chan = resolve(operands[c] if c in operands else
                                     _reshape_root(graph, n.inputs[0]))
        spread = scatter.get(layer_out[c])
        dst_root, dst_chan = resolve(spread or layer_out[c])
        src, dst = storages[src_root], storages[dst_root]
        if dst.producer is None:
            dst.producer = index
        dst.writers.append(index)
        src.consumers.append(index)
        if is_add:
            lut = None if act is None else ir.node(graph, act).q.table
            post = _sum_post(n.q, n.shape[0], lut)
        else:
            post = numerics.post(graph, c, act)
        if layer_out[c] in relut:
            post = _requantized(post, relut[layer_out[c]])
        g = src.grid
        extra = {}
        if not is_add:
            in_shape = src.grid.shape if src_root == _reshape_root(graph, n.inputs[0]) else \
                (shape_of[_reshape_root(graph, n.inputs[0])][0],) + src.grid.shape[1:]
            weight = _normal_weight(n.op, post.weight, in_shape)
        if is_add:
            # Elementwise: the logical pixels of the source, in both plans.
            weight, transposed, stride, dil = post.weight, False, (1, 1), (1, 1)
            axes = (Axis(g.height, 0, g.off_h, g.step_h), Axis(g.width, 0, g.off_w, g.step_w))
            out_hw = (tuple(n.shape[1:]) + (1, 1))[:2]
            extra = {"group_step": 1, "chan_step": n.shape[0] if c in operands else 0}
        elif isinstance(n.op, ir.Dense):
            transposed, stride, dil = False, (1, 1), (1, 1)
            axes = (Axis(g.height, 0, g.off_h, g.step_h), Axis(g.width, 0, g.off_w, g.step_w))
            out_hw = (1, 1)
        else:
            stride, dil, out_hw = tuple(n.op.strides), tuple(n.op.dilations), n.shape[1:]
            transposed = isinstance(n.op, ir.ConvTranspose)
            if reorder:
                axes = (Axis(g.height, n.op.pads[0], g.off_h, g.step_h),
                        Axis(g.width, n.op.pads[1], g.off_w, g.step_w))
            else:
                # A dense convolution over the padded, zero-inserted array: all taps real.
                lead = [_demand(n.op, a, 0)[1] for a in range(2)]
                axes = (Axis(g.rows, lead[0] - g.off_h, 0, 1),
                        Axis(g.cols, lead[1] - g.off_w, 0, 1))
                if transposed:
                    weight = weight[..., ::-1, ::-1]
                    stride, transposed = (1, 1), False
        if spread is not None:
            sop = ir.node(graph, spread).op
            chan_addr = _spread_addr(sop, dst.grid, n.shape[0], dst_chan)
            f = sop.scales if isinstance(sop, ir.Upsample) else (sop.blocksize,) * 2
            extra = {**extra, "out_mul": tuple(f)}
        elif dst.grid.shape[1:] == tuple(out_hw):
            chan_addr = np.arange(n.shape[0]) + dst_chan
        else:
            chan_addr = dst.grid.addresses()[dst_chan:dst_chan + n.shape[0]].ravel()
        layers.append(Layer(index, layer_out[c], (c,) + ((act,) if act else ()),
                            "Gemm" if isinstance(n.op, ir.Dense) else type(n.op).__name__,
                            transposed, np.ascontiguousarray(weight), stride, dil, axes,
                            tuple(out_hw), post, src, dst, chan_addr, src_chan=src_chan,
                            **extra))

    result = Plan(layers, list(storages.values()),
                  {i: storages[i] for i in graph.graph["inputs"]},
                  {o: storages[resolve(_reshape_root(graph, o))[0]] for o in outputs},
                  config.act_bytes)
    _place(result, config)
    return result


def _spread_copies(index, k, graph, storages, resolve, scatter):
    """The copy layers writing Upsample or DepthToSpace ``k`` (see :func:`plan`): with
    ``index`` the first one's. DepthToSpace: one scattering copy of its input, unless the
    producer writes it. Upsample by ``(fh, fw)``: block ``(0, 0)`` (every output pixel
    ``(fh*h, fw*w)``) from the input, unless the producer writes it, then each other block
    ``(dy, dx)`` from block ``(0, 0)`` of the output itself."""
    n = ir.node(graph, k)
    v = n.inputs[0]
    dst_root, dst_chan = resolve(k)
    dst = storages[dst_root]
    g = dst.grid
    channels, h, w = ir.node(graph, v).shape
    chan_addr = _spread_addr(n.op, g, channels, dst_chan)
    layers = []
    if isinstance(n.op, ir.DepthToSpace):
        if v not in scatter:
            b = n.op.blocksize
            src_root, src_chan = resolve(v)
            sg = storages[src_root].grid
            axes = (Axis(h, 0, sg.off_h, sg.step_h), Axis(w, 0, sg.off_w, sg.step_w))
            layers.append(_spread_copy(index, k, storages[src_root], src_chan, axes, dst,
                                       chan_addr, (0, 0), (b, b)))
        return layers
    fh, fw = n.op.scales
    blocks = [(dy, dx) for dy in range(fh) for dx in range(fw)]
    if v not in scatter:
        src_root, src_chan = resolve(v)
        sg = storages[src_root].grid
        axes = (Axis(h, 0, sg.off_h, sg.step_h), Axis(w, 0, sg.off_w, sg.step_w))
        layers.append(_spread_copy(index, k, storages[src_root], src_chan, axes, dst,
                                   chan_addr, (0, 0), (fh, fw)))
    axes = (Axis(h, 0, g.off_h, g.step_h * fh), Axis(w, 0, g.off_w, g.step_w * fw))
    for block in blocks[1:]:
        layers.append(_spread_copy(index + len(layers), k, dst, dst_chan, axes, dst,
                                   chan_addr, block, (fh, fw)))
    return layers


# --- memory ---------------------------------------------------------------------------------

def _temps(layer, rows):
    """ACT bytes of the ``(windows, staging buffers)`` of ``layer`` at ``rows`` per stage."""
    layer.rows_per_stage = rows
    stages = layer.stages()
    copies = 2 if len(stages) > 1 else 1
    windows, staging = [], []
    if layer.src.home == "dram":
        rb = layer.src.grid.row_bytes
        windows = [align(max((hi - lo) * rb for lo, hi in
                             (layer.window_rows(*s) for s in stages)))] * copies
    if layer.dst.home == "dram":
        rb = layer.dst.grid.row_bytes
        staging = [align(max((hi - lo) * rb for lo, hi in
                             (layer.staging_rows(*s) for s in stages)))] * copies
    return windows, staging


def _temp_bytes(layer, rows):
    return sum(map(sum, _temps(layer, rows)))


def _live(p, i):
    return [s for s in p.storages if s.home == "act" and s.producer is not None
            and s.producer <= i <= s.last_use()]


def _fit_stages(p, layer):
    """Most rows per stage that fit next to the tensors live at the layer, or None."""
    free = p.act_bytes - sum(align(s.size) for s in _live(p, layer.index))
    rows = layer.out_hw[0]
    if _temp_bytes(layer, rows) <= free:
        return rows
    if layer.src.home != "dram" and layer.dst.home != "dram":
        return None
    lo, hi = 1, rows - 1      # the need falls as the stages shrink: bisect
    if _temp_bytes(layer, lo) > free:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _temp_bytes(layer, mid) <= free else (lo, mid - 1)
    return lo


def _place(p, config):
    """Choose homes and stages, then allocate ACT; raise FitError when impossible."""
    while True:
        for layer in p.layers:
            rows = _fit_stages(p, layer)
            if rows is None:
                break
            layer.rows_per_stage = rows
        else:
            break
        candidates = [s for s in _live(p, layer.index)]
        if not candidates:
            need = _temp_bytes(layer, 1) + sum(align(s.size) for s in _live(p, layer.index))
            raise FitError(f"layer {layer.name!r}: needs {need} bytes of activation memory, "
                           f"the target has {p.act_bytes} (short by {need - p.act_bytes})")
        max(candidates, key=lambda s: s.size).home = "dram"

    # First-fit allocation, largest first, of buffers whose lifetimes overlap.
    items = [(s.size, s.producer, s.last_use(), s) for s in p.storages if s.home == "act"]
    for layer in p.layers:
        windows, staging = _temps(layer, layer.rows_per_stage)
        items += [(size, layer.index, layer.index, (layer.windows, layer)) for size in windows]
        items += [(size, layer.index, layer.index, (layer.staging, layer)) for size in staging]
    placed = []
    for size, first, last, what in sorted(items, key=lambda t: -t[0]):
        addr = 0
        for a, sz in sorted((a, sz) for a, sz, f, la in placed
                            if f <= last and first <= la):
            if addr + size <= a:
                break
            addr = max(addr, align(a + sz))
        if addr + size > p.act_bytes:
            layer = p.layers[first]
            raise FitError(f"layer {layer.name!r}: needs {addr + size} bytes of activation "
                           f"memory, the target has {p.act_bytes} "
                           f"(short by {addr + size - p.act_bytes})")
        placed.append((addr, size, first, last))
        if isinstance(what, Storage):
            what.act_addr = addr
        else:
            what[0].append(addr)
