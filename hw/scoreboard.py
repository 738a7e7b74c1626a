"""The controller's per-group RUN scoreboard: the RUNs a group holds, and what each reads.

The global controller issues a RUN into the scoreboard of every group in its mask without
waiting for the DMA before it; the scoreboard hands the RUN to the group once every earlier
DMA into the group's memories (and every earlier ``ACT`` DMA) is done, and keeps it until the
group has completed it. Meanwhile it answers the DMA engine's question "does an earlier RUN
read what this DMA overwrites?" with the RUN's exact ranges (docs/isa.md): the micro-op and
PARAM entries from the RUN registers, the weight bytes and activation tables from its
micro-program, which the scoreboard decodes with the group's decoder
(:class:`~flexigan.hw.group.decoder.MicroProgramDecoder`) from a copy of the group's micro-op
memory (written by the same ``UOP_LOAD`` chunks) while the RUN waits or runs.

DMA order is counted by sequence numbers: the controller numbers DMA instructions as it
issues them (``1, 2, ...`` modulo ``2 ** SEQ_BITS``); a RUN carries the number of the last DMA
before it that it depends on and is released when ``done`` (DMAs completed) reaches it. So at
the time the DMA engine starts DMA ``s``, the released RUNs are exactly the RUNs issued before
``s``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect
from amaranth.utils import ceil_log2

from .agen import LEVELS
from .arch import isa
from .arch.config import RUN_SLOTS
from .group.decoder import MicroProgramDecoder
from .memories import ElementMemory, chunk_layout

__all__ = ["SEQ_BITS", "run_issue_layout", "dma_query_layout", "RunScoreboard"]

#: Bits of a DMA sequence number: twice the DMAs that can be outstanding, and more.
SEQ_BITS = 8
#: Bits of a weight address computed from a micro-program (offsets, strides x counts).
_WGT_BITS = 48


def run_issue_layout():
    """A RUN for a group's scoreboard, with the number of the last DMA it waits for."""
    return data.StructLayout({"run": isa.RunArgs, "tag": unsigned(SEQ_BITS)})


def dma_query_layout():
    """A DMA the engine is about to start: the space it writes (``ACT`` for loads and stores of
    activations, which wait for every earlier RUN), the entries ``[lo, hi)`` in the space's
    unit (bytes, PARAM entries, tables, micro-ops), and whether it touches this group."""
    return data.StructLayout({"space": isa.Space, "lo": unsigned(25), "hi": unsigned(26),
                              "group": 1})


def _record_layout(config):
    return data.StructLayout({
        "valid": 1,           # issued and not yet complete
        "ready": 1,           # every DMA it depends on is done
        "dispatched": 1,      # handed to the group
        "scanned": 1,         # its micro-program's ranges below are known
        "tag": unsigned(SEQ_BITS),
        "run": isa.RunArgs,
        "reads_wgt": 1,
        "wgt_lo": signed(_WGT_BITS), "wgt_hi": signed(_WGT_BITS),
        "tables": unsigned(config.lut_tables),
    })


def released(tag, done):
    """Whether DMA number ``tag`` is done when ``done`` DMAs are (modulo ``2 ** SEQ_BITS``)."""
    return ~(done - tag)[SEQ_BITS - 1]


def _next_slot(slot):
    return Mux(slot == RUN_SLOTS - 1, 0, slot + 1)


class RunScoreboard(wiring.Component):
    """The RUNs of one group from issue to completion (see the module docstring).

    Contract: ``issue`` takes a RUN with the sequence number of the last DMA it waits for
    (only while ``count < RUN_SLOTS``); RUNs leave on ``run`` in order, each once ``done``
    has reached its tag. ``held`` is the group's ``slots`` valid bits: a RUN is complete (and
    its entry free) once the group no longer holds it. ``conflict`` is high while a released
    RUN may read what ``query`` overwrites (any released RUN for ``ACT``; a RUN whose
    micro-program is not read yet counts as reading every weight and table). ``uop_w`` must
    carry every chunk written to the group's micro-op memory.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    issue : In(stream.Signature({"run": isa.RunArgs, "tag": unsigned(SEQ_BITS)}))
    done : In(SEQ_BITS)
    run : Out(stream.Signature(isa.RunArgs))
    held : In(RUN_SLOTS)
    count, waiting : Out(range(RUN_SLOTS + 1))
        RUNs held here, and those not yet handed to the group.
    uop_w : In(stream.Signature(chunk_layout(...), always_ready=True))
    query : In(dma_query_layout())
    conflict : Out(1)
    """

    def __init__(self, config):
        self._config = config
        self._uop_aw = ceil_log2(config.uop_depth * isa.UOP_BYTES)
        super().__init__({
            "issue": In(stream.Signature(run_issue_layout())),
            "done": In(SEQ_BITS),
            "run": Out(stream.Signature(isa.RunArgs)),
            "held": In(RUN_SLOTS),
            "count": Out(range(RUN_SLOTS + 1)),
            "waiting": Out(range(RUN_SLOTS + 1)),
            "uop_w": In(stream.Signature(chunk_layout(self._uop_aw, config.axi_bytes),
                                         always_ready=True)),
            "query": In(dma_query_layout()),
            "conflict": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        records = Signal(data.ArrayLayout(_record_layout(self._config), RUN_SLOTS))
        # Records are kept in a ring, oldest first from ``head``: ``dispatch`` is the next to
        # hand to the group, ``scan`` the next whose micro-program to read.
        tail, dispatch, head, scan = (Signal(range(RUN_SLOTS), name=name)
                                      for name in ("tail", "dispatch", "head", "scan"))
        given = Signal(range(RUN_SLOTS + 1))      # handed to the group, not yet complete

        # Release: a RUN's DMAs are done.
        for record in records:
            with m.If(record.valid & released(record.tag, self.done)):
                m.d.sync += record.ready.eq(1)

        # Issue and hand-off, in order.
        push = self.issue.valid & self.issue.ready
        m.d.comb += self.issue.ready.eq(self.count < RUN_SLOTS)
        with m.If(push):
            m.d.sync += [records[tail].eq(0), records[tail].valid.eq(1),
                         records[tail].tag.eq(self.issue.payload.tag),
                         records[tail].run.eq(self.issue.payload.run), tail.eq(_next_slot(tail))]
        next_out = records[dispatch]
        m.d.comb += [self.run.valid.eq(next_out.valid & next_out.ready & ~next_out.dispatched),
                     self.run.payload.eq(next_out.run)]
        handed = self.run.valid & self.run.ready
        with m.If(handed):
            m.d.sync += [next_out.dispatched.eq(1), dispatch.eq(_next_slot(dispatch))]

        # Completion: the group holds fewer RUNs than it was given (one completes per cycle).
        pop = Signal()
        scanning = Signal()                      # the scanner reads the micro-program of ``scan``
        # An entry the scanner is reading is freed once the scanner is done with it.
        m.d.comb += pop.eq((given > sum(self.held[k] for k in range(RUN_SLOTS))) &
                           ~(scanning & (scan == head)))
        with m.If(pop):
            m.d.sync += [records[head].valid.eq(0), head.eq(_next_slot(head))]
        m.d.sync += [given.eq(given + handed - pop), self.count.eq(self.count + push - pop)]
        m.d.comb += self.waiting.eq(self.count - given)

        self._scanner(m, records[scan], scan, scanning)
        self._conflicts(m, records)
        return m

    def _scanner(self, m, record, scan, scanning):
        """Decodes the micro-program of each released RUN, in order, and records what it reads
        (``record`` is the one at ``scan``; ``scanning`` is high while it is read)."""
        config = self._config
        # The scanner reads its own copy of the group's micro-op memory, not the group's: it
        # scans a RUN as soon as the RUN is released, while the group's decoder (and its one
        # read port) is busy with the RUNs before it, and a DMA into WGT or LUT waits for a
        # released RUN until it is scanned. Scanning through the group's port, when the
        # decoder gets to the RUN, would hold those DMAs back; a second read port on the
        # group's memory would be a second copy on the FPGA all the same (its RAMs have one
        # read port beside the write port).
        m.submodules.uops = uops = ElementMemory(element_bytes=isa.UOP_BYTES,
                                                 depth=config.uop_depth,
                                                 chunk_bytes=config.axi_bytes)
        m.d.comb += [uops.w.valid.eq(self.uop_w.valid), uops.w.payload.eq(self.uop_w.payload)]
        m.submodules.decoder = decoder = MicroProgramDecoder(config)
        connect(m, decoder.uop, uops.r)
        m.d.comb += [decoder.start.valid.eq(record.valid & record.ready & ~record.scanned),
                     decoder.start.payload.addr.eq(record.run.uop_addr),
                     decoder.start.payload.count.eq(record.run.uop_count),
                     scanning.eq(decoder.busy)]
        reads_wgt, wgt_lo, wgt_hi, tables = self._hazard_scan(m, decoder, record.run)
        with m.If(decoder.done):
            m.d.sync += [record.scanned.eq(1), record.tables.eq(tables),
                         record.reads_wgt.eq(reads_wgt), record.wgt_lo.eq(wgt_lo),
                         record.wgt_hi.eq(wgt_hi), scan.eq(_next_slot(scan))]

    def _hazard_scan(self, m, decoder, run):
        """What ``run`` reads, from its micro-program as ``decoder`` decodes it: returns
        ``reads_wgt``, the weight bytes ``[wgt_lo, wgt_hi)`` and the activation tables (a bit
        per table), each final in the cycle of ``decoder.done``.

        A LOOP's weight span and a POST's tables are taken from the micro-op in the cycle it is
        decoded (the span's multiply and the tables' compares on the memory's output): this is
        the design's critical path on the ECP5 (36 MHz routed for 2 groups x 8 lanes).
        """
        tables = self._config.lut_tables
        program = decoder.program
        uop = decoder.decoded.payload
        # The lowest and highest weight offset each loop level reaches, from its last LOOP.
        below = [Signal(signed(_WGT_BITS), name=f"below{k}") for k in range(LEVELS)]
        above = [Signal(signed(_WGT_BITS), name=f"above{k}") for k in range(LEVELS)]
        used = Signal(tables)
        with m.If(decoder.start.valid & decoder.start.ready):
            m.d.sync += [used.eq(0), [offset.eq(0) for offset in below + above]]

        loop = uop.args.loop
        span = Signal(signed(_WGT_BITS))          # (count - 1) x wgt_stride of a LOOP
        m.d.comb += span.eq((loop.count - 1) * loop.wgt_stride)
        post = uop.args.post
        first = Signal(range(tables))
        m.d.comb += first.eq(run.lut_offset + post.lut)
        lanes = run.lanes
        post_tables = Cat(post.use_lut & (lanes != 0) &
                          Mux(post.per_lane, (Const(t, range(tables)) - first)[:len(first)]
                              < lanes, first == t) for t in range(tables))
        with m.If(decoder.decoded.valid & (uop.op == isa.UopOp.LOOP)):
            for k in range(LEVELS):
                with m.If(loop.level == k):
                    m.d.sync += [below[k].eq(Mux(span < 0, span, 0)),
                                 above[k].eq(Mux(span > 0, span, 0))]
        # Every POST's tables, though the group uses the last POST's (a micro-program with two
        # is an error).
        with m.If(decoder.decoded.valid & (uop.op == isa.UopOp.POST)):
            m.d.sync += used.eq(used | post_tables)

        wgt_base = Signal(signed(_WGT_BITS))
        m.d.comb += wgt_base.eq(run.wgt_offset + program.wgt.base)
        lane_span = Signal(signed(_WGT_BITS))
        m.d.comb += lane_span.eq((lanes - 1) * program.wgt.lane_stride)
        empty = Cat(program.count[k] == 0 for k in range(LEVELS))
        reads_wgt = (program.passes != 0) & ~empty.any() & (lanes != 0)
        return reads_wgt, wgt_base + sum(below), wgt_base + lane_span + sum(above) + 1, used

    def _conflicts(self, m, records):
        """``conflict``: a released RUN may read what the DMA in ``query`` overwrites."""
        query = self.query
        tables = self._config.lut_tables
        hits = []
        for k, record in enumerate(records):
            run = record.run
            lo, hi = Signal(26, name=f"lo{k}"), Signal(26, name=f"hi{k}")
            hit = Signal(name=f"hit{k}")
            overlaps = query.group & (lo < query.hi) & (query.lo < hi)
            with m.Switch(query.space):
                with m.Case(isa.Space.ACT):
                    m.d.comb += hit.eq(1)
                with m.Case(isa.Space.UOP):
                    m.d.comb += [lo.eq(run.uop_addr), hi.eq(run.uop_addr + run.uop_count),
                                 hit.eq(overlaps)]
                with m.Case(isa.Space.PARAM):
                    m.d.comb += [lo.eq(run.param_offset), hi.eq(run.param_offset + run.lanes),
                                 hit.eq(overlaps)]
                with m.Case(isa.Space.WGT):
                    m.d.comb += hit.eq(query.group & (~record.scanned | record.reads_wgt &
                                                      (record.wgt_lo < query.hi) &
                                                      (query.lo < record.wgt_hi)))
                with m.Case(isa.Space.LUT):
                    written = Cat((query.lo <= t) & (t < query.hi) for t in range(tables))
                    m.d.comb += hit.eq(query.group &
                                       (~record.scanned | (record.tables & written).any()))
            hits.append(record.valid & record.ready & hit)
        m.d.comb += self.conflict.eq(Cat(hits).any())
