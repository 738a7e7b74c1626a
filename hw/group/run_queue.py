"""The RUN queue: the RUNs a group holds, from acceptance to completion."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch import isa
from ..arch.config import RUN_SLOTS
from .layouts import slot_layout

__all__ = ["RunQueue"]


def _next_slot(slot):
    return Mux(slot == RUN_SLOTS - 1, 0, slot + 1)


class RunQueue(wiring.Component):
    """The RUNs a group holds, oldest first: queued, being decoded or executing.

    Contract: ``i`` takes a RUN while fewer than :data:`RUN_SLOTS` are held. ``o`` offers the
    held RUNs, each once, in the order they were taken, from the cycle after each was taken.
    ``done`` completes the oldest held RUN (one per cycle; only while a RUN is held that ``o``
    has handed out), which frees its slot from the next cycle. ``slots`` shows every held RUN
    (slots fill in ring order, from the cycle after the RUN is taken until the cycle after it is
    done) and ``busy`` is high while any is held.

    Attributes
    ----------
    i : In(stream.Signature(isa.RunArgs))
    o : Out(stream.Signature(isa.RunArgs))
    done : In(1)
    slots : Out(data.ArrayLayout(slot_layout(), RUN_SLOTS))
    busy : Out(1)
    """

    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(isa.RunArgs)),
            "o": Out(stream.Signature(isa.RunArgs)),
            "done": In(1),
            "slots": Out(data.ArrayLayout(slot_layout(), RUN_SLOTS)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # The RUNs held, oldest first from ``head``; ``offered`` is the next to hand out and
        # ``tail`` the slot the next RUN taken goes to.
        head = Signal(range(RUN_SLOTS))
        offered = Signal(range(RUN_SLOTS))
        tail = Signal(range(RUN_SLOTS))
        held = Signal(range(RUN_SLOTS + 1))
        waiting = Signal(range(RUN_SLOTS + 1))       # held and not yet handed out

        push = self.i.valid & self.i.ready
        pop = self.done
        hand_out = self.o.valid & self.o.ready
        m.d.comb += [
            self.i.ready.eq(held < RUN_SLOTS),
            self.busy.eq(held != 0),
            self.o.valid.eq(waiting != 0),
            self.o.payload.eq(self.slots[offered].run),
        ]
        m.d.sync += [held.eq(held + push - pop), waiting.eq(waiting + push - hand_out)]
        with m.If(push):
            m.d.sync += [self.slots[tail].valid.eq(1), self.slots[tail].run.eq(self.i.payload),
                         tail.eq(_next_slot(tail))]
        with m.If(hand_out):
            m.d.sync += offered.eq(_next_slot(offered))
        with m.If(pop):
            m.d.sync += [self.slots[head].valid.eq(0), head.eq(_next_slot(head))]
        return m
