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
from amaranth.utils import exact_log2

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
    ``n = 1``): it stands for "no multiply" and carries an activation of zero.
    """
    return data.StructLayout({
        "act_addr": unsigned(config.act_addr_width),
        "wgt_addr": unsigned(config.wgt_addr_width),
        "wgt_stride": unsigned(config.wgt_addr_width),
        "n": range(1, config.bundle_width + 1),
        "last": 1,
        "null": 1,
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
        aw, ww = self._config.act_addr_width, self._config.wgt_addr_width
        cmd = Signal(agen_command_layout(self._config))
        null = Signal()
        # Loop indices of the outer levels (the innermost counts its taps left, below), and the
        # running pointers of each level: ``act[k]`` is
        # the address of tap (i0..ik, 0..) of the current pixel, so ``act[LEVELS-1]`` is the
        # current tap's. ``row``/``pix`` point at the current row's and pixel's first tap.
        r = Signal.like(cmd.rows)
        c = Signal.like(cmd.cols)
        p = Signal.like(cmd.passes)
        idx = [Signal.like(cmd.count[k], name=f"i{k}") for k in range(LEVELS - 1)]
        act = [Signal(aw, name=f"act{k}") for k in range(LEVELS)]
        wgt = [Signal(ww, name=f"wgt{k}") for k in range(LEVELS)]
        row = Signal(aw)
        pix = Signal(aw)
        # The taps of this step: up to the bundle width, the end of the innermost level or
        # the end of the word, whichever comes first, when the innermost level walks bytes.
        width = self._config.bundle_width
        byte_bits = exact_log2(self._config.axi_bytes)
        n = Signal(range(1, width + 1))
        in_word = (1 << byte_bits) - (act[2][:byte_bits] if byte_bits else 0)
        # The innermost level's taps still to walk, counted down (a subtraction from the count
        # was on the critical path), and the weight steps of 1 .. width taps, taken with the
        # command (no multiplier between the count and the weight pointer).
        left = Signal.like(cmd.count[2])
        steps = [Signal(ww, name=f"wgt_step{j}") for j in range(1, width + 1)]
        fits = Mux(left < width, left, width)
        m.d.comb += n.eq(Mux(null | (cmd.act_stride[2] != 1), 1,
                             Mux(in_word < fits, in_word, fits)))
        # Each outer level's last index (count - 1), taken with the command.
        final = [Signal.like(cmd.count[k], name=f"final{k}") for k in range(LEVELS - 1)]
        # An empty nest is walked as a single null tap.
        wraps = [Signal(name=f"wrap{k}") for k in range(LEVELS)]
        m.d.comb += wraps[2].eq(null | (left <= n))
        for k in range(LEVELS - 1):
            m.d.comb += wraps[k].eq(null | (idx[k] >= final[k]))
        last = Signal()
        m.d.comb += last.eq(wraps[0] & wraps[1] & wraps[2])

        def restart_taps(act_start):
            stmts = [i.eq(0) for i in idx] + [left.eq(cmd.count[2])]
            stmts += [a.eq(act_start) for a in act]
            stmts += [w.eq(cmd.wgt_base) for w in wgt]
            return stmts

        m.d.comb += [
            self.o.payload.act_addr.eq(act[-1]),
            self.o.payload.wgt_addr.eq(wgt[-1]),
            self.o.payload.wgt_stride.eq(cmd.wgt_stride[2]),
            self.o.payload.n.eq(n),
            self.o.payload.last.eq(last),
            self.o.payload.null.eq(null),
            self.o.payload.lanes.eq(cmd.lanes),
        ]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    c_ = self.cmd.payload
                    m.d.sync += [
                        cmd.eq(c_),
                        null.eq((c_.count[0] == 0) | (c_.count[1] == 0) | (c_.count[2] == 0)),
                        r.eq(0), c.eq(0), p.eq(0),
                        row.eq(c_.act_base), pix.eq(c_.act_base),
                        [i.eq(0) for i in idx], left.eq(c_.count[2]),
                        [f.eq(c_.count[k] - 1) for k, f in enumerate(final)],
                        [step.eq(c_.wgt_stride[2] * j) for j, step in enumerate(steps, 1)],
                        [a.eq(c_.act_base) for a in act],
                        [w.eq(c_.wgt_base) for w in wgt],
                    ]
                    with m.If((c_.rows != 0) & (c_.cols != 0) & (c_.passes != 0)):
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.o.valid.eq(1), self.busy.eq(1)]
                with m.If(self.o.ready):
                    # The innermost level that does not wrap steps; the ones inside it restart
                    # from its new pointer.
                    with m.If(~wraps[2]):
                        m.d.sync += [left.eq(left - n),
                                     act[2].eq(act[2] + Mux(n == 1, cmd.act_stride[2], n)),
                                     wgt[2].eq(wgt[2] + Array(steps)[n - 1])]
                    for k in (1, 0):
                        with m.Elif(~wraps[k]):
                            a_next = act[k] + cmd.act_stride[k]
                            w_next = wgt[k] + cmd.wgt_stride[k]
                            m.d.sync += [idx[k].eq(idx[k] + 1), left.eq(cmd.count[2])]
                            m.d.sync += [i.eq(0) for i in idx[k + 1:]]
                            m.d.sync += [a.eq(a_next) for a in act[k:]]
                            m.d.sync += [w.eq(w_next) for w in wgt[k:]]
                    with m.Elif(p + 1 < cmd.passes):
                        m.d.sync += [p.eq(p + 1), restart_taps(pix)]
                    with m.Elif(c + 1 < cmd.cols):
                        pix_next = pix + cmd.act_col
                        m.d.sync += [p.eq(0), c.eq(c + 1), pix.eq(pix_next),
                                     restart_taps(pix_next)]
                    with m.Elif(r + 1 < cmd.rows):
                        row_next = row + cmd.act_row
                        m.d.sync += [p.eq(0), c.eq(0), r.eq(r + 1), row.eq(row_next),
                                     pix.eq(row_next), restart_taps(row_next)]
                    with m.Else():
                        m.next = "IDLE"
        return m
