"""The controller's per-group RUN scoreboard: the RUNs a group holds, and what each reads.

The global controller issues a RUN into the scoreboard of every group in its mask without
waiting for the DMA before it; the scoreboard hands the RUN to the group once every earlier
DMA into the group's memories (and every earlier ``ACT`` DMA) is done, and keeps it until the
group has completed it. Meanwhile it answers the DMA engine's question "does an earlier RUN
read what this DMA overwrites?" with the RUN's exact ranges (docs/isa.md): the micro-op and
PARAM entries from the RUN registers, the weight bytes and activation tables from its
micro-program, which the scoreboard decodes with the group's decoder
(:class:`~flexigan.hw.group.decoder.MicroProgramDecoder`) from a copy of the group's micro-op
memory (written by the same ``UOP_LOAD`` chunks) while the RUN waits or runs; until then a RUN
counts as reading every weight and table and ``3 x lanes`` PARAM entries (a NORM FINISH's).

DMA order is counted by sequence numbers: the controller numbers DMA instructions as it
issues them (``1, 2, ...`` modulo ``2 ** SEQ_BITS``); a RUN carries the number of the last DMA
before it that it depends on and is released when ``done`` (DMAs completed) reaches it. So at
the time the DMA engine starts DMA ``s``, the released RUNs are exactly the RUNs issued before
``s``.
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out, connect
from amaranth.utils import ceil_log2

from .agen import LEVELS
from .arch import isa
from .arch.config import RUN_SLOTS
from .arch.timing import RUN_ENTRY, SCAN_DRAIN
from .countdown import below, step
from .group.decoder import MicroProgramDecoder
from .memories import ElementMemory, chunk_layout

__all__ = ["SEQ_BITS", "run_issue_layout", "dma_query_layout", "RunScoreboard"]

#: Bits of a DMA sequence number: twice the DMAs that can be outstanding, and more.
SEQ_BITS = 8



def _thrice(value):
    """``3 * value`` as a shift and an add: Yosys maps a product to a multiplier block (on the
    2 x 8 ULX3S cut a RUN's ``3 * lanes`` took 3.9 ns in a MULT18X18D before the record's
    PARAM range, the critical path at 85.1 MHz)."""
    return (value << 1) + value

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
    run = dict(isa.fields_of(isa.RunArgs))
    return data.StructLayout({
        "valid": 1,           # issued and not yet complete
        "ready": 1,           # every DMA it depends on is done
        "dispatched": 1,      # handed to the group
        "scanned": 1,         # its micro-program's ranges below are known
        "tag": unsigned(SEQ_BITS),
        # The micro-ops and PARAM entries it reads, from its registers (PARAM: 3 x lanes
        # entries until its micro-program shows no NORM FINISH).
        "uop_lo": run["uop_addr"], "uop_hi": unsigned(run["uop_addr"].width + 1),
        "param_lo": run["param_offset"], "param_hi": unsigned(run["param_offset"].width + 1),
        # The weight bytes and tables it reads, from its micro-program.
        "reads_wgt": 1,
        "wgt_lo": unsigned(ceil_log2(config.weight_bytes + 1)),
        "wgt_hi": unsigned(ceil_log2(config.weight_bytes + 1)),
        "tables": unsigned(config.lut_tables),
    })


def released(tag, done):
    """Whether DMA number ``tag`` is done when ``done`` DMAs are (modulo ``2 ** SEQ_BITS``)."""
    return ~(done - tag)[SEQ_BITS - 1]


def _saturate(value, bits):
    """``value`` (signed or unsigned) in ``bits`` bits (signed for a signed value), or the
    largest value of that sign that fits: no comparator, only a check of the high bits."""
    if value.shape().signed:
        high = value[bits - 1:]
        fits = (high == 0) | (high == (1 << len(high)) - 1)
        top = Mux(value[-1], -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        return Mux(fits, value[:bits].as_signed(), top)
    return Mux(value[bits:] == 0, value[:bits], (1 << bits) - 1)


def _next_slot(slot):
    return Mux(slot == RUN_SLOTS - 1, 0, slot + 1)


class RunScoreboard(wiring.Component):
    """The RUNs of one group from issue to completion (see the module docstring).

    Contract: ``issue`` takes a RUN with the sequence number of the last DMA it waits for
    (only while ``count < RUN_SLOTS``) and records it :attr:`ENTRY` cycles later; RUNs leave
    on ``run`` in order, each once ``done`` has reached its tag. ``held`` is the group's
    ``slots`` valid bits: a RUN is complete (and its entry free) once the group no longer
    holds it. ``conflict`` is high while a released RUN may read what ``query`` overwrites
    (any released RUN for ``ACT``; a RUN whose micro-program is not read yet counts as
    reading every weight and table and ``3 x lanes`` PARAM entries), for the query of two
    cycles before and the RUNs of the cycle before (the query registered, then the answer).
    ``uop_w`` must carry every chunk written to the group's micro-op memory.

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

    #: Cycles from a RUN's issue to its record (the entry register).
    ENTRY = RUN_ENTRY

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
        # One signal per record (not an array indexed by a signal: a whole record selected by
        # an index is a shifter as wide as all of them); the ring pointers select fields.
        records = [Signal(_record_layout(self._config), name=f"record{k}")
                   for k in range(RUN_SLOTS)]

        def at(index, field):
            return Array(getattr(record, field) for record in records)[index]

        def update(index, **fields):
            for k, record in enumerate(records):
                with m.If(index == k):
                    m.d.sync += [getattr(record, name).eq(value) for name, value in fields.items()]
        # The RUNs' registers, for the group and the scanner, in LUT RAM: the records keep
        # only what the hazard checks compare, with their sums taken once, at issue.
        m.submodules.runs = runs = memory.Memory(shape=isa.RunArgs, depth=RUN_SLOTS, init=[])
        runs_w = runs.write_port()
        to_group = runs.read_port(domain="comb")
        to_scan = runs.read_port(domain="comb")
        # Records are kept in a ring, oldest first from ``head``: ``dispatch`` is the next to
        # hand to the group, ``scan`` the next whose micro-program to read.
        tail, dispatch, head, scan = (Signal(range(RUN_SLOTS), name=name)
                                      for name in ("tail", "dispatch", "head", "scan"))
        given = Signal(range(RUN_SLOTS + 1))      # handed to the group, not yet complete

        # Release: a RUN's DMAs are done.
        for record in records:
            with m.If(record.valid & released(record.tag, self.done)):
                m.d.sync += record.ready.eq(1)

        # Issue into the entry register, and from it into the record at ``tail`` a cycle
        # later (RUN_ENTRY): the issue stage's decision ends at that register's enable, not
        # at the records' and the LUT RAM's. ``count`` counts the entry from the start, and
        # ``ready`` is a flip-flop: room for one more after this cycle's push and pop.
        push = self.issue.valid & self.issue.ready
        entry = Signal(run_issue_layout())
        entering = Signal()
        ready = Signal(init=1)
        m.d.sync += [entering.eq(push), entry.eq(self.issue.payload)]
        new = entry.run
        m.d.comb += [self.issue.ready.eq(ready),
                     runs_w.addr.eq(tail), runs_w.data.eq(new), runs_w.en.eq(entering)]
        with m.If(entering):
            update(tail, valid=1, ready=0, dispatched=0, scanned=0, tag=entry.tag,
                   uop_lo=new.uop_addr, uop_hi=new.uop_addr + new.uop_count,
                   param_lo=new.param_offset, param_hi=new.param_offset + _thrice(new.lanes))
            m.d.sync += tail.eq(_next_slot(tail))
        m.d.comb += [to_group.addr.eq(dispatch),
                     self.run.valid.eq(at(dispatch, "valid") & at(dispatch, "ready") &
                                       ~at(dispatch, "dispatched")),
                     self.run.payload.eq(to_group.data)]
        handed = self.run.valid & self.run.ready
        with m.If(handed):
            update(dispatch, dispatched=1)
            m.d.sync += dispatch.eq(_next_slot(dispatch))

        # Completion: the group holds fewer RUNs than it was given (one completes per cycle).
        pop = Signal()
        scanning = Signal()                      # the scanner reads the micro-program of ``scan``
        # An entry the scanner is reading is freed once the scanner is done with it.
        m.d.comb += pop.eq((given > sum(self.held[k] for k in range(RUN_SLOTS))) &
                           ~(scanning & (scan == head)))
        with m.If(pop):
            update(head, valid=0)
            m.d.sync += head.eq(_next_slot(head))
        # The issue's push, the group's hand-off and the completions select among sums worked
        # out without them (not sums of them: a carry chain after the issue stage's decision).
        m.d.sync += [
            given.eq(step(handed, pop, given)),
            self.count.eq(step(push, pop, self.count)),
            ready.eq(below(push, pop, self.count, RUN_SLOTS, ready)),
        ]
        m.d.comb += self.waiting.eq(self.count - given)

        m.d.comb += to_scan.addr.eq(scan)
        pending = at(scan, "valid") & at(scan, "ready") & ~at(scan, "scanned")
        finish, reads_wgt, wgt_lo, wgt_hi, tables, param_hi = self._scanner(
            m, pending, to_scan.data, scanning)
        with m.If(finish):
            update(scan, scanned=1, tables=tables, reads_wgt=reads_wgt, wgt_lo=wgt_lo,
                   wgt_hi=wgt_hi, param_hi=param_hi)
            m.d.sync += scan.eq(_next_slot(scan))
        self._conflicts(m, records)
        return m

    def _scanner(self, m, pending, run, scanning):
        """Decodes the micro-program of each released RUN, in order, and finds what it reads
        (``pending``: the RUN at ``scan``, registers ``run``, is released and not scanned;
        ``scanning`` is high from the decoder's start until the ranges are recorded). Returns
        the strobe that records them and ``reads_wgt``, ``wgt_lo``, ``wgt_hi``, ``tables``,
        ``param_hi``."""
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
        # The ranges are final SCAN_DRAIN cycles after the decoder's ``done``; the next scan
        # starts once they are recorded.
        draining = Signal(SCAN_DRAIN)
        m.d.sync += draining.eq(Cat(decoder.done, draining[:-1]))
        m.d.comb += [decoder.start.valid.eq(pending & ~draining.any()),
                     decoder.start.payload.addr.eq(run.uop_addr),
                     decoder.start.payload.count.eq(run.uop_count),
                     scanning.eq(decoder.busy | draining.any())]
        # A NORM FINISH reads 3 x lanes PARAM entries, any other RUN its lanes' (docs/isa.md).
        param_hi = Signal(_record_layout(config).members["param_hi"])
        program = decoder.program
        finishes = program.norms & (program.norm.step == isa.NormStep.FINISH)
        with m.If(decoder.done):
            m.d.sync += param_hi.eq(run.param_offset + Mux(finishes, _thrice(run.lanes), run.lanes))
        return (draining[-1], *self._hazard_scan(m, decoder, run), param_hi)

    def _hazard_scan(self, m, decoder, run):
        """What ``run`` reads, from its micro-program as ``decoder`` decodes it: returns
        ``reads_wgt``, the weight bytes ``[wgt_lo, wgt_hi)`` and the activation tables (a bit
        per table), each final :data:`SCAN_DRAIN` cycles after ``decoder.done``.

        A pipeline, so that no multiply or long sum sits between two registers with much else:
        a decoded micro-op is registered (stage 1: LOOP operands clamped, POST operands), its
        span ``(count - 1) x wgt_stride`` multiplied (stage 2) and kept per loop level (stage
        3); after ``done`` the spans are summed (stage 4) and added to the base (stage 5, the
        base summed and saturated in two cycles beside it), then compared with the buffer.
        Every value is clamped to a few times the buffer: a span beyond it, or a range that
        leaves the buffer (a program whose addresses wrap), counts as reading every weight,
        and so does a MAC with ``WGT.lane_stride != 1`` (which the group rejects).
        """
        config = self._config
        tables = config.lut_tables
        size = config.weight_bytes
        # Spans saturate at 2 ** bits - 1 >= 4 x size (the whole buffer either way), so no
        # clamp needs a comparator; sums of three spans, the base and the lanes fit ``width``.
        bits = max(ceil_log2(size), 8) + 2
        width = bits + 3
        program = decoder.program
        uop = decoder.decoded.payload
        start = decoder.start.valid & decoder.start.ready

        # Stage 1: the decoded micro-op.
        loop, post = uop.args.loop, uop.args.post
        is_loop, is_post = Signal(), Signal()
        level = Signal.like(loop.level)
        steps, stride = Signal(bits), Signal(signed(bits + 1))
        post1 = Signal.like(post)
        m.d.sync += [is_loop.eq(decoder.decoded.valid & (uop.op == isa.UopOp.LOOP)),
                     is_post.eq(decoder.decoded.valid & (uop.op == isa.UopOp.POST)),
                     level.eq(loop.level), post1.eq(post),
                     steps.eq(_saturate(Mux(loop.count == 0, 0, loop.count - 1), bits)),
                     stride.eq(_saturate(loop.wgt_stride, bits + 1))]
        # Stage 2: the span; stage 3: the span of each level's last LOOP.
        is_loop2, level2 = Signal(), Signal.like(level)
        product = Signal(signed(2 * bits + 2))
        m.d.sync += [is_loop2.eq(is_loop), level2.eq(level), product.eq(steps * stride)]
        spans = [Signal(signed(bits + 1), name=f"span{k}") for k in range(LEVELS)]
        for k in range(LEVELS):
            with m.If(start):
                m.d.sync += spans[k].eq(0)
            with m.Elif(is_loop2 & (level2 == k)):
                m.d.sync += spans[k].eq(_saturate(product, bits + 1))

        # Every POST's tables, though the group uses the last POST's (a micro-program with two
        # is an error): ``lanes`` tables from ``first`` (per lane) or table ``first``, modulo
        # ``tables``, as a mask from table 0 rotated by ``first``.
        used = Signal(tables)
        first = Signal(range(tables))
        lanes = run.lanes
        m.d.comb += first.eq(run.lut_offset + post1.lut)
        from_zero = Mux(post1.per_lane, Cat(lanes > t for t in range(tables)), 1)
        post_tables = (Cat(from_zero, from_zero) << first)[tables:2 * tables]
        with m.If(start):
            m.d.sync += used.eq(0)
        with m.Elif(is_post & post1.use_lut & (lanes != 0)):
            m.d.sync += used.eq(used | post_tables)

        # At ``done``: the base (summed, then saturated) and whether the run reads weights.
        base_sum = Signal.like(run.wgt_offset + program.wgt.base)
        base = Signal(bits)
        reads_wgt, whole = Signal(), Signal()
        empty = Cat(program.count[k] == 0 for k in range(LEVELS))
        with m.If(decoder.done):
            m.d.sync += [base_sum.eq(run.wgt_offset + program.wgt.base),
                         reads_wgt.eq((program.passes != 0) & ~empty.any() & (lanes != 0)),
                         whole.eq(program.wgt.lane_stride != 1)]
        m.d.sync += base.eq(_saturate(base_sum, bits))
        # Stage 4: the sums of the spans below and above 0 (the lanes' span is lanes - 1).
        below, above = Signal(signed(width)), Signal(signed(width))
        m.d.sync += [below.eq(sum(Mux(s < 0, s, 0) for s in spans)),
                     above.eq(sum(Mux(s > 0, s, 0) for s in spans) + lanes)]
        # Stage 5: the range (registered); then the range or the whole buffer.
        lo, hi = Signal(signed(width)), Signal(signed(width))
        m.d.sync += [lo.eq(base + below), hi.eq(base + above)]
        whole_range = whole | (lo < 0) | (hi > size)
        return reads_wgt, Mux(whole_range, 0, lo), Mux(whole_range, size, hi), used

    def _conflicts(self, m, records):
        """``conflict``: a released RUN may read what the DMA in ``query`` overwrites. The
        query is registered first, with its ranges saturated to the records' widths and its
        space decoded, so the comparisons start at registers, and each record's answer is
        registered: the answer is two cycles late."""
        query = self.query
        tables = self._config.lut_tables
        layout = _record_layout(self._config)
        bits = max(layout.members[name].width for name in ("uop_hi", "param_hi", "wgt_hi"))
        # The tables written: ``lo <= t < hi`` for each table ``t``, each a check that the high
        # bits are zero beside a small comparison with a constant (not a comparison after a
        # saturation: two levels fewer from the DMA engine's registers).
        low = ceil_log2(tables)
        lo_small, hi_small = query.lo[low:] == 0, query.hi[low:] == 0
        written = Signal(tables)
        # The query, saturated to the widest of the records' ranges (beyond them it compares
        # the same), and its space, one bit each.
        query_lo, query_hi = Signal(bits + 1), Signal(bits + 1)
        space = {s: Signal(name=f"query_{s.name.lower()}") for s in isa.Space}
        touches = Signal()
        m.d.sync += [written.eq(Cat(lo_small & (query.lo[:low] <= t) &
                                    ~(hi_small & (query.hi[:low] <= t))
                                    for t in range(tables))),
                     query_lo.eq(_saturate(query.lo, bits + 1)),
                     query_hi.eq(_saturate(query.hi, bits + 1)),
                     touches.eq(query.group),
                     *(bit.eq(query.space == s) for s, bit in space.items())]
        hits = []
        for k, record in enumerate(records):
            lo, hi = Signal(bits, name=f"lo{k}"), Signal(bits, name=f"hi{k}")
            reads = Signal(name=f"reads{k}")
            with m.If(space[isa.Space.UOP]):
                m.d.comb += [lo.eq(record.uop_lo), hi.eq(record.uop_hi)]
            with m.If(space[isa.Space.PARAM]):
                m.d.comb += [lo.eq(record.param_lo), hi.eq(record.param_hi)]
            with m.If(space[isa.Space.WGT]):
                with m.If(record.reads_wgt):
                    m.d.comb += [lo.eq(record.wgt_lo), hi.eq(record.wgt_hi)]
                m.d.comb += reads.eq(~record.scanned)
            with m.If(space[isa.Space.LUT]):
                m.d.comb += reads.eq(~record.scanned | (record.tables & written).any())
            overlaps = (lo < query_hi) & (query_lo < hi)
            hit = space[isa.Space.ACT] | touches & (reads | overlaps)
            # Each record's answer registered beside its comparisons: what leaves for the DMA
            # engine starts at flip-flops.
            answer = Signal(name=f"hit{k}")
            m.d.sync += answer.eq(record.valid & record.ready & hit)
            hits.append(answer)
        m.d.comb += self.conflict.eq(Cat(hits).any())
