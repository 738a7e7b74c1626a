"""Access engine address generator: the MAC loop nest of docs/isa.md as an address stream.

For a RUN over ``rows x cols`` output pixels, each pixel's ``MAC`` micro-op walks the taps of
a three-level loop nest (level 0 outermost) and reads, per tap, one activation (broadcast to the
lanes) and one column of weights. The generator produces those (activation, weight) addresses
with adders only: every loop level keeps a running pointer that is reloaded from the level above
when it wraps. Where the innermost level walks consecutive bytes (``act_stride`` 1, as input
channels do), it steps up to ``config.bundle_width`` taps of one word at a time, so that the sparse
core downstream can spend cycles on the non-zero ones only.
"""

import operator
from functools import reduce

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from .arch import isa

__all__ = ["LEVELS", "agen_command_layout", "agen_step_layout", "AddressGenerator"]

LEVELS = isa.LOOP_LEVELS


def _run_field(name):
    return dict(isa.fields_of(isa.RunArgs))[name]


def agen_command_layout(config):
    """One RUN's address pattern, with every address and stride taken modulo its space.

    ``act_base`` is ``act_offset + ACT.base`` and ``wgt_base`` is ``wgt_offset + WGT.base``;
    ``act_stride``/``wgt_stride``/``count`` are indexed by loop level; ``passes`` is the number
    of ``MAC`` micro-ops per pixel (each walks the whole tap nest); ``lanes`` (the RUN's lane
    count) travels with every step, for the counters of multiplies downstream.
    """
    aw, ww = config.act_addr_width, config.wgt_addr_width
    count = dict(isa.fields_of(isa.LoopArgs))["count"]
    return data.StructLayout({
        "rows": _run_field("rows"),
        "cols": _run_field("cols"),
        "lanes": _run_field("lanes"),
        "passes": unsigned(8),
        "act_base": unsigned(aw),
        "act_row": unsigned(aw),
        "act_col": unsigned(aw),
        "act_stride": data.ArrayLayout(unsigned(aw), LEVELS),
        "wgt_base": unsigned(ww),
        "wgt_stride": data.ArrayLayout(unsigned(ww), LEVELS),
        "count": data.ArrayLayout(count, LEVELS),
    })


def agen_step_layout(config):
    """``n`` consecutive taps of one word: where the first one's activation and weight column
    are, the weight stride from one tap to the next, and the end of a tap nest.

    Tap ``j < n`` reads the activation at ``act_addr + j`` and the weights at ``wgt_addr +
    j * wgt_stride``. ``null`` marks the single step of an empty tap nest (a loop count of 0,
    ``n = 1``): it stands for "no multiply" and carries an activation of zero. ``reuse`` marks
    a non-null step in the same word as the RUN's previous non-null step (the activation
    fetch answers it from the word it read last, without a crossbar read).
    """
    return data.StructLayout({
        "act_addr": unsigned(config.act_addr_width),
        "wgt_addr": unsigned(config.wgt_addr_width),
        "wgt_stride": unsigned(config.wgt_addr_width),
        "n": range(1, config.bundle_width + 1),
        "last": 1,
        "null": 1,
        "reuse": 1,
        "lanes": _run_field("lanes"),
    })


class AddressGenerator(wiring.Component):
    """Turns a RUN's address pattern into the stream of its taps' addresses.

    Contract: for each command accepted on ``cmd`` (only while idle), ``o`` carries, in order,
    for ``r < rows``, ``c < cols``, each of the ``passes`` MAC passes, and each tap
    ``(i0, i1, i2)`` of the nest in row-major order::

        act_addr = act_base + r*act_row + c*act_col + sum(i[k] * act_stride[k])
        wgt_addr = wgt_base + sum(i[k] * wgt_stride[k])

    (modulo the address width), ``last`` set on the final tap of each pass, and the command's
    ``lanes``. Taps go in steps (see :func:`agen_step_layout`): when ``act_stride[2]`` is 1, a
    step holds ``n = min(bundle_width, count[2] - i2, bytes left in the word of act_addr)``
    taps, with ``wgt_stride = wgt_stride[2]``; otherwise one tap. A nest with a zero count
    yields one step per pass with ``null = last = 1``. ``rows``, ``cols`` or ``passes`` of 0
    yield nothing. One step per cycle while ``o`` is ready; ``busy`` is high from the command
    until its final step is transferred.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    cmd : In(stream.Signature(agen_command_layout(config)))
    o : Out(stream.Signature(agen_step_layout(config)))
    busy : Out(1)
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "cmd": In(stream.Signature(agen_command_layout(config))),
            "o": Out(stream.Signature(agen_step_layout(config))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nest = _Nest(self._config)
        cmd, act, wgt, wraps = nest.cmd, nest.act, nest.wgt, nest.wraps
        # The word of the RUN's last non-null step, for ``reuse``.
        word = act[2][nest.byte_bits:]
        seen = Signal()
        seen_word = Signal.like(word)
        m.d.comb += [
            self.o.payload.act_addr.eq(act[-1]),
            self.o.payload.wgt_addr.eq(wgt[-1]),
            self.o.payload.wgt_stride.eq(cmd.wgt_stride[2]),
            self.o.payload.n.eq(nest.n),
            self.o.payload.last.eq(wraps[0] & wraps[1] & wraps[2]),
            self.o.payload.null.eq(nest.null),
            self.o.payload.reuse.eq(~nest.null & seen & (word == seen_word)),
            self.o.payload.lanes.eq(cmd.lanes),
        ]
        with m.If(self.o.valid & self.o.ready & ~nest.null):
            m.d.sync += [seen.eq(1), seen_word.eq(word)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    new = self.cmd.payload
                    m.d.sync += [seen.eq(0), nest.start(new)]
                    with m.If((new.rows != 0) & (new.cols != 0) & (new.passes != 0)):
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.o.valid.eq(1), self.busy.eq(1)]
                with m.If(self.o.ready):
                    self._advance(m, nest)
        return m

    @staticmethod
    def _advance(m, nest):
        """The step after the current one: the innermost level that does not wrap steps;
        the ones inside it restart from its new pointer. Leaves the FSM after the last."""
        cmd, act, wgt, wraps, idx, left, n = (nest.cmd, nest.act, nest.wgt, nest.wraps,
                                              nest.idx, nest.left, nest.n)
        with m.If(~wraps[2]):
            low, taps = nest.step_taps()
            m.d.comb += low
            m.d.sync += [left.eq(left - n),
                         act[2].eq(act[2] + Mux(nest.bundled, n, cmd.act_stride[2])),
                         wgt[2].eq(wgt[2] + Array(nest.steps)[n - 1]), taps]
        for k in (1, 0):
            with m.Elif(~wraps[k]):
                a_next = Signal.like(act[k], name=f"act{k}_next")
                w_next = wgt[k] + cmd.wgt_stride[k]
                m.d.comb += a_next.eq(act[k] + cmd.act_stride[k])
                m.d.sync += [idx[k].eq(idx[k] + 1), left.eq(cmd.count[2]),
                             wraps[k].eq(idx[k] + 1 >= nest.final[k]),
                             nest.count_taps(cmd.count[2],
                                             nest.byte(act[k], cmd.act_stride[k]))]
                m.d.sync += [i.eq(0) for i in idx[k + 1:]]
                m.d.sync += [wraps[j].eq(nest.final[j] == 0) for j in range(k + 1, LEVELS - 1)]
                m.d.sync += [a.eq(a_next) for a in act[k:]]
                m.d.sync += [w.eq(w_next) for w in wgt[k:]]
        p, c, r = nest.p, nest.c, nest.r
        with m.Elif(~nest.last_pass):
            m.d.sync += [p.eq(p + 1), nest.last_pass.eq(p + 2 >= cmd.passes),
                         nest.restart(nest.pix, nest.byte(nest.pix))]
        with m.Elif(~nest.last_col):
            pix_next = Signal.like(nest.pix)
            m.d.comb += pix_next.eq(nest.pix + cmd.act_col)
            m.d.sync += [p.eq(0), nest.last_pass.eq(cmd.passes <= 1), c.eq(c + 1),
                         nest.last_col.eq(c + 2 >= cmd.cols), nest.pix.eq(pix_next),
                         nest.restart(pix_next, nest.byte(nest.pix, cmd.act_col))]
        with m.Elif(~nest.last_row):
            row_next = Signal.like(nest.row)
            m.d.comb += row_next.eq(nest.row + cmd.act_row)
            m.d.sync += [p.eq(0), nest.last_pass.eq(cmd.passes <= 1), c.eq(0),
                         nest.last_col.eq(cmd.cols <= 1), r.eq(r + 1),
                         nest.last_row.eq(r + 2 >= cmd.rows), nest.row.eq(row_next),
                         nest.pix.eq(row_next),
                         nest.restart(row_next, nest.byte(nest.row, cmd.act_row))]
        with m.Else():
            m.next = "IDLE"


def _any(terms):
    """The OR of ``terms`` (0 if there are none)."""
    terms = list(terms)
    return Cat(terms).any() if terms else C(0, 1)


def _below(value, bound):
    """``value < bound`` for a constant ``bound``, as equalities."""
    return _any(value == v for v in range(min(bound, 1 << len(value))))


class _Nest:
    """The address generator's registers, and the statements that load them.

    Loop indices of the outer levels (the innermost counts its taps ``left``), and the running
    pointers of each level: ``act[k]`` is the address of tap (i0..ik, 0..) of the current
    pixel, so ``act[LEVELS-1]`` is the current tap's; ``row``/``pix`` point at the current
    row's and pixel's first tap. Every decision of the current step is a flip-flop, computed
    with the step before (a chain of comparisons and muxes on the counters was the critical
    path): the step's tap count ``n``, whether each level wraps after it (``wraps``), whether
    the pass, column and row are the last ones.
    """

    def __init__(self, config):
        aw, ww = config.act_addr_width, config.wgt_addr_width
        self.width = width = config.bundle_width
        self.byte_bits = exact_log2(config.axi_bytes)
        # The taps left are compared with the step's cap (at most ``width``) on their low
        # bits only, with a flag for "more than 2 * width": no 16-bit comparison on the path.
        self.low_bits = ceil_log2(2 * width + 1)
        self.cmd = cmd = Signal(agen_command_layout(config))
        self.null = Signal()
        self.bundled = Signal()           # not null, and the innermost level walks bytes
        self.r, self.c, self.p = (Signal.like(cmd.rows, name="r"), Signal.like(cmd.cols, name="c"),
                                  Signal.like(cmd.passes, name="p"))
        self.idx = [Signal.like(cmd.count[k], name=f"i{k}") for k in range(LEVELS - 1)]
        self.final = [Signal.like(cmd.count[k], name=f"final{k}") for k in range(LEVELS - 1)]
        self.left = Signal.like(cmd.count[2], name="left")
        self.act = [Signal(aw, name=f"act{k}") for k in range(LEVELS)]
        self.wgt = [Signal(ww, name=f"wgt{k}") for k in range(LEVELS)]
        self.row, self.pix = Signal(aw, name="row"), Signal(aw, name="pix")
        # The weight steps of 1 .. width taps, taken with the command.
        self.steps = [Signal(ww, name=f"wgt_step{j}") for j in range(1, width + 1)]
        self.n = Signal(range(1, width + 1), name="n")
        self.wraps = [Signal(name=f"wrap{k}") for k in range(LEVELS)]
        self.last_pass, self.last_col, self.last_row = (
            Signal(name="last_pass"), Signal(name="last_col"), Signal(name="last_row"))

    def byte(self, address, offset=None):
        """The byte in its word of ``address + offset``, from the low bits alone (the step's
        tap count needs no carry from the whole address)."""
        if not self.byte_bits:
            return C(0, 1)
        low = address[:self.byte_bits]
        return low if offset is None else (low + offset[:self.byte_bits])[:self.byte_bits]

    # The tap count and the wrap of the next step are decided by comparisons of a few bits
    # with constants, written as equalities: Yosys maps an ordered comparison to a carry chain,
    # a routed hop each, and these were a chain of them.

    def taps(self, below, low, byte_is, bundled=None, null=None):
        """``n`` and ``wraps[2]`` for a step: up to the bundle width, the end of the innermost
        level or the end of the word, whichever comes first, when the innermost level walks
        bytes. ``below(c)`` tells whether fewer than ``c`` taps are left (``c <= width + 1``),
        ``low`` is their number when that is so, ``byte_is(b)`` whether the step is at byte
        ``b`` of its word."""
        bundled = self.bundled if bundled is None else bundled
        null = self.null if null is None else null
        width, word = self.width, 1 << self.byte_bits
        # The cap is c < width at byte word - c of the word, else width.
        near = [byte_is(word - c) for c in range(1, width)]
        caps = near + [~_any(near)]
        cap = reduce(operator.or_, (Mux(is_cap, c, 0) for c, is_cap in enumerate(caps, 1)))
        fewer = _any(is_cap & below(c) for c, is_cap in enumerate(caps, 1))
        within = _any(is_cap & below(c + 1) for c, is_cap in enumerate(caps, 1))
        n_next = Mux(bundled, Mux(fewer, low, cap), 1)
        wrap = null | Mux(bundled, within, below(2))
        return [self.n.eq(n_next), self.wraps[2].eq(wrap)]

    def count_taps(self, count, byte, bundled=None, null=None):
        """:meth:`taps` at the start of the innermost level, ``count`` taps left, at ``byte``
        of the word."""
        small = count[self.low_bits:] == 0
        low = count[:self.low_bits]
        return self.taps(lambda c: small & _below(low, c), low, lambda b: byte == b,
                         bundled, null)

    def step_taps(self):
        """:meth:`taps` after a step that leaves taps in the innermost level: ``n`` fewer
        taps, ``n`` bytes further (such a step is bundled or one tap)."""
        left, n, width = self.left[:self.low_bits], self.n, self.width
        # Exact while the taps left were few, more than ``2 * width`` otherwise.
        small = self.left[self.low_bits:] == 0
        low = Signal(self.low_bits, name="low_next")
        is_n = [n == j for j in range(1, width + 1)]
        word = 1 << self.byte_bits
        byte = self.act[2][:self.byte_bits]

        def below(c):
            return small & _any(i & _below(left, c + j) for j, i in enumerate(is_n, 1))

        def byte_is(b):
            return _any(i & (byte == (b - j) % word) for j, i in enumerate(is_n, 1))

        return [low.eq(left - n)], self.taps(below, low, byte_is)

    def restart(self, act_start, byte):
        """The pass's first step: the tap nest restarted from ``act_start`` (at ``byte`` of
        its word)."""
        stmts = [i.eq(0) for i in self.idx] + [self.left.eq(self.cmd.count[2])]
        stmts += [a.eq(act_start) for a in self.act]
        stmts += [w.eq(self.cmd.wgt_base) for w in self.wgt]
        stmts += [self.wraps[k].eq(self.null | (f == 0)) for k, f in enumerate(self.final)]
        return stmts + self.count_taps(self.cmd.count[2], byte)

    def start(self, new):
        """A command's first step."""
        null = (new.count[0] == 0) | (new.count[1] == 0) | (new.count[2] == 0)
        bundled = ~null & (new.act_stride[2] == 1)
        return [
            self.cmd.eq(new), self.null.eq(null), self.bundled.eq(bundled),
            self.r.eq(0), self.c.eq(0), self.p.eq(0),
            self.row.eq(new.act_base), self.pix.eq(new.act_base),
            [i.eq(0) for i in self.idx], self.left.eq(new.count[2]),
            [f.eq(new.count[k] - 1) for k, f in enumerate(self.final)],
            [step.eq(new.wgt_stride[2] * j) for j, step in enumerate(self.steps, 1)],
            [a.eq(new.act_base) for a in self.act],
            [w.eq(new.wgt_base) for w in self.wgt],
            [wrap.eq(null | (new.count[k] <= 1)) for k, wrap in enumerate(self.wraps[:-1])],
            self.count_taps(new.count[2], self.byte(new.act_base), bundled, null),
            self.last_pass.eq(new.passes <= 1), self.last_col.eq(new.cols <= 1),
            self.last_row.eq(new.rows <= 1),
        ]
