"""The post-writer: each pixel's lanes requantized, activated and written to ACT."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import ceil_log2, exact_log2

from ..arch import isa
from ..crossbar import write_port_signature
from ..fifo import StreamFIFO, StreamSlice
from ..memories import chunk_layout, element_write_layout
from ..post import Post
from .layouts import job_layout
from .norm_writer import NormWriter, param_read_signature

__all__ = ["PostWriter"]


class PostWriter(wiring.Component):
    """Requantizes each job's lanes and writes the bytes to ACT.

    Contract: for each job on ``jobs`` (in order), for lanes ``l < lanes``: reads
    ``PARAM[param_offset + l]``, computes POST (table ``(lut + (l if per_lane else 0)) mod
    tables``) and writes the byte to ``ACT[out_addr + l * lane_stride]`` through ``port``.
    One lane per cycle; a job takes ``max(1, lanes)`` cycles when the crossbar does not stall.
    A job's consecutive lanes whose bytes fall in one word go to ``port`` as one write (the
    word's bytes of those lanes, with their mask) when the last of them is done: lanes side by
    side (HWC outputs) cost the bank a write per word, not per byte.
    A NORM job goes to a :class:`~.norm_writer.NormWriter`, which writes PARAM through
    ``param_w``, once the lanes before it have read their entries; the jobs after it read
    PARAM after its writes.
    A lane's byte is on ``port`` ``Post.LATENCY + 2`` cycles after its PARAM read (the read,
    Post, a register slice). For an ``end`` job, ``done`` pulses once every earlier byte has
    been written (the RUN is complete). Activation tables are written through ``lut_w``.
    """

    #: Write addresses in flight (in the Post pipeline, or waiting for the crossbar).
    ADDRESSES = Post.LATENCY + 4

    def __init__(self, config):
        self._config = config
        self._tables = config.lut_tables
        super().__init__({
            "jobs": In(stream.Signature(job_layout(config))),
            "param": Out(param_read_signature(config)),
            "param_w": Out(stream.Signature(element_write_layout(config.param_entries,
                                                                  isa.PARAM_BYTES))),
            "lut_w": In(stream.Signature(chunk_layout(ceil_log2(self._tables * isa.LUT_BYTES),
                                                      config.axi_bytes), always_ready=True)),
            "port": Out(write_port_signature(config.word_addr_width, config.axi_data_width)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        address_width = config.act_addr_width
        m.submodules.post = post = Post(config, self._tables)
        connect(m, flipped(self.lut_w), post.lut_w)
        byte_bits = exact_log2(config.axi_bytes)
        # Each lane's output address, and whether the job's next lane writes the same word
        # (its byte then waits for that lane's and goes with it).
        target_layout = data.StructLayout({"addr": unsigned(address_width), "merge": 1})
        m.submodules.addresses = addresses = StreamFIFO(target_layout, self.ADDRESSES)

        job = self.jobs.payload
        lane = Signal.like(job.lanes)          # next lane whose PARAM entry is read
        # ``lane == 0``, and (for ``lane > 0``) ``lane + 1 >= job.lanes``, registered with
        # ``lane``: the job queue's ready sees a comparison with constants only.
        first, last_lane = Signal(init=1), Signal()
        lane_addr = Signal(address_width)      # its output address
        held = Signal()                        # a lane's PARAM entry is on param.data
        # The lane's operands, taken from the job with its PARAM read: the job leaves with its
        # last lane's read, so the next job's first lane follows without a gap.
        held_job = Signal(data.StructLayout({
            "acc": signed(config.acc_width), "use_bias": 1, "use_lut": 1,
            "table": unsigned(exact_log2(self._tables)), "addr": unsigned(address_width),
            "merge": 1}))
        param = data.View(isa.PARAM_LAYOUT, self.param.data)

        advance = ~held | post.i.ready
        address = Mux(first, job.out_addr, lane_addr)
        # A NORM job, once no lane holds the PARAM port's data for the requantizer.
        m.submodules.norm = norm = NormWriter(config)
        connect(m, norm.param_w, flipped(self.param_w))
        norm_job = self.jobs.valid & job.norm & ~job.end
        m.d.comb += [norm.i.valid.eq(norm_job & ~held), norm.i.payload.eq(job),
                     self.param.en.eq(norm.param.en), norm.param.data.eq(self.param.data)]
        with m.If(norm_job):
            m.d.comb += [self.param.addr.eq(norm.param.addr), self.jobs.ready.eq(norm.i.ready)]
        with m.Else():
            m.d.comb += self.param.addr.eq(job.param_offset + lane)
        m.d.comb += [
            post.i.valid.eq(held),
            post.i.payload.acc.eq(held_job.acc),
            post.i.payload.bias.eq(Mux(held_job.use_bias, param.bias, 0)),
            post.i.payload.multiplier.eq(param.multiplier),
            post.i.payload.shift.eq(param.shift),
            post.i.payload.use_lut.eq(held_job.use_lut),
            post.i.payload.lut.eq(held_job.table),
            addresses.i.valid.eq(post.i.valid & post.i.ready),
            addresses.i.payload.addr.eq(held_job.addr),
            addresses.i.payload.merge.eq(held_job.merge),
        ]
        with m.If(advance):
            m.d.sync += held.eq(0)
        more = Mux(first, job.lanes != 0, 1)                   # lane < job.lanes
        # lane + 1 >= job.lanes; ``lanes <= 1`` as a test of the high bits (Yosys maps the
        # comparison to a carry chain, which was on the job queue's ready at 69.9 MHz on the
        # 2 x 8 ULX3S cut).
        last = Mux(first, job.lanes[1:] == 0, last_lane)
        # The next lane's byte is in this lane's word: a narrow sum of the byte offsets, not
        # a comparison of the addresses.
        if byte_bits:
            in_word = (address[:byte_bits] + job.lane_stride[:byte_bits] < config.axi_bytes) & \
                (job.lane_stride[byte_bits:] == 0)
        else:
            in_word = job.lane_stride == 0
        with m.If(self.jobs.valid & ~job.end & ~job.norm & advance):
            with m.If(more):
                # Read the lane's PARAM entry; it meets the lane's sum next cycle.
                m.d.comb += self.param.en.eq(1)
                m.d.sync += [
                    held.eq(1), lane.eq(lane + 1), first.eq(0),
                    last_lane.eq(lane + 2 >= job.lanes),
                    lane_addr.eq(address + job.lane_stride),
                    held_job.acc.eq(job.acc[lane]), held_job.use_bias.eq(job.use_bias),
                    held_job.use_lut.eq(job.use_lut), held_job.addr.eq(address),
                    held_job.table.eq(job.lut + Mux(job.per_lane, lane, 0)),
                    held_job.merge.eq(~last & in_word),
                ]
            with m.If(last):
                # The job's last lane is read (or it has none): the next job may start.
                m.d.comb += self.jobs.ready.eq(1)
                m.d.sync += [lane.eq(0), first.eq(1)]
        with m.If(self.jobs.valid & job.end & ~held & (addresses.level == 0) &
                  ~self.port.req.valid):
            m.d.comb += [self.jobs.ready.eq(1), self.done.eq(1)]

        # Each result goes to its byte of ACT, through a register slice: the crossbar's write
        # grant would otherwise stall the Post pipeline, the PARAM read and the job queue in
        # the same cycle. A result whose next lane writes the same word waits in ``word`` and
        # leaves with the word's last lane: a post-writer writing a byte a cycle would otherwise
        # take every cycle of its bank, and two groups writing one bank would halve each
        # other's pace. A merging result never waits for the slice: Post's ``ready`` is the OR
        # of two flip-flops (the address queue's output register, the slice's ``ready``), which
        # the first gate of each stage's enable absorbs. (Waiting for the slice cost 3 % on a
        # 1x1 conv to 3 channels whose two groups write one bank.)
        target = addresses.o.payload
        word = Signal(config.axi_data_width)
        word_mask = Signal(config.axi_bytes)
        mask = Const(1, config.axi_bytes) << target.addr[:byte_bits] if byte_bits else Const(1)
        # The result in its byte, the bytes of the earlier lanes of its word elsewhere.
        merged = Cat(Mux(mask[b], post.o.payload.as_unsigned(), word[8 * b:8 * (b + 1)])
                     for b in range(config.axi_bytes))
        m.submodules.write = write = StreamSlice(self.port.req.payload.shape())
        connect(m, write.o, flipped(self.port.req))
        taken = post.o.valid & post.o.ready
        m.d.comb += [
            write.i.valid.eq(post.o.valid & ~target.merge),
            write.i.payload.addr.eq(target.addr[byte_bits:]),
            write.i.payload.data.eq(merged),
            write.i.payload.mask.eq(word_mask | mask),
            post.o.ready.eq(target.merge | write.i.ready),
            addresses.o.ready.eq(taken),
        ]
        with m.If(taken):
            m.d.sync += [word.eq(merged), word_mask.eq(Mux(target.merge, word_mask | mask, 0))]
        return m
