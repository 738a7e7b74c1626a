"""NORM's pixels: a lane's sum saved to PARAM, or its normalizing entry made from PARAM."""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..arch import isa
from ..arch.timing import NORM_CARRY_CYCLES, NORM_FINISH_CYCLES
from ..memories import element_write_layout
from ..norm import NormFinish
from .layouts import job_layout

__all__ = ["FINISH_LANE_CYCLES", "param_read_signature", "NormWriter"]

#: Cycles of a lane of NORM FINISH: its three PARAM reads, the unit's channel, the write.
FINISH_LANE_CYCLES = NORM_FINISH_CYCLES
assert FINISH_LANE_CYCLES == 3 + NormFinish.LATENCY + 1, "timing.NORM_FINISH_CYCLES is stale"
#: Cycles of a lane of NORM SAVE after ``CLEAR use_bias``: BIAS, OPERANDS, ADD, SAVE.
assert NORM_CARRY_CYCLES == 4, "timing.NORM_CARRY_CYCLES is stale"


def param_read_signature(config):
    """A synchronous read port of the PARAM memory, as its reader sees it."""
    return wiring.Signature({"en": Out(1), "addr": Out(ceil_log2(config.param_entries)),
                             "data": In(8 * isa.PARAM_BYTES)})


class NormWriter(wiring.Component):
    """Runs a NORM job (docs/isa.md): SAVE or FINISH, lane after lane.

    Contract: a job on ``i`` (a pixel whose body ends with NORM; not an ``end`` job) is taken
    the cycle after its last lane's PARAM entry is written. SAVE writes ``acc[l]`` into the
    bias of ``PARAM[param_offset + l]``, a lane per cycle of ``param_w``; after ``CLEAR use_bias=1``
    (a sum carried on from the previous row band) the lanes' accumulators do not hold the
    bias (POST adds it), so SAVE reads it first and writes ``bias + acc[l]``: NORM_CARRY_CYCLES
    a lane (the read, the block RAM's word and the lane's sum registered, their sum
    registered, the write). FINISH reads the lane's
    constants, ``S1`` and ``S2`` through ``param`` (``PARAM[param_offset + 2 * lanes + l]``,
    ``[param_offset + l]``, ``[param_offset + lanes + l]``), computes the entry with
    :class:`~flexigan.hw.norm.NormFinish` and writes it to ``PARAM[param_offset + l]``:
    :data:`FINISH_LANE_CYCLES` per lane while ``param_w`` is ready. ``param`` is used only while
    a job is on ``i``.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "i": In(stream.Signature(job_layout(config))),
            "param": Out(param_read_signature(config)),
            "param_w": Out(stream.Signature(element_write_layout(config.param_entries,
                                                                  isa.PARAM_BYTES))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.finish = unit = NormFinish()
        job = self.i.payload
        lane = Signal.like(job.lanes)
        # ``lane + 1 >= job.lanes``, registered with ``lane``: the job queue's ready sees a
        # flip-flop, not a carry chain.
        last = Signal()
        carried = Signal(32)                    # bias + acc of a SAVE after CLEAR use_bias
        addends = [Signal(32), Signal(32)]      # its operands, registered
        entry = data.View(isa.PARAM_LAYOUT, self.param.data)
        written = self.param_w.valid & self.param_w.ready
        m.d.comb += [unit.i.payload.count.eq(job.count), unit.i.payload.eps.eq(job.eps),
                     unit.i.payload.s2.eq(entry.bias)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.i.valid):
                    m.d.sync += [lane.eq(0), last.eq(job.lanes[1:] == 0)]
                    with m.If(job.lanes == 0):
                        m.d.comb += self.i.ready.eq(1)
                    with m.Elif(job.finish):
                        m.next = "CONSTANTS"
                    with m.Elif(job.use_bias):
                        m.next = "BIAS"
                    with m.Else():
                        m.next = "SAVE"
            with m.State("BIAS"):
                m.d.comb += [self.param.en.eq(1), self.param.addr.eq(job.param_offset + lane)]
                m.next = "OPERANDS"
            with m.State("OPERANDS"):
                # The block RAM's word registered before the adder, the sum after it: its
                # output (5.6 ns clock to output, no register of its own) reached the adder's
                # carry chain at 81 MHz on the 2 x 8 ULX3S cut.
                m.d.sync += [addends[0].eq(job.acc[lane]), addends[1].eq(entry.bias)]
                m.next = "ADD"
            with m.State("ADD"):
                m.d.sync += carried.eq(addends[0] + addends[1])
                m.next = "SAVE"
            with m.State("SAVE"):
                m.d.comb += [self.param_w.valid.eq(1),
                             self.param_w.payload.index.eq(job.param_offset + lane),
                             self.param_w.payload.data.eq(Mux(job.use_bias, carried,
                                                              job.acc[lane])),
                             self.param_w.payload.mask.eq(0b1111)]     # the bias
                with m.If(written & ~last & job.use_bias):
                    self._step(m, lane, last)
                    m.next = "BIAS"
                with m.Else():
                    self._next_lane(m, written, lane, last, "SAVE")
            with m.State("CONSTANTS"):
                m.d.comb += [self.param.en.eq(1),
                             self.param.addr.eq(job.param_offset + 2 * job.lanes + lane)]
                m.next = "S1"
            with m.State("S1"):
                m.d.sync += [unit.i.payload.gain.eq(entry.multiplier),
                             unit.i.payload.gain_shift.eq(entry.shift),
                             unit.i.payload.beta.eq(entry.bias)]
                m.d.comb += [self.param.en.eq(1), self.param.addr.eq(job.param_offset + lane)]
                m.next = "S2"
            with m.State("S2"):
                m.d.sync += unit.i.payload.s1.eq(entry.bias)
                m.d.comb += [self.param.en.eq(1),
                             self.param.addr.eq(job.param_offset + job.lanes + lane)]
                m.next = "START"
            with m.State("START"):
                m.d.comb += unit.i.valid.eq(1)          # S2 is on param.data: the unit is idle
                m.next = "COMPUTE"
            with m.State("TAKEN"):
                # The job leaves the cycle after its last write: ``i.ready`` is decoded from
                # the state alone, not from ``param_w.ready`` (a DMA's write into PARAM through
                # the job queue's read into its output register: 68.3 MHz on the 2 x 8 ULX3S
                # cut).
                m.d.comb += self.i.ready.eq(1)
                m.next = "IDLE"
            with m.State("COMPUTE"):
                result = unit.o.payload
                m.d.comb += [self.param_w.valid.eq(unit.o.valid),
                             self.param_w.payload.index.eq(job.param_offset + lane),
                             self.param_w.payload.data.eq(Cat(result.bias, result.multiplier,
                                                              result.shift)),
                             self.param_w.payload.mask.eq(0xFF),
                             unit.o.ready.eq(self.param_w.ready)]
                self._next_lane(m, written, lane, last, "CONSTANTS")
        return m

    def _next_lane(self, m, written, lane, last, again):
        """After a lane's write: the next lane from state ``again``, or the job taken."""
        with m.If(written):
            self._step(m, lane, last)
            with m.If(last):
                m.next = "TAKEN"
            with m.Else():
                m.next = again

    def _step(self, m, lane, last):
        """On to the next lane, its ``last`` flag with it."""
        m.d.sync += [lane.eq(lane + 1), last.eq(lane + 2 >= self.i.payload.lanes)]
