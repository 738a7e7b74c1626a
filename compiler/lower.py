"""The back end: a quantized IR graph -> a two-level program and its memory image.

:func:`lower` takes the :mod:`~flexigan.compiler.plan` of the graph (layers in normal form,
where every tensor lives, how each layer is cut into stages) and, layer by layer, stage by
stage:

* cuts the layer's output into zero-free 2-D segments (:mod:`~flexigan.compiler.segments`),
  one micro-program each (docs/isa.md);
* tiles output channels over the lanes and forms *work units* (a phase's segments for one lane
  tile, or one segment when a phase's weights exceed half a weight buffer), split into row
  bands when there are fewer units than twice the groups;
* balances the units over the groups by MAC steps (greedy longest-processing-time,
  :mod:`~flexigan.compiler.schedule`), so groups run different micro-programs when the phases
  differ (MIMD);
* emits, per unit, the DMA of its constant tile (weights, PARAM entries, LUTs) into the group's
  free weight-buffer half (double buffering) and one RUN per segment: the tiles of a cluster
  of groups in one DMA per memory, a stage's PARAM entries in tables and its shared LUT once
  (:mod:`~flexigan.compiler.memories`); windows and staging DMA for tensors in external
  memory; a BARRIER closes each layer. The groups' instructions are merged round robin, one
  RUN per group per round (:func:`~.schedule.merge_units`): a group holds few RUNs and the
  controller waits for a free slot, so a group's RUNs back to back would block the others.

The memory image and layout are a :class:`~flexigan.compiler.program.Program`. Everything is
deterministic: the same graph and config give the same bytes.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, replace

import numpy as np

from ..errors import FitError
from ..hw.arch import isa
from ..hw.arch.config import RUN_SLOTS
from ..hw.arch.timing import LOAD_SETUP, RUN_LATENCY
from . import asm, ir, macs, norm
from .memories import Memories, instruction
from .plan import align, plan
from .program import ImageBuilder, Program
from .schedule import (
    MIN_TILES_PER_GROUP,
    MIN_UNITS_PER_GROUP,
    balance,
    coalesce_loads,
    cut_pieces,
    merge_units,
)

__all__ = ["lower"]


@dataclass(frozen=True)
class _Tile:
    """The constants of one work unit: for each of its lane tiles (``parts``, runs of output
    channels of one conv group) a block of weights ``[tap row][tap col][cin][lane]`` for taps
    ``rows x cols``, the blocks one after the other, their PARAM entries one after the other,
    and the LUTs (one shared table, or a table per lane of a unit of one lane tile). Loaded
    with one DMA per memory, so a group fetches many small lane tiles at the cost of one."""

    key: tuple
    parts: tuple[tuple[int, int, int], ...]    # per lane tile: (lanes, weight byte, PARAM entry)
    first_row: int      # first tap (index in the phase's taps) of the blocks, per axis
    first_col: int
    tap_cols: int       # tap columns in a block
    weights: bytes
    params: bytes
    lut: bytes


@dataclass(frozen=True)
class _Run:
    program: bytes
    operands: dict
    steps: int          # MAC steps (cycles without zero skipping)
    wgt_base: int = 0   # bytes of its weight address in its WGT micro-op instead of the RUN


@dataclass(frozen=True)
class _Unit:
    """A tile and the RUNs that use it: what one group does in one go."""

    tile: _Tile
    runs: tuple[_Run, ...]

    @property
    def cost(self):
        return sum(r.steps + RUN_LATENCY for r in self.runs)


@dataclass(frozen=True)
class _InAct:
    """Where a stage finds a tensor in ACT: row ``first_row`` of its array at ``base`` (the
    storage itself, or a window or staging buffer holding some of its rows)."""

    base: int
    first_row: int


@dataclass(frozen=True)
class _LayerStats:
    """Figures of one layer for the schedule in the program's layout."""

    stages: int
    per_segment_tiles: bool
    lanes_per_tile: int
    units: int
    runs: int
    mac_steps: list[int]


@dataclass(frozen=True)
class _PreparedStage:
    """One stage of a layer: DMA ``before`` it, the work units queued per group, DMA
    ``after``. ``broadcast``: the groups' units run in lockstep, each RUN instruction
    starting the same RUN on every group (:meth:`_Lowering.broadcast_code`), each group's
    tiles loaded into its own memories at the same places by scatter DMAs."""

    before: list
    queues: list[list[_Unit]]
    after: list
    broadcast: bool = False


def _uop(op, **operands):
    return asm.encode("uop", op, **operands)


def _program(taps, loops, act, post, write, write_base=0, wgt_base=0):
    """Bytes of a segment's micro-program; LOOP levels of count 1 are left out."""
    ops = []
    if taps:
        for level, (count, act_stride, wgt_stride) in enumerate(loops):
            if count > 1:
                ops.append(_uop("LOOP", level=level, count=count, act_stride=act_stride,
                                wgt_stride=wgt_stride))
        ops += [_uop("ACT", row_stride=act[0], col_stride=act[1]),
                _uop("WGT", base=wgt_base, lane_stride=1)]
    ops.append(_uop("CLEAR", use_bias=1))
    if taps:
        ops.append(_uop("MAC"))
    ops += [_uop("POST", **post), _uop("WRITE", base=write_base, row_stride=write[0],
                                       col_stride=write[1], lane_stride=1)]
    return b"".join(ops)


class _Lowering:
    """Emits the global program for a plan, tracking each group's memories.

    :meth:`prepare` turns a layer into stages of work units queued per group (no
    instructions yet); :meth:`emit_layer` appends its instructions to :attr:`code`, loading
    tiles and micro-programs into each group only when they are not there already.
    """

    def __init__(self, p, config, batch=1):
        self.plan, self.config, self.batch = p, config, batch
        self.image = ImageBuilder()
        self.code = []
        self.memories = Memories(config, self.image)
        self.all_groups = (1 << config.groups) - 1
        self.zero_bytes = 0
        self.dram = {}
        for s in p.storages:
            if s.home == "dram":
                region = "inputs" if s.producer is None else \
                    "outputs" if s.output else "spills"
                # One copy per frame of the batch, frame_bytes(s) apart.
                self.dram[s.name] = self.image.reserve(region, batch * self.frame_bytes(s))

    def emit(self, op, **operands):
        self.code.append(instruction(op, **operands))

    @staticmethod
    def frame_bytes(storage):
        """Bytes from one frame's copy of ``storage`` in external memory to the next's."""
        return align(storage.size)

    def _dram(self, storage, offset, frame):
        region, base = self.dram[storage.name]
        return (region, base + frame * self.frame_bytes(storage) + offset)

    def _clear(self, addr, size):
        """DMA zeroing ``size`` bytes of ACT from the image's zero region (padding and
        inserted zeros of the conventional baseline)."""
        self.zero_bytes = max(self.zero_bytes, size)
        return instruction("DMA_LOAD", space=isa.Space.ACT, ext_addr=("zeros", 0),
                            local_addr=addr, length=size)

    def rows_dma(self, op, storage, addr, rows, frame):
        """``op`` (DMA_LOAD or DMA_STORE) of array ``rows = (lo, hi)`` of frame ``frame``'s
        copy of ``storage`` between its external memory and ACT address ``addr``."""
        row_bytes = storage.grid.row_bytes
        return instruction(op, space=isa.Space.ACT, local_addr=addr,
                            ext_addr=self._dram(storage, rows[0] * row_bytes, frame),
                            length=(rows[1] - rows[0]) * row_bytes)

    # --- one layer ---------------------------------------------------------------------------

    def clears(self, layer):
        """DMA zeroing the gaps of a gapped destination before the layer writes it, in every
        frame's ACT slice: the whole storage in ACT (by its first writer), or each staging
        buffer (a Concat's storage in external memory, with several writers, is read back and
        completed instead)."""
        dst = self.plan.storage(layer.dst)
        if not dst.grid.gapped:
            return []
        if dst.home == "act":
            spans = [(dst.act_addr, dst.size)] if layer.index == dst.producer else []
        elif len(dst.writers) > 1:
            spans = []
        else:
            rows = max(hi - lo for lo, hi in (layer.staging_rows(s.first, s.stop)
                                              for s in layer.stages))
            spans = [(buffer.addr, rows * dst.grid.row_bytes) for buffer in layer.staging]
        return [self._clear(frame * self.plan.act_bytes + addr, size)
                for frame in range(self.batch) for addr, size in spans]

    def stage_dma(self, layer, stage, frame):
        """``(before, after, src, dst)`` of ``stage`` in frame ``frame`` of the batch: the DMA
        that fills its window (and, for a destination several layers write, loads its staging
        buffer), the DMA that stores its staging buffer, and where it finds its source and
        destination in ACT (in the frame's slice, :func:`~.plan.frame_act_bytes`)."""
        src, dst = self.plan.storage(layer.src), self.plan.storage(layer.dst)
        slice_at = frame * self.plan.act_bytes
        before, after = [], []
        # A tensor in external memory has no ACT address: its window or staging buffer's.
        src_at = _InAct(None if src.act_addr is None else slice_at + src.act_addr, 0)
        dst_at = _InAct(None if dst.act_addr is None else slice_at + dst.act_addr, 0)
        window = layer.window(stage)
        if window is not None:
            rows = layer.window_rows(stage.first, stage.stop)
            src_at = _InAct(slice_at + window.addr, rows[0])
            if rows[1] > rows[0]:
                before.append(self.rows_dma("DMA_LOAD", src, src_at.base, rows, frame))
        staging = layer.staging_buffer(stage)
        if staging is not None:
            rows = layer.staging_rows(stage.first, stage.stop)
            dst_at = _InAct(slice_at + staging.addr, rows[0])
            if len(dst.writers) > 1:
                before.append(self.rows_dma("DMA_LOAD", dst, dst_at.base, rows, frame))
            after.append(self.rows_dma("DMA_STORE", dst, dst_at.base, rows, frame))
        return before, after, src_at, dst_at

    def prepare(self, layer):
        """``(stages, stats)``: the layer's :class:`_PreparedStage` s, with the work units of
        each balanced over the groups, and its statistics. A layer that can run as broadcast
        RUNs does so unless running its units on their own is quicker (:meth:`_cycles`)."""
        if layer.op == "Norm":
            # Its own code (compiler/norm.py): nothing for the layer before it to preload.
            steps = norm.mac_steps(layer, self.config.groups, self.batch)
            return [], _LayerStats(len(layer.stages), False, 1, layer.cout,
                                   layer.cout * 4 * len(layer.stages), steps)
        row_segments, col_segments = layer.axis_segments(0), layer.axis_segments(1)
        row_phases = {s.phase: s.phase_taps for s in row_segments}
        col_phases = {s.phase: s.phase_taps for s in col_segments}
        per_segment, lanes = self._tiling(layer, row_segments, col_segments, row_phases,
                                          col_phases)
        blocks = len(row_segments) * len(col_segments) if per_segment \
            else len(row_phases) * len(col_phases)
        lane_tiles = self._lane_tiles(layer, lanes)
        units = self._prepare_units(layer, row_segments, col_segments, per_segment, lanes,
                                    blocks, lane_tiles)
        if not per_segment and self._broadcastable(layer, lane_tiles, row_segments,
                                                   col_segments):
            broadcast = self._prepare_broadcast(layer, lane_tiles, row_segments[0],
                                                col_segments[0], lanes)
            return min(broadcast, units, key=self._cycles)
        return units

    def _prepare_units(self, layer, row_segments, col_segments, per_segment, lanes, blocks,
                       lane_tiles):
        """:meth:`prepare` of a layer of work units, each group running its own RUNs."""
        groups = self.config.groups
        row_phases = {s.phase: s.phase_taps for s in row_segments}
        col_phases = {s.phase: s.phase_taps for s in col_segments}
        tiles = self._unit_tiles(layer, lane_tiles, blocks, per_segment, row_phases,
                                 col_phases)
        unit_count = len(tiles) * blocks
        stages = []
        pending = self.clears(layer)
        units_total, runs_total, mac_steps = 0, 0, [0] * groups
        for stage in layer.stages:
            # The frames of a batch spread over the groups as well as the pieces.
            pieces = cut_pieces(stage.stop - stage.first, layer.out_hw[1],
                                unit_count * self.batch, groups)
            before, after, frames = [], [], []
            for frame in range(self.batch):
                frame_before, frame_after, src_at, dst_at = self.stage_dma(layer, stage, frame)
                before += frame_before
                after += frame_after
                frames.append([unit for r0, r1, c0, c1 in pieces for unit in self._units(
                    layer, row_segments, col_segments,
                    (stage.first + r0, stage.first + r1, c0, c1), tiles, per_segment, src_at,
                    dst_at)])
            units = _batched(frames, groups)
            queues = balance(units, groups, same=lambda unit: unit.tile.key)
            units_total += len(units)
            runs_total += sum(len(u.runs) for u in units)
            for g, queue in enumerate(queues):
                mac_steps[g] += sum(r.steps for u in queue for r in u.runs)
            stages.append(_PreparedStage(pending + before, queues, after))
            pending = []
        stats = _LayerStats(len(layer.stages), per_segment, lanes, units_total, runs_total,
                            mac_steps)
        return stages, stats

    def _cycles(self, prepared):
        """Estimated cycles of a prepared layer ``(stages, stats)``: its busiest group's MAC
        steps, or the time the AXI read port takes to load its tiles and fetch its RUNs if
        longer: the tiles' bytes, each DMA's memory latency and setup (see below), and
        each RUN
        instruction's share of a fetch (a broadcast RUN starts every group's)."""
        stages, stats = prepared
        config = self.config
        dma = config.mem_latency + LOAD_SETUP
        fetch = (config.mem_latency + config.fetch_insns * isa.GLOBAL_BYTES / config.axi_bytes) \
            / config.fetch_insns
        cycles = 0.0
        for stage in stages:
            runs = [sum(len(unit.runs) for unit in queue) for queue in stage.queues]
            # Weights per unit of a cluster of groups; PARAM entries in one table or per
            # unit; a broadcast stage's PARAM tables and micro-programs, a scatter DMA each.
            tiles = {unit.tile.key: unit.tile for queue in stage.queues for unit in queue}
            loads = sum(max(len(stage.queues[g]) for g in cluster)
                        for cluster in self._clusters(stage))
            if stage.broadcast:
                loads += 2
                instructions = max(runs)
            else:
                together = sum(len(tile.params) for tile in tiles.values()) \
                    <= self.memories.half_params * isa.PARAM_BYTES
                loads += 1 if together else min(loads, config.groups)
                instructions = sum(runs)
            cycles += loads * dma + instructions * fetch + sum(
                len(tile.weights) + len(tile.params) for tile in tiles.values()) / config.axi_bytes
        return max(max(stats.mac_steps), cycles)

    def _broadcastable(self, layer, lane_tiles, row_segments, col_segments):
        """Whether the lane tiles of ``layer`` (a 1x1 output: a Gemm) run as broadcast RUNs:
        one stage, one segment, one conv group, no per-lane LUT, at least two rounds of a lane
        tile per group, a lane tile's weights within half the weight buffer (a scatter load
        fills one half), and lane tile ``j*G + g`` written at a fixed offset ``shift(g)`` from
        lane tile ``j*G`` (so each group's micro-program holds its offset in WRITE.base)."""
        groups = self.config.groups
        lut = layer.post.lut
        if layer.out_hw != (1, 1) or layer.groups != 1 or len(layer.stages) != 1 or \
                len(row_segments) != 1 or len(col_segments) != 1 or \
                len(lane_tiles) < MIN_UNITS_PER_GROUP * groups or \
                (lut is not None and lut.shape[0] > 1):
            return False
        lanes = max(len(channels) for _, channels in lane_tiles)
        taps = max(1, row_segments[0].ntaps * col_segments[0].ntaps)
        if taps * layer.cin_g * lanes > self.memories.half_bytes:
            return False
        first = [int(layer.chan_addr[channels[0]]) for _, channels in lane_tiles]
        return all(first[j + g] - first[j] == first[g] - first[0]
                   for j in range(0, len(first), groups) for g in range(groups)
                   if j + g < len(first))

    def _prepare_broadcast(self, layer, lane_tiles, row_segment, col_segment, lanes):
        """``(stages, stats)`` of a layer of broadcast RUNs: lane tile ``j*G + g`` is group
        ``g``'s in round ``j``; a group's unit holds the lane tiles of consecutive rounds that
        fit half its weight buffer and PARAM entries, at the same offsets in every group."""
        groups = self.config.groups
        stage = layer.stages[0]
        before, after, places = [], [], []
        for frame in range(self.batch):
            frame_before, frame_after, src_at, dst_at = self.stage_dma(layer, stage, frame)
            before += frame_before
            after += frame_after
            places.append((src_at, dst_at))
        rounds = -(-len(lane_tiles) // groups)
        block = max(1, row_segment.ntaps * col_segment.ntaps) * layer.cin_g * lanes
        fit = max(1, min(self.memories.half_bytes // block, self.memories.half_params // lanes))
        per_unit = self._broadcast_per_unit(
            rounds, max(1, min(fit, -(-rounds // MIN_UNITS_PER_GROUP))), block)
        first = [int(layer.chan_addr[channels[0]]) for _, channels in lane_tiles]
        queues = []
        for g in range(groups):
            mine = [lane_tiles[j * groups + g][1] for j in range(rounds)
                    if j * groups + g < len(lane_tiles)]
            units = []
            for start in range(0, len(mine), per_unit):
                chunk = mine[start:start + per_unit]
                tile = self._tile(layer, 0, chunk, row_segment.phase_taps,
                                  col_segment.phase_taps, 0, 0)
                runs = tuple(self._run(layer, row_segment, col_segment, tile, part, 0, channels,
                                       src_at, dst_at, write_base=first[g] - first[0])
                             for src_at, dst_at in places
                             for part, channels in zip(tile.parts, chunk))
                units.append(_Unit(tile, runs))
            queues.append(units)
        mac_steps = [sum(r.steps for u in queue for r in u.runs) for queue in queues]
        stats = _LayerStats(1, False, lanes, sum(map(len, queues)),
                            sum(len(u.runs) for queue in queues for u in queue), mac_steps)
        pending = self.clears(layer)
        return [_PreparedStage(pending + before, queues, after, broadcast=True)], stats

    def _broadcast_per_unit(self, rounds, most, block):
        """Lane tiles per unit (at most ``most``) of a broadcast layer of ``rounds`` rounds of
        ``block``-byte lane tiles: the count that least exposes the loads. The next unit's
        loads (every group's tiles in one scatter DMA) issue once this unit's last RUN has a
        slot, so they overlap only the RUN_SLOTS RUNs still queued (its RUNs are its lane
        tiles times the frames); larger units pay the memory latency fewer times. Ties to the
        larger unit (fewer loads)."""
        config = self.config
        steps = block // config.lanes + RUN_LATENCY

        def exposed(per_unit):
            load = config.mem_latency + LOAD_SETUP \
                + config.groups * per_unit * block / config.axi_bytes
            hidden = min(RUN_SLOTS, per_unit * self.batch) * steps
            return -(-rounds // per_unit) * max(0.0, load - hidden)

        return min(range(most, 0, -1), key=exposed)

    def broadcast_code(self, stage):
        """The instructions of a broadcast stage: each group's micro-program (its WRITE.base
        places its lane tile) at one address in every group, then per unit index the groups'
        tile loads (into the same half of each) and one RUN per round for all of them."""
        code = self._broadcast_uops(stage.queues)
        read = set()        # the halves of the PARAM entries its RUNs read
        for group in self.memories.groups:
            group.last = 1
        for u in range(max(map(len, stage.queues))):
            placed = {}
            for cluster in self._clusters(stage):
                members = self._members(stage, cluster, u)
                if members:
                    placed |= self.memories.load_tiles(members, code, scatter=True)
            for g, place in placed.items():
                self.memories.groups[g].last = place.half
                read.add(place.param_base // self.memories.half_params)
            for r in range(max(len(stage.queues[g][u].runs) for g in placed)):
                masks = {}
                for g, place in placed.items():
                    runs = stage.queues[g][u].runs
                    if r < len(runs):
                        key = tuple(sorted(self._run_operands(g, runs[r], place).items()))
                        masks[key] = masks.get(key, 0) | 1 << g
                code += [instruction("RUN", group_mask=mask, **dict(key))
                         for key, mask in masks.items()]
        self.memories.params_read = frozenset(read)
        return code

    def _broadcast_uops(self, queues):
        """UOP_LOAD of each group's micro-programs (in first-use order, the same sizes in
        every group) at one address in all groups."""
        programs = [list(dict.fromkeys(r.program for u in queue for r in u.runs))
                    for queue in queues]
        # Each group's programs from one place, aligned to the bus word and padded to whole
        # words, so that one scatter DMA loads them all (Memories.scatter).
        word = max(1, self.config.axi_bytes // isa.UOP_BYTES)

        def whole_words(uops):
            return -(-uops // word) * word

        words = whole_words(max(sum(len(p) for p in mine) for mine in programs)
                            // isa.UOP_BYTES)
        base = whole_words(max(group.uop_next for group in self.memories.groups))
        if base + words > self.config.uop_depth:
            base = 0
            for group in self.memories.groups:
                group.uops.clear()
        parts = []
        for g, mine in enumerate(programs):
            group = self.memories.groups[g]
            at = base
            for program in mine:
                group.uops[program] = at
                at += len(program) // isa.UOP_BYTES
            group.uop_next = base + words
            if mine:
                parts.append((g, b"".join(mine)))
        room = (self.config.uop_depth - base) * isa.UOP_BYTES
        return self.memories.scatter("UOP_LOAD", isa.Space.UOP, parts, base, room, "uops")

    def emit_layer(self, stages, following=None):
        """Emit a prepared layer, then the first tile of each group's first unit of the
        ``following`` layer's first stage and its shared LUT (so they load while this layer
        finishes), and a BARRIER. Return the number of tiles the layer loaded."""
        loaded = sum(group.tiles_loaded for group in self.memories.groups)
        start = len(self.code)
        for stage in stages:
            self.code += self._shared_constants(stage)
            self.code += self._param_tables(stage)
            self.code += stage.before
            if stage.broadcast:
                self.code += self.broadcast_code(stage)
            else:
                self.code += self._stage_code(stage)
            self.code += stage.after
        loaded = sum(group.tiles_loaded for group in self.memories.groups) - loaded
        if following:
            upcoming = following[0]
            shared_lut = _shared_lut(upcoming)
            self.code += self._param_tables(upcoming)
            for cluster in self._clusters(upcoming):
                # Not a tile that would overwrite weights this layer's runs still read.
                members = [(g, tile) for g, tile in self._members(upcoming, cluster, 0)
                           if self.memories.groups[g].whole is None
                           and len(tile.weights) <= self.memories.half_bytes]
                for g, _ in members if upcoming.broadcast else ():
                    self.memories.groups[g].last = 1     # every group's first tile in half 0
                if members:
                    self.memories.load_tiles(members, self.code, lut=shared_lut is None,
                                             scatter=upcoming.broadcast)
            if shared_lut is not None:
                # Last: it waits for this layer's RUNs if they read its half of the tables.
                self.code += self.memories.load_shared_lut(shared_lut)
        # The same tile or micro-program into several groups: one load.
        self.code[start:] = coalesce_loads(self.code[start:])
        self.emit("BARRIER", group_mask=self.all_groups)
        return loaded

    def _shared_constants(self, stage):
        """DMA loading the constants that ``stage``'s groups share, once for all of them
        (a DMA with a group mask writes the same bytes into every group): all its
        micro-programs in one UOP_LOAD when they fit the micro-op memory together, and a
        LUT that every unit of the stage uses (:meth:`~.memories.Memories.load_shared_lut`).
        The per-unit loads of :meth:`_stage_code` then find them there."""
        code = []
        users = {}
        for g, queue in enumerate(stage.queues):
            for unit in queue:
                for run in unit.runs:
                    users[run.program] = users.get(run.program, 0) | 1 << g
        resident = stage.broadcast or all(
            program in self.memories.groups[g].uops for program, mask in users.items()
            for g in range(self.config.groups) if mask >> g & 1)
        blob = b"".join(users)
        mask = functools.reduce(operator.or_, users.values(), 0)
        if not resident and mask & (mask - 1) and \
                len(blob) // isa.UOP_BYTES <= self.config.uop_depth:
            code.append(instruction("UOP_LOAD", space=isa.Space.UOP, group_mask=mask,
                                     ext_addr=self.image.put("uops", blob), local_addr=0,
                                     length=len(blob)))
            for group in self.memories.groups:
                group.uops.clear()
                group.uop_next = len(blob) // isa.UOP_BYTES
            at = 0
            for program, program_mask in users.items():
                for g in range(self.config.groups):
                    if program_mask >> g & 1:
                        self.memories.groups[g].uops[program] = at
                at += len(program) // isa.UOP_BYTES
        lut = _shared_lut(stage)
        if lut is not None:
            code += self.memories.load_shared_lut(lut)
        return code

    def _param_tables(self, stage):
        """The PARAM tables of ``stage`` (:meth:`~.memories.Memories.param_tables`)."""
        return self.memories.param_tables(stage.queues, stage.broadcast,
                                          None if stage.broadcast else self._clusters(stage))

    def _tiling(self, layer, row_segments, col_segments, row_phases, col_phases):
        """``(per_segment, lanes)`` of the layer's weight tiles. In half the weight buffer
        (double buffered: a tile loads while the previous one runs) or in the whole buffer
        (single buffered: its load waits for the group's previous tile): a phase's weights
        for every lane if they fit, else a segment's, else a phase's or a segment's for as many
        lanes as fit. Half the buffer when every lane fits it, else the quicker of the two by
        :meth:`_estimate` (ties to half)."""
        config = self.config
        cin = layer.cin_g
        phases = [len(r) * len(c) * cin for r in row_phases.values() for c in col_phases.values()]
        segments = [r.ntaps * c.ntaps * cin for r in row_segments for c in col_segments]
        phase, segment = max(1, *phases), max(1, *segments)
        every = min(config.lanes, layer.weight.shape[1])
        best = None
        for room in (self.memories.half_bytes, config.weight_bytes):
            if phase * every <= room:
                per_segment, lanes = False, every
            elif segment * every <= room:
                per_segment, lanes = True, every
            else:
                lanes = room // segment
                per_segment = phase * lanes > room
            if not lanes:
                continue
            if lanes == every and room == self.memories.half_bytes:
                return per_segment, lanes
            blocks = segments if per_segment else phases
            cost = self._estimate(layer, blocks, lanes, room > self.memories.half_bytes,
                                  len(row_segments) * len(col_segments))
            if best is None or cost < best[0]:
                best = cost, per_segment, lanes
        if best is None:
            raise FitError(f"layer {layer.name!r}: a weight tile needs {segment} bytes "
                           f"per lane, the weight buffer holds {config.weight_bytes} "
                           f"(short by {segment - config.weight_bytes})")
        return best[1:]

    def _estimate(self, layer, blocks, lanes, whole, segments):
        """Cycles the layer would take with weight tiles of ``blocks`` bytes per lane (one
        unit each, per lane tile and per piece of each stage) on ``lanes`` lanes: its MAC
        steps and RUNs over the groups, against the DMA of its tiles (double buffered: the
        larger; single buffered: a group's loads add to its runs)."""
        config = self.config
        groups = config.groups
        lane_tiles = layer.groups * -(-layer.weight.shape[1] // lanes)
        steps = layer.steps_per_lane_tile() * lane_tiles
        loads = 0
        dma = 0
        for stage in layer.stages:
            pieces = len(cut_pieces(stage.stop - stage.first, layer.out_hw[1],
                                 len(blocks) * lane_tiles, groups))
            units = pieces * lane_tiles
            loads += units * len(blocks)
            dma += units * sum(block * lanes / config.axi_bytes
                               + -(-block * lanes // config.burst_bytes) * config.mem_latency
                               for block in blocks)
        compute = (steps + (loads + segments * lane_tiles) * RUN_LATENCY) / groups
        return max(compute + dma / groups, dma) if whole else max(compute, dma)

    def _lane_tiles(self, layer, lanes):
        """``[(conv group, [channels])]``: runs of at most ``lanes`` output channels of one
        conv group whose bytes are consecutive (so one WRITE lane stride places them), in
        address order (a depth-to-space scatters channels over the pixels of a block; a Gemm
        whose output is viewed as an image writes its neurons in HWC order, so a lane tile
        is the channels of one pixel: its weight rows are taken in that order)."""
        tiles = []
        cout_g = layer.weight.shape[1]
        for conv_group in range(layer.groups):
            current = []
            channels = sorted(range(conv_group * cout_g, (conv_group + 1) * cout_g),
                              key=lambda n: layer.chan_addr[n])
            for n in channels:
                if current and (len(current) == lanes or
                                layer.chan_addr[n] != layer.chan_addr[current[-1]] + 1):
                    tiles.append((conv_group, current))
                    current = []
                current.append(n)
            tiles.append((conv_group, current))
        return tiles

    def _unit_tiles(self, layer, lane_tiles, blocks, per_segment, row_phases, col_phases):
        """``[(conv group, [[channels] per lane tile])]``: the lane tiles of one conv group
        gathered into the units' tiles. As many lane tiles per unit as fit half the weight
        buffer and half the PARAM entries (one shared LUT), but no fewer units than
        :data:`~.schedule.MIN_TILES_PER_GROUP` per group (so every group has work, loads its
        next tile while it runs one, and runs a short last one), in a multiple of the groups
        (so they balance)."""
        groups = self.config.groups
        cin = layer.cin_g
        taps = [len(r) * len(c) for r in row_phases.values() for c in col_phases.values()]
        lanes = max(len(channels) for _, channels in lane_tiles)
        block = max(1, *taps) * cin * lanes
        fit = min(self.memories.half_bytes // block, self.memories.half_params // lanes)
        lut = layer.post.lut
        if per_segment or fit <= 1 or (lut is not None and lut.shape[0] > 1):
            return [(conv_group, [channels]) for conv_group, channels in lane_tiles]
        by_group = {}
        for conv_group, channels in lane_tiles:
            by_group.setdefault(conv_group, []).append(channels)
        total = len(lane_tiles) * blocks
        units = max(-(-total // fit), MIN_TILES_PER_GROUP * groups)
        units = min(total, -(-units // groups) * groups)
        per_unit = -(-total // units)
        return [(conv_group, chunk[i:i + per_unit]) for conv_group, chunk in by_group.items()
                for i in range(0, len(chunk), per_unit)]

    def _tile(self, layer, conv_group, lane_tiles, row_taps, col_taps, first_row, first_col):
        weights, params, luts, parts = [], [], [], []
        weight_at = param_at = 0
        for channels in lane_tiles:
            local = [n - conv_group * layer.weight.shape[1] for n in channels]
            block = layer.weight[conv_group][local][:, :, list(row_taps)][:, :, :,
                                                                           list(col_taps)]
            weights.append(np.ascontiguousarray(block.transpose(2, 3, 1, 0)).astype(np.int8)
                           .tobytes())
            params.append(layer.post.param_bytes(channels))
            luts.append(layer.post.lut_bytes(channels))
            parts.append((len(channels), weight_at, param_at))
            weight_at += len(weights[-1])
            param_at += len(channels)
        weights, params = b"".join(weights), b"".join(params)
        # One shared table, or one lane tile's tables per lane.
        lut = luts[0]
        # By content: the channels of a depthwise layer (the Adds) share one tile.
        key = (layer.index, row_taps, col_taps, first_row, first_col, weights, params, lut,
               tuple(parts))
        return _Tile(key, tuple(parts), first_row, first_col, len(col_taps), weights, params,
                     lut)

    def _units(self, layer, row_segments, col_segments, piece, tiles, per_segment, src_at,
               dst_at):
        """The work units of the output rectangle ``piece = (r0, r1, c0, c1)``: per lane tile,
        one per segment or one per phase (its segments, sharing the phase's taps)."""
        r0, r1, c0, c1 = piece
        rows = [s for s in (r.clip(r0, r1) for r in row_segments) if s is not None]
        cols = [s for s in (c.clip(c0, c1) for c in col_segments) if s is not None]
        if per_segment:
            batches = [[(r, c)] for r in rows for c in cols]
        else:
            batches = [[(r, c) for r in rows if r.phase == row_phase
                        for c in cols if c.phase == col_phase]
                       for row_phase in sorted({r.phase for r in rows})
                       for col_phase in sorted({c.phase for c in cols})]
        units = []
        for batch in batches:
            if not batch:
                continue
            r, c = batch[0]
            if per_segment:
                row_taps, col_taps, first_row, first_col = r.taps, c.taps, r.first, c.first
            else:
                row_taps, col_taps, first_row, first_col = r.phase_taps, c.phase_taps, 0, 0
            for conv_group, lane_tiles in tiles:
                tile = self._tile(layer, conv_group, lane_tiles, row_taps, col_taps, first_row,
                                  first_col)
                runs = tuple(self._run(layer, row_segment, col_segment, tile, part, conv_group,
                                       channels, src_at, dst_at)
                             for part, channels in zip(tile.parts, lane_tiles)
                             for row_segment, col_segment in batch)
                units.append(_Unit(tile, runs))
        return units

    def _run(self, layer, row_segment, col_segment, tile, part, conv_group, channels, src_at,
             dst_at, write_base=0, wgt_base=0):
        """The micro-program and RUN operands of segment ``row_segment x col_segment`` for the
        lane tile ``part = (lanes, weight byte, PARAM entry)`` of ``tile``; ``write_base``
        bytes of its output offset go in its WRITE micro-op instead of the RUN, ``wgt_base``
        of its weight address in its WGT micro-op."""
        row_axis, col_axis = layer.axes
        src_grid, dst_grid = layer.src_grid, layer.dst_grid
        cin = layer.cin_g
        lanes, part_weights, part_params = part
        taps = row_segment.ntaps * col_segment.ntaps
        act_offset = 0
        if taps:
            row = row_axis.off + row_segment.in0 * row_axis.step - src_at.first_row
            col = col_axis.off + col_segment.in0 * col_axis.step
            act_offset = src_at.base + (row * src_grid.cols + col) * src_grid.channels \
                + layer.src_chan + conv_group * layer.group_chans
        loops = [(row_segment.ntaps, row_segment.tap_step * row_axis.step * src_grid.row_bytes,
                  tile.tap_cols * cin * lanes),
                 (col_segment.ntaps, col_segment.tap_step * col_axis.step * src_grid.channels,
                  cin * lanes),
                 (cin, layer.chan_step, lanes)]
        act = (row_segment.in_step * row_axis.step * src_grid.row_bytes,
               col_segment.in_step * col_axis.step * src_grid.channels)
        lut = layer.post.lut
        post = {"use_lut": int(lut is not None), "lut": 0,
                "per_lane": int(lut is not None and lut.shape[0] > 1)}
        mul_h, mul_w = layer.out_mul
        write = (row_segment.out_step * mul_h * dst_grid.step_h * dst_grid.row_bytes,
                 col_segment.out_step * mul_w * dst_grid.step_w * dst_grid.channels)
        out_offset = dst_at.base + layer.pixel_addr(row_segment.out0, col_segment.out0) \
            - dst_at.first_row * dst_grid.row_bytes + int(layer.chan_addr[channels[0]]) \
            - write_base
        wgt_offset = part_weights + ((row_segment.first - tile.first_row) * tile.tap_cols
                                     + col_segment.first - tile.first_col) * cin * lanes
        operands = {"rows": row_segment.count, "cols": col_segment.count, "lanes": lanes,
                    "act_offset": act_offset, "wgt_offset": wgt_offset if taps else 0,
                    "param_offset": part_params, "out_offset": out_offset}
        return _Run(_program(taps, loops, act, post, write, write_base, wgt_base), operands,
                    row_segment.count * col_segment.count * max(1, taps * cin), wgt_base)

    # --- groups --------------------------------------------------------------------------------

    def _clusters(self, stage):
        """The groups of ``stage`` whose tiles load together, unit by unit (the tiles of
        their u-th units in one DMA per memory, :meth:`~.memories.Memories.load_tiles`):
        runs of consecutive groups, as many as fit their largest tiles together in half the
        weight buffer and half the PARAM entries, when the stage's tiles share their LUT
        (per-lane tables differ from group to group); each group alone otherwise; all the
        groups when the stage's tiles fit half the buffers together (:meth:`_at_once`) and
        for a broadcast stage (each group's own tiles in one scatter DMA). A DMA pays the
        memory latency once whatever its length, so a small layer's tiles reach many groups
        for the price of one."""
        groups = self.config.groups
        tiles = [unit.tile for queue in stage.queues for unit in queue]
        size = 1
        if stage.broadcast or self._at_once(stage):
            size = groups
        elif tiles and len({tile.lut for tile in tiles}) == 1:
            weights = max(len(tile.weights) for tile in tiles)
            params = max(len(tile.params) for tile in tiles) // isa.PARAM_BYTES
            if weights <= self.memories.half_bytes:
                size = max(1, min(groups, self.memories.half_bytes // max(1, weights),
                                  self.memories.half_params // max(1, params)))
        return [list(range(g, min(g + size, groups))) for g in range(0, groups, size)]

    def _at_once(self, stage):
        """Whether the distinct tiles of ``stage`` fit half the weight buffer and half the
        PARAM entries together and share their LUT: then one DMA per memory loads them all
        into every group (each piece of the image once, the memory latency once)."""
        tiles = {unit.tile.key: unit.tile for queue in stage.queues for unit in queue}.values()
        memories = self.memories
        return not stage.broadcast and bool(tiles) and len({tile.lut for tile in tiles}) == 1 \
            and sum(len(tile.weights) for tile in tiles) <= memories.half_bytes \
            and sum(len(tile.params) for tile in tiles) <= memories.half_params * isa.PARAM_BYTES

    def _members(self, stage, cluster, u):
        """``[(g, tile)]`` whose tiles load together for unit index ``u`` of the groups of
        ``cluster``: their ``u``-th units' tiles, or every unit's at index 0 when the stage's
        tiles load at once (:meth:`_at_once`)."""
        queues = stage.queues
        if self._at_once(stage):
            return [(g, unit.tile) for g in cluster for unit in queues[g]] if u == 0 else []
        return [(g, queues[g][u].tile) for g in cluster if u < len(queues[g])]

    def _stage_code(self, stage):
        """The instructions of a stage's units: per cluster of groups (:meth:`_clusters`) and
        unit index, the loads of their tiles (together, if not loaded), and per group its
        units' RUNs, each after its micro-program's load (if not loaded); merged in the order
        the groups would start their RUNs (:func:`~.schedule.merge_units`): round robin at
        batch 1 (measured a little quicker: the estimate leaves out the loads), by their
        MAC steps in a batched stage, whose long runs of RUNs of unequal lengths would hold
        the groups in lockstep (resnet_g at batch 4: a fifth more cycles per frame)."""
        queues = stage.queues
        units, loads = [[] for _ in queues], [[] for _ in queues]
        read = set()        # the halves of the PARAM entries its RUNs read
        for cluster in self._clusters(stage):
            for u in range(max(len(queues[g]) for g in cluster)):
                load = []
                self.memories.load_tiles(self._members(stage, cluster, u), load)
                for g in cluster:
                    if u >= len(queues[g]):
                        continue
                    place = self.memories.resident(g, queues[g][u].tile)
                    read.add(place.param_base // self.memories.half_params)
                    self.memories.groups[g].last = place.half
                    loads[g].append(load)
                    chunks = []
                    for run in queues[g][u].runs:
                        chunk = []
                        self.memories.load_uops(g, run.program, chunk)
                        chunk.append(instruction("RUN", group_mask=1 << g,
                                                  **self._run_operands(g, run, place)))
                        chunks.append(chunk)
                    units[g].append(chunks)
        self.memories.params_read = frozenset(read)
        costs = [[run.steps + RUN_LATENCY for unit in queue for run in unit.runs]
                 for queue in queues] if self.batch > 1 else None
        return merge_units(units, loads, costs)

    def _run_operands(self, g, run, place):
        """The RUN registers of ``run`` on group ``g``, its tile's constants at ``place`` (a
        :class:`~.memories.Place`) and its micro-program loaded."""
        return {"uop_addr": self.memories.groups[g].uops[run.program],
                "uop_count": len(run.program) // isa.UOP_BYTES,
                "lut_offset": place.lut_offset,
                **run.operands,
                "wgt_offset": place.wgt_base - run.wgt_base + run.operands["wgt_offset"],
                "param_offset": place.param_base + run.operands["param_offset"]}

def _batched(frames, groups):
    """The work units of a stage for every frame of the batch (``frames``: per frame its
    units, the same tiles in the same order), as units that run one tile's RUNs for several
    frames: the tile loads once for them. All the frames in one unit when that leaves a unit
    per group; else fewer, so that the frames spread over the groups (the same tile into
    several groups is one DMA, :func:`~.schedule.coalesce_loads`)."""
    per_frame, batch = len(frames[0]), len(frames)
    together = max(1, min(batch, per_frame * batch // groups))
    return [_Unit(same[0].tile, sum((unit.runs for unit in same[start:start + together]), ()))
            for same in zip(*frames) for start in range(0, batch, together)]


def _shared_lut(stage):
    """The one 256-byte LUT every unit of ``stage`` uses, or None."""
    luts = {unit.tile.lut for queue in stage.queues for unit in queue}
    lut = luts.pop() if len(luts) == 1 else None
    return lut if lut is not None and len(lut) == isa.LUT_BYTES else None


def _useful_macs(qgraph, layer):
    """MACs of the model in ``layer`` (none in a copy: into a Concat, an upsampling, a Pad or
    through a standalone activation's LUT, nor in a Pad's fill)."""
    if layer.op in ("Copy", "Fill"):
        return 0
    node = ir.node(qgraph, layer.nodes[0])
    return macs.layer_macs(node.op, ir.node(qgraph, node.inputs[0]).shape, node.shape).useful


def lower(qgraph, config, reorder=True, batch=1, groups=None):
    """Compile a quantized IR graph for ``config``; return a :class:`Program`.

    Parameters
    ----------
    qgraph : networkx.DiGraph
        The quantized IR (every node has ``scale`` and ``q``).
    config : AcceleratorConfig
    reorder : bool
        Zero-free segments (True) or the conventional baseline: zero insertion and padding in
        memory, dense stride-1 convolutions (False).
    batch : int
        Frames the program runs at once: each work unit's tile loads once and runs for every
        frame, each frame in its own slice of ACT (:func:`~.plan.frame_act_bytes`) and its own
        copy of the input, output and spill regions.
    groups : int, optional
        The groups the program uses, the first ``groups`` of the machine (default: all of
        them). A small model can run quicker on fewer groups, each loading more per DMA
        (:func:`flexigan.tune.lower_quickest` measures which); the program is still the
        machine's (``program.config``), the others stay idle.

    Raises
    ------
    UnsupportedError, FitError
    """
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    groups = config.groups if groups is None else groups
    if not isinstance(groups, int) or not 1 <= groups <= config.groups:
        raise ValueError(f"groups must be an integer from 1 to {config.groups}, not {groups!r}")
    used = replace(config, groups=groups)
    p = plan(qgraph, used, reorder, batch)
    lowering = _Lowering(p, used, batch)
    lowering.emit("COUNTERS", action=isa.CounterAction.RESET)
    lowering.emit("ROUTE", group_mask=lowering.all_groups, bank_first=0,
                  bank_count=config.act_banks)
    prepared = [lowering.prepare(layer) for layer in p.layers]
    schedule = []
    for i, layer in enumerate(p.layers):
        first = len(lowering.code) if schedule else 0
        stages, stats = prepared[i]
        following = prepared[i + 1][0] if i + 1 < len(p.layers) else None
        tiles = norm.emit(lowering, layer) if layer.op == "Norm" else \
            lowering.emit_layer(stages, following)
        schedule.append({"name": layer.name, "nodes": list(layer.nodes), "op": layer.op,
                         "first": first, "last": len(lowering.code),
                         "macs_useful": _useful_macs(qgraph, layer),
                         "stages": stats.stages, "per_segment_tiles": stats.per_segment_tiles,
                         "lanes_per_tile": stats.lanes_per_tile, "packed_columns": layer.packed,
                         "units": stats.units,
                         "runs": stats.runs, "tiles": tiles, "mac_steps": stats.mac_steps})
    counters = lowering.image.reserve("counters", 8 * 8)
    lowering.emit("COUNTERS", action=isa.CounterAction.STORE, ext_addr=counters)
    lowering.emit("END")
    schedule[-1]["last"] = len(lowering.code)
    if lowering.zero_bytes:
        lowering.image.reserve("zeros", lowering.zero_bytes)
    return _assemble(lowering, p, schedule, qgraph, reorder, config)


def _check_memory(config, image_bytes):
    """A :class:`FitError` naming the shortfall when the image does not fit the target's
    memory (``config.memory_bytes``)."""
    if config.memory_bytes is not None and image_bytes > config.memory_bytes:
        raise FitError(f"the memory image (program, weights and activations) needs "
                       f"{image_bytes:,} bytes; the target's memory holds "
                       f"{config.memory_bytes:,} ({image_bytes - config.memory_bytes:,} bytes "
                       f"short)")


def _assemble(lowering, p, schedule, qgraph, reorder, config):
    """The :class:`Program` for ``config``: the image linked, and its layout."""
    image, address, linked = lowering.image.link(lowering.code)
    _check_memory(config, len(image))

    def tensor(value, storage_name):
        node = qgraph.nodes[value]["node"]
        storage = p.storage(storage_name)
        return {"addr": address(lowering.dram[storage.name]), "shape": list(node.shape),
                "scale": node.scale, "grid": storage.value_grid.to_dict(),
                "frame_bytes": lowering.frame_bytes(storage)}

    layout = {
        "code": len(lowering.code),
        "reorder": reorder,
        "batch": lowering.batch,
        "groups_used": lowering.config.groups,
        "regions": linked["regions"],
        "inputs": {v: tensor(v, s) for v, s in p.inputs.items()},
        "outputs": {v: tensor(v, s) for v, s in p.outputs.items()},
        "counters": address(("counters", 0)),
        "uop_programs": linked["uop_programs"],
        "act_buffers": {s.name: [s.act_addr, s.size] for s in p.storages if s.home == "act"},
        "spilled": [s.name for s in p.storages if s.home == "dram" and s.producer is not None
                    and not s.output],
        "layers": schedule,
    }
    return Program(config, image, layout)
