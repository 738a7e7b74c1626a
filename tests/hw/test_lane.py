import random

import pytest

from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.hw.lane import Lane
from tests.hw.streams import simulate


def wrap32(x):
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


@pytest.mark.parametrize("seed", range(3))
def test_lane_matches_model_with_gaps(seed):
    rng = random.Random(seed)
    dut = Lane(AcceleratorConfig())
    steps = [(rng.random() < 0.7, rng.randint(-128, 127), rng.randint(-128, 127),
              rng.random() < 0.85) for _ in range(400)]
    # Corner products: both extremes, so the int8 x int8 product's sign is checked.
    steps[:4] = [(True, -128, -128, False), (True, -128, 127, True), (True, 127, 127, True),
                 (True, 0, -5, True)]

    async def tb(ctx):
        expect = []
        acc = 0
        for valid, a, w, accumulate in steps:
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, {"act": a, "wgt": w, "accumulate": accumulate})
            if valid:
                acc = wrap32((acc if accumulate else 0) + a * w)
            expect.append(acc)
            await ctx.tick()
            if len(expect) >= Lane.LATENCY:
                assert ctx.get(dut.acc) == expect[-Lane.LATENCY]
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(Lane.LATENCY)
        assert ctx.get(dut.idle)
        assert ctx.get(dut.acc) == acc

    simulate(dut, tb)


def test_lane_accumulator_wraps():
    dut = Lane(AcceleratorConfig())

    async def tb(ctx):
        acc = 0
        for i in range(70_000 // 16384 + 140):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"act": -128, "wgt": -128, "accumulate": i > 0})
            acc = wrap32(acc + 16384) if i else 16384
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(Lane.LATENCY)
        assert ctx.get(dut.acc) == acc

    simulate(dut, tb)
