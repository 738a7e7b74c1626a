"""Micro-program decoding: one decoder, used by the group and by the controller's scoreboard.

:class:`MicroProgramDecoder` reads a micro-program from a micro-op memory, one micro-op per
cycle, and keeps what its micro-ops set (:func:`program_layout`). The group's :class:`Decoder`
turns that, with the RUN's operands, into the address generator's command and the execute
body; the RUN scoreboard (:mod:`flexigan.hw.scoreboard`) turns it into the ranges a RUN reads.
"""

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import ceil_log2

from ..agen import LEVELS, agen_command_layout
from ..arch import isa
from .layouts import body_layout

__all__ = ["program_layout", "MicroProgramDecoder", "Decoder"]


def program_layout():
    """A micro-program, decoded: what its micro-ops set, before the RUN's offsets apply.

    Per loop level, the ``count`` and strides of the level's last LOOP (count 1 and strides 0
    for a level no LOOP sets); the last ACT, WGT, CLEAR, POST and WRITE's operands (0 where
    there is none); ``passes``, the number of MACs, and ``square``, the MACs' ``square``;
    ``writes``, whether there is a WRITE; ``norm`` and ``norms``, the NORM's operands and
    whether there is one.
    """
    loop = dict(isa.fields_of(isa.LoopArgs))
    return data.StructLayout({
        "count": data.ArrayLayout(loop["count"], LEVELS),
        "act_stride": data.ArrayLayout(loop["act_stride"], LEVELS),
        "wgt_stride": data.ArrayLayout(loop["wgt_stride"], LEVELS),
        "act": isa.ActArgs,
        "wgt": isa.WgtArgs,
        "clear": isa.ClearArgs,
        "passes": unsigned(8),
        "square": 1,
        "post": isa.PostArgs,
        "write": isa.WriteArgs,
        "writes": 1,
        "norm": isa.NormArgs,
        "norms": 1,
    })


def _location_layout():
    """Where a micro-program is: its first micro-op and its length, as a RUN gives them."""
    run = dict(isa.fields_of(isa.RunArgs))
    return data.StructLayout({"addr": run["uop_addr"], "count": run["uop_count"]})


def _uop_port_signature(config):
    """A synchronous read port of a micro-op memory, as its reader sees it."""
    return wiring.Signature({"en": Out(1), "addr": Out(ceil_log2(config.uop_depth)),
                             "data": In(isa.MicroOp)})


class MicroProgramDecoder(wiring.Component):
    """Reads a micro-program and decodes it into :func:`program_layout`.

    Contract: ``start`` takes a micro-program's location while the decoder is idle. The
    decoder then reads its ``count`` micro-ops from ``addr`` through ``uop`` (one per cycle,
    ``busy`` high) and decodes each in the cycle after its read: the micro-op is on
    ``decoded`` (valid that cycle) and takes effect in ``program`` from the next cycle.
    ``done`` pulses in the cycle after the last micro-op's decoding (``count + 2`` cycles
    after ``start``'s transfer; 1 for an empty micro-program), the last cycle with ``busy``:
    ``program`` then holds the whole micro-program, and keeps it until the next ``start``,
    which the decoder takes from the next cycle on. ``error`` pulses for a micro-program the
    group cannot run: with a decoded micro-op out of the order ``[CLEAR] MAC* (POST [WRITE] |
    NORM)``, a MAC whose ``square`` differs from the MAC before it, a NORM FINISH of ``count`` 0
    or a LOOP beyond the last level, and with ``done`` when it
    has a MAC and ``WGT.lane_stride != 1``.

    Parameters
    ----------
    config : AcceleratorConfig
        Supplies ``uop_depth``.

    Attributes
    ----------
    start : In(stream.Signature(...))
        ``addr`` and ``count``, shaped as ``RunArgs.uop_addr`` and ``RunArgs.uop_count``.
    uop : Out(...)
        The micro-op memory's read port: ``en``, ``addr``; ``data`` one cycle after.
    decoded : Out(stream.Signature(isa.MicroOp, always_ready=True))
    program : Out(program_layout())
    busy, done, error : Out(1)
    """

    def __init__(self, config):
        super().__init__({
            "start": In(stream.Signature(_location_layout())),
            "uop": Out(_uop_port_signature(config)),
            "decoded": Out(stream.Signature(isa.MicroOp, always_ready=True)),
            "program": Out(program_layout()),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        program = self.program
        addr = Signal.like(self.start.payload.addr)
        left = Signal.like(self.start.payload.count)   # micro-ops still to read
        pending = Signal()                             # a micro-op arrives this cycle
        # 0: before MAC, 1: MACs, 2: after POST, 3: after WRITE or NORM (nothing may follow)
        stage = Signal(range(4))
        m.d.comb += self.decoded.payload.eq(self.uop.data)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.start.ready.eq(1)
                with m.If(self.start.valid):
                    location = self.start.payload
                    m.d.sync += [addr.eq(location.addr), left.eq(location.count),
                                 pending.eq(0), stage.eq(0), program.eq(0),
                                 [program.count[k].eq(1) for k in range(LEVELS)]]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += [self.busy.eq(1), self.uop.addr.eq(addr), self.uop.en.eq(left != 0)]
                with m.If(left != 0):
                    m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
                m.d.sync += pending.eq(left != 0)
                with m.If(pending):
                    m.d.comb += self.decoded.valid.eq(1)
                    self._decode(m, self.uop.data, stage)
                with m.If(~pending & (left == 0)):
                    m.d.comb += self.done.eq(1)
                    with m.If((program.passes != 0) & (program.wgt.lane_stride != 1)):
                        m.d.comb += self.error.eq(1)
                    m.next = "IDLE"
        return m

    def _decode(self, m, uop, stage):
        """What the micro-op ``uop`` sets in ``program``; ``stage`` checks the order."""
        program = self.program
        with m.Switch(uop.op):
            with m.Case(isa.UopOp.LOOP):
                loop = uop.args.loop
                for k in range(LEVELS):
                    with m.If(loop.level == k):
                        m.d.sync += [program.count[k].eq(loop.count),
                                     program.act_stride[k].eq(loop.act_stride),
                                     program.wgt_stride[k].eq(loop.wgt_stride)]
                with m.If(loop.level >= LEVELS):
                    m.d.comb += self.error.eq(1)
            with m.Case(isa.UopOp.ACT):
                m.d.sync += program.act.eq(uop.args.act)
            with m.Case(isa.UopOp.WGT):
                m.d.sync += program.wgt.eq(uop.args.wgt)
            with m.Case(isa.UopOp.CLEAR):
                with m.If(stage != 0):
                    m.d.comb += self.error.eq(1)
                m.d.sync += program.clear.eq(uop.args.clear)
            with m.Case(isa.UopOp.MAC):
                square = uop.args.mac.square
                # The lanes square every MAC of a RUN or none (a flag per RUN, not per pass).
                with m.If((stage > 1) | (program.passes != 0) & (square != program.square)):
                    m.d.comb += self.error.eq(1)
                m.d.sync += [stage.eq(1), program.passes.eq(program.passes + 1),
                             program.square.eq(square)]
            with m.Case(isa.UopOp.POST):
                with m.If(stage > 1):
                    m.d.comb += self.error.eq(1)
                m.d.sync += [stage.eq(2), program.post.eq(uop.args.post)]
            with m.Case(isa.UopOp.WRITE):
                with m.If(stage != 2):
                    m.d.comb += self.error.eq(1)
                m.d.sync += [stage.eq(3), program.writes.eq(1),
                             program.write.eq(uop.args.write)]
            with m.Case(isa.UopOp.NORM):
                norm = uop.args.norm
                finish = norm.step == isa.NormStep.FINISH
                with m.If((stage > 1) | finish & (norm.count == 0)):
                    m.d.comb += self.error.eq(1)
                m.d.sync += [stage.eq(3), program.norms.eq(1), program.norm.eq(norm)]


class Decoder(wiring.Component):
    """Reads a RUN's micro-program and splits it between the access and execute engines.

    Contract: for each RUN accepted on ``run``, reads ``uop_count`` micro-ops from
    ``uop_addr`` through ``uop`` (one per cycle), then offers the address generator's command
    on ``agen`` and the execute body on ``body`` (each accepted independently), and takes the
    next RUN from the cycle after both are: :data:`~flexigan.hw.arch.timing.DECODE_CYCLES`
    plus one per micro-op from RUN to RUN when both are accepted at once (one fewer for an
    empty micro-program). Access micro-ops
    take effect in program order (the last LOOP of a level wins); unconfigured loop levels
    have count 1. ``error`` pulses for a micro-program the group cannot run (see
    :class:`MicroProgramDecoder`) and for a NORM in a RUN of other than one pixel.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "run": In(stream.Signature(isa.RunArgs)),
            "uop": Out(_uop_port_signature(config)),
            "agen": Out(stream.Signature(agen_command_layout(config))),
            "body": Out(stream.Signature(body_layout(config))),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.program = decoder = MicroProgramDecoder(self._config)
        connect(m, flipped(self.uop), decoder.uop)
        run = Signal(isa.RunArgs)
        one_pixel = (run.rows == 1) & (run.cols == 1)
        m.d.comb += self.error.eq(decoder.error |
                                  decoder.done & decoder.program.norms & ~one_pixel)
        # The commands are offered from the cycle after the micro-program is decoded (that
        # cycle is one of DECODE_CYCLES, which the cycle model charges); the decoder takes no
        # RUN while they are.
        offer = Signal()
        sent = Signal(2)                       # agen, body accepted
        m.d.comb += [
            decoder.start.valid.eq(self.run.valid & ~offer),
            decoder.start.payload.addr.eq(self.run.payload.uop_addr),
            decoder.start.payload.count.eq(self.run.payload.uop_count),
            self.run.ready.eq(decoder.start.ready & ~offer),
        ]
        with m.If(self.run.valid & self.run.ready):
            m.d.sync += run.eq(self.run.payload)
        # The commands follow from the RUN and its decoded micro-program, which hold while
        # they are offered; the address generator and the body queue register them when
        # they take them (a register here would be a third copy).
        self._commands(m, run, decoder.program, self.agen.payload, self.body.payload)
        with m.If(decoder.done):
            m.d.sync += [offer.eq(1), sent.eq(0)]
        with m.If(offer):
            m.d.comb += [self.agen.valid.eq(~sent[0]), self.body.valid.eq(~sent[1])]
            accepted = Cat(sent[0] | self.agen.ready, sent[1] | self.body.ready)
            m.d.sync += sent.eq(accepted)
            with m.If(accepted.all()):
                m.d.sync += offer.eq(0)
        return m

    @staticmethod
    def _commands(m, run, program, command, body):
        """Drives ``command`` and ``body``, the address generator's command and the execute
        body of ``run`` with the decoded micro-program ``program`` (addresses and strides
        modulo their spaces)."""
        stmts = [
            command.rows.eq(run.rows), command.cols.eq(run.cols), command.lanes.eq(run.lanes),
            command.passes.eq(program.passes),
            command.act_base.eq(run.act_offset + program.act.base),
            command.act_row.eq(program.act.row_stride),
            command.act_col.eq(program.act.col_stride),
            command.wgt_base.eq(run.wgt_offset + program.wgt.base),
        ]
        for k in range(LEVELS):
            stmts += [command.count[k].eq(program.count[k]),
                      command.act_stride[k].eq(program.act_stride[k]),
                      command.wgt_stride[k].eq(program.wgt_stride[k])]
        stmts += [
            body.rows.eq(run.rows), body.cols.eq(run.cols), body.lanes.eq(run.lanes),
            body.passes.eq(program.passes),
            body.use_bias.eq(program.clear.use_bias),
            body.square.eq(program.square),
            body.post.eq(program.writes | program.norms),
            body.norm.eq(program.norms), body.finish.eq(program.norm.step),
            body.count.eq(program.norm.count), body.eps.eq(program.norm.eps),
            body.use_lut.eq(program.post.use_lut), body.per_lane.eq(program.post.per_lane),
            body.lut.eq(run.lut_offset + program.post.lut),
            body.param_offset.eq(run.param_offset),
            body.out_base.eq(run.out_offset + program.write.base),
            body.out_row.eq(program.write.row_stride),
            body.out_col.eq(program.write.col_stride),
            body.lane_stride.eq(program.write.lane_stride),
        ]
        m.d.comb += stmts
