"""A group's local memories, written by the DMA engine one aligned chunk per cycle.

The DMA engine delivers a transfer as *chunks*: ``axi_bytes`` bytes at a byte address aligned
to ``axi_bytes``, with a byte mask (see :mod:`flexigan.hw.realign`). Every local memory takes
one chunk per cycle, whatever its own element size, so loading the constants of a tile runs at
the AXI rate:

- :class:`ElementMemory` (PARAM entries, micro-ops, activation tables) reads one element per
  cycle; its words are ``max(element, chunk)`` bytes wide and a read selects the element;
- :class:`WeightBuffer` reads ``lanes`` consecutive bytes (one weight per lane) at any byte
  address per cycle, from ``lanes`` interleaved banks, through an output register.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

__all__ = ["chunk_layout", "element_write_layout", "sync_read_signature", "ElementMemory",
           "WeightBuffer"]


def _power_of_two(name, value):
    if not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a positive power of two, not {value!r}")


def chunk_layout(addr_width, chunk_bytes):
    """One DMA chunk for a local memory: byte address (aligned), bytes, byte mask."""
    return data.StructLayout({"addr": unsigned(addr_width), "data": unsigned(8 * chunk_bytes),
                              "mask": unsigned(chunk_bytes)})


def element_write_layout(depth, element_bytes):
    """One element for an :class:`ElementMemory`: its index, bytes and byte mask."""
    return data.StructLayout({"index": unsigned(ceil_log2(depth)),
                              "data": unsigned(8 * element_bytes),
                              "mask": unsigned(element_bytes)})


def sync_read_signature(addr_width, shape):
    """A synchronous read port, as the memory sees it: ``data`` follows ``addr`` by one cycle
    of ``en``."""
    return wiring.Signature({"en": In(1), "addr": In(addr_width), "data": Out(shape)})


class ElementMemory(wiring.Component):
    """``depth`` elements of ``element_bytes`` bytes (little-endian), chunk-written.

    Contract: a chunk on ``w`` writes its masked bytes at byte addresses ``addr ..
    addr + chunk_bytes - 1`` (``addr`` aligned to ``chunk_bytes``; element ``i`` is bytes
    ``i * element_bytes ...``). ``r`` behaves like a synchronous memory read port: the element
    at ``r.addr`` in a cycle with ``r.en`` is on ``r.data`` from the next cycle until the next
    enabled read; a read and a write of the same bytes in one cycle returns the old bytes.
    With ``registered``, the word read is registered beside the block RAM before the element
    is selected: reads are then a two-stage pipeline moving in the cycles with ``r.en``, as
    :class:`WeightBuffer`'s (an element read in an enabled cycle is on ``r.data`` from the
    cycle after the next enabled cycle).

    With ``element_write``, ``e`` writes the masked bytes of one element (its index, its
    bytes, a bit per byte) through the same block RAM write port: it is ready in the cycles
    without a chunk on ``w``, which goes first (the DMA engine does not wait).

    Parameters
    ----------
    element_bytes, depth, chunk_bytes : int
        Powers of two.
    registered, element_write : bool

    Attributes
    ----------
    w : In(stream.Signature(chunk_layout(...), always_ready=True))
    r : Out(sync_read_signature(ceil_log2(depth), 8 * element_bytes))
    e : In(stream.Signature(element_write_layout(...))), with ``element_write``
    """

    def __init__(self, *, element_bytes, depth, chunk_bytes, registered=False,
                 element_write=False):
        for name, value in (("element_bytes", element_bytes), ("depth", depth),
                            ("chunk_bytes", chunk_bytes)):
            _power_of_two(f"ElementMemory {name}", value)
        self._e, self._depth, self._c = element_bytes, depth, chunk_bytes
        self._registered = registered
        self._word = max(element_bytes, chunk_bytes)
        if depth * element_bytes < self._word:
            raise ValueError(f"ElementMemory of {depth * element_bytes} bytes is smaller than "
                             f"one {self._word}-byte word")
        self._element_write = element_write
        ports = {
            "w": In(stream.Signature(chunk_layout(ceil_log2(depth * element_bytes),
                                                  chunk_bytes), always_ready=True)),
            "r": Out(sync_read_signature(ceil_log2(depth), 8 * element_bytes)),
        }
        if element_write:
            ports["e"] = In(stream.Signature(element_write_layout(depth, element_bytes)))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        e, c, word = self._e, self._c, self._word
        m.submodules.mem = mem = memory.Memory(shape=8 * word,
                                               depth=self._depth * e // word, init=[])
        wp = mem.write_port(granularity=8)
        rp = mem.read_port()
        chunk = self.w.payload
        word_shift = exact_log2(word)
        m.d.comb += wp.addr.eq(chunk.addr >> word_shift)
        if word == c:
            m.d.comb += wp.data.eq(chunk.data)
            with m.If(self.w.valid):
                m.d.comb += wp.en.eq(chunk.mask)
        else:
            # A chunk fills one part of a wider word.
            part = chunk.addr[exact_log2(c):word_shift]
            m.d.comb += wp.data.eq(Cat(chunk.data for _ in range(word // c)))
            with m.If(self.w.valid):
                m.d.comb += wp.en.eq(chunk.mask << (part * c))
        if self._element_write:
            self._write_element(m, wp)

        per_word = word // e
        m.d.comb += [rp.addr.eq(self.r.addr >> exact_log2(per_word)), rp.en.eq(self.r.en)]
        # The element's place in the word, and the word, in each stage of the read.
        sub = Signal(range(per_word))
        with m.If(self.r.en):
            m.d.sync += sub.eq(self.r.addr[:exact_log2(per_word)])
        data = rp.data
        if self._registered:
            data, late = Signal.like(rp.data, name="word"), Signal.like(sub, name="sub_late")
            with m.If(self.r.en):
                m.d.sync += [data.eq(rp.data), late.eq(sub)]
            sub = late
        m.d.comb += self.r.data.eq(data if per_word == 1 else data.word_select(sub, 8 * e))
        return m


    def _write_element(self, m, wp):
        """``e`` on the write port in the cycles without a chunk."""
        e, word = self._e, self._word
        element = self.e.payload
        per_word = word // e
        m.d.comb += self.e.ready.eq(~self.w.valid)
        with m.If(self.e.valid & ~self.w.valid):
            place = element.index[:exact_log2(per_word)] if per_word > 1 else 0
            m.d.comb += [wp.addr.eq(element.index >> exact_log2(per_word)),
                         wp.data.eq(Cat(element.data for _ in range(per_word))),
                         wp.en.eq(element.mask << (place * e))]


class WeightBuffer(wiring.Component):
    """A group's weight buffer: ``lanes`` weights per read, from any byte address.

    Contract: chunks on ``w`` write bytes as :class:`ElementMemory` does. Reads are a
    two-stage pipeline that moves in the cycles with ``r.en``: a read of ``r.addr = a`` in an
    enabled cycle puts bytes ``a, a + 1, ..., a + lanes - 1`` (modulo the buffer size) on
    ``r.data[0] .. r.data[lanes - 1]`` from the cycle after the next enabled cycle until the
    one after that (:data:`READ_LATENCY` enabled cycles). The banks' words are registered
    beside the block RAMs before the lanes' rotation: a block RAM's read (ECP5's DP16KD: 5.8
    ns clock to output) was the start of the ULX3S cut's critical path.

    Byte ``a`` lives in bank ``a mod lanes``, so any ``lanes`` consecutive bytes are in
    different banks; a bank word holds ``max(1, chunk_bytes / lanes)`` bytes so that a chunk
    writes each bank at most once.

    Parameters
    ----------
    config : AcceleratorConfig
        ``lanes``, ``weight_bytes`` and ``axi_bytes`` (the chunk size), powers of two.

    Attributes
    ----------
    w : In(stream.Signature(chunk_layout(...), always_ready=True))
    r : Out(sync_read_signature(..., data.ArrayLayout(8, lanes)))
    """

    #: Enabled cycles from a read's address to its bytes on ``r.data``.
    READ_LATENCY = 2

    def __init__(self, config):
        for name in ("lanes", "weight_bytes", "axi_bytes"):
            _power_of_two(f"WeightBuffer: AcceleratorConfig.{name}", getattr(config, name))
        self._config = config
        aw = ceil_log2(config.weight_bytes)
        super().__init__({
            "w": In(stream.Signature(chunk_layout(aw, config.axi_bytes), always_ready=True)),
            "r": Out(sync_read_signature(aw, data.ArrayLayout(8, config.lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        lanes, c = self._config.lanes, self._config.axi_bytes
        k = max(1, c // lanes)                       # bytes per bank word
        depth = self._config.weight_bytes // (lanes * k)
        lane_bits, k_bits = exact_log2(lanes), exact_log2(k)
        chunk = self.w.payload
        a = self.r.addr
        # The row after ``a``'s, once for all banks: a bank's row is ``a``'s or this one, a
        # multiplexer rather than an adder per bank on the path to the block RAMs.
        row_a, row_next = Signal(len(a) - lane_bits + 1), Signal(len(a) - lane_bits + 1)
        m.d.comb += [row_a.eq(a[lane_bits:]), row_next.eq(a[lane_bits:] + 1)]
        # The rotation (and a bank word's byte) of the read in each pipeline stage.
        rot = [Signal(range(lanes), name=f"rot{s}") for s in (1, 2)]
        with m.If(self.r.en):
            m.d.sync += [rot[0].eq(a[:lane_bits]), rot[1].eq(rot[0])]
        bank_bytes = []
        for b in range(lanes):
            mem = memory.Memory(shape=8 * k, depth=depth, init=[])
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port(granularity=8)
            rp = mem.read_port()
            if c >= lanes:
                # The chunk covers k whole rows of ``lanes`` bytes: byte j*lanes + b is ours.
                m.d.comb += [
                    wp.addr.eq(chunk.addr >> exact_log2(c)),
                    wp.data.eq(Cat(chunk.data.word_select(j * lanes + b, 8) for j in range(k))),
                ]
                with m.If(self.w.valid):
                    m.d.comb += wp.en.eq(Cat(chunk.mask[j * lanes + b] for j in range(k)))
            else:
                # The chunk covers c bytes of one row: bank b takes byte b mod c if it is in it.
                m.d.comb += [wp.addr.eq(chunk.addr >> lane_bits),
                             wp.data.eq(chunk.data.word_select(b % c, 8))]
                with m.If(self.w.valid & (chunk.addr[exact_log2(c):lane_bits] == b // c)):
                    m.d.comb += wp.en.eq(chunk.mask[b % c])
            # Bank b holds the byte of lane (b - a) mod lanes: a's row, or the next one.
            row = Signal(len(a) - lane_bits + 1, name=f"row{b}")
            m.d.comb += row.eq(Mux(a[:lane_bits] > b, row_next, row_a))
            m.d.comb += [rp.addr.eq(row >> k_bits), rp.en.eq(self.r.en)]
            word = Signal.like(rp.data, name=f"word{b}")
            with m.If(self.r.en):
                m.d.sync += word.eq(rp.data)
            if k == 1:
                bank_bytes.append(word)
            else:
                sub = [Signal(k_bits, name=f"sub{b}_{s}") for s in (1, 2)]
                with m.If(self.r.en):
                    m.d.sync += [sub[0].eq(row[:k_bits]), sub[1].eq(sub[0])]
                bank_bytes.append(word.word_select(sub[1], 8))
        # Lane l takes bank (rot + l) mod lanes: the banks rotated by ``rot`` bytes, one
        # logarithmic shifter (a multiplexer per lane from every bank was twice its size).
        banks = Cat(bank_bytes)
        m.d.comb += self.r.data.eq((Cat(banks, banks) >> (rot[1] * 8))[:8 * lanes])
        return m
