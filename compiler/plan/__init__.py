"""The layer and memory plan: what the back end lowers, and where every tensor lives.

:func:`plan` turns a quantized IR graph into :class:`~.types.Layer` s (a Conv, ConvTranspose,
Gemm or residual Add with its fused activation, in one normal form: a grouped convolution whose
taps the segments of :mod:`flexigan.compiler.segments` enumerate; an Add is a two-tap depthwise
one, see docs/numerics.md) and :class:`~.types.Storage` s (one per materialized tensor, with the
:class:`~flexigan.compiler.grid.Grid` that places it in HWC order). Channel Concat and the pair
of an Add's operands are addressing: the producers write their channel slices of one storage.
So are nearest Upsample and DepthToSpace: a Conv or ConvTranspose read only by one writes its
output in place, the other blocks of an upsampling are exact 1x1 identity copies ("Copy"
layers) from the first, and an input of another producer is copied in the same way. Layout ops
cost nothing: a Reshape aliases its operand's storage (a Gemm reading a flattened image reads
the image with its columns permuted at compile time; a Gemm whose output is reshaped to an
image writes it in HWC order), and a fused activation is a LUT in the producer's POST. A Pad
is a storage its input's producer writes the interior of, as a spread's block, and whose border
copies (reflect, edge) or fills (constant) write; an activation that cannot be fused is a
LUT pass, a Copy through its table.

The plan is four pure passes over the frozen records of :mod:`.types`, with :func:`check`
after each that makes a plan:

1. :func:`.storages.assign`: which values are stored, where the others live, the jobs in
   order (graph -> :class:`~.types.Addressing`);
2. :func:`.layers.build`: each job's layers in normal form, each storage's writers and readers
   (-> :class:`~.types.Plan`); then :func:`.pack.columns`: a layer with few output channels
   packs neighbouring output columns into its lanes;
3. :func:`.memory.stage`: homes (ACT, or external memory for model inputs, outputs and spills)
   and the stages of each layer, with its window and staging buffers;
4. :func:`.memory.allocate`: the ACT address of every tensor and buffer (when first fit
   cannot place a layer's, :func:`.memory.spill_at` spills a tensor live there and pass 3
   runs again).

``reorder=False`` plans the conventional baseline instead: every Conv and ConvTranspose reads a
padded (and, for ConvTranspose, zero-inserted) copy of its input, laid out so by its producer or
by the input region, with one segment of all taps, so padding and inserted zeros are MAC steps.
"""

from __future__ import annotations

from ...errors import FitError
from . import layers, memory, pack, storages
from .check import check
from .memory import ALIGN, align
from .types import Axis, Buffer, Layer, Plan, Stage, Storage

__all__ = ["plan", "frame_act_bytes", "check", "Plan", "Layer", "Axis", "Stage", "Buffer",
           "Storage", "ALIGN", "align"]


def frame_act_bytes(config, batch):
    """ACT bytes of one frame of a ``batch``-frame program: frame ``f`` of the batch has its
    own aligned slice of the scratchpad, from ``f`` times this, with the same layout as every
    other frame's (so its RUNs differ from frame 0's only by their ACT offsets)."""
    return config.act_bytes // batch // ALIGN * ALIGN


def plan(graph, config, reorder=True, batch=1):
    """The :class:`~.types.Plan` of a quantized IR graph on ``config``, for one frame of a
    ``batch``-frame program (its ACT slice, :func:`frame_act_bytes`).

    Raises
    ------
    UnsupportedError
        listing every node that cannot be lowered, all at once.
    FitError
        when a layer's tensors cannot fit the activation scratchpad.
    """
    where = storages.assign(graph, reorder)
    act_bytes = frame_act_bytes(config, batch)
    p = check(layers.build(graph, where, act_bytes, config.lanes, reorder))
    if reorder:
        p = check(pack.columns(p, config.lanes))
    try:
        while True:
            staged = check(memory.stage(p))
            try:
                return check(memory.allocate(staged))
            except memory.Fragmented as exc:
                p = memory.spill_at(staged, exc)
    except FitError as exc:
        if batch == 1:
            raise
        raise FitError(f"{exc}: at --batch {batch} each frame has {act_bytes} of the target's "
                       f"{config.act_bytes} bytes of activation memory") from None
