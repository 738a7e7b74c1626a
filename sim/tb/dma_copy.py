"""DMA copy testbench: the AXI burst engines, the realigner and the register file together.

``DmaCopy`` is a small design made of the accelerator's DMA parts: the host writes ``src``,
``dst`` and ``length`` through the AXI4-Lite register file and pulses ``start``; the design
reads the source bytes with :class:`AxiBurstReader`, realigns them with :class:`Realign` and
writes them with :class:`AxiBurstWriter` (byte strobes keep the neighbours intact). The cocotb
tests below check it against cocotbext-axi's ``AxiRam``, with random backpressure.

Parameters come from the environment (see :func:`flexigan.sim.tb.env_int`): ``AXI_DATA_WIDTH``,
``BURST_BYTES``, ``PAUSE`` (probability of a pause per channel and cycle), ``SEED``.
"""

import random

import cocotb
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import exact_log2

from flexigan.hw.axi import (
    AxiBurstReader,
    AxiBurstWriter,
    AxiLiteRegisters,
    RegisterField,
    axi4_lite_signature,
    axi4_signature,
    register_addresses,
)
from flexigan.hw.realign import Realign, covering_words

from . import AxiTB, env_float, env_int

__all__ = ["REGISTERS", "DmaCopy"]

REGISTERS = [
    RegisterField("src", 32, "rw"),
    RegisterField("dst", 32, "rw"),
    RegisterField("length", 24, "rw"),
    RegisterField("start", 1, "strobe"),
    RegisterField("busy", 1, "ro"),
    RegisterField("copies", 32, "ro"),
    RegisterField("cycles", 64, "ro"),     # cycles of the last copy
]


class DmaCopy(wiring.Component):
    """Copies ``length`` bytes from ``src`` to ``dst`` in external memory (any alignment).

    Contract: after a ``start`` pulse with ``busy`` low, ``busy`` is high until the bytes are
    in memory; then ``copies`` has counted the copy and ``cycles`` holds its duration.

    Parameters
    ----------
    config : AcceleratorConfig
        ``axi_data_width`` and ``burst_bytes``.
    """

    def __init__(self, config):
        self._config = config
        self._regs = AxiLiteRegisters(REGISTERS)
        super().__init__({
            "axi": Out(axi4_signature(addr_width=32, data_width=config.axi_data_width)),
            "axil": In(axi4_lite_signature(addr_width=self._regs.addr_width)),
        })

    def elaborate(self, platform):
        m = Module()
        dw = self._config.axi_data_width
        m.submodules.regs = regs = self._regs
        m.submodules.reader = reader = AxiBurstReader(self._config)
        m.submodules.realign = realign = Realign(dw)
        m.submodules.writer = writer = AxiBurstWriter(self._config)
        connect(m, flipped(self.axil), regs.axil)
        connect(m, reader.axi, flipped(self.axi.read))
        connect(m, writer.axi, flipped(self.axi.write))
        connect(m, reader.o, realign.i)
        connect(m, realign.o, writer.i)

        offset_bits = exact_log2(dw // 8)
        src_offset, dst_offset = regs.src[:offset_bits], regs.dst[:offset_bits]
        m.d.comb += [
            reader.cmd.payload.addr.eq(regs.src & ~((1 << offset_bits) - 1)),
            reader.cmd.payload.beats.eq(covering_words(src_offset, regs.length, dw)),
            realign.cmd.payload.src_offset.eq(src_offset),
            realign.cmd.payload.dst_offset.eq(dst_offset),
            realign.cmd.payload.length.eq(regs.length),
            writer.cmd.payload.addr.eq(regs.dst & ~((1 << offset_bits) - 1)),
            writer.cmd.payload.beats.eq(covering_words(dst_offset, regs.length, dw)),
        ]
        pending = Signal(3)     # commands not yet accepted: reader, realign, writer
        cycles = Signal(64)
        m.d.comb += [
            reader.cmd.valid.eq(pending[0]),
            realign.cmd.valid.eq(pending[1]),
            writer.cmd.valid.eq(pending[2]),
        ]
        accepted = Cat(reader.cmd.valid & reader.cmd.ready, realign.cmd.valid & realign.cmd.ready,
                       writer.cmd.valid & writer.cmd.ready)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(regs.start):
                    m.d.sync += [pending.eq(0b111), cycles.eq(0)]
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += regs.busy.eq(1)
                m.d.sync += cycles.eq(cycles + 1)
                m.d.sync += pending.eq(pending & ~accepted)
                with m.If((pending & ~accepted) == 0):
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += regs.busy.eq(1)
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(~writer.busy & ~reader.busy):
                    m.d.sync += [regs.copies.eq(regs.copies + 1), regs.cycles.eq(cycles + 1)]
                    m.next = "IDLE"
        return m


# -- cocotb tests ---------------------------------------------------------------------------

class DmaCopyTB(AxiTB):
    """Host and memory for :class:`DmaCopy`; ``copy`` runs one copy and checks it."""

    def __init__(self, dut):
        super().__init__(dut, registers=register_addresses(REGISTERS), ram_size=1 << 16,
                         pause=env_float("PAUSE", 0.0), seed=env_int("SEED", 0))
        self.data_bytes = env_int("AXI_DATA_WIDTH") // 8

    async def copy(self, src, dst, length):
        """Copy through the design; check the destination and its neighbours; cycles taken."""
        before = self.ram.read(0, self.ram.size)
        await self.write_register("src", src)
        await self.write_register("dst", dst)
        await self.write_register("length", length)
        copies = await self.read_register("copies")
        await self.write_register("start", 1)
        while await self.read_register("busy"):
            pass
        assert await self.read_register("copies") == copies + 1
        expect = bytearray(before)
        expect[dst:dst + length] = before[src:src + length]
        after = self.ram.read(0, self.ram.size)
        if after != bytes(expect):
            bad = [i for i in range(len(after)) if after[i] != expect[i]]
            raise AssertionError(f"copy {src:#x} -> {dst:#x} ({length} bytes): {len(bad)} "
                                 f"bytes differ, first at {bad[0]:#x}")
        return await self.read_register("cycles", words=2)


@cocotb.test()
async def copies_any_alignment(dut):
    """Random sources, destinations and lengths: unaligned ends, bursts cut at 4 KiB."""
    tb = DmaCopyTB(dut)
    rng = random.Random(env_int("SEED", 0))
    tb.ram.write(0, rng.randbytes(tb.ram.size))
    await tb.reset()
    w = tb.data_bytes
    cases = [(0, 0x8000, 64), (3, 0x8001, 1), (5, 0x9002, 3 * w + 1), (0x0FF0, 0xA00D, 300),
             (0x2001, 0xB000, 0), (0x2FFE, 0xC003, 2 * 4096 + 5)]
    cases += [(rng.randrange(0x8000), 0x8000 + rng.randrange(0x7000), rng.randrange(1, 700))
              for _ in range(6)]
    for src, dst, length in cases:
        await tb.copy(src, dst, length)


@cocotb.test()
async def streams_at_full_rate(dut):
    """Without backpressure a long aligned copy moves about one beat per cycle."""
    tb = DmaCopyTB(dut)
    await tb.reset()
    beats = 512
    length = beats * tb.data_bytes
    cycles = await tb.copy(0x0000, 0x8000, length)
    if env_float("PAUSE", 0.0) == 0:
        # Reads and writes overlap; each burst pays the memory model's few cycles of latency.
        assert cycles < 1.25 * beats + 40, cycles
    dut._log.info("copied %d beats in %d cycles", beats, cycles)
