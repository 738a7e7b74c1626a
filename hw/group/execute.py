"""The execute engine: a RUN's steps through the lanes, a post-processing job per pixel."""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..fifo import StreamFIFO
from ..lane import Lane
from .layouts import body_layout, job_layout, mac_layout

__all__ = ["JOB_DEPTH", "Execute"]

#: Snapshots of finished pixels waiting for the post-processor (or reserved for those in the
#: lanes): a job holds its entry about six cycles (reserved, the lanes, the queue, its
#: registered output and count), so 4 entries bounded pixels of one lane and one tap at 1.5
#: cycles (InstanceNorm's normalizing pass: 84 cycles for the model's 70 on 30 pixels); 6
#: let the post-writer take one a cycle (in LUT RAM, 16 entries cost what 4 did).
JOB_DEPTH = 6


class Execute(wiring.Component):
    """The execute engine: steps to the lanes, and a post-processing job per pixel.

    Contract: for each RUN body accepted on ``body``, for each of its ``rows x cols`` pixels in
    row-major order, consumes the pixel's steps from ``steps`` (``passes`` groups, each ending
    with ``last``) and feeds them to the lanes (with ``square``, the activation as every lane's
    weight too), the pixel's first step restarting the accumulators; then, when the body has
    POST and WRITE or a NORM, emits the pixel's job on ``jobs`` with the final accumulators (0
    when the body has no MAC) and the pixel's output address.
    After the last pixel a job with ``end`` set closes the RUN. A pixel with MACs takes one
    cycle per step, a pixel without one cycle; the final step of a pixel waits while the job
    queue is full. ``issued`` counts the multiplies fed to the lanes: the RUN's ``lanes`` for
    each step with a non-zero activation (each step with ``bypass``) but null steps (an empty
    tap nest's, an all-zero bundle's), a cycle after the step; ``clear`` zeroes it.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "body": In(stream.Signature(body_layout(config))),
            "steps": In(stream.Signature(mac_layout(config))),
            "jobs": Out(stream.Signature(job_layout(config))),
            "bypass": In(1),
            "issued": Out(64),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        lanes = [Lane(config) for _ in range(config.lanes)]
        for k, lane in enumerate(lanes):
            m.submodules[f"lane{k}"] = lane

        body = Signal(body_layout(config))
        row, column = Signal.like(body.rows), Signal.like(body.cols)
        passes = Signal.like(body.passes)     # MAC passes done in this pixel
        # ``passes + 1 == body.passes``, ``column + 1 == body.cols``, ``row + 1 ==
        # body.rows``: flip-flops set with the counters, so that the steps' ready and the
        # pixel's end see no comparison.
        last_pass, last_column, last_row = Signal(), Signal(), Signal()
        # ``body.passes == 0``, ``== 1`` and ``body.cols == 1``, taken with the body.
        no_mac, one_pass, one_column = Signal(), Signal(), Signal()
        first = Signal(init=1)                # the next step starts a pixel
        out_row = Signal.like(body.out_base)
        out_pixel = Signal.like(body.out_base)

        emit, job, room = self._jobs(m, lanes, body, out_pixel)
        step = self.steps.payload
        taken = self._feed(m, lanes, body, first)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.body.ready.eq(1)
                with m.If(self.body.valid):
                    new = self.body.payload
                    m.d.sync += [body.eq(new), row.eq(0), column.eq(0), passes.eq(0),
                                 no_mac.eq(new.passes == 0), one_pass.eq(new.passes == 1),
                                 one_column.eq(new.cols == 1),
                                 last_pass.eq(new.passes == 1), last_column.eq(new.cols == 1),
                                 last_row.eq(new.rows == 1),
                                 first.eq(1), out_row.eq(new.out_base),
                                 out_pixel.eq(new.out_base)]
                    with m.If((new.rows == 0) | (new.cols == 0)):
                        m.next = "END"
                    with m.Else():
                        m.next = "PIXEL"
            with m.State("PIXEL"):
                # Is this cycle the end of the pixel? (Flat, from flip-flops: the pixel's last
                # step is here, or there are none, and its job may go.)
                ends = Signal()
                fits = ~body.post | room      # the pixel's job may go
                final = step.last & last_pass
                m.d.comb += ends.eq(fits & (no_mac | (self.steps.valid & final)))
                with m.If(~no_mac):
                    m.d.comb += self.steps.ready.eq(~final | fits)
                    with m.If(taken):
                        m.d.sync += first.eq(0)
                        with m.If(step.last):
                            m.d.sync += [passes.eq(passes + 1),
                                         last_pass.eq(passes + 2 == body.passes)]
                with m.If(ends):
                    m.d.comb += emit.eq(body.post)
                    m.d.sync += [passes.eq(0), last_pass.eq(one_pass), first.eq(1)]
                    with m.If(~last_column):
                        m.d.sync += [column.eq(column + 1),
                                     last_column.eq(column + 2 == body.cols),
                                     out_pixel.eq(out_pixel + body.out_col)]
                    with m.Elif(~last_row):
                        next_row = out_row + body.out_row
                        m.d.sync += [column.eq(0), last_column.eq(one_column),
                                     row.eq(row + 1), last_row.eq(row + 2 == body.rows),
                                     out_row.eq(next_row), out_pixel.eq(next_row)]
                    with m.Else():
                        m.next = "END"
            with m.State("END"):
                with m.If(room):
                    m.d.comb += [emit.eq(1), job.end.eq(1)]
                    m.next = "IDLE"
        return m

    def _jobs(self, m, lanes, body, out_pixel):
        """The job queue and the delay line into it. Returns ``emit`` (set it to send the
        current pixel's job), the ``job`` sent (``body``'s, at ``out_pixel``; its ``end`` is
        left to the caller) and ``room`` (the queue has an entry for a job sent now)."""
        config = self._config
        m.submodules.jobs = jobs = StreamFIFO(job_layout(config), JOB_DEPTH)
        connect(m, jobs.o, flipped(self.jobs))
        # A pixel's job enters the queue Lane.LATENCY cycles after its final step, when the
        # lanes hold its sums. Its queue entry is reserved when the step is taken.
        delay = [Signal(job_layout(config), name=f"job{k}") for k in range(Lane.LATENCY)]
        zero = Signal(Lane.LATENCY)           # the delayed job's accumulators are 0
        pending = Signal(Lane.LATENCY)        # the delay stages that hold a job
        emit = Signal()
        job = Signal(job_layout(config))
        job_zero = Signal()                   # a body without MAC: the sums are 0
        m.d.comb += [
            job.norm.eq(body.norm), job.finish.eq(body.finish), job.count.eq(body.count),
            job.eps.eq(body.eps),
            job.lanes.eq(body.lanes), job.use_bias.eq(body.use_bias),
            job.use_lut.eq(body.use_lut), job.per_lane.eq(body.per_lane),
            job.lut.eq(body.lut), job.param_offset.eq(body.param_offset),
            job.out_addr.eq(out_pixel), job.lane_stride.eq(body.lane_stride),
            job_zero.eq(body.passes == 0),
        ]
        m.d.sync += [pending.eq(Cat(emit, pending[:-1])), zero.eq(Cat(job_zero, zero[:-1])),
                     delay[0].eq(job)]
        for k in range(1, Lane.LATENCY):
            m.d.sync += delay[k].eq(delay[k - 1])
        m.d.comb += [jobs.i.valid.eq(pending[-1]), jobs.i.payload.eq(delay[-1])]
        for k, lane in enumerate(lanes):
            m.d.comb += jobs.i.payload.acc[k].eq(Mux(zero[-1], 0, lane.acc))
        # The jobs in the delay line and the queue, and ``reserved < JOB_DEPTH`` as a
        # flip-flop (the queue's level and a sum were on the path to the steps' ready).
        reserved = Signal(range(JOB_DEPTH + 1))
        room = Signal(init=1)
        pop = jobs.o.valid & jobs.o.ready
        m.d.sync += [reserved.eq(reserved + emit - pop),
                     room.eq(Mux(emit, Mux(pop, reserved < JOB_DEPTH,
                                           reserved < JOB_DEPTH - 1),
                                 pop | (reserved < JOB_DEPTH)))]
        return emit, job, room

    def _feed(self, m, lanes, body, first):
        """Feeds each step taken to every lane and counts its multiplies; returns ``taken``."""
        step = self.steps.payload
        taken = self.steps.valid & self.steps.ready
        for k, lane in enumerate(lanes):
            # MAC square: the select is the body's flip-flop, before the lanes' operand
            # registers (their routes to the multipliers carry nothing else).
            m.d.comb += [lane.i.valid.eq(taken), lane.i.payload.act.eq(step.act),
                         lane.i.payload.wgt.eq(Mux(body.square, step.act, step.wgt[k])),
                         lane.i.payload.accumulate.eq(~first)]
        # ``issued`` a cycle late: the step's test and the 64-bit sum were one path.
        count = Signal()
        lanes_counted = Signal.like(body.lanes)
        m.d.sync += [count.eq(taken & ((step.act != 0) | self.bypass) & ~step.null),
                     lanes_counted.eq(body.lanes)]
        with m.If(self.clear):
            m.d.sync += [self.issued.eq(0), count.eq(0)]
        with m.Elif(count):
            m.d.sync += self.issued.eq(self.issued + lanes_counted)
        return taken
