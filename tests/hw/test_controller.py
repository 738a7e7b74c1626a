# amaranth: UnusedElaboratable=no
"""The global controller's parts, each on its own in Amaranth's simulator, and the whole
controller on a few programs (tests/hw/test_accelerator.py runs it with the groups).

Random backpressure everywhere a stream or an AXI channel allows it.
"""

import random

import pytest
from amaranth.lib import data

from flexigan.hw.arch import isa
from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.hw.arch.registers import STATUS_BUS_ERROR, STATUS_BUSY, STATUS_DONE, STATUS_ERROR
from flexigan.hw.arch.timing import FETCH_DELAY, ISSUE_CYCLES
from flexigan.hw.controller import Controller
from flexigan.hw.controller.counters import Counters
from flexigan.hw.controller.dma import DmaEngine
from flexigan.hw.controller.fetch import Fetcher
from flexigan.hw.controller.issue import Issue
from tests.hw.amaranth_axi import AxiMemory, Host
from tests.hw.streams import Pauses, get, put, simulate

Op, Space = isa.GlobalOp, isa.Space
INSN = data.Layout.cast(isa.GlobalInsn)


def config(data_width=32):
    return AcceleratorConfig(groups=2, lanes=4, act_banks=4, act_bank_bytes=1024,
                             weight_bytes=512, param_entries=32, uop_depth=32,
                             axi_data_width=data_width, mem_latency=3, burst_bytes=64)


def random_words(n, bits, seed):
    rng = random.Random(seed)
    return [rng.getrandbits(bits) for _ in range(n)]


def image_of(words, nbytes, at=0, size=0x1000):
    """``words`` of ``nbytes`` bytes each from byte ``at`` of a zeroed image."""
    image = bytearray(size)
    for k, word in enumerate(words):
        image[at + k * nbytes:at + (k + 1) * nbytes] = word.to_bytes(nbytes, "little")
    return image


class ReadMemory:
    """A burst reader for a client ``port`` (read_client_signature): the beats of each command
    from ``image``, in order, pausing each cycle with probability ``pause`` (and the beats
    while ``hold``). It takes commands while beats are pending (the controller's reader does
    not), so a client that asks for more than it has room for is caught. ``commands`` lists
    every command taken, ``beats`` the beats still to send."""

    def __init__(self, port, image, nbytes, pause=0.0, seed=0):
        self.port, self.image, self.nbytes = port, image, nbytes
        self.pause, self.rng = pause, random.Random(seed)
        self.hold = False
        self.commands, self.beats = [], []

    async def serve(self, ctx):
        port, n = self.port, self.nbytes
        while True:
            go = self.rng.random() >= self.pause
            ctx.set(port.cmd.ready, go)
            ctx.set(port.beats.valid, go and not self.hold and bool(self.beats))
            if self.beats:
                ctx.set(port.beats.payload, self.beats[0])
            _, _, cmd_valid, cmd_ready, cmd, beat_valid, beat_ready = await ctx.tick().sample(
                port.cmd.valid, port.cmd.ready, port.cmd.payload, port.beats.valid,
                port.beats.ready)
            if beat_valid and beat_ready:
                self.beats.pop(0)
            if cmd_valid and cmd_ready:
                self.commands.append((cmd.addr, cmd.beats))
                self.beats += [{"data": int.from_bytes(self.image[a:a + n], "little"),
                                "mask": (1 << n) - 1, "last": k == cmd.beats - 1}
                               for k, a in enumerate(range(cmd.addr, cmd.addr + n * cmd.beats, n))]


async def pulse_start(ctx, dut, base=None):
    """The controller's start: one cycle of ``start`` (not running), then running."""
    if base is not None:
        ctx.set(dut.base, base)
    ctx.set(dut.start, 1)
    ctx.set(dut.running, 0)
    await ctx.tick()
    ctx.set(dut.start, 0)
    ctx.set(dut.running, 1)


# --- fetch --------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_width", [8, 32, 256, 512])
@pytest.mark.parametrize("seed,p_mem,p_issue,fetch_queue", [(0, 0.0, 0.0, None),
                                                            (1, 0.3, 0.5, None),
                                                            (2, 0.3, 0.5, 2)])
def test_fetcher_yields_the_program_in_order_and_never_overfills(data_width, seed, p_mem,
                                                                  p_issue, fetch_queue):
    cfg = config(data_width).replace(fetch_queue=fetch_queue)
    dut = Fetcher(cfg)
    base, n = 0x240, 23
    program = random_words(n + 2 * cfg.queue_insns, 256, seed)
    memory = ReadMemory(dut.read, image_of(program, isa.GLOBAL_BYTES, at=base), cfg.axi_bytes,
                        p_mem, seed)
    commands = memory.commands
    fetch_bytes = cfg.fetch_insns * isa.GLOBAL_BYTES

    async def issue(ctx):
        await pulse_start(ctx, dut, base)
        pauses = Pauses(p_issue, seed + 1)
        for k in range(n):
            assert (await get(ctx, dut.insn, pauses)).as_bits() == program[k], k
        assert commands == [(base + k * fetch_bytes, fetch_bytes // cfg.axi_bytes)
                            for k in range(len(commands))]

    async def room(ctx):
        # Instructions requested but not issued never exceed what the queue holds.
        requested = taken = 0
        while True:
            _, _, cv, cr, iv, ir = await ctx.tick().sample(dut.read.cmd.valid, dut.read.cmd.ready,
                                                           dut.insn.valid, dut.insn.ready)
            requested += cfg.fetch_insns * (cv and cr)
            taken += iv and ir
            assert requested - taken <= cfg.queue_insns

    simulate(dut, issue, processes=[memory.serve, room])


@pytest.mark.parametrize("data_width", [32, 512])
@pytest.mark.parametrize("fetch_queue", [None, 2])
def test_fetcher_fills_its_queue_then_fetches_as_room_frees(data_width, fetch_queue):
    cfg = config(data_width).replace(fetch_queue=fetch_queue)
    dut = Fetcher(cfg)
    program = random_words(4 * cfg.queue_insns, 256, 3)
    memory = ReadMemory(dut.read, image_of(program, isa.GLOBAL_BYTES), cfg.axi_bytes)
    commands = memory.commands

    async def issue(ctx):
        await pulse_start(ctx, dut, 0)
        await ctx.tick().repeat(100)
        assert len(commands) == cfg.queue_insns // cfg.fetch_insns     # the queue is full
        assert ctx.get(dut.insn.valid)
        for k in range(2 * cfg.fetch_insns):
            assert (await get(ctx, dut.insn)).as_bits() == program[k]
            await ctx.tick().repeat(50)
            # A fetch goes out as soon as a whole fetch fits.
            fetched = (k + 1) // cfg.fetch_insns
            assert len(commands) == cfg.queue_insns // cfg.fetch_insns + fetched, k
        assert ctx.get(dut.pc) == len(commands) * cfg.fetch_insns * isa.GLOBAL_BYTES

    simulate(dut, issue, processes=[memory.serve])


def test_fetcher_queues_an_instruction_fetch_delay_after_its_last_beat():
    cfg = config(32)
    dut = Fetcher(cfg)
    per_insn = isa.GLOBAL_BYTES // cfg.axi_bytes
    memory = ReadMemory(dut.read, image_of(random_words(8, 256, 4), isa.GLOBAL_BYTES),
                        cfg.axi_bytes)
    seen = {}

    async def issue(ctx):
        await pulse_start(ctx, dut, 0)
        beats = cycle = 0
        while "insn" not in seen:
            _, _, bv, br, iv = await ctx.tick().sample(dut.read.beats.valid,
                                                       dut.read.beats.ready, dut.insn.valid)
            beats += bv and br
            if beats == per_insn and "beat" not in seen:
                seen["beat"] = cycle
            if iv:
                seen["insn"] = cycle
            cycle += 1
        assert seen["insn"] - seen["beat"] == FETCH_DELAY

    simulate(dut, issue, processes=[memory.serve])


def test_fetcher_start_drops_the_queue_and_beats_after_the_program():
    cfg = config(32)
    dut = Fetcher(cfg)
    first, second = random_words(8, 256, 5), random_words(8, 256, 6)
    image = image_of(first, isa.GLOBAL_BYTES)
    image[0x400:0x500] = image_of(second, isa.GLOBAL_BYTES)[:0x100]
    memory = ReadMemory(dut.read, image, cfg.axi_bytes)
    per_fetch = cfg.fetch_insns * isa.GLOBAL_BYTES // cfg.axi_bytes

    async def issue(ctx):
        await pulse_start(ctx, dut, 0)
        await ctx.tick().repeat(100)                # the queue holds first[0:4]
        for k in range(2):
            assert (await get(ctx, dut.insn)).as_bits() == first[k]
            memory.hold = True
        await ctx.tick().repeat(10)
        assert len(memory.commands) == 3 and len(memory.beats) == per_fetch   # first[4:6]
        ctx.set(dut.running, 0)                     # the program ends
        await ctx.tick()
        memory.hold = False
        await ctx.tick().repeat(per_fetch + 1)      # its beats are dropped at once
        assert not memory.beats and len(memory.commands) == 3
        assert (await get(ctx, dut.insn)).as_bits() == first[2]     # still queued
        await pulse_start(ctx, dut, 0x400)
        assert not ctx.get(dut.insn.valid)
        for k in range(4):
            assert (await get(ctx, dut.insn)).as_bits() == second[k]

    simulate(dut, issue, processes=[memory.serve])


# --- DMA --------------------------------------------------------------------------------------


class DmaBench:
    """External memory on ``axi``, ACT on ``act_rd``/``act_wr`` (answers one cycle after a
    request), and a record of every chunk on the ``local`` ports."""

    def __init__(self, dut, cfg, pause=0.0, seed=0):
        self.dut, self.nbytes = dut, cfg.axi_bytes
        rng = random.Random(seed)
        self.mem = bytearray(rng.randbytes(0x2000))
        self.act = bytearray(rng.randbytes(cfg.act_bytes))
        self.axi = AxiMemory(dut.axi, self.mem, cfg.axi_bytes, cfg.mem_latency, pause, seed)
        self.local = {}                    # (group, space) -> {byte address: value}
        self.pauses = Pauses(pause, seed + 1)

    def processes(self):
        return [self.axi.reads, self.axi.writes, self.act_port, self.chunks]

    async def act_port(self, ctx):
        rd, wr = self.dut.act_rd, self.dut.act_wr
        answer = None
        while True:
            stall = self.pauses.p and self.pauses.rng.random() < self.pauses.p
            ctx.set(rd.req.ready, not stall)
            ctx.set(wr.req.ready, not stall)
            ctx.set(rd.resp.valid, answer is not None)
            if answer is not None:
                n = self.nbytes
                ctx.set(rd.resp.payload.data,
                        int.from_bytes(self.act[answer * n:(answer + 1) * n], "little"))
            (_, _, r_valid, r_ready, r_addr, w_valid, w_ready, w) = await ctx.tick().sample(
                rd.req.valid, rd.req.ready, rd.req.payload.addr, wr.req.valid, wr.req.ready,
                wr.req.payload)
            answer = r_addr if r_valid and r_ready else None
            if w_valid and w_ready:
                self._write(self.act, w.addr * self.nbytes, w.data, w.mask)

    def _write(self, memory, at, data, mask):
        for b in range(self.nbytes):
            if mask >> b & 1:
                memory[at + b] = data >> 8 * b & 0xFF

    async def chunks(self, ctx):
        ports = self.dut.local
        while True:
            sampled = (await ctx.tick().sample(*(p.valid for p in ports),
                                               *(p.payload for p in ports)))[2:]
            for g in range(len(ports)):
                if sampled[g]:
                    p = sampled[len(ports) + g]
                    written = self.local.setdefault((g, Space(p.space)), {})
                    for b in range(self.nbytes):
                        if p.chunk.mask >> b & 1:
                            written[p.chunk.addr + b] = p.chunk.data >> 8 * b & 0xFF

    async def run(self, ctx, commands):
        """Give ``commands`` (``(op, dma operands)``) to the engine and wait until done."""
        for op, args in commands:
            await put(ctx, self.dut.cmd, {"op": op, "dma": args})
        await ctx.tick().until(self.dut.finished == len(commands))
        await ctx.tick().repeat(3)


#: Backpressure, and the DMA engine's realigners: its own for loads and for stores, or one.
PAUSES_REALIGNERS = [(0.0, 2), (0.3, 2), (0.3, 1)]


@pytest.mark.parametrize("data_width", [8, 32, 64])
@pytest.mark.parametrize("pause,realigners", PAUSES_REALIGNERS)
def test_dma_loads_into_each_space_in_its_units(data_width, pause, realigners):
    cfg = config(data_width).replace(dma_realigners=realigners)
    dut = DmaEngine(cfg)
    bench = DmaBench(dut, cfg, pause, seed=data_width)
    loads = [   # op, space, group mask, local address (units), ext address, bytes
        (Op.DMA_LOAD, Space.WGT, 0b01, 5, 0x101, 37),
        (Op.DMA_LOAD, Space.PARAM, 0b10, 3, 0x203, 2 * isa.PARAM_BYTES),
        (Op.DMA_LOAD, Space.LUT, 0b11, 1, 0x300, isa.LUT_BYTES),
        (Op.UOP_LOAD, Space.UOP, 0b01, 2, 0x502, 3 * isa.UOP_BYTES),
        (Op.DMA_LOAD, Space.UOP, 0b10, 4, 0x402, 2 * isa.UOP_BYTES),
        (Op.DMA_LOAD, Space.WGT, 0b10, 0, 0x600, 0),
    ]
    act_load = (0x700 + 3, 7, 45)          # ext address, local byte, bytes
    before = bytes(bench.act)

    async def testbench(ctx):
        await bench.run(ctx, [
            *((op, {"space": space, "group_mask": mask, "local_addr": local, "ext_addr": ext,
                    "length": n}) for op, space, mask, local, ext, n in loads),
            (Op.DMA_LOAD, {"space": Space.ACT, "ext_addr": act_load[0],
                           "local_addr": act_load[1], "length": act_load[2]}),
        ])

    simulate(dut, testbench, processes=bench.processes())
    expect = {}
    for _, space, mask, local, ext, n in loads:
        at = local * isa.unit_bytes(space)
        for g in range(cfg.groups):
            if mask >> g & 1 and n:
                expect[g, space] = {at + k: bench.mem[ext + k] for k in range(n)}
    assert bench.local == expect
    ext, local, n = act_load
    assert bench.act[local:local + n] == bench.mem[ext:ext + n]
    assert bench.act[:local] == before[:local]
    assert bench.act[local + n:] == before[local + n:]


@pytest.mark.parametrize("dma_queue", [1, 2, 8])
def test_dma_queue_takes_its_depth_ahead_of_the_running_dma(dma_queue):
    cfg = config(32).replace(dma_queue=dma_queue)
    dut = DmaEngine(cfg)
    bench = DmaBench(dut, cfg)
    args = {"space": Space.WGT, "group_mask": 0b01, "local_addr": 0, "ext_addr": 0x400,
            "length": 8}

    async def testbench(ctx):
        ctx.set(dut.conflict, 0b01)                 # the first DMA waits
        ctx.set(dut.cmd.payload, {"op": Op.DMA_LOAD, "dma": args})
        ctx.set(dut.cmd.valid, 1)
        taken = 0
        for _ in range(30):
            _, _, ready = await ctx.tick().sample(dut.cmd.ready)
            taken += ready
        assert taken == dma_queue + 1               # the queue and the one running
        ctx.set(dut.cmd.valid, 0)
        ctx.set(dut.conflict, 0)
        await ctx.tick().until(dut.finished == taken)

    simulate(dut, testbench, processes=bench.processes())


@pytest.mark.parametrize("op,space,local,n,hi", [
    (Op.DMA_LOAD, Space.WGT, 40, 100, 140),
    (Op.DMA_LOAD, Space.PARAM, 3, 4 * isa.PARAM_BYTES, 7),
    (Op.DMA_LOAD, Space.LUT, 2, 2 * isa.LUT_BYTES, 4),
    (Op.UOP_LOAD, Space.WGT, 6, 5 * isa.UOP_BYTES, 11),    # UOP_LOAD's space is UOP
    (Op.DMA_LOAD, Space.UOP, 6, 5 * isa.UOP_BYTES, 11),
    (Op.DMA_LOAD, Space.ACT, 17, 9, 26),
    (Op.DMA_STORE, Space.ACT, 30, 12, 42),
])
def test_dma_waits_while_its_range_conflicts(op, space, local, n, hi):
    cfg = config(32)
    dut = DmaEngine(cfg)
    bench = DmaBench(dut, cfg)
    target = Space.UOP if op == Op.UOP_LOAD else space
    args = {"space": space, "group_mask": 0b10, "local_addr": local, "ext_addr": 0x400,
            "length": n}

    async def testbench(ctx):
        ctx.set(dut.conflict, 0b10)
        await put(ctx, dut.cmd, {"op": op, "dma": args})
        for _ in range(40):
            _, _, arvalid, awvalid, act_rd = await ctx.tick().sample(
                dut.axi.read.arvalid, dut.axi.write.awvalid, dut.act_rd.req.valid)
            assert not (arvalid or awvalid or act_rd)
        hazard = ctx.get(dut.hazard)
        assert (Space(hazard.space), hazard.lo, hazard.hi, hazard.groups) == \
            (target, local, hi, 0b10)
        assert ctx.get(dut.finished) == 0
        ctx.set(dut.conflict, 0)
        await ctx.tick().until(dut.finished == 1)

    simulate(dut, testbench, processes=bench.processes())


@pytest.mark.parametrize("data_width", [8, 32, 64])
@pytest.mark.parametrize("pause,realigners", PAUSES_REALIGNERS)
def test_dma_stores_act_and_the_counter_block(data_width, pause, realigners):
    """Stores, the counter block, and (with one realigner) a load between them."""
    cfg = config(data_width).replace(dma_realigners=realigners)
    dut = DmaEngine(cfg)
    bench = DmaBench(dut, cfg, pause, seed=data_width + 1)
    stores = [(0x803, 5, 21), (0x900, 64, 0), (0xA01, 0, 3 * cfg.axi_bytes + 2)]
    block_at = 0xC05
    block = bytes(random.Random(data_width).randbytes(8 * len(isa.COUNTER_NAMES)))
    before = bytes(bench.mem)

    async def counters(ctx):
        """The counters' block, a word per ``ready`` (and words past it)."""
        n = cfg.axi_bytes
        for at in range(0, 2 * len(block), n):
            ctx.set(dut.counters.payload, int.from_bytes(block[at:at + n], "little"))
            while not (await ctx.tick().sample(dut.counters.ready))[2]:
                pass

    load = (0x1003, 0x1F0, 9)              # ext address, local byte, bytes: after the stores

    async def testbench(ctx):
        await bench.run(ctx, [
            *((Op.DMA_STORE, {"space": Space.ACT, "ext_addr": ext, "local_addr": local,
                              "length": n}) for ext, local, n in stores[:2]),
            (Op.DMA_LOAD, {"space": Space.ACT, "ext_addr": load[0], "local_addr": load[1],
                           "length": load[2]}),
            (Op.DMA_STORE, {"space": Space.ACT, "ext_addr": stores[2][0],
                            "local_addr": stores[2][1], "length": stores[2][2]}),
            (Op.COUNTERS, {"ext_addr": block_at}),
        ])

    simulate(dut, testbench, processes=[*bench.processes(), counters])
    expect = bytearray(before)
    for ext, local, n in stores:
        expect[ext:ext + n] = bench.act[local:local + n]
    expect[block_at:block_at + len(block)] = block
    assert bench.mem == expect
    assert bench.act[load[1]:load[1] + load[2]] == bench.mem[load[0]:load[0] + load[2]]


def test_dma_lends_the_reader_to_fetches_between_loads():
    cfg = config(32)
    dut = DmaEngine(cfg)
    bench = DmaBench(dut, cfg, 0.2, seed=7)
    fetched, loads_done = [], []

    async def fetcher(ctx):
        # Fetches offered all the time: they must only ever get their own beats.
        pauses = Pauses(0.3, 8)
        addr = 0
        while not loads_done:
            await put(ctx, dut.fetch.cmd, {"addr": addr, "beats": 16}, pauses)
            for k in range(16):
                beat = await get(ctx, dut.fetch.beats, pauses)
                fetched.append((addr + 4 * k, beat.data))
            addr = (addr + 64) % 0x400

    async def testbench(ctx):
        await bench.run(ctx, [
            (Op.DMA_LOAD, {"space": Space.WGT, "group_mask": 0b01, "local_addr": 64 * k,
                           "ext_addr": 0x1000 + 64 * k + k, "length": 60}) for k in range(6)])
        loads_done.append(True)

    simulate(dut, testbench, fetcher, processes=bench.processes())
    assert len(fetched) >= 64
    assert all(data == int.from_bytes(bench.mem[a:a + 4], "little") for a, data in fetched)
    assert bench.local[0, Space.WGT] == {64 * k + j: bench.mem[0x1000 + 64 * k + k + j]
                                         for k in range(6) for j in range(60)}


# --- counters -------------------------------------------------------------------------------


async def stored_block(ctx, dut):
    """The block :class:`Counters` shows after a store, its words taken one per cycle."""
    width = len(dut.block.payload)
    words = 8 * len(isa.COUNTER_NAMES) * 8 // width
    value = 0
    ctx.set(dut.block.ready, 1)
    for k in range(words):
        value |= ctx.get(dut.block.payload) << width * k
        await ctx.tick()
    ctx.set(dut.block.ready, 0)
    return value


def test_counters_count_clear_and_store():
    dut = Counters(config())
    ev = dut.events

    async def step(ctx, **events):
        for name, value in events.items():
            if name == "dma_bytes":
                ctx.set(ev.dma_bytes.valid, 1)
                ctx.set(ev.dma_bytes.payload, value)
            else:
                ctx.set(getattr(ev, name), value)
        await ctx.tick()
        for name in ("instruction", "run", "reset", "store"):
            ctx.set(getattr(ev, name), 0)
        ctx.set(ev.dma_bytes.valid, 0)

    def values(ctx):
        v = ctx.get(dut.values)
        return {name: v[name] for name in isa.COUNTER_NAMES}

    async def testbench(ctx):
        ctx.set(dut.start, 1)
        assert ctx.get(dut.clear)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.running, 1)
        ctx.set(dut.group_busy, 0b11)
        await ctx.tick().repeat(5)
        ctx.set(dut.group_busy, 0b01)
        ctx.set(dut.macs_issued[0], 7)
        ctx.set(dut.macs_issued[1], 5)
        ctx.set(dut.macs_skipped[1], 2)
        ctx.set(dut.stalls[0], 3)
        await step(ctx, instruction=1, dma_bytes=100)
        await step(ctx, instruction=1, run=1)
        await step(ctx, instruction=1, run=1, dma_bytes=28)
        ctx.set(dut.running, 0)
        got = values(ctx)
        assert got == {"cycles": 8, "macs_issued": 12, "macs_skipped": 2, "dma_bytes": 128,
                       "busy_cycles": 13, "stall_cycles": 3, "runs": 2, "instructions": 3}
        await step(ctx, instruction=1, store=1)       # COUNTERS STORE counts itself
        got["instructions"], got["busy_cycles"] = 4, 14
        assert values(ctx) == got
        await step(ctx, instruction=1, run=1)
        assert await stored_block(ctx, dut) == sum(
            ({**got, "busy_cycles": 13})[name] << 64 * k
            for k, name in enumerate(isa.COUNTER_NAMES))
        ctx.set(ev.reset, 1)
        assert ctx.get(dut.clear)                     # the groups' counters clear too
        await step(ctx, instruction=1, reset=1)
        assert values(ctx) == {**got, "busy_cycles": 0, "dma_bytes": 0, "runs": 0,
                               "instructions": 6}
        await pulse_start(ctx, dut)
        await ctx.tick()
        assert values(ctx) == {**got, "cycles": 1, "busy_cycles": 1, "dma_bytes": 0, "runs": 0,
                               "instructions": 0}

    simulate(dut, testbench)


@pytest.mark.parametrize("data_width", [8, 32, 64])
def test_fewer_narrower_counters_count_modulo_their_width_and_store_zeros(data_width):
    """32-bit counters, two of them kept: the others, and the bits above 32, read zero (and
    the block's zero words, which take no flip-flops, come out as zeros)."""
    dut = Counters(config(data_width).replace(counter_bits=32,
                                              counters=("macs_issued", "instructions")))

    async def testbench(ctx):
        await pulse_start(ctx, dut)
        ctx.set(dut.macs_issued[0], (1 << 32) + 7)       # the groups' bits above 32 are unused
        ctx.set(dut.macs_issued[1], (1 << 32) - 1)
        ctx.set(dut.macs_skipped[0], 5)
        ctx.set(dut.events.instruction, 1)
        await ctx.tick().repeat(3)
        ctx.set(dut.events.store, 1)
        await ctx.tick()
        ctx.set(dut.events.store, 0)
        ctx.set(dut.events.instruction, 0)
        values = ctx.get(dut.values)
        assert {name: values[name] for name in isa.COUNTER_NAMES} == {
            **dict.fromkeys(isa.COUNTER_NAMES, 0), "macs_issued": 6, "instructions": 4}
        assert await stored_block(ctx, dut) == 6 << 64 | 4 << 64 * 7

    simulate(dut, testbench)


# --- issue ----------------------------------------------------------------------------------


def insn(op, **operands):
    return isa.encode_global(op, **operands)


class IssueBench:
    """Drives an Issue's inputs; records what leaves it, cycle by cycle."""

    def __init__(self, dut):
        self.dut = dut
        self.dmas, self.runs, self.routes = [], [[] for _ in dut.run], []
        self.events = []

    async def record(self, ctx):
        dut, ev = self.dut, self.dut.events
        names = ("instruction", "run", "reset", "store")
        while True:
            sampled = (await ctx.tick().sample(
                dut.dma.valid, dut.dma.ready, dut.dma.payload, dut.route.valid,
                dut.route.payload, ev.dma_bytes.valid, ev.dma_bytes.payload,
                *(getattr(ev, name) for name in names),
                *(x for r in dut.run for x in (r.valid, r.ready, r.payload))))[2:]
            dv, dr, dp, rv, rp, bytes_valid, n = sampled[:7]
            if dv and dr:
                self.dmas.append((dp.op, dp.dma.as_bits()))
            if rv:
                self.routes.append(rp.as_bits())
            events = dict(zip(names, sampled[7:11]))
            events["dma_bytes"] = n if bytes_valid else 0
            self.events.append(events)
            for g, runs in enumerate(self.runs):
                valid, ready, payload = sampled[11 + 3 * g:14 + 3 * g]
                if valid and ready:
                    runs.append((payload.tag, payload.run.as_bits()))



def test_issue_numbers_dmas_and_tags_each_run_with_its_groups_last_dma():
    dut = Issue(config())
    bench = IssueBench(dut)
    dma = {"ext_addr": 0x40, "local_addr": 1, "length": 10}
    program = [
        insn(Op.DMA_LOAD, space=Space.WGT, group_mask=0b01, **dma),     # 1: group 0
        insn(Op.DMA_LOAD, space=Space.ACT, group_mask=0, **dma),        # 2: every group
        insn(Op.DMA_LOAD, space=Space.PARAM, group_mask=0b10, **dma),   # 3: group 1
        insn(Op.RUN, group_mask=0b11, uop_addr=1, rows=2),
        insn(Op.UOP_LOAD, space=Space.UOP, group_mask=0b01, **dma),     # 4: group 0
        insn(Op.RUN, group_mask=0b01, uop_addr=2),
        insn(Op.DMA_STORE, space=Space.ACT, **dma),                     # 5: every group
        insn(Op.RUN, group_mask=0b10, uop_addr=3),
        insn(Op.NOP),
    ]

    async def testbench(ctx):
        await pulse_start(ctx, dut)
        ctx.set(dut.dma.ready, 1)
        for g in range(2):
            ctx.set(dut.run[g].ready, 1)
        for word in program:
            await put(ctx, dut.insn, INSN.from_bits(word))
        await ctx.tick().repeat(3)

    simulate(dut, testbench, processes=[bench.record])
    dmas = [isa.decode_global(w) for w in program if isa.decode_global(w)[0] in
            (Op.DMA_LOAD, Op.UOP_LOAD, Op.DMA_STORE)]
    assert bench.dmas == [(op, isa.DmaArgs.const(args).as_bits()) for op, args in dmas]
    run = {k: isa.RunArgs.const(isa.decode_global(program[k])[1]).as_bits()
           for k in (3, 5, 7)}
    assert bench.runs == [[(2, run[3]), (4, run[5])], [(3, run[3]), (5, run[7])]]
    assert sum(e["instruction"] for e in bench.events) == len(program)
    assert sum(e["run"] for e in bench.events) == 3
    assert sum(e["dma_bytes"] for e in bench.events) == 50


def test_issue_waits_for_the_units_of_each_instruction():
    dut = Issue(config())
    bench = IssueBench(dut)

    async def offer(ctx, word, cycles=20):
        """Offers ``word``: True when it issued within ``cycles``."""
        ctx.set(dut.insn.valid, 1)
        ctx.set(dut.insn.payload, INSN.from_bits(word))
        for _ in range(cycles):
            _, _, ready = await ctx.tick().sample(dut.insn.ready)
            if ready:
                ctx.set(dut.insn.valid, 0)
                return True
        return False

    async def testbench(ctx):
        await pulse_start(ctx, dut)
        ctx.set(dut.dma.ready, 1)
        ctx.set(dut.run[0].ready, 1)
        # A RUN goes to all the groups of its mask at once.
        assert not await offer(ctx, insn(Op.RUN, group_mask=0b11))
        assert not bench.runs[0]
        ctx.set(dut.run[1].ready, 1)
        assert await offer(ctx, insn(Op.RUN, group_mask=0b11))
        # ROUTE waits for the groups of its mask to have their RUNs.
        ctx.set(dut.waiting, 0b10)
        assert not await offer(ctx, insn(Op.ROUTE, group_mask=0b10, bank_count=2))
        assert await offer(ctx, insn(Op.ROUTE, group_mask=0b01, bank_count=2))
        ctx.set(dut.waiting, 0)
        # BARRIER waits for the DMA engine and the groups of its mask.
        assert await offer(ctx, insn(Op.DMA_LOAD, space=Space.WGT, group_mask=1, length=4))
        ctx.set(dut.busy, 0b10)
        assert not await offer(ctx, insn(Op.BARRIER, group_mask=0b01))
        ctx.set(dut.dma_finished, 1)
        assert await offer(ctx, insn(Op.BARRIER, group_mask=0b01))
        assert not await offer(ctx, insn(Op.BARRIER, group_mask=0b11))
        # COUNTERS and END wait for every group.
        assert not await offer(ctx, insn(Op.COUNTERS, action=isa.CounterAction.RESET))
        ctx.set(dut.busy, 0)
        assert await offer(ctx, insn(Op.COUNTERS, action=isa.CounterAction.RESET))
        assert not ctx.get(dut.end)
        ctx.set(dut.insn.valid, 1)
        ctx.set(dut.insn.payload, INSN.from_bits(insn(Op.END)))
        assert ctx.get(dut.end) and not ctx.get(dut.error)
        # An undefined opcode does not issue: it is an error.
        ctx.set(dut.insn.payload, INSN.from_bits(13))
        assert ctx.get(dut.error) and not ctx.get(dut.insn.ready)

    simulate(dut, testbench, processes=[bench.record])
    assert len(bench.routes) == 1
    assert sum(e["reset"] for e in bench.events) == 1


def test_issue_takes_one_instruction_per_cycle():
    dut = Issue(config())
    n = 12

    async def testbench(ctx):
        await pulse_start(ctx, dut)
        ctx.set(dut.insn.valid, 1)
        ctx.set(dut.insn.payload, INSN.from_bits(insn(Op.NOP)))
        issued = 0
        for _ in range(n * ISSUE_CYCLES):
            _, _, ready = await ctx.tick().sample(dut.insn.ready)
            issued += ready
        assert issued == n

    simulate(dut, testbench)


# --- the whole controller -------------------------------------------------------------------


def run_controller(cfg, programs, pause=0.0, faults=None, bases=None):
    """Runs each of ``programs`` (global instruction words at address 0, or at its entry of
    ``bases``) after the one before on a Controller with idle groups; the memory and, per
    program, the registers after END (``faults``: see AxiMemory)."""
    dut = Controller(cfg)
    mem = bytearray(0x2000)
    mem[0x1000:0x1400] = random.Random(9).randbytes(0x400)
    memory = AxiMemory(dut.axi, mem, cfg.axi_bytes, cfg.mem_latency, pause, seed=2,
                       faults=faults)
    host = Host(dut.axil)
    chunks, results = [], []

    async def groups(ctx):
        while True:
            _, _, *local = await ctx.tick().sample(*(x for p in dut.dma for x in (p.valid,
                                                                                  p.payload)))
            for g in range(cfg.groups):
                if local[2 * g]:
                    chunks.append((g, local[2 * g + 1].as_bits()))

    async def testbench(ctx):
        for program, base in zip(programs, bases or [0] * len(programs)):
            mem[:0x1000] = image_of(program, isa.GLOBAL_BYTES)
            mem[base:base + len(program) * isa.GLOBAL_BYTES] = \
                image_of(program, isa.GLOBAL_BYTES, size=len(program) * isa.GLOBAL_BYTES)
            await host.write(ctx, "base", base)
            await host.write(ctx, "start", 1)
            await ctx.tick().until(~dut.done)
            await ctx.tick().until(dut.done)
            results.append({name: await host.read(ctx, name, 2 if name in isa.COUNTER_NAMES
                                                  else 1)
                            for name in ("status", "pc", *isa.COUNTER_NAMES)})

    simulate(dut, testbench, processes=[memory.reads, memory.writes, groups])
    return mem, results, chunks


@pytest.mark.parametrize("data_width", [32, 512])
def test_controller_runs_dma_counters_and_end(data_width):
    cfg = config(data_width)
    program = [
        insn(Op.DMA_LOAD, space=Space.WGT, group_mask=0b10, ext_addr=0x1003, local_addr=8,
             length=40),
        insn(Op.NOP),
        insn(Op.COUNTERS, action=isa.CounterAction.STORE, ext_addr=0x1800),
        insn(Op.END),
    ]
    mem, (result,), chunks = run_controller(cfg, [program], pause=0.2)
    assert result["status"] == STATUS_DONE
    assert result["instructions"] == 4 and result["dma_bytes"] == 40
    assert result["pc"] % (cfg.fetch_insns * isa.GLOBAL_BYTES) == 0 and result["pc"] >= 128
    block = [int.from_bytes(mem[0x1800 + 8 * k:0x1808 + 8 * k], "little")
             for k in range(len(isa.COUNTER_NAMES))]
    stored = dict(zip(isa.COUNTER_NAMES, block))
    assert stored["instructions"] == 3 and stored["dma_bytes"] == 40
    assert 0 < stored["cycles"] < result["cycles"]
    assert chunks and {g for g, _ in chunks} == {1}


def test_controller_stops_on_an_undefined_opcode_and_starts_again():
    cfg = config(32)
    bad = [insn(Op.NOP), 11, insn(Op.END)]
    good = [insn(Op.NOP), insn(Op.NOP), insn(Op.END)]
    _, (stopped, ended), _ = run_controller(cfg, [bad, good])
    assert stopped["status"] == STATUS_DONE | STATUS_ERROR and stopped["instructions"] == 1
    assert ended["status"] == STATUS_DONE and ended["instructions"] == 3
    assert not (stopped["status"] | ended["status"]) & STATUS_BUSY


#: Bytes that answer SLVERR or DECERR in the bus error tests.
FAULTY = (0x1100, 0x1140)


@pytest.mark.parametrize(("faulty", "resp"), [("load", 2), ("store", 3), ("fetch", 2)])
def test_controller_stops_on_a_bus_error_and_starts_again(faulty, resp):
    cfg = config(32)
    # A load into group 1, a COUNTERS STORE, a load into group 0 that never runs.
    bad = [insn(Op.DMA_LOAD, space=Space.WGT, group_mask=0b10, local_addr=0, length=96,
                ext_addr=0x10F0 if faulty == "load" else 0x1000),
           insn(Op.COUNTERS, action=isa.CounterAction.STORE,
                ext_addr=0x1120 if faulty == "store" else 0x1900),
           insn(Op.DMA_LOAD, space=Space.WGT, group_mask=0b01, ext_addr=0x1000, local_addr=0,
                length=64),
           insn(Op.END)]
    # A fetch fault: the program runs from the faulty range.
    base = FAULTY[0] if faulty == "fetch" else 0
    good = [insn(Op.NOP), insn(Op.NOP), insn(Op.END)]
    mem, (stopped, ended), chunks = run_controller(cfg, [bad, good], pause=0.3,
                                                   faults=(*FAULTY, resp), bases=[base, 0])
    assert stopped["status"] == STATUS_DONE | STATUS_ERROR | STATUS_BUS_ERROR
    assert stopped["instructions"] <= {"load": 1, "store": 3, "fetch": 0}[faulty]
    assert 0 not in {g for g, _ in chunks}       # the last load never ran
    if faulty != "store":
        assert not mem[0x1900:0x1900 + 8 * len(isa.COUNTER_NAMES)].strip(b"\0")
    assert ended["status"] == STATUS_DONE and ended["instructions"] == 3
