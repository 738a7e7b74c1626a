"""Sparse core: the zero-skip stage on a group's broadcast activation stream.

The activation of a tap is broadcast to all lanes of a group, so a zero activation is a whole
cycle of useless multiplies. The access engine delivers the taps in bundles of up to
``config.bundle_width`` consecutive bytes of one word; the stage issues the
bundle's non-zero taps one per cycle, each with its weight address, before the weight buffer is
read, so a bundle of ``k`` non-zero taps takes ``max(1, k)`` cycles instead of its ``n``. Taps
come in groups (the taps of one ``MAC`` micro-op, the last bundle flagged ``last``); the execute
engine needs that flag on the last tap it receives of the group.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arch import isa

__all__ = ["tap_layout", "bundle_layout", "SparseCore"]


def _lanes_field():
    return dict(isa.fields_of(isa.RunArgs))["lanes"]


def tap_layout(config):
    """A tap for the weight fetch: activation, weight address, end of a tap nest, the null
    step of an empty nest or an all-zero bundle (no multiply), and the RUN's lane count
    (multiplies per tap, for the counters)."""
    return data.StructLayout({"act": signed(8), "wgt_addr": unsigned(config.wgt_addr_width),
                              "last": 1, "null": 1, "lanes": _lanes_field()})


def bundle_layout(config):
    """``n`` taps after the activation fetch: their activations, the first one's weight address
    and the weight stride between taps, end of a tap nest, null step, lane count."""
    ww = config.wgt_addr_width
    return data.StructLayout({"acts": data.ArrayLayout(signed(8), config.bundle_width),
                              "n": range(1, config.bundle_width + 1),
                              "wgt_addr": unsigned(ww), "wgt_stride": unsigned(ww),
                              "last": 1, "null": 1, "lanes": _lanes_field()})


def _scan(taps, left, index, none, final):
    """Loads ``left`` with the set of ``taps`` still to issue, ``index`` with the lowest,
    ``none`` and ``final`` with whether it holds none or at most one."""
    lowest = 0
    for j in reversed(range(len(taps))):
        lowest = Mux(taps[j], j, lowest)
    return [left.eq(taps), index.eq(lowest), none.eq(taps == 0),
            final.eq((taps & (taps - 1)) == 0)]


class SparseCore(wiring.Component):
    """Issues a bundle's taps one per cycle, dropping those whose activation is zero.

    Contract, for each bundle on ``i`` (taps ``j < n``: activation ``acts[j]``, weight address
    ``wgt_addr + j * wgt_stride``):

    - with ``bypass = 0``, ``o`` carries the bundle's taps with a non-zero activation, in order;
      a bundle with none (or a null bundle) becomes one null tap (``act = 0, null = 1``), so
      that every bundle takes a cycle and the consumer still sees a group's end;
    - with ``bypass = 1`` (``--no-sparse``) ``o`` carries all ``n`` taps (a null bundle: one
      null tap);
    - the bundle's ``last`` goes on its final tap out, ``null`` and ``lanes`` on all of them;
    - ``skipped`` counts the multiplies the stage saves: ``lanes`` for every zero tap of a
      non-null bundle while ``bypass = 0``, :attr:`COUNT_LATENCY` cycles after the bundle is
      taken; ``clear`` zeroes it (and drops the counts in flight).

    A bundle is taken into a register (one cycle of latency) and gives one tap per cycle while
    ``o`` is ready; the next bundle is taken with the current one's final tap, so a bundle of
    ``k`` taps out takes ``k`` cycles. ``bypass`` must not change while taps are in flight.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    i : In(stream.Signature(bundle_layout(config)))
    o : Out(stream.Signature(tap_layout(config)))
    bypass : In(1)
    skipped : Out(64)
    clear : In(1)
    """

    #: Cycles from a bundle's acceptance on ``i`` to its zeros counted in ``skipped``.
    COUNT_LATENCY = 3

    def __init__(self, config):
        self._width = config.bundle_width
        super().__init__({
            "i": In(stream.Signature(bundle_layout(config))),
            "o": Out(stream.Signature(tap_layout(config))),
            "bypass": In(1),
            "skipped": Out(64),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        width = self._width
        bundle = Signal.like(self.i.payload)
        valid = Signal()
        left = Signal(width)              # the bundle's taps still to issue
        # Each tap's weight address, taken with the bundle (a multiply by the tap's index was
        # on the path to the weight buffer's address).
        addresses = [Signal.like(bundle.wgt_addr, name=f"wgt_addr{j}") for j in range(width)]
        # The next tap to issue (the lowest one left) and whether it is the bundle's final
        # one, as flip-flops computed with ``left``: a priority encoder and a decrement on
        # ``left`` were on the path to the weight buffer's address and to ``i.ready``.
        index = Signal(range(width))
        final = Signal(init=1)
        none = Signal(init=1)

        m.d.comb += [
            self.o.valid.eq(valid),
            self.o.payload.act.eq(Mux(none, 0, bundle.acts[index])),
            self.o.payload.wgt_addr.eq(Array(addresses)[index]),
            self.o.payload.last.eq(bundle.last & final),
            self.o.payload.null.eq(bundle.null | none),
            self.o.payload.lanes.eq(bundle.lanes),
            self.i.ready.eq(~valid | (self.o.ready & final)),
        ]

        new = self.i.payload
        taps = Signal(width)
        nonzero = Signal(width)
        m.d.comb += [taps.eq((Const(1, width + 1) << new.n) - 1),
                     nonzero.eq(Cat(a != 0 for a in new.acts) & taps)]
        taken = self.i.valid & self.i.ready
        # ``left``, ``index``, ``none`` and ``final`` for each way ``left`` moves (a new
        # bundle, a tap issued), computed in parallel and chosen by the handshakes last.
        fresh, issued = Signal(width), Signal(width)
        m.d.comb += [fresh.eq(Mux(self.bypass, taps, nonzero)), issued.eq(left & (left - 1))]
        with m.If(taken):
            m.d.sync += [bundle.eq(new), valid.eq(1),
                         [a.eq(new.wgt_addr + j * new.wgt_stride)
                          for j, a in enumerate(addresses)],
                         _scan(fresh, left, index, none, final)]
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += _scan(issued, left, index, none, final)
            with m.If(final):
                m.d.sync += valid.eq(0)
        self._count(m, taken, taps, nonzero)
        return m

    def _count(self, m, taken, taps, nonzero):
        """``skipped``, in a pipeline of :attr:`COUNT_LATENCY` cycles after the bundle is
        taken (a zero count, a multiply by the lane count and a 64-bit sum were one path):
        the bundle's zero taps, then the multiplies they save, then the sum."""
        width, new = self._width, self.i.payload
        count = Signal()
        zeros = Signal(range(width + 1))
        lanes = Signal.like(new.lanes)
        saved_valid = Signal()
        saved = Signal(len(new.lanes) + ceil_log2(width + 1))
        m.d.sync += [count.eq(taken & ~self.bypass & ~new.null),
                     zeros.eq(sum(taps[j] & ~nonzero[j] for j in range(width))),
                     lanes.eq(new.lanes),
                     saved_valid.eq(count), saved.eq(lanes * zeros)]
        with m.If(self.clear):
            m.d.sync += [self.skipped.eq(0), count.eq(0), saved_valid.eq(0)]
        with m.Elif(saved_valid):
            m.d.sync += self.skipped.eq(self.skipped + saved)
