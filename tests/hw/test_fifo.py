# amaranth: UnusedElaboratable=no
import random

import pytest
from amaranth.hdl import signed
from amaranth.lib import data

from flexigan.hw.fifo import StreamFIFO, StreamSlice
from tests.hw.streams import Pauses, get, put, simulate

ITEM = data.StructLayout({"a": signed(8), "b": 3})


def _keeps_order(dut, seed, p_in, p_out, level=None):
    """200 random payloads through ``dut`` (a stream stage) with random pauses on both sides
    leave in order; ``level(ctx)``, when given, is checked after each entry."""
    rng = random.Random(seed)
    items = [{"a": rng.randint(-128, 127), "b": rng.randrange(8)} for _ in range(200)]

    async def driver(ctx):
        for item in items:
            await put(ctx, dut.i, item, Pauses(p_in, 1))
            if level:
                level(ctx)

    async def checker(ctx):
        for item in items:
            got = await get(ctx, dut.o, Pauses(p_out, 2))
            assert (got.a, got.b) == (item["a"], item["b"])

    simulate(dut, driver, checker)


@pytest.mark.parametrize("depth,p_in,p_out", [(1, 0.0, 0.0), (4, 0.5, 0.0), (4, 0.0, 0.5),
                                              (3, 0.3, 0.3)])
def test_stream_fifo_keeps_order(depth, p_in, p_out):
    dut = StreamFIFO(ITEM, depth)

    def level(ctx):
        assert ctx.get(dut.level) <= depth

    _keeps_order(dut, depth, p_in, p_out, level)


def test_stream_fifo_depth_error():
    with pytest.raises(ValueError, match="depth must be a positive integer, not 0"):
        StreamFIFO(ITEM, 0)


@pytest.mark.parametrize("p_in,p_out", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.3, 0.3)])
def test_stream_slice_keeps_order(p_in, p_out):
    _keeps_order(StreamSlice(ITEM), 7, p_in, p_out)


def test_stream_slice_moves_one_payload_per_cycle_a_cycle_later():
    dut = StreamSlice(ITEM)

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        out = []
        for k in range(20):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"a": k, "b": 0})
            assert ctx.get(dut.i.ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                out.append(payload.a)
        assert out == list(range(20 - StreamSlice.LATENCY))

    simulate(dut, bench)
