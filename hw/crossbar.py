"""Crossbar: the banked activation scratchpad and the ports that reach it.

The shared activation memory ``ACT`` is ``act_banks`` banks of ``act_bank_bytes`` bytes; bank
``b`` holds byte addresses ``[b * act_bank_bytes, (b + 1) * act_bank_bytes)``. A bank word is
``axi_bytes`` wide, so the DMA engine moves one AXI beat per bank access while a group reads one
word and keeps the byte it needs. Each bank has one read and one write port per cycle.

Reads come from the G groups' ports and from the DMA engine's. A bank serves one word per
cycle: every port that asks a bank for that word is answered by the same access (a broadcast:
the groups that share an input pay one read), the others wait. When ports ask one bank for
different words, the DMA engine's port goes first and a round-robin arbiter per bank picks
among the groups' words; a group port that waits counts a stall cycle. Writes (groups' ``WRITE``
results, DMA loads) are arbitrated the same way. The DMA port's priority costs no cycles: the
controller orders every DMA of ``ACT`` after the RUNs before it and before the RUNs after it
(docs/isa.md), so the DMA engine and the groups never ask for banks at the same time, and the
DMA port's grant depends on no group's request (no path from a group's logic into the DMA
engine's).

``ROUTE`` sets which banks each group port may read (``bank_first .. bank_first + count - 1``);
every bank is routed to every group after reset. A group read outside its route is still served,
but raises the group's sticky ``route_fault`` bit: a compiler or program error, never silent.
"""

import functools
import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .arch import isa
from .fifo import GrantQueue

__all__ = ["read_port_signature", "write_port_signature", "Crossbar"]


def read_port_signature(addr_width, data_width, tag_shape):
    """A read port, as the requester sees it.

    ``req`` carries a word address and a ``tag`` the crossbar returns with the word on
    ``resp``, in order; ``resp`` is always ready, so a requester only asks when it has room for
    the answer. A request with ``skip`` set reads nothing: it is answered (with any data) in
    its turn among the port's reads, so a requester can keep answers that need no read in
    order with those that do.
    """
    return wiring.Signature({
        "req": Out(stream.Signature(data.StructLayout({
            "addr": unsigned(addr_width), "skip": 1, "tag": tag_shape}))),
        "resp": In(stream.Signature(data.StructLayout({
            "data": unsigned(data_width), "tag": tag_shape}), always_ready=True)),
    })


def write_port_signature(addr_width, data_width):
    """A write port, as the writer sees it: word address, word, byte enables."""
    return wiring.Signature({
        "req": Out(stream.Signature(data.StructLayout({
            "addr": unsigned(addr_width), "data": unsigned(data_width),
            "mask": unsigned(data_width // 8)}))),
    })


def _round_robin(m, requests, name):
    """The one-hot grant among ``requests``: the lowest-numbered requester above the last
    winner, else the lowest one. The priority is kept as a mask of the requesters above the
    last winner, so a grant is two lowest-set-bit picks and a multiplexer (carry chains, no
    encoded index), a short path from the requests to the ports' ``ready``."""
    n = len(requests)
    above = Signal(n, name=f"{name}_above")
    upper = Signal(n, name=f"{name}_upper")
    onehot = Signal(n, name=f"{name}_onehot")
    m.d.comb += upper.eq(requests & above)
    m.d.comb += onehot.eq(Mux(upper.any(), upper & -upper, requests & -requests)[:n])
    with m.If(requests.any()):
        m.d.sync += above.eq(-(onehot << 1))      # the requesters above the winner
    return onehot


def _dma_first(m, requests, name):
    """The one-hot grant among ``requests`` whose last is the DMA engine's: the DMA's when it
    asks, else the groups' round-robin (:func:`_round_robin`)."""
    dma = requests[-1]
    groups = _round_robin(m, requests[:-1] & ~dma.replicate(len(requests) - 1), name)
    return Cat(groups, dma)


def _select(onehot, values):
    """The value of ``values`` whose bit is set in ``onehot`` (0 when none is): an AND-OR
    multiplexer, one level shallower than a priority chain."""
    return functools.reduce(operator.or_, (Mux(onehot[i], v, 0) for i, v in enumerate(values)))


class Crossbar(wiring.Component):
    """The activation scratchpad behind G group read/write ports and one DMA read/write port.

    Contract:

    - a read accepted on a ``rd``/``dma_rd`` port waits in the port's queue (two requests)
      until the arbitration grants it in a cycle ``g`` after the one it was accepted in
      (``g = t + 1`` when no other port asks the bank for another word); the bank reads it in
      cycle ``g + 1`` (the grant and the row are registered) and it is answered on ``resp``
      in cycle ``g + 3`` (the bank's word is registered) with the word's value before any
      write accepted in cycle ``g`` or later; a port's answers are in the order of its
      requests, a ``skip`` request's three cycles after its grant; a port is granted a request
      per cycle while its bank serves it, and takes one per cycle while its queue moves
      (``ready`` comes from registers: no path runs from a requester through the arbitration
      into another requester or back into itself);
    - all ports asking one bank for the same word in a cycle are accepted together; a bank
      serves one word per cycle: the DMA port's if it asks, else round-robin among the group
      ports asking for different words;
    - a write accepted in cycle ``t`` is written in cycle ``t + 1`` and visible to reads
      accepted from ``t`` on (granted from ``t + 1``); one write per bank per cycle, the DMA
      port's first, else round-robin among the groups;
    - ``stalls[g]`` counts the cycles group port ``g`` had a read waiting for its bank in its
      queue (each counted a cycle later); ``route_fault[g]`` is
      set by a group read outside the group's route; ``clear`` zeroes both from the cycle
      after next (it is registered), as it does the groups' counters.

    Parameters
    ----------
    config : AcceleratorConfig
        ``groups``, ``act_banks``, ``act_bank_bytes`` (powers of two) and ``axi_bytes`` (the
        word size, which must divide ``act_bank_bytes``).
    tag_shape : ShapeLike
        What a read carries along to its answer.

    Attributes
    ----------
    rd : In(read_port_signature(...)).array(groups)
        Group read ports (``tag_shape`` tags).
    wr : In(write_port_signature(...)).array(groups)
        Group write ports.
    dma_rd : In(read_port_signature(...))
    dma_wr : In(write_port_signature(...))
    route : In(stream.Signature(isa.RouteArgs, always_ready=True))
    stalls : Out(data.ArrayLayout(unsigned(64), groups))
    route_fault : Out(groups)
    clear : In(1)
    """

    def __init__(self, config, tag_shape):
        for name in ("act_banks", "act_bank_bytes"):
            value = getattr(config, name)
            if value & (value - 1):
                raise ValueError(f"Crossbar needs AcceleratorConfig.{name} to be a power of "
                                 f"two, not {value!r}")
        if config.act_bank_bytes % config.axi_bytes:
            raise ValueError(f"Crossbar needs axi_bytes ({config.axi_bytes}) to divide "
                             f"act_bank_bytes, not {config.act_bank_bytes!r}")
        if config.groups > 16:
            raise ValueError(f"Crossbar supports at most 16 groups (ROUTE's group mask), not "
                             f"{config.groups!r}")
        self._config = config
        aw, dw = config.word_addr_width, config.axi_data_width
        read_sig = read_port_signature(aw, dw, tag_shape)
        write_sig = write_port_signature(aw, dw)
        super().__init__({
            "rd": In(read_sig).array(config.groups),
            "wr": In(write_sig).array(config.groups),
            "dma_rd": In(read_sig),
            "dma_wr": In(write_sig),
            "route": In(stream.Signature(isa.RouteArgs, always_ready=True)),
            "stalls": Out(data.ArrayLayout(unsigned(64), config.groups)),
            "route_fault": Out(config.groups),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        banks = cfg.act_banks
        depth = cfg.act_bank_bytes // cfg.axi_bytes
        row_bits = exact_log2(depth)
        bank_bits = exact_log2(banks)
        readers = [*self.rd, self.dma_rd]
        writers = [*self.wr, self.dma_wr]

        def bank_of(addr):
            return addr[row_bits:] if bank_bits else Const(0, 1)

        # Each port's requests wait in a queue of two with the bank they read decoded (one-hot,
        # none for a skip); the arbitration sees only registers and registers its grant.
        queues = []
        for i, p in enumerate(readers):
            layout = data.StructLayout({"req": p.req.payload.shape(), "want": banks})
            m.submodules[f"rd_queue{i}"] = queue = GrantQueue(layout)
            m.d.comb += [queue.i.valid.eq(p.req.valid), queue.i.payload.req.eq(p.req.payload),
                         queue.i.payload.want.eq(Cat(~p.req.payload.skip
                                                     & (bank_of(p.req.payload.addr) == b)
                                                     for b in range(banks))),
                         p.req.ready.eq(queue.i.ready)]
            queues.append(queue)
        reads = [q.o.payload.req for q in queues]
        rows = [r.addr[:row_bits] for r in reads]
        # Ports asking for the same word are served by one access: which pairs ask the same
        # word is compared beside the arbitration, not after it.
        same = [[Signal(name=f"rd_same{i}_{j}") for j in range(len(readers))]
                for i in range(len(readers))]
        for i, j in ((i, j) for i in range(len(readers)) for j in range(len(readers))):
            m.d.comb += same[i][j].eq(1 if i == j else rows[i] == rows[j])
        rd_grant = [Signal(name=f"rd_grant{i}") for i in range(len(readers))]
        wr_grant = [Signal(name=f"wr_grant{i}") for i in range(len(writers))]
        bank_data = []
        for b in range(banks):
            mem = memory.Memory(shape=cfg.axi_data_width, depth=depth, init=[])
            m.submodules[f"bank{b}"] = mem
            rport = mem.read_port()
            wport = mem.write_port(granularity=8)
            # The word read is registered beside the bank (the block RAM's own output register
            # where the FPGA has one): its long routes to the groups start at a flip-flop.
            word = Signal.like(rport.data, name=f"bank{b}_word")
            m.d.sync += word.eq(rport.data)
            bank_data.append(word)

            # Reads: one word per cycle, shared by every port that asks for it. The winner's
            # row is registered: the bank reads it the cycle after the grant.
            asking = Signal(len(readers), name=f"rd_ask{b}")
            m.d.comb += asking.eq(Cat(q.o.valid & q.o.payload.want[b] for q in queues))
            winner = _dma_first(m, asking, f"rd{b}")
            m.d.sync += [rport.addr.eq(_select(winner, rows)), rport.en.eq(asking.any())]
            for i in range(len(readers)):
                with m.If(asking[i] & Cat(winner[j] & same[i][j]
                                          for j in range(len(readers))).any()):
                    m.d.comb += rd_grant[i].eq(1)

            # Writes: one per cycle.
            wanting = Signal(len(writers), name=f"wr_want{b}")
            m.d.comb += wanting.eq(Cat(p.req.valid & (bank_of(p.req.payload.addr) == b)
                                       for p in writers))
            wwinner = _dma_first(m, wanting, f"wr{b}")
            # The granted write reaches the bank a cycle later, from registers: no path from a
            # writer's logic (a realigner behind the external memory's block RAM, a requantizer)
            # through the arbitration into the bank's inputs.
            requests = [p.req.payload for p in writers]
            m.d.sync += [
                wport.addr.eq(_select(wwinner, [r.addr[:row_bits] for r in requests])),
                wport.data.eq(_select(wwinner, [r.data for r in requests])),
                wport.en.eq(_select(wwinner, [r.mask for r in requests])),
            ]
            for i in range(len(writers)):
                with m.If(wwinner[i]):
                    m.d.comb += wr_grant[i].eq(1)

        for i, (p, q) in enumerate(zip(readers, queues)):
            with m.If(q.o.valid & q.o.payload.req.skip):
                m.d.comb += rd_grant[i].eq(1)
            m.d.comb += q.o.ready.eq(rd_grant[i])
            # The answer follows the bank's read (the cycle after the grant) and its output
            # register: the granted request is the queue's head while ``taken`` is set.
            granted, tag = Signal(name=f"rd_granted{i}"), Signal.like(q.head.req.tag)
            bank, bank_late = (Signal(range(max(banks, 2)), name=f"rd_bank{i}{when}")
                               for when in ("", "_late"))
            m.d.sync += [granted.eq(q.taken), tag.eq(q.head.req.tag),
                         bank.eq(_select(q.head.want, list(range(banks)))),
                         p.resp.valid.eq(granted), p.resp.payload.tag.eq(tag),
                         bank_late.eq(bank)]
            m.d.comb += p.resp.payload.data.eq(bank_data[0])
            for b in range(1, banks):
                with m.If(bank_late == b):
                    m.d.comb += p.resp.payload.data.eq(bank_data[b])
        for i, p in enumerate(writers):
            m.d.comb += p.req.ready.eq(wr_grant[i])

        self._routes_and_counters(m, [q.o for q in queues], bank_of)
        return m

    def _routes_and_counters(self, m, arbitrated, bank_of):
        """Each group's route (its banks), its route faults and its stall counter."""
        groups, banks = self._config.groups, self._config.act_banks
        first = Signal(data.ArrayLayout(8, groups))
        count = Signal(data.ArrayLayout(9, groups), init=[banks] * groups)
        with m.If(self.route.valid):
            for g in range(groups):
                with m.If(self.route.payload.group_mask[g]):
                    m.d.sync += [first[g].eq(self.route.payload.bank_first),
                                 count[g].eq(self.route.payload.bank_count)]
        # A stall is counted the cycle after it happens: the grant's logic ends at a flip-flop
        # beside the arbiter, not at the counter's adder (nextpnr: the grant routed 7 ns to
        # the stall counters on the 2 x 8 ULX3S cut, 70.9 MHz).
        waited = Signal(groups)
        # ``clear`` comes from the controller's issue decision: registered here, as the groups
        # do, it reaches the counters from a flip-flop (nextpnr: the DMA engine's state through
        # the issue stage routed 4.9 ns into them on the 2 x 8 ULX3S cut, 80.4 MHz).
        clear = Signal()
        m.d.sync += clear.eq(self.clear)
        for g in range(groups):
            q, read = arbitrated[g], arbitrated[g].payload.req
            bank = bank_of(read.addr)
            outside = (bank < first[g]) | (bank >= first[g] + count[g])
            with m.If(clear):
                m.d.sync += [self.stalls[g].eq(0), self.route_fault[g].eq(0), waited[g].eq(0)]
            with m.Else():
                m.d.sync += waited[g].eq(q.valid & ~q.ready)
                with m.If(waited[g]):
                    m.d.sync += self.stalls[g].eq(self.stalls[g] + 1)
                with m.If(q.valid & ~read.skip & outside):
                    m.d.sync += self.route_fault[g].eq(1)
