"""cocotb testbenches for the generated RTL (run them with :func:`flexigan.sim.rtl.run_cocotb`).

A testbench module holds the ``@cocotb.test()`` functions; this package holds what they share:
:class:`AxiTB`, the driver side of a design with an AXI4 master port ``axi`` (served by a
cocotbext-axi ``AxiRam``, the model of external memory) and an AXI4-Lite slave port ``axil``
(driven by an ``AxiLiteMaster``, the model of the host).
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiReadBus, AxiWriteBus

__all__ = ["pauses", "env_int", "env_float", "AxiTB"]

CLOCK_NS = 10
def pauses(rng, p):
    """A cocotbext-axi pause generator: pause each cycle with probability ``p``."""
    while True:
        yield rng.random() < p


def env_int(name, default=None):
    """An integer parameter the pytest side passed in the environment."""
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise KeyError(f"the testbench needs environment variable {name}")
        return default
    return int(value, 0)


def env_float(name, default):
    value = os.environ.get(name)
    return default if value is None else float(value)


class AxiTB:
    """Clock, reset, external memory and host for a design with ports ``axi`` and ``axil``.

    Parameters
    ----------
    dut : cocotb handle
        The top level, with ``clk``, ``rst``, ``axi__read__*``, ``axi__write__*`` and
        ``axil__*`` ports (as :func:`flexigan.hw.axi.axi4_signature` and
        :func:`flexigan.hw.axi.axi4_lite_signature` name them).
    registers : dict
        Register name -> byte address (:func:`flexigan.hw.axi.register_addresses`).
    ram_size : int
        Bytes of external memory.
    pause : float
        Probability that each AXI channel of the memory and of the host pauses in a cycle
        (random backpressure and gaps); 0 runs at full speed.
    seed : int
    """

    def __init__(self, dut, *, registers, ram_size, pause=0.0, seed=0):
        self.dut = dut
        self.registers = registers
        self.rng = random.Random(seed)
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        bus = AxiBus(write=AxiWriteBus.from_prefix(dut, "axi__write", bus_separator="__"),
                     read=AxiReadBus.from_prefix(dut, "axi__read", bus_separator="__"))
        self.ram = AxiRam(bus, dut.clk, dut.rst, size=ram_size)
        self.host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axil", bus_separator="__"),
                                  dut.clk, dut.rst)
        if pause:
            channels = [self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                        self.ram.write_if.b_channel, self.ram.read_if.ar_channel,
                        self.ram.read_if.r_channel, self.host.write_if.aw_channel,
                        self.host.write_if.w_channel, self.host.write_if.b_channel,
                        self.host.read_if.ar_channel, self.host.read_if.r_channel]
            for channel in channels:
                channel.set_pause_generator(pauses(random.Random(self.rng.random()), pause))

    async def reset(self, cycles=4):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def write_register(self, name, value, words=1):
        for k in range(words):
            await self.host.write_dword(self.registers[name] + 4 * k,
                                        (value >> 32 * k) & 0xFFFF_FFFF)

    async def read_register(self, name, words=1):
        """A register's value; multi-word registers are read least significant word first."""
        value = 0
        for k in range(words):
            value |= await self.host.read_dword(self.registers[name] + 4 * k) << 32 * k
        return value

    async def cycles(self, n):
        await ClockCycles(self.dut.clk, n)
