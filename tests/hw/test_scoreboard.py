# amaranth: UnusedElaboratable=no
"""The controller's RUN scoreboard: release after the DMAs before a RUN, order, and the ranges a
RUN reads (from its registers and, decoded by the group's decoder, from its micro-program),
against a model of docs/isa.md."""

import itertools
import random

import pytest

from flexigan.compiler import asm
from flexigan.hw.arch import isa
from flexigan.hw.arch.config import RUN_SLOTS, AcceleratorConfig
from flexigan.hw.arch.timing import SCAN_CYCLES, SCAN_DRAIN
from flexigan.hw.scoreboard import SEQ_BITS, RunScoreboard
from tests.hw.streams import Pauses, get, put, simulate

CONFIG = AcceleratorConfig(groups=2, lanes=4, act_banks=4, act_bank_bytes=256, weight_bytes=256,
                           param_entries=16, uop_depth=16, axi_data_width=32, mem_latency=4,
                           burst_bytes=64)
TABLES = CONFIG.lut_tables
WORD = CONFIG.axi_bytes
SEQ = 1 << SEQ_BITS


def run_args(**args):
    return {"group_mask": 1, "uop_addr": 0, "uop_count": 0, "rows": 1, "cols": 1,
            "lanes": CONFIG.lanes, **args}


async def load(ctx, dut, at, text):
    """Writes the micro-program ``text`` at micro-op ``at`` (as UOP_LOAD's chunks do); returns
    its length in micro-ops."""
    code = asm.assemble(text, "uop")
    base = at * isa.UOP_BYTES
    for offset in range(0, len(code), WORD):
        ctx.set(dut.uop_w.valid, 1)
        ctx.set(dut.uop_w.payload, {"addr": base + offset, "mask": (1 << WORD) - 1,
                                    "data": int.from_bytes(code[offset:offset + WORD],
                                                           "little")})
        await ctx.tick()
    ctx.set(dut.uop_w.valid, 0)
    return len(code) // isa.UOP_BYTES


async def conflict(ctx, dut, space, lo, hi, group=1):
    """The scoreboard's answer to a query (the query and the answer registered: two cycles
    later)."""
    ctx.set(dut.query, {"space": space, "lo": lo, "hi": hi, "group": group})
    await ctx.tick().repeat(2)
    return ctx.get(dut.conflict)


def weights_read(text, args):
    """The weight bytes the RUN reads, by docs/isa.md."""
    count, stride, base, lane_stride, macs = [1] * 3, [0] * 3, 0, 0, 0
    for op, operands in (isa.decode_uop(int.from_bytes(word, "little")) for word in
                         _words(asm.assemble(text, "uop"))):
        if op == isa.UopOp.LOOP:
            count[operands["level"]] = operands["count"]
            stride[operands["level"]] = operands["wgt_stride"]
        elif op == isa.UopOp.WGT:
            base, lane_stride = operands["base"], operands["lane_stride"]
        elif op == isa.UopOp.MAC:
            macs += 1
    if not macs:
        return set()
    return {args.get("wgt_offset", 0) + base + lane * lane_stride +
            sum(i * s for i, s in zip(tap, stride))
            for tap in itertools.product(*(range(c) for c in count))
            for lane in range(args["lanes"])}


def tables_read(use_lut, lut, per_lane, lut_offset, lanes):
    """The activation tables a RUN with this POST reads, by docs/isa.md."""
    if not use_lut:
        return set()
    return {(lut_offset + lut + (lane if per_lane else 0)) % TABLES for lane in range(lanes)}


def _words(code):
    return [code[k:k + isa.UOP_BYTES] for k in range(0, len(code), isa.UOP_BYTES)]


@pytest.mark.parametrize("done, tag", [(5, 7), (SEQ - 6, 1)])
def test_a_run_waits_for_the_dmas_before_it_and_leaves_once_they_are_done(done, tag):
    dut = RunScoreboard(CONFIG)
    run = run_args(rows=3, cols=5, act_offset=77)

    async def bench(ctx):
        ctx.set(dut.done, done)
        await put(ctx, dut.issue, {"run": run, "tag": tag})
        ctx.set(dut.run.ready, 1)
        assert (ctx.get(dut.count), ctx.get(dut.waiting)) == (1, 1)
        finished = done
        while finished != tag:
            for _ in range(5):
                assert not ctx.get(dut.run.valid)
                # Not released: no DMA waits for it, not even one into ACT.
                assert not await conflict(ctx, dut, isa.Space.ACT, 0, 1)
                await ctx.tick()
            finished = (finished + 1) % SEQ
            ctx.set(dut.done, finished)
        await ctx.tick()
        assert ctx.get(dut.run.valid)
        assert ctx.get(dut.run.payload).act_offset == 77
        assert await conflict(ctx, dut, isa.Space.ACT, 0, 1)
        await ctx.tick()
        assert not ctx.get(dut.run.valid)
        assert (ctx.get(dut.count), ctx.get(dut.waiting)) == (1, 0)

    simulate(dut, bench)


@pytest.mark.parametrize("seed, p_issue, p_busy, p_dma, hold", [
    (0, 0.0, 0.0, 0.0, 1), (1, 0.5, 0.2, 0.6, 8), (2, 0.2, 0.7, 0.3, 20), (3, 0.0, 0.0, 0.8, 40),
])
def test_runs_leave_in_order_each_once_its_dmas_are_done(seed, p_issue, p_busy, p_dma, hold):
    rng = random.Random(seed)
    start = SEQ - 20                          # the sequence numbers wrap around
    tags, tag = [], start
    for _ in range(50):
        tag += rng.choice([0, 0, 1, 2])
        tags.append(tag)
    runs = [run_args(rows=n, act_offset=rng.getrandbits(24)) for n in range(len(tags))]
    dut = RunScoreboard(CONFIG)
    done_at = {start: -1}                     # the cycle each number of DMAs was done in
    taken = []

    async def issuer(ctx):
        await ctx.tick()
        pauses = Pauses(p_issue, seed)
        for run, tag in zip(runs, tags):
            await put(ctx, dut.issue, {"run": run, "tag": tag % SEQ}, pauses)

    async def dma(ctx):
        pauses = Pauses(p_dma, seed + 1)
        done, cycle = start, 0
        ctx.set(dut.done, done % SEQ)
        while done < tags[-1]:
            while pauses.p and pauses.rng.random() < pauses.p:
                await ctx.tick()
                cycle += 1
            done += 1
            ctx.set(dut.done, done % SEQ)
            done_at[done] = cycle
            await ctx.tick()
            cycle += 1

    async def group(ctx):
        # Takes RUNs while it holds fewer than RUN_SLOTS, and completes each, in order,
        # after up to ``hold`` cycles.
        held = []
        cycle = 0
        while len(taken) < len(runs) or held:
            ctx.set(dut.held, (1 << len(held)) - 1)
            take = len(held) < RUN_SLOTS and rng.random() >= p_busy
            ctx.set(dut.run.ready, take)
            assert ctx.get(dut.count) <= RUN_SLOTS
            assert ctx.get(dut.issue.ready) == (ctx.get(dut.count) < RUN_SLOTS)
            assert ctx.get(dut.waiting) <= ctx.get(dut.count)
            _, _, valid, run = await ctx.tick().sample(dut.run.valid, dut.run.payload)
            if held:
                held[0] -= 1
                if held[0] == 0:
                    held.pop(0)
            if take and valid:
                # Its last DMA was done in an earlier cycle.
                assert done_at.get(tags[len(taken)], cycle) < cycle
                taken.append(run.rows)
                held.append(rng.randrange(1, hold + 1))
            cycle += 1
        ctx.set(dut.held, 0)
        # Every entry is freed (after the scanner is done with it: SCAN_CYCLES + SCAN_DRAIN
        # per RUN of no micro-ops, each of RUN_SLOTS RUNs perhaps not yet scanned).
        for _ in range(RUN_SLOTS * (SCAN_CYCLES + SCAN_DRAIN + 1)):
            await ctx.tick()
        assert (ctx.get(dut.count), ctx.get(dut.waiting)) == (0, 0)

    simulate(dut, issuer, dma, group)
    assert taken == list(range(len(runs)))


# A 3x3x2 tap nest, 4 lanes: each lane reads offsets 0, 4 (level 2), 8, 16 (level 1), 24, 48
# (level 0) from WGT.base + lane.
CONV = """
    LOOP level=0 count=3 act_stride=16 wgt_stride=24
    LOOP level=1 count=3 act_stride=2 wgt_stride=8
    LOOP level=2 count=2 act_stride=1 wgt_stride=4
    WGT base=5 lane_stride=1
    CLEAR use_bias=1
    MAC
    POST use_lut=0 lut=0 per_lane=0
    WRITE row_stride=32 col_stride=8 lane_stride=2
"""
# Negative strides walk down from WGT.base; the last LOOP of a level wins.
DOWN = """
    LOOP level=1 count=9 act_stride=1 wgt_stride=3
    WGT base=90 lane_stride=1
    LOOP level=1 count=4 act_stride=1 wgt_stride=-8
    LOOP level=0 count=2 act_stride=1 wgt_stride=-30
    MAC
    MAC
"""
PROGRAMS = {
    "conv": (CONV, {"wgt_offset": 16}),
    "negative strides": (DOWN, {"wgt_offset": 40, "lanes": 3}),
    "no MAC": (CONV.replace("MAC", "NOP"), {}),
    "an empty tap nest": (CONV.replace("count=3", "count=0", 1), {}),
    "no lanes": (CONV, {"lanes": 0}),
}
# Programs whose reads the scoreboard takes as every weight: a lane stride the group rejects,
# addresses that leave the buffer (they wrap), a span far beyond it.
WHOLE = {
    "lane stride": (CONV.replace("lane_stride=1", "lane_stride=7", 1), {}),
    "below 0": (DOWN.replace("base=90", "base=10"), {"wgt_offset": 0}),
    "beyond the end": (CONV, {"wgt_offset": CONFIG.weight_bytes - 20}),
    "a huge span": (CONV.replace("count=3 act_stride=16 wgt_stride=24",
                                 "count=60000 act_stride=16 wgt_stride=-8000000"), {}),
}


@pytest.mark.parametrize("name", PROGRAMS)
def test_a_dma_into_the_weights_waits_for_an_earlier_run_that_reads_them(name):
    text, args = PROGRAMS[name]
    args = run_args(**args)
    reads = weights_read(text, args)
    window = range(-10, CONFIG.weight_bytes)
    dut = RunScoreboard(CONFIG)

    async def conflicts(ctx):
        return {at for at in window if await conflict(ctx, dut, isa.Space.WGT, at, at + 1)}

    async def bench(ctx):
        at = 3
        count = await load(ctx, dut, at, text)
        await put(ctx, dut.issue, {"run": {**args, "uop_addr": at, "uop_count": count},
                                   "tag": 0})
        # Recorded ENTRY cycles after its issue, released the cycle after.
        await ctx.tick().repeat(RunScoreboard.ENTRY)
        assert not ctx.get(dut.run.valid)
        await ctx.tick()
        # Released; its micro-program is not read yet: it may read every weight.
        assert ctx.get(dut.run.valid)
        assert await conflict(ctx, dut, isa.Space.WGT, CONFIG.weight_bytes - 1, CONFIG.weight_bytes)
        assert not await conflict(ctx, dut, isa.Space.WGT, 0, CONFIG.weight_bytes, group=0)
        # The scan does not wait for the group to take the RUN.
        await ctx.tick().repeat(count + 4 + SCAN_DRAIN)
        assert not ctx.get(dut.run.ready)
        got = await conflicts(ctx)
        assert reads <= got
        if reads:
            assert got == set(range(min(reads), max(reads) + 1)) & set(window)
        else:
            assert got == set()
        # The group takes the RUN and holds it; once it is complete, nothing waits for it.
        await get(ctx, dut.run)
        ctx.set(dut.held, 1)
        await ctx.tick().repeat(3)
        assert await conflicts(ctx) == got
        assert await conflict(ctx, dut, isa.Space.ACT, 0, 1)
        ctx.set(dut.held, 0)
        await ctx.tick().repeat(2)
        assert await conflicts(ctx) == set()
        assert not await conflict(ctx, dut, isa.Space.ACT, 0, 1)
        assert ctx.get(dut.count) == 0

    simulate(dut, bench)


@pytest.mark.parametrize("name", WHOLE)
def test_a_run_whose_weight_reads_leave_the_buffer_counts_as_reading_them_all(name):
    text, args = WHOLE[name]
    dut = RunScoreboard(CONFIG)

    async def bench(ctx):
        count = await load(ctx, dut, 0, text)
        await put(ctx, dut.issue, {"run": {**run_args(**args), "uop_count": count}, "tag": 0})
        await ctx.tick().repeat(count + 5 + SCAN_DRAIN)
        assert all([await conflict(ctx, dut, isa.Space.WGT, at, at + 1)
                    for at in range(CONFIG.weight_bytes)])

    simulate(dut, bench)


@pytest.mark.parametrize("use_lut, lut, per_lane, lut_offset, lanes", [
    (1, 3, 0, 2, 4), (1, 3, 1, 2, 4), (1, 250, 1, 9, 3), (0, 3, 1, 2, 4), (1, 6, 1, 0, 0),
    (1, 1, 1, 0, 12),
])
def test_a_dma_into_the_activation_tables_waits_for_an_earlier_run_that_reads_them(
        use_lut, lut, per_lane, lut_offset, lanes):
    text = f"POST use_lut={use_lut} lut={lut} per_lane={per_lane}\nWRITE lane_stride=1"
    reads = tables_read(use_lut, lut, per_lane, lut_offset, lanes)
    dut = RunScoreboard(CONFIG)

    async def bench(ctx):
        count = await load(ctx, dut, 0, text)
        await put(ctx, dut.issue, {"run": run_args(uop_count=count, lut_offset=lut_offset,
                                                   lanes=lanes), "tag": 0})
        await ctx.tick()
        assert await conflict(ctx, dut, isa.Space.LUT, 0, TABLES)    # not read yet: every table
        await ctx.tick().repeat(count + 4 + SCAN_DRAIN)
        got = {t for t in range(TABLES) if await conflict(ctx, dut, isa.Space.LUT, t, t + 1)}
        assert got == reads
        assert await conflict(ctx, dut, isa.Space.LUT, 0, TABLES) == bool(reads)
        assert not await conflict(ctx, dut, isa.Space.LUT, 0, TABLES, group=0)

    simulate(dut, bench)


@pytest.mark.parametrize("text, params", [("NOP", 2), ("NORM step=SAVE", 2),
                                           ("NORM step=FINISH count=9", 6)])
def test_the_micro_ops_and_parameters_a_run_reads_come_from_its_registers(text, params):
    """The micro-ops and PARAM entries from the RUN's registers: its lanes' entries, 3 x lanes
    for a NORM FINISH, which it counts as until its micro-program is read."""
    dut = RunScoreboard(CONFIG)

    async def bench(ctx):
        count = await load(ctx, dut, 5, "\n".join([text] * 3))
        await put(ctx, dut.issue, {"run": run_args(uop_addr=5, uop_count=count,
                                                   param_offset=9, lanes=2), "tag": 0})
        await ctx.tick().repeat(RunScoreboard.ENTRY + 1)
        assert await conflict(ctx, dut, isa.Space.PARAM, 14, 15)      # not read yet
        await ctx.tick().repeat(count + SCAN_CYCLES + SCAN_DRAIN)
        for space, first, end in ((isa.Space.UOP, 5, 8), (isa.Space.PARAM, 9, 9 + params)):
            got = {at for at in range(16) if await conflict(ctx, dut, space, at, at + 1)}
            assert got == set(range(first, end))
            assert await conflict(ctx, dut, space, 0, 16)
            assert not await conflict(ctx, dut, space, 0, first)
            assert not await conflict(ctx, dut, space, end, 16)
            assert not await conflict(ctx, dut, space, 0, 16, group=0)

    simulate(dut, bench)


def test_the_scan_follows_the_runs_in_order():
    """Two released RUNs: the second's micro-program is read after the first's, and each RUN
    keeps its own ranges."""
    dut = RunScoreboard(CONFIG)
    first = (CONV, run_args(wgt_offset=0, lanes=1))
    second = (CONV.replace("base=5", "base=100"), run_args(wgt_offset=0, lanes=1))

    async def bench(ctx):
        where = []
        at = 0
        for text, _ in (first, second):
            count = await load(ctx, dut, at, text)
            where.append((at, count))
            at += count
        for (at, count), (_, args) in zip(where, (first, second)):
            await put(ctx, dut.issue, {"run": {**args, "uop_addr": at, "uop_count": count},
                                       "tag": 0})
        await ctx.tick().repeat(2 * (where[0][1] + 3 + SCAN_DRAIN))
        reads = weights_read(*first) | weights_read(*second)
        got = {at for at in range(CONFIG.weight_bytes)
               if await conflict(ctx, dut, isa.Space.WGT, at, at + 1)}
        assert got == set(range(5, 5 + 68 + 1)) | set(range(100, 100 + 68 + 1))
        assert reads <= got

    simulate(dut, bench)
