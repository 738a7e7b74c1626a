"""Counters that keep their carry chains and compares off the paths of the handshakes.

Transfer counters are wide (24 bits): tested combinationally, ``count != 0`` and
``count == 1`` are a few LUT levels at the start of every path that asks whether a transfer
is done. In :class:`Countdown` both are flip-flops, set from the value loaded or from the
count before a decrement, so the tests cost nothing and the compares sit beside the counter's
own carry chain. :func:`step` moves an occupancy count by two handshakes without a sum of
them.
"""

from amaranth.hdl import Mux, Signal

__all__ = ["Countdown", "step", "below"]


def step(inc, dec, value):
    """``value + inc - dec`` (``inc`` and ``dec`` one bit each) as a choice among
    ``value - 1``, ``value`` and ``value + 1``: the handshakes select, after the carry chains,
    instead of entering one."""
    return Mux(inc, Mux(dec, value, value + 1), Mux(dec, value - 1, value))


def below(inc, dec, value, limit, flag):
    """The next ``value < limit`` as ``value`` moves to ``step(inc, dec, value)``, from
    ``flag``, this cycle's ``value < limit`` (a register): room for one more after this
    cycle's handshakes, with no compare after them."""
    return Mux(inc, Mux(dec, flag, value + 1 < limit), dec | flag)


class Countdown:
    """A ``width``-bit down counter ``count`` with registered ``nonzero`` and ``one``.

    Contract: the flags always agree with ``count`` (no added latency): ``load`` and
    ``decrement`` return the ``sync`` statements that change all three together. Decrementing
    a zero count is not allowed.
    """

    def __init__(self, width, name):
        self.count = Signal(width, name=name)
        self.nonzero = Signal(name=f"{name}_nonzero")
        self.one = Signal(name=f"{name}_one")

    def load(self, value, *, nonzero=None, one=None):
        """Statements that set the count to ``value``; ``nonzero`` and ``one`` may give the
        flags from a shorter path than ``value``'s own compares."""
        return [self.count.eq(value),
                self.nonzero.eq(value != 0 if nonzero is None else nonzero),
                self.one.eq(value == 1 if one is None else one)]

    def decrement(self):
        """Statements that count down by one."""
        return [self.count.eq(self.count - 1), self.nonzero.eq(~self.one),
                self.one.eq(self.count == 2)]
