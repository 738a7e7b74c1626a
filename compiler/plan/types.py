"""The plan's records: small frozen dataclasses that the passes take and return.

* the *jobs* (:class:`ComputeJob`, :class:`JoinCopy`, :class:`SpreadJob`, :class:`PadJob`,
  :class:`LutJob`): what pass 1 finds to do, in graph order, and :class:`Addressing`, where
  it finds every value stored;
* :class:`Layer` (with its :class:`Axis` es): one compute op in normal form, a grouped
  convolution, with its :class:`Stage` s and :class:`Buffer` s once memory is planned;
* :class:`Storage`: one materialized tensor; :class:`Plan`: all of it.

A layer names the storages it reads and writes; the plan holds them, so a pass that moves a
storage (a spill, an address) replaces it in one place.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import numerics, segments
from ..grid import Grid

__all__ = ["ComputeJob", "JoinCopy", "Into", "SpreadJob", "PadJob", "LutJob", "Addressing", "Axis",
           "Buffer", "Stage", "Layer", "Storage", "Plan"]


# --- jobs: what pass 1 finds to do --------------------------------------------------------

@dataclass(frozen=True)
class ComputeJob:
    """Lower compute op ``node`` (a Conv, ConvTranspose, Gemm or residual Add), with the
    ``activation`` fused into its POST (a node name, or None)."""

    node: str
    activation: str | None

    @property
    def output(self):
        """The value the layer writes: its activation's, or its own."""
        return self.activation or self.node


@dataclass(frozen=True)
class JoinCopy:
    """Copy ``value`` into channels ``first_channel...`` of storage ``target``, for Concat or
    Add ``join`` (``target`` is the Concat, or the Add's operand storage), with the Concat's
    requantization ``requant`` (None: exact), then the table ``lut`` of the activation that
    is the Concat's only reader (None: none; see :class:`Into`)."""

    join: str
    target: str
    value: str
    first_channel: int
    requant: Any = None
    lut: Any = None


@dataclass(frozen=True, eq=False)
class Into:
    """What the producer of a Concat's input folds into its LUT when it writes the Concat's
    slice: the Concat's ``requant`` of the input (None: none), then ``lut``, the int8
    ``(1, 256)`` table of the activation that is the Concat's only reader (None: none). Both
    map every int8 value, so the fold is exact: the Concat's storage then holds the
    activation's values, and the activation costs no pass of its own."""

    requant: Any = None
    lut: Any = None

    def apply(self, table):
        """The int8 ``table`` (rows of 256, one per channel or one for all) mapped through
        the requantization and then the activation's table."""
        if self.requant is not None:
            table = self.requant.apply(table.astype(np.int64), channel_axis=0)
        if self.lut is not None:
            table = self.lut[0][table.astype(np.intp) + 128]
        return table


@dataclass(frozen=True)
class SpreadJob:
    """Write nearest Upsample or DepthToSpace ``node``: the copies its input's producer does
    not write (see :func:`flexigan.compiler.plan.layers.spread_copies`)."""

    node: str


@dataclass(frozen=True)
class PadJob:
    """Write Pad ``node``: its interior, unless its input's producer writes it in place, and
    its border (see :func:`flexigan.compiler.plan.layers.pad_copies`)."""

    node: str


@dataclass(frozen=True)
class LutJob:
    """Apply standalone Activation ``node`` (one not fused into its input's producer): an
    identity copy of its input whose POST looks the values up in the activation's LUT."""

    node: str


@dataclass(frozen=True, eq=False)
class Addressing:
    """Where pass 1 stores every value a layer reads or writes, and the jobs in order.

    ``storages``: name -> :class:`Storage`, one per materialized value, in order, with no
    readers or writers yet.
    ``slices``: value -> ``(value or storage, first channel)`` for a value written straight
    into a channel slice of a Concat or of an Add's operand storage (possibly nested), and
    for the activation that is a Concat's only reader, which lives in the Concat's storage.
    ``operands``: Add -> its operand storage (an Add of two different values).
    ``stored_shapes``: the shape each materialized value is stored in.
    ``requant``: value -> the :class:`Into` its producer's LUT folds in (into a Concat's
    scale and through the activation that reads the Concat). ``scattered``: value -> the
    Upsample, DepthToSpace or Pad its producer writes (in place: the spread's blocks, the
    Pad's interior).
    ``inputs``/``outputs``: model value -> its storage.
    """

    storages: dict[str, Storage]
    slices: dict[str, tuple[str, int]]
    operands: dict[str, str]
    stored_shapes: dict[str, tuple[int, ...]]
    requant: dict[str, Any]
    scattered: dict[str, str]
    inputs: dict[str, str]
    outputs: dict[str, str]
    jobs: tuple[ComputeJob | JoinCopy | SpreadJob | PadJob | LutJob, ...]

    def locate(self, value):
        """``(storage, first channel)`` of materialized ``value``."""
        return locate(self.slices, value)


def locate(slices, value):
    """``(storage, first channel)`` of materialized ``value``, following ``slices`` (see
    :class:`Addressing`)."""
    channel = 0
    while value in slices:
        value, offset = slices[value]
        channel += offset
    return value, channel


# --- a layer, its stages and buffers ------------------------------------------------------

@dataclass(frozen=True)
class Axis:
    """Input geometry of a layer along one axis: segment input index ``i`` is array row (or
    column) ``off + i*step`` of the source grid; ``size`` inputs; ``pad`` as in the segments."""

    size: int
    pad: int
    off: int
    step: int


@dataclass(frozen=True)
class Buffer:
    """``size`` bytes of ACT at ``addr`` (None until pass 4 allocates it)."""

    size: int
    addr: int | None = None


@dataclass(frozen=True)
class Stage:
    """Output rows ``[first, stop)`` of a layer, run between the DMA that fills its source
    window and the DMA that stores its staging buffer.

    ``window`` / ``staging`` index the layer's :attr:`Layer.windows` / :attr:`Layer.staging`
    (None: that tensor lives in ACT). With two buffers, stages alternate between them (double
    buffering: one stage's DMA overlaps the other's RUNs).
    """

    first: int
    stop: int
    window: int | None = None
    staging: int | None = None


@dataclass(frozen=True, eq=False)
class Layer:
    """One lowered compute op in normal form (a grouped convolution, plus its fused POST).

    ``weight`` is int8 ``(groups, cout_g, cin_g, kh, kw)``, indexed by the kernel taps of the
    segments; ``transposed`` selects the transposed-convolution segments, per axis (rows,
    columns). The layer reads
    storage ``src`` (placed by ``src_grid``) and writes storage ``dst`` (``dst_grid``).
    ``chan_addr[n]`` is the byte offset of output channel ``n`` from its pixel's address
    ``pixel_addr(h, w)`` in the destination grid (a layer writing into a channel slice of a
    Concat offsets them by the slice's first channel); ``src_chan`` is the first channel of the
    source value in its storage (a value that is a slice of a Concat). Conv group ``gi`` reads
    its ``cin_g`` input channels at channels ``src_chan + gi*group_step + k*chan_step`` of the
    source (``group_step`` None: ``cin_g``, contiguous); a residual Add is a two-tap depthwise
    layer whose taps are two channels ``chan_step`` apart (its operands, side by side in one
    storage, or one value read twice with step 0).

    ``packed`` is the number of neighbouring output columns packed into one pixel of the
    layer (:mod:`.pack`; 1: none): its lanes are ``packed`` times the output channels, and
    its weights are zero on the columns a lane's own output does not read.

    ``stages``, ``windows`` and ``staging`` are empty until pass 3 plans the memory: the
    output rows cut into stages, and the ACT buffers through which the layer reads a source
    (windows) and writes a destination (staging) in external memory.
    """

    index: int
    name: str
    nodes: tuple[str, ...]
    op: str
    transposed: tuple[bool, bool]
    weight: np.ndarray
    stride: tuple[int, int]
    dilation: tuple[int, int]
    axes: tuple[Axis, Axis]
    out_hw: tuple[int, int]
    post: numerics.Post
    src: str
    src_grid: Grid
    dst: str
    dst_grid: Grid
    chan_addr: np.ndarray
    src_chan: int = 0
    group_step: int | None = None
    chan_step: int = 1
    out_off: tuple[int, int] = (0, 0)
    out_mul: tuple[int, int] = (1, 1)
    packed: int = 1
    stages: tuple[Stage, ...] = ()
    windows: tuple[Buffer, ...] = ()
    staging: tuple[Buffer, ...] = ()

    @property
    def mapped(self):
        """Whether output pixel ``(h, w)`` goes to destination pixel ``(off_h + h*mul_h,
        off_w + w*mul_w)`` (nearest upsampling, depth-to-space, a strip of a Pad) rather than
        ``(h, w)``: placed, or fewer pixels than the destination's other than one (a 1x1
        output written into a reshaped grid, whose ``chan_addr`` places each channel)."""
        return self.out_off != (0, 0) or self.out_mul != (1, 1) \
            or self.out_hw not in (self.dst_grid.shape[1:], (1, 1))

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

    def axis_segments(self, axis):
        """The :class:`~flexigan.compiler.segments.AxisSegment` s along ``axis`` (0: rows)."""
        geometry = self.axes[axis]
        kernel = self.weight.shape[3 + axis]
        cut = segments.convt_axis if self.transposed[axis] else segments.conv_axis
        return cut(geometry.size, self.out_hw[axis], kernel, self.stride[axis], geometry.pad,
                   self.dilation[axis])

    def steps_per_lane_tile(self):
        """MAC steps (cycles without zero skipping) of the whole output for one lane tile."""
        cin = self.cin_g
        return sum(r.count * c.count * max(1, r.ntaps * c.ntaps * cin)
                   for r in self.axis_segments(0) for c in self.axis_segments(1))

    def pixel_addr(self, h, w):
        """Offset of output pixel ``(h, w)`` in the destination grid (0 for a 1x1 output
        written into a reshaped grid: ``chan_addr`` places each channel)."""
        grid = self.dst_grid
        if self.mapped:
            return grid.addr(0, *self.out_pixel(h, w))
        return grid.addr(0, h, w) if grid.shape[1:] == self.out_hw else 0

    def written(self):
        """Byte offsets in the destination array of every output element, shape
        ``(H, W, C)``."""
        h, w = np.ogrid[:self.out_hw[0], :self.out_hw[1]]
        return np.broadcast_to(self.pixel_addr(h, w), self.out_hw)[..., None] + self.chan_addr

    def window_rows(self, first, stop):
        """Source-array rows ``(lo, hi)`` that output rows ``[first, stop)`` read (``lo ==
        hi``: none)."""
        lo, hi = math.inf, -math.inf
        geometry = self.axes[0]
        for segment in self.axis_segments(0):
            segment = segment.clip(first, stop)
            if segment is None or not segment.ntaps:
                continue
            ends = [segment.in0 + m * segment.in_step + j * segment.tap_step
                    for m in (0, segment.count - 1) for j in (0, segment.ntaps - 1)]
            lo, hi = min(lo, min(ends)), max(hi, max(ends))
        if lo > hi:
            return 0, 0
        return geometry.off + lo * geometry.step, geometry.off + hi * geometry.step + 1

    def staging_rows(self, first, stop):
        """Destination-array rows ``(lo, hi)`` written by output rows ``[first, stop)``: whole
        rows of the grid from the first written one, so every stage of a buffer has the same
        pattern of written bytes (and the zeros between them stay zero)."""
        grid = self.dst_grid
        if self.mapped:
            return (grid.row(self.out_pixel(first, 0)[0]),
                    min(grid.rows, grid.row(self.out_pixel(stop, 0)[0])))
        if grid.shape[1:] != self.out_hw:
            return 0, grid.rows
        return grid.row(first), min(grid.rows, grid.row(stop))

    def window(self, stage):
        """The :class:`Buffer` holding ``stage``'s source rows, or None (source in ACT)."""
        return None if stage.window is None else self.windows[stage.window]

    def staging_buffer(self, stage):
        """The :class:`Buffer` holding ``stage``'s destination rows, or None (in ACT)."""
        return None if stage.staging is None else self.staging[stage.staging]


# --- storages and the plan ----------------------------------------------------------------

@dataclass(frozen=True)
class Storage:
    """One materialized tensor: its grid, which layers write and read it, where it lives.

    ``home`` is "act" (the scratchpad, at ``act_addr`` once allocated) or "dram" (external
    memory: a model input or output, or a spilled tensor). ``writers``/``readers`` are layer
    indices in order; a model input has no writer. ``view`` places the model's value in the
    array when the array is wider than the value (a model output whose packed writer also
    writes margin columns, :mod:`.pack`); None: ``grid`` places it.
    """

    name: str
    grid: Grid
    output: bool = False
    home: str = "act"
    writers: tuple[int, ...] = ()
    readers: tuple[int, ...] = ()
    act_addr: int | None = None
    view: Grid | None = None

    @property
    def value_grid(self):
        """The :class:`~flexigan.compiler.grid.Grid` of the model's value in the array."""
        return self.grid if self.view is None else self.view

    @property
    def size(self):
        return self.grid.size

    @property
    def producer(self):
        """The first layer writing the storage; None for a model input."""
        return self.writers[0] if self.writers else None

    def last_use(self):
        return max(self.readers + self.writers, default=self.producer)


@dataclass(frozen=True, eq=False)
class Plan:
    """Everything :mod:`flexigan.compiler.lower` needs: layers in order, storages, the model's
    input and output values with their storages, and the ACT bytes of the target."""

    layers: tuple[Layer, ...]
    storages: tuple[Storage, ...]
    inputs: dict[str, str]
    outputs: dict[str, str]
    act_bytes: int

    @functools.cached_property
    def _by_name(self):
        return {s.name: s for s in self.storages}

    def storage(self, name):
        """The :class:`Storage` called ``name``."""
        return self._by_name[name]
