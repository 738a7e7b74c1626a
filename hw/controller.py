"""The global controller: fetches and runs the global (level 1) program.

The controller owns the accelerator's AXI4 master port and its AXI4-Lite register file. After a
``start`` from the host it fetches global instructions from external memory, starting at the
``base`` register, and issues one per cycle, in program order, into the units that run them
(docs/isa.md):

- **fetch**: a prefetcher keeps a queue of ``config.queue_insns`` instructions filled, reading
  ``config.fetch_insns`` at a time through the shared :class:`AxiBurstReader` whenever the DMA
  engine does not need it (so instruction fetch overlaps RUNs and DMA stores);
- **DMA_LOAD / UOP_LOAD / DMA_STORE** enter a queue of :data:`DMA_QUEUE` for the DMA engine,
  which runs them one after the other, concurrently with issue and with the groups' RUNs:
  external bytes -> :class:`Realign` -> the crossbar's DMA write port (``ACT``) or, as chunks,
  the ``dma`` ports of the groups in the mask (``WGT``, ``PARAM``, ``LUT``, ``UOP``); or the
  crossbar's DMA read port -> :class:`Realign` -> :class:`AxiBurstWriter`. **COUNTERS STORE**
  snapshots the counters at issue and writes them through the same queue and writer;
- **RUN** enters the :class:`~flexigan.hw.scoreboard.RunScoreboard` of every group in its mask
  (at most ``RUN_SLOTS`` RUNs per group, from issue to completion), which hands it to the group
  once the DMA it depends on is done; **ROUTE** waits until the RUNs before it have left for
  their groups; **BARRIER**, **COUNTERS** and **END** wait for the groups and the DMA engine.

Hazards (docs/isa.md), by DMA sequence numbers: a RUN waits for every earlier DMA into its
group's memories and every earlier ``ACT`` DMA; a DMA into a group's memory waits for the
earlier RUNs of the group that read what it overwrites (exact ranges: the RUN registers give
the micro-op and PARAM entries, the micro-program the weight bytes and activation tables); a
DMA of ``ACT`` waits for every earlier RUN. The ``ACT`` rules are coarser than the ISA's,
which orders only overlapping ranges: a RUN's activation ranges would take multipliers per
group, and programs move activations only at their start and end.

Counters (the order of :data:`isa.COUNTER_NAMES`, as the instruction-level simulator's): ``cycles``
counts from ``start``; ``macs_issued``/``macs_skipped`` sum the groups' counters;
``dma_bytes`` sums the lengths of DMA_LOAD, DMA_STORE and UOP_LOAD; ``busy_cycles`` sums the
cycles each group holds a RUN; ``stall_cycles`` sums the groups' crossbar stalls; ``runs``
counts RUN instructions; ``instructions`` counts executed instructions (COUNTERS STORE counts
itself). COUNTERS RESET zeroes all but ``cycles`` and ``instructions``, as the simulator does.
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import exact_log2

from .arch import isa
from .arch.config import DMA_QUEUE, RUN_SLOTS
from .arch.registers import STATUS_BUSY, STATUS_DONE, STATUS_ERROR, registers
from .axi import (
    AxiBurstReader,
    AxiBurstWriter,
    AxiLiteRegisters,
    axi4_lite_signature,
    axi4_signature,
)
from .crossbar import read_port_signature, write_port_signature
from .fifo import StreamFIFO
from .group import act_tag_layout, local_write_layout, slot_layout
from .realign import Realign, covering_words
from .scoreboard import SEQ_BITS, RunScoreboard

__all__ = ["STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR", "registers", "Controller"]

#: Words of ACT read ahead of the store path.
STORE_DEPTH = 4


def _aligned(addr, bits):
    """``addr`` with its ``bits`` low bits cleared."""
    return Cat(Const(0, bits), addr[bits:]) if bits else addr


class Controller(wiring.Component):
    """The global controller (see the module docstring).

    Contract: ``start`` (a register strobe) while not busy resets the counters and runs the
    program at ``base`` until END; then ``status`` reads done and ``done`` is high until the
    next start. An undefined opcode stops the program with done and error set; a group's
    ``error`` sets error too. The program base must be aligned to ``max(32, axi_bytes)``.

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
        groups = cfg.groups
        dw, nbytes = cfg.axi_data_width, cfg.axi_bytes
        wb = exact_log2(nbytes)
        all_groups = (1 << groups) - 1

        m.submodules.regs = regs = self._regs
        connect(m, flipped(self.axil), regs.axil)
        m.submodules.reader = reader = AxiBurstReader(cfg)
        m.submodules.writer = writer = AxiBurstWriter(cfg)
        connect(m, reader.axi, flipped(self.axi.read))
        connect(m, writer.axi, flipped(self.axi.write))
        m.submodules.load = load = Realign(dw)
        m.submodules.store = store = Realign(dw)
        connect(m, store.o, writer.i)
        m.d.comb += self.bypass.eq(regs.bypass)

        running = Signal()
        start = Signal()
        done = Signal()
        error = Signal()
        m.d.comb += [regs.status.eq(Cat(running | start, done, error)), self.done.eq(done)]
        with m.If(self.group_error.any()):
            m.d.sync += error.eq(1)

        # -- counters ---------------------------------------------------------------------
        count = {name: Signal(64, name=f"count_{name}") for name in isa.COUNTER_NAMES}
        reset_counters = Signal()
        m.d.comb += self.clear.eq(reset_counters)
        with m.If(running):
            m.d.sync += count["cycles"].eq(count["cycles"] + 1)
        busy_now = sum(self.group_busy[g] for g in range(groups))
        m.d.sync += count["busy_cycles"].eq(count["busy_cycles"] + busy_now)
        live = dict(count)
        for name, port in (("macs_issued", self.macs_issued), ("macs_skipped", self.macs_skipped),
                           ("stall_cycles", self.stalls)):
            total = Signal(64, name=f"total_{name}")
            m.d.comb += total.eq(sum(port[g] for g in range(groups)))
            live[name] = total
        for name in isa.COUNTER_NAMES:
            m.d.comb += getattr(regs, name).eq(live[name])
        with m.If(reset_counters):
            for name in ("dma_bytes", "busy_cycles", "runs"):
                m.d.sync += count[name].eq(0)

        # -- instruction fetch ------------------------------------------------------------
        per_fetch, queue_insns = cfg.fetch_insns, cfg.queue_insns
        flush = Signal()
        queue = StreamFIFO(isa.GlobalInsn, queue_insns)
        m.submodules.queue = ResetInserter({"sync": flush})(queue)
        fetch_pc = Signal(32)
        fetching = Signal()                          # the reader's command is a fetch
        inflight = Signal(range(queue_insns + 1))    # fetched instructions not yet queued
        dma_wants_reader = Signal()
        m.d.comb += regs.pc.eq(fetch_pc)

        fetch_bytes = per_fetch * isa.GLOBAL_BYTES
        can_fetch = running & ~dma_wants_reader & \
            (queue.level + inflight + per_fetch <= queue_insns)
        queued = queue.i.valid & queue.i.ready
        with m.If(flush):
            m.d.sync += inflight.eq(0)
        with m.Elif(reader.cmd.valid & reader.cmd.ready & ~dma_wants_reader):
            m.d.sync += [fetching.eq(1), inflight.eq(inflight + per_fetch - queued),
                         fetch_pc.eq(fetch_pc + fetch_bytes)]
        with m.Elif(queued):
            m.d.sync += inflight.eq(inflight - 1)

        # Beats -> instructions (several beats per instruction, or several per beat).
        beat = reader.o.payload.data
        fetch_ready = Signal()
        if dw <= isa.GLOBAL_BYTES * 8:
            per_insn = isa.GLOBAL_BYTES * 8 // dw
            if per_insn == 1:
                m.d.comb += queue.i.payload.eq(beat)
                m.d.comb += [queue.i.valid.eq(reader.o.valid & fetching & running),
                             fetch_ready.eq(queue.i.ready)]
            else:
                shift = Signal(isa.GLOBAL_BYTES * 8 - dw)
                part = Signal(range(per_insn))
                m.d.comb += queue.i.payload.eq(Cat(shift, beat))
                final = part == per_insn - 1
                m.d.comb += [queue.i.valid.eq(reader.o.valid & fetching & running & final),
                             fetch_ready.eq(~final | queue.i.ready)]
                with m.If(reader.o.valid & fetch_ready & fetching):
                    m.d.sync += [shift.eq(Cat(shift, beat)[dw:]),
                                 part.eq(Mux(final, 0, part + 1))]
                with m.If(flush):
                    m.d.sync += part.eq(0)
        else:
            per_beat = dw // (isa.GLOBAL_BYTES * 8)
            part = Signal(range(per_beat))
            final = part == per_beat - 1
            m.d.comb += [queue.i.payload.eq(beat.word_select(part, isa.GLOBAL_BYTES * 8)),
                         queue.i.valid.eq(reader.o.valid & fetching & running),
                         fetch_ready.eq(final & queue.i.ready)]
            with m.If(queue.i.valid & queue.i.ready):
                m.d.sync += part.eq(Mux(final, 0, part + 1))
            with m.If(flush):
                m.d.sync += part.eq(0)
        # Beats fetched for a finished program are dropped.
        with m.If(fetching):
            m.d.comb += reader.o.ready.eq(Mux(running, fetch_ready, 1))
        with m.Else():
            m.d.comb += [load.i.valid.eq(reader.o.valid), load.i.payload.eq(reader.o.payload),
                         reader.o.ready.eq(load.i.ready)]

        # -- the DMA queue and the RUN scoreboards ---------------------------------------
        insn = queue.o.payload                   # the instruction at the head of the queue
        args = insn.args
        issue = Signal()                          # it issues this cycle
        m.d.comb += queue.o.ready.eq(issue)
        entry_layout = data.StructLayout({"op": isa.GlobalOp, "dma": isa.DmaArgs})
        dq = StreamFIFO(entry_layout, DMA_QUEUE)
        m.submodules.dma_queue = ResetInserter({"sync": flush})(dq)
        issued = Signal(SEQ_BITS)                 # DMA instructions issued ...
        finished = Signal(SEQ_BITS)               # ... and completed, modulo 2 ** SEQ_BITS
        last_dma = [Signal(SEQ_BITS, name=f"last_dma{g}") for g in range(groups)]
        boards = []
        for g in range(groups):
            board = RunScoreboard(cfg)
            m.submodules[f"scoreboard{g}"] = board
            boards.append(board)
            connect(m, board.run, flipped(self.run[g]))
            m.d.comb += [board.done.eq(finished),
                         board.held.eq(Cat(self.slots[g][k].valid for k in range(RUN_SLOTS))),
                         board.issue.payload.run.eq(args.run),
                         board.issue.payload.tag.eq(last_dma[g])]
        dma_idle = issued == finished

        # -- the DMA engine ---------------------------------------------------------------
        cur = Signal(entry_layout)               # the DMA it serves
        dma = cur.dma
        space = Signal(isa.Space)
        local = Signal(32)               # byte address in the space
        chunk_bits = local_write_layout(cfg).members["chunk"].members["addr"].width
        word = Signal(max(cfg.word_addr_width, chunk_bits - wb))   # next local word
        pending = Signal(3)              # commands not yet accepted: reader/writer, realign
        counters_out = Signal()          # the store path carries the counter block
        block = Signal(max(512, dw))
        block_word = Signal(range(max(1, 512 // dw) + 1))
        rd_left = Signal(24)             # ACT words still to request

        m.d.comb += [
            load.o.ready.eq(Mux(space == isa.Space.ACT, self.act_wr.req.ready, 1)),
            self.act_wr.req.valid.eq(load.o.valid & (space == isa.Space.ACT)),
            self.act_wr.req.payload.addr.eq(word),
            self.act_wr.req.payload.data.eq(load.o.payload.data),
            self.act_wr.req.payload.mask.eq(load.o.payload.mask),
        ]
        for g in range(groups):
            chunk = self.dma[g].payload.chunk
            m.d.comb += [
                self.dma[g].valid.eq(load.o.valid & (space != isa.Space.ACT) &
                                     dma.group_mask[g]),
                self.dma[g].payload.space.eq(space),
                chunk.addr.eq(word << wb),
                chunk.data.eq(load.o.payload.data),
                chunk.mask.eq(load.o.payload.mask),
                boards[g].uop_w.valid.eq(self.dma[g].valid & (space == isa.Space.UOP)),
                boards[g].uop_w.payload.addr.eq(chunk.addr),
                boards[g].uop_w.payload.data.eq(chunk.data),
                boards[g].uop_w.payload.mask.eq(chunk.mask),
            ]
        with m.If(load.o.valid & load.o.ready):
            m.d.sync += word.eq(word + 1)

        m.submodules.ahead = ahead = StreamFIFO(dw, STORE_DEPTH)
        room = ahead.level + self.act_rd.resp.valid < STORE_DEPTH
        m.d.comb += [
            self.act_rd.req.valid.eq((rd_left != 0) & room),
            self.act_rd.req.payload.addr.eq(word),
            ahead.i.valid.eq(self.act_rd.resp.valid),
            ahead.i.payload.eq(self.act_rd.resp.payload.data),
        ]
        with m.If(self.act_rd.req.valid & self.act_rd.req.ready):
            m.d.sync += [word.eq(word + 1), rd_left.eq(rd_left - 1)]
        with m.If(counters_out):
            m.d.comb += [store.i.valid.eq(1), store.i.payload.data.eq(
                block.word_select(block_word, dw) if 512 > dw else block[:dw])]
            with m.If(store.i.ready):
                m.d.sync += block_word.eq(block_word + 1)
        with m.Else():
            m.d.comb += [store.i.valid.eq(ahead.o.valid), store.i.payload.data.eq(ahead.o.payload),
                         ahead.o.ready.eq(store.i.ready)]

        # A DMA waits for the RUNs issued before it that read what it overwrites.
        shift = Mux(space == isa.Space.PARAM, exact_log2(isa.PARAM_BYTES),
                    Mux(space == isa.Space.LUT, exact_log2(isa.LUT_BYTES),
                        Mux(space == isa.Space.UOP, exact_log2(isa.UOP_BYTES), 0)))
        for g in range(groups):
            q = boards[g].query
            m.d.comb += [q.space.eq(space), q.lo.eq(dma.local_addr),
                         q.hi.eq(dma.local_addr + (dma.length >> shift)),
                         q.group.eq(dma.group_mask[g])]
        dma_clear = ~Cat(b.conflict for b in boards).any()

        with m.If(~dma_wants_reader):
            m.d.comb += [reader.cmd.valid.eq(can_fetch), reader.cmd.payload.addr.eq(fetch_pc),
                         reader.cmd.payload.beats.eq(fetch_bytes // nbytes)]

        ext_offset = dma.ext_addr[:wb] if wb else Const(0, 1)
        local_offset = local[:wb] if wb else Const(0, 1)

        with m.FSM(name="dma"):
            with m.State("IDLE"):
                m.d.comb += dq.o.ready.eq(1)
                with m.If(dq.o.valid):
                    e = dq.o.payload
                    m.d.sync += [cur.eq(e), space.eq(Mux(e.op == isa.GlobalOp.UOP_LOAD,
                                                         isa.Space.UOP, e.dma.space))]
                    with m.Switch(e.op):
                        with m.Case(isa.GlobalOp.DMA_LOAD, isa.GlobalOp.UOP_LOAD):
                            m.d.sync += local.eq(e.dma.local_addr << Mux(
                                e.op == isa.GlobalOp.UOP_LOAD, exact_log2(isa.UOP_BYTES),
                                Mux(e.dma.space == isa.Space.PARAM, exact_log2(isa.PARAM_BYTES),
                                    Mux(e.dma.space == isa.Space.LUT,
                                        exact_log2(isa.LUT_BYTES), 0))))
                            m.next = "LOAD_WAIT"
                        with m.Case(isa.GlobalOp.DMA_STORE):
                            m.d.sync += [local.eq(e.dma.local_addr), space.eq(isa.Space.ACT)]
                            m.next = "STORE_WAIT"
                        with m.Default():               # COUNTERS STORE
                            m.d.sync += [block_word.eq(0), counters_out.eq(1),
                                         pending.eq(0b11)]
                            m.next = "COUNTERS"
            with m.State("LOAD_WAIT"):
                m.d.comb += dma_wants_reader.eq(dma_clear)
                with m.If(dma_clear & ~reader.busy):
                    m.d.sync += [pending.eq(0b11), word.eq(local[wb:])]
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [
                    dma_wants_reader.eq(1),
                    reader.cmd.valid.eq(pending[0]),
                    reader.cmd.payload.addr.eq(_aligned(dma.ext_addr, wb)),
                    reader.cmd.payload.beats.eq(covering_words(ext_offset, dma.length, dw)),
                    load.cmd.valid.eq(pending[1]),
                    load.cmd.payload.src_offset.eq(ext_offset),
                    load.cmd.payload.dst_offset.eq(local_offset),
                    load.cmd.payload.length.eq(dma.length),
                ]
                accepted = Cat(reader.cmd.ready, load.cmd.ready)
                m.d.sync += pending.eq(pending & ~accepted)
                with m.If(reader.cmd.valid & reader.cmd.ready):
                    m.d.sync += fetching.eq(0)
                with m.If((pending & ~accepted) == 0):
                    m.next = "LOAD_END"
            with m.State("LOAD_END"):
                m.d.comb += dma_wants_reader.eq(1)
                with m.If(load.cmd.ready):        # the realigner has produced every word
                    m.d.sync += finished.eq(finished + 1)
                    m.next = "IDLE"

            with m.State("STORE_WAIT"):
                with m.If(dma_clear):
                    m.d.sync += [pending.eq(0b11), word.eq(local[wb:]),
                                 rd_left.eq(covering_words(local_offset, dma.length, dw))]
                    m.next = "STORE"
            with m.State("STORE"):
                self._store_commands(m, writer, store, pending, dma.ext_addr, dma.length,
                                     local_offset, nbytes, wb, dw)
                with m.If(pending == 0):
                    m.next = "STORE_END"
            with m.State("COUNTERS"):
                self._store_commands(m, writer, store, pending, dma.ext_addr,
                                     Const(8 * len(isa.COUNTER_NAMES), 24), Const(0, max(1, wb)),
                                     nbytes, wb, dw)
                with m.If(pending == 0):
                    m.next = "STORE_END"
            with m.State("STORE_END"):
                with m.If(~writer.busy & store.cmd.ready & (rd_left == 0) & ~counters_out):
                    m.d.sync += finished.eq(finished + 1)
                    m.next = "IDLE"
                with m.If(counters_out & store.cmd.ready):
                    m.d.sync += counters_out.eq(0)

        # -- the issue stage: one instruction per cycle, in order --------------------------
        op = insn.op
        run_mask = args.run.group_mask
        dma_mask = Mux(op == isa.GlobalOp.DMA_LOAD, Mux(args.dma.space == isa.Space.ACT,
                                                        all_groups, args.dma.group_mask),
                       Mux(op == isa.GlobalOp.UOP_LOAD, args.dma.group_mask, all_groups))
        busy = Cat(self.group_busy[g] | (boards[g].count != 0) for g in range(groups))
        with m.If(flush):
            m.d.sync += [issued.eq(0), finished.eq(0), *(t.eq(0) for t in last_dma)]

        with m.If(running & queue.o.valid):
            with m.Switch(op):
                with m.Case(isa.GlobalOp.NOP):
                    m.d.comb += issue.eq(1)
                with m.Case(isa.GlobalOp.DMA_LOAD, isa.GlobalOp.DMA_STORE,
                            isa.GlobalOp.UOP_LOAD):
                    m.d.comb += [dq.i.valid.eq(1), dq.i.payload.op.eq(op),
                                 dq.i.payload.dma.eq(args.dma), issue.eq(dq.i.ready)]
                    with m.If(issue):
                        m.d.sync += [issued.eq(issued + 1),
                                     count["dma_bytes"].eq(count["dma_bytes"] +
                                                           args.dma.length)]
                        for g in range(groups):
                            with m.If(dma_mask[g]):
                                m.d.sync += last_dma[g].eq(issued + 1)
                with m.Case(isa.GlobalOp.ROUTE):
                    # After the RUNs before it have left for their groups.
                    m.d.comb += issue.eq(~Cat(run_mask_bit & (b.waiting != 0) for
                                              run_mask_bit, b in zip(args.route.group_mask,
                                                                     boards)).any())
                    m.d.comb += [self.route.valid.eq(issue), self.route.payload.eq(args.route)]
                with m.Case(isa.GlobalOp.RUN):
                    free = Cat(~run_mask[g] | b.issue.ready for g, b in enumerate(boards))
                    m.d.comb += issue.eq(free.all())
                    for g, b in enumerate(boards):
                        m.d.comb += b.issue.valid.eq(run_mask[g] & free.all())
                    with m.If(issue):
                        m.d.sync += count["runs"].eq(count["runs"] + 1)
                with m.Case(isa.GlobalOp.BARRIER):
                    m.d.comb += issue.eq(dma_idle &
                                         ((busy & args.barrier.group_mask[:groups]) == 0))
                with m.Case(isa.GlobalOp.COUNTERS, isa.GlobalOp.END):
                    # COUNTERS and END first wait for all work, as the simulator does.
                    m.d.comb += issue.eq(dma_idle & ~busy.any())
                    with m.If(issue):
                        with m.If(op == isa.GlobalOp.END):
                            m.d.sync += [running.eq(0), done.eq(1)]
                        with m.Elif(args.counters.action == isa.CounterAction.RESET):
                            m.d.comb += reset_counters.eq(1)
                        with m.Else():
                            values = dict(live)
                            values["instructions"] = count["instructions"] + 1
                            m.d.sync += block.eq(Cat(values[name] for name in isa.COUNTER_NAMES))
                            m.d.comb += [dq.i.valid.eq(1), dq.i.payload.op.eq(op),
                                         dq.i.payload.dma.ext_addr.eq(args.counters.ext_addr)]
                            m.d.sync += issued.eq(issued + 1)
                with m.Default():
                    m.d.sync += [error.eq(1), done.eq(1), running.eq(0)]
        with m.If(issue):
            m.d.sync += count["instructions"].eq(count["instructions"] + 1)

        with m.If(~running):
            # The start strobe waits while fetches of the last program drain.
            with m.If(regs.start):
                m.d.sync += [start.eq(1), done.eq(0)]
            with m.If((regs.start | start) & ~reader.busy & ~writer.busy):
                m.d.sync += start.eq(0)
                m.d.comb += [flush.eq(1), reset_counters.eq(1)]
                m.d.sync += [running.eq(1), done.eq(0), error.eq(0),
                             fetch_pc.eq(regs.base), fetching.eq(0),
                             count["cycles"].eq(0), count["instructions"].eq(0)]
        return m

    @staticmethod
    def _store_commands(m, writer, store, pending, ext_addr, length, src_offset, nbytes, wb,
                        dw):
        """Offer the writer's and the store realigner's commands until both are taken."""
        dst_offset = ext_addr[:wb] if wb else Const(0, 1)
        m.d.comb += [
            writer.cmd.valid.eq(pending[0]),
            writer.cmd.payload.addr.eq(_aligned(ext_addr, wb)),
            writer.cmd.payload.beats.eq(covering_words(dst_offset, length, dw)),
            store.cmd.valid.eq(pending[1]),
            store.cmd.payload.src_offset.eq(src_offset),
            store.cmd.payload.dst_offset.eq(dst_offset),
            store.cmd.payload.length.eq(length),
        ]
        m.d.sync += pending.eq(pending & ~Cat(writer.cmd.ready, store.cmd.ready))
