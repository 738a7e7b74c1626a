# amaranth: UnusedElaboratable=no
import random

import pytest
from amaranth.hdl import Elaboratable, Module

from flexigan.hw.uart import UartRx, UartTx
from tests.hw.streams import Pauses, drive_byte, get, put, simulate


class Loopback(Elaboratable):
    def __init__(self, divisor):
        self.tx, self.rx = UartTx(divisor), UartRx(divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx = self.tx, self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


@pytest.mark.parametrize("divisor,p_in,p_out", [(4, 0.0, 0.0), (7, 0.5, 0.1), (7, 0.0, 0.2)])
def test_bytes_go_round_tx_to_rx(divisor, p_in, p_out):
    rng = random.Random(divisor)
    items = [rng.randrange(256) for _ in range(60)]
    dut = Loopback(divisor)
    errors = []

    async def driver(ctx):
        for item in items:
            await put(ctx, dut.tx.i, item, Pauses(p_in, 1))

    async def checker(ctx):
        got = [await get(ctx, dut.rx.o, Pauses(p_out, 2)) for _ in items]
        assert got == items

    async def monitor(ctx):
        async for _, _, framing, overrun in ctx.tick().sample(dut.rx.framing_error,
                                                              dut.rx.overrun):
            if framing or overrun:
                errors.append((framing, overrun))

    simulate(dut, driver, checker, processes=[monitor], timeout=20_000)
    assert errors == []


def test_back_to_back_bytes_take_ten_bit_times_each():
    divisor = 5
    dut = UartTx(divisor)
    starts = []

    async def driver(ctx):
        for item in (0xFF, 0x00, 0xFF, 0x00):   # one falling edge each
            await put(ctx, dut.i, item)
        await ctx.tick().repeat(2)

    async def monitor(ctx):
        cycle, previous = 0, 1
        async for _, _, level in ctx.tick().sample(dut.tx):
            if previous and not level:
                starts.append(cycle)
            previous, cycle = level, cycle + 1

    simulate(dut, driver, processes=[monitor], timeout=400)
    assert [b - a for a, b in zip(starts, starts[1:])] == [10 * divisor] * 3


@pytest.mark.parametrize("divisor", [4, 7])
def test_bad_stop_bit_is_flagged_and_the_next_byte_arrives(divisor):
    dut = UartRx(divisor)
    flags = []

    async def driver(ctx):
        await ctx.tick().repeat(3)
        await drive_byte(ctx, dut.rx, 0x3C, divisor)
        await drive_byte(ctx, dut.rx, 0xA5, divisor, stop=0)
        await ctx.tick().repeat(2 * divisor)        # the line stays low (a break) a while
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(divisor)
        await drive_byte(ctx, dut.rx, 0xC3, divisor)
        await ctx.tick().repeat(3 * divisor)

    async def checker(ctx):
        assert await get(ctx, dut.o) == 0x3C
        assert await get(ctx, dut.o) == 0xC3

    async def monitor(ctx):
        async for _, _, framing in ctx.tick().sample(dut.framing_error):
            flags.append(framing)

    simulate(dut, driver, checker, processes=[monitor], timeout=2_000)
    assert sum(flags) == 1


def test_a_byte_not_taken_in_time_makes_the_next_an_overrun():
    divisor = 4
    dut = UartRx(divisor)
    overruns = []

    async def driver(ctx):
        for item in (0x11, 0x22):
            await drive_byte(ctx, dut.rx, item, divisor)
        await ctx.tick().repeat(2 * divisor)
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == 0x11
        await drive_byte(ctx, dut.rx, 0x33, divisor)    # nobody took 0x11: 0x33 is lost too
        await ctx.tick().repeat(divisor)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        ctx.set(dut.o.ready, 0)
        await drive_byte(ctx, dut.rx, 0x44, divisor)
        await ctx.tick().repeat(2 * divisor)
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == 0x44

    async def monitor(ctx):
        async for _, _, overrun in ctx.tick().sample(dut.overrun):
            overruns.append(overrun)

    simulate(dut, driver, processes=[monitor], timeout=1_000)
    assert sum(overruns) == 2


@pytest.mark.parametrize("block", [UartRx, UartTx])
@pytest.mark.parametrize("divisor", [3, 4.0, "8"])
def test_divisor_is_checked(block, divisor):
    with pytest.raises(ValueError, match=rf"{block.__name__} divisor must be an integer >= 4 "
                                         rf"\(clock cycles per bit\), not {divisor!r}"):
        block(divisor)
