"""A host bridge: frames on a UART become word reads and writes on an AXI4-Lite master port.

The wire protocol is LiteX UARTBone's incrementing bursts (``litex_server --uart`` can talk to
it), defined in :mod:`flexigan.hw.arch.bridge`; docs/boards.md, "Host bridge wire protocol", is
its description for users and :mod:`flexigan.host` the client.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arch.bridge import CMD_READ, CMD_WRITE, MAX_WORDS
from .axi import axi4_lite_signature
from .fifo import StreamFIFO
from .uart import UartRx, UartTx

__all__ = ["QUEUE_BYTES", "TIMEOUT_BITS", "UartBridge"]
#: Bytes queued between the receiver and the frame logic, so the bus may finish a write frame
#: while the next frame's first bytes arrive.
QUEUE_BYTES = 16
#: Default timeout: 10,000 bit times, 87 ms at 115,200 baud (LiteX waits 100 ms).
TIMEOUT_BITS = 10_000


class UartBridge(wiring.Component):
    """Serves UARTBone frames received on ``rx`` as AXI4-Lite reads and writes.

    Contract:

    - A write frame is held whole in a 255-word buffer and written to the bus only after its
      last byte has arrived, one word at a time (address and data offered together, then the
      response awaited), so a partial or garbled frame never writes. No reply is sent.
    - A read frame reads its words one at a time and sends each, 4 bytes big-endian, on ``tx``
      as soon as it has arrived. Response codes (``bresp``, ``rresp``) are ignored.
    - A count of 0 is a complete frame that does nothing.
    - Timeout: while a frame is incomplete, a quiet line for more than ``timeout_bits`` bit
      times after its last byte drops it (``(timeout_bits + 10) * divisor`` cycles from that
      byte's stop bit to the next one's); the bus is not touched.
    - Errors: an unknown command byte, a byte with a low stop bit, or a byte lost to overrun
      drops the frame it belongs to; the bridge then ignores bytes until the line has been
      quiet for the timeout, and takes the next byte as a command. ``dropped`` pulses once for
      each frame dropped by a timeout or an error. A read frame whose reply was under way is
      answered in full before the bridge discards.
    - Bytes received while the bus is busy with a frame wait in a queue of
      :data:`QUEUE_BYTES`: the commit of a write frame must end within about that many byte
      times of its last byte, or the next frame loses a byte (and is dropped). The host must
      wait for a read's reply before it sends more than that many bytes. The bus waits for the
      slave with no timeout.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit on both lines (see :mod:`flexigan.hw.uart`).
    timeout_bits : int
        The gap that ends an incomplete frame, in bit times.

    Attributes
    ----------
    rx : In(1)
    tx : Out(1)
    axil : Out(axi4_lite_signature(addr_width=32, data_width=32))
        The master port.
    dropped : Out(1)
    """

    def __init__(self, divisor, timeout_bits=TIMEOUT_BITS):
        if not isinstance(timeout_bits, int) or timeout_bits < 1:
            raise ValueError(f"UartBridge timeout_bits must be a positive integer, not "
                             f"{timeout_bits!r}")
        self._rx, self._tx = UartRx(divisor), UartTx(divisor)
        # The counter starts when a byte has arrived: the byte after it takes 10 bit times more.
        self._timeout = (timeout_bits + 10) * divisor
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "axil": Out(axi4_lite_signature(addr_width=32, data_width=32)),
            "dropped": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx, m.submodules.uart_tx = rx, tx = self._rx, self._tx
        m.submodules.queue = queue = StreamFIFO(8, QUEUE_BYTES)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        wiring.connect(m, rx.o, queue.i)
        m.submodules.buffer = buffer = Memory(shape=32, depth=MAX_WORDS, init=[])
        f = _Frame(m, queue.o, buffer, timeout=self._timeout, dropped=self.dropped)
        m.d.sync += f.lost.eq(f.lost | rx.framing_error | rx.overrun)
        m.d.comb += [
            self.axil.awaddr.eq(Cat(0, 0, f.address)), self.axil.araddr.eq(Cat(0, 0, f.address)),
            self.axil.wdata.eq(f.read.data), self.axil.wstrb.eq(0xF),
            tx.i.payload.eq(f.data[24:]),
        ]
        with m.FSM():
            self._receive_states(m, f)
            self._bus_states(m, f)
        return m

    def _receive_states(self, m, f):
        """Idle, the header, a write frame's words, and the discarding of a bad frame."""
        with m.State("idle"):
            m.d.comb += f.bytes.ready.eq(1)
            m.d.sync += [f.quiet.eq(self._timeout), f.nbyte.eq(0), f.word.eq(0)]
            with m.If(f.lost):
                f.drop()
            with m.Elif(f.byte):
                m.d.sync += f.cmd.eq(f.bytes.payload)
                m.next = "header"

        with m.State("header"):
            def header_byte():
                m.d.sync += [f.header.eq(Cat(f.bytes.payload, f.header[:32])),
                             f.nbyte.eq(f.nbyte + 1)]
                with m.If(f.nbyte == 4):
                    m.d.sync += f.nbyte.eq(0)
                    m.next = "decode"
            f.receiving(header_byte)

        with m.State("decode"):
            m.d.sync += f.final.eq(f.count - 1)
            with m.If((f.cmd != CMD_WRITE) & (f.cmd != CMD_READ)):
                f.drop()
            with m.Elif(f.count == 0):
                m.next = "idle"
            with m.Elif(f.cmd == CMD_WRITE):
                m.d.sync += f.quiet.eq(self._timeout)
                m.next = "data"
            with m.Else():
                m.next = "read_address"

        with m.State("data"):
            def data_byte():
                m.d.sync += [f.data.eq(f.write.data), f.nbyte.eq(f.nbyte + 1)]
                with m.If(f.nbyte == 3):
                    m.d.comb += f.write.en.eq(1)
                    m.d.sync += [f.nbyte.eq(0), f.word.eq(f.word + 1)]
                    with m.If(f.last_word):
                        m.d.comb += f.read.addr.eq(0)
                        m.d.sync += f.word.eq(0)
                        m.next = "commit"
            f.receiving(data_byte)

        with m.State("discard"):
            # Swallow the rest of a bad frame: only a quiet line marks the next command.
            m.d.comb += f.bytes.ready.eq(1)
            m.d.sync += f.lost.eq(0)
            with m.If(f.lost):
                m.d.sync += f.quiet.eq(self._timeout)
            with m.Elif(~f.byte & (f.quiet == 0)):
                m.next = "idle"

    def _bus_states(self, m, f):
        """A write frame's commit, and a read frame's reads and reply."""
        axil, tx = self.axil, self._tx
        # The buffer's read port answers a cycle late: the states that set ``word`` present
        # its new value on the port, so the word is there when "commit" starts.
        with m.State("commit"):
            m.d.comb += [axil.awvalid.eq(~f.aw_done), axil.wvalid.eq(~f.w_done)]
            aw_now = f.aw_done | axil.awready
            w_now = f.w_done | axil.wready
            m.d.sync += [f.aw_done.eq(aw_now), f.w_done.eq(w_now)]
            with m.If(aw_now & w_now):
                m.d.sync += [f.aw_done.eq(0), f.w_done.eq(0)]
                m.next = "response"
        with m.State("response"):
            m.d.comb += axil.bready.eq(1)
            with m.If(axil.bvalid):
                m.d.comb += f.read.addr.eq(f.word + 1)
                f.next_word("commit")

        with m.State("read_address"):
            m.d.comb += axil.arvalid.eq(1)
            with m.If(axil.arready):
                m.next = "read_data"
        with m.State("read_data"):
            m.d.comb += axil.rready.eq(1)
            with m.If(axil.rvalid):
                m.d.sync += f.data.eq(axil.rdata)
                m.next = "reply"
        with m.State("reply"):
            m.d.comb += tx.i.valid.eq(1)
            with m.If(tx.i.ready):
                m.d.sync += [f.data.eq(f.data << 8), f.nbyte.eq(f.nbyte + 1)]
                with m.If(f.nbyte == 3):
                    f.next_word("read_address")


class _Frame:
    """The bridge's frame state, and the steps its FSM states share."""

    def __init__(self, m, rx_bytes, buffer, *, timeout, dropped):
        self._m, self._timeout, self._dropped = m, timeout, dropped
        self.bytes = rx_bytes
        self.write = buffer.write_port()
        # Transparent: a 1-word frame's word is read back in the cycle it is written.
        self.read = buffer.read_port(transparent_for=[self.write])
        self.cmd = Signal(8)
        self.header = Signal(40)            # count, then the word address: shifted in MSB first
        self.count, self.address = self.header[32:], self.header[:32]
        self.word = Signal(8)               # words of the frame done
        # The frame's last word number, registered when the header is decoded (a subtraction
        # before the comparison was the bridge's longest path).
        self.final = Signal(8)
        self.last_word = self.word == self.final
        self.data = Signal(32)
        self.nbyte = Signal(3)              # bytes of the header or of a word done
        self.byte = rx_bytes.valid & rx_bytes.ready
        self.quiet = Signal(range(self._timeout + 1))   # cycles left before the timeout
        self.lost = Signal()                # a byte was garbled or overrun since the discard
        self.aw_done, self.w_done = Signal(), Signal()

        m.d.sync += dropped.eq(0)
        with m.If(self.byte):
            m.d.sync += self.quiet.eq(self._timeout)
        with m.Elif(self.quiet != 0):
            m.d.sync += self.quiet.eq(self.quiet - 1)
        m.d.comb += [self.write.addr.eq(self.word),
                     self.write.data.eq(Cat(rx_bytes.payload, self.data[:24])),
                     self.read.addr.eq(self.word)]

    def drop(self):
        """Drop the frame: pulse ``dropped`` and discard until the line is quiet."""
        self._m.d.sync += [self._dropped.eq(1), self.quiet.eq(self._timeout)]
        self._m.next = "discard"

    def next_word(self, then):
        """Move to the frame's next word, or end the frame (dropping it if a byte was lost)."""
        m = self._m
        m.d.sync += [self.word.eq(self.word + 1), self.address.eq(self.address + 1),
                     self.nbyte.eq(0)]
        with m.If(~self.last_word):
            m.next = then
        with m.Elif(self.lost):
            self.drop()
        with m.Else():
            m.next = "idle"

    def receiving(self, take):
        """Take bytes with ``take()``; a lost byte drops the frame, and so does the timeout."""
        m = self._m
        m.d.comb += self.bytes.ready.eq(1)
        with m.If(self.lost):
            self.drop()
        with m.Elif(~self.byte & (self.quiet == 0)):
            m.d.sync += self._dropped.eq(1)
            m.next = "idle"
        with m.Elif(self.byte):
            take()
