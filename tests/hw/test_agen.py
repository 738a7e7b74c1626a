import itertools
import random

import pytest

from flexigan.hw.agen import AddressGenerator
from flexigan.hw.arch.config import AcceleratorConfig
from tests.hw.streams import Pauses, get, put, simulate

CONFIG = AcceleratorConfig(act_banks=4, act_bank_bytes=1024, weight_bytes=2048)
AW, WW = CONFIG.act_addr_width, CONFIG.wgt_addr_width
WIDTH, WORD = CONFIG.bundle_width, CONFIG.axi_bytes


def expected_steps(cmd):
    """docs/isa.md's MAC loop nest, written the obvious way, cut into steps: runs of the
    innermost level with act_stride 1 in bundles of up to WIDTH taps of one word; a non-null
    step in the word of the previous non-null one is a reuse."""
    counts = cmd["count"]
    null = 0 in counts
    bundled = not null and cmd["act_stride"][2] % (1 << AW) == 1
    outer = [(0, 0)] if null else list(itertools.product(range(counts[0]), range(counts[1])))
    inner = 1 if null else counts[2]
    steps = []
    word = None
    for r in range(cmd["rows"]):
        for c in range(cmd["cols"]):
            for _ in range(cmd["passes"]):
                for t, (i0, i1) in enumerate(outer):
                    i2 = 0
                    while i2 < inner:
                        i = (i0, i1, i2)
                        a = cmd["act_base"] + r * cmd["act_row"] + c * cmd["act_col"] + sum(
                            i[k] * cmd["act_stride"][k] for k in range(3))
                        w = cmd["wgt_base"] + sum(i[k] * cmd["wgt_stride"][k] for k in range(3))
                        a, w = a % (1 << AW), w % (1 << WW)
                        n = min(WIDTH, inner - i2, WORD - a % WORD) if bundled else 1
                        i2 += n
                        last = t == len(outer) - 1 and i2 == inner
                        reuse = not null and a // WORD == word
                        word = word if null else a // WORD
                        steps.append((a, w, cmd["wgt_stride"][2] % (1 << WW), n, int(last),
                                      int(null), int(reuse)))
    return steps


def random_command(rng):
    signed_stride = lambda width: rng.randint(-(1 << (width - 2)), 1 << (width - 2))  # noqa: E731
    act_stride = [signed_stride(AW) for _ in range(3)]
    if rng.random() < 0.5:
        act_stride[2] = 1             # channels: bundles of taps
    return {
        "rows": rng.choice([0, 1, 2, 3]), "cols": rng.choice([1, 2, 4]),
        "passes": rng.choice([1, 1, 2]),
        "act_base": rng.randrange(1 << AW),
        "act_row": signed_stride(AW), "act_col": signed_stride(AW),
        "act_stride": act_stride,
        "wgt_base": rng.randrange(1 << WW),
        "wgt_stride": [signed_stride(WW) for _ in range(3)],
        "count": [rng.choice([0, 1, 2, 3]) if rng.random() < 0.1 else rng.choice([1, 2, 3])
                  for _ in range(2)] + [rng.choice([0, 1, 2, 5, 11, 20])],
    }


def encode(cmd):
    """Strides may be negative: the hardware takes them modulo the address width."""
    out = dict(cmd)
    for key, width in (("act_row", AW), ("act_col", AW), ("act_base", AW)):
        out[key] = cmd[key] % (1 << width)
    out["act_stride"] = [s % (1 << AW) for s in cmd["act_stride"]]
    out["wgt_stride"] = [s % (1 << WW) for s in cmd["wgt_stride"]]
    return out


@pytest.mark.parametrize("seed,p_out", [(0, 0.0), (1, 0.3), (2, 0.7)])
def test_agen_matches_loop_nest(seed, p_out):
    rng = random.Random(seed)
    cmds = [random_command(rng) for _ in range(12)]
    cmds[0].update(rows=2, cols=3, passes=1, count=[2, 3, 4])
    cmds[1].update(rows=2, cols=2, passes=2, count=[2, 2, 13], act_stride=[40, 16, 1],
                   act_base=WORD - 3)
    dut = AddressGenerator(CONFIG)

    async def driver(ctx):
        for cmd in cmds:
            await put(ctx, dut.cmd, encode(cmd), Pauses(0.3, seed))

    async def checker(ctx):
        pauses = Pauses(p_out, seed)
        for n, cmd in enumerate(cmds):
            for step in expected_steps(cmd):
                got = await get(ctx, dut.o, pauses)
                assert (got.act_addr, got.wgt_addr, got.wgt_stride, got.n, got.last,
                        got.null, got.reuse) == step, (n, cmd)
        await ctx.tick().repeat(4)
        assert not ctx.get(dut.o.valid) and not ctx.get(dut.busy)

    simulate(dut, driver, checker)


def test_agen_one_step_per_cycle():
    cmd = {"rows": 3, "cols": 2, "passes": 1, "act_base": 5, "act_row": 64, "act_col": 8,
           "act_stride": [16, 4, 1], "wgt_base": 0, "wgt_stride": [24, 8, 1],
           "count": [3, 2, 4]}
    dut = AddressGenerator(CONFIG)
    n = len(expected_steps(cmd))

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        await put(ctx, dut.cmd, cmd)
        cycles = 0
        got = 0
        while got < n:
            got += ctx.get(dut.o.valid)
            cycles += 1
            await ctx.tick()
        assert cycles == n + 1          # the load cycle, then a step per cycle
        assert not ctx.get(dut.busy)

    simulate(dut, tb)
