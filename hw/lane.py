"""MAC lane: one int8 x int8 multiplier feeding an int32 accumulator.

A group has ``config.lanes`` lanes that receive the same activation each cycle and each their
own weight (SIMD). A lane is three pipeline stages: its operands are registered (beside its
multiplier: the activation reaches all of a group's lanes, whose multipliers lie columns
apart on an FPGA, through that register's long routes and nothing else), the product is
registered (the multiplier's output register, so the DSP block runs at full speed), then
added to the accumulator.
"""

from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["lane_op_layout", "Lane"]


def lane_op_layout(config):
    """Payload of one lane step: activation, weight and whether to keep the accumulator."""
    return data.StructLayout({
        "act": signed(config.data_width),
        "wgt": signed(config.data_width),
        # 0 on the first step of an output pixel: the accumulator restarts from the product,
        # which is how CLEAR costs no cycle of its own.
        "accumulate": 1,
    })



class Lane(wiring.Component):
    """An int8 x int8 -> int32 multiply-accumulate lane.

    Contract: a step presented on ``i`` in cycle ``t`` is reflected in ``acc`` from cycle
    ``t + LATENCY`` on: ``acc = (acc if accumulate else 0) + act * wgt``, wrapping modulo
    ``2**acc_width``. The lane never stalls (``i`` is always ready); ``idle`` is high when no
    step is in flight, so ``acc`` is final.

    Parameters
    ----------
    config : AcceleratorConfig
        Supplies ``data_width`` and ``acc_width``.

    Attributes
    ----------
    i : In(stream.Signature(lane_op_layout(config), always_ready=True))
        Steps.
    acc : Out(signed(acc_width))
        The accumulator.
    idle : Out(1)
        No step is in flight.
    """

    #: Cycles from a step's presentation on ``i`` to its effect in ``acc``.
    LATENCY = 3

    def __init__(self, config):
        self._config = config
        super().__init__({
            "i": In(stream.Signature(lane_op_layout(config), always_ready=True)),
            "acc": Out(signed(config.acc_width)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        step = Signal.like(self.i.payload)
        product = Signal(signed(2 * self._config.data_width))
        valid = Signal(2)
        accumulate = Signal()
        m.d.sync += [
            step.eq(self.i.payload),
            product.eq(step.act * step.wgt),
            valid.eq(Cat(self.i.valid, valid[0])),
            accumulate.eq(step.accumulate),
        ]
        with m.If(valid[1]):
            with m.If(accumulate):
                m.d.sync += self.acc.eq(self.acc + product)
            with m.Else():
                m.d.sync += self.acc.eq(product)
        m.d.comb += self.idle.eq(~valid.any())
        return m
