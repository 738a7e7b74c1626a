"""The instruction-level simulator: the living definition of the ISA, with a cycle model.

:func:`run` executes a memory image (global program at address 0) on an
:class:`~flexigan.hw.arch.config.AcceleratorConfig`, decoding with :mod:`flexigan.hw.arch.isa`,
exactly as docs/isa.md specifies; its numerics are bit-exact with the golden interpreter
(:func:`flexigan.sim.golden.run_int`). A RUN executes vectorised: the loop nest of its
micro-program becomes an array of (pixel x tap) activation addresses, gathered and multiplied
with the (tap x lane) weights in float64 (exact: every partial sum of int8 products stays far
below 2**53), then POST and WRITE apply to all pixels at once. A RUN must not write what it
reads (the compiler never does).

Cycle model (event based, not cycle stepped), calibrated against the RTL group
(:mod:`flexigan.hw.group`, tests/hw/test_group.py) and the RTL controller
(:mod:`flexigan.hw.controller`, tests/hw/test_accelerator.py). The controller issues one
instruction per cycle, in order, from a prefetch queue of ``config.queue_insns`` instructions;
BARRIER waits. Instruction fetch reads ``config.fetch_insns`` instructions at a time through the
AXI read port it shares with DMA loads; each instruction is in the queue :data:`FETCH_DELAY`
cycles after its last beat (not the fetch's). The port serves one transfer at a time, each
taking the first gap that fits from when it is ready (a fetch, as soon as the queue has room
for it); a DMA load takes precedence over fetches: a fetch that would start
:data:`LOAD_CLAIM` or more cycles after the load is ready waits for it. An AXI transfer of
``n`` bytes takes :func:`transfer_cycles`: ``mem_latency`` once (the burst reader and writer
request every burst of a transfer without waiting for data) plus ``n / axi_bytes``. One DMA
engine serves DMA_LOAD/DMA_STORE/UOP_LOAD in order from a queue of
:data:`~flexigan.hw.arch.config.DMA_QUEUE` (issue waits when it is full), each taking its
transfer plus :data:`LOAD_SETUP` or :data:`STORE_SETUP` cycles (stores use the write channel,
not the read port). These constants are measured on the RTL (tests/hw/test_accelerator.py
runs programs of lone and chained loads, stores and NOPs).

A group holds up to :data:`RUN_SLOTS` RUNs (the controller waits for a free slot) and runs
them through a pipeline of three stages, each overlapping the next RUN's earlier stages:

- the **decoder** reads the micro-program, ``uop_count + DECODE_CYCLES`` cycles, while the
  previous RUN's taps are generated; it hands the RUN to the access engine when that is free;
- the **access engine** issues one tap per cycle to the lanes: a pixel takes ``passes x
  max(1, taps)`` cycles (an empty nest is one null step per pass), a pixel without MAC one
  cycle (the execute engine's). With the sparse core on, taps come in bundles (the steps of
  :class:`~flexigan.hw.agen.AddressGenerator`: where the innermost loop's ``act_stride`` is 1,
  up to ``bundle_width`` taps of one word, from the innermost level's start or a word's first
  byte; otherwise one tap) and a pass takes ``max(1, non-zero taps)`` cycles per bundle.
  Between two RUNs it idles :data:`ACCESS_BUBBLE` cycles;
- the **post-writer** requantizes and writes one lane per cycle: a pixel with POST and WRITE
  takes ``lanes`` cycles of it, overlapped with later pixels' taps (a two-stage flow: the RUN
  ends after ``max over k`` of the first ``k`` pixels' access plus the last pixels' post).

A RUN that finds the group idle also pays the pipeline's fill and drain:
:data:`ACCESS_FILL` (fetch, sparse core, weight fetch; only with MAC), :data:`EXECUTE_FILL`
(lanes, job queue) and, with POST, :data:`POST_DRAIN`; a RUN queued behind another overlaps
them, so a chain of RUNs pays them once. The group is busy from a RUN's arrival until its
last byte is written.

Dependencies, as in docs/isa.md: a RUN waits for earlier DMA into its group's memories and for
earlier DMA touching the ACT bytes it reads or writes; a DMA waits for earlier RUNs that read
what it overwrites (or write what it stores). The RTL orders ACT more coarsely (every RUN
after every earlier ACT DMA and back); compiled programs move activations only at their start
and end, where the two agree. Crossbar: the access engine keeps the last word
it read and reads the crossbar only when a tap's word differs (the line is emptied at each RUN
start), so a RUN asks each bank for its reads (word changes along its pixel, pass, tap
addresses) over its access cycles. A bank serves one word per cycle, shared max-min fairly
(round robin) among the streams of the groups still reading; a stream asking more than its
share slows down by the ratio. Groups reading the same stream (address pattern) share a
broadcast read. A RUN that joins slows the ones already running for the rest of their access.
Write conflicts (post-writers writing one bank) are not charged.

:func:`simulate` runs a compiled :class:`~flexigan.compiler.program.Program` on int8 inputs and
reports cycles, MAC counts, bounds and utilization per layer and in total.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..hw.arch import isa, numerics
from ..hw.arch.config import DMA_QUEUE, RUN_SLOTS
from ..hw.arch.timing import (
    ACCESS_BUBBLE,
    ACCESS_FILL,
    DECODE_CYCLES,
    EXECUTE_FILL,
    FETCH_DELAY,
    ISSUE_CYCLES,
    LOAD_CLAIM,
    LOAD_SETUP,
    POST_DRAIN,
    STORE_SETUP,
)

__all__ = ["transfer_cycles", "Result", "run", "simulate", "report_fields"]

PARAM_DTYPE = isa.PARAM_DTYPE


class ProgramError(ValueError):
    """The program does something the ISA does not define (bad opcode, address out of range)."""


@functools.cache
def _decode(level, word):
    return (isa.decode_global if level == "global" else isa.decode_uop)(word)


@functools.lru_cache(maxsize=4096)
def _parse(words):
    try:
        return isa.parse_micro_program(words)
    except ValueError as error:
        raise ProgramError(str(error)) from None


def _fair(demands):
    """Each stream's slowdown on banks that serve one access per cycle, shared max-min fairly
    (round-robin arbitration): ``demands[i, b]`` are stream ``i``'s accesses per cycle to
    bank ``b``; a stream slows down by its worst bank's demand over what it is granted."""
    slow = np.ones(len(demands))
    for d in demands.T[demands.sum(axis=0) > 1]:
        left, order = 1.0, np.argsort(d)
        for k, i in enumerate(order):
            granted = min(d[i], left / (len(d) - k))
            left -= granted
            if d[i] > granted:
                slow[i] = max(slow[i], d[i] / granted)
    return slow


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
        for a, b, _ in sorted(self.busy):
            if a >= start + cycles:
                break
            start = max(start, b)
        self.busy.append((start, start + cycles, fetch))
        return start

    def take(self, ready, cycles, now, fetch=None):
        self.busy = [it for it in self.busy if it[1] > now]
        if fetch is not None:
            self.ready[fetch] = (ready, cycles)
            self.starts[fetch] = self._book(ready, cycles, fetch)
            return self.starts[fetch]
        moved = sorted(it for it in self.busy if it[2] is not None and it[0] >= ready + LOAD_CLAIM)
        self.busy = [it for it in self.busy if it not in moved]
        start = self._book(ready, cycles, None)
        for _, _, f in moved:
            after, cycles = self.ready[f]
            self.starts[f] = self._book(max(after, ready), cycles, f)
        return start


class _Board:
    """Intervals ``[lo, hi)`` of one memory with the time until which earlier work uses them."""

    def __init__(self):
        self.items = []

    def add(self, lo, hi, until):
        self.items.append((lo, hi, until))

    def until(self, lo, hi, now):
        self.items = [it for it in self.items if it[2] > now]
        return max((t for a, b, t in self.items if a < hi and lo < b), default=0)


@dataclass
class Result:
    """What a run leaves: the memory, total cycles, and per-instruction traces.

    ``time[i]`` is the controller's clock after instruction ``i`` (for BARRIER its release,
    for END the end of all work); ``macs_issued``, ``macs_skipped`` and ``dram_bytes`` are per
    instruction; ``busy``/``stall`` are per group; ``dram_by_space`` splits the DMA bytes by
    on-chip memory (``ACT`` traffic is per frame, the rest is the model's constants).
    """

    memory: np.ndarray
    cycles: int
    time: np.ndarray
    macs_issued: np.ndarray
    macs_skipped: np.ndarray
    dram_bytes: np.ndarray
    busy: list
    stall: list
    runs: int
    counters: dict
    dram_by_space: dict


class _Machine:
    def __init__(self, image, config, sparse):
        self.config, self.sparse = config, sparse
        self.mem = np.frombuffer(bytearray(image), dtype=np.uint8).copy()
        g = config.groups
        self.act = np.zeros(config.act_bytes, np.int8)
        self.wgt = np.zeros((g, config.weight_bytes), np.int8)
        self.param = np.zeros((g, config.param_entries), PARAM_DTYPE)
        self.lut = np.zeros((g, config.lut_tables, isa.LUT_BYTES), np.int8)
        self.uop = np.zeros((g, config.uop_depth), dtype=object)
        self.uop[:] = 0
        # Timing.
        self.now = 0                            # controller clock
        self.dma_free = 0
        self.dma_ends = []                      # ends of the DMAs so far, in order
        self.port = _Port()
        self.group_free = [0] * g              # end of the group's last RUN
        self.decoder_free = [0] * g            # the decoder may take the next RUN
        self.access_free = [0] * g             # the access engine may start the next RUN
        self.held = [[] for _ in range(g)]     # ends of the RUNs each group holds
        self.reads = [None] * g                # its last RUN's reads per bank and cycle
        self.slowdown = [1.0] * g              # its crossbar slowdown
        self.pending = [None] * g              # its timing, to slow it down later
        self.group_dma = [0] * g                # end of the last DMA into the group's memories
        self.route = [(0, config.act_banks)] * g
        self.stream = [None] * g
        self.group_reads = [{s: _Board() for s in isa.Space} for _ in range(g)]
        self.act_reads, self.act_writes = _Board(), _Board()
        self.dma_act_writes, self.dma_act_reads = _Board(), _Board()
        self.busy, self.stall = [0] * g, [0] * g
        self.runs = 0
        self.issued = self.skipped = self.dram = 0
        self.dram_by_space = dict.fromkeys(isa.Space, 0)

    # --- memories --------------------------------------------------------------------------

    def _ext(self, addr, n):
        if addr + n > len(self.mem):
            raise ProgramError(f"external access [{addr:#x}, {addr + n:#x}) beyond the "
                               f"{len(self.mem)}-byte image")
        return slice(addr, addr + n)

    def _local(self, space, addr, n):
        size, unit = self.config.local_units(space), isa.unit_bytes(space)
        if n % unit or addr + n // unit > size:
            raise ProgramError(f"{space.name} access of {n} bytes at {addr} does not fit "
                               f"{size} entries of {unit} bytes")
        return slice(addr, addr + n // unit)

    def _groups(self, mask):
        groups = [g for g in range(self.config.groups) if mask >> g & 1]
        if mask >> self.config.groups:
            raise ProgramError(f"group mask {mask:#x} names groups beyond {self.config.groups}")
        return groups

    # --- instructions ----------------------------------------------------------------------

    def dma(self, op, a):
        space, n, ext, local = a["space"], a["length"], a["ext_addr"], a["local_addr"]
        if op == isa.GlobalOp.UOP_LOAD:
            space = isa.Space.UOP
        src = self._ext(ext, n)
        if len(self.dma_ends) > DMA_QUEUE:
            # The controller waits for room in the DMA queue.
            self.now = max(self.now, self.dma_ends[-DMA_QUEUE - 1])
        start = max(self.now, self.dma_free)
        if op == isa.GlobalOp.DMA_STORE:
            if space != isa.Space.ACT:
                raise ProgramError(f"DMA_STORE reads ACT only, not {space.name}")
            rng = self._local(space, local, n)
            start = max(start, self.act_writes.until(local, local + n, self.now))
            self.mem[src] = self.act[rng].view(np.uint8)
        elif space == isa.Space.ACT:
            rng = self._local(space, local, n)
            start = max(start, self.act_reads.until(local, local + n, self.now),
                        self.act_writes.until(local, local + n, self.now))
            self.act[rng] = self.mem[src].view(np.int8)
        else:
            rng = self._local(space, local, n)
            data = self.mem[src]
            for g in self._groups(a["group_mask"]):
                start = max(start, self.group_reads[g][space].until(rng.start, rng.stop,
                                                                    self.now))
                if space == isa.Space.WGT:
                    self.wgt[g, rng] = data.view(np.int8)
                elif space == isa.Space.PARAM:
                    self.param[g, rng] = data.view(PARAM_DTYPE)
                elif space == isa.Space.LUT:
                    self.lut[g, rng] = data.view(np.int8).reshape(-1, isa.LUT_BYTES)
                else:
                    words = data.reshape(-1, isa.UOP_BYTES)
                    self.uop[g, rng] = [int.from_bytes(w.tobytes(), "little") for w in words]
        cycles = transfer_cycles(self.config, n)
        if op == isa.GlobalOp.DMA_STORE:
            cycles += STORE_SETUP
        else:
            cycles += LOAD_SETUP
            start = self.port.take(start, cycles, self.now)
        end = start + cycles
        self.dma_free = end
        self.dma_ends.append(end)
        if op == isa.GlobalOp.DMA_STORE:
            self.dma_act_reads.add(local, local + n, end)
        elif space == isa.Space.ACT:
            self.dma_act_writes.add(local, local + n, end)
        else:
            for g in self._groups(a["group_mask"]):
                self.group_dma[g] = max(self.group_dma[g], end)
        self.dram += n
        self.dram_by_space[space] += n
        return n

    def run(self, a):
        issued = skipped = 0
        for g in self._groups(a["group_mask"]):
            words = tuple(self.uop[g, a["uop_addr"]:a["uop_addr"] + a["uop_count"]])
            if len(words) != a["uop_count"]:
                raise ProgramError(f"RUN reads micro-ops beyond the {self.config.uop_depth}-"
                                   "entry micro-op memory")
            i, s = self._execute(g, _parse(words), a)
            issued += i
            skipped += s
        self.runs += 1
        return issued, skipped

    def _check(self, name, addr, size):
        if addr.size and (addr.min() < 0 or addr.max() >= size):
            raise ProgramError(f"RUN {name} address {int(addr.min())}..{int(addr.max())} "
                               f"outside [0, {size})")

    def _execute(self, g, micro, a):
        cfg, lanes = self.config, a["lanes"]
        rows, cols = np.arange(a["rows"]), np.arange(a["cols"])
        base, rs, cs = micro.act
        pix = (a["act_offset"] + base + rows[:, None] * rs + cols[None, :] * cs).ravel()
        lane = np.arange(lanes)
        params = self.param[g, a["param_offset"]:a["param_offset"] + lanes]
        if len(params) != lanes:
            raise ProgramError("RUN reads PARAM entries beyond the PARAM memory")
        npix = pix.size
        acc = np.zeros((npix, lanes), np.int64)
        y = None
        steps = np.zeros(npix, np.int64)
        access = np.zeros(npix, np.int64)      # access engine cycles per pixel
        act_lo, act_hi = cfg.act_bytes, 0
        wgt_lo, wgt_hi = cfg.weight_bytes, 0
        tables, write = set(), (0, 0)
        for op, f in micro.body:
            if op == isa.UopOp.CLEAR:
                acc = np.broadcast_to(params["bias"].astype(np.int64) if f["use_bias"] else
                                      np.zeros(lanes, np.int64), (npix, lanes)).copy()
            elif op == isa.UopOp.MAC:
                addr = pix[:, None] + micro.act_taps[None, :]
                waddr = a["wgt_offset"] + micro.wgt[0] + lane[None, :] * micro.wgt[1] \
                    + micro.wgt_taps[:, None]
                self._check("activation", addr, cfg.act_bytes)
                self._check("weight", waddr, cfg.weight_bytes)
                if addr.size:
                    act_lo, act_hi = min(act_lo, addr.min()), max(act_hi, addr.max() + 1)
                if waddr.size:
                    wgt_lo, wgt_hi = min(wgt_lo, waddr.min()), max(wgt_hi, waddr.max() + 1)
                x = self.act[addr]
                acc += (x.astype(np.float64) @ self.wgt[g][waddr].astype(np.float64)) \
                    .astype(np.int64)
                zeros = np.count_nonzero(x == 0, axis=1) if self.sparse else 0
                steps += micro.act_taps.size - zeros
                access += self._access(micro, addr, x)
            elif op == isa.UopOp.POST:
                y = numerics.requantize(acc, params["multiplier"], params["shift"]).astype(np.int64)
                if f["use_lut"]:
                    table = (a["lut_offset"] + f["lut"] + (lane if f["per_lane"] else 0)) \
                        % cfg.lut_tables
                    table = np.broadcast_to(table, (lanes,))
                    tables.update(int(t) for t in np.unique(table))
                    y = self.lut[g][table[None, :], y + 128]
            elif op == isa.UopOp.WRITE:
                if y is None:
                    raise ProgramError("WRITE before POST in a micro-program")
                wbase, wrs, wcs, wls = f["base"], f["row_stride"], f["col_stride"], \
                    f["lane_stride"]
                out = (a["out_offset"] + wbase + rows[:, None] * wrs + cols[None, :] * wcs) \
                    .ravel()[:, None] + lane[None, :] * wls
                self._check("output", out, cfg.act_bytes)
                self.act[out] = y
                if out.size:
                    write = (int(out.min()), int(out.max()) + 1)
        passes = sum(op == isa.UopOp.MAC for op, _ in micro.body)
        macs = passes * micro.act_taps.size
        issued = int(steps.sum()) * lanes
        skipped = (macs * npix - int(steps.sum())) * lanes
        self.issued += issued
        self.skipped += skipped
        mac = passes > 0
        post = any(op == isa.UopOp.WRITE for op, _ in micro.body)
        if not mac:
            access[:] = 1                      # the execute engine's cycle per pixel
        reads = None                           # the RUN's crossbar reads per bank and cycle
        if mac:
            reads = np.zeros(cfg.act_banks)
            if micro.act_taps.size:
                # The access engine reuses the last word it read: a read each time the word
                # changes along the RUN's (pixel, pass, tap) addresses.
                words = np.tile(pix[:, None] + micro.act_taps[None, :], (1, passes)).ravel() \
                    // cfg.axi_bytes
                new = np.ones(words.size, bool)
                new[1:] = words[1:] != words[:-1]
                banks = words[new] * cfg.axi_bytes // cfg.act_bank_bytes
                reads = np.bincount(banks, minlength=cfg.act_banks) / access.sum()
        self._time_run(g, a, micro, access, max(1, lanes) if post else 0, reads,
                       (act_lo, act_hi), (wgt_lo, wgt_hi), write, tables, params.size)
        return issued, skipped

    def _access(self, micro, addr, x):
        """Access cycles of one MAC pass per pixel: a cycle per tap, or with the sparse core,
        ``max(1, non-zero taps)`` per bundle (the steps of the address generator)."""
        taps = micro.act_taps.size
        if not taps:
            return 1                           # the null step of an empty nest
        if not self.sparse:
            return taps
        count, stride = micro.loops[-1][:2]
        start = np.ones(addr.shape, bool)
        if stride % (1 << self.config.act_addr_width) == 1:
            # A bundle starts with the innermost level, at a word's first byte, or after
            # bundle_width taps.
            at = np.arange(taps)
            reset = (at % count == 0)[None, :] | (addr % self.config.axi_bytes == 0)
            since = at - np.maximum.accumulate(np.where(reset, at, 0), axis=1)
            start = since % self.config.bundle_width == 0
        bundle = np.cumsum(start.ravel()) - 1
        kept = np.bincount(bundle, weights=(x != 0).ravel())
        pixel = np.repeat(np.arange(addr.shape[0]), start.sum(axis=1))
        return np.bincount(pixel, weights=np.maximum(1, kept), minlength=addr.shape[0]) \
            .astype(np.int64)

    def _time_run(self, g, a, micro, access, post, reads, act_range, wgt_range, write, tables,
                  nparams):
        held = [end for end in self.held[g] if end > self.now]
        if len(held) >= RUN_SLOTS:
            self.now = sorted(held)[-RUN_SLOTS]   # the controller waits for a free slot
        self.held[g] = [end for end in held if end > self.now]
        start = max(self.now, self.group_dma[g],
                    self.dma_act_writes.until(*act_range, self.now) if act_range[0] <
                    act_range[1] else 0,
                    self.dma_act_writes.until(*write, self.now) if write[0] < write[1] else 0,
                    self.dma_act_reads.until(*write, self.now) if write[0] < write[1] else 0)
        decoded = max(start, self.decoder_free[g]) + a["uop_count"] + DECODE_CYCLES
        begin = max(decoded, self.access_free[g])
        # Crossbar: each distinct stream asks its banks for words at its rate (a word each
        # time its address leaves the last word read); the banks share their reads fairly
        # among the streams of the groups still reading.
        key = (a["act_offset"], a["rows"], a["cols"], micro.act, micro.act_taps.tobytes())
        rivals = [h for h in range(self.config.groups) if h != g and self.reads[h] is not None
                  and self.access_free[h] > begin and self.stream[h] != key]
        slowdown = 1.0
        if reads is not None:
            streams = {key: reads} | {self.stream[h]: self.reads[h] for h in rivals}
            shares = dict(zip(streams, _fair(np.array(list(streams.values())))))
            slowdown = shares[key]
            for h in rivals:
                if shares[self.stream[h]] > self.slowdown[h]:
                    self._slow(h, begin, shares[self.stream[h]])
        fill = (EXECUTE_FILL + (ACCESS_FILL if reads is not None else 0),
                POST_DRAIN if post else 0)
        floor = self.group_free[g]
        self.pending[g] = (begin, access, post, fill, floor, start)
        end = self._end(begin, access * slowdown, post, fill, floor)
        self.access_free[g] = begin + int(np.ceil(access.sum() * slowdown)) + ACCESS_BUBBLE
        self.decoder_free[g] = begin
        self.busy[g] += end - max(start, floor)
        self.stall[g] += int(np.ceil(access.sum() * (slowdown - 1)))
        self.group_free[g] = end
        self.held[g].append(end)
        self.slowdown[g] = slowdown
        self.stream[g], self.reads[g] = key, reads
        if act_range[0] < act_range[1]:
            self.act_reads.add(*act_range, end)
        if write[0] < write[1]:
            self.act_writes.add(*write, end)
        boards = self.group_reads[g]
        if wgt_range[0] < wgt_range[1]:
            boards[isa.Space.WGT].add(*wgt_range, end)
        boards[isa.Space.PARAM].add(a["param_offset"], a["param_offset"] + nparams, end)
        for t in tables:
            boards[isa.Space.LUT].add(t, t + 1, end)
        boards[isa.Space.UOP].add(a["uop_addr"], a["uop_addr"] + a["uop_count"], end)

    @staticmethod
    def _end(begin, taps, post, fill, floor):
        """When a RUN's last byte is written: its pixels flow through the access engine
        (``taps`` cycles each) and the post-writer (``post`` each), after the group's earlier
        RUNs."""
        lanes = np.full(taps.size, post)
        flow = float(np.max(np.cumsum(taps) + np.cumsum(lanes[::-1])[::-1])) if taps.size \
            else 0.0
        return max(begin + int(np.ceil(flow)) + fill[0], floor + int(lanes.sum())) + fill[1]

    def _slow(self, h, t, slowdown):
        """Slow group ``h``'s last RUN from cycle ``t`` on, as a RUN joining its banks does."""
        begin, access, post, fill, floor, start = self.pending[h]
        taps = access * self.slowdown[h]
        late = begin + np.cumsum(taps) > t
        taps = np.where(late, access * slowdown, taps)
        end = self._end(begin, taps, post, fill, floor)
        extra = end - self.group_free[h]
        access_end = begin + int(np.ceil(taps.sum())) + ACCESS_BUBBLE
        self.stall[h] += max(0, access_end - self.access_free[h])
        self.access_free[h] = max(self.access_free[h], access_end)
        if extra > 0:
            self.busy[h] += extra
            self.held[h] = [e + extra if e == self.group_free[h] else e for e in self.held[h]]
            self.group_free[h] = end
        self.slowdown[h] = slowdown

    def barrier(self, mask):
        self.now = max([self.now, self.dma_free] +
                       [self.group_free[g] for g in self._groups(mask)])

    def counters(self):
        return {"cycles": self.now, "macs_issued": self.issued, "macs_skipped": self.skipped,
                "dma_bytes": self.dram, "busy_cycles": sum(self.busy),
                "stall_cycles": sum(self.stall), "runs": self.runs}


def run(image, config, sparse=True, max_instructions=10_000_000):
    """Execute the global program at address 0 of ``image`` until END.

    Parameters
    ----------
    image : bytes-like
        External memory; not modified (the result holds the memory after the run).
    config : AcceleratorConfig
    sparse : bool
        Whether the sparse core drops zero activations (cycles only; results are identical).

    Returns
    -------
    Result
    """
    m = _Machine(image, config, sparse)
    times, issued, skipped, dram = [], [], [], []
    per_fetch, depth = config.fetch_insns, config.queue_insns
    fetch_cycles = transfer_cycles(config, per_fetch * isa.GLOBAL_BYTES)
    # Cycles from a fetch's start to each of its instructions' last beat: an instruction
    # enters the queue with its last beat, not with the fetch's.
    arrive = [transfer_cycles(config, (k + 1) * isa.GLOBAL_BYTES) for k in range(per_fetch)]
    fetches = 0

    def prefetch(dequeued):
        # A fetch starts when the queue has room for its instructions and the port is free.
        nonlocal fetches
        while (fetches + 1) * per_fetch <= depth + dequeued:
            m.port.take(m.now, fetch_cycles, m.now, fetch=fetches)
            fetches += 1

    prefetch(0)
    pc = 0
    while True:
        if len(times) >= max_instructions:
            raise ProgramError(f"no END within {max_instructions} instructions")
        k = len(times)
        m.now = max(m.now, m.port.starts[k // per_fetch] + arrive[k % per_fetch] + FETCH_DELAY)
        word = int.from_bytes(m.mem[m._ext(pc, isa.GLOBAL_BYTES)].tobytes(), "little")
        try:
            op, a = _decode("global", word)
        except ValueError:
            raise ProgramError(f"bad global instruction at {pc:#x}") from None
        pc += isa.GLOBAL_BYTES
        i = s = n = 0
        if op in (isa.GlobalOp.DMA_LOAD, isa.GlobalOp.DMA_STORE, isa.GlobalOp.UOP_LOAD):
            n = m.dma(op, a)
        elif op == isa.GlobalOp.RUN:
            i, s = m.run(a)
        elif op == isa.GlobalOp.ROUTE:
            if a["bank_count"] < 1 or a["bank_first"] + a["bank_count"] > config.act_banks:
                raise ProgramError(f"ROUTE to banks {a['bank_first']}+{a['bank_count']} of "
                                   f"{config.act_banks}")
            for g in m._groups(a["group_mask"]):
                m.route[g] = (a["bank_first"], a["bank_count"])
        elif op == isa.GlobalOp.BARRIER:
            m.barrier(a["group_mask"])
        elif op == isa.GlobalOp.COUNTERS:
            m.barrier((1 << config.groups) - 1)
            if a["action"] == isa.CounterAction.RESET:
                m.issued = m.skipped = m.dram = m.runs = 0
                m.busy, m.stall = [0] * config.groups, [0] * config.groups
            else:
                values = m.counters()
                values["instructions"] = len(times) + 1
                block = b"".join(int(values[k]).to_bytes(8, "little") for k in isa.COUNTER_NAMES)
                m.mem[m._ext(a["ext_addr"], len(block))] = np.frombuffer(block, np.uint8)
        elif op == isa.GlobalOp.END:
            m.barrier((1 << config.groups) - 1)
        m.now += ISSUE_CYCLES if op not in (isa.GlobalOp.BARRIER, isa.GlobalOp.END) else 0
        times.append(m.now)
        prefetch(len(times))
        issued.append(i)
        skipped.append(s)
        dram.append(n)
        if op == isa.GlobalOp.END:
            break
    counters = m.counters()
    counters["instructions"] = len(times)
    return Result(m.mem, m.now, np.array(times), np.array(issued), np.array(skipped),
                  np.array(dram), m.busy, m.stall, m.runs, counters,
                  {space.name: n for space, n in m.dram_by_space.items()})


def report_fields():
    """Names of the numbers :func:`simulate` reports per layer and in total."""
    return ("cycles", "macs_useful", "macs_issued", "macs_skipped", "utilization",
            "compute_bound_cycles", "memory_bound_cycles", "dram_bytes")


def figures(config, cycles, useful, issued, skipped, dram):
    """The :func:`report_fields` of a run (or a layer) from its raw counts."""
    lanes = config.total_lanes
    return {"cycles": int(cycles), "macs_useful": int(useful), "macs_issued": int(issued),
            "macs_skipped": int(skipped),
            "utilization": round(useful / (cycles * lanes), 4) if cycles else 0.0,
            "compute_bound_cycles": round(useful / lanes, 1),
            "memory_bound_cycles": round(dram / config.axi_bytes, 1), "dram_bytes": int(dram)}


#: Batch sizes the roofline analysis tabulates.
ROOFLINE_BATCHES = (1, 2, 4, 8, 16, 32, 64)


def roofline(config, macs_useful, act_bytes, constant_bytes, batches=ROOFLINE_BATCHES):
    """Which bound dominates one frame, and how batching weights across frames moves it.

    A batched schedule loads each tile's constants (weights, parameters, tables, micro-ops)
    once and runs it over ``batch`` frames, so per frame the memory bound is
    ``(act_bytes + constant_bytes / batch) / axi_bytes`` while the compute bound,
    ``macs_useful / total_lanes``, stays. An estimate from one frame's traffic (activations
    are assumed to stay where a batch-1 program keeps them), not a simulated batched program.
    """
    compute = macs_useful / config.total_lanes
    rows = []
    for batch in batches:
        memory = (act_bytes + constant_bytes / batch) / config.axi_bytes
        rows.append({"batch": batch, "compute_bound_cycles": round(compute, 1),
                     "memory_bound_cycles": round(memory, 1),
                     "bound": "memory" if memory > compute else "compute"})
    crossover = next((r["batch"] for r in rows if r["bound"] == "compute"), None)
    floor = act_bytes / config.axi_bytes
    return {"bound_at_batch_1": rows[0]["bound"], "act_bytes_per_frame": int(act_bytes),
            "constant_bytes": int(constant_bytes),
            "compute_bound_at_batch": crossover,
            "memory_bound_floor_cycles": round(floor, 1),
            "memory_bound_at_any_batch": floor > compute,
            "batches": rows}


def simulate(program, inputs_int8, config=None, sparse=True):
    """Run ``program`` once per sample of ``inputs_int8``; return ``(outputs, report)``.

    Parameters
    ----------
    program : Program
        From :func:`flexigan.compiler.lower.lower` (or ``load_program``).
    inputs_int8 : dict of str to integer array
        ``(N, *shape)`` int8 values per model input (the quantized IR's input names).
    config : AcceleratorConfig, optional
        Must be the program's (the default).
    sparse : bool
        Zero skipping on or off.

    Returns
    -------
    outputs : dict of str to int8 array
        ``(N, *shape)`` per model output.
    report : dict
        ``engine``, ``batch``, ``sparse``, ``output_shape``, the :func:`report_fields` for the
        whole batch, ``groups`` (busy and stall cycles), ``counters`` (the COUNTERS block of the
        last sample), ``roofline`` (see :func:`roofline`; per frame) and ``layers`` (the same
        fields per layer).
    """
    config = config or program.config
    if config != program.config:
        raise ValueError("config differs from the one the program was compiled for")
    layout = program.layout
    batch = None
    for name, entry in layout["inputs"].items():
        if name not in inputs_int8:
            raise ValueError(f"inputs_int8 has no array for input {name!r}")
        x = np.asarray(inputs_int8[name])
        if x.shape[1:] != tuple(entry["shape"]) or x.dtype.kind not in "iu" or \
                (x.size and (x.min() < -128 or x.max() > 127)):
            raise ValueError(f"inputs_int8[{name!r}] must be int8 values of shape "
                             f"(N, {', '.join(map(str, entry['shape']))}), not {x.dtype} "
                             f"{x.shape}")
        batch = x.shape[0] if batch is None else batch
    outputs = {name: [] for name in layout["outputs"]}
    layers = layout["layers"]
    totals = np.zeros((len(layers), 4), np.int64)   # cycles, issued, skipped, dram
    busy, stall = np.zeros(config.groups, np.int64), np.zeros(config.groups, np.int64)
    for n in range(batch):
        result = run(program.frame(inputs_int8, n), config, sparse)
        for name, value in program.outputs(result.memory).items():
            outputs[name].append(value)
        for i, layer in enumerate(layers):
            first, last = layer["first"], layer["last"]
            start = result.time[first - 1] if first else 0
            totals[i] += [result.time[last - 1] - start,
                          result.macs_issued[first:last].sum(),
                          result.macs_skipped[first:last].sum(),
                          result.dram_bytes[first:last].sum()]
        busy += result.busy
        stall += result.stall
        traffic = result.dram_by_space
    rows = []
    for layer, (cycles, issued, skipped, dram) in zip(layers, totals):
        rows.append({"name": layer["name"], "op": layer["op"],
                     **figures(config, cycles, layer["macs_useful"] * batch, issued, skipped,
                               dram)})
    total = totals.sum(axis=0)
    useful = sum(layer["macs_useful"] for layer in layers) * batch
    outputs = {name: np.stack(v) for name, v in outputs.items()}
    report = {"engine": "isa", "batch": batch, "sparse": sparse,
              "reorder": layout.get("reorder", True),
              "output_shape": list(next(iter(outputs.values())).shape),
              **figures(config, total[0], useful, total[1], total[2], total[3]),
              "groups": [{"busy": int(b), "stall": int(s)} for b, s in zip(busy, stall)],
              "counters": result.counters,
              "roofline": roofline(config, useful // batch, traffic["ACT"],
                                   sum(n for space, n in traffic.items() if space != "ACT")),
              "layers": rows}
    return outputs, report
