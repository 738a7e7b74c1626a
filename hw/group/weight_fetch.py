"""The weight fetch: each kept tap's column of weights, one per lane, from the weight buffer."""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..memories import WeightBuffer
from ..sparse import tap_layout
from .layouts import mac_layout

__all__ = ["WeightFetch"]


class WeightFetch(wiring.Component):
    """Reads each kept step's weight column (one weight per lane) from the weight buffer.

    Contract: for each step on ``i``, ``o`` carries, in order, its activation, the ``lanes``
    weights at ``wgt_addr, wgt_addr + 1, ...`` and its ``last`` and ``null`` flags; one step
    per cycle, three cycles after it is taken (:data:`LATENCY`): the step is registered before
    its address goes to the block RAMs (the sparse core's tap selection and the buffer's bank
    rows were one path), then the buffer's two read stages
    (:data:`~flexigan.hw.memories.WeightBuffer.READ_LATENCY`). All stages move together; a
    stalled ``o`` holds them.
    """

    #: Cycles from a step taken on ``i`` to its weights on ``o``.
    LATENCY = 1 + WeightBuffer.READ_LATENCY

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
        # Stage 0: the step, its address to the buffer; stages 1 .. READ_LATENCY: the step
        # beside its read, whose weights are on the buffer's output in the last stage.
        tap = Signal.like(self.i.payload)
        stages = [Signal(tap_layout(self._config), name=f"stage{k}")
                  for k in range(1, self.LATENCY)]
        valid = [Signal(name=f"valid{k}") for k in range(self.LATENCY)]
        advance = ~valid[-1] | self.o.ready
        m.d.comb += [
            self.i.ready.eq(advance),
            self.buffer.en.eq(advance),
            self.buffer.addr.eq(tap.wgt_addr),
            self.o.valid.eq(valid[-1]),
            self.o.payload.act.eq(stages[-1].act),
            self.o.payload.last.eq(stages[-1].last),
            self.o.payload.null.eq(stages[-1].null),
        ]
        for lane in range(self._config.lanes):
            m.d.comb += self.o.payload.wgt[lane].eq(self.buffer.data[lane])
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.i.valid), tap.eq(self.i.payload)]
            for k, (stage, before) in enumerate(zip(stages, [tap, *stages])):
                m.d.sync += [valid[k + 1].eq(valid[k]), stage.eq(before)]
        return m
