"""The RUN queue: the RUNs a group holds, from acceptance to completion."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch import isa
from ..arch.config import RUN_SLOTS
from ..countdown import below, step
from .layouts import slot_layout

__all__ = ["RunQueue"]


def _next_slot(slot):
    return Mux(slot == RUN_SLOTS - 1, 0, slot + 1)


class RunQueue(wiring.Component):
    """The RUNs a group holds, oldest first: queued, being decoded or executing.

    Contract: ``i`` takes a RUN while fewer than :data:`RUN_SLOTS` are held. ``o`` offers the
    held RUNs, each once, in the order they were taken, from the cycle after each was taken.
    ``done`` completes the oldest held RUN (one per cycle; only while a RUN is held that ``o``
    has handed out), which frees its slot from the next cycle. ``slots`` shows which slots
    hold a RUN (slots fill in ring order, from the cycle after the RUN is taken until the cycle
    after it is done) and ``busy`` is high while any is held.

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
        # ``held < RUN_SLOTS`` and ``held != 0``, registered with ``held``: ``i.ready`` and
        # ``busy`` leave the group for the controller's issue logic, so they come straight
        # from flip-flops rather than through a comparison.
        room = Signal(init=1)
        any_held = Signal()
        waiting = Signal(range(RUN_SLOTS + 1))       # held and not yet handed out

        # The RUNs' registers in LUT RAM (a register file read by a ring pointer would be a
        # multiplexer as wide as all of them).
        m.submodules.runs = runs = memory.Memory(shape=isa.RunArgs, depth=RUN_SLOTS, init=[])
        write = runs.write_port()
        read = runs.read_port(domain="comb")

        push = self.i.valid & self.i.ready
        pop = self.done
        hand_out = self.o.valid & self.o.ready
        m.d.comb += [
            self.i.ready.eq(room),
            self.busy.eq(any_held),
            self.o.valid.eq(waiting != 0),
            write.addr.eq(tail), write.data.eq(self.i.payload), write.en.eq(push),
            read.addr.eq(offered), self.o.payload.eq(read.data),
        ]
        # The controller's push, the decoder's hand-out and the completions select among
        # values worked out from the registers (no carry chain after the handshakes).
        m.d.sync += [held.eq(step(push, pop, held)),
                     room.eq(below(push, pop, held, RUN_SLOTS, room)),
                     any_held.eq(Mux(push, 1, Mux(pop, held != 1, any_held))),
                     waiting.eq(step(push, hand_out, waiting))]
        for k, slot in enumerate(self.slots):
            with m.If(push & (tail == k)):
                m.d.sync += slot.valid.eq(1)
            with m.If(pop & (head == k)):
                m.d.sync += slot.valid.eq(0)
        with m.If(push):
            m.d.sync += tail.eq(_next_slot(tail))
        with m.If(hand_out):
            m.d.sync += offered.eq(_next_slot(offered))
        with m.If(pop):
            m.d.sync += head.eq(_next_slot(head))
        return m
