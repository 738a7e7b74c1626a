"""The engine group's top: its memories and blocks (see :mod:`flexigan.hw.group`), joined."""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..agen import AddressGenerator, agen_step_layout
from ..arch import isa
from ..arch.config import RUN_SLOTS
from ..crossbar import read_port_signature, write_port_signature
from ..fifo import StreamFIFO, StreamSlice
from ..memories import ElementMemory, WeightBuffer
from ..sparse import SparseCore
from .act_fetch import ActFetch
from .decoder import Decoder
from .execute import Execute
from .layouts import (
    act_tag_layout,
    body_layout,
    job_layout,
    local_write_layout,
    mac_layout,
    slot_layout,
)
from .post_writer import PostWriter
from .run_queue import RunQueue
from .weight_fetch import WeightFetch

__all__ = ["Group"]


class Group(wiring.Component):
    """A SIMD engine group (see :mod:`flexigan.hw.group`).

    Contract: a RUN accepted on ``run`` (while fewer than :data:`RUN_SLOTS` RUNs are held)
    executes per docs/isa.md after the RUNs before it; ``slots`` shows every held RUN until
    it is complete, i.e. until its last byte is written to ACT, and ``busy`` is high while any
    is held. DMA chunks on ``dma`` write the group's memories (the space selects which; the
    address is a byte address in it) at one chunk per cycle, concurrently with RUNs: the
    controller keeps them off what a held RUN reads. ``bypass`` disables zero skipping.
    ``error`` is sticky (see :mod:`flexigan.hw.group`); ``macs_issued``/``macs_skipped``
    count multiplies; ``clear`` zeroes the counters and ``error`` (from the cycle after next: it
    is registered).

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
        address_width, data_width = config.word_addr_width, config.axi_data_width
        super().__init__({
            "run": In(stream.Signature(isa.RunArgs)),
            "slots": Out(data.ArrayLayout(slot_layout(), RUN_SLOTS)),
            "busy": Out(1),
            "dma": In(stream.Signature(local_write_layout(config), always_ready=True)),
            "act_rd": Out(read_port_signature(address_width, data_width,
                                              act_tag_layout(config))),
            "act_wr": Out(write_port_signature(address_width, data_width)),
            "bypass": In(1),
            "clear": In(1),
            "error": Out(1),
            "macs_issued": Out(64),
            "macs_skipped": Out(64),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        depth = config.fifo_depth
        m.submodules.post = post = PostWriter(config)
        uops, params, weights = self._memories(m, post)

        m.submodules.queue = queue = RunQueue()
        connect(m, flipped(self.run), queue.i)
        m.d.comb += [queue.done.eq(post.done), self.slots.eq(queue.slots),
                     self.busy.eq(queue.busy)]

        # Decoder -> access engine and execute engine.
        m.submodules.decoder = decoder = Decoder(config)
        connect(m, queue.o, decoder.run)
        connect(m, decoder.uop, uops.r)
        m.submodules.agen = agen = AddressGenerator(config)
        connect(m, decoder.agen, agen.cmd)
        m.submodules.bodies = bodies = StreamFIFO(body_layout(config), 2)
        connect(m, decoder.body, bodies.i)

        m.submodules.fetch = fetch = ActFetch(config, depth)
        # A register slice: the crossbar's grant decides the fetch's ready, which would
        # otherwise run on into the address generator's next-state logic.
        m.submodules.steps_in = steps_in = StreamSlice(agen_step_layout(config))
        connect(m, agen.o, steps_in.i)
        connect(m, steps_in.o, fetch.i)
        connect(m, fetch.port, flipped(self.act_rd))
        # ``clear`` comes from the controller's decoding of START: registered here, it reaches
        # the 64-bit counters from a flip-flop.
        clear = Signal()
        m.d.sync += clear.eq(self.clear)
        m.submodules.sparse = sparse = SparseCore(config)
        connect(m, fetch.o, sparse.i)
        m.d.comb += [sparse.bypass.eq(self.bypass), sparse.clear.eq(clear),
                     self.macs_skipped.eq(sparse.skipped)]
        m.submodules.wfetch = weight_fetch = WeightFetch(config)
        connect(m, sparse.o, weight_fetch.i)
        connect(m, weight_fetch.buffer, weights.r)
        m.submodules.steps = steps = StreamFIFO(mac_layout(config), depth)
        connect(m, weight_fetch.o, steps.i)

        m.submodules.execute = execute = Execute(config)
        connect(m, bodies.o, execute.body)
        connect(m, steps.o, execute.steps)
        m.d.comb += [execute.bypass.eq(self.bypass), execute.clear.eq(clear),
                     self.macs_issued.eq(execute.issued)]
        # A register slice: the post-writer's decision to take the next job (its pipeline's
        # ready, the job's lanes) ran into the job queue's read logic (81.3 MHz on the 2 x 8
        # ULX3S cut).
        m.submodules.jobs_in = jobs_in = StreamSlice(job_layout(config))
        connect(m, execute.jobs, jobs_in.i)
        connect(m, jobs_in.o, post.jobs)
        connect(m, post.param, params.r)
        connect(m, post.param_w, params.e)
        connect(m, post.port, flipped(self.act_wr))

        with m.If(clear):
            m.d.sync += self.error.eq(0)
        with m.Elif(decoder.error):
            m.d.sync += self.error.eq(1)
        return m

    def _memories(self, m, post):
        """The memories DMA writes (the activation tables live in ``post``); returns the
        micro-op, PARAM and weight memories."""
        config = self._config
        m.submodules.uops = uops = ElementMemory(element_bytes=isa.UOP_BYTES,
                                                 depth=config.uop_depth,
                                                 chunk_bytes=config.axi_bytes)
        m.submodules.params = params = ElementMemory(element_bytes=isa.PARAM_BYTES,
                                                     depth=config.param_entries,
                                                     chunk_bytes=config.axi_bytes,
                                                     element_write=True)
        m.submodules.weights = weights = WeightBuffer(config)
        targets = {isa.Space.UOP: uops.w, isa.Space.PARAM: params.w,
                   isa.Space.WGT: weights.w, isa.Space.LUT: post.lut_w}
        chunk = self.dma.payload.chunk
        for space, port in targets.items():
            # Field by field: each memory's address is narrower than the widest space's.
            m.d.comb += [port.valid.eq(self.dma.valid & (self.dma.payload.space == space)),
                         port.payload.addr.eq(chunk.addr), port.payload.data.eq(chunk.data),
                         port.payload.mask.eq(chunk.mask)]
        return uops, params, weights
