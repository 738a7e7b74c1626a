"""Machine testbench: runs programs on :class:`flexigan.sim.machine.Machine`, the accelerator
with its external memory in the design.

The same manifest as :mod:`flexigan.sim.tb.accelerator` (``JOBS``: a JSON list of
``{"image": path, "out": folder, "sparse": bool}``). For each job the test writes the image
(padded with zeros to ``ROWS`` rows of the memory) as the memory's hex file and pulses
``load``, writes ``bypass``, ``base`` and ``start`` over AXI4-Lite, and waits for ``irq``; then it
reads ``status``, ``pc`` and the counters, pulses ``dump`` and writes ``memory.bin`` (the image's
length) and ``counters.json`` (with ``seconds`` and ``cpu_seconds``, the wall and processor
time from ``start`` to ``irq``) to the job's folder. Python runs only for those few steps: the
clock is the simulator's (cocotb's GPI clock) and no bus beat reaches Python. A job that does
not end within ``MAX_CYCLES`` fails the test. Other parameters: ``ROW_BYTES`` (the memory's
row), ``ROWS`` (rows loaded and dumped).
"""

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

from flexigan.hw.arch.isa import COUNTER_NAMES
from flexigan.hw.arch.registers import register_addresses, registers
from flexigan.sim.memory import IMAGE_IN, IMAGE_OUT, read_rows, write_rows

from . import CLOCK_NS, env_int, write_job

__all__ = ["LiteHost"]


class LiteHost:
    """The host on the design's AXI4-Lite port ``axil``, one access at a time. Signals are
    driven at falling edges and sampled a nanosecond later, when they have settled."""

    def __init__(self, dut):
        self.dut = dut
        for name in ("awvalid", "wvalid", "bready", "arvalid", "rready", "awprot", "arprot"):
            getattr(dut, f"axil__{name}").value = 0
        dut.axil__wstrb.value = 0xF

    async def _handshake(self, *channels):
        """Hold ``valid`` on ``channels`` (with their payloads set) until each is taken."""
        dut, pending = self.dut, set(channels)
        for name in pending:
            getattr(dut, f"axil__{name}valid").value = 1
        while pending:
            await Timer(1, unit="ns")
            taken = {name for name in pending if getattr(dut, f"axil__{name}ready").value}
            await FallingEdge(dut.clk)
            for name in taken:
                getattr(dut, f"axil__{name}valid").value = 0
            pending -= taken

    async def _response(self, channel):
        dut = self.dut
        getattr(dut, f"axil__{channel}ready").value = 1
        while True:
            await Timer(1, unit="ns")
            if getattr(dut, f"axil__{channel}valid").value:
                value = int(dut.axil__rdata.value) if channel == "r" else None
                await FallingEdge(dut.clk)
                getattr(dut, f"axil__{channel}ready").value = 0
                return value
            await FallingEdge(dut.clk)

    async def write(self, addr, value):
        self.dut.axil__awaddr.value = addr
        self.dut.axil__wdata.value = value & 0xFFFF_FFFF
        await self._handshake("aw", "w")
        await self._response("b")

    async def read(self, addr, words=1):
        """A register's value; multi-word registers least significant word first."""
        value = 0
        for k in range(words):
            self.dut.axil__araddr.value = addr + 4 * k
            await self._handshake("ar")
            value |= await self._response("r") << 32 * k
        return value


async def _pulse(dut, name):
    getattr(dut, name).value = 1
    await FallingEdge(dut.clk)
    getattr(dut, name).value = 0
    await FallingEdge(dut.clk)


async def run_job(dut, host, image, sparse, max_cycles):
    """Run one image; the memory after it (the image's length), counters, status, pc and the
    wall and processor time of the run."""
    address = register_addresses(registers())
    row_bytes, rows = env_int("ROW_BYTES"), env_int("ROWS")
    write_rows(IMAGE_IN, image, row_bytes, rows)
    dut.rows.value = rows
    await _pulse(dut, "load")
    await host.write(address["bypass"], 0 if sparse else 1)
    await host.write(address["base"], 0)
    started, cpu = time.perf_counter(), time.process_time()
    await host.write(address["start"], 1)
    if dut.irq.value:                       # the previous program's END
        await FallingEdge(dut.irq)
    ended = await First(RisingEdge(dut.irq), Timer(max_cycles * CLOCK_NS, unit="ns"))
    seconds = time.perf_counter() - started, time.process_time() - cpu
    await FallingEdge(dut.clk)
    if not dut.irq.value:
        raise AssertionError(f"the accelerator did not reach END within {max_cycles} cycles "
                             f"(fetch address {await host.read(address['pc']):#x}, status "
                             f"{await host.read(address['status']):#x}); {ended}")
    status = await host.read(address["status"])
    pc = await host.read(address["pc"])
    counters = {name: await host.read(address[name], words=2) for name in COUNTER_NAMES}
    await _pulse(dut, "dump")
    return read_rows(IMAGE_OUT, row_bytes, len(image)), counters, status, pc, seconds


@cocotb.test()
async def runs_programs(dut):
    """Every job of the manifest, one after the other, on one reset."""
    # In C: a Python clock would cost two callbacks per cycle.
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start())
    for name in ("load", "dump", "rows"):
        getattr(dut, name).value = 0
    host = LiteHost(dut)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)
    max_cycles = env_int("MAX_CYCLES", 10_000_000)
    for job in json.loads(Path(os.environ["JOBS"]).read_text()):
        image = Path(job["image"]).read_bytes()
        memory, counters, status, pc, seconds = await run_job(dut, host, image, job["sparse"],
                                                              max_cycles)
        write_job(job, memory, counters, status, pc, seconds)
