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

        # Flat decode: each output is a sum of products of the opcode's classes (a nested
        # Switch left several levels of multiplexers between the head and the queues).
        head = self.running & self.insn.valid
        Op = isa.GlobalOp
        is_dma = op.as_value().matches(Op.DMA_LOAD.value, Op.DMA_STORE.value,
                                       Op.UOP_LOAD.value)
        is_route, is_run, is_barrier = op == Op.ROUTE, op == Op.RUN, op == Op.BARRIER
        is_counters, is_end = op == Op.COUNTERS, op == Op.END
        storing = args.counters.action == isa.CounterAction.STORE
        run_mask = args.run.group_mask[:groups]
        free = (~run_mask | Cat(run.ready for run in self.run)).all()
        # ROUTE after the RUNs before it have left for their groups; COUNTERS and END after
        # all work, as the simulator does.
        routed = ~(args.route.group_mask[:groups] & waiting).any()
        barred = dma_idle & ~(busy & args.barrier.group_mask[:groups]).any()
        counted = head & is_counters & quiet
        m.d.comb += [
            issue.eq(head & ((op == Op.NOP) | is_dma & self.dma.ready | is_route & routed |
                             is_run & free | is_barrier & barred |
                             (is_counters | is_end) & quiet)),
            self.error.eq(head & ~op.as_value().matches(*(o.value for o in Op))),
            self.route.valid.eq(head & is_route & routed),
            self.route.payload.eq(args.route),
            self.events.run.eq(head & is_run & free),
            *(run.valid.eq(head & is_run & run_mask[g] & free)
              for g, run in enumerate(self.run)),
            self.end.eq(head & is_end & quiet),
            self.events.reset.eq(counted & ~storing),
            # COUNTERS STORE: the block of this cycle's counters, written by the DMA engine.
            self.events.store.eq(counted & storing),
            self.dma.valid.eq(head & is_dma | counted & storing),
            self.dma.payload.op.eq(op),
            self.dma.payload.dma.eq(args.dma),
            self.events.dma_bytes.valid.eq(head & is_dma & self.dma.ready),
        ]
        with m.If(is_counters):
            m.d.comb += self.dma.payload.dma.ext_addr.eq(args.counters.ext_addr)
        self._number(m, op, args, issued, last_dma)
        return m

    def _number(self, m, op, args, issued, last_dma):
        """Number the DMAs as they enter the DMA queue; remember each group's last."""
        all_groups = (1 << self._config.groups) - 1
        dma_mask = Mux(op == isa.GlobalOp.DMA_LOAD,
                       Mux(args.dma.space == isa.Space.ACT, all_groups, args.dma.group_mask),
                       Mux(op == isa.GlobalOp.UOP_LOAD, args.dma.group_mask, all_groups))
        with m.If(self.dma.valid & self.dma.ready):
            m.d.sync += issued.eq(issued + 1)
            with m.If(op != isa.GlobalOp.COUNTERS):
                for g, last in enumerate(last_dma):
                    with m.If(dma_mask[g]):
                        m.d.sync += last.eq(issued + 1)
