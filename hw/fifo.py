"""A first-in first-out queue between two typed streams."""

from amaranth.hdl import Module, Shape
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFIFO"]


class StreamFIFO(wiring.Component):
    """A synchronous FIFO whose ports are streams of ``shape``.

    Contract: payloads leave ``o`` in the order they entered ``i``; up to ``depth`` payloads
    are held, and ``i`` is ready exactly when fewer are (``level < depth``), so a producer
    may count its credits with ``level``. The output is registered (``SyncFIFOBuffered``), so
    a payload entering an empty queue is on ``o`` two cycles later and ``level`` counts it
    from the cycle after entry.

    Parameters
    ----------
    shape : ShapeLike
        Payload shape (a layout, or an integer width).
    depth : int
        Capacity in payloads, at least 1.

    Attributes
    ----------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    level : Out(range(depth + 1))
        Payloads held.
    """

    def __init__(self, shape, depth):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"StreamFIFO depth must be a positive integer, not {depth!r}")
        self._shape = shape
        self._depth = depth
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self._shape).width
        # SyncFIFOBuffered's output register is not part of its write side: with ``depth``
        # entries it refuses a write while its inner memory is full even if the register is
        # empty. One spare entry makes ``level < depth`` enough for a write.
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=width, depth=self._depth + 1)
        ready = queue.level < self._depth
        m.d.comb += [
            queue.w_data.eq(self.i.payload),
            queue.w_en.eq(self.i.valid & ready),
            self.i.ready.eq(ready),
            self.o.payload.eq(queue.r_data),
            self.o.valid.eq(queue.r_rdy),
            queue.r_en.eq(self.o.ready),
            self.level.eq(queue.level),
        ]
        return m
