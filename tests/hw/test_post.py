# amaranth: UnusedElaboratable=no
import random

import pytest

from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.hw.post import Post
from tests.helpers import requant_oracle
from tests.hw.streams import Pauses, get, put, simulate

CONFIG = AcceleratorConfig()


def requant(acc, bias, multiplier, shift):
    """docs/isa.md's POST formula, in Python integers."""
    return requant_oracle(acc + bias, multiplier, shift)


def random_job(rng, tables):
    return {
        "acc": rng.choice([-(1 << 31), (1 << 31) - 1, 0, rng.randint(-5000, 5000),
                           rng.randint(-(1 << 31), (1 << 31) - 1)]),
        "bias": rng.choice([0, rng.randint(-(1 << 20), 1 << 20)]),
        "multiplier": rng.choice([-(1 << 15), (1 << 15) - 1, 1, rng.randint(-(1 << 15),
                                                                             (1 << 15) - 1)]),
        "shift": rng.choice([0, 1, 2, 47, 48, 49, 200, 255, rng.randint(0, 40)]),
        "use_lut": rng.random() < 0.5,
        "lut": rng.randrange(256),
    }


@pytest.mark.parametrize("seed,p_in,p_out", [(0, 0.0, 0.0), (1, 0.4, 0.0), (2, 0.0, 0.5),
                                             (3, 0.5, 0.5)])
def test_post_matches_formula(seed, p_in, p_out):
    rng = random.Random(seed)
    tables = 4
    dut = Post(CONFIG, tables)
    lut = [rng.randint(-128, 127) for _ in range(tables * 256)]
    jobs = [random_job(rng, tables) for _ in range(300)]
    # Rounding ties, both signs: x = +-6 with shift 2 -> 2 and -1 (half up).
    jobs[:2] = [dict(jobs[0], acc=6, bias=0, multiplier=1, shift=2, use_lut=0),
                dict(jobs[1], acc=-6, bias=0, multiplier=1, shift=2, use_lut=0)]

    def expect(job):
        y = requant(job["acc"], job["bias"], job["multiplier"], job["shift"])
        return lut[(job["lut"] % tables) * 256 + y + 128] if job["use_lut"] else y

    async def driver(ctx):
        chunk = CONFIG.axi_bytes
        for addr in range(0, len(lut), chunk):
            word = int.from_bytes(bytes(v & 0xFF for v in lut[addr:addr + chunk]), "little")
            ctx.set(dut.lut_w.valid, 1)
            ctx.set(dut.lut_w.payload, {"addr": addr, "data": word, "mask": -1})
            await ctx.tick()
        ctx.set(dut.lut_w.valid, 0)
        pauses = Pauses(p_in, seed)
        for job in jobs:
            await put(ctx, dut.i, job, pauses)

    async def checker(ctx):
        pauses = Pauses(p_out, seed + 1)
        for n, job in enumerate(jobs):
            assert await get(ctx, dut.o, pauses) == expect(job), (n, job)

    simulate(dut, driver, checker)
    assert requant(6, 0, 1, 2) == 2 and requant(-6, 0, 1, 2) == -1


def test_post_latency():
    dut = Post(CONFIG, 1)

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        await put(ctx, dut.i, {"acc": 300, "bias": 0, "multiplier": 1, "shift": 1})
        cycles = 1
        while not ctx.get(dut.o.valid):
            cycles += 1
            await ctx.tick()
        assert cycles == Post.LATENCY
        assert ctx.get(dut.o.payload) == 127

    simulate(dut, tb)


def test_post_table_count_error():
    with pytest.raises(ValueError, match="lut_tables must be a positive power of two, not 3"):
        Post(CONFIG, 3)
