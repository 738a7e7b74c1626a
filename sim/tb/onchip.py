"""The on-chip memory (:class:`flexigan.hw.onchip.OnChipMemory`) under a real simulator, from
both of its ports at once: cocotbext-axi's ``AxiMaster`` writes and reads random bursts with
data, ``AxiLiteMaster`` random words in another region, then each reads what the other
wrote. Parameters: ``DEPTH`` (bytes), ``DATA_WIDTH``, ``SEED``."""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiMaster, AxiReadBus, AxiWriteBus

from . import CLOCK_NS, env_int


@cocotb.test()
async def both_ports_agree_with_a_byte_model(dut):
    depth, width, rng = env_int("DEPTH"), env_int("DATA_WIDTH"), random.Random(env_int("SEED"))
    n = width // 8
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    axi = AxiMaster(AxiBus(write=AxiWriteBus.from_prefix(dut, "axi__write", bus_separator="__"),
                           read=AxiReadBus.from_prefix(dut, "axi__read", bus_separator="__")),
                    dut.clk, dut.rst)
    lite = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axil", bus_separator="__"), dut.clk,
                         dut.rst)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    half = depth // 2
    model = bytearray(depth)
    await axi.write(0, bytes(depth))        # SPRAM powers up undefined: the host fills it

    async def burst_side():
        for _ in range(12):
            beats = rng.randrange(1, 17)
            addr = rng.randrange((half - beats * n) // n) * n
            data = rng.randbytes(beats * n)
            await axi.write(addr, data)
            model[addr:addr + len(data)] = data
            assert (await axi.read(addr, len(data))).data == data

    async def word_side():
        for _ in range(40):
            addr = half + 4 * rng.randrange(half // 4)
            word = rng.randbytes(4)
            await lite.write(addr, word)
            model[addr:addr + 4] = word
            got = await lite.read(addr, 4)
            assert got.data == word, (hex(addr), got.data, word)

    bursts, words = cocotb.start_soon(burst_side()), cocotb.start_soon(word_side())
    await bursts
    await words
    # Across the ports: the upper half through bursts, the lower half in words, and the far
    # end of the memory (another SPRAM bank on the iCE40).
    for addr in range(half, depth, depth // 16):
        assert (await axi.read(addr, 64)).data == bytes(model[addr:addr + 64])
    for addr in range(0, half, half // 8):
        assert (await lite.read(addr, 4)).data == bytes(model[addr:addr + 4])
