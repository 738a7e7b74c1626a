"""cocotb testbenches for the generated RTL (run them with :func:`flexigan.sim.rtl.run_cocotb`).

A testbench module holds the ``@cocotb.test()`` functions; this package holds what they share:
:class:`AxiTB`, the driver side of a design with an AXI4 master port ``axi`` (served by a
cocotbext-axi ``AxiRam``, the model of external memory) and an AXI4-Lite slave port ``axil``
(driven by an ``AxiLiteMaster``, the model of the host).
"""

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import (
    AxiBus,
    AxiLiteBus,
    AxiLiteMaster,
    AxiRam,
    AxiReadBus,
    AxiResp,
    AxiWriteBus,
)

from flexigan.hw.arch.registers import STATUS_DONE

__all__ = ["pauses", "env_int", "env_float", "env_faults", "inject_faults", "write_job", "AxiTB"]

CLOCK_NS = 10
def pauses(rng, p, longest=1):
    """A cocotbext-axi pause generator: pause each cycle with probability ``p``, for a run of
    1 to ``longest`` cycles (uniformly) when ``longest > 1``."""
    while True:
        pause = rng.random() < p
        for _ in range(rng.randint(1, longest) if pause and longest > 1 else 1):
            yield pause


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


def env_faults():
    """``FAULTS`` from the environment, ``"lo,hi,resp"`` (see :func:`inject_faults`), or
    None."""
    value = os.environ.get("FAULTS")
    return None if not value else tuple(int(v, 0) for v in value.split(","))


def write_job(job, memory, counters, status, pc, seconds):
    """What a job of the runner's manifest leaves in its ``out`` folder: ``memory.bin`` and
    ``counters.json`` (counters, status, pc, wall and CPU seconds of the run); the job must
    have ended with done set."""
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.bin").write_bytes(memory)
    (out / "counters.json").write_text(json.dumps({"counters": counters, "status": status,
                                                   "pc": pc, "seconds": seconds[0],
                                                   "cpu_seconds": seconds[1]}) + "\n")
    assert status & STATUS_DONE, f"status {status:#x} after irq: done is not set"


def inject_faults(ram, lo, hi, resp):
    """Make ``ram`` (an ``AxiRam``) answer ``resp`` (SLVERR 2 or DECERR 3) to every beat that
    touches bytes ``[lo, hi)``: reads bring zeros, writes of those bytes are dropped.

    AxiRam answers SLVERR when its memory access raises; the channel's send turns that into
    ``resp``.
    """
    if resp not in (AxiResp.SLVERR, AxiResp.DECERR):
        raise ValueError(f"resp must be SLVERR (2) or DECERR (3), not {resp!r}")

    def guard(access):
        async def guarded(address, arg):
            if address < hi and lo < address + (arg if isinstance(arg, int) else len(arg)):
                raise OSError(f"bus error at {address:#x}")
            return await access(address, arg)
        return guarded

    def answer(send, field):
        async def sent(obj):
            if getattr(obj, field) == AxiResp.SLVERR:
                setattr(obj, field, resp)
            await send(obj)
        return sent

    ram.read_if._read = guard(ram.read_if._read)
    ram.write_if._write = guard(ram.write_if._write)
    ram.read_if.r_channel.send = answer(ram.read_if.r_channel.send, "rresp")
    ram.write_if.b_channel.send = answer(ram.write_if.b_channel.send, "bresp")


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
    stall : int
        The longest run of pause cycles, each run from 1 to ``stall`` cycles (long stalls).
    seed : int
    faults : tuple, optional
        ``(lo, hi, resp)``: the memory answers ``resp`` there (:func:`inject_faults`).
    """

    def __init__(self, dut, *, registers, ram_size, pause=0.0, stall=1, seed=0, faults=None):
        self.dut = dut
        self.registers = registers
        self.rng = random.Random(seed)
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        bus = AxiBus(write=AxiWriteBus.from_prefix(dut, "axi__write", bus_separator="__"),
                     read=AxiReadBus.from_prefix(dut, "axi__read", bus_separator="__"))
        self.ram = AxiRam(bus, dut.clk, dut.rst, size=ram_size)
        if faults:
            inject_faults(self.ram, *faults)
        self.host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axil", bus_separator="__"),
                                  dut.clk, dut.rst)
        if pause:
            channels = [self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                        self.ram.write_if.b_channel, self.ram.read_if.ar_channel,
                        self.ram.read_if.r_channel, self.host.write_if.aw_channel,
                        self.host.write_if.w_channel, self.host.write_if.b_channel,
                        self.host.read_if.ar_channel, self.host.read_if.r_channel]
            for channel in channels:
                channel.set_pause_generator(pauses(random.Random(self.rng.random()), pause,
                                                   stall))

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
