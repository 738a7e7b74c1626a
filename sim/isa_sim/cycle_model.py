"""The cycle model: when each instruction issues, and when the work it starts ends.

Event based, not cycle stepped; calibrated against the RTL group (:mod:`flexigan.hw.group`,
tests/hw/test_group.py) and the RTL controller (:mod:`flexigan.hw.controller`,
tests/hw/test_accelerator.py). It charges the constants of :mod:`flexigan.hw.arch.timing`, and
sees an instruction only through what :mod:`.semantics` returns for it.

The controller issues one instruction per cycle, in order, from a prefetch queue of
``config.queue_insns`` instructions; BARRIER waits (and sees the end of what it waits for
:data:`WAIT_DELAY` cycles late). Instruction fetch reads
``config.fetch_insns`` instructions at a time through the AXI read port it shares with DMA
loads; each instruction is in the queue :data:`FETCH_DELAY` cycles after its last beat (not the
fetch's). The port serves one transfer at a time, each taking the first gap that fits from when
it is ready (a fetch, as soon as the queue has room for it); a DMA load takes precedence over
fetches: a fetch that would start :data:`LOAD_CLAIM` or more cycles after the load is ready
waits for it, and a fetch that wants the port before then goes first (the fetch that a DMA
instruction's issue makes room for is booked before its load: behind a busy DMA engine the
load claims the port only once that is done, and the waiting fetch takes it; the model booked
the load first and missed 16 to 20 cycles on even chains of loads).
An AXI transfer of ``n`` bytes takes :func:`transfer_cycles`: ``mem_latency``
once (the burst reader and writer request every burst of a transfer without waiting for data)
plus ``n / axi_bytes``. One DMA engine serves DMA_LOAD/DMA_STORE/UOP_LOAD and COUNTERS STORE
(a store of the counter block, which END waits for: 44 cycles on ``sim``) in order from a queue
of ``config.dma_queue`` (issue waits when it is full), each taking its
transfer plus :data:`LOAD_SETUP` or :data:`STORE_SETUP` cycles (stores use the write channel,
not the read port). These constants are measured on the RTL (tests/hw/test_accelerator.py runs
programs of lone and chained loads, stores and NOPs).

A group holds up to :data:`~flexigan.hw.arch.config.RUN_SLOTS` RUNs (the controller waits for a
free slot) and runs them through its pipeline (:mod:`.pipeline`). The group is busy from a
RUN's arrival until its last byte is written.

Dependencies, as the RTL's scoreboards keep them (docs/isa.md): a RUN waits for earlier DMA
into its group's memories and for every earlier DMA of ACT; a DMA into a group waits for
earlier RUNs that read what it overwrites; a DMA of ACT (a load or a store) waits for every
earlier RUN. The ISA asks less of ACT (only DMAs and RUNs whose bytes overlap); a batched
program, which loads and stores frames between its RUNs, runs as the coarser order says (its
RTL cycles were up to 7 % above a model that followed the bytes).
Crossbar (see :mod:`.pipeline`): groups reading the same stream
(address pattern) share a broadcast read; a RUN that joins the streams of the groups still
reading slows the ones already running for the rest of their access. Write conflicts
(post-writers writing one bank) are not charged: a post-writer writes a pixel's lanes that fall
in one word as one write (3 side-by-side lanes of an HWC output: 1.5 writes in the pixel's 3
cycles on 4-byte words), so groups writing one bank seldom wait for it; a post-bound RUN of one
lane still writes a byte per cycle.
"""

from __future__ import annotations

import numpy as np

from ...hw.arch import isa
from ...hw.arch.config import RUN_SLOTS
from ...hw.arch.timing import (
    ACCESS_BUBBLE,
    DECODE_CYCLES,
    FETCH_DELAY,
    ISSUE_CYCLES,
    LOAD_CLAIM,
    LOAD_SETUP,
    RUN_ENTRY,
    SCAN_CYCLES,
    SCAN_DRAIN,
    STORE_SETUP,
    WAIT_DELAY,
)
from .pipeline import RunFlow, fair_slowdowns, run_work

__all__ = ["transfer_cycles", "CycleModel"]


def transfer_cycles(config, n):
    """Cycles an AXI transfer of ``n`` bytes takes: ``mem_latency`` once, then a beat per
    ``axi_bytes`` (the burst reader and writer request all of a transfer's bursts without
    waiting for data, so the latency of every burst after the first overlaps the beats of the
    one before; the RTL measures so with 64-byte bursts)."""
    return (config.mem_latency if n else 0) + -(-n // config.axi_bytes)


class _Port:
    """The AXI read port, which instruction fetch and DMA loads share: the intervals it is
    busy; a transfer takes the first gap it fits from the time it is ready. A DMA load takes
    precedence over fetches (the controller starts a fetch only while the DMA engine does not
    want the reader): a load ready by a fetch's start moves that fetch, and the fetches after
    it, behind the load. Fetches are named by their number; ``starts`` holds when each
    started."""

    def __init__(self):
        self.busy = []                  # (start, end, fetch number or None)
        self.starts, self.ready = {}, {}

    def _book(self, ready, cycles, fetch):
        start = ready
        for busy_start, busy_end, _ in sorted(self.busy):
            if busy_start >= start + cycles:
                break
            start = max(start, busy_end)
        self.busy.append((start, start + cycles, fetch))
        return start

    def take(self, ready, cycles, now, fetch=None):
        """Book a transfer of ``cycles`` ready at ``ready`` (forgetting what ended by ``now``);
        return its start."""
        self.busy = [it for it in self.busy if it[1] > now]
        if fetch is not None:
            self.ready[fetch] = (ready, cycles)
            self.starts[fetch] = self._book(ready, cycles, fetch)
            return self.starts[fetch]
        moved = sorted(it for it in self.busy if it[2] is not None and it[0] >= ready + LOAD_CLAIM)
        self.busy = [it for it in self.busy if it not in moved]
        start = self._book(ready, cycles, None)
        for _, _, moved_fetch in moved:
            after, fetch_cycles = self.ready[moved_fetch]
            self.starts[moved_fetch] = self._book(max(after, ready), fetch_cycles, moved_fetch)
        return start


class _Board:
    """Intervals ``[start, stop)`` of one memory with the time until which earlier work uses
    them."""

    def __init__(self):
        self.items = []

    def add(self, start, stop, until):
        self.items.append((start, stop, until))

    def until(self, start, stop, now):
        """When the earlier work on any of ``[start, stop)`` ends (0: none after ``now``)."""
        self.items = [it for it in self.items if it[2] > now]
        return max((t for a, b, t in self.items if a < stop and start < b), default=0)


def _nonempty(span):
    return span[0] < span[1]


class CycleModel:
    """The time of one run of the machine: the controller's clock (``now``), the AXI read port,
    the DMA engine, each group's pipeline and the dependency scoreboards, the counters of
    time (``busy`` and ``stall`` cycles per group) and the timeline of what it booked (``runs``
    and ``dmas``: a group's RUN spans its busy cycles, so a group's spans add up to ``busy``).

    The controller calls :meth:`fetch` before an instruction, the method of its kind
    (:meth:`dma`, :meth:`run`, :meth:`barrier`) after the semantics ran it, then :meth:`issue`.
    """

    def __init__(self, config, sparse):
        self.config, self.sparse = config, sparse
        groups = config.groups
        self.now = 0                                # the controller's clock
        # Instruction fetch.
        self.port = _Port()
        self.fetches = 0
        self.index = 0                              # of the instruction being issued
        self.fetch_cycles = transfer_cycles(config, config.fetch_insns * isa.GLOBAL_BYTES)
        # Cycles from a fetch's start to each of its instructions' last beat: an instruction
        # enters the queue with its last beat, not with the fetch's.
        self.arrive = [transfer_cycles(config, (k + 1) * isa.GLOBAL_BYTES)
                       for k in range(config.fetch_insns)]
        # The DMA engine.
        self.dma_free = 0
        self.dma_ends = []                          # ends of the DMAs so far, in order
        # The groups.
        self.group_free = [0] * groups              # end of the group's last RUN
        self.decoder_free = [0] * groups            # the decoder may take the next RUN
        self.access_free = [0] * groups             # the access engine may start the next RUN
        self.held = [[] for _ in range(groups)]     # ends of the RUNs each group holds
        self.crossbar = [None] * groups             # its last RUN's reads per bank and cycle
        self.stream = [None] * groups               # its last RUN's stream
        self.slowdown = [1.0] * groups              # its crossbar slowdown
        self.flow = [None] * groups                 # its last RUN, to slow it down later
        # Scoreboards: when earlier work is done with which memory.
        self.group_dma = [0] * groups               # end of the last DMA into the group
        self.scanned = [0] * groups                 # its scoreboard knows its RUNs' ranges
        self.group_reads = [{s: _Board() for s in isa.Space} for _ in range(groups)]
        self.act_dma_end = 0                        # end of the last DMA of ACT
        self.busy, self.stall = [0] * groups, [0] * groups
        # The timeline, as the model books it: each group's RUNs as
        # [group, start, end, instruction, stall cycles] and the DMAs as
        # [start, end, instruction, space, store]; ``last_run`` finds a group's last RUN.
        self.runs, self.dmas = [], []
        self.last_run = [None] * groups
        self._prefetch(0)

    # --- the controller --------------------------------------------------------------------

    def _prefetch(self, dequeued, at=None):
        # A fetch starts when the queue has room for its instructions (from ``at``, by
        # default now) and the port is free.
        at = self.now if at is None else at
        per_fetch = self.config.fetch_insns
        while (self.fetches + 1) * per_fetch <= self.config.queue_insns + dequeued:
            self.port.take(at, self.fetch_cycles, self.now, fetch=self.fetches)
            self.fetches += 1

    def fetch(self, index):
        """Wait until instruction number ``index`` is at the head of the queue."""
        per_fetch = self.config.fetch_insns
        self.now = max(self.now, self.port.starts[index // per_fetch]
                       + self.arrive[index % per_fetch] + FETCH_DELAY)
        self.index = index

    def issue(self, op, index):
        """Issue instruction ``index`` (of opcode ``op``), whose work has been booked; return
        the clock after it."""
        self.now += ISSUE_CYCLES if op not in (isa.GlobalOp.BARRIER, isa.GlobalOp.END) else 0
        self._prefetch(index + 1)
        return self.now

    def barrier(self, groups):
        """Wait until ``groups`` are idle and all DMA is done."""
        self.now = max([self.now, self.dma_free + WAIT_DELAY]
                       + [self.group_free[g] + WAIT_DELAY for g in groups])

    def reset_counters(self):
        """COUNTERS RESET of the busy and stall cycles."""
        self.busy, self.stall = [0] * self.config.groups, [0] * self.config.groups

    # --- the DMA engine --------------------------------------------------------------------

    def dma(self, transfer):
        """Book a DMA (a :class:`~.semantics.Transfer`) on the DMA engine, after the earlier
        work on what it overwrites or stores."""
        queued = self.config.dma_queue
        if len(self.dma_ends) > queued:
            # The controller waits for room in the DMA queue.
            self.now = max(self.now, self.dma_ends[-queued - 1])
        span = (transfer.start, transfer.stop)
        start = max(self.now, self.dma_free)
        if transfer.store or transfer.space == isa.Space.ACT:
            # The scoreboards hold a DMA of ACT while any RUN they released runs.
            start = max(start, *self.group_free)
        else:
            for g in transfer.groups:
                start = max(start, self.group_reads[g][transfer.space].until(*span, self.now))
                if transfer.space in (isa.Space.WGT, isa.Space.LUT):
                    # The scoreboard holds WGT and LUT DMAs until earlier RUNs are scanned.
                    start = max(start, self.scanned[g])
        cycles = transfer_cycles(self.config, transfer.length)
        if transfer.store:
            cycles += STORE_SETUP
        else:
            cycles += LOAD_SETUP
            # The fetch this instruction's issue makes room for wants the port from then: it
            # goes first if the port frees before the load claims it (a load behind a busy
            # DMA engine claims the port only once that is done).
            self._prefetch(self.index + 1, at=self.now + ISSUE_CYCLES)
            start = self.port.take(start, cycles, self.now)
        end = start + cycles
        self.dma_free = end
        self.dma_ends.append(end)
        self.dmas.append([start, end, self.index, transfer.space.name, bool(transfer.store)])
        if transfer.store or transfer.space == isa.Space.ACT:
            self.act_dma_end = end
        else:
            for g in transfer.groups:
                self.group_dma[g] = max(self.group_dma[g], end)

    # --- the groups ------------------------------------------------------------------------

    def run(self, group, args, record):
        """Book one group's part of a RUN (run registers ``args``, a
        :class:`~.semantics.RunRecord`) on the group."""
        work = run_work(self.config, self.sparse, args, record)
        footprint = record.footprint
        held = [end for end in self.held[group] if end > self.now]
        if len(held) >= RUN_SLOTS:
            self.now = sorted(held)[-RUN_SLOTS]     # the controller waits for a free slot
        self.held[group] = [end for end in held if end > self.now]
        start = self._ready(group)
        # The scoreboard scans the RUN's micro-program once its DMAs are done, in order.
        self.scanned[group] = (max(start, self.scanned[group]) + work.decode + SCAN_CYCLES
                               + SCAN_DRAIN)
        decoded = max(start, self.decoder_free[group]) + work.decode + DECODE_CYCLES
        begin = max(decoded, self.access_free[group])
        slowdown = self._share_crossbar(group, work, begin)
        flow = RunFlow(begin, work, self.group_free[group])
        self.flow[group] = flow
        end = flow.end(work.access * slowdown)
        self.access_free[group] = flow.access_end(work.access * slowdown, end) + ACCESS_BUBBLE
        self.decoder_free[group] = begin
        self.busy[group] += end - max(start, flow.floor)
        stall = int(np.ceil(work.access.sum() * (slowdown - 1)))
        self.stall[group] += stall
        self.last_run[group] = len(self.runs)
        self.runs.append([group, max(start, flow.floor), end, self.index, stall])
        self.group_free[group] = end
        self.held[group].append(end)
        self.slowdown[group] = slowdown
        self.stream[group], self.crossbar[group] = work.stream, work.crossbar
        self._book_reads(group, footprint, end)
        # Until it is scanned, the scoreboard counts the RUN as a NORM FINISH, which reads
        # 3 x lanes PARAM entries.
        first = args["param_offset"]
        self.group_reads[group][isa.Space.PARAM].add(first, first + 3 * record.lanes,
                                                     self.scanned[group])

    def _ready(self, group):
        """When a RUN may start: after the DMA into its group and every DMA of ACT before it
        (the scoreboards tag a RUN with the last of those)."""
        return max(self.now + RUN_ENTRY, self.group_dma[group], self.act_dma_end)

    def _share_crossbar(self, group, work, begin):
        """The crossbar slowdown of a RUN whose access starts at ``begin``; slow down the
        groups still reading other streams as its demand joins theirs."""
        if work.crossbar is None:
            return 1.0
        # Each distinct stream asks its banks for words at its rate (a word each time its
        # address leaves the last word read); the banks share their reads fairly among the
        # streams of the groups still reading.
        rivals = [h for h in range(self.config.groups)
                  if h != group and self.crossbar[h] is not None
                  and self.access_free[h] > begin and self.stream[h] != work.stream]
        streams = {work.stream: work.crossbar} | {self.stream[h]: self.crossbar[h]
                                                  for h in rivals}
        shares = dict(zip(streams, fair_slowdowns(np.array(list(streams.values())))))
        for h in rivals:
            if shares[self.stream[h]] > self.slowdown[h]:
                self._slow(h, begin, shares[self.stream[h]])
        return shares[work.stream]

    def _slow(self, group, cycle, slowdown):
        """Slow ``group``'s last RUN from ``cycle`` on, as a RUN joining its banks does."""
        flow = self.flow[group]
        taps = flow.work.access * self.slowdown[group]
        late = flow.begin + np.cumsum(taps) > cycle
        taps = np.where(late, flow.work.access * slowdown, taps)
        end = flow.end(taps)
        extra = end - self.group_free[group]
        access_end = flow.access_end(taps, end) + ACCESS_BUBBLE
        stall = max(0, access_end - self.access_free[group])
        self.stall[group] += stall
        self.runs[self.last_run[group]][4] += stall
        self.access_free[group] = max(self.access_free[group], access_end)
        if extra > 0:
            self.busy[group] += extra
            self.runs[self.last_run[group]][2] += extra
            self.held[group] = [e + extra if e == self.group_free[group] else e
                                for e in self.held[group]]
            self.group_free[group] = end
        self.slowdown[group] = slowdown

    def _book_reads(self, group, footprint, end):
        """Mark what a RUN ending at ``end`` reads in its group, for the DMA after it."""
        boards = self.group_reads[group]
        if _nonempty(footprint.weights):
            boards[isa.Space.WGT].add(*footprint.weights, end)
        boards[isa.Space.PARAM].add(*footprint.params, end)
        for table in footprint.tables:
            boards[isa.Space.LUT].add(table, table + 1, end)
        boards[isa.Space.UOP].add(*footprint.uops, end)
