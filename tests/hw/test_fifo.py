# amaranth: UnusedElaboratable=no
import random

import pytest
from amaranth.hdl import signed
from amaranth.lib import data

from flexigan.hw.fifo import StreamFIFO
from tests.hw.streams import Pauses, get, put, simulate

ITEM = data.StructLayout({"a": signed(8), "b": 3})


@pytest.mark.parametrize("depth,p_in,p_out", [(1, 0.0, 0.0), (4, 0.5, 0.0), (4, 0.0, 0.5),
                                              (3, 0.3, 0.3)])
def test_stream_fifo_keeps_order(depth, p_in, p_out):
    rng = random.Random(depth)
    items = [{"a": rng.randint(-128, 127), "b": rng.randrange(8)} for _ in range(200)]
    dut = StreamFIFO(ITEM, depth)

    async def driver(ctx):
        for item in items:
            await put(ctx, dut.i, item, Pauses(p_in, 1))
            assert ctx.get(dut.level) <= depth

    async def checker(ctx):
        for item in items:
            got = await get(ctx, dut.o, Pauses(p_out, 2))
            assert (got.a, got.b) == (item["a"], item["b"])

    simulate(dut, driver, checker)


def test_stream_fifo_depth_error():
    with pytest.raises(ValueError, match="depth must be a positive integer, not 0"):
        StreamFIFO(ITEM, 0)
