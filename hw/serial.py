"""Bit-serial arithmetic: a multiplier, a divider and a square root, a bit per cycle.

Each unit is loaded in one cycle and then steps once per cycle for a number of steps fixed by
the operation (not by the values), so a sequence of them has a latency known when the design
is elaborated (:class:`flexigan.hw.norm.NormFinish`). Each holds its result until it is loaded
again. They trade cycles for area: one adder of the operand's width each, no DSP block, no
barrel shifter.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SerialMultiplier", "SerialDivider", "SerialRoot"]


def _positive(name, value):
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


class SerialMultiplier(wiring.Component):
    """``a * b`` of unsigned integers, shift and add, ``b``'s bits least significant first.

    Contract: ``load`` takes ``a``, ``b`` and ``steps`` (``b < 2 ** steps``); the unit steps
    in the ``steps`` cycles after, and from the cycle after those :meth:`product` ``(steps)``
    is ``a * b``, until the next ``load``.

    Parameters
    ----------
    a_bits, b_bits : int
        Widths of the operands.

    Attributes
    ----------
    load : In(1)
    a : In(a_bits)
    b : In(b_bits)
    steps : In(range(b_bits + 1))
    raw : Out(a_bits + b_bits)
        ``a * b * 2 ** (b_bits - steps)`` once the steps are done.
    """

    def __init__(self, a_bits, b_bits):
        _positive("SerialMultiplier a_bits", a_bits)
        _positive("SerialMultiplier b_bits", b_bits)
        self._b_bits = b_bits
        super().__init__({"load": In(1), "a": In(a_bits), "b": In(b_bits),
                          "steps": In(range(b_bits + 1)), "raw": Out(a_bits + b_bits)})

    def product(self, steps):
        """``a * b`` after an operation of ``steps`` steps (a constant): a slice of ``raw``."""
        return self.raw[self._b_bits - steps:]

    def elaborate(self, platform):
        m = Module()
        a = Signal.like(self.a, name="multiplicand")
        left = Signal.like(self.steps)
        high = self.raw[self._b_bits:]         # the partial sum
        low = self.raw[:self._b_bits]          # b's bits still to add, then the product's
        with m.If(self.load):
            m.d.sync += [a.eq(self.a), left.eq(self.steps), high.eq(0), low.eq(self.b)]
        with m.Elif(left != 0):
            # The partial sum and b shift right together: b's next bit is always low[0].
            total = high + Mux(low[0], a, 0)
            m.d.sync += [left.eq(left - 1), self.raw.eq(Cat(low[1:], total))]
        return m


class SerialDivider(wiring.Component):
    """``dividend // divisor`` of unsigned integers, restoring division.

    Contract: ``load`` takes ``dividend`` and ``divisor``; the unit steps in the
    ``dividend_bits`` cycles after (:attr:`steps`), and from the cycle after those
    ``quotient`` is ``dividend // divisor`` (all ones for a divisor 0), until the next ``load``.

    Parameters
    ----------
    dividend_bits, divisor_bits : int

    Attributes
    ----------
    load : In(1)
    dividend : In(dividend_bits)
    divisor : In(divisor_bits)
    quotient : Out(dividend_bits)
    """

    def __init__(self, dividend_bits, divisor_bits):
        _positive("SerialDivider dividend_bits", dividend_bits)
        _positive("SerialDivider divisor_bits", divisor_bits)
        #: Cycles of an operation after its load: a quotient bit each.
        self.steps = dividend_bits
        super().__init__({"load": In(1), "dividend": In(dividend_bits),
                          "divisor": In(divisor_bits), "quotient": Out(dividend_bits)})

    def elaborate(self, platform):
        m = Module()
        divisor = Signal.like(self.divisor, name="divisor_held")
        remainder = Signal.like(self.divisor)
        left = Signal(range(self.steps + 1))
        # The dividend shifts out of ``quotient`` at the top as the quotient bits enter it.
        bits = self.quotient
        with m.If(self.load):
            m.d.sync += [divisor.eq(self.divisor), remainder.eq(0), bits.eq(self.dividend),
                         left.eq(self.steps)]
        with m.Elif(left != 0):
            partial = Cat(bits[-1], remainder)
            difference = partial - divisor
            fits = ~difference[-1]             # partial >= divisor
            m.d.sync += [left.eq(left - 1), bits.eq(Cat(fits, bits[:-1])),
                         remainder.eq(Mux(fits, difference, partial))]
        return m


class SerialRoot(wiring.Component):
    """``isqrt(radicand)``, the floor square root, two radicand bits per step.

    Contract: ``load`` takes ``radicand``; the unit steps in the ``root_bits`` cycles after
    (:attr:`steps`), and from the cycle after those ``root`` is ``isqrt(radicand)``, until the
    next ``load``.

    Parameters
    ----------
    root_bits : int
        The radicand has twice as many.

    Attributes
    ----------
    load : In(1)
    radicand : In(2 * root_bits)
    root : Out(root_bits)
    """

    def __init__(self, root_bits):
        _positive("SerialRoot root_bits", root_bits)
        #: Cycles of an operation after its load: a root bit each.
        self.steps = root_bits
        super().__init__({"load": In(1), "radicand": In(2 * root_bits), "root": Out(root_bits)})

    def elaborate(self, platform):
        m = Module()
        radicand = Signal.like(self.radicand, name="radicand_left")
        # The remainder stays at most twice the root (the root's next bit would be 1 else).
        remainder = Signal(self.steps + 2)
        left = Signal(range(self.steps + 1))
        with m.If(self.load):
            m.d.sync += [radicand.eq(self.radicand), remainder.eq(0), self.root.eq(0),
                         left.eq(self.steps)]
        with m.Elif(left != 0):
            partial = Cat(radicand[-2:], remainder)
            difference = partial - Cat(Const(1, 2), self.root)
            fits = ~difference[-1]             # partial >= 4 * root + 1
            m.d.sync += [left.eq(left - 1), radicand.eq(radicand << 2),
                         self.root.eq(Cat(fits, self.root[:-1])),
                         remainder.eq(Mux(fits, difference, partial))]
        return m
