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
    yield nothing. The first step is on ``o`` two cycles after the command is taken (a cycle
    loads the nest), then one step per cycle while ``o`` is ready; ``busy`` is high from the
    command until its final step is transferred; ``cmd`` is ready again the cycle after.

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
        m.d.comb += nest.look_up()
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

        # Flip-flops, not a state machine's decode: ``running`` is ``o.valid`` and enables
        # every register of the step.
        loading, running = nest.loading, nest.running
        m.d.comb += [self.cmd.ready.eq(~loading & ~running), self.o.valid.eq(running),
                     self.busy.eq(loading | running)]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [seen.eq(0), nest.start(self.cmd.payload)]
        # The load cycle starts the nest as a new row does (the command set ``outer`` so, and
        # the row before the first), from the registered command and its table of first
        # steps: a cycle that keeps the table's comparisons off the first step.
        with m.If(loading):
            m.d.sync += [loading.eq(0), running.eq(nest.nonempty)]
        self._advance(m, nest, self.o.valid & self.o.ready)
        return m

    @staticmethod
    def _advance(m, nest, go):
        """The step after the current one, when ``go`` (``o`` takes this one) or while
        loading: the innermost level that does not wrap steps; the ones inside it restart
        from its new pointer. Stops after the last step.

        Which of these happens is one-hot from flip-flops (``wraps[2]`` and ``outer``), and
        the levels that restart take the same values whichever branch restarts them: each
        pointer's next value is one selection among the branches' sums."""
        cmd, act, wgt, wraps, idx = nest.cmd, nest.act, nest.wgt, nest.wraps, nest.idx
        p, c, r, outer, loading = nest.p, nest.c, nest.r, nest.outer, nest.loading
        step = go & ~wraps[2]                       # the innermost level steps
        # The branch ``outer`` names (the load cycle's is a new row).
        restart = (go & wraps[2]) | loading
        # The branch, from flip-flops: the step of level 1 or 0, a new pass, column, row.
        level1, level0, pixel = outer[0], outer[1], outer[2] | outer[3] | outer[4]
        a_next = [Signal.like(act[k], name=f"act{k}_next") for k in range(LEVELS - 1)]
        pix_next, row_next = Signal.like(nest.pix), Signal.like(nest.row)
        act_start, wgt_start = Signal.like(act[0]), Signal.like(wgt[0])
        m.d.comb += [
            [a.eq(act[k] + cmd.act_stride[k]) for k, a in enumerate(a_next)],
            pix_next.eq(nest.pix + cmd.act_col), row_next.eq(nest.row + cmd.act_row),
            # Where the restarted levels start.
            act_start.eq(_select(outer, [a_next[1], a_next[0], nest.pix, pix_next,
                                         row_next])),
            wgt_start.eq(_select([level1, level0, pixel], [wgt[1] + cmd.wgt_stride[1],
                                                           wgt[0] + cmd.wgt_stride[0],
                                                           cmd.wgt_base])),
        ]
        # The innermost level: a step, or a restart from the table of first steps.
        with m.If(step):
            m.d.sync += [act[2].eq(act[2] + Mux(nest.bundled, nest.n, cmd.act_stride[2])),
                         wgt[2].eq(wgt[2] + Array(nest.steps)[nest.n - 1]), nest.step_taps()]
        with m.Elif(restart):
            m.d.sync += [act[2].eq(act_start), wgt[2].eq(wgt_start), nest.first_taps()]
        def restart_level(k, steps):
            # Level k takes the restart's pointers; its count steps (``steps``) or restarts.
            m.d.sync += [act[k].eq(act_start), wgt[k].eq(wgt_start),
                         nest.next_byte[k].eq(nest.byte(act_start, cmd.act_stride[k]))]
            with m.If(steps):
                m.d.sync += [idx[k].eq(idx[k] - 1), wraps[k].eq(idx[k] == 2)]
            with m.Else():
                m.d.sync += [idx[k].eq(cmd.count[k]), wraps[k].eq(nest.wraps_restart[k])]

        # Level 1 restarts with the innermost; it steps when ``outer`` says so. Level 0 keeps
        # its place while level 1 steps.
        with m.If(restart):
            restart_level(1, level1)
            with m.If(~level1):
                restart_level(0, level0)
        # Passes, columns and rows.
        with m.If(restart & outer[2]):
            m.d.sync += [p.eq(p - 1), nest.last_pass.eq(p == 2)]
        with m.If(restart & (outer[3] | outer[4])):
            m.d.sync += [p.eq(cmd.passes), nest.last_pass.eq(nest.one_pass),
                         nest.set_pix(Mux(outer[3], pix_next, row_next), cmd)]
        with m.If(restart & outer[3]):
            m.d.sync += [c.eq(c - 1), nest.last_col.eq(c == 2)]
        with m.If(restart & outer[4]):
            m.d.sync += [c.eq(cmd.cols), nest.last_col.eq(nest.one_col), r.eq(r - 1),
                         nest.last_row.eq(r == 1), nest.set_row(row_next, cmd)]
        # The branch after the next wrap: each branch's flags are known (restarted levels
        # take their registered restart values), so ``outer`` follows from registers.
        w0, w1 = nest.wraps_restart
        following_flags = [
            [idx[1] == 2, wraps[0], nest.last_pass, nest.last_col, nest.last_row],
            [w1, idx[0] == 2, nest.last_pass, nest.last_col, nest.last_row],
            [w1, w0, p == 2, nest.last_col, nest.last_row],
            [w1, w0, nest.one_pass, c == 2, nest.last_row],
            [w1, w0, nest.one_pass, nest.one_col, r == 1],
        ]
        with m.If(restart):
            m.d.sync += outer.eq(reduce(operator.or_, [
                Mux(outer[b], _first_clear(flags), 0)
                for b, flags in enumerate(following_flags)]))
        with m.If(restart & outer[-1]):
            m.d.sync += nest.running.eq(0)


def _select(one_hot, values):
    """The value of ``values`` whose bit of ``one_hot`` is set (0 if none): an AND-OR."""
    return reduce(operator.or_, (Mux(bit, value, 0) for bit, value in zip(one_hot, values)))


def _first_clear(flags):
    """One-hot: the first of ``flags`` that is clear, or (the last bit) none."""
    bits, earlier = [], C(1, 1)
    for flag in flags:
        bits.append(earlier & ~flag)
        earlier = earlier & flag
    return Cat(bits + [earlier])


def _any(terms):
    """The OR of ``terms`` (0 if there are none)."""
    terms = list(terms)
    return Cat(terms).any() if terms else C(0, 1)


def _below(value, bound):
    """``value < bound`` for a constant ``bound``, as equalities."""
    return _any(value == v for v in range(min(bound, 1 << len(value))))


class _Nest:
    """The address generator's registers, and the statements that load them.

    The taps of the outer levels from the current one on (``idx``, counted down), and the
    running pointers of each level: ``act[k]`` is the address of tap (i0..ik, 0..) of the
    current pixel, so ``act[LEVELS-1]`` is the current tap's; ``row``/``pix`` point at the
    current row's and pixel's first tap. Every decision of the current step is a flip-flop,
    computed with the step before (a chain of comparisons and muxes on the counters was the
    critical path): the step's tap count ``n``, whether each level wraps after it
    (``wraps``), whether the pass, column and row are the last ones.
    ``left`` counts the innermost level's taps from the current step on: it restarts from
    the command's count, and a step takes ``n`` from it (one subtraction of a small number).

    A step's taps are capped by the bundle width and the end of the word: a step at byte
    ``word - c`` of its word (``c < width``) takes at most ``c`` taps, others ``width``. The
    innermost level's first step has one of these ``width`` caps, so its ``n``, its wrap and
    the low bits of what it leaves are tabled per cap when the command is taken (``first``):
    starting the level is a look-up by the start's byte.
    """

    def __init__(self, config):
        aw, ww = config.act_addr_width, config.wgt_addr_width
        self.width = width = config.bundle_width
        self.byte_bits = exact_log2(config.axi_bytes)
        # The taps left are compared with a cap on their low bits only, with a flag for "more
        # than 2 * width".
        self.low_bits = ceil_log2(2 * width + 1)
        self.cmd = cmd = Signal(agen_command_layout(config))
        self.null = Signal()
        self.bundled = Signal()           # not null, and the innermost level walks bytes
        # Rows still to come after the current one; columns, passes and outer-level taps from
        # the current one on (they restart from the command's counts). Counted down: a
        # flag's next value is then an equality, not a sum and a comparison.
        self.r, self.c, self.p = (Signal.like(cmd.rows, name="r"), Signal.like(cmd.cols, name="c"),
                                  Signal.like(cmd.passes, name="p"))
        self.idx = [Signal.like(cmd.count[k], name=f"i{k}") for k in range(LEVELS - 1)]
        self.left = Signal.like(cmd.count[2], name="left")
        # The low bits of what is left after the current step (``left - n``), kept beside
        # ``left`` so that the next step's decision waits for no subtraction.
        self.rem_low = Signal(self.low_bits, name="rem_low")
        self.act = [Signal(aw, name=f"act{k}") for k in range(LEVELS)]
        self.wgt = [Signal(ww, name=f"wgt{k}") for k in range(LEVELS)]
        self.row, self.pix = Signal(aw, name="row"), Signal(aw, name="pix")
        # The weight steps of 1 .. width taps, taken with the command.
        self.steps = [Signal(ww, name=f"wgt_step{j}") for j in range(1, width + 1)]
        self.n = Signal(range(1, width + 1), name="n")
        self.wraps = [Signal(name=f"wrap{k}") for k in range(LEVELS)]
        self.last_pass, self.last_col, self.last_row = (
            Signal(name="last_pass"), Signal(name="last_col"), Signal(name="last_row"))
        # The byte in its word where the innermost level restarts next after a step of level k
        # (``act[k] + act_stride[k]``), a column (``pix + act_col``) or a row (``row +
        # act_row``): registers set with the pointers, so that a restart's look-up does not
        # wait for an adder.
        self.next_byte = {key: Signal(max(1, self.byte_bits), name=f"next_byte_{key}")
                          for key in (0, 1, "col", "row")}
        # Which branch follows when the innermost level wraps (one-hot: the step of level 1, of
        # level 0, the next pass, column, row, the end): the first clear of the flags that
        # branch leaves (:meth:`AddressGenerator._advance`), a flip-flop.
        self.outer = Signal(LEVELS + 3, name="outer")
        # What restarts set, taken with the command: each outer level's wrap (its count is
        # 1, or the nest is null), a single pass, a single column.
        self.wraps_restart = [Signal(name=f"wrap{k}_restart") for k in range(LEVELS - 1)]
        self.one_pass, self.one_col = Signal(name="one_pass"), Signal(name="one_col")
        # Bytes to the end of the word at the next step, and the next step's cap (one-hot by
        # cap 1 .. width), if the current one is not the innermost level's last.
        self.ahead = Signal(range(1, (1 << self.byte_bits) + 1), name="ahead")
        self.cap_ahead = Signal(width, name="cap_ahead")
        self.first = [Signal(data.StructLayout({"n": self.n.shape(), "wrap": 1,
                                                "rem_low": self.rem_low.shape()}),
                             name=f"first{c}")
                      for c in range(1, width + 1)]
        # The load cycle, then the steps (``o.valid``); a command that yields steps.
        self.loading, self.running = Signal(name="loading"), Signal(name="running")
        self.nonempty = Signal(name="nonempty")
        # The byte of the next restart, and its row of ``first`` (combinational).
        self.restart_at = Signal(max(1, self.byte_bits), name="restart_byte")
        self.looked_up = Signal.like(self.first[0], name="looked_up")

    def byte(self, address, offset=None):
        """The byte in its word of ``address + offset``, from the low bits alone (the step's
        tap count needs no carry from the whole address)."""
        if not self.byte_bits:
            return C(0, 1)
        low = address[:self.byte_bits]
        return low if offset is None else (low + offset[:self.byte_bits])[:self.byte_bits]

    def set_pix(self, value, cmd):
        """``pix = value``, with the byte of the next column's first tap."""
        return [self.pix.eq(value), self.next_byte["col"].eq(self.byte(value, cmd.act_col))]

    def set_row(self, value, cmd):
        """``row = value``, with the byte of the next row's first tap."""
        return [self.row.eq(value), self.next_byte["row"].eq(self.byte(value, cmd.act_row))]

    def caps(self, byte_is):
        """One-hot, by cap ``c = 1 .. width``: the step is at byte ``word - c`` (``c <
        width``), or elsewhere (``c = width``); ``byte_is(b)`` tells whether it is at ``b``.
        Equalities of a few bits: Yosys maps an ordered comparison to a routed carry chain."""
        word = 1 << self.byte_bits
        near = [byte_is(word - c) for c in range(1, self.width)]
        return near + [~_any(near)]

    def _ahead(self, to_end):
        """``ahead`` and ``cap_ahead`` for the step after one ``to_end`` bytes before the end
        of its word (it takes ``min(to_end, width)`` of them, if it is not the level's last)."""
        word, width = 1 << self.byte_bits, self.width
        ahead = Mux(to_end <= width, word, to_end - width)
        return [self.ahead.eq(ahead),
                self.cap_ahead.eq(Cat([ahead == c for c in range(1, width)] + [ahead >= width]))]

    def tabled(self, count, null, bundled):
        """The first step of the innermost level for each cap (:attr:`first`), from a new
        command's innermost ``count``, ``null`` and ``bundled``."""
        rows = []
        for c in range(1, self.width + 1):
            taken = Mux(bundled, c, 1)
            rows.append({"n": Mux(bundled & (count < c), count, taken),
                         "wrap": null | Mux(bundled, count <= c, count <= 1),
                         "rem_low": count[:self.low_bits] - taken})
        return rows

    def restart_byte(self):
        """The byte in its word where the innermost level starts next, for the branch
        ``outer`` names (the step of level 1 or 0, the next pass, column or row)."""
        restarts = [self.next_byte[1], self.next_byte[0], self.byte(self.pix),
                    self.next_byte["col"], self.next_byte["row"]]
        return _select(self.outer, restarts)

    def first_taps(self):
        """The innermost level's first step, at :meth:`restart_byte` of the word: a look-up
        in ``first``."""
        return [self.n.eq(self.looked_up.n), self.left.eq(self.cmd.count[2]),
                self.wraps[2].eq(self.looked_up.wrap), self.rem_low.eq(self.looked_up.rem_low),
                *self._ahead((1 << self.byte_bits) - self.restart_at)]

    def look_up(self):
        """The combinational statements of :meth:`first_taps`' look-up."""
        caps = self.caps(lambda b: self.restart_at == b)
        return [self.restart_at.eq(self.restart_byte()),
                [self.looked_up[name].eq(reduce(operator.or_, (
                    Mux(is_cap, row[name], 0) for is_cap, row in zip(caps, self.first))))
                 for name in ("n", "wrap", "rem_low")]]

    def step_taps(self):
        """The step after one that leaves taps in the innermost level (``rem``, what is left
        after it, is not 0): at most ``cap_ahead`` taps if bundled, one if not."""
        # ``left`` holds the current step's ``n`` (at most ``width``): where its high bits are
        # 0, ``rem_low`` is all of what is left after the step; elsewhere more than any cap.
        small = self.left[self.low_bits:] == 0
        low = self.rem_low
        caps = list(self.cap_ahead)
        # The last step of the level if ``rem`` is within the cap: then it takes them all.
        within = small & _any(is_cap & _below(low, c + 1) for c, is_cap in enumerate(caps, 1))
        cap = reduce(operator.or_, (Mux(is_cap, c, 0) for c, is_cap in enumerate(caps, 1)))
        taken = Mux(self.bundled, cap, 1)           # the next step's taps, if not the last
        return [self.n.eq(Mux(self.bundled, Mux(within, low, cap), 1)),
                self.wraps[2].eq(Mux(self.bundled, within, small & _below(low, 2))),
                self.left.eq(self.left - self.n), self.rem_low.eq(low - taken),
                *self._ahead(self.ahead)]

    def start(self, new):
        """A command taken: what the load cycle starts the nest from (a new row: ``outer``
        says so), and the table of first steps it looks up."""
        null = (new.count[0] == 0) | (new.count[1] == 0) | (new.count[2] == 0)
        bundled = ~null & (new.act_stride[2] == 1)
        return [
            self.cmd.eq(new), self.null.eq(null), self.bundled.eq(bundled),
            self.loading.eq(1),
            self.nonempty.eq((new.rows != 0) & (new.cols != 0) & (new.passes != 0)),
            self.outer.eq(1 << 4),
            [w.eq(null | (new.count[k] <= 1)) for k, w in enumerate(self.wraps_restart)],
            self.one_pass.eq(new.passes <= 1), self.one_col.eq(new.cols <= 1),
            [[first[name].eq(row[name]) for name in ("n", "wrap", "rem_low")]
             for first, row in zip(self.first, self.tabled(new.count[2], null, bundled))],
            self.r.eq(new.rows), self.set_row(new.act_base - new.act_row, new),
            [step.eq(new.wgt_stride[2] * j) for j, step in enumerate(self.steps, 1)],
        ]
