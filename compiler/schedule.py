"""Spreading a layer's work over the engine groups.

A layer's work units (a phase's segments for one lane tile) are cut into pieces of the output
so that there are enough to go round (:func:`cut_pieces`), given to the groups by greedy
longest-processing-time (:func:`balance`), and the groups' instruction streams are merged
round robin, one RUN per group per round (:func:`merge_streams`), and loads of the same bytes
into several groups become one load (:func:`coalesce_loads`). Pure functions of sizes, costs
and instruction lists; the lowering (:mod:`~flexigan.compiler.lower`) builds the units and the
streams.
"""

from __future__ import annotations

import functools
import heapq

from ..hw.arch import isa

__all__ = ["MIN_UNITS_PER_GROUP", "MIN_TILES_PER_GROUP", "cut_pieces", "balance", "merge_streams",
           "merge_units", "coalesce_loads"]

#: Work units per group below which a layer's units are split into row bands (so every group
#: has work, and the greedy balance has pieces to move).
MIN_UNITS_PER_GROUP = 2
#: Weight tiles per group below which a layer's lane tiles are not gathered into larger tiles:
#: a group loads its next tile while it runs one, and the last tile's RUNs, which nothing
#: overlaps, are short (a memory-bound Gemm streaming its weights: mlp_g 14,001 -> 12,732
#: cycles; small tiles of several groups load in one DMA, so they cost few memory latencies).
MIN_TILES_PER_GROUP = 8


def merge_streams(streams, costs=None):
    """The groups' instruction streams merged, each group's own order kept, in the order the
    groups would start their RUNs (each with the group's loads before it): a group holds at
    most RUN_SLOTS RUNs, and the controller waits for a free slot, blocking every later
    instruction, so a group's RUNs back to back would leave the others idle. ``costs``: per
    stream, the cycles of each of its RUNs; a RUN is issued after the other groups' RUNs that
    start before it (ties by group). Without them, round robin: one RUN per group per round."""
    units = []
    for stream in streams:
        chunks, current = [], []
        for op, operands in stream:
            current.append((op, operands))
            if op == "RUN":
                chunks.append(current)
                current = []
        units.append([chunks + [current] if current else chunks])
    return merge_units(units, [[[]] for _ in streams], costs)


def merge_units(units, loads, costs=None):
    """The groups' work units merged into one instruction list as :func:`merge_streams` merges
    streams, with the loads that several groups share.

    ``units[g][u]`` is group ``g``'s ``u``-th unit: its chunks, each the instructions up to
    and including one RUN. ``loads[g][u]`` are the instructions loading the tiles of that unit
    together with the same unit of other groups (one list object for all of them: a DMA with
    a group mask), empty when nothing loads. The list goes before the first chunk of each of
    its units, once, after the last chunk of their units before: a group ahead of the others
    waits for them, so that the loads overwrite no constant an earlier RUN of theirs still
    reads. ``costs``: as for :func:`merge_streams`, per group the cycles of its chunks."""
    groups = range(len(units))
    flat = [[(u, k) for u, unit in enumerate(mine) for k in range(len(unit))] for mine in units]
    at, clock = [0] * len(units), [0] * len(units)
    sharing = {}
    for g in groups:
        for u, load in enumerate(loads[g]):
            sharing.setdefault(id(load), []).append((g, u))
    emitted, out = set(), []

    def ready(g):
        u, k = flat[g][at[g]]
        load = loads[g][u]
        return k or not load or id(load) in emitted or all(
            at[h] == len(flat[h]) or flat[h][at[h]][0] >= v for h, v in sharing[id(load)])

    while True:
        waiting = sorted((clock[g], g) for g in groups if at[g] < len(flat[g]))
        if not waiting:
            return out
        g = next(g for _, g in waiting if ready(g))
        u, k = flat[g][at[g]]
        if not k and id(loads[g][u]) not in emitted:
            emitted.add(id(loads[g][u]))
            out += loads[g][u]
        out += units[g][u][k]
        clock[g] += costs[g][at[g]] if costs and at[g] < len(costs[g]) else 1
        at[g] += 1


#: Instructions no load is moved across (layer boundaries and machine-wide state).
_FENCES = frozenset({"BARRIER", "ROUTE", "COUNTERS", "END"})
_LOADS = frozenset({"DMA_LOAD", "UOP_LOAD"})


def _group_load(op, operands):
    """The key of a load into group memories (the same bytes to the same place), else None.
    ACT is one memory that every group shares, so its loads have none."""
    if op not in _LOADS or operands["space"] == isa.Space.ACT:
        return None
    return (op, operands["space"], operands["ext_addr"], operands["local_addr"],
            operands["length"])


def coalesce_loads(code):
    """``code`` (``(op, operands)`` pairs) with each load into group memories merged into an
    earlier load of the same bytes to the same place in other groups: one instruction whose
    group mask is the union (a DMA with a group mask writes the same bytes into every group
    of its mask, in the time of one), so identical weight tiles, PARAM entries and
    micro-programs cost one fetch and one memory latency instead of one per group.

    A load moves only over instructions that involve none of its groups, never over a fence
    (:data:`_FENCES`): every group sees its own instructions in the same order, so each
    group's memories hold the same bytes at each of its RUNs as before."""
    out = []
    for op, operands in code:
        key, mask = _group_load(op, operands), operands.get("group_mask", 0)
        target = None
        for i in range(len(out) - 1, -1, -1) if key else ():
            earlier_op, earlier = out[i]
            if earlier_op in _FENCES:
                break
            if _group_load(earlier_op, earlier) == key:
                target = i
                break
            if earlier.get("group_mask", 0) & mask:
                break
        if target is None:
            out.append((op, operands))
        else:
            earlier_op, earlier = out[target]
            out[target] = (earlier_op, {**earlier, "group_mask": earlier["group_mask"] | mask})
    return out


def _cuts(n, parts):
    """Bounds cutting ``range(n)`` into ``parts`` near-equal bands."""
    return [n * i // parts for i in range(parts + 1)]


@functools.lru_cache(maxsize=1024)
def cut_pieces(rows, cols, units, groups):
    """Rectangles ``(r0, r1, c0, c1)`` cutting a ``rows x cols`` output into row bands times
    column bands of ``units`` work units each (of cost about proportional to their pixels),
    so that the units balance over the groups: the cut whose greedy assignment has the
    least-loaded busiest group, preferring at least :data:`MIN_UNITS_PER_GROUP` units per
    group (smaller pieces balance unequal units), then the fewest pieces (fewer RUNs), then
    whole rows. Columns are cut only when rows alone leave groups idle or unequal (few output
    rows: a stage of a layer, a late layer with few channels). The pieces cost no more loads:
    a tile that several groups use loads into all of them at once (a DMA with a group mask,
    :func:`coalesce_loads` and the lowering's clusters of groups)."""
    if units >= MIN_UNITS_PER_GROUP * groups:
        return ((0, rows, 0, cols),)
    least = -(-MIN_UNITS_PER_GROUP * groups // units)
    most = 4 * least

    def busiest(row_bands, col_bands):
        row_cuts, col_cuts = _cuts(rows, row_bands), _cuts(cols, col_bands)
        sizes = [(r1 - r0) * (c1 - c0) for r0, r1 in zip(row_cuts, row_cuts[1:])
                 for c0, c1 in zip(col_cuts, col_cuts[1:])]
        load = [0] * groups
        heapq.heapify(load)
        for size in sorted(sizes * units, reverse=True):
            heapq.heapreplace(load, load[0] + size)
        return max(load)

    candidates = [(row_bands, col_bands) for row_bands in range(1, min(rows, most) + 1)
                  for col_bands in range(1, min(cols, most // row_bands) + 1)]
    row_bands, col_bands = min(candidates, key=lambda bands: (
        busiest(*bands), bands[0] * bands[1] < least, bands[0] * bands[1], bands[1]))
    row_cuts, col_cuts = _cuts(rows, row_bands), _cuts(cols, col_bands)
    return tuple((r0, r1, c0, c1) for r0, r1 in zip(row_cuts, row_cuts[1:])
                 for c0, c1 in zip(col_cuts, col_cuts[1:]))


def balance(units, groups, same=None):
    """Greedy longest-processing-time: each unit, largest first, to the least-loaded group;
    among equally loaded groups, one that already holds a unit of the same ``same(unit)``
    (its tile: loaded once for both), then the first."""
    load = [0] * groups
    queues = [[] for _ in range(groups)]
    held = [set() for _ in range(groups)]
    for unit in sorted(units, key=lambda u: -u.cost):
        kind = same(unit) if same else None
        g = min(range(groups), key=lambda i: (load[i], kind not in held[i], i))
        load[g] += unit.cost
        queues[g].append(unit)
        held[g].add(kind)
    return queues
