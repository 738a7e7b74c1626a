"""Access engine address generator: the MAC loop nest of docs/isa.md as an address stream.

For a RUN over ``rows x cols`` output pixels, each pixel's ``MAC`` micro-op walks the taps of
a three-level loop nest (level 0 outermost) and reads, per tap, one activation (broadcast to the
lanes) and one column of weights. The generator produces those (activation, weight) addresses
with adders only: every loop level keeps a running pointer that is reloaded from the level above
when it wraps. Where the innermost level walks consecutive bytes (``act_stride`` 1, as input
channels do), it steps up to ``config.bundle_width`` taps of one word at a time, so that the sparse
core downstream can spend cycles on the non-zero ones only.
"""

from amaranth.hdl import Array, Module, Mux, Signal, unsigned
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
        config = self._config
        aw, ww = config.act_addr_width, config.wgt_addr_width
        width = config.bundle_width
        byte_bits = exact_log2(config.axi_bytes)
        cmd = Signal(agen_command_layout(config))
        null = Signal()
        bundled = Signal()                # not null, and the innermost level walks bytes
        # Loop indices of the outer levels (the innermost counts its taps left), and the
        # running pointers of each level: ``act[k]`` is the address of tap (i0..ik, 0..) of
        # the current pixel, so ``act[LEVELS-1]`` is the current tap's. ``row``/``pix`` point
        # at the current row's and pixel's first tap.
        r = Signal.like(cmd.rows)
        c = Signal.like(cmd.cols)
        p = Signal.like(cmd.passes)
        idx = [Signal.like(cmd.count[k], name=f"i{k}") for k in range(LEVELS - 1)]
        final = [Signal.like(cmd.count[k], name=f"final{k}") for k in range(LEVELS - 1)]
        left = Signal.like(cmd.count[2])
        act = [Signal(aw, name=f"act{k}") for k in range(LEVELS)]
        wgt = [Signal(ww, name=f"wgt{k}") for k in range(LEVELS)]
        row = Signal(aw)
        pix = Signal(aw)
        # The weight steps of 1 .. width taps, taken with the command.
        steps = [Signal(ww, name=f"wgt_step{j}") for j in range(1, width + 1)]

        # Every decision of the current step is a flip-flop, computed with the step before
        # (a chain of comparisons and muxes on the counters was the critical path): the
        # step's tap count ``n``, whether each level wraps after it, whether the pass, column
        # and row are the last ones.
        n = Signal(range(1, width + 1))
        wraps = [Signal(name=f"wrap{k}") for k in range(LEVELS)]
        last_pass, last_col, last_row = Signal(), Signal(), Signal()
        # The word of the RUN's last non-null step, for ``reuse``.
        word = act[2][byte_bits:]
        seen = Signal()
        seen_word = Signal.like(word)

        # The taps left are compared with the step's cap (at most ``width``) on their low bits
        # only, with a flag for "more than 2 * width": no 16-bit comparison on the path.
        low_bits = ceil_log2(2 * width + 1)

        def taps(small, low, act_next, bundled_next=bundled, null_next=null):
            """``n`` and ``wraps[2]`` for the step at ``act_next`` with ``low`` taps left if
            ``small``, more than ``2 * width`` if not: up to the bundle width, the end of the
            innermost level or the end of the word, whichever comes first, when the innermost
            level walks bytes."""
            in_word = (1 << byte_bits) - (act_next[:byte_bits] if byte_bits else 0)
            cap = Mux(in_word < width, in_word, width)
            n_next = Mux(bundled_next, Mux(small & (low < cap), low, cap), 1)
            wrap = null_next | (small & (low <= Mux(bundled_next, cap, 1)))
            return [n.eq(n_next), wraps[2].eq(wrap)]

        def count_taps(count, act_next, *flags):
            """:func:`taps` at the start of the innermost level, ``count`` taps left."""
            return taps(count[low_bits:] == 0, count[:low_bits], act_next, *flags)

        def restart_taps(act_start):
            """The pass's first step, the tap nest restarted from ``act_start``."""
            stmts = [i.eq(0) for i in idx] + [left.eq(cmd.count[2])]
            stmts += [a.eq(act_start) for a in act]
            stmts += [w.eq(cmd.wgt_base) for w in wgt]
            stmts += [wraps[k].eq(null | (f == 0)) for k, f in enumerate(final)]
            return stmts + count_taps(cmd.count[2], act_start)

        m.d.comb += [
            self.o.payload.act_addr.eq(act[-1]),
            self.o.payload.wgt_addr.eq(wgt[-1]),
            self.o.payload.wgt_stride.eq(cmd.wgt_stride[2]),
            self.o.payload.n.eq(n),
            self.o.payload.last.eq(wraps[0] & wraps[1] & wraps[2]),
            self.o.payload.null.eq(null),
            self.o.payload.reuse.eq(~null & seen & (word == seen_word)),
            self.o.payload.lanes.eq(cmd.lanes),
        ]
        with m.If(self.o.valid & self.o.ready & ~null):
            m.d.sync += [seen.eq(1), seen_word.eq(word)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    new = self.cmd.payload
                    new_null = (new.count[0] == 0) | (new.count[1] == 0) | (new.count[2] == 0)
                    new_bundled = ~new_null & (new.act_stride[2] == 1)
                    m.d.sync += [
                        cmd.eq(new), null.eq(new_null), bundled.eq(new_bundled), seen.eq(0),
                        r.eq(0), c.eq(0), p.eq(0),
                        row.eq(new.act_base), pix.eq(new.act_base),
                        [i.eq(0) for i in idx], left.eq(new.count[2]),
                        [f.eq(new.count[k] - 1) for k, f in enumerate(final)],
                        [step.eq(new.wgt_stride[2] * j) for j, step in enumerate(steps, 1)],
                        [a.eq(new.act_base) for a in act],
                        [w.eq(new.wgt_base) for w in wgt],
                        [wrap.eq(new_null | (new.count[k] <= 1)) for k, wrap in
                         enumerate(wraps[:-1])],
                        count_taps(new.count[2], new.act_base, new_bundled, new_null),
                        last_pass.eq(new.passes <= 1), last_col.eq(new.cols <= 1),
                        last_row.eq(new.rows <= 1),
                    ]
                    with m.If((new.rows != 0) & (new.cols != 0) & (new.passes != 0)):
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.o.valid.eq(1), self.busy.eq(1)]
                with m.If(self.o.ready):
                    # The innermost level that does not wrap steps; the ones inside it restart
                    # from its new pointer.
                    with m.If(~wraps[2]):
                        # Taps left after this step: exact in the low bits while they were
                        # few; more than 2 * width otherwise.
                        low_next = Signal(low_bits)
                        act_next = Signal.like(act[2])
                        m.d.comb += [low_next.eq(left[:low_bits] - n),
                                     act_next.eq(act[2] + Mux(bundled, n, cmd.act_stride[2]))]
                        m.d.sync += [left.eq(left - n), act[2].eq(act_next),
                                     wgt[2].eq(wgt[2] + Array(steps)[n - 1]),
                                     taps(left[low_bits:] == 0, low_next, act_next)]
                    for k in (1, 0):
                        with m.Elif(~wraps[k]):
                            a_next = Signal(aw, name=f"act{k}_next")
                            w_next = wgt[k] + cmd.wgt_stride[k]
                            m.d.comb += a_next.eq(act[k] + cmd.act_stride[k])
                            m.d.sync += [idx[k].eq(idx[k] + 1), left.eq(cmd.count[2]),
                                         wraps[k].eq(idx[k] + 1 >= final[k]),
                                         count_taps(cmd.count[2], a_next)]
                            m.d.sync += [i.eq(0) for i in idx[k + 1:]]
                            m.d.sync += [wraps[j].eq(final[j] == 0)
                                         for j in range(k + 1, LEVELS - 1)]
                            m.d.sync += [a.eq(a_next) for a in act[k:]]
                            m.d.sync += [w.eq(w_next) for w in wgt[k:]]
                    with m.Elif(~last_pass):
                        m.d.sync += [p.eq(p + 1), last_pass.eq(p + 2 >= cmd.passes),
                                     restart_taps(pix)]
                    with m.Elif(~last_col):
                        pix_next = Signal(aw)
                        m.d.comb += pix_next.eq(pix + cmd.act_col)
                        m.d.sync += [p.eq(0), last_pass.eq(cmd.passes <= 1), c.eq(c + 1),
                                     last_col.eq(c + 2 >= cmd.cols), pix.eq(pix_next),
                                     restart_taps(pix_next)]
                    with m.Elif(~last_row):
                        row_next = Signal(aw)
                        m.d.comb += row_next.eq(row + cmd.act_row)
                        m.d.sync += [p.eq(0), last_pass.eq(cmd.passes <= 1), c.eq(0),
                                     last_col.eq(cmd.cols <= 1), r.eq(r + 1),
                                     last_row.eq(r + 2 >= cmd.rows), row.eq(row_next),
                                     pix.eq(row_next), restart_taps(row_next)]
                    with m.Else():
                        m.next = "IDLE"
        return m
