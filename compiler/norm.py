"""The code of an InstanceNorm layer (op "Norm", :func:`~.plan.layers.build`): per channel
its statistics, its PARAM entry and its normalizing pass, on the accelerator (docs/isa.md,
"InstanceNorm").

Channel ``c`` of a round runs on group ``c mod G`` with three PARAM entries of its own (its
sums, then its constants), in two sweeps over the layer's stages (the row bands that its
windows and staging buffers hold when the tensors live in external memory):

1. per stage, a RUN summing the channel's positions in the band and one summing their squares,
   each adding to what the previous band saved (NORM SAVE; the first band starts from 0);
2. one NORM FINISH per channel: the sums and constants become the channel's PARAM entry;
3. per stage, the normalizing RUN of the band: ``NORM_WEIGHT * x + bias``, requantized, through
   the fused activation's LUT, written as any layer writes.

The channels take turns over the groups, round robin, so that every group works. When a
group's channels need more entries than half its PARAM memory, they go in rounds, each
reading the input again. The weights ``(NORM_WEIGHT, 1)`` and the LUT load once.
"""

from __future__ import annotations

from ..errors import FitError, UnsupportedError
from ..hw.arch import isa
from ..hw.arch.numerics import NORM_WEIGHT
from ..hw.arch.timing import NORM_FINISH_CYCLES, RUN_LATENCY
from . import asm
from .memories import instruction

__all__ = ["ENTRIES", "emit", "mac_steps"]

#: PARAM entries per channel: the sum, the sum of squares, the constants.
ENTRIES = 3
#: Most rows (and columns) one RUN covers (its ``rows`` and ``cols`` registers).
RUN_ROWS = (1 << 12) - 1


def _uop(op, **operands):
    return asm.encode("uop", op, **operands)


def _sums_program(rows, cols, strides, square, first):
    """A statistics RUN over ``rows x cols`` positions ``strides`` apart: CLEAR (from the
    saved sum unless ``first``), MAC (``square``: of the squares), NORM SAVE."""
    ops = [_uop("LOOP", level=level, count=count, act_stride=stride, wgt_stride=0)
           for level, (count, stride) in enumerate(zip((rows, cols), strides)) if count > 1]
    ops += [_uop("WGT", base=0, lane_stride=1), _uop("CLEAR", use_bias=int(not first)),
            _uop("MAC", square=int(square)), _uop("NORM", step=isa.NormStep.SAVE)]
    return b"".join(ops)


def _normalize_program(act, write, use_lut):
    """The normalizing RUN's micro-program: ACT and WRITE strides ``(row, column)``."""
    return b"".join([
        _uop("ACT", row_stride=act[0], col_stride=act[1]), _uop("WGT", base=0, lane_stride=1),
        _uop("CLEAR", use_bias=1), _uop("MAC"), _uop("POST", use_lut=int(use_lut), lut=0),
        _uop("WRITE", row_stride=write[0], col_stride=write[1], lane_stride=1)])


def _check(layer, config, memories):
    """Slots per group per round; errors for what the machine cannot run."""
    post = layer.post
    if post.lut is not None and post.lut.shape[0] > 1:
        raise UnsupportedError(f"{layer.name}: InstanceNorm with a per-channel table")
    if layer.out_hw[1] > RUN_ROWS:
        raise FitError(f"{layer.name}: InstanceNorm over rows of {layer.out_hw[1]} pixels "
                       f"(a RUN covers at most {RUN_ROWS})")
    slots = memories.half_params // ENTRIES
    if slots == 0:
        raise FitError(f"{layer.name}: InstanceNorm needs {ENTRIES} PARAM entries per channel; "
                       f"half of the target's PARAM memory holds {memories.half_params}")
    return slots


class _Emitter:
    """The instructions of one Norm layer, appended to the lowering's code."""

    def __init__(self, lowering, layer):
        self.lowering, self.layer = lowering, layer
        self.config, self.memories = lowering.config, lowering.memories
        self.code = lowering.code
        self.half = 1 - self.memories.groups[0].last
        self.wgt_base = self.half * self.memories.half_bytes
        self.param_base = self.half * self.memories.half_params
        self.lut_offset = self.half * self.config.lanes
        self.slots = _check(layer, self.config, self.memories)

    def run(self, g, program, **operands):
        """A one-lane RUN of ``program`` on group ``g``."""
        uop_addr = self.memories.load_uops(g, program, self.code)
        self.code.append(instruction(
            "RUN", group_mask=1 << g, uop_addr=uop_addr,
            uop_count=len(program) // isa.UOP_BYTES, lanes=1,
            lut_offset=self.lut_offset,
            **{"rows": 1, "cols": 1, "act_offset": 0, "wgt_offset": self.wgt_base,
               "out_offset": 0, **operands}))

    def constants(self):
        """The weights (NORM_WEIGHT, then 1 for the sums) and the LUT, into every group."""
        mask = (1 << self.config.groups) - 1
        image = self.lowering.image
        self.code.append(instruction(
            "DMA_LOAD", space=isa.Space.WGT, group_mask=mask, length=2,
            ext_addr=image.put("constants", bytes([NORM_WEIGHT, 1])),
            local_addr=self.wgt_base))
        lut = self.layer.post.lut_bytes([0])
        if lut:
            self.code.append(instruction(
                "DMA_LOAD", space=isa.Space.LUT, group_mask=mask, length=len(lut),
                ext_addr=image.put("constants", lut), local_addr=self.lut_offset))
        return lut

    def rounds(self):
        """``[[(g, slot, channel)]]``: the channels of each round, in turn over the groups."""
        groups = self.config.groups
        per_round = self.slots * groups
        channels = range(self.layer.cout)
        return [[((c - start) % groups, (c - start) // groups, c)
                 for c in channels[start:start + per_round]]
                for start in range(0, len(channels), per_round)]

    def source(self, src_at, c, row):
        """ACT address of channel ``c``'s pixel ``(row, 0)`` of the layer's input."""
        layer = self.layer
        grid, (rows, cols) = layer.src_grid, layer.axes
        array_row = rows.off + row * rows.step - src_at.first_row
        return src_at.base + (array_row * grid.cols + cols.off) * grid.channels \
            + layer.src_chan + c * layer.group_chans

    def sweep_sums(self, members, frame):
        layer = self.layer
        grid, (rows, cols) = layer.src_grid, layer.axes
        strides = (rows.step * grid.row_bytes, cols.step * grid.channels)
        for k, stage in enumerate(layer.stages):
            before, _, src_at, _ = self.lowering.stage_dma(layer, stage, frame)
            self.code.extend(before)
            band = stage.stop - stage.first
            for square in (False, True):
                program = _sums_program(band, layer.out_hw[1], strides, square, k == 0)
                for g, slot, c in members:
                    self.run(g, program, act_offset=self.source(src_at, c, stage.first),
                             wgt_offset=self.wgt_base + (0 if square else 1),
                             param_offset=self.param_base + ENTRIES * slot + int(square))

    def finish(self, members):
        program = _uop("NORM", step=isa.NormStep.FINISH, count=self.layer.post.count,
                       eps=self.layer.post.norm.eps)
        for g, slot, _ in members:
            self.run(g, program, param_offset=self.param_base + ENTRIES * slot)

    def sweep_normalize(self, members, frame, use_lut, again):
        """The normalizing RUNs, band by band; ``again``: an earlier round wrote the other
        channels of the bands, so a band staged in ACT is read back before it is completed."""
        layer = self.layer
        src, dst, (rows, cols) = layer.src_grid, layer.dst_grid, layer.axes
        mul_h, mul_w = layer.out_mul
        program = _normalize_program(
            (rows.step * src.row_bytes, cols.step * src.channels),
            (mul_h * dst.step_h * dst.row_bytes, mul_w * dst.step_w * dst.channels), use_lut)
        for stage in layer.stages:
            before, after, src_at, dst_at = self.lowering.stage_dma(layer, stage, frame)
            self.code.extend(before)
            staged = layer.staging_buffer(stage) is not None
            if again and staged and len(self.lowering.plan.storage(layer.dst).writers) == 1:
                rows = layer.staging_rows(stage.first, stage.stop)
                self.code.append(self.lowering.rows_dma(
                    "DMA_LOAD", self.lowering.plan.storage(layer.dst), dst_at.base, rows,
                    frame))
            for first in range(stage.first, stage.stop, RUN_ROWS):
                count = min(RUN_ROWS, stage.stop - first)
                for g, slot, c in members:
                    out = dst_at.base + layer.pixel_addr(first, 0) \
                        - dst_at.first_row * dst.row_bytes + int(layer.chan_addr[c])
                    self.run(g, program, rows=count, cols=layer.out_hw[1],
                             act_offset=self.source(src_at, c, first), out_offset=out,
                             param_offset=self.param_base + ENTRIES * slot)
            self.code.extend(after)

    def load_params(self, members):
        parts = {}
        for g, _, c in members:
            parts[g] = parts.get(g, b"") + self.layer.post.param_bytes([c])
        self.code.extend(self.memories.scatter(
            "DMA_LOAD", isa.Space.PARAM, sorted(parts.items()), self.param_base,
            self.memories.half_params * isa.PARAM_BYTES))

    def forget(self, lut):
        """What the lowering knows of the groups' constants: only this layer's."""
        for group in self.memories.groups:
            group.halves, group.whole, group.params = [{}, {}], None, {}
            group.luts = [None, None]
            group.luts[self.half] = lut or None
            group.last = self.half
        self.memories.params_read = frozenset({self.half})
        self.memories.shared_half = self.half


def emit(lowering, layer):
    """Append the code of Norm ``layer`` to ``lowering.code`` (a
    :class:`~.lower._Lowering`), every frame of its batch; return the constant loads it made
    (one per round and frame)."""
    emitter = _Emitter(lowering, layer)
    emitter.code.extend(lowering.clears(layer))
    lut = emitter.constants()
    rounds = emitter.rounds()
    for frame in range(lowering.batch):
        for k, members in enumerate(rounds):
            emitter.load_params(members)
            emitter.sweep_sums(members, frame)
            emitter.finish(members)
            emitter.sweep_normalize(members, frame, bool(lut), k > 0)
    emitter.forget(lut)
    lowering.emit("BARRIER", group_mask=lowering.all_groups)
    return len(rounds) * lowering.batch


def mac_steps(layer, groups, batch):
    """Per group, the cycles (without zero skipping) of a Norm layer's RUNs, as the schedule
    counts MAC steps: each channel's positions three times, its FINISH and the RUNs'
    overheads."""
    positions = layer.out_hw[0] * layer.out_hw[1]
    per_channel = 3 * positions + NORM_FINISH_CYCLES \
        + (2 * len(layer.stages) + 1 + len(layer.stages)) * RUN_LATENCY
    steps = [0] * groups
    for c in range(layer.cout):
        steps[c % groups] += per_channel * batch
    return steps
