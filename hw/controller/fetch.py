"""Instruction fetch: the prefetcher and the queue of global instructions ahead of issue.

The prefetcher reads ``config.fetch_insns`` instructions per command through the shared burst
reader (:mod:`.reader`) whenever the queue, counting the instructions already requested, has
room for them all, so fetching overlaps everything the program does besides DMA loads. The
beats are packed into 256-bit instructions: several beats per instruction when the AXI data
width is narrower, several instructions per beat when it is wider.
"""

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..arch import isa
from ..fifo import StreamFIFO
from .reader import read_client_signature

__all__ = ["Fetcher"]

INSN_BITS = 8 * isa.GLOBAL_BYTES


class Fetcher(wiring.Component):
    """Fetches the global program into a queue of ``config.queue_insns`` instructions.

    Contract: ``start`` empties the queue and restarts fetching at ``base``; while ``running``
    the instructions from there on leave ``insn`` in program order. An instruction enters the
    queue with its last beat and is on ``insn`` :data:`~flexigan.hw.arch.timing.FETCH_DELAY`
    cycles later. Fetches in flight count against the queue's room, so the queue never
    refuses an instruction and the reader never stalls on a fetch. Beats that arrive while not
    ``running`` (fetched for a finished program) are dropped. ``pc`` is the address of the
    next fetch.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    read : Out(read_client_signature(axi_data_width))
    insn : Out(stream.Signature(isa.GlobalInsn))
    running, start : In(1)
    base : In(32)
    pc : Out(32)
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "read": Out(read_client_signature(config.axi_data_width)),
            "insn": Out(stream.Signature(isa.GlobalInsn)),
            "running": In(1),
            "start": In(1),
            "base": In(32),
            "pc": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        per_fetch, queue_insns = cfg.fetch_insns, cfg.queue_insns
        queue = StreamFIFO(isa.GlobalInsn, queue_insns)
        m.submodules.queue = ResetInserter({"sync": self.start})(queue)
        connect(m, queue.o, flipped(self.insn))

        fetch_bytes = per_fetch * isa.GLOBAL_BYTES
        inflight = Signal(range(queue_insns + 1))    # fetched instructions not yet queued
        cmd = self.read.cmd
        # Whether the queue has room for another fetch, registered (the queue's level was a
        # long path into the reader's command): computed from this cycle's level, in-flight
        # count and fetch, ignoring this cycle's dequeue, so it is never optimistic and
        # lags a dequeue by a cycle.
        room = Signal(init=1)
        taken = cmd.valid & cmd.ready
        m.d.sync += room.eq(queue.level + inflight + per_fetch * taken + per_fetch
                            <= queue_insns)
        m.d.comb += [
            cmd.valid.eq(self.running & room),
            cmd.payload.addr.eq(self.pc),
            cmd.payload.beats.eq(fetch_bytes // cfg.axi_bytes),
        ]
        queued = queue.i.valid & queue.i.ready
        with m.If(self.start):
            m.d.sync += inflight.eq(0)
        with m.Elif(cmd.valid & cmd.ready):
            m.d.sync += [inflight.eq(inflight + per_fetch - queued),
                         self.pc.eq(self.pc + fetch_bytes)]
        with m.Elif(queued):
            m.d.sync += inflight.eq(inflight - 1)
        with m.If(self.start):
            m.d.sync += [self.pc.eq(self.base), room.eq(1)]

        fetch_ready = self._pack(m, queue.i)
        # Beats fetched for a finished program are dropped.
        m.d.comb += self.read.beats.ready.eq(Mux(self.running, fetch_ready, 1))
        return m

    def _pack(self, m, queue):
        """Drives ``queue`` with the instructions in the beats; returns whether a beat is
        taken."""
        dw = self._config.axi_data_width
        beats = self.read.beats
        beat = beats.payload.data
        taken = Signal()
        valid = beats.valid & self.running
        if dw <= INSN_BITS:
            per_insn = INSN_BITS // dw
            if per_insn == 1:
                m.d.comb += [queue.payload.eq(beat), queue.valid.eq(valid),
                             taken.eq(queue.ready)]
                return taken
            shift = Signal(INSN_BITS - dw)     # the instruction's earlier beats
            part = Signal(range(per_insn))
            final = part == per_insn - 1
            m.d.comb += [queue.payload.eq(Cat(shift, beat)), queue.valid.eq(valid & final),
                         taken.eq(~final | queue.ready)]
            with m.If(beats.valid & taken):
                m.d.sync += [shift.eq(Cat(shift, beat)[dw:]), part.eq(Mux(final, 0, part + 1))]
        else:
            per_beat = dw // INSN_BITS
            part = Signal(range(per_beat))     # the beat's instruction on the queue
            final = part == per_beat - 1
            m.d.comb += [queue.payload.eq(beat.word_select(part, INSN_BITS)),
                         queue.valid.eq(valid), taken.eq(final & queue.ready)]
            with m.If(queue.valid & queue.ready):
                m.d.sync += part.eq(Mux(final, 0, part + 1))
        with m.If(self.start):
            m.d.sync += part.eq(0)
        return taken
