# amaranth: UnusedElaboratable=no
import random

import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from flexigan.hw.sparse import SparseCore
from tests.hw.streams import Pauses, get, put, simulate

STEP = data.StructLayout({"act": signed(8), "widx": unsigned(12), "last": 1})


def make_groups(rng, n, zero_p):
    groups = []
    for _ in range(n):
        size = rng.choice([1, 1, 2, 3, rng.randint(4, 12)])
        groups.append([(0 if rng.random() < zero_p else rng.choice([-128, 127, 1, -1,
                                                                       rng.randint(-128, 127)]),
                        rng.randrange(4096)) for _ in range(size)])
    return groups


def model(groups, bypass):
    """What the sparse core must emit, and how many steps it skips."""
    out, skipped = [], 0
    for group in groups:
        if bypass:
            kept = list(group)
        else:
            kept = [s for s in group if s[0] != 0]
            skipped += len(group) - len(kept)
            if not kept:
                kept = [group[-1]]
        out += [(a, w, int(i == len(kept) - 1)) for i, (a, w) in enumerate(kept)]
    return out, skipped


@pytest.mark.parametrize("lanes", [1, 5])
@pytest.mark.parametrize("bypass", [False, True])
@pytest.mark.parametrize("seed,zero_p,p_in,p_out", [
    (0, 0.5, 0.0, 0.0), (1, 0.5, 0.5, 0.0), (2, 0.5, 0.0, 0.5), (3, 0.3, 0.4, 0.4),
    (4, 0.9, 0.3, 0.6), (5, 0.0, 0.2, 0.2), (6, 1.0, 0.1, 0.1),
])
def test_sparse_core_drops_zeros_and_keeps_group_ends(bypass, lanes, seed, zero_p, p_in,
                                                     p_out):
    rng = random.Random(seed)
    groups = make_groups(rng, 60, zero_p)
    expect, skipped = model(groups, bypass)
    dut = SparseCore(STEP)
    steps = [(a, w, int(i == len(g) - 1)) for g in groups for i, (a, w) in enumerate(g)]

    async def driver(ctx):
        ctx.set(dut.bypass, bypass)
        ctx.set(dut.lanes, lanes)
        pauses = Pauses(p_in, seed)
        for a, w, last in steps:
            await put(ctx, dut.i, {"act": a, "widx": w, "last": last}, pauses)

    async def checker(ctx):
        pauses = Pauses(p_out, seed + 100)
        for a, w, last in expect:
            got = await get(ctx, dut.o, pauses)
            assert (got.act, got.widx, got.last) == (a, w, last)
        await ctx.tick().repeat(3)
        assert not ctx.get(dut.o.valid)
        assert ctx.get(dut.skipped) == skipped * lanes
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert ctx.get(dut.skipped) == 0

    simulate(dut, driver, checker)


def test_sparse_core_full_throughput():
    """Back-to-back non-zero steps flow at one per cycle; zeros cost no output cycle."""
    dut = SparseCore(STEP)
    steps = [(5, 1, 0), (0, 2, 0), (0, 3, 0), (6, 4, 0), (7, 5, 1)] * 20

    async def driver(ctx):
        ctx.set(dut.lanes, 1)
        for a, w, last in steps:
            await put(ctx, dut.i, {"act": a, "widx": w, "last": last})

    async def checker(ctx):
        ctx.set(dut.o.ready, 1)
        cycles, got = 0, 0
        while got < 60:
            got += ctx.get(dut.o.valid)
            cycles += 1
            await ctx.tick()
        # 100 input steps at one per cycle, plus one cycle in the holding register.
        assert cycles == 101

    simulate(dut, driver, checker)


def test_sparse_core_layout_errors():
    with pytest.raises(ValueError, match="must have an 'act' field"):
        SparseCore(data.StructLayout({"last": 1}))
    with pytest.raises(ValueError, match="'last' field must be 1 bit wide"):
        SparseCore(data.StructLayout({"act": signed(8), "last": 2}))
