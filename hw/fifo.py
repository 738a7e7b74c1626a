"""A first-in first-out queue between two typed streams."""

from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .arch.timing import SLICE_LATENCY
from .countdown import below, step

__all__ = ["StreamFIFO", "StreamSlice", "GrantQueue"]


class StreamFIFO(wiring.Component):
    """A synchronous FIFO whose ports are streams of ``shape``.

    Contract: payloads leave ``o`` in the order they entered ``i``; up to ``depth`` payloads
    are held, and ``i`` is ready exactly when fewer are (``level < depth``), so a producer
    may count its credits with ``level``. The output is registered, so a payload entering an
    empty queue is on ``o`` two cycles later and ``level`` counts it from the cycle after
    entry. With ``entry=True`` the queue behaves the same cycle for cycle, but a payload
    entering it is first registered whole: the producer's handshake drives one flip-flop's
    input, not the storage's write enable and pointers (the issue stage's decision into the
    DMA queue).

    Parameters
    ----------
    shape : ShapeLike
        Payload shape (a layout, or an integer width).
    depth : int
        Capacity in payloads, at least 1.
    entry : bool
        Register each payload on entry (see above).

    Attributes
    ----------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    level : Out(range(depth + 1))
        Payloads held.
    """

    def __init__(self, shape, depth, *, entry=False):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"StreamFIFO depth must be a positive integer, not {depth!r}")
        self._shape = shape
        self._depth = depth
        self._entry = entry
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        push = self._count(m)
        if self._entry:
            self._registered_entry(m, push)
            return m
        width = Shape.cast(self._shape).width
        # SyncFIFOBuffered's output register is not part of its write side: with ``depth``
        # entries it refuses a write while its inner memory is full even if the register is
        # empty. One spare entry makes ``level < depth`` enough for a write.
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=width, depth=self._depth + 1)
        m.d.comb += [
            queue.w_data.eq(self.i.payload),
            queue.w_en.eq(push),
            self.o.payload.eq(queue.r_data),
            self.o.valid.eq(queue.r_rdy),
            queue.r_en.eq(self.o.ready),
        ]
        return m

    def _count(self, m):
        """``level`` and ``i.ready``; returns the strobe of a payload's entry."""
        # ``level`` and ``ready`` are flip-flops, not the inner FIFO's level (a sum) and a
        # compare after it: a producer's valid, and so the paths through it, start at them.
        # The count moves one cycle after an entry or an exit.
        level = Signal(range(self._depth + 1))
        ready = Signal(init=1)
        push = self.i.valid & ready
        pop = self.o.valid & self.o.ready
        # The producer's valid and the consumer's ready select among results worked out
        # without them.
        m.d.sync += [
            level.eq(step(push, pop, level)),
            ready.eq(below(push, pop, level, self._depth, ready)),
        ]
        m.d.comb += [self.i.ready.eq(ready), self.level.eq(level)]
        return push

    def _registered_entry(self, m, push):
        """The ``entry=True`` queue: the entry register, storage read without a clock, and
        the output register, which takes the oldest of the storage and the entry register."""
        depth = self._depth
        entry = Signal.like(self.i.payload)
        entered = Signal()
        m.d.sync += [entry.eq(self.i.payload), entered.eq(push)]
        m.submodules.storage = storage = memory.Memory(shape=Shape.cast(self._shape),
                                                       depth=depth, init=[])
        w = storage.write_port()
        r = storage.read_port(domain="comb")
        produce, consume = Signal(range(depth)), Signal(range(depth))
        held = Signal(range(depth + 1))          # payloads in the storage
        nonempty = Signal()                      # held != 0, a flip-flop
        load = ~self.o.valid | self.o.ready      # the output register takes a payload
        from_storage = nonempty & load
        to_storage = entered & ~(load & ~nonempty)
        m.d.comb += [w.addr.eq(produce), w.data.eq(entry), w.en.eq(to_storage),
                     r.addr.eq(consume)]
        with m.If(load):
            m.d.sync += [self.o.valid.eq(nonempty | entered),
                         self.o.payload.eq(Mux(nonempty, r.data, entry))]

        def next_slot(pointer):
            return Mux(pointer == depth - 1, 0, pointer + 1)
        with m.If(to_storage):
            m.d.sync += produce.eq(next_slot(produce))
        with m.If(from_storage):
            m.d.sync += consume.eq(next_slot(consume))
        m.d.sync += [held.eq(step(to_storage, from_storage, held)),
                     nonempty.eq(Mux(to_storage, 1, Mux(from_storage, held != 1, nonempty)))]


class StreamSlice(wiring.Component):
    """A register slice: one stage of a stream with registered ``ready`` as well as data.

    Contract: payloads leave ``o`` in the order they entered ``i``, the cycle after they enter
    at the earliest (:data:`LATENCY`), one per cycle while ``o`` is ready; ``i.ready`` depends
    on no input in the same cycle (a second register holds the payload that arrives while
    ``o`` stalls), so the slice cuts every combinational path between its two sides.

    Parameters
    ----------
    shape : ShapeLike
        Payload shape.

    Attributes
    ----------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    """

    #: Cycles from a payload's entry on ``i`` to its presence on ``o``.
    LATENCY = SLICE_LATENCY

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        spare = Signal.like(self.i.payload)
        spare_valid = Signal()
        m.d.comb += self.i.ready.eq(~spare_valid)
        # The spare copies ``i`` whenever it is empty: its enable is a flip-flop, not the
        # consumer's ``ready`` (a crossbar's grant was the ULX3S cut's critical path into it).
        with m.If(~spare_valid):
            m.d.sync += spare.eq(self.i.payload)
        with m.If(self.o.ready | ~self.o.valid):
            with m.If(spare_valid):
                m.d.sync += [self.o.payload.eq(spare), self.o.valid.eq(1), spare_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid):
            m.d.sync += spare_valid.eq(1)
        return m


class GrantQueue(wiring.Component):
    """A queue of two requests in front of an arbiter whose grant is registered.

    Contract: ``o`` shows the request the arbiter may grant; ``o.ready`` is the grant (a
    transfer when ``o.valid``). The grant is registered: in the cycle after it, ``taken`` is
    set and the granted request is on ``head``, where it leaves the queue, while ``o`` already
    shows the request behind it. So a request can be granted every cycle, and ``i.ready``
    comes from registers only: no path from the arbiter into the queue's enables or the
    requester.

    Attributes
    ----------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    head : Out(shape)
    taken : Out(1)
    """

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)),
                          "head": Out(shape), "taken": Out(1)})

    def elaborate(self, platform):
        m = Module()
        second = Signal.like(self.i.payload)
        head_valid, second_valid = Signal(), Signal()
        m.d.sync += self.taken.eq(self.o.valid & self.o.ready)
        m.d.comb += self.i.ready.eq(~second_valid | self.taken)
        push = self.i.valid & self.i.ready
        with m.If(self.taken & second_valid):     # the head leaves, the second moves up
            m.d.sync += [self.head.eq(second), head_valid.eq(1), second.eq(self.i.payload),
                         second_valid.eq(push)]
        with m.Elif(self.taken | ~head_valid):    # the head leaves (or is empty)
            m.d.sync += [self.head.eq(self.i.payload), head_valid.eq(push)]
        with m.Elif(~second_valid):
            m.d.sync += [second.eq(self.i.payload), second_valid.eq(push)]
        m.d.comb += [self.o.valid.eq(Mux(self.taken, second_valid, head_valid)),
                     self.o.payload.eq(Mux(self.taken, second, self.head))]
        return m
