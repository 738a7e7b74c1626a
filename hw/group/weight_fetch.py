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
    weights at ``wgt_addr, wgt_addr + 1, ...`` and its ``last`` flag; one step per cycle.
    """

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
        valid = Signal()
        act = Signal(signed(8))
        last = Signal()
        null = Signal()
        advance = ~valid | self.o.ready
        m.d.comb += [
            self.i.ready.eq(advance),
            self.buffer.en.eq(advance),
            self.buffer.addr.eq(self.i.payload.wgt_addr),
            self.o.valid.eq(valid),
            self.o.payload.act.eq(act),
            self.o.payload.last.eq(last),
            self.o.payload.null.eq(null),
        ]
        for lane in range(self._config.lanes):
            m.d.comb += self.o.payload.wgt[lane].eq(self.buffer.data[lane])
        with m.If(advance):
            m.d.sync += [valid.eq(self.i.valid), act.eq(self.i.payload.act),
                         last.eq(self.i.payload.last), null.eq(self.i.payload.null)]
        return m
