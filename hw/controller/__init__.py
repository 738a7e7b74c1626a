"""The global controller: fetches and runs the global (level 1) program.

The controller owns the accelerator's AXI4 master port and its AXI4-Lite register file
(:mod:`flexigan.hw.arch.registers`). After a ``start`` from the host it fetches global
instructions from external memory, starting at the ``base`` register, and issues one per
cycle, in program order, into the units that run them (docs/isa.md). Its parts:

::

    Fetcher --insn--> Issue --DMA--> DmaEngine <--AXI4--> external memory
       |               | | |          |  |  |
       +-- read port --|-|-|----------+  |  +-- act_rd/act_wr (crossbar), dma[g] (groups)
                       | | |             |
                       | | +-- RUN --> RunScoreboard[g] --run[g]--> group g
                       | |               hazards, DMAs done, micro-op chunks
                       | +-- ROUTE (crossbar)
                       +-- events --> Counters --> registers; block for COUNTERS STORE

- :mod:`.fetch`: the prefetcher keeps a queue of ``config.queue_insns`` instructions filled,
  reading ``config.fetch_insns`` at a time through the :mod:`.reader` whenever the DMA engine
  does not claim it (so instruction fetch overlaps RUNs and DMA stores);
- :mod:`.issue`: issues the head instruction into the DMA queue, the RUN scoreboards, the
  crossbar's ROUTE port, or waits (BARRIER, COUNTERS, END);
- :mod:`.dma`: runs DMA_LOAD, UOP_LOAD, DMA_STORE and COUNTERS STORE one after the other,
  concurrently with issue and with the groups' RUNs;
- :class:`~flexigan.hw.scoreboard.RunScoreboard`, one per group: holds a group's RUNs (at
  most ``RUN_SLOTS``, from issue to completion) and hands each to the group once the DMA it
  depends on is done;
- :mod:`.counters`: the performance counters.

Hazards (docs/isa.md), by DMA sequence numbers: a RUN waits for every earlier DMA into its
group's memories and every earlier ``ACT`` DMA; a DMA into a group's memory waits for the
earlier RUNs of the group that read what it overwrites (exact ranges: the RUN registers give
the micro-op and PARAM entries, the micro-program the weight bytes and activation tables); a
DMA of ``ACT`` waits for every earlier RUN. The ``ACT`` rules are coarser than the ISA's,
which orders only overlapping ranges: a RUN's activation ranges would take multipliers per
group, and programs move activations only at their start and end.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..arch import isa
from ..arch.config import RUN_SLOTS
from ..arch.registers import (
    STATUS_BITS,
    STATUS_BUS_ERROR,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
    registers,
)
from ..axi import AxiLiteRegisters, axi4_lite_signature, axi4_signature
from ..crossbar import read_port_signature, write_port_signature
from ..group import act_tag_layout, local_write_layout, slot_layout
from ..scoreboard import RunScoreboard
from .counters import Counters
from .dma import DmaEngine
from .fetch import Fetcher
from .issue import Issue

__all__ = ["STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR", "STATUS_BUS_ERROR", "registers",
           "Controller"]


class Controller(wiring.Component):
    """The global controller (see the module docstring).

    Contract: ``start`` (a register strobe) while not busy resets the counters and runs the
    program at ``base`` until END; then ``status`` reads done and ``done`` is high until the
    next start. An undefined opcode stops the program with done and error set; a group's
    ``error`` sets error too. An error response on the AXI4 master port (SLVERR or DECERR, to
    an instruction fetch or a DMA) while running stops the program with done, error and
    bus_error set: from the cycle after the response, no instruction issues and no fetch or
    DMA transfer starts; the transfer under way completes its handshakes, and the DMAs queued
    are dropped (see :class:`.DmaEngine`). A ``start`` waits until that has drained. The
    program base must be aligned to ``max(32, axi_bytes)``.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    axi : Out(axi4_signature(addr_width=32, data_width=axi_data_width))
    axil : In(axi4_lite_signature(...))
    run : Out(stream.Signature(isa.RunArgs)).array(groups)
    dma : Out(stream.Signature(local_write_layout(config), always_ready=True)).array(groups)
    slots : In(data.ArrayLayout(data.ArrayLayout(slot_layout(), RUN_SLOTS), groups))
    group_busy, group_error : In(groups)
    macs_issued, macs_skipped, stalls : In(data.ArrayLayout(64, groups))
    bypass, clear : Out(1)
        To the groups (and ``clear`` to the crossbar).
    act_rd : Out(read_port_signature(...))
    act_wr : Out(write_port_signature(...))
    route : Out(stream.Signature(isa.RouteArgs, always_ready=True))
    done : Out(1)
    """

    def __init__(self, config):
        self._config = config
        self._regs = AxiLiteRegisters(registers())
        g = config.groups
        aw, dw = config.word_addr_width, config.axi_data_width
        super().__init__({
            "axi": Out(axi4_signature(addr_width=32, data_width=dw)),
            "axil": In(axi4_lite_signature(addr_width=self._regs.addr_width)),
            "run": Out(stream.Signature(isa.RunArgs)).array(g),
            "dma": Out(stream.Signature(local_write_layout(config), always_ready=True)).array(g),
            "slots": In(data.ArrayLayout(data.ArrayLayout(slot_layout(), RUN_SLOTS), g)),
            "group_busy": In(g),
            "group_error": In(g),
            "macs_issued": In(data.ArrayLayout(64, g)),
            "macs_skipped": In(data.ArrayLayout(64, g)),
            "stalls": In(data.ArrayLayout(64, g)),
            "bypass": Out(1),
            "clear": Out(1),
            "act_rd": Out(read_port_signature(aw, dw, act_tag_layout(config))),
            "act_wr": Out(write_port_signature(aw, dw)),
            "route": Out(stream.Signature(isa.RouteArgs, always_ready=True)),
            "done": Out(1),
        })

    @property
    def register_addr_width(self):
        return self._regs.addr_width

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        m.submodules.regs = regs = self._regs
        m.submodules.fetch = fetch = Fetcher(cfg)
        m.submodules.issue = issue = Issue(cfg)
        m.submodules.dma = dma = DmaEngine(cfg)
        m.submodules.counters = counters = Counters(cfg)
        connect(m, flipped(self.axil), regs.axil)
        connect(m, dma.axi, flipped(self.axi))
        connect(m, fetch.read, dma.fetch)
        connect(m, fetch.insn, issue.insn)
        connect(m, issue.dma, dma.cmd)
        connect(m, issue.route, flipped(self.route))
        connect(m, issue.events, counters.events)
        connect(m, counters.block, dma.counters)
        connect(m, dma.act_rd, flipped(self.act_rd))
        connect(m, dma.act_wr, flipped(self.act_wr))
        for g in range(cfg.groups):
            connect(m, dma.local[g], flipped(self.dma[g]))
        m.d.comb += [
            regs.pc.eq(fetch.pc), fetch.base.eq(regs.base), self.bypass.eq(regs.bypass),
            issue.dma_finished.eq(dma.finished),
            counters.group_busy.eq(self.group_busy), counters.macs_issued.eq(self.macs_issued),
            counters.macs_skipped.eq(self.macs_skipped), counters.stalls.eq(self.stalls),
            self.clear.eq(counters.clear),
            *(getattr(regs, name).eq(counters.values[name]) for name in isa.COUNTER_NAMES),
        ]
        self._scoreboards(m, issue, dma)

        running, start = self._program(m, regs, issue, dma)
        # A bus error stops fetch and issue at once (the error register is a cycle late).
        for part in (fetch, issue):
            m.d.comb += part.running.eq(running & ~dma.error)
        m.d.comb += counters.running.eq(running)
        for part in (fetch, issue, dma, counters):
            m.d.comb += part.start.eq(start)
        return m

    def _scoreboards(self, m, issue, dma):
        """One RUN scoreboard per group, between the issue stage, the DMA engine and the
        group."""
        busy, waiting, conflict = [], [], []
        for g in range(self._config.groups):
            m.submodules[f"scoreboard{g}"] = board = RunScoreboard(self._config)
            connect(m, issue.run[g], board.issue)
            connect(m, board.run, flipped(self.run[g]))
            chunks = self.dma[g]
            m.d.comb += [
                board.done.eq(dma.finished),
                board.held.eq(Cat(slot.valid for slot in self.slots[g])),
                board.query.space.eq(dma.hazard.space),
                board.query.lo.eq(dma.hazard.lo),
                board.query.hi.eq(dma.hazard.hi),
                board.query.group.eq(dma.hazard.groups[g]),
                board.uop_w.valid.eq(chunks.valid & (chunks.payload.space == isa.Space.UOP)),
                board.uop_w.payload.addr.eq(chunks.payload.chunk.addr),
                board.uop_w.payload.data.eq(chunks.payload.chunk.data),
                board.uop_w.payload.mask.eq(chunks.payload.chunk.mask),
            ]
            busy.append(self.group_busy[g] | (board.count != 0))
            waiting.append(board.waiting != 0)
            conflict.append(board.conflict)
        m.d.comb += [issue.busy.eq(Cat(busy)), issue.waiting.eq(Cat(waiting)),
                     dma.conflict.eq(Cat(conflict))]

    def _program(self, m, regs, issue, dma):
        """The program's life: ``start`` from the host, END or an error. Returns ``running``
        and the start strobe that resets the parts."""
        running = Signal()
        start = Signal()                 # the host's start waits for the last fetches
        done = Signal()
        error = Signal()
        bus_error = Signal()
        restart = Signal()
        status = Signal(data.StructLayout(dict.fromkeys(STATUS_BITS, 1)))
        m.d.comb += [status.busy.eq(running | start), status.done.eq(done),
                     status.error.eq(error), status.bus_error.eq(bus_error),
                     regs.status.eq(status), self.done.eq(done)]
        with m.If(self.group_error.any()):
            m.d.sync += error.eq(1)
        with m.If(issue.end):
            m.d.sync += [running.eq(0), done.eq(1)]
        with m.If(issue.error):
            m.d.sync += [error.eq(1), done.eq(1), running.eq(0)]
        with m.If(running & dma.error):
            m.d.sync += [error.eq(1), bus_error.eq(1), done.eq(1), running.eq(0)]
        with m.If(~running):
            # The start strobe waits while fetches of the last program drain.
            with m.If(regs.start):
                m.d.sync += [start.eq(1), done.eq(0)]
            with m.If((regs.start | start) & ~dma.busy):
                m.d.comb += restart.eq(1)
                m.d.sync += [start.eq(0), running.eq(1), done.eq(0), error.eq(0),
                             bus_error.eq(0)]
        return running, restart
