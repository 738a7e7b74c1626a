"""Post-processing: bias, requantization int32 -> int8, and the activation look-up table.

One ``Post`` serves all the lanes of a group, one lane per cycle: requantization needs a
32 x 16-bit multiplier, and one per group (instead of one per lane) keeps the multipliers for
the MAC lanes. Per docs/isa.md's ``POST``::

    y = sat8((acc * multiplier + (1 << (shift - 1))) >> shift)      # shift 0: no rounding term
    y = LUT[lut][y + 128] if use_lut else y

with ``acc`` already including the bias when ``CLEAR use_bias`` started the pixel. The rounding
is computed without a variable left shift: for ``shift >= 1``,
``(x + 2**(shift-1)) >> shift == ((x >> (shift-1)) + 1) >> 1``, and ``(2*x) >> shift`` is
``x >> (shift-1)`` for ``shift >= 1`` and ``2*x`` for ``shift == 0``, whose ``(2x + 1) >> 1``
is ``x``: one formula for every shift, exact for shifts beyond the product's width too.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arch import isa
from .arch.timing import POST_LATENCY
from .memories import ElementMemory, chunk_layout

__all__ = ["post_input_layout", "Post"]

def post_input_layout(config):
    """One lane's requantization job: its accumulator, its PARAM entry and the POST operands.

    ``bias`` is added to ``acc`` (give 0 when the pixel was cleared without bias).
    """
    return data.StructLayout({
        "acc": signed(config.acc_width),
        "bias": signed(32),
        "multiplier": signed(16),
        "shift": unsigned(8),
        "use_lut": 1,
        "lut": unsigned(8),
    })


class Post(wiring.Component):
    """Pipelined requantizer with an activation look-up table, one value per cycle.

    Contract: for each job accepted on ``i``, ``o`` carries, in order,
    ``y = LUT[lut][r + 128] if use_lut else r`` with
    ``r = sat8(((acc + bias) * multiplier + (1 << (shift - 1) if shift else 0)) >> shift)``,
    computed exactly (no intermediate wraps). A job accepted in cycle ``t`` is on ``o`` from
    cycle ``t + LATENCY`` when ``o`` is not stalled; ``o`` stalling stalls the whole pipeline.
    ``lut`` selects one of ``lut_tables`` tables (taken modulo ``lut_tables``; a power of two).

    The tables are written through ``lut_w`` in DMA chunks (see :mod:`flexigan.hw.memories`),
    entry ``x`` of table ``t`` at byte address ``t * 256 + (x + 128)``; a write in the same
    cycle as a read of the same entry returns the old value.

    Parameters
    ----------
    config : AcceleratorConfig
    lut_tables : int
        Tables of ``isa.LUT_BYTES`` entries; a power of two.

    Attributes
    ----------
    i : In(stream.Signature(post_input_layout(config)))
    o : Out(stream.Signature(signed(8)))
    lut_w : In(stream.Signature(chunk_layout(...), always_ready=True))
    """

    #: Cycles from a job's acceptance on ``i`` to its result on ``o``.
    LATENCY = POST_LATENCY

    def __init__(self, config, lut_tables):
        if not isinstance(lut_tables, int) or lut_tables < 1 or lut_tables & (lut_tables - 1):
            raise ValueError(f"Post lut_tables must be a positive power of two, not "
                             f"{lut_tables!r}")
        self._config = config
        self._lut_tables = lut_tables
        depth = lut_tables * isa.LUT_BYTES
        super().__init__({
            "i": In(stream.Signature(post_input_layout(config))),
            "o": Out(stream.Signature(signed(8))),
            "lut_w": In(stream.Signature(chunk_layout(ceil_log2(depth), config.axi_bytes),
                                         always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        job = self.i.payload
        m.submodules.lut = lut = ElementMemory(
            element_bytes=1, depth=self._lut_tables * isa.LUT_BYTES,
            chunk_bytes=self._config.axi_bytes, registered=True)
        wiring.connect(m, wiring.flipped(self.lut_w), lut.w)
        lut_r = lut.r

        # All stages move together; a stalled output holds every stage (and the LUT read).
        valid = [Signal(name=f"valid{k}") for k in range(1, self.LATENCY + 1)]
        advance = ~valid[-1] | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        m.d.comb += lut_r.en.eq(advance)

        # Stage 1 registers the operands as they come (the bias straight from the PARAM
        # memory's block RAM, which has no output register), stage 2 adds.
        acc = Signal(signed(self._config.acc_width), name="acc1")
        bias = Signal.like(job.bias, name="bias1")
        mult_in = Signal(signed(16), name="mult1")
        shift_in = Signal(8, name="shift_in")
        total = Signal(signed(self._config.acc_width + 1))
        product = Signal(signed(self._config.acc_width + 1 + 16))
        y = Signal(signed(8))
        mult = Signal(signed(16))
        shift = [Signal(8, name=f"shift{k}") for k in (1, 2)]
        fine = Signal(3)
        use_lut = [Signal(name=f"use_lut{k}") for k in range(1, self.LATENCY + 1)]
        table = [Signal(8, name=f"table{k}") for k in range(1, self.LATENCY - 1)]
        y_out = [Signal(signed(8), name=f"y_out{k}") for k in (7, 8)]

        # (2 * product) >> shift, then the rounding step; see the module docstring. The
        # barrel shifter in two stages, by the multiple of 8 and then by the rest, then a
        # stage for the 50-bit increment and the saturation.
        coarse = Signal(signed(product.shape().width + 1))
        shifted = Signal(signed(product.shape().width + 1))
        rounded = (shifted + 1) >> 1
        with m.If(advance):
            m.d.sync += [
                valid[0].eq(self.i.valid),
                acc.eq(job.acc), bias.eq(job.bias), mult_in.eq(job.multiplier),
                shift_in.eq(job.shift),
                # Stage 2: the sum.
                total.eq(acc + bias), mult.eq(mult_in), shift[0].eq(shift_in),
                # Stage 3: the multiplier (registered output).
                product.eq(total * mult), shift[1].eq(shift[0]),
                # Stage 4: shift by the multiple of 8.
                coarse.eq((product.as_signed() * 2) >> Cat(Const(0, 3), shift[1][3:])),
                fine.eq(shift[1][:3]),
                # Stage 5: shift by the rest.
                shifted.eq(coarse >> fine),
                # Stage 6: round, saturate.
                y.eq(Mux(rounded > 127, 127, Mux(rounded < -128, -128, rounded))),
                # Stages 7 and 8: the table read (the read port's register, then the word's
                # beside the block RAM), or the value itself.
                y_out[0].eq(y), y_out[1].eq(y_out[0]),
                use_lut[0].eq(job.use_lut), table[0].eq(job.lut),
                [v.eq(u) for v, u in zip(valid[1:], valid)],
                [v.eq(u) for v, u in zip(use_lut[1:], use_lut)],
                [v.eq(u) for v, u in zip(table[1:], table)],
            ]
        index_bits = ceil_log2(self._lut_tables)
        entry = y.as_unsigned() ^ Const(0x80, 8)    # y + 128, as an unsigned byte
        m.d.comb += lut_r.addr.eq(entry if not index_bits else
                                  (table[-1][:index_bits] << 8) | entry)
        m.d.comb += [
            self.o.valid.eq(valid[-1]),
            self.o.payload.eq(Mux(use_lut[-1], lut_r.data.as_signed(), y_out[-1])),
        ]
        return m
