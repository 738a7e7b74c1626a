"""Sparse core: the zero-skip stage on a group's broadcast activation stream.

The activation of a step is broadcast to all lanes of a group, so a zero activation is a whole
cycle of useless multiplies: the stage drops it, together with its weight index, before the
weight buffer is read. Steps come in groups (the taps of one ``MAC`` micro-op, the last one
flagged ``last``); the execute engine needs that flag to know when the accumulation is over, so
the stage moves it to the last step it keeps, which takes a one-step lookahead.
"""

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SparseCore"]


class SparseCore(wiring.Component):
    """Drops steps whose activation is zero, keeping each group's ``last`` flag.

    Contract, for each group of steps on ``i`` (a run of steps ending with ``last = 1``):

    - with ``bypass = 0``, ``o`` carries the group's steps with ``act != 0``, in order, the
      final one with ``last = 1``; a group with no non-zero step becomes its own final step
      (``act = 0, last = 1``) so that the consumer still sees the end of the group;
    - with ``bypass = 1`` every step passes unchanged (``--no-sparse``);
    - ``skipped`` counts the multiplies the stage saves: ``lanes`` for every step with
      ``act == 0`` seen while ``bypass = 0`` (including a final zero step kept as an end marker,
      which the consumer treats as no multiply); ``clear`` zeroes it.

    The stage holds one step (it must see the next step to know whether the held one is the
    group's last): a non-final step leaves when the next kept step or the group's final step
    arrives; a final step leaves on the next cycle. ``bypass`` must not change while steps are
    in flight.

    Parameters
    ----------
    layout : data.StructLayout
        Step payload; must have a signed ``act`` field and a 1-bit ``last`` field. Other
        fields (the weight index) travel with the step.

    Attributes
    ----------
    i : In(stream.Signature(layout))
    o : Out(stream.Signature(layout))
    bypass : In(1)
    lanes : In(8)
        Multiplies per step (the lanes the current RUN uses).
    skipped : Out(64)
    clear : In(1)
    """

    def __init__(self, layout):
        layout = data.Layout.cast(layout)
        fields = dict(layout)
        for name in ("act", "last"):
            if name not in fields:
                raise ValueError(f"SparseCore layout must have an {name!r} field, not "
                                 f"{layout!r}")
        if Shape.cast(fields["last"].shape).width != 1:
            raise ValueError(f"SparseCore layout's 'last' field must be 1 bit wide, not "
                             f"{fields['last'].shape!r}")
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(layout)),
            "bypass": In(1),
            "lanes": In(8),
            "skipped": Out(64),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        layout = self.i.payload.shape()
        held = Signal(layout)
        held_valid = Signal()
        step = self.i.payload
        zero = (step.act == 0) & ~self.bypass
        skip = Signal()   # an input step with a zero activation is consumed this cycle

        # The held step may leave now without input (it is final), or leaves to make room.
        room = ~held_valid | (held.last & self.o.ready)
        m.d.comb += self.o.payload.eq(held)
        with m.If(held_valid & held.last):
            m.d.comb += self.o.valid.eq(1)
            with m.If(self.o.ready):
                m.d.sync += held_valid.eq(0)
        with m.Elif(held_valid & self.i.valid):
            with m.If(~zero):
                # A later kept step exists: the held one is not final.
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.d.comb += self.i.ready.eq(1)
                    m.d.sync += held.eq(step)
            with m.Elif(step.last):
                # The group ends in zeros: the held step becomes its final step.
                m.d.comb += [self.o.valid.eq(1), self.o.payload.last.eq(1)]
                with m.If(self.o.ready):
                    m.d.comb += [self.i.ready.eq(1), skip.eq(1)]
                    m.d.sync += held_valid.eq(0)
            with m.Else():
                m.d.comb += [self.i.ready.eq(1), skip.eq(1)]

        with m.If(room & self.i.valid):
            m.d.comb += self.i.ready.eq(1)
            with m.If(~zero | step.last):
                # Kept, or a group of zeros' end marker: hold it.
                m.d.sync += [held.eq(step), held_valid.eq(1)]
            m.d.comb += skip.eq(zero)

        with m.If(self.clear):
            m.d.sync += self.skipped.eq(0)
        with m.Elif(skip):
            m.d.sync += self.skipped.eq(self.skipped + self.lanes)
        return m
