"""The controller's per-group RUN scoreboard: the RUNs a group holds, and what each reads.

The global controller issues a RUN into the scoreboard of every group in its mask without
waiting for the DMA before it; the scoreboard hands the RUN to the group once every earlier
DMA into the group's memories (and every earlier ``ACT`` DMA) is done, and keeps it until the
group has completed it. Meanwhile it answers the DMA engine's question "does an earlier RUN
read what this DMA overwrites?" with the RUN's exact ranges (docs/isa.md): the micro-op and
PARAM entries from the RUN registers, the weight bytes and activation tables from its
micro-program, which the scoreboard reads from a copy of the group's micro-op memory (written
by the same ``UOP_LOAD`` chunks) while the RUN waits or runs.

DMA order is counted by sequence numbers: the controller numbers DMA instructions as it
issues them (``1, 2, ...`` modulo ``2 ** SEQ_BITS``); a RUN carries the number of the last DMA
before it that it depends on and is released when ``done`` (DMAs completed) reaches it. So at
the time the DMA engine starts DMA ``s``, the released RUNs are exactly the RUNs issued before
``s``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .agen import LEVELS
from .arch import isa
from .arch.config import RUN_SLOTS
from .memories import ElementMemory, chunk_layout

__all__ = ["SEQ_BITS", "dma_query_layout", "RunScoreboard"]

#: Bits of a DMA sequence number: twice the DMAs that can be outstanding, and more.
SEQ_BITS = 8
#: Bits of a weight address computed from a micro-program (offsets, strides x counts).
_WGT_BITS = 48


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
            "issue": In(stream.Signature(data.StructLayout({"run": isa.RunArgs,
                                                            "tag": unsigned(SEQ_BITS)}))),
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
        cfg = self._config
        tables = cfg.lut_tables
        rec = Signal(data.ArrayLayout(_record_layout(cfg), RUN_SLOTS))
        ptr = range(RUN_SLOTS)
        tail, disp, head, scan = (Signal(ptr, name=n) for n in ("tail", "disp", "head", "scan"))
        given = Signal(range(RUN_SLOTS + 1))      # handed to the group, not yet complete

        def step(pointer):
            return Mux(pointer == RUN_SLOTS - 1, 0, pointer + 1)

        # Release: a RUN's DMAs are done.
        for k in ptr:
            with m.If(rec[k].valid & released(rec[k].tag, self.done)):
                m.d.sync += rec[k].ready.eq(1)

        # Issue and hand-off, in order.
        push = self.issue.valid & self.issue.ready
        m.d.comb += self.issue.ready.eq(self.count < RUN_SLOTS)
        with m.If(push):
            m.d.sync += [rec[tail].eq(0), rec[tail].valid.eq(1),
                         rec[tail].tag.eq(self.issue.payload.tag),
                         rec[tail].run.eq(self.issue.payload.run), tail.eq(step(tail))]
        m.d.comb += [self.run.valid.eq(rec[disp].valid & rec[disp].ready &
                                       ~rec[disp].dispatched),
                     self.run.payload.eq(rec[disp].run)]
        handed = self.run.valid & self.run.ready
        with m.If(handed):
            m.d.sync += [rec[disp].dispatched.eq(1), disp.eq(step(disp))]

        # Completion: the group holds fewer RUNs than it was given (one completes per cycle).
        pop = Signal()
        scanning = Signal()                      # the scanner reads the micro-program of ``scan``
        # An entry the scanner is reading is freed once the scanner is done with it.
        m.d.comb += pop.eq((given > sum(self.held[k] for k in ptr)) &
                           ~(scanning & (scan == head)))
        with m.If(pop):
            m.d.sync += [rec[head].valid.eq(0), head.eq(step(head))]
        m.d.sync += [given.eq(given + handed - pop), self.count.eq(self.count + push - pop)]
        m.d.comb += self.waiting.eq(self.count - given)

        self._scanner(m, rec, scan, step, tables, scanning)

        # Hazards of the DMA in ``query``.
        q = self.query
        hits = []
        for k in ptr:
            r = rec[k]
            lo, hi = Signal(26, name=f"lo{k}"), Signal(26, name=f"hi{k}")
            hit = Signal(name=f"hit{k}")
            with m.Switch(q.space):
                with m.Case(isa.Space.ACT):
                    m.d.comb += hit.eq(1)
                with m.Case(isa.Space.UOP):
                    m.d.comb += [lo.eq(r.run.uop_addr), hi.eq(r.run.uop_addr + r.run.uop_count),
                                 hit.eq(q.group & (lo < q.hi) & (q.lo < hi))]
                with m.Case(isa.Space.PARAM):
                    m.d.comb += [lo.eq(r.run.param_offset),
                                 hi.eq(r.run.param_offset + r.run.lanes),
                                 hit.eq(q.group & (lo < q.hi) & (q.lo < hi))]
                with m.Case(isa.Space.WGT):
                    m.d.comb += hit.eq(q.group & (~r.scanned | r.reads_wgt &
                                                  (r.wgt_lo < q.hi) & (q.lo < r.wgt_hi)))
                with m.Case(isa.Space.LUT):
                    written = Cat((q.lo <= t) & (t < q.hi) for t in range(tables))
                    m.d.comb += hit.eq(q.group & (~r.scanned | (r.tables & written).any()))
            hits.append(r.valid & r.ready & hit)
        m.d.comb += self.conflict.eq(Cat(hits).any())
        return m

    def _scanner(self, m, rec, scan, step, tables, scanning):
        """Reads each released RUN's micro-program from the copy of the micro-op memory, as
        the group's decoder does, for the weight range and activation tables it reads."""
        cfg = self._config
        m.submodules.uops = uops = ElementMemory(element_bytes=isa.UOP_BYTES,
                                                 depth=cfg.uop_depth, chunk_bytes=cfg.axi_bytes)
        m.d.comb += [uops.w.valid.eq(self.uop_w.valid), uops.w.payload.eq(self.uop_w.payload)]
        r = rec[scan]
        addr = Signal.like(r.run.uop_addr)
        left = Signal.like(r.run.uop_count)
        pending = Signal()
        neg = [Signal(signed(_WGT_BITS), name=f"neg{k}") for k in range(LEVELS)]
        pos = [Signal(signed(_WGT_BITS), name=f"pos{k}") for k in range(LEVELS)]
        empty = Signal(LEVELS)
        base = Signal(24)
        lane_stride = Signal(16)
        mac = Signal()
        used = Signal(tables)
        uop = data.View(isa.MicroOp, uops.r.data)
        m.d.comb += [uops.r.addr.eq(addr), uops.r.en.eq(left != 0)]

        loop = uop.args.loop
        span = Signal(signed(_WGT_BITS))          # (count - 1) x wgt_stride of a LOOP
        m.d.comb += span.eq((loop.count - 1) * loop.wgt_stride)
        post = uop.args.post
        first = Signal(range(tables))
        m.d.comb += first.eq(r.run.lut_offset + post.lut)
        lanes = r.run.lanes
        post_tables = Cat(post.use_lut & (lanes != 0) &
                          Mux(post.per_lane, (Const(t, range(tables)) - first)[:len(first)]
                              < lanes, first == t) for t in range(tables))
        wgt_base = Signal(signed(_WGT_BITS))
        m.d.comb += wgt_base.eq(r.run.wgt_offset + base)
        lane_span = Signal(signed(_WGT_BITS))
        m.d.comb += lane_span.eq((lanes - 1) * lane_stride)

        with m.FSM(name="scan"):
            with m.State("IDLE"):
                with m.If(r.valid & r.ready & ~r.scanned):
                    m.d.sync += [addr.eq(r.run.uop_addr), left.eq(r.run.uop_count),
                                 pending.eq(0), empty.eq(0), base.eq(0), lane_stride.eq(0),
                                 mac.eq(0), used.eq(0),
                                 [s.eq(0) for s in neg + pos]]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += scanning.eq(1)
                with m.If(left != 0):
                    m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
                m.d.sync += pending.eq(left != 0)
                with m.If(pending):
                    with m.Switch(uop.op):
                        with m.Case(isa.UopOp.LOOP):
                            for k in range(LEVELS):
                                with m.If(loop.level == k):
                                    m.d.sync += [
                                        empty[k].eq(loop.count == 0),
                                        neg[k].eq(Mux(span < 0, span, 0)),
                                        pos[k].eq(Mux(span > 0, span, 0)),
                                    ]
                        with m.Case(isa.UopOp.WGT):
                            m.d.sync += [base.eq(uop.args.wgt.base),
                                         lane_stride.eq(uop.args.wgt.lane_stride)]
                        with m.Case(isa.UopOp.MAC):
                            m.d.sync += mac.eq(1)
                        with m.Case(isa.UopOp.POST):
                            m.d.sync += used.eq(used | post_tables)
                with m.If(~pending & (left == 0)):
                    m.d.sync += [
                        r.scanned.eq(1), r.tables.eq(used),
                        r.reads_wgt.eq(mac & ~empty.any() & (lanes != 0)),
                        r.wgt_lo.eq(wgt_base + sum(neg)),
                        r.wgt_hi.eq(wgt_base + lane_span + sum(pos) + 1),
                        scan.eq(step(scan)),
                    ]
                    m.next = "IDLE"
