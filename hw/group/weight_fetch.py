"""The weight fetch: each kept tap's column of weights, one per lane, from the weight buffer."""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sparse import tap_layout
from .layouts import mac_layout

__all__ = ["WeightFetch"]


class WeightFetch(wiring.Component):
    """Reads each kept step's weight column (one weight per lane) from the weight buffer.

    Contract: for each step on ``i``, ``o`` carries, in order, its activation, the ``lanes``
    weights at ``wgt_addr, wgt_addr + 1, ...`` and its ``last`` and ``null`` flags; one step
    per cycle, two cycles after it is taken (:data:`LATENCY`): the step is registered before
    its address goes to the block RAMs (the sparse core's tap selection and the buffer's bank
    rows were one path). Both stages move together; a stalled ``o`` holds them.
    """

    #: Cycles from a step taken on ``i`` to its weights on ``o``.
    LATENCY = 2

    def __init__(self, config):
        self._config = config
        super().__init__({
            "i": In(stream.Signature(tap_layout(config))),
            "buffer": Out(wiring.Signature({
                "en": Out(1), "addr": Out(config.wgt_addr_width),
                "data": In(data.ArrayLayout(8, config.lanes))})),
            "o": Out(stream.Signature(mac_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        # Stage 1: the step; stage 2: its weights on the buffer's output, with the step.
        tap = Signal.like(self.i.payload)
        valid = [Signal(name=f"valid{k}") for k in (1, 2)]
        act = Signal(signed(8))
        last = Signal()
        null = Signal()
        advance = ~valid[1] | self.o.ready
        m.d.comb += [
            self.i.ready.eq(advance),
            self.buffer.en.eq(advance),
            self.buffer.addr.eq(tap.wgt_addr),
            self.o.valid.eq(valid[1]),
            self.o.payload.act.eq(act),
            self.o.payload.last.eq(last),
            self.o.payload.null.eq(null),
        ]
        for lane in range(self._config.lanes):
            m.d.comb += self.o.payload.wgt[lane].eq(self.buffer.data[lane])
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.i.valid), tap.eq(self.i.payload),
                         valid[1].eq(valid[0]), act.eq(tap.act), last.eq(tap.last),
                         null.eq(tap.null)]
        return m
