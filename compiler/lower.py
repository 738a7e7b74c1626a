"""The back end: a quantized IR graph -> a two-level program and its memory image.

:func:`lower` takes the :mod:`~flexigan.compiler.plan` of the graph (layers in normal form,
where every tensor lives, how each layer is cut into stages) and, layer by layer, stage by
stage:

* cuts the layer's output into zero-free 2-D segments (:mod:`~flexigan.compiler.segments`),
  one micro-program each (docs/isa.md);
* tiles output channels over the lanes and forms *work units* (a phase's segments for one lane
  tile, or one segment when a phase's weights exceed half a weight buffer), split into row
  bands when there are fewer units than twice the groups;
* balances the units over the groups by MAC steps (greedy longest-processing-time), so groups
  run different micro-programs when the phases differ (MIMD);
* emits, per unit, the DMA of its constant tile (weights, PARAM entries, LUTs) into the group's
  free weight-buffer half (double buffering) and one RUN per segment; windows and staging DMA
  for tensors in external memory; a BARRIER closes each layer. Each group's instructions are
  generated on their own and merged round robin, one RUN per group per round: a group holds
  few RUNs and the controller waits for a free slot, so a group's RUNs back to back would
  block the others.

The memory image and layout are a :class:`~flexigan.compiler.program.Program`. Everything is
deterministic: the same graph and config give the same bytes.
"""

from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass, field

import numpy as np

from ..errors import FitError
from ..hw.arch import isa
from ..hw.arch.timing import RUN_LATENCY
from . import asm, ir, macs
from .plan import align, plan
from .program import Program

__all__ = ["lower", "MIN_UNITS_PER_GROUP"]

#: Work units per group below which a layer's units are split into row bands (so every group
#: has work, and the greedy balance has pieces to move).
MIN_UNITS_PER_GROUP = 2


@dataclass(frozen=True)
class _Tile:
    """The constants of one work unit: a block of weights ``[tap row][tap col][cin][lane]``
    for taps ``rows x cols`` of one conv group and lane tile, its PARAM entries and LUTs."""

    key: tuple
    lanes: int
    row0: int       # first tap (index in the phase's taps) of the block, per axis
    col0: int
    ntc: int        # tap columns in the block
    wgt: bytes
    params: bytes
    lut: bytes


@dataclass
class _Run:
    program: bytes
    operands: dict
    steps: int      # MAC steps (cycles without zero skipping)


@dataclass
class _Unit:
    tile: _Tile
    runs: list[_Run]

    @property
    def cost(self):
        return sum(r.steps + RUN_LATENCY for r in self.runs)


@dataclass
class _Group:
    """What the compiler knows of one group's memories, to skip reloads."""

    halves: list = field(default_factory=lambda: [None, None])
    whole: int | None = None    # the half whose tile's weights fill the whole buffer
    luts: list = field(default_factory=lambda: [None, None])
    last: int = 1
    uops: dict = field(default_factory=dict)
    uop_next: int = 0


class _Image:
    """Regions of the memory image under construction; data deduplicated by content."""

    def __init__(self):
        self.regions = {}
        self.seen = {}

    def put(self, region, data):
        """Reference ``(region, offset)`` of ``data`` appended (once) to ``region``."""
        key = (region, data)
        if key not in self.seen:
            blob = self.regions.setdefault(region, bytearray())
            self.seen[key] = (region, len(blob))
            blob += data + bytes(align(len(data)) - len(data))
        return self.seen[key]

    def reserve(self, region, size):
        blob = self.regions.setdefault(region, bytearray())
        ref = (region, len(blob))
        blob += bytes(align(size))
        return ref


def _uop(op, **operands):
    return asm.encode("uop", op, **operands)


def _program(taps, loops, act, post, write):
    """Bytes of a segment's micro-program; LOOP levels of count 1 are left out."""
    ops = []
    if taps:
        for level, (count, act_stride, wgt_stride) in enumerate(loops):
            if count > 1:
                ops.append(_uop("LOOP", level=level, count=count, act_stride=act_stride,
                                wgt_stride=wgt_stride))
        ops += [_uop("ACT", row_stride=act[0], col_stride=act[1]), _uop("WGT", lane_stride=1)]
    ops.append(_uop("CLEAR", use_bias=1))
    if taps:
        ops.append(_uop("MAC"))
    ops += [_uop("POST", **post), _uop("WRITE", row_stride=write[0], col_stride=write[1],
                                       lane_stride=1)]
    return b"".join(ops)


class _Lowering:
    """Emits the global program for a plan, tracking each group's memories."""

    def __init__(self, p, config):
        self.p, self.config = p, config
        self.image = _Image()
        self.code = []
        self.groups = [_Group() for _ in range(config.groups)]
        self.all = (1 << config.groups) - 1
        self.half = config.weight_bytes // 2
        self.param_half = config.param_entries // 2
        self.zero_bytes = 0
        self.dram = {}
        for s in p.storages:
            if s.home == "dram":
                region = "inputs" if s.producer is None else \
                    "outputs" if s.output else "spills"
                self.dram[s.name] = self.image.reserve(region, s.size)

    def emit(self, op, **operands):
        self.code.append((op, operands))

    def _dram(self, storage, offset):
        region, base = self.dram[storage.name]
        return (region, base + offset)

    def _clear(self, addr, size):
        """DMA zeroing ``size`` bytes of ACT from the image's zero region (padding and
        inserted zeros of the conventional baseline)."""
        self.zero_bytes = max(self.zero_bytes, size)
        return ("DMA_LOAD", {"space": isa.Space.ACT, "ext_addr": ("zeros", 0),
                             "local_addr": addr, "length": size})

    # --- one layer ---------------------------------------------------------------------------

    def prepare(self, layer):
        """The layer's stages: per stage the DMA before it, the work units queued per group
        (balanced), and the DMA after it; with the layer's statistics."""
        cfg = self.config
        rsegs, csegs = layer.axis_segments(0), layer.axis_segments(1)
        phase_r = {s.phase: s.phase_taps for s in rsegs}
        phase_c = {s.phase: s.phase_taps for s in csegs}
        per_segment, lanes = self._tiling(layer, rsegs, csegs, phase_r, phase_c)
        tiles = self._lane_tiles(layer, lanes)
        n_units = len(tiles) * (len(rsegs) * len(csegs) if per_segment
                                else len(phase_r) * len(phase_c))

        src, dst = layer.src, layer.dst
        stages = []
        pre = []
        # A Concat's storage has several writers, each its channel slice: the first clears
        # the gaps; in external memory each stage's rows are read, completed and stored back.
        shared = len(dst.writers) > 1
        if dst.home == "act" and dst.grid.gapped and layer.index == dst.producer:
            pre.append(self._clear(dst.act_addr, dst.size))
        if dst.home == "dram" and dst.grid.gapped and not shared:
            rows = max(hi - lo for lo, hi in (layer.staging_rows(*s) for s in layer.stages()))
            pre += [self._clear(addr, rows * dst.grid.row_bytes) for addr in layer.staging]
        stats = {"stages": len(layer.stages()), "per_segment_tiles": per_segment,
                 "lanes_per_tile": lanes, "units": 0, "runs": 0, "tiles": 0,
                 "mac_steps": [0] * cfg.groups}
        for k, (r0, r1) in enumerate(layer.stages()):
            src_base, src_lo = src.act_addr, 0
            if src.home == "dram":
                src_base = layer.windows[k % len(layer.windows)]
                src_lo, hi = layer.window_rows(r0, r1)
                rb = src.grid.row_bytes
                if hi > src_lo:
                    pre.append(("DMA_LOAD", {"space": isa.Space.ACT, "local_addr": src_base,
                                             "ext_addr": self._dram(src, src_lo * rb),
                                             "length": (hi - src_lo) * rb}))
            post = []
            dst_base, dst_lo = dst.act_addr, 0
            if dst.home == "dram":
                dst_base = layer.staging[k % len(layer.staging)]
                dst_lo, dst_hi = layer.staging_rows(r0, r1)
                rb = dst.grid.row_bytes
                if shared:
                    pre.append(("DMA_LOAD", {"space": isa.Space.ACT, "local_addr": dst_base,
                                             "ext_addr": self._dram(dst, dst_lo * rb),
                                             "length": (dst_hi - dst_lo) * rb}))
                post.append(("DMA_STORE", {"space": isa.Space.ACT, "local_addr": dst_base,
                                           "ext_addr": self._dram(dst, dst_lo * rb),
                                           "length": (dst_hi - dst_lo) * rb}))
            units = []
            for piece in _pieces(r1 - r0, layer.out_hw[1], n_units, cfg.groups):
                b0, b1, c0, c1 = piece
                units += self._units(layer, rsegs, csegs, (r0 + b0, r0 + b1, c0, c1), tiles,
                                     per_segment, (src_base, src_lo), (dst_base, dst_lo))
            queues = _balance(units, cfg.groups)
            stats["units"] += len(units)
            stats["runs"] += sum(len(u.runs) for u in units)
            for g, queue in enumerate(queues):
                stats["mac_steps"][g] += sum(r.steps for u in queue for r in u.runs)
            stages.append((pre, queues, post))
            pre = []
        return stages, stats

    def emit_layer(self, stages, stats, following=None):
        """Emit a prepared layer; then the first tile of each group's first unit of the
        ``following`` layer (so its weights load while this layer finishes), and a BARRIER."""
        for pre, queues, post in stages:
            self.code += pre
            # Each group's instructions (its loads and RUNs, in its queue's order), then
            # merged one RUN per group per round.
            code, streams = self.code, []
            for g, queue in enumerate(queues):
                self.code = []
                for unit in queue:
                    self._unit(g, unit, stats)
                streams.append(self.code)
            self.code = code + _merge(streams)
            self.code += post
        if following:
            for g, queue in enumerate(following[0][1]):
                # Not a tile that would overwrite weights this layer's runs still read.
                if queue and len(queue[0].tile.wgt) <= self.half and \
                        self.groups[g].whole is None:
                    self._tile_load(g, queue[0].tile, {"tiles": 0})
        self.emit("BARRIER", group_mask=self.all)

    def _tiling(self, layer, rsegs, csegs, phase_r, phase_c):
        """``(per_segment, lanes)`` of the layer's weight tiles. In half the weight buffer
        (double buffered: a tile loads while the previous one runs) or in the whole buffer
        (single buffered: its load waits for the group's previous tile): a phase's weights
        for every lane if they fit, else a segment's, else a phase's or a segment's for as many
        lanes as fit. Half the buffer when every lane fits it, else the quicker of the two by
        :meth:`_estimate` (ties to half)."""
        cfg = self.config
        cin = layer.cin_g
        phases = [len(a) * len(b) * cin for a in phase_r.values() for b in phase_c.values()]
        segs = [r.ntaps * c.ntaps * cin for r in rsegs for c in csegs]
        phase, seg = max(1, *phases), max(1, *segs)
        every = min(cfg.lanes, layer.weight.shape[1])
        best = None
        for room in (self.half, cfg.weight_bytes):
            if phase * every <= room:
                per_segment, lanes = False, every
            elif seg * every <= room:
                per_segment, lanes = True, every
            else:
                lanes = room // seg
                per_segment = phase * lanes > room
            if not lanes:
                continue
            if lanes == every and room == self.half:
                return per_segment, lanes
            blocks = segs if per_segment else phases
            cost = self._estimate(layer, blocks, lanes, room > self.half,
                                  len(rsegs) * len(csegs))
            if best is None or cost < best[0]:
                best = cost, per_segment, lanes
        if best is None:
            raise FitError(f"layer {layer.name!r}: a weight tile needs {seg} bytes "
                           f"per lane, the weight buffer holds {cfg.weight_bytes} "
                           f"(short by {seg - cfg.weight_bytes})")
        return best[1:]

    def _estimate(self, layer, blocks, lanes, whole, segments):
        """Cycles the layer would take with weight tiles of ``blocks`` bytes per lane (one
        unit each, per lane tile and per piece of each stage) on ``lanes`` lanes: its MAC
        steps and RUNs over the groups, against the DMA of its tiles (double buffered: the
        larger; single buffered: a group's loads add to its runs)."""
        cfg = self.config
        groups = cfg.groups
        lane_tiles = layer.groups * -(-layer.weight.shape[1] // lanes)
        steps = layer.steps_per_lane_tile() * lane_tiles
        loads = 0
        dma = 0
        for r0, r1 in layer.stages():
            pieces = len(_pieces(r1 - r0, layer.out_hw[1], len(blocks) * lane_tiles, groups))
            n = pieces * lane_tiles
            loads += n * len(blocks)
            dma += n * sum(b * lanes / cfg.axi_bytes + -(-b * lanes // cfg.burst_bytes)
                           * cfg.mem_latency for b in blocks)
        compute = (steps + (loads + segments * lane_tiles) * RUN_LATENCY) / groups
        return max(compute + dma / groups, dma) if whole else max(compute, dma)

    def _lane_tiles(self, layer, lanes):
        """``[(conv group, [channels])]``: runs of at most ``lanes`` output channels of one
        conv group whose bytes are consecutive (so one WRITE lane stride places them), in
        address order (a depth-to-space scatters channels over the pixels of a block)."""
        tiles = []
        cout_g = layer.weight.shape[1]
        for gi in range(layer.groups):
            current = []
            chans = range(gi * cout_g, (gi + 1) * cout_g)
            if layer.mapped:
                chans = sorted(chans, key=lambda n: layer.chan_addr[n])
            for n in chans:
                if current and (len(current) == lanes or
                                layer.chan_addr[n] != layer.chan_addr[current[-1]] + 1):
                    tiles.append((gi, current))
                    current = []
                current.append(n)
            tiles.append((gi, current))
        return tiles

    def _tile(self, layer, gi, chans, rtaps, ctaps, row0, col0):
        local = [n - gi * layer.weight.shape[1] for n in chans]
        w = layer.weight[gi][local][:, :, list(rtaps)][:, :, :, list(ctaps)]
        wgt = np.ascontiguousarray(w.transpose(2, 3, 1, 0)).astype(np.int8).tobytes()
        params, lut = layer.post.param_bytes(chans), layer.post.lut_bytes(chans)
        # By content: the channels of a depthwise layer (the Adds) share one tile.
        key = (layer.index, rtaps, ctaps, row0, col0, wgt, params, lut)
        return _Tile(key, len(chans), row0, col0, len(ctaps), wgt, params, lut)

    def _units(self, layer, rsegs, csegs, piece, tiles, per_segment, src, dst):
        """The work units of the output rectangle ``piece = (r0, r1, c0, c1)``."""
        r0, r1, c0, c1 = piece
        units = []
        clipped = [s for s in (r.clip(r0, r1) for r in rsegs) if s is not None]
        ccut = [s for s in (c.clip(c0, c1) for c in csegs) if s is not None]
        if per_segment:
            groups = [[(r, c)] for r in clipped for c in ccut]
        else:
            groups = [[(r, c) for r in clipped if r.phase == pr for c in ccut if c.phase == pc]
                      for pr in sorted({r.phase for r in clipped})
                      for pc in sorted({c.phase for c in ccut})]
        for segs in groups:
            if not segs:
                continue
            r, c = segs[0]
            if per_segment:
                rtaps, ctaps, row0, col0 = r.taps, c.taps, r.first, c.first
            else:
                rtaps, ctaps, row0, col0 = r.phase_taps, c.phase_taps, 0, 0
            for gi, chans in tiles:
                tile = self._tile(layer, gi, chans, rtaps, ctaps, row0, col0)
                units.append(_Unit(tile, [self._run(layer, rs, cs, tile, gi, chans, src, dst)
                                          for rs, cs in segs]))
        return units

    def _run(self, layer, rs, cs, tile, gi, chans, src, dst):
        """The micro-program and RUN operands of segment ``rs x cs`` for one tile."""
        (src_base, src_lo), (dst_base, dst_lo) = src, dst
        ar, ac = layer.axes
        gs, gd = layer.src.grid, layer.dst.grid
        cin, nl = layer.cin_g, tile.lanes
        taps = rs.ntaps * cs.ntaps
        act_offset = 0
        if taps:
            row = ar.off + rs.in0 * ar.step - src_lo
            act_offset = src_base + (row * gs.cols + ac.off + cs.in0 * ac.step) * gs.channels \
                + layer.src_chan + gi * layer.group_chans
        loops = [(rs.ntaps, rs.tap_step * ar.step * gs.row_bytes, tile.ntc * cin * nl),
                 (cs.ntaps, cs.tap_step * ac.step * gs.channels, cin * nl),
                 (cin, layer.chan_step, nl)]
        act = (rs.in_step * ar.step * gs.row_bytes, cs.in_step * ac.step * gs.channels)
        lut = layer.post.lut
        post = {"use_lut": int(lut is not None), "lut": 0,
                "per_lane": int(lut is not None and lut.shape[0] > 1)}
        mh, mw = layer.out_mul
        write = (rs.out_step * mh * gd.step_h * gd.row_bytes,
                 cs.out_step * mw * gd.step_w * gd.channels)
        out_offset = dst_base + layer.pixel_addr(rs.out0, cs.out0) - dst_lo * gd.row_bytes \
            + int(layer.chan_addr[chans[0]])
        wgt_offset = ((rs.first - tile.row0) * tile.ntc + cs.first - tile.col0) * cin * nl
        operands = {"rows": rs.count, "cols": cs.count, "lanes": nl, "act_offset": act_offset,
                    "wgt_offset": wgt_offset if taps else 0, "out_offset": out_offset}
        return _Run(_program(taps, loops, act, post, write), operands,
                    rs.count * cs.count * max(1, taps * cin))

    # --- groups --------------------------------------------------------------------------------

    def _tile_load(self, g, tile, stats):
        """``(half, weight address)`` of group ``g``'s constant buffers holding ``tile``,
        loading it into the half the group used least recently (double buffering) if it is not
        there. A tile larger than half the weight buffer takes all of it (its PARAM entries and
        LUTs still go in one half)."""
        group, mask = self.groups[g], 1 << g
        if tile.key in group.halves:
            h = group.halves.index(tile.key)
            return h, 0 if group.whole == h else h * self.half
        h = 1 - group.last
        whole = len(tile.wgt) > self.half
        if whole or group.whole == 1 - h:
            group.halves[1 - h] = None      # its weights are overwritten
        group.whole = h if whole else None
        group.halves[h] = tile.key
        group.last = h
        stats["tiles"] += 1
        if tile.wgt:
            self.emit("DMA_LOAD", space=isa.Space.WGT, group_mask=mask,
                      ext_addr=self.image.put("constants", tile.wgt),
                      local_addr=0 if whole else h * self.half, length=len(tile.wgt))
        self.emit("DMA_LOAD", space=isa.Space.PARAM, group_mask=mask,
                  ext_addr=self.image.put("constants", tile.params),
                  local_addr=h * self.param_half, length=len(tile.params))
        if tile.lut and group.luts[h] != tile.lut:
            # A shared table stays loaded across the tiles of a layer.
            group.luts[h] = tile.lut
            self.emit("DMA_LOAD", space=isa.Space.LUT, group_mask=mask,
                      ext_addr=self.image.put("constants", tile.lut),
                      local_addr=h * self.config.lanes, length=len(tile.lut))
        return h, 0 if whole else h * self.half

    def _unit(self, g, unit, stats):
        h, wgt_base = self._tile_load(g, unit.tile, stats)
        self.groups[g].last = h
        for run in unit.runs:
            addr = self._load_uops(g, run.program)
            self.emit("RUN", group_mask=1 << g, uop_addr=addr,
                      uop_count=len(run.program) // isa.UOP_BYTES,
                      param_offset=h * self.param_half, lut_offset=h * self.config.lanes,
                      **{**run.operands,
                         "wgt_offset": wgt_base + run.operands["wgt_offset"]})

    def _load_uops(self, g, program):
        """UOP address of ``program`` in group ``g``, loading it (over the oldest programs when
        the memory is full) if it is not there."""
        group = self.groups[g]
        if program not in group.uops:
            count = len(program) // isa.UOP_BYTES
            if group.uop_next + count > self.config.uop_depth:
                group.uops.clear()
                group.uop_next = 0
            self.emit("UOP_LOAD", space=isa.Space.UOP, group_mask=1 << g,
                      ext_addr=self.image.put("uops", program), local_addr=group.uop_next,
                      length=len(program))
            group.uops[program] = group.uop_next
            group.uop_next += count
        return group.uops[program]


def _merge(streams):
    """The groups' instruction streams merged round robin, one RUN per group per round (with
    the group's loads before it), each group's own order kept: a group holds at most
    RUN_SLOTS RUNs, and the controller waits for a free slot, blocking every later
    instruction, so a group's RUNs back to back would leave the others idle."""
    chunks = []
    for stream in streams:
        cut, current = [], []
        for op, operands in stream:
            current.append((op, operands))
            if op == "RUN":
                cut.append(current)
                current = []
        if current:
            cut.append(current)
        chunks.append(cut)
    code = []
    for rnd in range(max(map(len, chunks), default=0)):
        for cut in chunks:
            if rnd < len(cut):
                code += cut[rnd]
    return code


def _cuts(n, b):
    return [n * i // b for i in range(b + 1)]


@functools.lru_cache(maxsize=1024)
def _pieces(rows, cols, units, groups):
    """Rectangles ``(r0, r1, c0, c1)`` cutting a ``rows x cols`` output into row bands times
    column bands of ``units`` work units each (of cost about proportional to their pixels),
    so that the units balance over the groups: the cut whose greedy assignment has the
    least-loaded busiest group, preferring at least :data:`MIN_UNITS_PER_GROUP` units per
    group (smaller pieces balance unequal units), then the fewest pieces (fewer RUNs and tile
    loads), then whole rows. Columns are cut only when rows alone leave groups idle or
    unequal (few output rows: a stage of a layer, a late layer with few channels)."""
    if units >= MIN_UNITS_PER_GROUP * groups:
        return ((0, rows, 0, cols),)
    least = -(-MIN_UNITS_PER_GROUP * groups // units)
    most = 4 * least

    def busiest(b, c):
        sizes = [(r1 - r0) * (c1 - c0) for r0, r1 in zip(_cuts(rows, b), _cuts(rows, b)[1:])
                 for c0, c1 in zip(_cuts(cols, c), _cuts(cols, c)[1:])]
        load = [0] * groups
        heapq.heapify(load)
        for size in sorted(sizes * units, reverse=True):
            heapq.heapreplace(load, load[0] + size)
        return max(load)

    cands = [(b, c) for b in range(1, min(rows, most) + 1)
             for c in range(1, min(cols, most // b) + 1)]
    b, c = min(cands, key=lambda bc: (busiest(*bc), bc[0] * bc[1] < least, bc[0] * bc[1],
                                      bc[1]))
    rcut, ccut = _cuts(rows, b), _cuts(cols, c)
    return tuple((r0, r1, c0, c1) for r0, r1 in zip(rcut, rcut[1:])
                 for c0, c1 in zip(ccut, ccut[1:]))


def _balance(units, groups):
    """Greedy longest-processing-time: each unit, largest first, to the least-loaded group."""
    load = [0] * groups
    queues = [[] for _ in range(groups)]
    for unit in sorted(units, key=lambda u: -u.cost):
        g = min(range(groups), key=lambda i: (load[i], i))
        load[g] += unit.cost
        queues[g].append(unit)
    return queues


def lower(qgraph, config, reorder=True):
    """Compile a quantized IR graph for ``config``; return a :class:`Program`.

    Parameters
    ----------
    qgraph : networkx.DiGraph
        The quantized IR (every node has ``scale`` and ``q``).
    config : AcceleratorConfig
    reorder : bool
        Zero-free segments (True) or the conventional baseline: zero insertion and padding in
        memory, dense stride-1 convolutions (False).

    Raises
    ------
    UnsupportedError, FitError
    """
    p = plan(qgraph, config, reorder)
    low = _Lowering(p, config)
    low.emit("COUNTERS", action=isa.CounterAction.RESET)
    low.emit("ROUTE", group_mask=low.all, bank_first=0, bank_count=config.act_banks)
    schedule = []
    prepared = [low.prepare(layer) for layer in p.layers]
    for i, layer in enumerate(p.layers):
        first = len(low.code) if schedule else 0
        stages, stats = prepared[i]
        low.emit_layer(stages, stats, prepared[i + 1][0] if i + 1 < len(p.layers) else None)
        node = ir.node(qgraph, layer.nodes[0])
        if layer.op == "Copy":     # into a Concat: no MACs of the model
            useful = 0
        else:
            useful = macs.layer_macs(node.op, ir.node(qgraph, node.inputs[0]).shape,
                                     node.shape).useful
        schedule.append({"name": layer.name, "nodes": list(layer.nodes), "op": layer.op,
                         "first": first, "last": len(low.code), "macs_useful": useful,
                         **stats})
    counters = low.image.reserve("counters", 8 * 8)
    low.emit("COUNTERS", action=isa.CounterAction.STORE, ext_addr=counters)
    low.emit("END")
    schedule[-1]["last"] = len(low.code)
    if low.zero_bytes:
        low.image.reserve("zeros", low.zero_bytes)
    return _assemble(low, p, schedule, qgraph, reorder)


def _assemble(low, p, schedule, qgraph, reorder):
    """Lay the regions out after the code, resolve references, encode."""
    base = {"code": 0}
    at = align(len(low.code) * isa.GLOBAL_BYTES)
    order = ["uops", "constants", "zeros", "inputs", "outputs", "spills", "counters"]
    for name in order:
        base[name] = at
        at += len(low.image.regions.get(name, b""))
    image = bytearray(at)

    def resolve(value):
        return base[value[0]] + value[1] if isinstance(value, tuple) else value

    code = b"".join(asm.encode("global", op, **{k: resolve(v) for k, v in operands.items()})
                    for op, operands in low.code)
    image[:len(code)] = code
    for name in order:
        blob = low.image.regions.get(name, b"")
        image[base[name]:base[name] + len(blob)] = blob

    def tensor(value, storage):
        node = qgraph.nodes[value]["node"]
        return {"addr": resolve(low.dram[storage.name]), "shape": list(node.shape),
                "scale": node.scale, "grid": storage.grid.to_dict()}

    uop_programs = []
    for (region, data), (_, offset) in low.image.seen.items():
        if region == "uops":
            uop_programs.append([base["uops"] + offset, len(data) // isa.UOP_BYTES])
    layout = {
        "code": len(low.code),
        "reorder": reorder,
        "regions": {name: [base[name], len(low.image.regions.get(name, b""))]
                    for name in ["code", *order] if name == "code" or
                    name in low.image.regions},
        "inputs": {v: tensor(v, s) for v, s in p.inputs.items()},
        "outputs": {v: tensor(v, s) for v, s in p.outputs.items()},
        "counters": resolve(("counters", 0)),
        "uop_programs": sorted(uop_programs),
        "act_buffers": {s.name: [s.act_addr, s.size] for s in p.storages if s.home == "act"},
        "spilled": [s.name for s in p.storages if s.home == "dram" and s.producer is not None
                    and not s.output],
        "layers": schedule,
    }
    layout["regions"]["code"][1] = len(code)
    return Program(low.config, bytes(image), layout)

