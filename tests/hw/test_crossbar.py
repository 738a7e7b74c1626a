# amaranth: UnusedElaboratable=no
import random

import pytest

from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.hw.crossbar import Crossbar
from tests.hw.streams import Pauses, put, simulate

CONFIG = AcceleratorConfig(groups=3, act_banks=4, act_bank_bytes=64, axi_data_width=32)
WORDS = CONFIG.act_bytes // CONFIG.axi_bytes          # 64 words of 4 bytes
BANK_WORDS = CONFIG.act_bank_bytes // CONFIG.axi_bytes


class Responses:
    """Collects what one read port answers, cycle by cycle."""

    def __init__(self, port):
        self.port = port
        self.got = []

    async def run(self, ctx):
        while True:
            _, _, valid, payload = await ctx.tick().sample(self.port.resp.valid,
                                                           self.port.resp.payload)
            if valid:
                self.got.append((payload.tag, payload.data))


async def write_words(ctx, port, writes, pauses):
    for addr, word, mask in writes:
        await put(ctx, port.req, {"addr": addr, "data": word, "mask": mask}, pauses)


async def read_words(ctx, port, addrs, pauses):
    for n, addr in enumerate(addrs):
        await put(ctx, port.req, {"addr": addr, "tag": n}, pauses)


def merge(old, word, mask):
    for b in range(4):
        if mask >> b & 1:
            old = old & ~(0xFF << 8 * b) | word & (0xFF << 8 * b)
    return old


@pytest.mark.parametrize("seed", range(3))
def test_crossbar_writes_then_reads_from_every_port(seed):
    rng = random.Random(seed)
    dut = Crossbar(CONFIG, tag_shape=8)
    writers = [*dut.wr, dut.dma_wr]
    readers = [*dut.rd, dut.dma_rd]
    # Each writer owns the words congruent to its index, so the final contents do not depend
    # on the arbitration order.
    model = [0] * WORDS
    plans = []
    for i in range(len(writers)):
        plan = []
        for _ in range(60):
            addr = rng.randrange(i, WORDS, len(writers))
            word, mask = rng.getrandbits(32), rng.choice([0xF, 0xF, 0x1, 0x6, 0x8, 0x0])
            model[addr] = merge(model[addr], word, mask)
            plan.append((addr, word, mask))
        plans.append(plan)
    reads = [[rng.randrange(WORDS) for _ in range(80)] for _ in readers]
    collectors = [Responses(p) for p in readers]
    done, asked = [], []

    def writer(i):
        async def tb(ctx):
            await write_words(ctx, writers[i], plans[i], Pauses(0.3, seed * 10 + i))
            done.append(i)
        return tb

    def reader(i):
        async def tb(ctx):
            while len(done) < len(writers):
                await ctx.tick()
            await read_words(ctx, readers[i], reads[i], Pauses(0.2 * i, seed * 10 + i))
            # The DMA port goes first: a group's last read may wait until the DMA's are done.
            asked.append(i)
            while len(asked) < len(readers):
                await ctx.tick()
            await ctx.tick().repeat(5)          # queue, grant, bank, its output register, answer
            assert collectors[i].got == [(n, model[a]) for n, a in enumerate(reads[i])]
        return tb

    simulate(dut, *(writer(i) for i in range(len(writers))),
             *(reader(i) for i in range(len(readers))),
             processes=[c.run for c in collectors])


def test_crossbar_broadcast_costs_one_access():
    """Groups reading the same words in the same cycles never stall."""
    dut = Crossbar(CONFIG, tag_shape=8)
    addrs = [5, 5, 17, 33, 49, 2, 18] * 4
    collectors = [Responses(p) for p in dut.rd]

    def reader(g):
        async def tb(ctx):
            await read_words(ctx, dut.rd[g], addrs, None)
        return tb

    async def check(ctx):
        await ctx.tick().repeat(len(addrs) + 5)    # a read per cycle, answered 5 later
        for g in range(CONFIG.groups):
            assert [t for t, _ in collectors[g].got] == list(range(len(addrs)))
            assert ctx.get(dut.stalls[g]) == 0

    simulate(dut, *(reader(g) for g in range(CONFIG.groups)), check,
             processes=[c.run for c in collectors])


def test_crossbar_conflicts_share_a_bank_round_robin():
    """Groups reading different words of one bank take turns; waiting cycles are stalls."""
    dut = Crossbar(CONFIG, tag_shape=8)
    n = 12
    # Words 0..15 are bank 0: each group reads its own words of bank 0.
    addrs = [[(g + 3 * k) % BANK_WORDS for k in range(n)] for g in range(CONFIG.groups)]
    collectors = [Responses(p) for p in dut.rd]

    def reader(g):
        async def tb(ctx):
            await read_words(ctx, dut.rd[g], addrs[g], None)
        return tb

    async def check(ctx):
        groups = CONFIG.groups
        await ctx.tick().repeat(groups * n + 6)
        # One word per cycle, granted in turn 0, 1, 2, 0, ...: port g's last read is granted
        # in cycle groups*(n-1) + g, after waiting (groups-1) cycles per read but its first.
        stalls = [ctx.get(dut.stalls[g]) for g in range(groups)]
        assert stalls == [(groups - 1) * (n - 1) + g for g in range(groups)]
        for g in range(groups):
            assert [t for t, _ in collectors[g].got] == list(range(n))

    simulate(dut, *(reader(g) for g in range(CONFIG.groups)), check,
             processes=[c.run for c in collectors])


def test_crossbar_route_fault():
    dut = Crossbar(CONFIG, tag_shape=8)

    async def tb(ctx):
        ctx.set(dut.route.valid, 1)
        ctx.set(dut.route.payload, {"group_mask": 0b010, "bank_first": 2, "bank_count": 1})
        await ctx.tick()
        ctx.set(dut.route.valid, 0)
        await put(ctx, dut.rd[1].req, {"addr": 2 * BANK_WORDS + 3, "tag": 0})  # bank 2: routed
        await put(ctx, dut.rd[0].req, {"addr": 3, "tag": 0})                   # all banks: ok
        await ctx.tick()
        assert ctx.get(dut.route_fault) == 0
        await put(ctx, dut.rd[1].req, {"addr": 1, "tag": 0})                   # bank 0: fault
        await ctx.tick()
        assert ctx.get(dut.route_fault) == 0b010
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert ctx.get(dut.route_fault) == 0b010       # clear is registered: a cycle later
        await ctx.tick()
        assert ctx.get(dut.route_fault) == 0

    simulate(dut, tb)


def test_crossbar_config_errors():
    with pytest.raises(ValueError, match="act_banks to be a power of two, not 3"):
        Crossbar(CONFIG.replace(act_banks=3), 1)
    with pytest.raises(ValueError, match=r"axi_bytes \(64\) to divide act_bank_bytes, not 32"):
        Crossbar(CONFIG.replace(act_bank_bytes=32, axi_data_width=512), 1)
