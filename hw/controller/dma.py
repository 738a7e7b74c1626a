"""The DMA engine: the queue of DMA instructions and the engine that runs them, one at a time.

DMA_LOAD and UOP_LOAD read external bytes through the shared burst reader (:mod:`.reader`),
shift them to the destination's word alignment (:class:`~flexigan.hw.realign.Realign`) and
write them to the crossbar's DMA write port (``ACT``) or, as chunks, to the ``local`` ports of
the groups in the mask (``WGT``, ``PARAM``, ``LUT``, ``UOP``). DMA_STORE reads ``ACT`` words
through the crossbar's DMA read port, realigns them and writes them with an
:class:`~flexigan.hw.axi.AxiBurstWriter`; COUNTERS STORE writes the counter block the same way.

Before a load or store starts, the engine asks the RUN scoreboards whether an earlier RUN
reads what it overwrites (``hazard``, the range in the space's units) and waits while any
says so (``conflict``).
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import exact_log2

from ..arch import isa
from ..axi import AxiBurstWriter, axi4_signature
from ..countdown import Countdown
from ..crossbar import read_port_signature, write_port_signature
from ..fifo import StreamFIFO, StreamSlice
from ..group import act_tag_layout, local_write_layout
from ..realign import Realign, SharedRealign, beat_layout, covering_words
from ..scoreboard import SEQ_BITS
from .reader import SharedReader, read_client_signature

__all__ = ["STORE_DEPTH", "dma_command_layout", "hazard_layout", "unit_shift", "DmaEngine"]

#: Words of ACT read ahead of the store path: enough to cover the round trip of a read (the
#: crossbar port's slice, the bank, this FIFO, the credit's register) at a word per cycle.
STORE_DEPTH = 8
#: Bytes of the counter block COUNTERS STORE writes.
BLOCK_BYTES = 8 * len(isa.COUNTER_NAMES)


def dma_command_layout():
    """A DMA instruction for the engine: DMA_LOAD, DMA_STORE, UOP_LOAD with their operands,
    or COUNTERS (a COUNTERS STORE: only ``dma.ext_addr`` is used)."""
    return data.StructLayout({"op": isa.GlobalOp, "dma": isa.DmaArgs})


def hazard_layout(groups):
    """What the DMA about to start overwrites: the space (``ACT`` for loads and stores of
    activations), the units ``[lo, hi)`` in it, and the groups it writes."""
    return data.StructLayout({"space": isa.Space, "lo": unsigned(24), "hi": unsigned(25),
                              "groups": unsigned(groups)})


def unit_shift(space):
    """log2 of :func:`isa.unit_bytes` of ``space`` (an Amaranth value); 0 for a value that
    names no space."""
    shift = Const(0)
    for s in isa.Space:
        shift = Mux(space == s, exact_log2(isa.unit_bytes(s)), shift)
    return shift


def _aligned(addr, bits):
    """``addr`` with its ``bits`` low bits cleared."""
    return Cat(Const(0, bits), addr[bits:]) if bits else addr


def _lowest(mask):
    """The lowest set bit of ``mask`` (one-hot, or 0)."""
    return (mask & (~mask + 1))[:len(mask)]


def _low(addr, bits):
    """The ``bits`` low bits of ``addr`` (a byte offset in a word of ``2 ** bits`` bytes)."""
    return addr[:bits] if bits else Const(0, 1)


class _Transfer:
    """The registers of the DMA the engine runs, shared by its sequencer and its data paths."""

    def __init__(self, config):
        wb = exact_log2(config.axi_bytes)
        chunk_bits = local_write_layout(config).members["chunk"].members["addr"].width
        # The instruction, its space (ACT for a store), its byte address in the space.
        self.cmd = Signal(dma_command_layout(), name="cur")
        self.space = Signal(isa.Space, name="space")
        # log2 of the space's unit in bytes.
        self.shift = Signal(range(max(exact_log2(isa.unit_bytes(s)) for s in isa.Space) + 1),
                            name="shift")
        # Where a load's words go: ACT, or the local ports of these groups.
        self.to_act = Signal(name="to_act")
        self.to_local = Signal(config.groups, name="to_local")
        # Beats of its external transfer (the reader's or the writer's command).
        self.beats = Signal(24, name="beats")
        # The end of its range in the space's units (the hazard query's ``hi``).
        self.end = Signal(25, name="end")
        self.local = Signal(32, name="local")
        # The next word to write (a load) or read (a store) in the space.
        self.word = Signal(max(config.word_addr_width, chunk_bits - wb), name="word")
        # Commands not yet taken: the reader's or the writer's, the realigner's.
        self.pending = Signal(2, name="pending")
        # ACT words of a store still to request.
        self.rd_left = Countdown(24, "rd_left")
        # The store path carries the counter block.
        self.counters_out = Signal(name="counters_out")
        # Credits for ACT reads: free entries of the store path's read-ahead FIFO, less the
        # reads in flight to it.
        self.credits = Signal(range(STORE_DEPTH + 1), name="credits", init=STORE_DEPTH)
        self.credit = Signal(name="credit", init=1)      # credits != 0
        # The sequencer waits for an instruction.
        self.idle = Signal(name="idle")
        # A scatter load (``chunk`` set): the group its words go to now (in ``to_local``), the
        # groups of the mask after it, the words left of its chunk, a chunk's words and the
        # first word of each chunk.
        self.scatter = Signal(name="scatter")
        self.rest = Signal(config.groups, name="rest")
        self.chunk_left = Countdown(24, "chunk_left")
        self.chunk_words = Signal(24, name="chunk_words")
        self.first_word = Signal.like(self.word, name="first_word")


class DmaEngine(wiring.Component):
    """Runs the DMA instructions of the global program in order (see the module docstring).

    Contract: ``cmd`` takes up to ``config.dma_queue`` instructions ahead of the one running.
    Each is done when its last byte is in its destination (for a store: its last write
    response has arrived); ``finished`` then counts it (modulo ``2 ** SEQ_BITS``). A load or a
    store starts once ``conflict`` is low for its ``hazard`` (a COUNTERS STORE does not wait),
    from the second cycle after ``hazard`` shows it: ``conflict`` may answer two cycles late;
    a load has the reader (``claim`` on :class:`.SharedReader`) from then until its last word
    is written, and ``fetch`` has it otherwise. ``counters`` must offer the block a COUNTERS
    STORE writes, from its first word, until it is done. ``start`` empties the queue and
    zeroes ``finished``. ``busy`` is high while the reader or the writer is, or an instruction
    is queued or running.

    ``error``: the reader or the writer got an error response (SLVERR, DECERR) since
    ``start``. From then on the engine starts no transfer: the one under way completes every
    handshake (its beats are read or sent, whatever their data), and each DMA still queued or
    waiting for a hazard is dropped and counted in ``finished``, so the RUNs that wait for it
    leave the scoreboards and nothing waits forever.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    cmd : In(stream.Signature(dma_command_layout()))
    axi : Out(axi4_signature(addr_width=32, data_width=axi_data_width))
    fetch : In(read_client_signature(axi_data_width))
    act_rd : Out(read_port_signature(...))
    act_wr : Out(write_port_signature(...))
    local : Out(stream.Signature(local_write_layout(config), always_ready=True)).array(groups)
    hazard : Out(hazard_layout(groups))
    conflict : In(groups)
    counters : In(stream.Signature(axi_data_width, always_valid=True))
        The block COUNTERS STORE writes, a word at a time (:class:`.Counters`' ``block``).
    finished : Out(SEQ_BITS)
    start : In(1)
    busy : Out(1)
    error : Out(1)
    """

    def __init__(self, config):
        self._config = config
        g = config.groups
        aw, dw = config.word_addr_width, config.axi_data_width
        super().__init__({
            "cmd": In(stream.Signature(dma_command_layout())),
            "axi": Out(axi4_signature(addr_width=32, data_width=dw)),
            "fetch": In(read_client_signature(dw)),
            "act_rd": Out(read_port_signature(aw, dw, act_tag_layout(config))),
            "act_wr": Out(write_port_signature(aw, dw)),
            "local": Out(stream.Signature(local_write_layout(config), always_ready=True)).array(g),
            "hazard": Out(hazard_layout(g)),
            "conflict": In(g),
            "counters": In(stream.Signature(dw, always_valid=True)),
            "finished": Out(SEQ_BITS),
            "start": In(1),
            "busy": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        dw = cfg.axi_data_width
        m.submodules.reader = reader = SharedReader(cfg)
        m.submodules.writer = writer = AxiBurstWriter(cfg)
        connect(m, reader.axi, flipped(self.axi.read))
        connect(m, writer.axi, flipped(self.axi.write))
        connect(m, flipped(self.fetch), reader.fetch)
        m.d.comb += [reader.start.eq(self.start), writer.clear.eq(self.start),
                     self.error.eq(reader.error | writer.error)]
        t = _Transfer(cfg)
        if cfg.dma_realigners == 2:
            m.submodules.load = load = Realign(dw)
            m.submodules.store = store = Realign(dw)
        else:
            # Loads and stores run one at a time: one realigner serves both, switched while
            # idle (LOAD_END and STORE_END wait for it) by the instruction taken in IDLE.
            m.submodules.realign = shared = SharedRealign(dw)
            load, store = shared.first, shared.second
            m.d.comb += shared.select.eq((t.cmd.op == isa.GlobalOp.DMA_STORE) |
                                         (t.cmd.op == isa.GlobalOp.COUNTERS))
        # Register slices after both realigners: the destinations' write enables and
        # addresses (every group's memories, the crossbar) and the writer's W channel start
        # at flip-flops, and their ``ready`` does not reach back into the realigners.
        # A third before the load realigner: the external memory's read data (straight from
        # block RAM on a board) reaches no shifter, and ``rready`` starts at a flip-flop.
        m.submodules.fetched = fetched = StreamSlice(beat_layout(dw))
        m.submodules.loaded = loaded = StreamSlice(beat_layout(dw))
        m.submodules.stored = stored = StreamSlice(beat_layout(dw))
        connect(m, reader.load.beats, fetched.i)
        connect(m, fetched.o, load.i)
        connect(m, load.o, loaded.i)
        connect(m, store.o, stored.i)
        connect(m, stored.o, writer.i)

        # The issue stage's decision reaches only the queue's entry register.
        queue = StreamFIFO(dma_command_layout(), cfg.dma_queue, entry=True)
        m.submodules.queue = ResetInserter({"sync": self.start})(queue)
        connect(m, flipped(self.cmd), queue.i)

        m.d.comb += self.busy.eq(reader.busy | writer.busy | ~t.idle | queue.o.valid)
        # The hazard query, from the registers the IDLE state sets: the scoreboards register
        # it during PREP, so their answers are ready for the wait.
        dma = t.cmd.dma
        m.d.comb += [self.hazard.space.eq(t.space), self.hazard.lo.eq(dma.local_addr),
                     self.hazard.hi.eq(t.end), self.hazard.groups.eq(dma.group_mask)]
        self._load_path(m, loaded.o, t)
        self._store_path(m, store, t)
        self._sequence(m, queue.o, reader, writer, load, loaded.o, store, t)
        return m

    def _load_path(self, m, words, t):
        """The realigned words of a load (``words``, from the slice), to ACT or to the groups'
        memories."""
        wb = exact_log2(self._config.axi_bytes)
        word, to_act = t.word, t.to_act
        m.d.comb += [
            words.ready.eq(Mux(to_act, self.act_wr.req.ready, 1)),
            self.act_wr.req.valid.eq(words.valid & to_act),
            self.act_wr.req.payload.addr.eq(word),
            self.act_wr.req.payload.data.eq(words.payload.data),
            self.act_wr.req.payload.mask.eq(words.payload.mask),
        ]
        for g, port in enumerate(self.local):
            chunk = port.payload.chunk
            m.d.comb += [
                port.valid.eq(words.valid & t.to_local[g]),
                port.payload.space.eq(t.space),
                chunk.addr.eq(word << wb),
                chunk.data.eq(words.payload.data),
                chunk.mask.eq(words.payload.mask),
            ]
        with m.If(words.valid & words.ready):
            # A scatter load's next chunk goes to the next group of the mask, from the first
            # word again.
            with m.If(t.scatter & t.chunk_left.one):
                after = _lowest(t.rest)
                m.d.sync += [word.eq(t.first_word), t.to_local.eq(after),
                             t.rest.eq(t.rest & ~after), *t.chunk_left.load(t.chunk_words)]
            with m.Else():
                m.d.sync += word.eq(word + 1)
                with m.If(t.scatter):
                    m.d.sync += t.chunk_left.decrement()

    def _store_path(self, m, store, t):
        """The words a store writes, to the store realigner: ``rd_left`` ACT words from
        ``word`` on, read ahead into a FIFO, or the counter block."""
        dw = self._config.axi_data_width
        word, rd_left = t.word, t.rd_left
        m.submodules.ahead = ahead = StreamFIFO(dw, STORE_DEPTH)
        m.d.comb += [
            self.act_rd.req.valid.eq(rd_left.nonzero & t.credit),
            self.act_rd.req.payload.addr.eq(word),
            ahead.i.valid.eq(self.act_rd.resp.valid),
            ahead.i.payload.eq(self.act_rd.resp.payload.data),
        ]
        requested = self.act_rd.req.valid & self.act_rd.req.ready
        with m.If(requested):
            m.d.sync += [word.eq(word + 1), *rd_left.decrement()]
        # The crossbar's ready selects between two results worked out without it.
        kept = t.credits + (ahead.o.valid & ahead.o.ready)
        m.d.sync += [t.credits.eq(Mux(requested, kept - 1, kept)),
                     t.credit.eq(Mux(requested, kept > 1, kept != 0))]
        with m.If(t.counters_out):
            m.d.comb += [store.i.valid.eq(1), store.i.payload.data.eq(self.counters.payload),
                         self.counters.ready.eq(store.i.ready)]
        with m.Else():
            m.d.comb += [store.i.valid.eq(ahead.o.valid), store.i.payload.data.eq(ahead.o.payload),
                         ahead.o.ready.eq(store.i.ready)]

    def _decode(self, m, queue, t):
        """The IDLE and PREP states: take the next instruction with the end of its range (the
        hazard query's), and work out, a cycle later, its byte address in the space and its
        external beats."""
        wb = exact_log2(self._config.axi_bytes)
        dw = self._config.axi_data_width
        dma = t.cmd.dma
        with m.State("IDLE"):
            m.d.comb += [queue.ready.eq(1), t.idle.eq(1)]
            with m.If(queue.valid & self.error):
                m.d.sync += self.finished.eq(self.finished + 1)      # dropped
            with m.Elif(queue.valid):
                e = queue.payload
                target = Mux(e.op == isa.GlobalOp.UOP_LOAD, isa.Space.UOP,
                             Mux(e.op == isa.GlobalOp.DMA_STORE, isa.Space.ACT, e.dma.space))
                shift = unit_shift(target)
                # A scatter load overwrites a chunk in each group: the hazard query's range.
                each = Mux(e.dma.chunk != 0, e.dma.chunk, e.dma.length)
                m.d.sync += [t.cmd.eq(e), t.space.eq(target), t.shift.eq(shift),
                             t.end.eq(e.dma.local_addr + (each >> shift))]
                with m.If(e.op == isa.GlobalOp.COUNTERS):
                    m.d.sync += [t.cmd.dma.length.eq(BLOCK_BYTES), t.cmd.dma.local_addr.eq(0),
                                 t.cmd.dma.chunk.eq(0)]
                m.next = "PREP"
        with m.State("PREP"):
            to_act = t.space == isa.Space.ACT
            scatter = (dma.chunk != 0) & ~to_act
            first = _lowest(dma.group_mask)
            m.d.sync += [t.local.eq(dma.local_addr << t.shift),
                         t.beats.eq(covering_words(_low(dma.ext_addr, wb), dma.length, dw)),
                         t.to_act.eq(to_act),
                         t.to_local.eq(Mux(to_act, 0, Mux(scatter, first, dma.group_mask))),
                         t.scatter.eq(scatter), t.rest.eq(dma.group_mask & ~first),
                         t.chunk_words.eq(dma.chunk >> wb)]
            with m.Switch(t.cmd.op):
                with m.Case(isa.GlobalOp.DMA_LOAD, isa.GlobalOp.UOP_LOAD):
                    m.next = "LOAD_WAIT"
                with m.Case(isa.GlobalOp.DMA_STORE):
                    m.next = "STORE_WAIT"
                with m.Default():               # COUNTERS STORE
                    m.d.sync += [t.counters_out.eq(1), t.pending.eq(0b11)]
                    m.next = "STORE"

    def _sequence(self, m, queue, reader, writer, load, loaded, store, t):
        """The FSM that takes each instruction from ``queue`` and gives its commands to the
        reader or the writer and the realigner, claiming the reader for loads."""
        dw = self._config.axi_data_width
        wb = exact_log2(self._config.axi_bytes)
        local, word, pending = t.local, t.word, t.pending
        # The scoreboards register the query during PREP, and then their answers, a record at
        # a time (their comparisons were the design's critical path, into the reader's claim
        # and then into a register here): the answers hold for the DMA in ``t`` from the second
        # cycle of the wait on, as every RUN it waits for is released by the first and later
        # changes only clear conflicts. The cycle is one of STORE_SETUP's (a load's hides
        # behind the reader's last fetch, within LOAD_SETUP).
        checked = Signal()
        m.d.sync += checked.eq(0)
        clear = checked & ~self.conflict.any()
        dma = t.cmd.dma
        read = reader.load.cmd
        # The claim on the reader is a register (it selects the reader's command): it rises
        # the cycle after the load is clear to start, and falls when the load is done.
        claim = Signal()
        m.d.comb += reader.claim.eq(claim)
        # The commands' payloads come from registers whatever the state (their valids do not).
        m.d.comb += [
            read.payload.addr.eq(_aligned(dma.ext_addr, wb)),
            read.payload.beats.eq(t.beats),
            writer.cmd.payload.addr.eq(_aligned(dma.ext_addr, wb)),
            writer.cmd.payload.beats.eq(t.beats),
        ]
        for realign, src, dst in ((load, dma.ext_addr, local), (store, local, dma.ext_addr)):
            m.d.comb += [realign.cmd.payload.src_offset.eq(_low(src, wb)),
                         realign.cmd.payload.dst_offset.eq(_low(dst, wb)),
                         realign.cmd.payload.length.eq(dma.length)]
        with m.FSM(name="dma"):
            self._decode(m, queue, t)
            with m.State("LOAD_WAIT"):
                m.d.sync += checked.eq(1)
                with m.If(clear):
                    m.d.sync += claim.eq(1)
                with m.If(self.error):
                    self._drop(m, claim)
                with m.Elif(claim & ~reader.busy):
                    m.d.sync += [pending.eq(0b11), word.eq(local[wb:]),
                                 t.first_word.eq(local[wb:]),
                                 *t.chunk_left.load(t.chunk_words)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [read.valid.eq(pending[0]), load.cmd.valid.eq(pending[1])]
                left = pending & ~Cat(read.ready, load.cmd.ready)
                m.d.sync += pending.eq(left)
                with m.If(left == 0):
                    m.next = "LOAD_END"
            with m.State("LOAD_END"):
                # The realigner has produced every word and the slice has passed the last on.
                with m.If(load.cmd.ready & ~loaded.valid):
                    m.d.sync += [self.finished.eq(self.finished + 1), claim.eq(0)]
                    m.next = "IDLE"
            with m.State("STORE_WAIT"):
                m.d.sync += checked.eq(1)
                with m.If(self.error):
                    self._drop(m, claim)
                with m.Elif(clear):
                    m.d.sync += [pending.eq(0b11), word.eq(local[wb:]),
                                 *t.rd_left.load(covering_words(_low(local, wb), dma.length,
                                                                dw))]
                    m.next = "STORE"
            with m.State("STORE"):
                m.d.comb += [writer.cmd.valid.eq(pending[0]), store.cmd.valid.eq(pending[1])]
                m.d.sync += pending.eq(pending & ~Cat(writer.cmd.ready, store.cmd.ready))
                with m.If(pending == 0):
                    m.next = "STORE_END"
            with m.State("STORE_END"):
                with m.If(~writer.busy & store.cmd.ready & ~t.rd_left.nonzero &
                          ~t.counters_out):
                    m.d.sync += self.finished.eq(self.finished + 1)
                    m.next = "IDLE"
                with m.If(t.counters_out & store.cmd.ready):
                    m.d.sync += t.counters_out.eq(0)
        with m.If(self.start):
            m.d.sync += self.finished.eq(0)

    def _drop(self, m, claim):
        """After an error response: count the waiting DMA as done without starting it."""
        m.d.sync += [self.finished.eq(self.finished + 1), claim.eq(0)]
        m.next = "IDLE"
