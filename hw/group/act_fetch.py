"""The activation fetch: each access step's activations, read through the crossbar."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import exact_log2

from ..agen import agen_step_layout
from ..crossbar import read_port_signature
from ..fifo import StreamFIFO
from ..sparse import bundle_layout
from .layouts import act_tag_layout

__all__ = ["ActFetch"]


class ActFetch(wiring.Component):
    """Reads each step's activations through the crossbar, reusing the last word read.

    Contract: for each step on ``i``, in order, ``o`` carries the bundle of its ``n``
    activations (the ``n`` bytes from ``act_addr``, all in one word; 0 for a null step), with
    its weight address and stride, ``last`` and ``null`` flags and lanes. The fetch keeps the
    last word it read: a ``reuse`` step (one in the word of the previous non-null step, see
    :func:`~flexigan.hw.agen.agen_step_layout`) is answered from it, and only another
    non-null step reads the crossbar. (A RUN never writes what it reads, and its first
    non-null step is never a reuse, so the word kept is current.) Every step goes through the
    crossbar's port, the reuse and null steps as ``skip`` requests, so the answers come back
    in order without a queue of their own. A step is taken only when the output queue
    (``depth`` steps) has room for its answer, counting the answers in flight; one per cycle
    while the port takes them. An answer is on ``o`` the cycle after the crossbar gives it (the
    queue; the crossbar's contract gives its own cycles).
    """

    def __init__(self, config, depth):
        self._config, self._depth = config, depth
        super().__init__({
            "i": In(stream.Signature(agen_step_layout(config))),
            "port": Out(read_port_signature(config.word_addr_width, config.axi_data_width,
                                            act_tag_layout(config))),
            "o": Out(stream.Signature(bundle_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        depth = self._depth
        m.submodules.queue = queue = StreamFIFO(bundle_layout(config), depth)
        connect(m, queue.o, flipped(self.o))
        byte_bits = exact_log2(config.axi_bytes)
        step = self.i.payload
        line = Signal(config.axi_data_width)

        # Steps taken whose answers are not yet out of the queue, and ``used < depth`` as a
        # flip-flop: the port's request sees no adder or comparison.
        used = Signal(range(depth + 1))
        room = Signal(init=1)
        take = Signal()
        pop = queue.o.valid & queue.o.ready
        m.d.comb += take.eq(self.i.valid & room & self.port.req.ready)
        m.d.sync += [used.eq(used + take - pop),
                     room.eq(Mux(take, Mux(pop, used < depth, used < depth - 1),
                                 pop | (used < depth)))]

        request = self.port.req
        m.d.comb += [
            request.valid.eq(self.i.valid & room),
            self.i.ready.eq(take),
            request.payload.addr.eq(step.act_addr[byte_bits:]),
            request.payload.skip.eq(step.null | step.reuse),
            request.payload.tag.n.eq(step.n),
            request.payload.tag.wgt_addr.eq(step.wgt_addr),
            request.payload.tag.wgt_stride.eq(step.wgt_stride),
            request.payload.tag.last.eq(step.last),
            request.payload.tag.null.eq(step.null),
            request.payload.tag.reuse.eq(step.reuse),
            request.payload.tag.lanes.eq(step.lanes),
        ]
        if byte_bits:
            m.d.comb += request.payload.tag.byte.eq(step.act_addr[:byte_bits])

        answer = self.port.resp
        tag = answer.payload.tag
        hit = tag.null | tag.reuse
        with m.If(answer.valid & ~hit):
            m.d.sync += line.eq(answer.payload.data)
        source = Mux(hit, line, answer.payload.data)
        # The bundle's bytes start at the tap's byte (the step never crosses the word's end).
        acts = (source >> (tag.byte * 8) if byte_bits else source)[:8 * config.bundle_width]
        m.d.comb += [
            queue.i.valid.eq(answer.valid),
            queue.i.payload.acts.eq(Mux(tag.null, 0, acts)),
            queue.i.payload.n.eq(tag.n),
            queue.i.payload.wgt_addr.eq(tag.wgt_addr),
            queue.i.payload.wgt_stride.eq(tag.wgt_stride),
            queue.i.payload.last.eq(tag.last),
            queue.i.payload.null.eq(tag.null),
            queue.i.payload.lanes.eq(tag.lanes),
        ]
        return m
