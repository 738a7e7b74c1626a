"""What the compiler knows of each engine group's on-chip memories, and the loads that put a
layer's constants there.

A group holds its constants in two halves of its weight buffer, PARAM entries and activation
tables (double buffering: a tile loads into one half while the RUNs of the other run). The
lowering (:mod:`~flexigan.compiler.lower`) asks :class:`Memories` where a tile sits and gets
the DMA that loads what is missing: a DMA with a group mask writes the same bytes into every
group of its mask in the time of one, so the tiles of several groups, a stage's PARAM entries
and a shared activation table load once for many groups, and each group uses its own part.
Nothing here is timed; the loads are instructions ``(op, operands)`` whose external addresses
are ``(region, offset)`` references into the image under construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..hw.arch import isa

__all__ = ["instruction", "Place", "GroupMemory", "Memories"]


def instruction(op, **operands):
    """A global instruction, its operands' addresses in external memory given as ``(region,
    offset)`` references until the image is laid out."""
    return (op, operands)


@dataclass(frozen=True)
class Place:
    """Where a tile's constants sit in a group: the half of the buffers, and the addresses of
    its weights (in WGT), of its PARAM entries and of its first LUT."""

    half: int
    wgt_base: int
    param_base: int
    lut_offset: int


@dataclass
class GroupMemory:
    """What the compiler knows of one group's memories, to skip reloads: per half, the tiles
    it holds (key -> their weights' and PARAM entries' offsets in the half)."""

    halves: list = field(default_factory=lambda: [{}, {}])
    whole: int | None = None    # the half whose tile's weights fill the whole buffer
    luts: list = field(default_factory=lambda: [None, None])
    last: int = 1
    uops: dict = field(default_factory=dict)
    uop_next: int = 0
    params: dict = field(default_factory=dict)     # a stage's tiles' PARAM entries (key -> entry)
    tiles_loaded: int = 0


class Memories:
    """The groups' memories (a :class:`GroupMemory` each) for ``config``, and the loads that
    fill them, whose bytes go into ``image`` (an
    :class:`~flexigan.compiler.program.ImageBuilder`)."""

    def __init__(self, config, image):
        self.config, self.image = config, image
        self.groups = [GroupMemory() for _ in range(config.groups)]
        self.half_bytes = config.weight_bytes // 2
        self.half_params = config.param_entries // 2
        self.shared_half = 1        # the half of the tables the last shared LUT went into
        # The halves of the PARAM entries whose entries the last stage's RUNs read.
        self.params_read = frozenset()

    def resident(self, g, tile):
        """The :class:`Place` of ``tile`` in group ``g``, or None when it is not there."""
        group = self.groups[g]
        for half, tiles in enumerate(group.halves):
            if tile.key in tiles:
                weights, params = tiles[tile.key]
                base = 0 if group.whole == half else half * self.half_bytes
                # One table serves from either half.
                tables = half if group.luts[half] == tile.lut or tile.lut not in group.luts \
                    else group.luts.index(tile.lut)
                params = group.params.get(tile.key, half * self.half_params + params)
                return Place(half, base + weights, params, tables * self.config.lanes)
        return None

    def load_tiles(self, members, code, lut=True, scatter=False):
        """``{g: place}``: where the tiles ``members = [(g, tile)]`` sit in their groups,
        appending to ``code`` the loads of those not there, into the half the first of their
        groups used least recently (double buffering). One DMA per memory loads them all: a
        DMA with a group mask writes the same bytes into every group of its mask, so the
        distinct tiles go one after the other and each group uses its own. The members' tiles
        fit half the weight buffer and PARAM entries together and share their LUT, unless
        there is one: a tile larger than half the weight buffer takes all of it (its PARAM
        entries and LUTs still go in one half). ``lut=False``: not their LUT (a shared table
        that :meth:`load_shared_lut` loads). ``scatter``: the members' tiles are each group's
        own (a broadcast layer's): a scatter DMA per memory puts each at the start of its
        group's half (:meth:`_scatter_tiles`), all loaded again if one is missing."""
        places = {g: self.resident(g, tile) for g, tile in members}
        missing = [(g, tile) for g, tile in members if places[g] is None]
        if not missing:
            return places
        if scatter:
            return self._scatter_tiles(members, code, lut)
        half = 1 - self.groups[missing[0][0]].last
        offsets, weights, params = {}, b"", b""
        for _, tile in missing:
            if tile.key not in offsets:
                offsets[tile.key] = (len(weights), len(params) // isa.PARAM_BYTES)
                weights, params = weights + tile.weights, params + tile.params
        whole = len(weights) > self.half_bytes
        table = missing[0][1].lut if lut else None
        mask = lut_mask = 0
        for g, _ in missing:
            mask |= 1 << g
            lut_mask |= self._hold(g, half, offsets, table, whole) << g
        if weights:
            code.append(instruction("DMA_LOAD", space=isa.Space.WGT, group_mask=mask,
                                     ext_addr=self.image.put("constants", weights),
                                     local_addr=0 if whole else half * self.half_bytes,
                                     length=len(weights)))
        if not all(tile.key in self.groups[g].params for g, tile in missing):
            code.append(instruction("DMA_LOAD", space=isa.Space.PARAM, group_mask=mask,
                                     ext_addr=self.image.put("constants", params),
                                     local_addr=half * self.half_params, length=len(params)))
        code += self._table_load(lut_mask, table, half)
        return {g: self.resident(g, tile) for g, tile in members}

    def _hold(self, g, half, offsets, table, whole=False):
        """Record that group ``g``'s ``half`` now holds the tiles ``offsets`` (key -> their
        weights' and PARAM entries' offsets; ``whole``: weights filling the whole buffer) and
        ``table`` (None: none); whether that table must be loaded for it (a shared table stays
        loaded across the tiles of a layer)."""
        group = self.groups[g]
        if whole or group.whole == 1 - half:
            group.halves[1 - half] = {}     # its weights are overwritten
        group.whole = half if whole else None
        group.halves[half] = dict(offsets)
        group.last = half
        group.tiles_loaded += 1
        if not table or group.luts[half] == table or \
                (len(table) == isa.LUT_BYTES and table in group.luts):
            return False
        group.luts[half] = table
        return True

    def _table_load(self, mask, table, half):
        """The DMA of ``table`` into the groups of ``mask`` (none for 0), in ``half``."""
        if not mask:
            return []
        return [instruction("DMA_LOAD", space=isa.Space.LUT, group_mask=mask,
                            ext_addr=self.image.put("constants", table),
                            local_addr=half * self.config.lanes, length=len(table))]

    def _scatter_tiles(self, members, code, lut):
        """:meth:`load_tiles` of each group's own tile: its weights and PARAM entries at the
        start of the half its group used least recently, in one scatter DMA per memory for
        all the members (the k-th tile to the k-th group), so that one RUN instruction with
        the same offsets serves every group."""
        half = 1 - self.groups[members[0][0]].last
        table = members[0][1].lut if lut else None
        lut_mask = 0
        for g, tile in members:
            lut_mask |= self._hold(g, half, {tile.key: (0, 0)}, table) << g
        code += self.scatter("DMA_LOAD", isa.Space.WGT, [(g, t.weights) for g, t in members],
                             half * self.half_bytes, self.half_bytes)
        if not all(tile.key in self.groups[g].params for g, tile in members):
            code += self.scatter("DMA_LOAD", isa.Space.PARAM,
                                 [(g, t.params) for g, t in members], half * self.half_params,
                                 self.half_params * isa.PARAM_BYTES)
        code += self._table_load(lut_mask, table, half)
        return {g: self.resident(g, tile) for g, tile in members}

    def load_uops(self, g, program, code):
        """UOP address of ``program`` in group ``g``, appending to ``code`` its load (over the
        oldest programs when the memory is full) if it is not there."""
        group = self.groups[g]
        if program not in group.uops:
            count = len(program) // isa.UOP_BYTES
            if group.uop_next + count > self.config.uop_depth:
                group.uops.clear()
                group.uop_next = 0
            code.append(instruction("UOP_LOAD", space=isa.Space.UOP, group_mask=1 << g,
                                     ext_addr=self.image.put("uops", program),
                                     local_addr=group.uop_next, length=len(program)))
            group.uops[program] = group.uop_next
            group.uop_next += count
        return group.uops[program]

    def scatter(self, op, space, parts, local_addr, room, region="constants"):
        """The loads of ``parts = [(g, blob)]``, each group's bytes at ``local_addr`` (units
        of ``space``) of its own memory: one DMA of the blobs one after the other, each padded
        with zeros to one chunk, the k-th chunk to the k-th group of the mask (``chunk``,
        docs/isa.md), in the time of one memory latency; else (a local address off the bus
        word, or a padded chunk longer than ``room`` bytes) one DMA per group."""
        word = math.lcm(self.config.axi_bytes, isa.unit_bytes(space))
        chunk = -(-max(len(blob) for _, blob in parts) // word) * word
        if len(parts) > 1 and local_addr * isa.unit_bytes(space) % self.config.axi_bytes == 0 \
                and chunk <= room:
            data = b"".join(blob.ljust(chunk, b"\0") for _, blob in sorted(parts))
            return [instruction(op, space=space, group_mask=sum(1 << g for g, _ in parts),
                                ext_addr=self.image.put(region, data), local_addr=local_addr,
                                length=len(data), chunk=chunk)]
        return [instruction(op, space=space, group_mask=1 << g,
                            ext_addr=self.image.put(region, blob), local_addr=local_addr,
                            length=len(blob)) for g, blob in parts]

    def param_tables(self, queues, broadcast, clusters):
        """The DMA loading the PARAM entries of all the tiles of a stage (the groups' ``queues``
        of units; ``broadcast``: of broadcast RUNs) at once, as tables (one DMA however many
        units a group runs): one table for all the groups, or one per group when a broadcast
        RUN needs each group's entries at the same place or the groups' together do not fit
        half the entries. Only when they fit and take fewer DMAs than the tiles' own loads
        (one per unit of a group, or of a cluster of groups: ``clusters``, None for a
        broadcast stage), into the half of the entries that the last stage's RUNs do not read
        (so it loads while they run: a half they read would make it wait for them); the
        tiles' loads then leave their PARAM entries out. None when the stage's are there
        already, or when the last stage's RUNs read both halves."""
        if all(unit.tile.key in self.groups[g].params for g, queue in enumerate(queues)
               for unit in queue):
            return []
        busy = [g for g, queue in enumerate(queues) if queue]
        parts = [[g] for g in busy]
        if not broadcast:
            parts.insert(0, busy)
        clusters = clusters or parts
        per_tile = sum(max(len(queues[g]) for g in cluster) for cluster in clusters)
        tables = []
        for part in parts:
            tiles = {unit.tile.key: unit.tile for g in part for unit in queues[g]}
            tables.append((part, tiles, b"".join(tile.params for tile in tiles.values())))
        if broadcast or len(tables[0][2]) > self.half_params * isa.PARAM_BYTES:
            tables = tables[1:] if not broadcast else tables
        else:
            tables = tables[:1]
        if len(self.params_read) > 1 or len({blob for *_, blob in tables}) >= per_tile or \
                any(len(blob) > self.half_params * isa.PARAM_BYTES for *_, blob in tables):
            return []
        half = 1 - max(self.params_read, default=1)
        self.params_read = frozenset({half})
        base = half * self.half_params
        for part, tiles, _ in tables:
            at = base
            offsets = {}
            for key, tile in tiles.items():
                offsets[key] = at
                at += len(tile.params) // isa.PARAM_BYTES
            for g in part:
                self.groups[g].params = offsets
        if broadcast:       # a table per group, each at the same place: one scatter DMA
            return self.scatter("DMA_LOAD", isa.Space.PARAM,
                                [(part[0], blob) for part, _, blob in tables], base,
                                self.half_params * isa.PARAM_BYTES)
        return [instruction("DMA_LOAD", space=isa.Space.PARAM,
                            group_mask=sum(1 << g for g in part),
                            ext_addr=self.image.put("constants", blob), local_addr=base,
                            length=len(blob)) for part, _, blob in tables]

    def load_shared_lut(self, lut):
        """The DMA loading ``lut``, a table that every RUN of a layer uses, into the groups
        that lack it: one table, in the half of the tables that the last shared table did not
        take, so the next layer's table loads while this layer's RUNs read theirs."""
        lacking = [g for g, group in enumerate(self.groups) if lut not in group.luts]
        if not lacking:
            return []
        self.shared_half = 1 - self.shared_half
        for g in lacking:
            self.groups[g].luts[self.shared_half] = lut
        return self._table_load(sum(1 << g for g in lacking), lut, self.shared_half)
