"""Helpers for Amaranth-simulator tests: run a design, drive and sink streams with pauses."""

import random

from amaranth.sim import Simulator

__all__ = ["simulate", "put", "get", "Pauses"]


class Pauses:
    """A random pause pattern: before each transfer, idle while ``rng.random() < p``.

    ``p = 0`` gives back-to-back transfers; ``p = 0.5`` idles half the time.
    """

    def __init__(self, p=0.0, seed=0):
        self.p = p
        self.rng = random.Random(seed)

    async def wait(self, ctx):
        while self.p and self.rng.random() < self.p:
            await ctx.tick()


async def put(ctx, stream, payload, pauses=None):
    """Send ``payload`` on ``stream`` (the design's input); returns after the transfer."""
    if pauses is not None:
        await pauses.wait(ctx)
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def get(ctx, stream, pauses=None):
    """Receive one payload from ``stream`` (the design's output)."""
    if pauses is not None:
        await pauses.wait(ctx)
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


def simulate(dut, *testbenches, processes=(), timeout=100_000, vcd=None):
    """Run ``testbenches`` on ``dut`` with a clock until they all return.

    ``processes`` run in the background (they do not keep the simulation alive). The run fails
    with ``TimeoutError`` after ``timeout`` cycles.
    """
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_testbench(process, background=True)

    def run():
        # Two simulator time steps per clock cycle (one per clock edge).
        for _ in range(2 * timeout):
            if not sim.advance():
                return
        raise TimeoutError(f"simulation did not finish in {timeout} cycles")

    if vcd:
        with sim.write_vcd(vcd):
            run()
    else:
        run()


async def decode_bytes(ctx, pin, divisor, received):
    """Decode 8N1 frames on ``pin`` forever (bits of ``divisor`` cycles, sampled mid-bit),
    appending each byte to ``received``; a short start bit or a low stop bit fails."""
    while True:
        while ctx.get(pin):
            await ctx.tick()
        await ctx.tick().repeat(divisor // 2)
        assert ctx.get(pin) == 0, "start bit too short"
        byte = 0
        for k in range(8):
            await ctx.tick().repeat(divisor)
            byte |= ctx.get(pin) << k
        await ctx.tick().repeat(divisor)
        assert ctx.get(pin) == 1, "stop bit low"
        received.append(byte)


async def drive_byte(ctx, pin, byte, divisor, stop=1):
    """Drive one 8N1 UART frame on ``pin``, each bit for ``divisor`` cycles (``stop`` 0 makes a
    framing error)."""
    for bit in [0, *(byte >> k & 1 for k in range(8)), stop]:
        ctx.set(pin, bit)
        await ctx.tick().repeat(divisor)
