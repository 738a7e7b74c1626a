"""The decoder: a RUN's micro-program, split between the access and execute engines."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..agen import LEVELS, agen_command_layout
from ..arch import isa
from .layouts import body_layout

__all__ = ["Decoder"]


class Decoder(wiring.Component):
    """Reads a RUN's micro-program and splits it between the access and execute engines.

    Contract: for each RUN accepted on ``run``, reads ``uop_count`` micro-ops from
    ``uop_addr`` through ``uop`` (one per cycle), then offers the address generator's command
    on ``agen`` and the execute body on ``body`` (each accepted independently). Access
    micro-ops take effect in program order (the last LOOP of a level wins); unconfigured loop
    levels have count 1. ``error`` pulses for a micro-program the group cannot run (see the
    module docstring).
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "run": In(stream.Signature(isa.RunArgs)),
            "uop": Out(wiring.Signature({"en": Out(1), "addr": Out(ceil_log2(config.uop_depth)),
                                         "data": In(isa.MicroOp)})),
            "agen": Out(stream.Signature(agen_command_layout(config))),
            "body": Out(stream.Signature(body_layout(config))),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        run = Signal(isa.RunArgs)
        cmd = Signal(agen_command_layout(self._config))
        body = Signal(body_layout(self._config))
        m.d.comb += [self.agen.payload.eq(cmd), self.body.payload.eq(body)]
        addr = Signal.like(run.uop_addr)
        left = Signal.like(run.uop_count)      # micro-ops still to read
        pending = Signal()                     # a micro-op arrives this cycle
        stage = Signal(range(4))               # 0: before MAC, 1: MACs, 2: after POST, 3: done
        lane_stride = Signal(16)
        sent = Signal(2)                       # agen, body accepted
        uop = self.uop.data

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.run.ready.eq(1)
                with m.If(self.run.valid):
                    r = self.run.payload
                    m.d.sync += [
                        run.eq(r), addr.eq(r.uop_addr), left.eq(r.uop_count), pending.eq(0),
                        stage.eq(0), lane_stride.eq(0), sent.eq(0),
                        cmd.eq(0), cmd.rows.eq(r.rows), cmd.cols.eq(r.cols),
                        cmd.lanes.eq(r.lanes),
                        [cmd.count[k].eq(1) for k in range(LEVELS)],
                        cmd.act_base.eq(r.act_offset), cmd.wgt_base.eq(r.wgt_offset),
                        body.eq(0), body.rows.eq(r.rows), body.cols.eq(r.cols),
                        body.lanes.eq(r.lanes), body.param_offset.eq(r.param_offset),
                        body.out_base.eq(r.out_offset), body.lut.eq(r.lut_offset),
                    ]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += [self.uop.addr.eq(addr), self.uop.en.eq(left != 0)]
                with m.If(left != 0):
                    m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
                m.d.sync += pending.eq(left != 0)
                with m.If(pending):
                    self._decode(m, uop, run, cmd, body, stage, lane_stride)
                with m.If(~pending & (left == 0)):
                    with m.If((cmd.passes != 0) & (lane_stride != 1)):
                        m.d.comb += self.error.eq(1)
                    m.next = "OFFER"
            with m.State("OFFER"):
                m.d.comb += [self.agen.valid.eq(~sent[0]), self.body.valid.eq(~sent[1])]
                done = Cat(sent[0] | self.agen.ready, sent[1] | self.body.ready)
                m.d.sync += sent.eq(done)
                with m.If(done.all()):
                    m.next = "IDLE"
        return m

    def _decode(self, m, uop, run, cmd, body, stage, lane_stride):
        with m.Switch(uop.op):
            with m.Case(isa.UopOp.LOOP):
                loop = uop.args.loop
                for k in range(LEVELS):
                    with m.If(loop.level == k):
                        m.d.sync += [cmd.count[k].eq(loop.count),
                                     cmd.act_stride[k].eq(loop.act_stride),
                                     cmd.wgt_stride[k].eq(loop.wgt_stride)]
                with m.If(loop.level >= LEVELS):
                    m.d.comb += self.error.eq(1)
            with m.Case(isa.UopOp.ACT):
                act = uop.args.act
                m.d.sync += [cmd.act_base.eq(run.act_offset + act.base),
                             cmd.act_row.eq(act.row_stride), cmd.act_col.eq(act.col_stride)]
            with m.Case(isa.UopOp.WGT):
                wgt = uop.args.wgt
                m.d.sync += [cmd.wgt_base.eq(run.wgt_offset + wgt.base),
                             lane_stride.eq(wgt.lane_stride)]
            with m.Case(isa.UopOp.CLEAR):
                with m.If(stage != 0):
                    m.d.comb += self.error.eq(1)
                m.d.sync += body.use_bias.eq(uop.args.clear.use_bias)
            with m.Case(isa.UopOp.MAC):
                with m.If(stage > 1):
                    m.d.comb += self.error.eq(1)
                m.d.sync += [stage.eq(1), cmd.passes.eq(cmd.passes + 1),
                             body.passes.eq(body.passes + 1)]
            with m.Case(isa.UopOp.POST):
                with m.If(stage > 1):
                    m.d.comb += self.error.eq(1)
                post = uop.args.post
                m.d.sync += [stage.eq(2), body.use_lut.eq(post.use_lut),
                             body.per_lane.eq(post.per_lane),
                             body.lut.eq(run.lut_offset + post.lut)]
            with m.Case(isa.UopOp.WRITE):
                with m.If(stage != 2):
                    m.d.comb += self.error.eq(1)
                write = uop.args.write
                m.d.sync += [stage.eq(3), body.post.eq(1),
                             body.out_base.eq(run.out_offset + write.base),
                             body.out_row.eq(write.row_stride),
                             body.out_col.eq(write.col_stride),
                             body.lane_stride.eq(write.lane_stride)]
