"""External memory for RTL simulation: an AXI4 slave with the target's latency, inside the
simulated design, its contents loaded and read back by the simulator itself.

The accelerator's external memory is part of the design under simulation, so no bus beat
crosses into Python: the testbench writes the memory image as a hex file, pulses ``load``
(the storage runs ``$readmemh``), starts the accelerator and, after END, pulses ``dump``
(``$writememh``) and reads the file. Verilator and Icarus both run these system tasks.

Timing, as the cycle model counts it (:func:`flexigan.sim.isa_sim.cycle_model.transfer_cycles`:
``mem_latency`` once per transfer, then a beat per cycle):

- a read burst whose address is taken in cycle ``t`` presents its first beat in cycle
  ``t + latency - 1`` (the model's ``mem_latency`` counts the cycle of the address, as fitted
  to the cocotb testbench's memory at 3), then a beat per cycle while ``rready`` is high;
  addresses are taken while earlier bursts are served (up to :data:`QUEUE` waiting), and a
  burst whose time has come follows the one before without a gap, so the latency of a
  transfer's later bursts overlaps the beats of the earlier ones;
- write beats are taken as they come, from the cycle after their burst's address; the burst's
  response is valid ``latency - 2`` cycles after its last beat (measured against the cocotb
  testbench's memory at ``latency`` 3, whose cycles the model's STORE_SETUP was fitted to).

Responses are OKAY; bursts are incrementing, of full-width beats, as the accelerator issues
them; addresses wrap at ``depth``.
"""

from pathlib import Path

import numpy as np
from amaranth.hdl import ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In
from amaranth.utils import exact_log2

from ..hw.axi import axi4_signature

__all__ = ["QUEUE", "MIN_LATENCY", "STORAGE", "STORAGE_VERILOG", "IMAGE_IN", "IMAGE_OUT",
           "ExternalMemory", "write_rows", "read_rows"]

#: Burst addresses waiting, per direction, beyond the burst being served.
QUEUE = 16
#: The shortest latency: an address goes through a queue (one cycle) and the storage's
#: registered read (one cycle).
MIN_LATENCY = 3
#: The files the storage loads from and dumps to, in the simulator's working directory.
IMAGE_IN, IMAGE_OUT = "memory_in.hex", "memory_out.hex"
#: The storage module's name.
STORAGE = "flexigan_sim_storage"

#: The storage: rows of ``WIDTH`` bits, a registered read port, a write port with a strobe per
#: byte, and the backdoor: ``load`` reads rows ``0 .. rows - 1`` from IMAGE_IN, ``dump`` writes
#: them to IMAGE_OUT (each at the clock edge where it is high).
STORAGE_VERILOG = f"""\
module {STORAGE} #(parameter WIDTH = 32, parameter ADDR = 10) (
  input clk,
  input [ADDR-1:0] raddr, input ren, output reg [WIDTH-1:0] rdata,
  input [ADDR-1:0] waddr, input [WIDTH/8-1:0] wen, input [WIDTH-1:0] wdata,
  input load, input dump, input [31:0] rows
);
  reg [WIDTH-1:0] mem [0:(1 << ADDR) - 1];
  integer i;
  always @(posedge clk) begin
    if (ren) rdata <= mem[raddr];
    for (i = 0; i < WIDTH / 8; i = i + 1)
      if (wen[i]) mem[waddr][8 * i +: 8] <= wdata[8 * i +: 8];
    if (load) $readmemh("{IMAGE_IN}", mem, 0, rows - 1);
    if (dump) $writememh("{IMAGE_OUT}", mem, 0, rows - 1);
  end
endmodule
"""


class ExternalMemory(wiring.Component):
    """``depth`` bytes of memory behind an AXI4 slave port, ``latency`` cycles from a burst's
    address to its first beat (see the module's docstring for the contract).

    Parameters
    ----------
    depth : int
        Bytes: a power of two, at least two rows of ``data_width // 8``.
    data_width : int
        Of ``axi``.
    latency : int
        At least :data:`MIN_LATENCY`.

    Attributes
    ----------
    axi : In(axi4_signature(addr_width=32, data_width=data_width))
    load, dump : In(1)
        Pulse to load rows ``0 .. rows - 1`` from IMAGE_IN, or dump them to IMAGE_OUT.
    rows : In(32)
    """

    def __init__(self, depth, data_width, latency):
        row_bytes = data_width // 8
        if not isinstance(depth, int) or depth < 2 * row_bytes or depth & (depth - 1):
            raise ValueError(f"ExternalMemory depth must be a power of two of at least two "
                             f"rows ({2 * row_bytes} bytes), not {depth!r}")
        if not isinstance(latency, int) or latency < MIN_LATENCY:
            raise ValueError(f"ExternalMemory latency must be an integer of at least "
                             f"{MIN_LATENCY}, not {latency!r}")
        self._row_bits = exact_log2(row_bytes)
        self._addr = exact_log2(depth // row_bytes)
        self._data_width = data_width
        self._latency = latency
        super().__init__({"axi": In(axi4_signature(addr_width=32, data_width=data_width)),
                          "load": In(1), "dump": In(1), "rows": In(32)})

    def _row(self, addr):
        return addr[self._row_bits:self._row_bits + self._addr]

    def elaborate(self, platform):
        m = Module()
        width, addr = self._data_width, self._addr
        read, write = _Port(addr, width, 1), _Port(addr, width, width // 8)
        m.submodules.storage = Instance(
            STORAGE, p_WIDTH=width, p_ADDR=addr, i_clk=ClockSignal(),
            i_raddr=read.addr, i_ren=read.en, o_rdata=read.data,
            i_waddr=write.addr, i_wen=write.en, i_wdata=write.data,
            i_load=self.load, i_dump=self.dump, i_rows=self.rows)
        now = Signal(32)                 # cycles, for the bursts' due times
        m.d.sync += now.eq(now + 1)
        self._reads(m, read, now)
        self._writes(m, write, now)
        return m

    def _reads(self, m, port, now):
        axi = self.axi.read
        burst = data.StructLayout({"row": len(port.addr), "len": 8, "id": len(axi.arid),
                                   "due": 32})
        m.submodules.ar = ar = fifo.SyncFIFO(width=burst.size, depth=QUEUE)
        m.d.comb += [
            axi.arready.eq(ar.w_rdy), ar.w_en.eq(axi.arvalid),
            ar.w_data.eq(_pack(m, burst, row=self._row(axi.araddr), len=axi.arlen,
                               id=axi.arid, due=now + self._latency - 2)),
        ]
        head = data.View(burst, ar.r_data)
        # The storage's read register is R's output stage: a read is issued when the beat it
        # holds is taken (or there is none), and it holds still while R stalls.
        valid, last = Signal(), Signal()
        row, left, rid = Signal.like(port.addr), Signal(8), Signal.like(axi.arid)
        busy = Signal()                          # beats of the current burst left to read
        advance = ~valid | axi.rready
        start = advance & ~busy & ar.r_rdy & _reached(m, head.due, now)
        more = advance & busy
        m.d.comb += [port.en.eq(start | more), port.addr.eq(Mux(start, head.row, row)),
                     ar.r_en.eq(start)]
        with m.If(advance):
            m.d.sync += valid.eq(start | more)
        with m.If(start):
            m.d.sync += [row.eq(head.row + 1), left.eq(head.len), rid.eq(head.id),
                         busy.eq(head.len != 0), last.eq(head.len == 0)]
        with m.Elif(more):
            m.d.sync += [row.eq(row + 1), left.eq(left - 1), busy.eq(left != 1),
                         last.eq(left == 1)]
        m.d.comb += [axi.rvalid.eq(valid), axi.rdata.eq(port.data), axi.rlast.eq(last),
                     axi.rid.eq(rid), axi.rresp.eq(0)]

    def _writes(self, m, port, now):
        axi = self.axi.write
        burst = data.StructLayout({"row": len(port.addr), "id": len(axi.awid)})
        m.submodules.aw = aw = fifo.SyncFIFO(width=burst.size, depth=QUEUE)
        m.d.comb += [axi.awready.eq(aw.w_rdy), aw.w_en.eq(axi.awvalid),
                     aw.w_data.eq(_pack(m, burst, row=self._row(axi.awaddr), id=axi.awid))]
        head = data.View(burst, aw.r_data)
        response = data.StructLayout({"id": len(axi.awid), "due": 32})
        m.submodules.b = b = fifo.SyncFIFO(width=response.size, depth=QUEUE)
        offset = Signal.like(port.addr)
        take = aw.r_rdy & b.w_rdy & axi.wvalid
        m.d.comb += [
            axi.wready.eq(aw.r_rdy & b.w_rdy),
            port.addr.eq(head.row + offset), port.data.eq(axi.wdata),
            port.en.eq(Mux(take, axi.wstrb, 0)),
            aw.r_en.eq(take & axi.wlast),
            b.w_en.eq(take & axi.wlast),
            b.w_data.eq(_pack(m, response, id=head.id, due=now + self._latency - 2)),
        ]
        with m.If(take):
            m.d.sync += offset.eq(Mux(axi.wlast, 0, offset + 1))
        answer = data.View(response, b.r_data)
        due = _reached(m, answer.due, now)
        m.d.comb += [axi.bvalid.eq(b.r_rdy & due), axi.bid.eq(answer.id), axi.bresp.eq(0),
                     b.r_en.eq(axi.bready & due)]


class _Port:
    """A storage port's signals: ``addr``, ``en`` (a bit, or a bit per byte) and ``data``."""

    def __init__(self, addr, width, en):
        self.addr, self.en, self.data = Signal(addr), Signal(en), Signal(width)


def _reached(m, due, now):
    """Whether cycle ``due`` has come (``now`` counts cycles modulo 2 ** 32)."""
    wait = Signal(32)
    m.d.comb += wait.eq(due - now)
    return wait[31] | (wait == 0)


def _pack(m, layout, **fields):
    """The bits of a ``layout`` struct holding ``fields`` (a FIFO's entry)."""
    entry = Signal(layout)
    m.d.comb += [getattr(entry, name).eq(value) for name, value in fields.items()]
    return entry.as_value()


def write_rows(path, image, row_bytes, rows):
    """Write ``image`` (bytes, zeros after it) as ``rows`` rows of ``row_bytes`` for
    ``$readmemh``: a row a line, most significant byte (the highest address) first."""
    if len(image) > rows * row_bytes:
        raise ValueError(f"an image of {len(image)} bytes does not fit {rows} rows of "
                         f"{row_bytes} bytes")
    padded = np.zeros(rows * row_bytes, np.uint8)
    padded[:len(image)] = np.frombuffer(bytes(image), np.uint8)
    text = padded.reshape(rows, row_bytes)[:, ::-1].tobytes().hex()
    width = 2 * row_bytes
    Path(path).write_text("\n".join(text[k:k + width] for k in range(0, len(text), width))
                          + "\n")


def read_rows(path, row_bytes, length):
    """The first ``length`` bytes of a ``$writememh`` file of rows of ``row_bytes``."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    words = "".join(line for line in lines if line and not line.startswith(("//", "@")))
    try:
        rows = np.frombuffer(bytes.fromhex(words), np.uint8)
    except ValueError:
        raise ValueError(f"{path} holds undefined or malformed rows") from None
    return rows.reshape(-1, row_bytes)[:, ::-1].tobytes()[:length]
