"""NORM FINISH's arithmetic: one channel's normalizing PARAM entry from its sums.

:class:`NormFinish` computes :func:`flexigan.hw.arch.numerics.norm_params` exactly, bit-serially
(:mod:`flexigan.hw.serial`): a multiplier, a square root, a divider and a shifter, scheduled by
a timetable fixed at elaboration, so every channel takes :data:`NormFinish.LATENCY` cycles
whatever its values. In the terms of docs/numerics.md ("InstanceNorm")::

    A = n * |S2|,  B = |S1|**2                         # D = A - B if S2 >= 0 and A > B, else 0
    r = isqrt((D + E) << 16)
    q = (|G| * n * 2**18 + r) // (2 * r)               # div_round(|G| n << 23, 64 r)
    M, t: q to 15 bits (shifts while q >= 2**16, then a rounding shift)
    a = (P * r + ((n - 128 * S1) << 13)) >> 14         # bias = floor(a / n): div_round(64 (P r
                                                       #   - (S1 << 20)), n << 20), 2**21 out
    level = rshift_round(P * G, g + 12)                # D == 0: bias = level - 64 S1 // n
    bias clipped to int32

A floor division of a negative ``x`` by ``n`` is ``~(~x // n)``: the divider sees only
non-negative dividends. The widths hold every operand the NORM micro-op and a PARAM entry can
encode (``count`` 24 bits, sums and ``beta`` 32, ``eps`` 48, ``gain_shift`` 8).
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .arch import isa, numerics
from .serial import SerialDivider, SerialMultiplier, SerialRoot

__all__ = ["norm_input_layout", "norm_output_layout", "NormFinish"]

_NORM = dict(isa.fields_of(isa.NormArgs))
_PARAM = dict(isa.fields_of(isa.PARAM_LAYOUT))
_COUNT_BITS = _NORM["count"].width                 # n < 2 ** 24
_SUM_BITS = _PARAM["bias"].width                   # S1, S2 and beta are PARAM biases: int32
_GAIN_BITS = _PARAM["multiplier"].width            # |G| <= 2 ** 15
#: D < n * 2 ** 31 < 2 ** 55.
_SPREAD_BITS = _COUNT_BITS + _SUM_BITS - 1
#: (D + eps) << 16 < 2 ** 72: the root has half as many bits.
_ROOT_BITS = (_SPREAD_BITS + 1 + 2 * numerics.NORM_ROOT_FRAC) // 2
_WEIGHT_BITS = exact_log2(numerics.NORM_WEIGHT)
#: q = div_round(|G| n << 23, 64 r) = (|G| n 2 ** 18 + r) // (2 r).
_GAIN_SCALE = numerics.NORM_GAIN_FRAC + 1 - _WEIGHT_BITS
#: Bits of the dividends: (|G| n << 18) + r < 2 ** 58; |a| < 2 ** 54.
_DIVIDEND_BITS = _GAIN_BITS - 1 + _COUNT_BITS + _GAIN_SCALE + 1
#: bias = floor(a / n), a = (P r + ((n - 128 S1) << 13)) >> 14: div_round(64 (P r - (S1 << 20)),
#: n << 20) with its 2 ** 21 taken out.
_OFFSET_SHIFT = numerics.NORM_ROOT_FRAC + numerics.NORM_BETA_FRAC - _WEIGHT_BITS
#: q < 2 ** 49 where D > 0 (then r >= 2 ** 8).
_QUOTIENT_BITS = _DIVIDEND_BITS - numerics.NORM_ROOT_FRAC - 1
#: Significant bits of a multiplier.
_MANTISSA = _GAIN_BITS - 1
#: Shifts of q below 2 ** 16.
_NORMALIZE_STEPS = _QUOTIENT_BITS - (_MANTISSA + 1)
#: Shifts of the level's product (|beta * G| <= 2 ** 46): from 47 on it rounds to 0 all the same.
_LEVEL_STEPS = _SUM_BITS + _GAIN_BITS - 1
#: Shifts of a clamped multiplier before its rounding step (a 16-bit shift rounds it to 0).
_CLAMP_STEPS = _MANTISSA


def norm_input_layout():
    """What NORM FINISH computes a lane's entry from: its sums ``s1``, ``s2``, the channel's
    constants (``gain``, ``gain_shift``, ``beta``: the third PARAM entry) and the micro-op's
    ``count`` and ``eps``."""
    return data.StructLayout({"s1": signed(_SUM_BITS), "s2": signed(_SUM_BITS),
                              "count": _NORM["count"], "eps": _NORM["eps"],
                              "gain": _PARAM["multiplier"], "gain_shift": _PARAM["shift"],
                              "beta": _PARAM["bias"]})


def norm_output_layout():
    """The lane's new PARAM entry."""
    return data.StructLayout({"bias": _PARAM["bias"], "multiplier": _PARAM["multiplier"],
                              "shift": _PARAM["shift"]})


class _Timetable:
    """The cycle (after the operands are taken) at which each step of NormFinish starts: each
    unit's operation begins once its operands are known and the unit is free."""

    def __init__(self):
        self.sums = 0                                 # MUL: n * |S2|
        self.square = self.sums + _COUNT_BITS + 1     # MUL: |S1| ** 2
        self.difference = self.square + _SUM_BITS + 1     # A - B
        self.spread = self.difference + 1             # D; MUL: n * |G|
        self.root = self.spread + 1                   # ROOT: (D + eps) << 16
        self.level_product = self.spread + _GAIN_BITS + 1   # MUL: |beta| * |G|
        self.level = self.level_product + _GAIN_BITS + 1    # SHIFT: the level
        self.gain = self.root + _ROOT_BITS + 1        # DIV: q; MUL: |beta| * r
        self.offset = self.gain + _SUM_BITS + 1       # a
        self.level_done = self.level + _LEVEL_STEPS + 1
        self.bias = self.gain + _DIVIDEND_BITS + 1    # DIV: the bias; SHIFT: normalize q
        self.mantissa = self.bias + _NORMALIZE_STEPS + 1
        self.exponent = self.mantissa + 1
        self.clamp = self.exponent + 1                # SHIFT: the clamped multiplier
        self.fix = self.bias + _DIVIDEND_BITS + 1
        self.total = self.fix + 1
        self.out = self.total + 1
        # Each unit is free when loaded again, and each result is there when used.
        assert self.gain >= self.level and self.offset <= self.bias
        assert self.level_done <= self.bias and self.clamp + _CLAMP_STEPS + 1 <= self.fix


_TIME = _Timetable()


class NormFinish(wiring.Component):
    """One channel's ``norm_params`` (see the module docstring), one channel at a time.

    Contract: ``i`` is ready while the unit is idle; a channel taken in cycle ``t`` has its
    entry on ``o`` from cycle ``t + LATENCY`` until ``o`` takes it, and ``o.payload`` equals
    ``numerics.norm_params(s1, s2, count, eps, gain, gain_shift, beta)`` for every input
    with ``count >= 1`` (for ``count`` 0 it is unspecified, but comes all the same).

    Attributes
    ----------
    i : In(stream.Signature(norm_input_layout()))
    o : Out(stream.Signature(norm_output_layout()))
    """

    #: Cycles from a channel's acceptance to its entry on ``o``.
    LATENCY = _TIME.out + 2

    def __init__(self):
        super().__init__({"i": In(stream.Signature(norm_input_layout())),
                          "o": Out(stream.Signature(norm_output_layout()))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mul = mul = SerialMultiplier(_ROOT_BITS, _SUM_BITS)
        m.submodules.root = root = SerialRoot(_ROOT_BITS)
        m.submodules.div = div = SerialDivider(_DIVIDEND_BITS, _ROOT_BITS + 1)
        x = Signal(norm_input_layout())
        busy = Signal()
        t = Signal(range(_TIME.out + 1))
        m.d.comb += self.i.ready.eq(~busy & ~self.o.valid)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [x.eq(self.i.payload), busy.eq(1), t.eq(0)]
        with m.If(busy):
            m.d.sync += t.eq(t + 1)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(busy & (t == _TIME.out)):
            m.d.sync += [busy.eq(0), self.o.valid.eq(1)]
        accepted = Signal()
        m.d.sync += accepted.eq(self.i.valid & self.i.ready)
        strobes = {}

        def at(cycle):
            """A flip-flop high in the timetable's ``cycle``: the steps' many multiplexers
            start at a register, not at a compare of ``t``."""
            if cycle not in strobes:
                strobes[cycle] = Signal(name=f"at{cycle}")
                m.d.sync += strobes[cycle].eq(busy & (t == cycle - 1) if cycle else
                                              self.i.valid & self.i.ready)
            return strobes[cycle]

        shifter = _Shifter(m)
        zero = self._spread(m, at, x, mul, root)
        level = self._level(m, at, x, mul, shifter)
        self._gain(m, at, x, mul, div, root)
        offset = self._offset(m, at, x, mul)
        negative = self._bias_division(m, at, x, div, zero, offset)
        self._multiplier(m, at, x, div, shifter, zero)
        self._bias(m, at, div, zero, level, negative)
        return m

    @staticmethod
    def _multiply(m, mul, a, b, steps):
        """Loads ``a * b`` (``b < 2 ** steps``) into the multiplier in this cycle."""
        m.d.comb += [mul.load.eq(1), mul.a.eq(a), mul.b.eq(b), mul.steps.eq(steps)]

    def _spread(self, m, at, x, mul, root):
        """D from A and B, and the root of ``(D + eps) << 16``; returns ``zero`` (D == 0)."""
        a_product = Signal(_SPREAD_BITS)
        spread = Signal(_SPREAD_BITS)
        zero = Signal()
        with m.If(at(_TIME.sums)):
            self._multiply(m, mul, abs(x.s2), x.count, _COUNT_BITS)
        with m.If(at(_TIME.square)):
            m.d.sync += a_product.eq(mul.product(_COUNT_BITS))
            self._multiply(m, mul, abs(x.s1), abs(x.s1), _SUM_BITS)
        difference = Signal(signed(2 * _SUM_BITS + 1))           # A - B
        with m.If(at(_TIME.difference)):
            m.d.sync += difference.eq(a_product - mul.product(_SUM_BITS))
        with m.If(at(_TIME.spread)):
            # n * S2 - S1 * S1 > 0 only for S2 >= 0.
            positive = (x.s2 >= 0) & ~difference[-1] & difference.any()
            m.d.sync += [spread.eq(Mux(positive, difference, 0)), zero.eq(~positive)]
            self._multiply(m, mul, x.count, abs(x.gain), _GAIN_BITS)
        with m.If(at(_TIME.root)):
            m.d.comb += [root.load.eq(1),
                         root.radicand.eq((spread + x.eps) << 2 * numerics.NORM_ROOT_FRAC)]
        return zero

    def _level(self, m, at, x, mul, shifter):
        """The constant channel's level, ``rshift_round(beta * G, g + 12)``: the product's
        rounding shift as ``((v >> (g + 11)) + 1) >> 1``."""
        level = Signal(signed(_SUM_BITS + _GAIN_BITS))
        with m.If(at(_TIME.level_product)):
            self._multiply(m, mul, abs(x.beta), abs(x.gain), _GAIN_BITS)
        with m.If(at(_TIME.level)):
            product = mul.product(_GAIN_BITS)
            shifts = x.gain_shift + numerics.NORM_BETA_FRAC - 1
            m.d.sync += [shifter.value.eq(Mux(x.beta[-1] ^ x.gain[-1], -product, product)),
                         shifter.left.eq(Mux(shifts > _LEVEL_STEPS, _LEVEL_STEPS, shifts))]
        with m.If(at(_TIME.level_done)):
            m.d.sync += level.eq((shifter.value + 1) >> 1)
        return level

    def _gain(self, m, at, x, mul, div, root):
        """Starts the gain quotient ``q = (|G| n 2 ** 18 + r) // (2 r)`` and ``|beta| * r``."""
        gain_count = Signal(_GAIN_BITS + _COUNT_BITS)            # |G| * n
        with m.If(at(_TIME.level_product)):
            m.d.sync += gain_count.eq(mul.product(_GAIN_BITS))
        with m.If(at(_TIME.gain)):
            m.d.comb += [div.load.eq(1),
                         div.dividend.eq((gain_count << _GAIN_SCALE) + root.root),
                         div.divisor.eq(root.root << 1)]
            self._multiply(m, mul, root.root, abs(x.beta), _SUM_BITS)

    def _offset(self, m, at, x, mul):
        """``P * r + ((n - 128 S1) << 13)``, whose ``>> 14`` is the bias's dividend."""
        base = Signal(signed(_SUM_BITS + _WEIGHT_BITS + 2 + _OFFSET_SHIFT))
        offset = Signal(signed(_ROOT_BITS + _SUM_BITS + 1))
        with m.If(at(_TIME.sums)):
            m.d.sync += base.eq((x.count - (x.s1 << _WEIGHT_BITS + 1)) << _OFFSET_SHIFT - 1)
        with m.If(at(_TIME.offset)):
            product = mul.product(_SUM_BITS)
            m.d.sync += offset.eq(base + Mux(x.beta[-1], -product, product))
        return offset

    def _bias_division(self, m, at, x, div, zero, offset):
        """Starts ``floor(v / n)`` of ``v = 64 S1`` (constant channel) or ``v = offset >> 14``,
        as ``~(~v // n)`` for a negative ``v``; returns that ``v`` is negative."""
        negative = Signal()
        with m.If(at(_TIME.bias)):
            value = Mux(zero, x.s1 << _WEIGHT_BITS, offset >> _OFFSET_SHIFT)
            m.d.sync += negative.eq(value[-1])
            m.d.comb += [div.load.eq(1), div.dividend.eq(Mux(value[-1], ~value, value)),
                         div.divisor.eq(x.count)]
        return negative

    def _multiplier(self, m, at, x, div, shifter, zero):
        """The multiplier and the shift: q to 15 bits (``t`` shifts, ``t + 1`` where that
        rounds up to 2 ** 15), ``s = g + 15 - t``, its clamps, the gain's sign."""
        mantissa = Signal(_MANTISSA)
        exponent = Signal(signed(_PARAM["shift"].width + 2))
        low, high = Signal(), Signal()
        with m.If(at(_TIME.bias)):
            quotient = div.quotient[:_QUOTIENT_BITS]
            m.d.sync += [shifter.value.eq(quotient), shifter.drop.eq(0),
                         shifter.normalize.eq(quotient[_MANTISSA + 1:].any())]
        with m.If(at(_TIME.mantissa)):
            top = shifter.value[:_MANTISSA + 1]              # below 2 ** 16 now
            up = top[-1]                                     # 16 bits: one rounding shift
            rounded = (top + 1)[1:]
            over = rounded[-1]                               # it rounded up to 2 ** 15
            m.d.sync += [mantissa.eq(Mux(up, Mux(over, 1 << _MANTISSA - 1, rounded), top)),
                         shifter.drop.eq(shifter.drop + up + (up & over)),
                         shifter.normalize.eq(0)]
        shift = Signal.like(exponent)
        m.d.comb += shift.eq(x.gain_shift + numerics.NORM_GAIN_FRAC - numerics.NORM_ROOT_FRAC
                             - shifter.drop)
        with m.If(at(_TIME.exponent)):
            m.d.sync += [exponent.eq(shift), low.eq(shift < 0),
                         high.eq(shift > numerics.MAX_SHIFT)]
        with m.If(at(_TIME.clamp)):
            # rshift_round(M, k), k = s - 47: ((M >> (k - 1)) + 1) >> 1, k - 1 at most 15.
            excess = exponent - numerics.MAX_SHIFT - 1
            m.d.sync += [shifter.value.eq(mantissa),
                         shifter.left.eq(Mux(high, Mux(excess > _CLAMP_STEPS, _CLAMP_STEPS,
                                                       excess), 0))]
        with m.If(at(_TIME.fix)):
            magnitude = Mux(low, (1 << _MANTISSA) - 1,
                            Mux(high, (shifter.value + 1) >> 1, mantissa))
            m.d.sync += [
                self.o.payload.multiplier.eq(Mux(zero, 1, Mux(x.gain[-1], -magnitude,
                                                                magnitude))),
                self.o.payload.shift.eq(Mux(zero | low, 0,
                                            Mux(high, numerics.MAX_SHIFT, exponent))),
            ]

    def _bias(self, m, at, div, zero, level, negative):
        """The bias: the quotient (``~q`` for a negative dividend), from the level for a
        constant channel, clipped to int32."""
        quotient = Signal(signed(_DIVIDEND_BITS + 1))
        with m.If(at(_TIME.fix)):
            # The dividends are below 2 ** 55: the quotient's top bit is 0.
            value = div.quotient.as_signed()
            m.d.sync += quotient.eq(Mux(negative, ~value, value))
        total = Signal(signed(_DIVIDEND_BITS + 2))
        with m.If(at(_TIME.total)):
            m.d.sync += total.eq(Mux(zero, level - quotient, quotient))
        with m.If(at(_TIME.out)):
            # Clipped by its high bits (no compare: a second carry chain after the sum's).
            high = total[_SUM_BITS - 1:]
            fits = (high == 0) | (high == (1 << len(high)) - 1)
            top, bottom = (1 << _SUM_BITS - 1) - 1, -(1 << _SUM_BITS - 1)
            m.d.sync += self.o.payload.bias.eq(Mux(fits, total, Mux(total[-1], bottom, top)))


class _Shifter:
    """NormFinish's shifter: ``value`` shifts right (arithmetic) a step per cycle while
    ``left`` counts down, or while ``normalize`` (load it as ``value >= 2 ** 16``: it follows
    that, a step ahead, so the shift's select is a flip-flop), counted in ``drop``. A step's
    load in the same cycle takes precedence (statements after these)."""

    def __init__(self, m):
        self.value = Signal(signed(_QUOTIENT_BITS + 1), name="shift_value")
        self.left = Signal(range(_LEVEL_STEPS + 1), name="shift_left")
        self.normalize = Signal(name="normalize")
        self.drop = Signal(range(_NORMALIZE_STEPS + 3), name="drop")
        with m.If(self.normalize):
            m.d.sync += [self.value.eq(self.value >> 1), self.drop.eq(self.drop + 1),
                         self.normalize.eq(self.value[_MANTISSA + 2:].any())]
        with m.Elif(self.left != 0):
            m.d.sync += [self.value.eq(self.value >> 1), self.left.eq(self.left - 1)]
