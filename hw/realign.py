"""Byte realignment between two word-aligned views of the same bytes (the DMA's data path).

External memory is read and written in whole AXI beats, on-chip memories in whole words of the
same width, and a DMA transfer of ``n`` bytes may start at any byte of either. ``Realign`` takes
the source words that cover the transfer and produces the destination words that cover it,
each with the byte mask of the bytes that belong to the transfer. Loads (external -> on-chip)
and stores (on-chip -> external) both use it, each its own or, where logic is scarce, one
between them (:class:`SharedRealign`).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .countdown import Countdown

__all__ = ["beat_layout", "realign_command_layout", "covering_words", "realign_signature",
           "Realign", "SharedRealign"]


def beat_layout(data_width):
    """A word on a DMA data path: its bytes, which of them count, and the end of a transfer."""
    return data.StructLayout({"data": unsigned(data_width), "mask": unsigned(data_width // 8),
                              "last": 1})


def realign_command_layout(data_width):
    """A transfer: byte offsets of its first byte in the first source and destination words,
    and its length in bytes."""
    return data.StructLayout({"src_offset": unsigned(exact_log2(data_width // 8)),
                              "dst_offset": unsigned(exact_log2(data_width // 8)),
                              "length": unsigned(24)})


def covering_words(offset, length, data_width):
    """Words of ``data_width`` bits that hold ``length`` bytes from byte ``offset`` of the
    first (an Amaranth expression; 0 when ``length`` is 0)."""
    nbytes = data_width // 8
    return Mux(length == 0, 0, (offset + length + nbytes - 1) >> exact_log2(nbytes))


def realign_signature(data_width):
    """A realigner's ports, as the realigner sees them: the command, the source words in, the
    destination words out."""
    return wiring.Signature({
        "cmd": In(stream.Signature(realign_command_layout(data_width))),
        "i": In(stream.Signature(beat_layout(data_width))),
        "o": Out(stream.Signature(beat_layout(data_width))),
    })


class Realign(wiring.Component):
    """Shifts a transfer's bytes from source word alignment to destination word alignment.

    Contract: for each command accepted on ``cmd`` (only when idle) with ``length = n > 0``,
    the component consumes ``ceil((src_offset + n) / W)`` words on ``i`` (``W`` bytes each; only
    their ``data`` is used) holding the transfer from byte ``src_offset`` of the first word on,
    and produces ``ceil((dst_offset + n) / W)`` words on ``o`` holding the same bytes from
    byte ``dst_offset`` of the first word on. Each output ``mask`` marks the transfer's bytes;
    other bytes are unspecified. The final output word has ``last`` set. A command with
    ``n = 0`` is accepted and does nothing.

    The command is registered: the first input word moves two cycles after the command is
    accepted at the earliest, then one word per cycle in steady state. When
    ``dst_offset < src_offset`` the first input word is absorbed without output; when the
    transfer spills into one more destination word than it has source words, that word is
    produced after the last input word.

    Parameters
    ----------
    data_width : int
        Word width in bits, a power of two >= 8.

    Attributes
    ----------
    cmd : In(stream.Signature(realign_command_layout(data_width)))
    i : In(stream.Signature(beat_layout(data_width)))
    o : Out(stream.Signature(beat_layout(data_width)))
    """

    def __init__(self, data_width):
        if data_width < 8 or data_width & (data_width - 1):
            raise ValueError(f"Realign data_width must be a power of two >= 8, not "
                             f"{data_width!r}")
        self._width = data_width
        super().__init__(realign_signature(data_width))

    def elaborate(self, platform):
        m = Module()
        nbytes = self._width // 8
        shift = exact_log2(nbytes)
        src_left = Countdown(24, "src_left")     # input words still to consume
        dst_left = Countdown(24, "dst_left")     # output words still to produce
        absorb = Signal()            # the first input word is only stored
        first = Signal()             # the next output is the transfer's first word
        skip = Signal(range(nbytes + 1))    # bytes of the previous word not in the output
        full = Const((1 << nbytes) - 1, nbytes)
        first_mask = Signal(nbytes)  # the transfer's bytes of its first output word
        final_mask = Signal(nbytes)  # ... of its final one
        prev = Signal(self._width)

        # The command is registered first and worked out in the next cycle.
        held = Signal()
        cmd = Signal.like(self.cmd.payload, name="held_cmd")
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [cmd.eq(self.cmd.payload), held.eq(1)]
        with m.If(held):
            m.d.sync += held.eq(0)
        end = (cmd.dst_offset + cmd.length)[:shift]     # bytes used of the final word

        def words(offset):
            # The words that cover the transfer (not empty) from byte ``offset``.
            return (offset + cmd.length + nbytes - 1) >> shift

        def single(offset):
            # The transfer (not empty) fits in one word from byte ``offset``.
            return (cmd.length[shift + 1:] == 0) & (offset + cmd.length[:shift + 1] <= nbytes)

        with m.If(held & (cmd.length != 0)):
            m.d.sync += [
                *src_left.load(words(cmd.src_offset), nonzero=1, one=single(cmd.src_offset)),
                *dst_left.load(words(cmd.dst_offset), nonzero=1, one=single(cmd.dst_offset)),
                absorb.eq(cmd.dst_offset < cmd.src_offset),
                first.eq(1),
                # Output byte b comes from the previous word's byte skip + b when
                # b < W - skip, else from the current word's byte b - (W - skip).
                skip.eq(nbytes - (cmd.dst_offset - cmd.src_offset)[:shift]),
                first_mask.eq(full & ~((Const(1, nbytes + 1) << cmd.dst_offset) - 1)),
                final_mask.eq(Mux(end != 0, (Const(1, nbytes + 1) << end) - 1, full)),
            ]
        m.d.comb += self.cmd.ready.eq(~held & ~src_left.nonzero & ~dst_left.nonzero)

        current = Mux(src_left.nonzero, self.i.payload.data, 0)
        window = Cat(prev, current)
        m.d.comb += self.o.payload.data.eq(window >> (skip << 3))
        low = Mux(first, first_mask, full)
        high = Mux(dst_left.one, final_mask, full)
        m.d.comb += [self.o.payload.mask.eq(low & high), self.o.payload.last.eq(dst_left.one)]

        with m.If(absorb):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += [prev.eq(self.i.payload.data), *src_left.decrement(), absorb.eq(0)]
        with m.Elif(src_left.nonzero):
            m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready)]
            with m.If(self.i.valid & self.o.ready):
                m.d.sync += [prev.eq(self.i.payload.data), *src_left.decrement(),
                             *dst_left.decrement(), first.eq(0)]
        with m.Elif(dst_left.nonzero):
            m.d.comb += self.o.valid.eq(1)
            with m.If(self.o.ready):
                m.d.sync += [*dst_left.decrement(), first.eq(0)]
        return m


class SharedRealign(wiring.Component):
    """One :class:`Realign` for two clients whose transfers never overlap (a DMA engine's loads
    and stores): the port ``select`` chooses (0: ``first``, 1: ``second``) behaves as a
    ``Realign``, the other as one that takes and gives nothing. ``select`` may change only
    while the realigner is idle (``cmd.ready`` high, no word on ``o``). Timing as a
    ``Realign``'s: the multiplexers add no register. ``data_width`` is the ``Realign``'s.

    Attributes
    ----------
    first, second : Out(realign_signature(data_width))
    select : In(1)
    """

    def __init__(self, data_width):
        self._width = data_width
        super().__init__({"first": Out(realign_signature(data_width)),
                          "second": Out(realign_signature(data_width)),
                          "select": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.realign = realign = Realign(self._width)
        for client, chosen in ((self.first, ~self.select), (self.second, self.select)):
            with m.If(chosen):
                for source, sink in ((client.cmd, realign.cmd), (client.i, realign.i),
                                     (realign.o, client.o)):
                    m.d.comb += [sink.valid.eq(source.valid), sink.payload.eq(source.payload),
                                 source.ready.eq(sink.ready)]
        return m
