# amaranth: UnusedElaboratable=no
import random

import pytest

from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.hw.sparse import SparseCore
from tests.hw.streams import Pauses, get, put, simulate

CONFIG = AcceleratorConfig(axi_data_width=64)
WIDTH = CONFIG.bundle_width
WMASK = (1 << CONFIG.wgt_addr_width) - 1


def make_groups(rng, n, zero_p):
    """Groups of bundles (the taps of a MAC pass), each ``(acts, wgt_addr, wgt_stride)``."""
    groups = []
    for _ in range(n):
        size = rng.choice([1, 1, 2, 3, rng.randint(4, 8)])
        groups.append([([0 if rng.random() < zero_p else rng.choice([-128, 127, 1, -1,
                                                                      rng.randint(-128, 127)])
                         for _ in range(rng.randint(1, WIDTH))],
                        rng.randrange(WMASK + 1), rng.randrange(WMASK + 1))
                       for _ in range(size)])
    return groups


def model(groups, bypass, null=False):
    """What the sparse core must emit ``(act, wgt_addr, last, null)``, and the zero taps it
    skips."""
    out, skipped = [], 0
    for group in groups:
        for b, (acts, w, s) in enumerate(group):
            taps = [(a, (w + j * s) & WMASK) for j, a in enumerate(acts)]
            kept = taps if bypass else [t for t in taps if t[0] != 0]
            skipped += 0 if bypass or null else len(taps) - len(kept)
            is_null = null or not kept
            kept = kept or [(0, w)]
            last = b == len(group) - 1
            out += [(a, wa, int(last and i == len(kept) - 1), int(is_null))
                    for i, (a, wa) in enumerate(kept)]
    return out, skipped


def bundles(groups, null=False):
    for group in groups:
        for b, (acts, w, s) in enumerate(group):
            yield {"acts": acts + [0] * (WIDTH - len(acts)), "n": len(acts), "wgt_addr": w,
                   "wgt_stride": s, "last": int(b == len(group) - 1), "null": int(null)}


@pytest.mark.parametrize("lanes", [1, 5])
@pytest.mark.parametrize("bypass", [False, True])
@pytest.mark.parametrize("seed,zero_p,p_in,p_out", [
    (0, 0.5, 0.0, 0.0), (1, 0.5, 0.5, 0.0), (2, 0.5, 0.0, 0.5), (3, 0.3, 0.4, 0.4),
    (4, 0.9, 0.3, 0.6), (5, 0.0, 0.2, 0.2), (6, 1.0, 0.1, 0.1),
])
def test_sparse_core_drops_zeros_and_keeps_group_ends(bypass, lanes, seed, zero_p, p_in,
                                                     p_out):
    rng = random.Random(seed)
    groups = make_groups(rng, 40, zero_p)
    expect, skipped = model(groups, bypass)
    dut = SparseCore(CONFIG)

    async def driver(ctx):
        ctx.set(dut.bypass, bypass)
        pauses = Pauses(p_in, seed)
        for bundle in bundles(groups):
            await put(ctx, dut.i, {**bundle, "lanes": lanes}, pauses)

    async def checker(ctx):
        pauses = Pauses(p_out, seed + 100)
        for n, want in enumerate(expect):
            got = await get(ctx, dut.o, pauses)
            assert (got.act, got.wgt_addr, got.last, got.null) == want, n
            assert got.lanes == lanes
        await ctx.tick().repeat(3)
        assert not ctx.get(dut.o.valid)
        assert ctx.get(dut.skipped) == skipped * lanes
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert ctx.get(dut.skipped) == 0

    simulate(dut, driver, checker)


@pytest.mark.parametrize("bypass", [False, True])
def test_sparse_core_null_bundles_multiply_nothing(bypass):
    """The null step of an empty tap nest: one null tap, and no multiply counted as skipped."""
    groups = [[([0], 3, 0)]] * 5
    expect, _ = model(groups, bypass, null=True)
    dut = SparseCore(CONFIG)

    async def driver(ctx):
        ctx.set(dut.bypass, bypass)
        for bundle in bundles(groups, null=True):
            await put(ctx, dut.i, {**bundle, "lanes": 4})

    async def checker(ctx):
        for want in expect:
            got = await get(ctx, dut.o)
            assert (got.act, got.wgt_addr, got.last, got.null) == want
        assert ctx.get(dut.skipped) == 0

    simulate(dut, driver, checker)


def test_sparse_core_one_cycle_per_kept_tap():
    """A bundle takes max(1, non-zero taps) cycles; bundles follow each other without a gap."""
    group = [([5, 0, 0, 6], 0, 1), ([0, 0, 0, 0], 4, 1), ([0, 7], 8, 1), ([1, 2, 3], 10, 1)]
    expect, _ = model([group] * 20, bypass=False)
    assert len(expect) == 20 * (2 + 1 + 1 + 3)
    dut = SparseCore(CONFIG)

    async def driver(ctx):
        for bundle in bundles([group] * 20):
            await put(ctx, dut.i, {**bundle, "lanes": 1})

    async def checker(ctx):
        ctx.set(dut.o.ready, 1)
        cycles, got = 0, 0
        while got < len(expect):
            got += ctx.get(dut.o.valid)
            cycles += 1
            await ctx.tick()
        # One tap out per cycle, plus one cycle in the register.
        assert cycles == len(expect) + 1

    simulate(dut, driver, checker)
