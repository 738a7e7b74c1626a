"""AXI4 burst engines (the accelerator's master port) and an AXI4-Lite register file.

The signatures name their members as the AXI specification names its signals (``awaddr``,
``rready``, ...), seen from the master, so the Verilog ports of a top-level component end in
the names AXI verification IP binds to by prefix. Only what the
accelerator uses is present: incrementing bursts, one ID, no locks, caches or QoS.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from .arch.registers import RegisterField, register_addresses
from .countdown import Countdown
from .realign import beat_layout

__all__ = ["axi4_read_signature", "axi4_write_signature", "axi4_signature",
           "axi4_lite_signature", "RESP_ERROR_BIT", "burst_command_layout", "AxiBurstReader",
           "AxiBurstWriter",
           "RegisterField", "register_addresses", "AxiLiteRegisters"]

#: AXI4 ``AxBURST`` encoding of incrementing bursts.
BURST_INCR = 1
#: AXI4 bursts may not cross a 4 KiB boundary.
BOUNDARY = 4096
#: AXI4 INCR bursts have at most 256 beats.
MAX_BEATS = 256
#: The bit of ``RRESP``/``BRESP`` set in the error responses, SLVERR (2) and DECERR (3).
RESP_ERROR_BIT = 1


def _check_data_width(data_width):
    if data_width < 8 or data_width & (data_width - 1):
        raise ValueError(f"AXI4 data_width must be a power of two >= 8, not {data_width!r}")


def axi4_read_signature(*, addr_width, data_width, id_width=1):
    """The read half of an AXI4 master interface (AR and R channels), as the master sees it."""
    _check_data_width(data_width)
    return wiring.Signature({
        "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
        "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    })


def axi4_write_signature(*, addr_width, data_width, id_width=1):
    """The write half of an AXI4 master interface (AW, W and B), as the master sees it."""
    _check_data_width(data_width)
    return wiring.Signature({
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    })


def axi4_signature(*, addr_width, data_width, id_width=1):
    """An AXI4 master interface: ``read`` and ``write`` halves, as the master sees it.

    A port ``axi`` of this signature becomes the Verilog ports ``axi__read__araddr`` ... and
    ``axi__write__awaddr`` ....
    """
    kw = {"addr_width": addr_width, "data_width": data_width, "id_width": id_width}
    return wiring.Signature({"read": Out(axi4_read_signature(**kw)),
                             "write": Out(axi4_write_signature(**kw))})


def axi4_lite_signature(*, addr_width, data_width=32):
    """An AXI4-Lite master interface, as the master sees it."""
    return wiring.Signature({
        "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
        "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


def burst_command_layout(addr_width=32):
    """A transfer of ``beats`` whole beats from the beat-aligned byte address ``addr``."""
    return data.StructLayout({"addr": unsigned(addr_width), "beats": unsigned(24)})


class _BurstSplitter:
    """Cuts a transfer into bursts: the first up to the next multiple of ``max_beats`` beats
    (a power of two that divides 4 KiB, so no burst crosses a 4 KiB boundary), the others
    ``max_beats`` long but the last, which has what remains.

    The current burst's ``length`` (0: none; ``active`` otherwise) and the beats after it
    (``rest``) are registers;
    the next burst's come from them through one subtraction and a multiplexer, and after the
    first burst the address only counts bursts. Shared by the reader's address channel and
    the writer's address and data channels, so they agree on every burst's length.
    """

    def __init__(self, m, name, cmd, *, beat_bytes, max_beats):
        shift, bits = exact_log2(beat_bytes), exact_log2(max_beats)
        self._low = shift + bits                  # address bits within a burst
        self.addr = Signal(32, name=f"{name}_addr")
        self.length = Signal(range(max_beats + 1), name=f"{name}_length")
        self.rest = Signal(24, name=f"{name}_rest")
        self.active = Signal(name=f"{name}_active")      # length != 0
        offset = cmd.addr[shift:self._low]       # beats into a burst-sized block
        room = Signal(range(max_beats + 1), name=f"{name}_room")   # to the first boundary
        m.d.comb += room.eq(max_beats - offset)
        self._cmd = cmd
        self._first = self._split(m, f"{name}_first", cmd.beats, room, offset, bits)
        self._next = self._split(m, f"{name}_next", self.rest,
                                 Const(max_beats, range(max_beats + 1)), Const(0, 1), bits)

    @staticmethod
    def _split(m, name, beats, room, offset, bits):
        """(burst, rest) of ``beats`` beats when the burst may have ``room``
        (``2 ** bits - offset``)."""
        diff = Signal(24, name=name)
        m.d.comb += diff.eq(beats - room)
        # beats < room, that is beats + offset < 2 ** bits: from the high bits' zero test and
        # a short sum of the low ones (not from the end of the subtraction's carry chain).
        low = Signal(bits + 2, name=f"{name}_low")
        m.d.comb += low.eq(beats[:bits + 1] + offset)
        short = (beats[bits + 1:] == 0) & (low[bits:] == 0)
        return Mux(short, beats, room), Mux(short, 0, diff)

    def start(self):
        """Statements that start the transfer of ``cmd``."""
        length, rest = self._first
        return [self.addr.eq(self._cmd.addr), self.length.eq(length), self.rest.eq(rest),
                self.active.eq(self._cmd.beats != 0)]

    def advance(self):
        """Statements that move past the current burst."""
        length, rest = self._next
        return [self.addr.eq(Cat(Const(0, self._low), self.addr[self._low:] + 1)),
                self.length.eq(length), self.rest.eq(rest), self.active.eq(self.rest != 0)]


def _sticky_error(m, error, response, clear):
    """``error`` rises the cycle after ``response`` (an error response handshaken) and holds
    until ``clear``."""
    with m.If(clear):
        m.d.sync += error.eq(0)
    with m.Elif(response):
        m.d.sync += error.eq(1)


def _max_beats(config):
    """Beats of the longest burst: a power of two, at most 256 beats, ``burst_bytes`` and
    4 KiB."""
    limit = min(MAX_BEATS, config.burst_bytes // config.axi_bytes, BOUNDARY // config.axi_bytes)
    return 1 << (max(1, limit).bit_length() - 1)


class AxiBurstReader(wiring.Component):
    """Reads whole beats from AXI4 memory in bursts and streams them out.

    Contract: for each command accepted on ``cmd`` (only while not ``busy``), the ``beats``
    beats from ``addr`` (beat-aligned) leave on ``o`` in address order, the final one with
    ``last`` set. Bursts are at most ``min(256, burst_bytes / axi_bytes)`` beats (rounded down to
    a power of two), the first ends at a multiple of that length, and none crosses a 4 KiB
    boundary; all of a command's bursts are requested without waiting for data (one
    ID, so data returns in order). ``o`` stalling stalls the R channel. A command of 0 beats
    does nothing. ``busy`` is high from the command until its final beat has left.

    An error response (``rresp`` SLVERR or DECERR) does not change the beats' timing: every
    beat still arrives and leaves on ``o`` (its data is what the slave sent), so no burst is
    left half read; ``error`` rises the cycle after the first such beat and holds until
    ``clear``.

    Parameters
    ----------
    config : AcceleratorConfig
        ``axi_data_width`` and ``burst_bytes``.

    Attributes
    ----------
    axi : Out(axi4_read_signature(addr_width=32, data_width=axi_data_width))
    cmd : In(stream.Signature(burst_command_layout()))
    o : Out(stream.Signature(beat_layout(axi_data_width)))
        ``mask`` is all ones.
    busy : Out(1)
    error : Out(1)
    clear : In(1)
    """

    def __init__(self, config):
        self._config = config
        dw = config.axi_data_width
        super().__init__({
            "axi": Out(axi4_read_signature(addr_width=32, data_width=dw)),
            "cmd": In(stream.Signature(burst_command_layout())),
            "o": Out(stream.Signature(beat_layout(dw))),
            "busy": Out(1),
            "error": Out(1),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, axi = self._config, self.axi
        bursts = _BurstSplitter(m, "ar", self.cmd.payload, beat_bytes=cfg.axi_bytes,
                                max_beats=_max_beats(cfg))
        remaining = Countdown(24, "remaining")    # beats still to arrive on R
        m.d.comb += [
            axi.arid.eq(0), axi.arsize.eq(exact_log2(cfg.axi_bytes)), axi.arburst.eq(BURST_INCR),
            axi.araddr.eq(bursts.addr), axi.arlen.eq(bursts.length - 1),
            axi.arvalid.eq(bursts.active),
        ]
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += bursts.advance()

        m.d.comb += [
            self.busy.eq(remaining.nonzero),
            self.cmd.ready.eq(~remaining.nonzero),
            self.o.payload.data.eq(axi.rdata),
            self.o.payload.mask.eq(-1),
            self.o.payload.last.eq(remaining.one),
            self.o.valid.eq(axi.rvalid & remaining.nonzero),
            axi.rready.eq(self.o.ready & remaining.nonzero),
        ]
        with m.If(axi.rvalid & axi.rready):
            m.d.sync += remaining.decrement()
        _sticky_error(m, self.error, axi.rvalid & axi.rready & axi.rresp[RESP_ERROR_BIT],
                      self.clear)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [*bursts.start(), *remaining.load(self.cmd.payload.beats)]
        return m


class AxiBurstWriter(wiring.Component):
    """Writes a stream of beats to AXI4 memory in bursts.

    Contract: for each command accepted on ``cmd`` (only while not ``busy``), the next
    ``beats`` beats of ``i`` are written from ``addr`` (beat-aligned) on, each with its byte
    strobes. Bursts are cut as by :class:`AxiBurstReader`; addresses are issued ahead of data.
    ``busy`` stays high until every burst's write response has arrived, so when it falls the
    data is in memory. A command of 0 beats does nothing.

    An error response (``bresp`` SLVERR or DECERR) is counted as any response (every burst's
    data is still sent, so no handshake is left pending); ``error`` rises the cycle after it
    and holds until ``clear``.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    axi : Out(axi4_write_signature(addr_width=32, data_width=axi_data_width))
    cmd : In(stream.Signature(burst_command_layout()))
    i : In(stream.Signature(beat_layout(axi_data_width)))
        ``mask`` gives the byte strobes; ``last`` is not used.
    busy : Out(1)
    error : Out(1)
    clear : In(1)
    """

    def __init__(self, config):
        self._config = config
        dw = config.axi_data_width
        super().__init__({
            "axi": Out(axi4_write_signature(addr_width=32, data_width=dw)),
            "cmd": In(stream.Signature(burst_command_layout())),
            "i": In(stream.Signature(beat_layout(dw))),
            "busy": Out(1),
            "error": Out(1),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, axi = self._config, self.axi
        kw = {"beat_bytes": cfg.axi_bytes, "max_beats": _max_beats(cfg)}
        aw = _BurstSplitter(m, "aw", self.cmd.payload, **kw)
        # The W channel's splitter counts its burst's beats down in ``length``.
        w = _BurstSplitter(m, "w", self.cmd.payload, **kw)
        responses = Signal(24)                    # bursts whose response is outstanding
        waiting = Signal()                        # responses != 0
        m.d.comb += [
            axi.awid.eq(0), axi.awsize.eq(exact_log2(cfg.axi_bytes)),
            axi.awburst.eq(BURST_INCR),
            axi.awaddr.eq(aw.addr), axi.awlen.eq(aw.length - 1),
            axi.awvalid.eq(aw.active),
        ]
        issued = axi.awvalid & axi.awready
        answered = axi.bvalid & axi.bready
        with m.If(issued):
            m.d.sync += aw.advance()
        # The channels' handshakes select among results worked out from the registers.
        with m.If(issued & ~answered):
            m.d.sync += [responses.eq(responses + 1), waiting.eq(1)]
        with m.If(answered & ~issued):
            m.d.sync += [responses.eq(responses - 1), waiting.eq(responses != 1)]
        _sticky_error(m, self.error, answered & axi.bresp[RESP_ERROR_BIT], self.clear)

        last = w.length == 1
        sending = w.active
        m.d.comb += [
            axi.wdata.eq(self.i.payload.data), axi.wstrb.eq(self.i.payload.mask),
            axi.wlast.eq(last),
            axi.wvalid.eq(self.i.valid & sending),
            self.i.ready.eq(axi.wready & sending),
            axi.bready.eq(1),
        ]
        with m.If(axi.wvalid & axi.wready):
            with m.If(last):
                m.d.sync += w.advance()
            with m.Else():
                m.d.sync += w.length.eq(w.length - 1)

        m.d.comb += self.busy.eq(aw.active | sending | waiting)
        m.d.comb += self.cmd.ready.eq(~self.busy)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [*aw.start(), *w.start()]
        return m


def _any(values):
    """The bitwise OR of ``values``, as a balanced tree."""
    values = list(values)
    while len(values) > 1:
        values = [values[k] | values[k + 1] if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]


def register_addr_width(fields):
    """Bits of the AXI4-Lite byte address of a map of ``fields``: the map's words, at least
    four bits."""
    return max(4, ceil_log2(sum(f.words for f in fields)) + 2)


class AxiLiteRegisters(wiring.Component):
    """A map of 32-bit registers behind an AXI4-Lite slave port.

    Contract: the fields of ``fields`` are laid out in order from byte address 0, each at the
    next free 32-bit word (see :func:`register_addresses`). A write to a ``rw`` word updates the
    bytes its strobes select; a write to a ``strobe`` field pulses the port; writes elsewhere
    are ignored.
    Reads of unmapped words return 0. Every access gets an OKAY response. One write and one read
    can be in progress at a time.

    Parameters
    ----------
    fields : list of RegisterField
        The map (:mod:`flexigan.hw.arch.registers` defines the fields and their addresses).

    Attributes
    ----------
    axil : In(axi4_lite_signature(addr_width=...))
        ``addr_width`` covers the map (at least 4 bits).
    <field.name> : Out or In(field.width)
        One port per field (see :class:`RegisterField`).
    """

    def __init__(self, fields):
        names = [f.name for f in fields]
        if len(set(names)) != len(names) or "axil" in names:
            raise ValueError(f"AxiLiteRegisters field names must be unique and not 'axil', "
                             f"not {names!r}")
        self._fields = list(fields)
        self._words = {name: addr // 4 for name, addr in register_addresses(fields).items()}
        self._addr_width = register_addr_width(fields)
        members = {"axil": In(axi4_lite_signature(addr_width=self._addr_width))}
        for f in self._fields:
            members[f.name] = In(f.width) if f.access == "ro" else Out(f.width)
        super().__init__(members)

    @property
    def addr_width(self):
        """Bits of the AXI4-Lite byte address."""
        return self._addr_width

    def elaborate(self, platform):
        m = Module()
        axil = self.axil

        # Write: address and data together, then the response.
        b_pending = Signal()
        take = axil.awvalid & axil.wvalid & ~b_pending
        m.d.comb += [axil.awready.eq(take), axil.wready.eq(take), axil.bresp.eq(0),
                     axil.bvalid.eq(b_pending)]
        with m.If(take):
            m.d.sync += b_pending.eq(1)
        with m.Elif(axil.bready):
            m.d.sync += b_pending.eq(0)
        w_word = axil.awaddr[2:]
        for f in self._fields:
            port = getattr(self, f.name)
            if f.access == "strobe":
                m.d.sync += port.eq(0)
            for k in range(f.words):
                lo, hi = 32 * k, min(32 * k + 32, f.width)
                hit = take & (w_word == self._words[f.name] + k)
                if f.access == "rw":
                    for byte in range((hi - lo + 7) // 8):
                        b_lo, b_hi = lo + 8 * byte, min(lo + 8 * byte + 8, hi)
                        with m.If(hit & axil.wstrb[byte]):
                            m.d.sync += port[b_lo:b_hi].eq(axil.wdata[8 * byte:
                                                                      8 * byte + b_hi - b_lo])
                elif f.access == "strobe":
                    with m.If(hit):
                        m.d.sync += port[lo:hi].eq(axil.wdata[:hi - lo])

        # Read: one outstanding. The word is selected in the cycle after the address (a
        # registered one-hot select, then an AND-OR: a wide multiplexer straight from the
        # address maps badly to LUTs), and the data is registered.
        r_loading = Signal()
        r_pending = Signal()
        r_data = Signal(32)
        m.d.comb += [axil.arready.eq(~r_loading & ~r_pending), axil.rvalid.eq(r_pending),
                     axil.rdata.eq(r_data), axil.rresp.eq(0)]
        readable = [f for f in self._fields if f.access != "strobe"]
        addresses = [self._words[f.name] + k for f in readable for k in range(f.words)]
        select = Signal(len(addresses))
        chosen = dict(zip(addresses, select))
        with m.If(axil.arvalid & axil.arready):
            m.d.sync += [r_loading.eq(1),
                         select.eq(Cat(axil.araddr[2:] == word for word in addresses))]
        words = []
        for f in readable:
            port = getattr(self, f.name)
            base = self._words[f.name]
            source = port
            if f.access == "ro" and f.words > 1:
                # The upper words as they were when the first word was read.
                snapshot = Signal(f.width - 32, name=f"{f.name}_snapshot")
                with m.If(r_loading & chosen[base]):
                    m.d.sync += snapshot.eq(port[32:])
                source = Cat(port[:32], snapshot)
            for k in range(f.words):
                words.append(Mux(chosen[base + k], source[32 * k:min(32 * k + 32, f.width)], 0))
        with m.If(r_loading):
            m.d.sync += [r_loading.eq(0), r_pending.eq(1), r_data.eq(_any(words))]
        with m.Elif(axil.rready):
            m.d.sync += r_pending.eq(0)
        return m
