"""On-chip memory with an AXI4 slave port (the accelerator's) and an AXI4-Lite slave port (the
host bridge's), on one simple dual-port :class:`amaranth.lib.memory.Memory`.

Reads share the memory's read port and writes its write port: each side serves one transaction
at a time, an AXI4 burst ahead of an AXI4-Lite word waiting at the same moment, so the host's
accesses go between the accelerator's bursts.
"""

from amaranth.hdl import Array, Cat, ClockSignal, Elaboratable, Instance, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In
from amaranth.utils import ceil_log2, exact_log2

from .axi import axi4_lite_signature, axi4_signature
from .fifo import StreamSlice

__all__ = ["READ_LATENCY", "OnChipMemory", "SpramBanks", "SPRAM_ROWS"]

#: Rows of 16 bits in one iCE40UP5K SB_SPRAM256KA.
SPRAM_ROWS = 16384

#: An AXI4 read burst (or AXI4-Lite read) accepted on AR in cycle ``t`` presents its first beat
#: on R in cycle ``t + READ_LATENCY``; further beats follow one per cycle while ``rready`` is
#: high. A register between the AR handshake and the memory's synchronous read port, and a
#: register slice after it: R starts at flip-flops, not at the block RAMs' outputs and the
#: multiplexer between them (a block RAM's clock-to-output is 4 ns on the ECP5-6).
READ_LATENCY = 3

_LITE_BYTES = 4


class OnChipMemory(wiring.Component):
    """``depth`` bytes of memory, little-endian: byte ``a`` is bits ``8 * (a % n)`` up of row
    ``a // n``, where ``n = data_width // 8``.

    Contract:

    - ``axi``: incrementing bursts of full-width beats (``AxSIZE`` = ``log2(n)``, as the
      accelerator issues them); ``wstrb`` selects the bytes written. One read burst and one
      write burst in flight at a time; a read issued while a write to the same bytes is in
      flight may see either value (AXI orders neither channel against the other).
    - ``axil``: 32-bit words at byte address ``4 * k``, with ``wstrb``; a write is taken when
      its address and its data are both offered.
    - Latency: :data:`READ_LATENCY`; a write beat is in the memory the cycle after its
      handshake. Responses are OKAY; addresses wrap at the next power of two of rows, so the
      masters must stay below ``depth``.

    Parameters
    ----------
    depth : int
        Bytes; a positive multiple of ``data_width // 8``.
    data_width : int
        Of ``axi`` (a power of two, 32 or more).
    single_port : bool
        One access per cycle, as in the iCE40UP5K's SPRAM (where, on an iCE40 platform, the
        rows are :class:`SpramBanks` when there are a multiple of 16 K of them): a write waits
        while a read beat is held, a read waits for a write. Otherwise a read and a write may
        share a cycle (block RAM).

    Attributes
    ----------
    axi : In(axi4_signature(addr_width=32, data_width=data_width))
    axil : In(axi4_lite_signature(addr_width=32))
    data : MemoryData
        The contents, one ``data_width``-bit row per element (for a simulation's backdoor).
    """

    def __init__(self, depth, data_width, single_port=False):
        if not isinstance(data_width, int) or data_width < 32 or data_width & (data_width - 1):
            raise ValueError(f"OnChipMemory data_width must be a power of two >= 32, not "
                             f"{data_width!r}")
        row_bytes = data_width // 8
        if not isinstance(depth, int) or depth <= 0 or depth % row_bytes:
            raise ValueError(f"OnChipMemory depth must be a positive multiple of {row_bytes} "
                             f"bytes, not {depth!r}")
        self._data_width = data_width
        self._single_port = single_port
        self._memory = Memory(shape=data_width, depth=depth // row_bytes, init=[])
        super().__init__({
            "axi": In(axi4_signature(addr_width=32, data_width=data_width)),
            "axil": In(axi4_lite_signature(addr_width=32)),
        })

    @property
    def data(self):
        return self._memory.data

    @property
    def _row_shift(self):
        return exact_log2(self._data_width // 8)

    def _row(self, addr):
        return addr[self._row_shift:self._row_shift + ceil_log2(self._memory.depth)]

    def _lane(self, addr):
        """The 32-bit lane of a row that AXI4-Lite byte address ``addr`` falls in."""
        return addr[exact_log2(_LITE_BYTES):self._row_shift]

    def elaborate(self, platform):
        m = Module()
        rows = self._memory.depth
        # Amaranth's iCE40 platforms say "iCE40", its ECP5 ones "ecp5". A memory smaller than
        # an SPRAM's 16 K rows stays in block RAM.
        ice40 = str(getattr(platform, "family", "")).lower() == "ice40"
        if self._single_port and ice40 and rows % SPRAM_ROWS == 0:
            m.submodules.memory = storage = SpramBanks(rows)
            read, write = storage.read, storage.write
        else:
            m.submodules.memory = self._memory
            read, write = self._memory.read_port(), self._memory.write_port(granularity=8)
        # One access per cycle on a single port: the read side yields to a write unless it
        # holds a beat not yet taken (the port's output must not change under it).
        holding, writing = Signal(), Signal()
        self._reads(m, read, grant=~writing if self._single_port else 1, holding=holding)
        self._writes(m, write, grant=~holding if self._single_port else 1, writing=writing)
        return m

    def _reads(self, m, port, grant, holding):
        axi, lite = self.axi.read, self.axil
        busy, from_lite = Signal(), Signal()
        row = Signal.like(port.addr)
        lane = Signal.like(self._lane(lite.araddr))
        to_issue = Signal(9)            # beats still to read from the memory
        valid, last, rid = Signal(), Signal(), Signal.like(axi.arid)
        # The R beats leave through a register slice; the port's output holds a beat until
        # the slice takes it.
        m.submodules.r_slice = out = StreamSlice(data.StructLayout({
            "data": len(port.data), "last": 1, "id": len(rid), "lite": 1}))
        taken = out.i.ready
        m.d.comb += holding.eq(valid & ~taken)
        advance = ~valid | taken
        issue = advance & grant & (to_issue != 0)
        beat = out.o.payload
        m.d.comb += [
            port.addr.eq(row), port.en.eq(issue),
            out.i.valid.eq(valid),
            out.i.payload.data.eq(Mux(from_lite, port.data.word_select(lane, 32)
                                      if len(lane) else port.data, port.data)),
            out.i.payload.last.eq(last), out.i.payload.id.eq(rid),
            out.i.payload.lite.eq(from_lite),
            axi.rdata.eq(beat.data), axi.rid.eq(beat.id), axi.rlast.eq(beat.last),
            axi.rvalid.eq(out.o.valid & ~beat.lite), lite.rvalid.eq(out.o.valid & beat.lite),
            lite.rdata.eq(beat.data[:32]),
            out.o.ready.eq(Mux(beat.lite, lite.rready, axi.rready)),
        ]
        with m.If(advance):
            m.d.sync += [valid.eq(issue), last.eq(to_issue == 1)]
            with m.If(issue):
                m.d.sync += [row.eq(row + 1), to_issue.eq(to_issue - 1)]
        with m.If(valid & taken & (last | from_lite)):
            m.d.sync += busy.eq(0)
        with m.If(~busy):
            m.d.comb += [axi.arready.eq(1), lite.arready.eq(~axi.arvalid)]
            with m.If(axi.arvalid):
                m.d.sync += [busy.eq(1), from_lite.eq(0), row.eq(self._row(axi.araddr)),
                             to_issue.eq(axi.arlen + 1), rid.eq(axi.arid)]
            with m.Elif(lite.arvalid):
                m.d.sync += [busy.eq(1), from_lite.eq(1), row.eq(self._row(lite.araddr)),
                             lane.eq(self._lane(lite.araddr)), to_issue.eq(1)]

    def _writes(self, m, port, grant, writing):
        axi, lite = self.axi.write, self.axil
        m.d.comb += writing.eq(port.en.any())
        row, from_lite, bid = Signal.like(port.addr), Signal(), Signal.like(axi.awid)
        lanes = self._data_width // 32
        with m.FSM():
            with m.State("IDLE"):
                lite_both = ~axi.awvalid & lite.awvalid & lite.wvalid & grant
                lane = self._lane(lite.awaddr)
                m.d.comb += [axi.awready.eq(1), lite.awready.eq(lite_both),
                             lite.wready.eq(lite_both)]
                with m.If(axi.awvalid):
                    m.d.sync += [row.eq(self._row(axi.awaddr)), bid.eq(axi.awid),
                                 from_lite.eq(0)]
                    m.next = "BURST"
                with m.Elif(lite_both):
                    m.d.comb += [port.addr.eq(self._row(lite.awaddr)),
                                 port.data.eq(lite.wdata.replicate(lanes)),
                                 port.en.eq(lite.wstrb << (_LITE_BYTES * lane) if len(lane)
                                            else lite.wstrb)]
                    m.d.sync += from_lite.eq(1)
                    m.next = "RESPOND"
            with m.State("BURST"):
                m.d.comb += [axi.wready.eq(grant), port.addr.eq(row), port.data.eq(axi.wdata)]
                with m.If(axi.wvalid & grant):
                    m.d.comb += port.en.eq(axi.wstrb)
                    m.d.sync += row.eq(row + 1)
                    with m.If(axi.wlast):
                        m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += [axi.bid.eq(bid), axi.bvalid.eq(~from_lite),
                             lite.bvalid.eq(from_lite)]
                with m.If(Mux(from_lite, lite.bready, axi.bready)):
                    m.next = "IDLE"


class _Port:
    """What a memory port offers: ``addr``, ``en`` and ``data``."""

    def __init__(self, addr, en, data):
        self.addr, self.en, self.data = addr, en, data


class SpramBanks(Elaboratable):
    """``rows`` 32-bit rows in the iCE40UP5K's SB_SPRAM256KA blocks (16 K x 16 bits each): two
    side by side for each 16 K rows. ``read`` and ``write`` look like an
    :class:`~amaranth.lib.memory.Memory`'s ports (``write.en`` a bit per byte), but the blocks
    have one port: the caller never reads and writes in the same cycle. Read data comes the
    cycle after ``read.en`` and then holds (an idle block keeps its output)."""

    def __init__(self, rows):
        if not isinstance(rows, int) or rows <= 0 or rows % SPRAM_ROWS:
            raise ValueError(f"SpramBanks rows must be a positive multiple of {SPRAM_ROWS}, "
                             f"not {rows!r}")
        self.banks = rows // SPRAM_ROWS
        self.read = _Port(Signal(range(rows)), Signal(), Signal(32))
        self.write = _Port(Signal(range(rows)), Signal(4), Signal(32))

    def elaborate(self, platform):
        m = Module()
        writing = self.write.en.any()
        addr = Mux(writing, self.write.addr, self.read.addr)
        bank, read_bank = addr[exact_log2(SPRAM_ROWS):], Signal(range(max(2, self.banks)))
        with m.If(self.read.en & ~writing):
            m.d.sync += read_bank.eq(bank)
        outputs = []
        for b in range(self.banks):
            halves = []
            for half in range(2):
                data = Signal(16)
                low, high = self.write.en[2 * half], self.write.en[2 * half + 1]
                m.submodules[f"spram{b}_{half}"] = Instance(
                    "SB_SPRAM256KA", i_ADDRESS=addr[:exact_log2(SPRAM_ROWS)],
                    i_DATAIN=self.write.data[16 * half:16 * half + 16],
                    i_MASKWREN=Cat(low, low, high, high), i_WREN=writing,
                    i_CHIPSELECT=(bank == b) & (writing | self.read.en), i_CLOCK=ClockSignal(),
                    i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1, o_DATAOUT=data)
                halves.append(data)
            outputs.append(Cat(*halves))
        m.d.comb += self.read.data.eq(Array(outputs)[read_bank] if self.banks > 1
                                      else outputs[0])
        return m
