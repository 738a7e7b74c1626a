"""SIMD engine group: micro-sequencer, decoupled access and execute engines, lanes, post.

A group runs its RUNs in order. Each RUN flows through a pipeline of blocks joined by streams::

    RunQueue -> Decoder -+-> AddressGenerator -> ActFetch -> FIFO -> SparseCore -> WeightFetch
                         |                        (crossbar)                     (weight buffer)
                         |                                                             |
                         |                                                          FIFO
                         |                                                             v
                         +-----------------------> FIFO --------------------------> Execute
                                                                                 (lanes, CLEAR)
                                                                                       |
                                                                                  job FIFO
                                                                                       v
                                                                     PostWriter (PARAM, Post,
                                                                      crossbar write)

- the **decoder** reads the RUN's micro-program from the micro-op memory once, configures the
  address generator (access micro-ops) and hands the execute body to the execute engine;
- the **access engine** (address generator, activation fetch through the crossbar, zero skip,
  weight fetch) runs ahead of the execute engine by up to ``fifo_depth`` steps per FIFO; it
  fetches up to :func:`~flexigan.hw.agen.bundle_width` taps of one word per step where the
  innermost loop walks bytes, and the sparse core issues their non-zero ones one per cycle;
- the **execute engine** feeds one step per cycle to the lanes and, at the end of each pixel,
  snapshots the accumulators into a job for the post-processor, so the next pixel's MACs
  overlap the current pixel's POST and WRITE;
- the **post-writer** requantizes one lane per cycle and writes the bytes to ACT.

Consecutive RUNs overlap too: the next RUN is decoded and its addresses generated while the
current one finishes. The execute body must have the form the compiler emits, ``[CLEAR] MAC*
[POST [WRITE]]`` (NOPs and access micro-ops anywhere), and a MAC needs ``WGT.lane_stride == 1``;
anything else sets the sticky ``error`` output (the RUN still completes, its results are
unspecified).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import ceil_log2, exact_log2

from .agen import LEVELS, AddressGenerator, agen_command_layout, agen_step_layout
from .arch import isa
from .arch.config import RUN_SLOTS
from .crossbar import read_port_signature, write_port_signature
from .fifo import StreamFIFO
from .lane import Lane
from .memories import ElementMemory, WeightBuffer, chunk_layout
from .post import Post
from .sparse import SparseCore, bundle_layout, tap_layout

__all__ = ["JOB_DEPTH", "local_spaces", "local_write_layout", "act_tag_layout", "Group"]

#: Snapshots of finished pixels waiting for the post-processor (or reserved for those in the
#: lanes): a job holds its entry about five cycles, so two entries would bound pixels of few
#: lanes at ~2.5 cycles.
JOB_DEPTH = 4

def local_spaces(config):
    """Bytes of each group memory the DMA engine writes, by :class:`isa.Space`."""
    return {space: config.local_units(space) * isa.unit_bytes(space)
            for space in (isa.Space.WGT, isa.Space.PARAM, isa.Space.LUT, isa.Space.UOP)}


def local_write_layout(config):
    """A DMA chunk for one of a group's memories: the space, then a memory chunk."""
    aw = max(ceil_log2(size) for size in local_spaces(config).values())
    return data.StructLayout({"space": isa.Space,
                              "chunk": chunk_layout(aw, config.axi_bytes)})


def act_tag_layout(config):
    """What an activation read carries through the crossbar."""
    ww = config.wgt_addr_width
    return data.StructLayout({
        "byte": unsigned(max(1, exact_log2(config.axi_bytes))),
        "n": range(1, config.bundle_width + 1),
        "wgt_addr": unsigned(ww),
        "wgt_stride": unsigned(ww),
        "last": 1,
        "null": 1,
        "lanes": dict(isa.fields_of(isa.RunArgs))["lanes"],
    })


def _mac_layout(config):
    """A step for the lanes: activation, each lane's weight, end of a tap nest, null step."""
    return data.StructLayout({"act": signed(8), "wgt": data.ArrayLayout(signed(8),
                                                                           config.lanes),
                              "last": 1, "null": 1})


def _exec_layout(config):
    """The execute body of one RUN, decoded."""
    aw = config.act_addr_width
    run = dict(isa.fields_of(isa.RunArgs))
    return data.StructLayout({
        "rows": run["rows"], "cols": run["cols"], "lanes": run["lanes"],
        "passes": unsigned(8),
        "use_bias": 1,
        "post": 1,                  # POST then WRITE: the pixel produces bytes
        "use_lut": 1, "per_lane": 1,
        "lut": unsigned(8),         # lut_offset + POST.lut
        "param_offset": run["param_offset"],
        "out_base": unsigned(aw),   # out_offset + WRITE.base
        "out_row": unsigned(aw), "out_col": unsigned(aw),
        "lane_stride": unsigned(aw),
    })


def _job_layout(config):
    """One pixel for the post-processor (or, with ``end``, the end of a RUN)."""
    aw = config.act_addr_width
    run = dict(isa.fields_of(isa.RunArgs))
    return data.StructLayout({
        "end": 1,
        "acc": data.ArrayLayout(signed(config.acc_width), config.lanes),
        "lanes": run["lanes"],
        "use_bias": 1, "use_lut": 1, "per_lane": 1,
        "lut": unsigned(8),
        "param_offset": run["param_offset"],
        "out_addr": unsigned(aw),
        "lane_stride": unsigned(aw),
    })


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
            "body": Out(stream.Signature(_exec_layout(config))),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        run = Signal(isa.RunArgs)
        cmd = Signal(agen_command_layout(self._config))
        body = Signal(_exec_layout(self._config))
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


class ActFetch(wiring.Component):
    """Reads each step's activations through the crossbar, reusing the last word read.

    Contract: for each step on ``i``, in order, ``o`` carries the bundle of its ``n``
    activations (the ``n`` bytes from ``act_addr``, all in one word; 0 for a null step), with
    its weight address and stride, ``last`` and ``null`` flags and lanes. The fetch keeps the
    last word it read (a one-word line, tagged with its word address): a step in that word is
    answered from the line, in the same cycle a read would take, and only a step in another
    word reads the crossbar (a null step reads nothing). ``flush`` empties the line; the group
    pulses it at the start of each RUN, since DMA and earlier RUNs' writes may have changed
    ACT (a RUN never writes what it reads, so within a RUN the line stays valid). A step is
    taken only when the output queue (``depth`` steps) has room for its answer; one per cycle
    when it hits the line or the crossbar grants its read.
    """

    def __init__(self, config, depth):
        self._config, self._depth = config, depth
        super().__init__({
            "i": In(stream.Signature(agen_step_layout(config))),
            "port": Out(read_port_signature(config.word_addr_width, config.axi_data_width,
                                            act_tag_layout(config))),
            "o": Out(stream.Signature(bundle_layout(config))),
            "flush": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        m.submodules.queue = queue = StreamFIFO(bundle_layout(cfg), self._depth)
        connect(m, queue.o, flipped(self.o))
        byte_bits = exact_log2(cfg.axi_bytes)
        step = self.i.payload
        word = step.act_addr[byte_bits:]

        line_valid = Signal()
        line_addr = Signal(cfg.word_addr_width)
        line = Signal(cfg.axi_data_width)
        # The step taken last cycle, answered this cycle from the line (a hit) or by the
        # crossbar (its tag).
        hit = Signal()
        held = Signal(act_tag_layout(cfg))
        hits = step.null | (line_valid & (line_addr == word))
        room = queue.level + hit + self.port.resp.valid < self._depth
        take = self.i.valid & room & (hits | self.port.req.ready)
        m.d.comb += [
            self.port.req.valid.eq(self.i.valid & room & ~hits),
            self.i.ready.eq(take),
            self.port.req.payload.addr.eq(word),
            self.port.req.payload.tag.n.eq(step.n),
            self.port.req.payload.tag.wgt_addr.eq(step.wgt_addr),
            self.port.req.payload.tag.wgt_stride.eq(step.wgt_stride),
            self.port.req.payload.tag.last.eq(step.last),
            self.port.req.payload.tag.null.eq(step.null),
            self.port.req.payload.tag.lanes.eq(step.lanes),
        ]
        if byte_bits:
            m.d.comb += self.port.req.payload.tag.byte.eq(step.act_addr[:byte_bits])
        m.d.sync += [hit.eq(take & hits), held.eq(self.port.req.payload.tag)]
        with m.If(self.port.req.valid & self.port.req.ready):
            m.d.sync += [line_valid.eq(1), line_addr.eq(word)]
        with m.If(self.port.resp.valid):
            m.d.sync += line.eq(self.port.resp.payload.data)
        with m.If(self.flush):
            m.d.sync += line_valid.eq(0)

        resp = self.port.resp.payload
        tag = Signal(act_tag_layout(cfg))
        m.d.comb += tag.eq(Mux(hit, held, resp.tag))
        source = Mux(hit, line, resp.data)
        # The bundle's bytes start at the tap's byte (the step never crosses the word's end).
        acts = (source >> (tag.byte * 8) if byte_bits else source)[:8 * cfg.bundle_width]
        m.d.comb += [
            queue.i.valid.eq(hit | self.port.resp.valid),
            queue.i.payload.acts.eq(Mux(tag.null, 0, acts)),
            queue.i.payload.n.eq(tag.n),
            queue.i.payload.wgt_addr.eq(tag.wgt_addr),
            queue.i.payload.wgt_stride.eq(tag.wgt_stride),
            queue.i.payload.last.eq(tag.last),
            queue.i.payload.null.eq(tag.null),
            queue.i.payload.lanes.eq(tag.lanes),
        ]
        return m


class WeightFetch(wiring.Component):
    """Reads each kept step's weight column (one weight per lane) from the weight buffer.

    Contract: for each step on ``i``, ``o`` carries, in order, its activation, the ``lanes``
    weights at ``wgt_addr, wgt_addr + 1, ...`` and its ``last`` flag; one step per cycle.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "i": In(stream.Signature(tap_layout(config))),
            "buffer": Out(wiring.Signature({
                "en": Out(1), "addr": Out(config.wgt_addr_width),
                "data": In(data.ArrayLayout(8, config.lanes))})),
            "o": Out(stream.Signature(_mac_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        valid = Signal()
        act = Signal(signed(8))
        last = Signal()
        null = Signal()
        advance = ~valid | self.o.ready
        m.d.comb += [
            self.i.ready.eq(advance),
            self.buffer.en.eq(advance),
            self.buffer.addr.eq(self.i.payload.wgt_addr),
            self.o.valid.eq(valid),
            self.o.payload.act.eq(act),
            self.o.payload.last.eq(last),
            self.o.payload.null.eq(null),
        ]
        for lane in range(self._config.lanes):
            m.d.comb += self.o.payload.wgt[lane].eq(self.buffer.data[lane])
        with m.If(advance):
            m.d.sync += [valid.eq(self.i.valid), act.eq(self.i.payload.act),
                         last.eq(self.i.payload.last), null.eq(self.i.payload.null)]
        return m


class Execute(wiring.Component):
    """The execute engine: steps to the lanes, and a post-processing job per pixel.

    Contract: for each RUN body accepted on ``body``, for each of its ``rows x cols`` pixels in
    row-major order, consumes the pixel's steps from ``steps`` (``passes`` groups, each ending
    with ``last``) and feeds them to the lanes, the pixel's first step restarting the
    accumulators; then, when the body has POST and WRITE, emits the pixel's job on ``jobs``
    with the final accumulators (0 when the body has no MAC) and the pixel's output address.
    After the last pixel a job with ``end`` set closes the RUN. A pixel with MACs takes one
    cycle per step, a pixel without one cycle; the final step of a pixel waits while the job
    queue is full. ``issued`` counts the multiplies fed to the lanes: the RUN's ``lanes`` for
    each step with a non-zero activation (each step with ``bypass``) but null steps (an empty
    tap nest's, an all-zero bundle's); ``clear`` zeroes it.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "body": In(stream.Signature(_exec_layout(config))),
            "steps": In(stream.Signature(_mac_layout(config))),
            "jobs": Out(stream.Signature(_job_layout(config))),
            "bypass": In(1),
            "issued": Out(64),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        lanes = [Lane(cfg) for _ in range(cfg.lanes)]
        for k, lane in enumerate(lanes):
            m.submodules[f"lane{k}"] = lane
        m.submodules.jobs = jobs = StreamFIFO(_job_layout(cfg), JOB_DEPTH)
        connect(m, jobs.o, flipped(self.jobs))

        body = Signal(_exec_layout(cfg))
        r, c = Signal.like(body.rows), Signal.like(body.cols)
        passes = Signal.like(body.passes)     # MAC passes done in this pixel
        first = Signal(init=1)                # the next step starts a pixel
        out_row = Signal.like(body.out_base)
        out_pix = Signal.like(body.out_base)

        # A pixel's job enters the queue Lane.LATENCY cycles after its final step, when the
        # lanes hold its sums. Its queue entry is reserved when the step is taken.
        delay = [Signal(_job_layout(cfg), name=f"job{k}") for k in range(Lane.LATENCY)]
        zero = Signal(Lane.LATENCY)           # the delayed job's accumulators are 0
        pending = Signal(Lane.LATENCY)        # the delay stages that hold a job
        emit = Signal()
        emit_job = Signal(_job_layout(cfg))
        emit_zero = Signal()
        m.d.sync += [pending.eq(Cat(emit, pending[:-1])), zero.eq(Cat(emit_zero, zero[:-1])),
                     delay[0].eq(emit_job)]
        for k in range(1, Lane.LATENCY):
            m.d.sync += delay[k].eq(delay[k - 1])
        m.d.comb += [jobs.i.valid.eq(pending[-1]), jobs.i.payload.eq(delay[-1])]
        for k, lane in enumerate(lanes):
            m.d.comb += jobs.i.payload.acc[k].eq(Mux(zero[-1], 0, lane.acc))
        room = jobs.level + sum(pending[k] for k in range(Lane.LATENCY)) < JOB_DEPTH

        m.d.comb += [
            emit_job.lanes.eq(body.lanes), emit_job.use_bias.eq(body.use_bias),
            emit_job.use_lut.eq(body.use_lut), emit_job.per_lane.eq(body.per_lane),
            emit_job.lut.eq(body.lut), emit_job.param_offset.eq(body.param_offset),
            emit_job.out_addr.eq(out_pix), emit_job.lane_stride.eq(body.lane_stride),
            emit_zero.eq(body.passes == 0),
        ]

        step = self.steps.payload
        taken = self.steps.valid & self.steps.ready
        for k, lane in enumerate(lanes):
            m.d.comb += [lane.i.valid.eq(taken), lane.i.payload.act.eq(step.act),
                         lane.i.payload.wgt.eq(step.wgt[k]),
                         lane.i.payload.accumulate.eq(~first)]
        with m.If(self.clear):
            m.d.sync += self.issued.eq(0)
        with m.Elif(taken & ((step.act != 0) | self.bypass) & ~step.null):
            m.d.sync += self.issued.eq(self.issued + body.lanes)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.body.ready.eq(1)
                with m.If(self.body.valid):
                    b = self.body.payload
                    m.d.sync += [body.eq(b), r.eq(0), c.eq(0), passes.eq(0), first.eq(1),
                                 out_row.eq(b.out_base), out_pix.eq(b.out_base)]
                    with m.If((b.rows == 0) | (b.cols == 0)):
                        m.next = "END"
                    with m.Else():
                        m.next = "PIXEL"
            with m.State("PIXEL"):
                # Is this cycle the end of the pixel?
                ends = Signal()
                with m.If(body.passes == 0):
                    m.d.comb += ends.eq(~body.post | room)
                with m.Else():
                    final = step.last & (passes + 1 == body.passes)
                    m.d.comb += self.steps.ready.eq(~final | ~body.post | room)
                    with m.If(taken):
                        m.d.sync += first.eq(0)
                        with m.If(step.last):
                            m.d.sync += passes.eq(passes + 1)
                    m.d.comb += ends.eq(taken & final)
                with m.If(ends):
                    m.d.comb += emit.eq(body.post)
                    m.d.sync += [passes.eq(0), first.eq(1)]
                    with m.If(c + 1 < body.cols):
                        m.d.sync += [c.eq(c + 1), out_pix.eq(out_pix + body.out_col)]
                    with m.Elif(r + 1 < body.rows):
                        next_row = out_row + body.out_row
                        m.d.sync += [c.eq(0), r.eq(r + 1), out_row.eq(next_row),
                                     out_pix.eq(next_row)]
                    with m.Else():
                        m.next = "END"
            with m.State("END"):
                with m.If(room):
                    m.d.comb += [emit.eq(1), emit_job.end.eq(1)]
                    m.next = "IDLE"
        return m


class PostWriter(wiring.Component):
    """Requantizes each job's lanes and writes the bytes to ACT.

    Contract: for each job on ``jobs`` (in order), for lanes ``l < lanes``: reads
    ``PARAM[param_offset + l]``, computes POST (table ``(lut + (l if per_lane else 0)) mod
    tables``) and writes the byte to ``ACT[out_addr + l * lane_stride]`` through ``port``.
    One lane per cycle; a job takes ``max(1, lanes)`` cycles when the crossbar does not stall. For
    an ``end`` job, ``done`` pulses once every earlier byte has been written (the RUN is
    complete). Activation tables are written through ``lut_w``.
    """

    #: Write addresses in flight (in the Post pipeline, or waiting for the crossbar).
    ADDRESSES = Post.LATENCY + 4

    def __init__(self, config):
        self._config = config
        self._tables = config.lut_tables
        super().__init__({
            "jobs": In(stream.Signature(_job_layout(config))),
            "param": Out(wiring.Signature({
                "en": Out(1), "addr": Out(ceil_log2(config.param_entries)),
                "data": In(8 * isa.PARAM_BYTES)})),
            "lut_w": In(stream.Signature(chunk_layout(ceil_log2(self._tables * isa.LUT_BYTES),
                                                      config.axi_bytes), always_ready=True)),
            "port": Out(write_port_signature(config.word_addr_width, config.axi_data_width)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        aw = cfg.act_addr_width
        m.submodules.post = post = Post(cfg, self._tables)
        connect(m, flipped(self.lut_w), post.lut_w)
        m.submodules.addresses = addresses = StreamFIFO(unsigned(aw), self.ADDRESSES)

        job = self.jobs.payload
        lane = Signal.like(job.lanes)          # next lane whose PARAM entry is read
        lane_addr = Signal(aw)                 # its output address
        held = Signal()                        # a lane's PARAM entry is on param.data
        # The lane's operands, taken from the job with its PARAM read: the job leaves with its
        # last lane's read, so the next job's first lane follows without a gap.
        held_job = Signal(data.StructLayout({
            "acc": signed(cfg.acc_width), "use_bias": 1, "use_lut": 1,
            "table": unsigned(exact_log2(self._tables)), "addr": unsigned(aw)}))
        param = data.View(isa.PARAM_LAYOUT, self.param.data)

        advance = ~held | post.i.ready
        address = Mux(lane == 0, job.out_addr, lane_addr)
        m.d.comb += [
            self.param.addr.eq(job.param_offset + lane),
            post.i.valid.eq(held),
            post.i.payload.acc.eq(held_job.acc),
            post.i.payload.bias.eq(Mux(held_job.use_bias, param.bias, 0)),
            post.i.payload.multiplier.eq(param.multiplier),
            post.i.payload.shift.eq(param.shift),
            post.i.payload.use_lut.eq(held_job.use_lut),
            post.i.payload.lut.eq(held_job.table),
            addresses.i.valid.eq(post.i.valid & post.i.ready),
            addresses.i.payload.eq(held_job.addr),
        ]
        with m.If(advance):
            m.d.sync += held.eq(0)
        with m.If(self.jobs.valid & ~job.end & advance):
            with m.If(lane < job.lanes):
                # Read the lane's PARAM entry; it meets the lane's sum next cycle.
                m.d.comb += self.param.en.eq(1)
                m.d.sync += [
                    held.eq(1), lane.eq(lane + 1), lane_addr.eq(address + job.lane_stride),
                    held_job.acc.eq(job.acc[lane]), held_job.use_bias.eq(job.use_bias),
                    held_job.use_lut.eq(job.use_lut), held_job.addr.eq(address),
                    held_job.table.eq(job.lut + Mux(job.per_lane, lane, 0)),
                ]
            with m.If(lane + 1 >= job.lanes):
                # The job's last lane is read (or it has none): the next job may start.
                m.d.comb += self.jobs.ready.eq(1)
                m.d.sync += lane.eq(0)
        with m.If(self.jobs.valid & job.end & ~held & (addresses.level == 0)):
            m.d.comb += [self.jobs.ready.eq(1), self.done.eq(1)]

        # Each result goes to its byte of ACT.
        byte_bits = exact_log2(cfg.axi_bytes)
        target = addresses.o.payload
        m.d.comb += [
            self.port.req.valid.eq(post.o.valid),
            self.port.req.payload.addr.eq(target[byte_bits:]),
            self.port.req.payload.data.eq(Cat(post.o.payload for _ in range(cfg.axi_bytes))),
            self.port.req.payload.mask.eq(Const(1, cfg.axi_bytes) << target[:byte_bits]
                                          if byte_bits else 1),
            post.o.ready.eq(self.port.req.ready),
            addresses.o.ready.eq(post.o.valid & self.port.req.ready),
        ]
        return m


def slot_layout():
    """A RUN a group holds (queued or executing), for the controller's hazard checks."""
    return data.StructLayout({"valid": 1, "run": isa.RunArgs})


class Group(wiring.Component):
    """A SIMD engine group (see the module docstring).

    Contract: a RUN accepted on ``run`` (while fewer than :data:`RUN_SLOTS` RUNs are held)
    executes per docs/isa.md after the RUNs before it; ``slots`` shows every held RUN until
    it is complete, i.e. until its last byte is written to ACT, and ``busy`` is high while any
    is held. DMA chunks on ``dma`` write the group's memories (the space selects which; the
    address is a byte address in it) at one chunk per cycle, concurrently with RUNs: the
    controller keeps them off what a held RUN reads. ``bypass`` disables zero skipping.
    ``error`` is sticky (see the module docstring); ``macs_issued``/``macs_skipped`` count
    multiplies; ``clear`` zeroes the counters and ``error``.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    run : In(stream.Signature(isa.RunArgs))
    slots : Out(data.ArrayLayout(slot_layout(), RUN_SLOTS))
    busy : Out(1)
    dma : In(stream.Signature(local_write_layout(config), always_ready=True))
    act_rd : Out(read_port_signature(...))
    act_wr : Out(write_port_signature(...))
    bypass, clear : In(1)
    error : Out(1)
    macs_issued, macs_skipped : Out(64)
    """

    def __init__(self, config):
        self._config = config
        aw, dw = config.word_addr_width, config.axi_data_width
        super().__init__({
            "run": In(stream.Signature(isa.RunArgs)),
            "slots": Out(data.ArrayLayout(slot_layout(), RUN_SLOTS)),
            "busy": Out(1),
            "dma": In(stream.Signature(local_write_layout(config), always_ready=True)),
            "act_rd": Out(read_port_signature(aw, dw, act_tag_layout(config))),
            "act_wr": Out(write_port_signature(aw, dw)),
            "bypass": In(1),
            "clear": In(1),
            "error": Out(1),
            "macs_issued": Out(64),
            "macs_skipped": Out(64),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        depth = cfg.fifo_depth

        # Memories written by DMA.
        m.submodules.uops = uops = ElementMemory(element_bytes=isa.UOP_BYTES,
                                                 depth=cfg.uop_depth, chunk_bytes=cfg.axi_bytes)
        m.submodules.params = params = ElementMemory(element_bytes=isa.PARAM_BYTES,
                                                     depth=cfg.param_entries,
                                                     chunk_bytes=cfg.axi_bytes)
        m.submodules.weights = weights = WeightBuffer(cfg)
        m.submodules.post = post = PostWriter(cfg)
        targets = {isa.Space.UOP: uops.w, isa.Space.PARAM: params.w,
                   isa.Space.WGT: weights.w, isa.Space.LUT: post.lut_w}
        chunk = self.dma.payload.chunk
        for space, port in targets.items():
            # Field by field: each memory's address is narrower than the widest space's.
            m.d.comb += [port.valid.eq(self.dma.valid & (self.dma.payload.space == space)),
                         port.payload.addr.eq(chunk.addr), port.payload.data.eq(chunk.data),
                         port.payload.mask.eq(chunk.mask)]

        # The RUNs held, oldest first from ``head``; ``decode`` is the next to decode.
        head = Signal(range(RUN_SLOTS))
        decode = Signal(range(RUN_SLOTS))
        tail = Signal(range(RUN_SLOTS))
        held = Signal(range(RUN_SLOTS + 1))
        undecoded = Signal(range(RUN_SLOTS + 1))

        def step(pointer):
            return Mux(pointer == RUN_SLOTS - 1, 0, pointer + 1)

        m.submodules.decoder = decoder = Decoder(cfg)
        push = self.run.valid & self.run.ready
        pop = post.done
        start = decoder.run.valid & decoder.run.ready
        m.d.comb += [
            self.run.ready.eq(held < RUN_SLOTS),
            self.busy.eq(held != 0),
            decoder.run.valid.eq(undecoded != 0),
            decoder.run.payload.eq(self.slots[decode].run),
        ]
        m.d.sync += [held.eq(held + push - pop), undecoded.eq(undecoded + push - start)]
        with m.If(push):
            m.d.sync += [self.slots[tail].valid.eq(1), self.slots[tail].run.eq(self.run.payload),
                         tail.eq(step(tail))]
        with m.If(start):
            m.d.sync += decode.eq(step(decode))
        with m.If(pop):
            m.d.sync += [self.slots[head].valid.eq(0), head.eq(step(head))]

        # Decoder -> access engine and execute engine.
        m.d.comb += [uops.r.en.eq(decoder.uop.en), uops.r.addr.eq(decoder.uop.addr),
                     decoder.uop.data.eq(uops.r.data)]
        m.submodules.agen = agen = AddressGenerator(cfg)
        connect(m, decoder.agen, agen.cmd)
        m.submodules.bodies = bodies = StreamFIFO(_exec_layout(cfg), 2)
        connect(m, decoder.body, bodies.i)

        m.submodules.fetch = fetch = ActFetch(cfg, depth)
        connect(m, agen.o, fetch.i)
        connect(m, fetch.port, flipped(self.act_rd))
        m.d.comb += fetch.flush.eq(agen.cmd.valid & agen.cmd.ready)
        m.submodules.sparse = sparse = SparseCore(cfg)
        connect(m, fetch.o, sparse.i)
        m.d.comb += [sparse.bypass.eq(self.bypass), sparse.clear.eq(self.clear),
                     self.macs_skipped.eq(sparse.skipped)]
        m.submodules.wfetch = wfetch = WeightFetch(cfg)
        connect(m, sparse.o, wfetch.i)
        connect(m, wfetch.buffer, weights.r)
        m.submodules.steps = steps = StreamFIFO(_mac_layout(cfg), depth)
        connect(m, wfetch.o, steps.i)

        m.submodules.execute = execute = Execute(cfg)
        connect(m, bodies.o, execute.body)
        connect(m, steps.o, execute.steps)
        m.d.comb += [execute.bypass.eq(self.bypass), execute.clear.eq(self.clear),
                     self.macs_issued.eq(execute.issued)]
        connect(m, execute.jobs, post.jobs)
        connect(m, post.param, params.r)
        connect(m, post.port, flipped(self.act_wr))

        with m.If(self.clear):
            m.d.sync += self.error.eq(0)
        with m.Elif(decoder.error):
            m.d.sync += self.error.eq(1)
        return m
