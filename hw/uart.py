"""An 8N1 UART: one start bit, eight data bits least significant first, one stop bit.

Both directions count ``divisor`` clock cycles per bit; the baud rate is the clock frequency
over ``divisor`` (``round(50e6 / 115_200) = 434`` gives 115,200 baud from 50 MHz, 0.006 % off).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import cdc, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "UartRx", "UartTx"]

#: The receiver needs a few cycles per bit: two to synchronise the pin, one to see the edge,
#: and a mid-bit sample that stays inside the bit for a few percent of clock mismatch.
MIN_DIVISOR = 4


def _check_divisor(who, divisor):
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"{who} divisor must be an integer >= {MIN_DIVISOR} (clock cycles per "
                         f"bit), not {divisor!r}")


class _BitTimer:
    """Counts clock cycles within a bit: ``done`` when a reload of ``cycles`` has run out."""

    def __init__(self, m, divisor):
        self.count = Signal(range(divisor))
        self.done = self.count == 0
        m.d.sync += self.count.eq(Mux(self.done, 0, self.count - 1))

    def reload(self, cycles):
        """Statement: ``done`` again ``cycles`` clock cycles from now (1 <= cycles)."""
        return self.count.eq(cycles - 1)


class UartTx(wiring.Component):
    """Sends the bytes of a stream on a serial line, 8N1.

    Contract: a byte accepted on ``i`` in cycle ``t`` drives its start bit on ``tx`` from
    cycle ``t + 1``, each bit for ``divisor`` cycles; ``i`` is ready again in the last cycle
    of the stop bit, so back-to-back bytes leave with no idle time between them. ``tx`` idles
    high.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Attributes
    ----------
    i : In(stream.Signature(8))
    tx : Out(1)
    """

    def __init__(self, divisor):
        _check_divisor("UartTx", divisor)
        self._divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        timer = _BitTimer(m, self._divisor)
        frame = Signal(10, init=0x3FF)      # start, data, stop: shifted out LSB first
        bits = Signal(range(11))            # bits of ``frame`` still to send
        m.d.comb += [self.tx.eq(frame[0]),
                     self.i.ready.eq((bits == 0) | ((bits == 1) & timer.done))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [frame.eq(Cat(0, self.i.payload, 1)), bits.eq(10),
                         timer.reload(self._divisor)]
        with m.Elif((bits != 0) & timer.done):
            m.d.sync += [frame.eq(Cat(frame[1:], 1)), bits.eq(bits - 1)]
            with m.If(bits != 1):
                m.d.sync += timer.reload(self._divisor)
        return m


class UartRx(wiring.Component):
    """Receives bytes from a serial line, 8N1, onto a stream.

    Contract: ``rx`` is synchronised (two flip-flops); a falling edge starts a byte, each bit
    is sampled in its middle (``divisor // 2`` cycles after the edge, then every ``divisor``
    cycles). A start bit that is high again at its middle is a glitch and ignored. A byte whose
    stop bit is high is offered on ``o`` (held until taken); one whose stop bit is low is
    dropped and ``framing_error`` pulses for one cycle, and the receiver waits for the line to
    return high before it looks for the next start bit. A byte that completes while the
    previous one is still on ``o`` is dropped and ``overrun`` pulses: the consumer has about
    one byte time (``10 * divisor`` cycles) to take each byte.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Attributes
    ----------
    rx : In(1)
    o : Out(stream.Signature(8))
    framing_error : Out(1)
    overrun : Out(1)
    """

    def __init__(self, divisor):
        _check_divisor("UartRx", divisor)
        self._divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "framing_error": Out(1), "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = cdc.FFSynchronizer(self.rx, line, init=1)
        timer = _BitTimer(m, self._divisor)
        shift = Signal(8)
        bits = Signal(range(9))             # data bits still to sample
        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("idle"):
                with m.If(~line):
                    m.d.sync += timer.reload(self._divisor // 2)
                    m.next = "start"
            with m.State("start"):
                with m.If(timer.done):
                    with m.If(line):
                        m.next = "idle"
                    with m.Else():
                        m.d.sync += [timer.reload(self._divisor), bits.eq(8)]
                        m.next = "data"
            with m.State("data"):
                with m.If(timer.done):
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), bits.eq(bits - 1),
                                 timer.reload(self._divisor)]
                    with m.If(bits == 1):
                        m.next = "stop"
            with m.State("stop"):
                with m.If(timer.done):
                    with m.If(~line):
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "break"
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.sync += self.overrun.eq(1)
                        m.next = "idle"
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                        m.next = "idle"
            with m.State("break"):
                # A low stop bit may be a break or a byte caught mid-frame: only a high line
                # marks a boundary where the next falling edge is a start bit.
                with m.If(line):
                    m.next = "idle"
        return m
