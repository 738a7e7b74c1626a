"""The issue stage: the instruction at the head of the queue, issued in program order.

One instruction issues per cycle at most, once the unit that runs it can take it:

- DMA_LOAD, DMA_STORE, UOP_LOAD enter the DMA engine's queue, numbered ``1, 2, ...`` (modulo
  ``2 ** SEQ_BITS``) as they issue; each group remembers the number of the last DMA into its
  memories (every DMA of ``ACT`` counts for every group);
- RUN enters the RUN scoreboard of every group in its mask at once, tagged with that group's
  last DMA number (the scoreboard holds it back until that DMA is done), when all of them have
  room;
- ROUTE waits until the earlier RUNs of the groups in its mask have left the scoreboards for
  their groups;
- BARRIER waits for the DMA engine and the groups in its mask; COUNTERS and END wait for the
  DMA engine and every group, as the simulator does. COUNTERS STORE enters the DMA queue as a
  DMA (numbered, and its block snapshotted at issue);
- an undefined opcode does not issue: it stops the program (``error``).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch import isa
from ..scoreboard import SEQ_BITS, run_issue_layout
from .counters import issue_events_signature
from .dma import dma_command_layout

__all__ = ["Issue"]


class Issue(wiring.Component):
    """Issues global instructions in order (see the module docstring).

    Contract: while ``running``, the instruction on ``insn`` is taken in the cycle it issues
    (:data:`~flexigan.hw.arch.timing.ISSUE_CYCLES`). A RUN is offered on ``run[g]`` of every
    group of its mask together, and issues in the first cycle all are ready. ``dma_finished``
    counts the DMAs the engine has completed: the DMA engine is idle when it has completed
    every DMA issued. ``busy`` and ``waiting`` tell, per group, whether it holds any RUN (in
    its scoreboard or executing) and whether its scoreboard holds a RUN not yet handed to the
    group. BARRIER, ROUTE, COUNTERS and END see the DMA engine, ``busy`` and ``waiting``
    through registers: they issue :data:`~flexigan.hw.arch.timing.WAIT_DELAY` cycles after
    the work they wait for has ended. ``end`` pulses when END issues; ``error`` is high while
    an undefined opcode is at the head. ``start`` zeroes the DMA numbering.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    insn : In(stream.Signature(isa.GlobalInsn))
    running, start : In(1)
    dma : Out(stream.Signature(dma_command_layout()))
    dma_finished : In(SEQ_BITS)
    run : Out(stream.Signature(run_issue_layout())).array(groups)
    route : Out(stream.Signature(isa.RouteArgs, always_ready=True))
    busy, waiting : In(groups)
    events : Out(issue_events_signature())
    end, error : Out(1)
    """

    def __init__(self, config):
        self._config = config
        g = config.groups
        super().__init__({
            "insn": In(stream.Signature(isa.GlobalInsn)),
            "running": In(1),
            "start": In(1),
            "dma": Out(stream.Signature(dma_command_layout())),
            "dma_finished": In(SEQ_BITS),
            "run": Out(stream.Signature(run_issue_layout())).array(g),
            "route": Out(stream.Signature(isa.RouteArgs, always_ready=True)),
            "busy": In(g),
            "waiting": In(g),
            "events": Out(issue_events_signature()),
            "end": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        groups = self._config.groups
        op, args = self.insn.payload.op, self.insn.payload.args
        issue = Signal()                          # the head instruction issues this cycle
        issued = Signal(SEQ_BITS)                 # DMA instructions issued
        last_dma = [Signal(SEQ_BITS, name=f"last_dma{g}") for g in range(groups)]
        # What BARRIER, ROUTE, COUNTERS and END wait on, registered (from the scoreboards and
        # the DMA engine, these were long paths into the queues' read and write enables). A
        # RUN or DMA issuing this cycle counts in the registers as busy, as the scoreboards
        # and the DMA numbers show it from the next cycle; the end of work is seen a cycle
        # late (WAIT_DELAY).
        runs = Cat(run.valid & run.ready for run in self.run)
        busy, waiting, dma_idle, quiet = Signal(groups), Signal(groups), Signal(), Signal()
        idle_now = (issued == self.dma_finished) & ~(self.dma.valid & self.dma.ready)
        m.d.sync += [busy.eq(self.busy | runs), waiting.eq(self.waiting | runs),
                     dma_idle.eq(idle_now), quiet.eq(idle_now & ~(self.busy | runs).any())]
        m.d.comb += [self.insn.ready.eq(issue), self.events.instruction.eq(issue),
                     self.events.dma_bytes.payload.eq(args.dma.length)]
        for g, run in enumerate(self.run):
            m.d.comb += [run.payload.run.eq(args.run), run.payload.tag.eq(last_dma[g])]
        with m.If(self.start):
            m.d.sync += [issued.eq(0), *(t.eq(0) for t in last_dma)]

        with m.If(self.running & self.insn.valid):
            with m.Switch(op):
                with m.Case(isa.GlobalOp.NOP):
                    m.d.comb += issue.eq(1)
                with m.Case(isa.GlobalOp.DMA_LOAD, isa.GlobalOp.DMA_STORE,
                            isa.GlobalOp.UOP_LOAD):
                    self._dma(m, op, args, issue, issued, last_dma)
                with m.Case(isa.GlobalOp.ROUTE):
                    # After the RUNs before it have left for their groups.
                    route_mask = args.route.group_mask[:groups]
                    m.d.comb += [issue.eq(~(route_mask & waiting).any()),
                                 self.route.valid.eq(issue), self.route.payload.eq(args.route)]
                with m.Case(isa.GlobalOp.RUN):
                    run_mask = args.run.group_mask
                    ready = Cat(run.ready for run in self.run)
                    free = (~run_mask[:groups] | ready).all()
                    m.d.comb += [issue.eq(free), self.events.run.eq(free)]
                    for g, run in enumerate(self.run):
                        m.d.comb += run.valid.eq(run_mask[g] & free)
                with m.Case(isa.GlobalOp.BARRIER):
                    barrier_mask = args.barrier.group_mask[:groups]
                    m.d.comb += issue.eq(dma_idle & ((busy & barrier_mask) == 0))
                with m.Case(isa.GlobalOp.COUNTERS, isa.GlobalOp.END):
                    # COUNTERS and END first wait for all work, as the simulator does.
                    m.d.comb += issue.eq(quiet)
                    with m.If(issue):
                        self._counters_or_end(m, op, args, issued)
                with m.Default():
                    m.d.comb += self.error.eq(1)
        return m

    def _dma(self, m, op, args, issue, issued, last_dma):
        """DMA_LOAD, DMA_STORE, UOP_LOAD: into the DMA queue, numbered."""
        all_groups = (1 << self._config.groups) - 1
        dma_mask = Mux(op == isa.GlobalOp.DMA_LOAD,
                       Mux(args.dma.space == isa.Space.ACT, all_groups, args.dma.group_mask),
                       Mux(op == isa.GlobalOp.UOP_LOAD, args.dma.group_mask, all_groups))
        m.d.comb += [self.dma.valid.eq(1), self.dma.payload.op.eq(op),
                     self.dma.payload.dma.eq(args.dma), issue.eq(self.dma.ready),
                     self.events.dma_bytes.valid.eq(issue)]
        with m.If(issue):
            m.d.sync += issued.eq(issued + 1)
            for g, last in enumerate(last_dma):
                with m.If(dma_mask[g]):
                    m.d.sync += last.eq(issued + 1)

    def _counters_or_end(self, m, op, args, issued):
        """COUNTERS or END, issuing this cycle."""
        with m.If(op == isa.GlobalOp.END):
            m.d.comb += self.end.eq(1)
        with m.Elif(args.counters.action == isa.CounterAction.RESET):
            m.d.comb += self.events.reset.eq(1)
        with m.Else():
            # COUNTERS STORE: the block of this cycle's counters, written by the DMA engine.
            m.d.comb += [self.events.store.eq(1), self.dma.valid.eq(1),
                         self.dma.payload.op.eq(op),
                         self.dma.payload.dma.ext_addr.eq(args.counters.ext_addr)]
            m.d.sync += issued.eq(issued + 1)
